"""RELP receiver: a message is answered ``200 OK`` only once it is in the spool (issue 5).

A raw socket client speaks RELP to the receiver running in a real syslog handle's loop
(real spool, real SQLite, real drain): the session (open, syslog, close), the answer
after the fsync, group commit, frames split across reads, and what closes a session
(malformed, oversize, out of order). The frame parser is fuzzed with hypothesis.
Real rsyslog ``omrelp`` across a crash: tests/e2e/test_relp.py. REQ-MON-NET.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import select

from otasuke import metrics
from otasuke.db.engine import Database
from otasuke.db.models import QuarantinedRecord, StoredEvent
from otasuke.demo.seed import demo_sensor, seed_demo
from otasuke.errors import OtasukeError
from otasuke.ingest.receivers.relp import (
    RelpConfig,
    RelpDecoder,
    RelpFrame,
    RelpFramingError,
    RelpHandle,
    start_relp,
)
from otasuke.ingest.receivers.syslog import SyslogConfig, SyslogHandle, start_syslog
from otasuke.settings import Settings
from tests.conftest import wait_for
from tests.ingest.test_syslog_tls import Cert, cert  # noqa: F401  (fixture)

TOKAI_IP, STRANGER_IP = "127.0.0.1", "127.0.0.3"
OPEN = b"relp_version=0\nrelp_software=test\ncommands=syslog"


@dataclass
class Running:
    syslog: SyslogHandle
    relp: RelpHandle
    db: Database
    spool: Path
    tokai: int

    @property
    def port(self) -> int:
        assert self.relp.port is not None
        return self.relp.port

    def stored(self) -> list[StoredEvent]:
        with self.db.sessions() as s:
            stmt = select(StoredEvent).where(StoredEvent.customer_id == self.tokai)
            return list(s.scalars(stmt.order_by(StoredEvent.id)))

    def spooled(self) -> bytes:
        return b"".join(p.read_bytes() for p in sorted(self.spool.iterdir()) if p.is_file())


def start(settings: Settings, db: Database, spool: Path, *, drain: bool = True) -> Running:
    with db.session() as s:
        seed_demo(s)
        tokai = demo_sensor(s, "tokai-parts", "fortigate")
        tokai.syslog_source = TOKAI_IP
        customer = tokai.customer_id
    config = SyslogConfig(spool_dir=spool, tcp_port=None, udp_port=None, drain=drain)
    syslog = start_syslog(settings, db, config)
    relp = start_relp(settings, syslog, RelpConfig(port=0, max_data_bytes=4096))
    assert relp is not None
    return Running(syslog, relp, db, spool, customer)


@pytest.fixture
def running(settings: Settings, sqlite_db: Database, tmp_path: Path) -> Iterator[Running]:
    r = start(settings, sqlite_db, tmp_path / "spool")
    yield r
    r.relp.stop()
    r.syslog.stop()


def frame(txnr: int, command: str, data: bytes = b"") -> bytes:
    if not data:
        return b"%d %s 0\n" % (txnr, command.encode())
    return b"%d %s %d %s\n" % (txnr, command.encode(), len(data), data)


def fortigate(n: int) -> bytes:
    return (
        f'<189>date=2026-12-04 time=10:00:00 devname=FG60F type=event user="山田" msg="seq={n}"'
    ).encode()


class Client:
    """A RELP client on a raw socket; reads the server's frames with a deadline."""

    def __init__(self, port: int, source: str = TOKAI_IP) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), source_address=(source, 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(10)
        self.decoder = RelpDecoder(1 << 20)
        self.got: list[RelpFrame] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, n: int) -> list[RelpFrame]:
        """The next ``n`` frames from the server."""
        while len(self.got) < n:
            data = self.sock.recv(65536)
            assert data, f"server closed the session after {self.got}"
            self.got += self.decoder.feed(data)
        out, self.got = self.got[:n], self.got[n:]
        return out

    def closed_by_server(self) -> bool:
        """True when the server closes the session without answering anything more."""
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return True
        assert data == b"", f"answered instead of closing: {data!r}"
        return True

    def open(self) -> None:
        self.send(frame(1, "open", OPEN))
        [rsp] = self.read(1)
        assert rsp.txnr == 1 and rsp.command == "rsp", rsp
        assert rsp.data.startswith(b"200 OK\n"), rsp

    def close(self) -> None:
        self.sock.close()


