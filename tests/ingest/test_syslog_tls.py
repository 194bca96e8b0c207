"""Syslog over TLS (RFC 5425): octet-counted lines over a verified TLS connection are stored
for the right customer; a plain-TCP client on the TLS port stores nothing and harms nothing.

Real sockets on 127.0.0.1 / 127.0.0.2, a self-signed certificate made by the ``openssl``
command line in tmp_path (missing openssl: skip here, fail in CI).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from otasuke.db.engine import Database
from otasuke.db.models import QuarantinedRecord, StoredEvent
from otasuke.demo.seed import demo_sensor, seed_demo
from otasuke.ingest.receivers.syslog import (
    SyslogConfig,
    SyslogTlsError,
    start_syslog,
)
from otasuke.settings import Settings
from tests.conftest import need
from tests.ingest.test_syslog import Running as PlainRunning

TOKAI_IP, SAKURA_IP = "127.0.0.1", "127.0.0.2"


@dataclass(frozen=True)
class Cert:
    certfile: Path
    keyfile: Path


@pytest.fixture
def cert(tmp_path: Path) -> Cert:
    openssl = shutil.which("openssl")
    if openssl is None:
        need("openssl command line not installed (apt-get install openssl)")
    assert openssl is not None
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            "k.pem",
            "-out",
            "c.pem",
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return Cert(tmp_path / "c.pem", tmp_path / "k.pem")


@dataclass
class Running(PlainRunning):
    """The syslog test harness of test_syslog.py, plus the TLS listener and its certificate."""

    cert: Cert | None = None

    @property
    def tls(self) -> int:
        assert self.handle.tls_port is not None
        return self.handle.tls_port

    def count_stored(self) -> int:
        with self.db.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(StoredEvent)) or 0)

    def count_quarantined(self) -> int:
        with self.db.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(QuarantinedRecord)) or 0)

    def send_tls(self, data: bytes, source: str = TOKAI_IP) -> None:
        assert self.cert is not None
        context = ssl.create_default_context(cafile=str(self.cert.certfile))
        raw = socket.create_connection(("127.0.0.1", self.tls), source_address=(source, 0))
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(data)
            # Close as a TLS sender must: close_notify, then wait for the server's. Closing
            # the socket with the server's session tickets unread would send a TCP reset,
            # and the kernel would drop what the receiver had not read yet.
            sock.unwrap().close()


@pytest.fixture
def running(
    settings: Settings, sqlite_db: Database, tmp_path: Path, cert: Cert
) -> Iterator[Running]:
    with sqlite_db.session() as s:
        seed_demo(s)
        tokai = demo_sensor(s, "tokai-parts", "fortigate")
        tokai.syslog_source = TOKAI_IP
        sakura = demo_sensor(s, "sakura-clinic", "fortigate")
        sakura.syslog_source = SAKURA_IP
        ids = tokai.customer_id, sakura.customer_id
    config = SyslogConfig(
        spool_dir=tmp_path / "spool",
        tcp_port=0,
        udp_port=None,
        tls_port=0,
        tls_certfile=cert.certfile,
        tls_keyfile=cert.keyfile,
        tls_handshake_timeout=5.0,
    )
    r = Running(start_syslog(settings, sqlite_db, config), sqlite_db, *ids, cert=cert)
    yield r
    r.handle.stop()


def octet_counted(frames: list[str]) -> bytes:
    return b"".join(b"%d %s" % (len(f.encode()), f.encode()) for f in frames)


def fortigate_lines(corpus: Path) -> list[str]:
    text = (corpus / "syslog" / "wazuh" / "fortigate.log").read_text("utf-8")
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.corpus
def test_fortigate_over_tls_lands_with_the_right_customer(running: Running, corpus: Path) -> None:
    lines = fortigate_lines(corpus)
    frames = [
        f'<189>1 2026-11-24T10:00:00+09:00 fgt-sakura - - - [x a="]"] {line}' for line in lines
    ]
    running.send_tls(octet_counted(frames), SAKURA_IP)
    bsd = "".join(f"<189>Nov 24 10:00:00 fgt-tokai {line}\n" for line in lines)
    running.send_tls(bsd.encode(), TOKAI_IP)  # LF framing is accepted too
    sakura = running.wait_stored(running.sakura, len(lines))
    tokai = running.wait_stored(running.tokai, len(lines))
    for stored in (sakura, tokai):
        assert [e.raw for e in stored] == lines  # whole, in order
        assert stored[0].source_format == "fortigate"
        assert stored[0].host == "Device_Name"
    stats = running.handle.stats
    assert stats.tls_connections == 2 and stats.tls_lines == 2 * len(lines)


def test_octet_counted_over_tls_without_corpus(running: Running) -> None:
    frames = [
        f"<189>date=2026-11-24 time=10:00:{i:02d} devname=FG60F type=event msg=n{i}"
        for i in range(20)
    ]
    running.send_tls(octet_counted(frames), SAKURA_IP)
    stored = running.wait_stored(running.sakura, 20)
    assert [e.fields["msg"] for e in stored] == [f"n{i}" for i in range(20)]
    assert running.stored(running.tokai) == []
    assert running.handle.stats.tls_lines == 20


def test_plain_tcp_on_the_tls_port_stores_nothing_and_the_receiver_goes_on(
    running: Running,
) -> None:
    line = b"<189>date=2026-11-24 time=10:00:00 devname=FG60F type=event msg=plain\n"
    with socket.create_connection(("127.0.0.1", running.tls), timeout=10) as sock:
        sock.sendall(line * 5)
        sock.shutdown(socket.SHUT_WR)
        try:  # the server ends the connection: an alert, or nothing, then EOF or reset
            while sock.recv(4096):
                pass
        except (ConnectionError, TimeoutError):
            pass
    # the receiver still serves TLS, and the plain-text lines were never stored anywhere
    running.send_tls(b"<189>date=2026-11-24 time=10:00:01 devname=FG60F type=event msg=after\n")
    [event] = running.wait_stored(running.tokai, 1)
    assert event.fields["msg"] == "after"
    assert running.count_stored() == 1
    assert running.count_quarantined() == 0
    assert running.handle.stats.tls_connections == 1


def test_tls_client_that_does_not_trust_the_certificate_is_refused(running: Running) -> None:
    context = ssl.create_default_context()  # the system CAs: the self-signed cert fails
    raw = socket.create_connection(("127.0.0.1", running.tls))
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        context.wrap_socket(raw, server_hostname="127.0.0.1"),
    ):
        pass
    raw.close()
    running.send_tls(b"<189>date=2026-11-24 time=10:00:01 devname=FG60F type=event msg=ok\n")
    assert [e.fields["msg"] for e in running.wait_stored(running.tokai, 1)] == ["ok"]


def tls_config(tmp_path: Path, certfile: Path | None, keyfile: Path | None) -> SyslogConfig:
    return SyslogConfig(
        spool_dir=tmp_path / "spool",
        tcp_port=None,
        udp_port=None,
        tls_port=0,
        tls_certfile=certfile,
        tls_keyfile=keyfile,
        drain=False,
    )


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"tls_certfile": Path("missing-cert.pem")}, "syslog_tls_certfile"),
        ({"tls_keyfile": Path("missing-key.pem")}, "syslog_tls_keyfile"),
        ({"tls_keyfile": None}, "syslog_tls_keyfile"),
        ({"tls_certfile": "KEY"}, "syslog_tls_certfile"),  # a key where the cert should be
    ],
)
def test_unreadable_cert_or_key_names_the_setting(
    settings: Settings,
    sqlite_db: Database,
    tmp_path: Path,
    cert: Cert,
    changes: dict[str, Path | str | None],
    setting: str,
) -> None:
    resolved = {
        k: cert.keyfile if v == "KEY" else (tmp_path / v if isinstance(v, Path) else None)
        for k, v in changes.items()
    }
    certfile = resolved.get("tls_certfile", cert.certfile)
    keyfile = resolved.get("tls_keyfile", cert.keyfile)
    with pytest.raises(SyslogTlsError, match=setting):
        start_syslog(settings, sqlite_db, tls_config(tmp_path, certfile, keyfile))


def test_cert_and_key_that_do_not_match_name_both_settings(
    settings: Settings, sqlite_db: Database, tmp_path: Path, cert: Cert
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-out", "other.pem"],
        cwd=other,
        check=True,
        capture_output=True,
        timeout=60,
    )
    config = tls_config(tmp_path, cert.certfile, other / "other.pem")
    with pytest.raises(SyslogTlsError, match=r"syslog_tls_certfile .* syslog_tls_keyfile"):
        start_syslog(settings, sqlite_db, config)


def test_from_settings_reads_the_tls_settings(settings: Settings, tmp_path: Path) -> None:
    class WithTls:
        data_dir = tmp_path
        syslog_tls_port = 6514
        syslog_tls_host = "0.0.0.0"
        syslog_tls_certfile = str(tmp_path / "c.pem")
        syslog_tls_keyfile = tmp_path / "k.pem"

    config = SyslogConfig.from_settings(WithTls())  # type: ignore[arg-type]
    assert (config.tls_host, config.tls_port) == ("0.0.0.0", 6514)
    assert config.tls_certfile == tmp_path / "c.pem" and config.tls_keyfile == tmp_path / "k.pem"
    default = SyslogConfig.from_settings(settings)
    assert default.tls_port is None  # off unless configured
