"""A Linux server's syslog: each line goes to the parser that knows it, with the device's time."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

from otasuke.db.engine import Database
from otasuke.db.models import Organization, StoredEvent
from otasuke.demo.seed import seed_demo
from otasuke.ingest.receivers.headers import parse_syslog
from otasuke.ingest.receivers.syslog import SyslogConfig, choose_format, start_syslog
from otasuke.settings import Settings
from otasuke.tenancy import admin
from otasuke.tenancy.scope import Viewer
from tests.conftest import wait_for


def test_choose_format_per_line_for_linux_hosts() -> None:
    assert choose_format("linux", "Failed password for root from 1.2.3.4 port 22", "sshd") == "sshd"
    assert choose_format("linux", "DROP IN=eth0 OUT= SRC=1.2.3.4 DST=10.0.0.1", "kernel") == (
        "iptables"
    )
    assert choose_format("linux", "(root) CMD (run-parts)", "CRON") == "syslog"
    assert choose_format("pfsense", "5,,,1000000103,igb0,match,block", "filterlog") == "filterlog"
    assert choose_format("other", '{"a": 1}') == "jsonl"
    assert choose_format("windows", "some text") == "syslog"  # kept, not refused


def test_bsd_header_on_29_february_never_raises() -> None:
    message = parse_syslog(b"<13>Feb 29 10:00:00 host app: x")
    assert message.msg.endswith("x")


def test_sshd_over_tcp_keeps_the_device_time_and_program(
    settings: Settings, sqlite_db: Database, tmp_path: Path
) -> None:
    with sqlite_db.session() as s:
        seed_demo(s)
        org = s.scalars(select(Organization).where(Organization.slug == "yamada-office")).one()
        admin.add_sensor(
            s, Viewer.system(), org, kind="linux", name="NAS", syslog_source="127.0.0.1"
        )
    handle = start_syslog(
        settings, sqlite_db, SyslogConfig(spool_dir=tmp_path / "spool", tcp_port=0, udp_port=0)
    )
    try:
        assert handle.tcp_port is not None
        jst = datetime.now(UTC).astimezone(ZoneInfo("Asia/Tokyo"))  # the sensor's clock zone
        stamp = jst.strftime("%b %d %H:%M:%S").replace(" 0", "  ", 1)
        lines = [
            f"<38>{stamp} nas01 sshd[812]: Failed password for invalid user admin from "
            "203.0.113.7 port 50122 ssh2",
            f"<4>{stamp} nas01 kernel: DROP IN=eth0 OUT= SRC=203.0.113.7 DST=192.168.0.5 "
            "PROTO=TCP SPT=4444 DPT=22",
        ]
        with socket.create_connection(("127.0.0.1", handle.tcp_port), timeout=10) as sock:
            sock.sendall("".join(f"{line}\n" for line in lines).encode())

        def stored() -> list[StoredEvent]:
            with sqlite_db.sessions() as s:
                return list(
                    s.scalars(
                        select(StoredEvent).where(
                            StoredEvent.source_format.in_(["sshd", "iptables"])
                        )
                    )
                )

        rows = wait_for(lambda: len(stored()) == 2 and stored(), timeout=20)
    finally:
        handle.stop()
    by_format = {r.source_format: r for r in rows}
    assert by_format["sshd"].fields["app"] == "sshd"
    assert by_format["iptables"].fields["SRC"] == "203.0.113.7"
    assert abs((by_format["sshd"].observed_at - datetime.now(UTC)).total_seconds()) < 120