def test_session_open_syslog_close_stores_each_message_once(running: Running) -> None:
    before = metrics.METRICS.snapshot()["received"].get("relp", 0)
    client = Client(running.port)
    client.send(frame(1, "open", OPEN))
    [rsp] = client.read(1)
    assert rsp.txnr == 1 and rsp.command == "rsp"
    code, *offers = rsp.data.decode().split("\n")
    assert code == "200 OK"
    assert "relp_version=0" in offers and "commands=syslog" in offers
    # three messages in one write: one append, three answers
    client.send(b"".join(frame(n, "syslog", fortigate(n)) for n in (2, 3, 4)))
    answers = client.read(3)
    assert [(a.txnr, a.command, a.data) for a in answers] == [
        (n, "rsp", b"200 OK") for n in (2, 3, 4)
    ]
    client.send(frame(5, "close"))
    assert client.read(2) == [RelpFrame(5, "rsp", b"200 OK"), RelpFrame(0, "serverclose", b"")]
    assert client.closed_by_server()
    client.close()
    stored = wait_for(lambda: len(r := running.stored()) >= 3 and r, timeout=20)
    assert [e.fields["msg"] for e in stored] == ["seq=2", "seq=3", "seq=4"]
    assert {e.source_format for e in stored} == {"fortigate"}
    assert stored[0].fields["user"] == "山田"
    assert running.relp.stats.acknowledged == 3 and running.relp.stats.malformed == 0
    assert metrics.METRICS.snapshot()["received"]["relp"] - before == 3


def test_answer_comes_only_after_the_message_is_in_the_spool(
    settings: Settings, sqlite_db: Database, tmp_path: Path
) -> None:
    r = start(settings, sqlite_db, tmp_path / "spool", drain=False)  # nothing moves it on
    try:
        client = Client(r.port)
        client.open()
        for n in range(1, 51):
            client.send(frame(n + 1, "syslog", fortigate(n)))
            [rsp] = client.read(1)
            assert rsp == RelpFrame(n + 1, "rsp", b"200 OK")
            # answered: the record is already in the spool's files
            assert f'seq={n}\\"'.encode() in r.spooled(), n
        client.close()
    finally:
        r.relp.stop()
        r.syslog.stop()


def test_frames_split_across_reads_byte_by_byte(running: Running) -> None:
    client = Client(running.port)
    data = frame(1, "open", OPEN) + frame(2, "syslog", fortigate(7)) + frame(3, "close")
    for i in range(len(data)):
        client.send(data[i : i + 1])
        if i % 16 == 0:
            time.sleep(0.002)  # let the server read partial frames
    assert [f.txnr for f in client.read(4)] == [1, 2, 3, 0]
    client.close()
    stored = wait_for(running.stored, timeout=20)
    assert [e.fields["msg"] for e in stored] == ["seq=7"]


def test_unknown_command_is_answered_500_and_the_session_goes_on(running: Running) -> None:
    client = Client(running.port)
    client.open()
    client.send(frame(2, "starttls") + frame(3, "syslog", fortigate(1)))
    first, second = client.read(2)
    assert first.txnr == 2 and first.data.startswith(b"500 ")
    assert second == RelpFrame(3, "rsp", b"200 OK")
    client.close()


MALFORMED = {
    "not RELP at all": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "plain syslog line": b"<13>Dec  4 10:00:00 host app: hello\n",
    "syslog before open": frame(1, "syslog", b"<13>hello"),
    "trailer is not LF": b"1 open 3 abcX",
    "data length too long": b"1 open 1234567890 x\n",
    "oversize message": b"1 open 5000 " + b"x" * 10,
}


