"""End to end: a UTM line over the ingest API → detection → incident → mail on a real SMTP server.

REQ-MON-NET (イ: malicious traffic from inside), REQ-MON-60MIN (notified at once), REQ-TEAM
(the token decides the customer).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import orjson
from fastapi.testclient import TestClient
from sqlalchemy import select

from otasuke.db.engine import Database
from otasuke.db.models import Incident, QuarantinedRecord
from tests.conftest import Inbox, wait_for

EMOTET_C2 = "66.210.228.178"  # in the bundled maltrail emotet list


def fortigate_line(dst: str, when: datetime) -> str:
    t = when.astimezone(ZoneInfo("Asia/Tokyo"))
    return (
        f'date={t:%Y-%m-%d} time={t:%H:%M:%S} devname="FG60F-TOKAI" type="traffic" '
        f'subtype="forward" level="notice" srcip=192.168.10.23 srcport=51544 '
        f'dstip={dst} dstport=443 action="accept" service="HTTPS" srcname="SEIZO-PC07"'
    )


def test_utm_line_to_customer_mail(
    live_app: tuple[TestClient, dict[str, str]],
    smtp_server: tuple[str, int, Inbox],
    sqlite_db: Database,
) -> None:
    client, tokens = live_app
    inbox = smtp_server[2]
    token = tokens["tokai-parts/本社UTM FortiGate 60F"]
    body = b"\n".join(
        [
            orjson.dumps(
                {
                    "format": "fortigate",
                    "raw": fortigate_line(EMOTET_C2, datetime.now(UTC)),
                    "event_id": "e2e-1",
                }
            ),
            b'{"format": "fortigate"}',
        ]
    )
    started = time.monotonic()
    r = client.post(
        "/api/v1/ingest",
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"},
    )
    assert r.status_code == 202, r.text
    answer = r.json()
    assert answer["accepted"] == 1
    assert answer["rejected"] == [
        {
            "line": 2,
            "field": "raw",
            "error": answer["rejected"][0]["error"],
            "hint": answer["rejected"][0]["hint"],
        }
    ]
    [mail] = wait_for(lambda: list(inbox.messages), timeout=60)
    latency = time.monotonic() - started
    assert mail["Subject"].startswith("【重大】東海精密部品株式会社")
    assert mail["To"] == "suzuki@tokai-parts.example.jp"
    text = mail.get_body().get_content()  # type: ignore[union-attr]
    assert "マルウェア" in text or "ウイルス" in text

    def recorded() -> tuple[str, datetime, datetime | None] | None:
        """The incident once its mail is recorded (the server has it before the commit)."""
        with sqlite_db.session() as s:
            inc = s.scalars(select(Incident)).one()
            if inc.notified_at is None:
                return None
            return inc.severity, inc.notified_at, inc.notify_deadline

    severity, notified_at, deadline = wait_for(recorded, timeout=30)
    assert severity == "serious"
    assert deadline is not None and notified_at <= deadline
    with sqlite_db.session() as s:
        assert s.scalars(select(QuarantinedRecord)).one().field == "raw"
    print(f"ingest → mail received: {latency:.2f} s")


def test_ingest_refuses_bad_token_and_all_bad_batch(
    live_app: tuple[TestClient, dict[str, str]],
) -> None:
    client, tokens = live_app
    r = client.post("/api/v1/ingest", content=b"{}", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["field"] == "Authorization"
    r = client.post("/api/v1/ingest", content=b"{}")
    assert r.status_code == 401
    token = tokens["tokai-parts/本社UTM FortiGate 60F"]
    r = client.post(
        "/api/v1/ingest", content=b"not json\n[1]", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 422
    assert [e["line"] for e in r.json()["rejected"]] == [1, 2]
