"""`otasuke serve` as an operator runs it: a UTM's syslog over TCP → incident → customer mail.

REQ-MON-NET (malicious traffic from inside seen by the UTM), REQ-MON-24H (the receiver
runs with the server), REQ-MON-60MIN (the customer is told at once).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx2
import orjson

from tests.conftest import Inbox, free_port, wait_for
from tests.e2e.test_cli import run


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

        def up() -> bool:
            try:
                return httpx2.get(f"http://127.0.0.1:{web}/login", timeout=2).status_code == 200
            except httpx2.HTTPError:
                return False

        wait_for(up, timeout=60)
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