def test_malformed_sessions_are_closed_counted_and_nothing_stored(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    before = metrics.METRICS.malformed.get("relp", 0)
    for n, (what, data) in enumerate(MALFORMED.items(), start=1):
        client = Client(running.port)
        client.send(data)
        assert client.closed_by_server(), what
        client.close()
        wait_for(lambda n=n: running.relp.stats.malformed == n, timeout=5)
        assert metrics.METRICS.malformed["relp"] == before + n, what
    reasons = [r.getMessage() for r in caplog.records if "session closed" in r.getMessage()]
    assert len(reasons) == len(MALFORMED), reasons
    assert any("relp_max_data_bytes (4096)" in r for r in reasons), reasons
    assert any("before open" in r for r in reasons), reasons
    assert running.relp.stats.acknowledged == 0 and running.stored() == []
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics.METRICS)
    scraped = generate_latest(registry).decode()
    line = f'otasuke_receiver_sessions_malformed_total{{transport="relp"}} {before + len(MALFORMED):.1f}'
    assert line in scraped, scraped


def test_oversize_frame_after_good_ones_keeps_those_answered(running: Running) -> None:
    client = Client(running.port)
    client.open()
    client.send(frame(2, "syslog", fortigate(1)))
    assert client.read(1) == [RelpFrame(2, "rsp", b"200 OK")]
    client.send(frame(3, "syslog", b"x" * 5000))  # max_data_bytes is 4096 here
    assert client.closed_by_server()
    client.close()
    stored = wait_for(running.stored, timeout=20)
    assert [e.fields["msg"] for e in stored] == ["seq=1"]
    assert running.relp.stats.malformed == 1


def test_unknown_peer_is_quarantined_with_transport_relp(running: Running) -> None:
    client = Client(running.port, STRANGER_IP)
    client.open()
    client.send(frame(2, "syslog", b"<13>Dec  4 10:00:00 host app: who am I"))
    assert client.read(1) == [RelpFrame(2, "rsp", b"200 OK")]
    client.close()

    def rows() -> list[QuarantinedRecord]:
        with running.db.sessions() as s:
            return list(s.scalars(select(QuarantinedRecord)))

    [row] = wait_for(rows, timeout=20)
    assert row.reason == f"unknown syslog source {STRANGER_IP}"
    assert row.location.startswith(f"syslog relp from {STRANGER_IP}")


def test_stop_tells_open_sessions_serverclose(
    settings: Settings, sqlite_db: Database, tmp_path: Path
) -> None:
    r = start(settings, sqlite_db, tmp_path / "spool")
    try:
        client = Client(r.port)
        client.open()
        client.send(frame(2, "syslog", fortigate(1)))
        assert client.read(1) == [RelpFrame(2, "rsp", b"200 OK")]
        r.relp.stop()
        assert client.read(1) == [RelpFrame(0, "serverclose", b"")]
        assert client.closed_by_server()
        client.close()
        # a port in use is refused naming the setting
        with pytest.raises(OtasukeError, match="relp_port: the RELP receiver cannot listen"):
            taken = socket.socket()
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            try:
                start_relp(settings, r.syslog, RelpConfig(port=taken.getsockname()[1]))
            finally:
                taken.close()
    finally:
        r.syslog.stop()


