"""`otasuke serve` as an operator runs it: a UTM's syslog over TCP → incident → customer mail.

REQ-MON-NET (malicious traffic from inside seen by the UTM), REQ-MON-24H (the receiver
runs with the server), REQ-MON-60MIN (the customer is told at once).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx2
import orjson
import pytest

from otasuke.db.engine import Database
from tests.conftest import Inbox, free_port, need, wait_for
from tests.e2e.test_cli import run


def wait_until_serving(port: int) -> None:
    def up() -> bool:
        try:
            return httpx2.get(f"http://127.0.0.1:{port}/login", timeout=2).status_code == 200
        except httpx2.HTTPError:
            return False

    wait_for(up, timeout=60)


def test_syslog_to_mail_through_otasuke_serve(
    tmp_path: Path, smtp_server: tuple[str, int, Inbox]
) -> None:
    data = tmp_path / "data"
    run(data, "demo", "--no-serve")
    before = len(smtp_server[2].messages)
    run(
        data,
        "sensors",
        "add",
        "--customer",
        "yamada-office",
        "--kind",
        "fortigate",
        "--name",
        "事務所UTM",
        "--syslog-source",
        "127.0.0.1",
    )
    customers = orjson.loads(run(data, "customers", "--format", "json").stdout)
    yamada = next(c for c in customers if c["slug"] == "yamada-office")
    assert any(x["syslog_source"] == "127.0.0.1" for x in yamada["sensors"])
    bad = run(
        data,
        "sensors",
        "add",
        "--customer",
        "yamada-office",
        "--kind",
        "fortigate",
        "--name",
        "二台目",
        "--syslog-source",
        "127.0.0.1",
        check=False,
    )
    assert bad.returncode == 2 and "syslog_source" in bad.stderr
    web, syslog = free_port(), free_port()
    env = {
        **os.environ,
        "OTASUKE_DATA_DIR": str(data),
        "OTASUKE_PORT": str(web),
        "OTASUKE_SYSLOG_TCP_PORT": str(syslog),
        "OTASUKE_SYSLOG_UDP_PORT": str(syslog),
        "OTASUKE_SMTP_HOST": smtp_server[0],
        "OTASUKE_SMTP_PORT": str(smtp_server[1]),
    }
    env.pop("OTASUKE_DATABASE_URL", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "otasuke.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_serving(web)
        t = datetime.now(UTC).astimezone(ZoneInfo("Asia/Tokyo"))
        line = (
            f'date={t:%Y-%m-%d} time={t:%H:%M:%S} devname="FG40F-YAMADA" type="traffic" '
            'subtype="forward" srcip=192.168.0.12 srcname="YAMADA-PC2" dstip=66.210.228.178 '
            'dstport=443 action="accept"'
        )
        frame = f"<134>1 {t.isoformat()} FG40F-YAMADA - - - - {line}".encode()
        deadline = datetime.now(UTC)
        with socket.create_connection(("127.0.0.1", syslog), timeout=10) as sock:
            sock.sendall(f"{len(frame)} ".encode() + frame)  # octet-counted (RFC 6587)
        mails = wait_for(lambda: smtp_server[2].messages[before:], timeout=90)
        mail = mails[0]
        assert mail["To"] == "yamada@yamada-office.example.jp"
        assert mail["Subject"].startswith("【重大】山田会計事務所")
        assert "YAMADA-PC2" in mail["Subject"]
        print(f"syslog line → mail: {(datetime.now(UTC) - deadline).total_seconds():.2f} s")
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.postgres
def test_scale_out_syslog_through_jetstream_to_a_worker(
    tmp_path: Path, smtp_server: tuple[str, int, Inbox], pg_db: Database
) -> None:
    """Issue 5: `serve` publishes to JetStream, `otasuke worker` stores in PostgreSQL and tells."""
    from tests.bus.conftest import NATS_URL, START_NATS, delete_stream, reachable

    if not reachable(NATS_URL):
        need(f"NATS not reachable at {NATS_URL}; start it with '{START_NATS}'")
    data, tag = tmp_path / "data", uuid.uuid4().hex[:8]
    run(data, "demo", "--no-serve", database_url=pg_db.url)
    run(
        data,
        "sensors",
        "add",
        "--customer",
        "sakura-clinic",
        "--kind",
        "fortigate",
        "--name",
        "院内UTM2",
        "--syslog-source",
        "127.0.0.1",
        database_url=pg_db.url,
    )
    before = len(smtp_server[2].messages)
    web, syslog = free_port(), free_port()
    env = {
        **os.environ,
        "OTASUKE_DATA_DIR": str(data),
        "OTASUKE_PORT": str(web),
        "OTASUKE_DATABASE_URL": pg_db.url,
        "OTASUKE_BUS_URL": NATS_URL,
        "OTASUKE_BUS_STREAM": f"OTASUKE_E2E_{tag}",
        "OTASUKE_BUS_SUBJECT_PREFIX": f"e2e{tag}",
        "OTASUKE_BUS_DURABLE": f"e2e-{tag}",
        "OTASUKE_SYSLOG_TCP_PORT": str(syslog),
        "OTASUKE_SYSLOG_UDP_PORT": str(syslog),
        "OTASUKE_SMTP_HOST": smtp_server[0],
        "OTASUKE_SMTP_PORT": str(smtp_server[1]),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "otasuke.cli", *cmd],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for cmd in (["serve"], ["worker"])
    ]
    try:
        wait_until_serving(web)
        t = datetime.now(UTC).astimezone(ZoneInfo("Asia/Tokyo"))
        line = (
            f'date={t:%Y-%m-%d} time={t:%H:%M:%S} devname="FG40F-SAKURA" type="traffic" '
            'srcip=192.168.1.31 srcname="UKETSUKE-PC" dstip=66.210.228.178 dstport=443 '
            'action="accept"'
        )
        with socket.create_connection(("127.0.0.1", syslog), timeout=10) as sock:
            sock.sendall(f"<134>{t:%b %d %H:%M:%S} FG40F-SAKURA {line}\n".encode())  # RFC 3164
        mails = wait_for(lambda: smtp_server[2].messages[before:], timeout=90)
        assert mails[0]["To"] == "office@sakura-clinic.example.jp"
        assert "UKETSUKE-PC" in mails[0]["Subject"]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        asyncio.run(delete_stream(NATS_URL, f"OTASUKE_E2E_{tag}"))
