"""Syslog over UDP and TCP: every line a stock client sends is stored for the right customer.

Real sockets on 127.0.0.1 (and 127.0.0.2/3 as other peers: all of 127/8 is loopback).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from otasuke.db.engine import Database
from otasuke.db.models import QuarantinedRecord, StoredEvent
from otasuke.demo.seed import demo_sensor, seed_demo
from otasuke.ingest.receivers.framing import FrameDecoder, FramingError
from otasuke.ingest.receivers.headers import parse_syslog
from otasuke.ingest.receivers.syslog import SyslogConfig, SyslogHandle, start_syslog
from otasuke.settings import Settings
from tests.conftest import wait_for

TOKAI_IP, SAKURA_IP, STRANGER_IP = "127.0.0.1", "127.0.0.2", "127.0.0.3"


@dataclass
class Running:
    handle: SyslogHandle
    db: Database
    tokai: int
    """customer id of tokai-parts (its FortiGate sends from 127.0.0.1)."""
    sakura: int
    """customer id of sakura-clinic (its FortiGate sends from 127.0.0.2)."""

    @property
    def tcp(self) -> int:
        assert self.handle.tcp_port is not None
        return self.handle.tcp_port

    @property
    def udp(self) -> int:
        assert self.handle.udp_port is not None
        return self.handle.udp_port

    def stored(self, customer_id: int) -> list[StoredEvent]:
        with self.db.sessions() as s:
            return list(
                s.scalars(
                    select(StoredEvent)
                    .where(StoredEvent.customer_id == customer_id)
                    .order_by(StoredEvent.id)
                )
            )

    def wait_stored(self, customer_id: int, count: int) -> list[StoredEvent]:
        wait_for(lambda: len(self.stored(customer_id)) >= count, timeout=20)
        return self.stored(customer_id)


def start(settings: Settings, db: Database, spool: Path) -> Running:
    with db.session() as s:
        seed_demo(s)
        tokai = demo_sensor(s, "tokai-parts", "fortigate")
        tokai.syslog_source = TOKAI_IP
        sakura = demo_sensor(s, "sakura-clinic", "fortigate")
        sakura.syslog_source = SAKURA_IP
        ids = tokai.customer_id, sakura.customer_id
    config = SyslogConfig(spool_dir=spool, tcp_port=0, udp_port=0)
    return Running(start_syslog(settings, db, config), db, *ids)


@pytest.fixture
def running(settings: Settings, sqlite_db: Database, tmp_path: Path) -> Iterator[Running]:
    r = start(settings, sqlite_db, tmp_path / "spool")
    yield r
    r.handle.stop()


def fortigate_lines(corpus: Path) -> list[str]:
    text = (corpus / "syslog" / "wazuh" / "fortigate.log").read_text("utf-8")
    return [line for line in text.splitlines() if line.strip()]


def send_tcp(port: int, data: bytes, source: str = "127.0.0.1") -> None:
    with socket.create_connection(("127.0.0.1", port), source_address=(source, 0)) as sock:
        sock.sendall(data)


def octet_counted(frames: list[str]) -> bytes:
    return b"".join(b"%d %s" % (len(f.encode()), f.encode()) for f in frames)


@pytest.mark.corpus
def test_fortigate_over_tcp_lands_with_the_right_customer(
    settings: Settings, any_db: Database, tmp_path: Path, corpus: Path
) -> None:
    lines = fortigate_lines(corpus)
    r = start(settings, any_db, tmp_path / "spool")
    try:
        # tokai: newline framing, RFC 3164 header; sakura: octet counting, RFC 5424 header
        bsd = "".join(f"<189>Nov 24 10:00:00 fgt-tokai {line}\n" for line in lines)
        send_tcp(r.tcp, bsd.encode(), TOKAI_IP)
        frames = [
            f'<189>1 2026-11-24T10:00:00+09:00 fgt-sakura - - - [x a="]"] {line}' for line in lines
        ]
        send_tcp(r.tcp, octet_counted(frames), SAKURA_IP)
        tokai = r.wait_stored(r.tokai, len(lines))
        sakura = r.wait_stored(r.sakura, len(lines))
    finally:
        r.handle.stop()
    assert len(tokai) == len(sakura) == len(lines)
    for stored in (tokai, sakura):
        assert [e.raw for e in stored] == lines  # the MSG, whole, in order
        assert stored[0].host == "Device_Name"  # devname, not the syslog header's host
        assert stored[0].source_format == "fortigate"
        assert all(e.event_uid.startswith("syslog-") for e in stored)
    assert r.handle.stats.acknowledged == 2 * len(lines)


@pytest.mark.corpus
def test_util_linux_logger_tcp_octet_count_and_udp(
    running: Running, corpus: Path, tmp_path: Path
) -> None:
    logger = shutil.which("logger")
    if logger is None:
        pytest.skip("util-linux logger not installed (apt-get install bsdutils)")
    lines = fortigate_lines(corpus)
    path = tmp_path / "fortigate.log"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    base = [logger, "--server", "127.0.0.1", "--size", "8192", "--tag", "fgt", "-f", str(path)]
    runs = [
        ["--tcp", "--port", str(running.tcp), "--rfc5424"],
        ["--tcp", "--port", str(running.tcp), "--rfc5424", "--octet-count"],
        ["--tcp", "--port", str(running.tcp), "--rfc3164"],
        ["--udp", "--port", str(running.udp), "--rfc5424"],
    ]
    for n, extra in enumerate(runs, start=1):
        subprocess.run([*base, *extra], check=True, timeout=20)
        stored = running.wait_stored(running.tokai, n * len(lines))
    assert len(stored) == len(runs) * len(lines)
    assert {e.fields.get("devname") for e in stored} >= {"Device_Name", "Mobipay_Firewall"}
    raws = [e.raw for e in stored]
    assert raws == lines * len(runs)  # every line whole, in order, once per run
    assert running.handle.stats.udp_datagrams == len(lines)
    assert running.handle.stats.tcp_lines == 3 * len(lines)


def test_udp_from_python_sockets(running: Running) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((SAKURA_IP, 0))
        for i in range(20):
            line = f"<189>date=2026-11-24 time=10:00:{i:02d} devname=FG60F type=event msg=n{i}\n"
            sock.sendto(line.encode(), ("127.0.0.1", running.udp))
    stored = running.wait_stored(running.sakura, 20)
    assert sorted(e.fields["msg"] for e in stored) == sorted(f"n{i}" for i in range(20))
    assert running.stored(running.tokai) == []


def test_unknown_peer_is_counted_and_quarantined(running: Running) -> None:
    line = "<189>date=2026-11-24 time=10:00:00 devname=FG-X type=event msg=who"
    send_tcp(running.tcp, f"{line}\n".encode(), STRANGER_IP)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((STRANGER_IP, 0))
        sock.sendto(line.encode(), ("127.0.0.1", running.udp))

    def quarantined() -> list[QuarantinedRecord]:
        with running.db.sessions() as s:
            rows = s.scalars(
                select(QuarantinedRecord).where(
                    QuarantinedRecord.reason == f"unknown syslog source {STRANGER_IP}"
                )
            )
            return list(rows)

    wait_for(lambda: len(quarantined()) == 2, timeout=20)
    rows = quarantined()
    assert {r.raw for r in rows} == {line}
    assert {r.location.split(" from ")[0] for r in rows} == {"syslog tcp", "syslog udp"}
    assert running.handle.stats.unknown_source == 2
    with running.db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(StoredEvent)) == 0


def test_bad_line_of_a_known_sensor_is_quarantined_with_its_error(running: Running) -> None:
    send_tcp(running.tcp, b"<13>Nov 24 10:00:00 fgt this is no key value line\n", TOKAI_IP)

    def rows() -> list[QuarantinedRecord]:
        with running.db.sessions() as s:
            return list(
                s.scalars(
                    select(QuarantinedRecord).where(QuarantinedRecord.customer_id == running.tokai)
                )
            )

    [row] = wait_for(rows, timeout=20)
    assert "no key=value pairs" in row.reason and "this is no key value line" in row.raw


# --- framing (RFC 6587) -----------------------------------------------------------------


def test_lf_framing_across_chunks_with_crlf() -> None:
    dec = FrameDecoder()
    assert dec.feed(b"<13>one\r\n<13>tw") == [b"<13>one"]
    assert dec.feed(b"o\n\n<13>three") == [b"<13>two"]
    assert dec.octet_counted is False
    assert dec.finish() == [b"<13>three"]


def test_octet_counted_detected_and_split_anywhere() -> None:
    data = octet_counted(["<13>1 - h a - - - héllo", "<13>1 - h a - - - second line\nwith LF"])
    dec = FrameDecoder()
    frames = [f for i in range(len(data)) for f in dec.feed(data[i : i + 1])]
    assert dec.octet_counted is True
    assert [f.decode() for f in frames] == [
        "<13>1 - h a - - - héllo",
        "<13>1 - h a - - - second line\nwith LF",
    ]


def test_too_long_frames_are_cut_and_counted() -> None:
    dec = FrameDecoder(max_frame=10)
    assert dec.feed(b"0123456789abcdef\nshort\n") == [b"0123456789", b"short"]
    counted = FrameDecoder(max_frame=10)
    assert counted.feed(b"16 0123456789abcdef5 short") == [b"0123456789", b"short"]
    assert dec.truncated == counted.truncated == 1


def test_broken_octet_count_is_an_error() -> None:
    dec = FrameDecoder()
    dec.feed(b"5 <13>a")
    with pytest.raises(FramingError, match="octet count"):
        dec.feed(b"x <13>b")


# --- headers (RFC 3164 / RFC 5424) -----------------------------------------------------


def test_rfc5424_header_with_structured_data_and_bom() -> None:
    m = parse_syslog(
        '<165>1 2026-11-24T10:00:00.5+09:00 fw1 app 42 ID7 [a b="x\\"]"][c] \ufeffmsg'.encode()
    )
    assert (m.header, m.hostname, m.app, m.msg) == ("rfc5424", "fw1", "app", "msg")
    assert m.timestamp is not None and m.timestamp.isoformat() == "2026-11-24T01:00:00.500000+00:00"
    assert (m.facility, m.severity) == (20, 5)
    nil = parse_syslog(b"<13>1 - - - - - - only msg")
    assert (nil.timestamp, nil.hostname, nil.app, nil.msg) == (None, None, None, "only msg")


def test_rfc3164_header_in_the_device_zone() -> None:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    now = datetime(2026, 1, 2, tzinfo=UTC)
    m = parse_syslog(
        b"<34>Dec 31 23:59:59 mymachine su[12]: 'su root' failed",
        tz=ZoneInfo("Asia/Tokyo"),
        now=now,
    )
    assert (m.hostname, m.app, m.msg) == ("mymachine", "su", "'su root' failed")
    assert m.timestamp == datetime(2025, 12, 31, 14, 59, 59, tzinfo=UTC)  # last year, JST


def test_fortigate_without_header_and_shift_jis() -> None:
    m = parse_syslog(b"<189>date=2026-11-24 time=10:00:00 devname=FG60F")
    assert (m.header, m.msg, m.hostname) == (
        "none",
        "date=2026-11-24 time=10:00:00 devname=FG60F",
        None,
    )
    sjis = parse_syslog('<13>Nov 24 10:00:00 fw msg="不正アクセス"'.encode("cp932"))
    assert sjis.msg == 'msg="不正アクセス"' and sjis.hostname == "fw"