def test_relp_over_tls_with_the_syslog_certificate(
    settings: Settings,
    sqlite_db: Database,
    tmp_path: Path,
    cert: Cert,  # noqa: F811
) -> None:
    with sqlite_db.session() as s:
        seed_demo(s)
        tokai = demo_sensor(s, "tokai-parts", "fortigate")
        tokai.syslog_source = TOKAI_IP
    config = SyslogConfig(
        spool_dir=tmp_path / "spool",
        tcp_port=None,
        udp_port=None,
        tls_certfile=cert.certfile,
        tls_keyfile=cert.keyfile,
    )
    syslog = start_syslog(settings, sqlite_db, config)
    try:
        relp = start_relp(settings, syslog, RelpConfig(port=None, tls_port=0))
        assert relp is not None and relp.port is None and relp.tls_port is not None
        context = ssl.create_default_context(cafile=str(cert.certfile))
        client = Client(relp.tls_port)
        plain = client.sock
        client.sock = context.wrap_socket(plain, server_hostname="127.0.0.1")
        client.open()
        client.send(frame(2, "syslog", fortigate(9)) + frame(3, "close"))
        assert client.read(3) == [
            RelpFrame(2, "rsp", b"200 OK"),
            RelpFrame(3, "rsp", b"200 OK"),
            RelpFrame(0, "serverclose", b""),
        ]
        client.close()
        relp.stop()
        assert relp.stats.acknowledged == 1
        assert b'"transport":"relp-tls"' in b"".join(
            p.read_bytes() for p in (tmp_path / "spool").iterdir() if p.is_file()
        )
    finally:
        syslog.stop()
    # without the syslog certificate, RELP over TLS names what is missing
    bare = SyslogConfig(spool_dir=tmp_path / "spool2", tcp_port=None, udp_port=None)
    syslog = start_syslog(settings, sqlite_db, bare)
    try:
        with pytest.raises(OtasukeError, match="relp_tls_port is set but syslog_tls_certfile"):
            start_relp(settings, syslog, RelpConfig(tls_port=0))
    finally:
        syslog.stop()


# --- the frame parser, fuzzed -----------------------------------------------------------

COMMANDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=32)
FRAMES = st.lists(
    st.tuples(st.integers(1, 999_999_999), COMMANDS, st.binary(max_size=300)), max_size=8
)


@hsettings(max_examples=300, deadline=None)
@given(FRAMES, st.lists(st.integers(1, 50), max_size=20))
def test_valid_frames_parse_the_same_however_split(
    frames: list[tuple[int, str, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(frame(t, c, d) for t, c, d in frames)
    decoder = RelpDecoder(1024)
    got: list[RelpFrame] = []
    pos = 0
    for cut in cuts:
        got += decoder.feed(stream[pos : pos + cut])
        pos += cut
    got += decoder.feed(stream[pos:])
    assert got == [RelpFrame(t, c, d) for t, c, d in frames]
    assert decoder.pending() == b""


@hsettings(max_examples=500, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(1, 64), max_size=10))
def test_random_bytes_never_crash_the_parser(data: bytes, cuts: list[int]) -> None:
    decoder = RelpDecoder(256)
    pos = 0
    try:
        for cut in [*cuts, len(data)]:
            for f in decoder.feed(data[pos : pos + cut]):
                assert 0 <= f.txnr <= 999_999_999 and f.command.isalpha()
                assert len(f.data) <= 256
            pos += cut
    except RelpFramingError:
        return
    assert len(decoder.pending()) <= 9 + 1 + 32 + 1 + 9 + 1 + 256 + 1


@hsettings(max_examples=300, deadline=None)
@given(
    st.integers(1, 999_999),
    COMMANDS,
    st.binary(min_size=1, max_size=100),
    st.binary(min_size=1, max_size=1).filter(lambda b: b != b"\n"),
)
def test_a_frame_whose_trailer_is_not_lf_is_refused(
    txnr: int, command: str, data: bytes, trailer: bytes
) -> None:
    bad = frame(txnr, command, data)[:-1] + trailer
    with pytest.raises(RelpFramingError):
        RelpDecoder(1024).feed(bad + b"1 close 0\n")


@hsettings(max_examples=500, deadline=None)
@given(FRAMES, st.integers(0, 10_000), st.binary(min_size=1, max_size=3), st.booleans())
def test_a_damaged_valid_stream_parses_or_is_refused_never_crashes(
    frames: list[tuple[int, str, bytes]], at: int, junk: bytes, replace: bool
) -> None:
    stream = b"".join(frame(t, c, d) for t, c, d in frames) + frame(1, "close")
    at %= len(stream)
    damaged = stream[:at] + junk + stream[at + (len(junk) if replace else 0) :]
    decoder = RelpDecoder(1024)
    try:
        got = decoder.feed(damaged)
    except RelpFramingError:
        return
    for f in got:  # what parses is well-formed
        assert f.command.isalpha() and len(f.command) <= 32 and len(f.data) <= 1024
