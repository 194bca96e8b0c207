"""HTTP ingest in scale-out mode, end to end: ``POST /api/v1/ingest`` → spool → JetStream →
``otasuke worker`` → PostgreSQL → the customer's mailbox (REQ-MON-60MIN, issue 5 point 5).

The client's view: 202 once the batch is fsynced in the spool; a batch sent again
because the answer was lost is stored once (event ids: the envelope's own, else the
content's SHA-256); a line no parser understands is in the quarantine; the serious
line reaches the customer as one mail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import orjson
import pytest
from sqlalchemy import func, select

from otasuke.db.engine import Database
from otasuke.db.models import Incident, QuarantinedRecord, StoredEvent
from otasuke.demo.seed import seed_demo
from tests.bus.test_fault_nats_down import PrivateNats, private_nats, stop_procs
from tests.bus.test_workers import tiny_detector_paths
from tests.conftest import Inbox, free_port, wait_for
from tests.e2e.test_ingest_to_mail import fortigate_line
from tests.e2e.test_serve import wait_until_serving

pytestmark = pytest.mark.postgres
__all__ = ["private_nats"]  # the fixture, imported for this module's tests

BAD_IP = "198.51.100.66"  # in the tiny IOC list of tiny_detector_paths


def test_http_batch_crosses_the_bus_to_the_customer_mailbox(
    private_nats: PrivateNats,
    pg_db: Database,
    smtp_server: tuple[str, int, Inbox],
    tmp_path: Path,
) -> None:
    with pg_db.session() as s:
        _logins, tokens = seed_demo(s)
    token = tokens["tokai-parts/本社UTM FortiGate 60F"]
    rules, iocs = tiny_detector_paths(tmp_path)
    web = free_port()
    env = {
        **os.environ,
        "OTASUKE_DATA_DIR": str(tmp_path / "data"),
        "OTASUKE_PORT": str(web),
        "OTASUKE_DATABASE_URL": pg_db.url,
        "OTASUKE_BUS_URL": private_nats.url,
        "OTASUKE_RULES_PATHS": json.dumps([str(rules)]),
        "OTASUKE_IOC_PATHS": json.dumps([str(iocs)]),
        "OTASUKE_SYSLOG_TCP_PORT": str(free_port()),
        "OTASUKE_SYSLOG_UDP_PORT": str(free_port()),
        "OTASUKE_SMTP_HOST": smtp_server[0],
        "OTASUKE_SMTP_PORT": str(smtp_server[1]),
    }
    env.pop("OTASUKE_SPOOL_DIR", None)
    before = len(smtp_server[2].messages)
    procs: list[subprocess.Popen[str]] = []
    for name, cmd in (("serve", ["serve"]), ("worker", ["worker", "--notify-every", "1"])):
        with (tmp_path / f"{name}.log").open("w") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "otasuke.cli", *cmd],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
    now = datetime.now(UTC)
    batch = b"\n".join(
        [
            orjson.dumps({"format": "fortigate", "raw": fortigate_line(BAD_IP, now)}),
            orjson.dumps(
                {"format": "fortigate", "raw": fortigate_line("192.0.2.10", now), "event_id": "ok"}
            ),
            orjson.dumps({"format": "cef", "raw": "this is not CEF"}),
        ]
    )

    def logs() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in tmp_path.glob("*.log"))

    try:
        wait_until_serving(web)
        answers = []
        for _ in range(2):  # the client lost the first answer and sends the batch again
            r = httpx2.post(
                f"http://127.0.0.1:{web}/api/v1/ingest",
                content=batch,
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            answers.append((r.status_code, r.json()))
        assert answers == [(202, {"accepted": 3, "rejected": []})] * 2

        def stored() -> int:
            with pg_db.sessions() as s:
                return int(s.scalar(select(func.count()).select_from(StoredEvent)) or 0)

        mails = wait_for(lambda: smtp_server[2].messages[before:], timeout=60)
        wait_for(lambda: stored() >= 2, timeout=30)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{logs()}") from None
    finally:
        stop_procs(procs)

    assert len(mails) == 1 and mails[0]["Subject"].startswith("【重大】東海精密部品株式会社")
    with pg_db.sessions() as s:
        uids = s.scalars(select(StoredEvent.event_uid)).all()
        quarantined = s.scalars(select(QuarantinedRecord)).all()
        incidents = s.scalars(select(Incident)).all()
    assert len(uids) == 2 and "ok" in uids  # each of the two good lines once, retry or not
    assert {q.source_format for q in quarantined} == {"cef"}  # at least once (the retry too)
    assert [i.severity for i in incidents] == ["serious"]
