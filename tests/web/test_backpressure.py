"""2× overload of the HTTP ingest (issue 5, point 4): 429 with Retry-After, nothing of a
refused batch stored, every refused event counted in /metrics, accepted again once the
backlog is processed.

Real app, real SQLite, real spool and drain, no worker (events stay pending), no mocks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from otasuke.db.engine import Database
from otasuke.db.models import StoredEvent
from otasuke.demo.seed import seed_demo
from otasuke.ingest.backpressure import (
    RETRY_MAX_SECONDS,
    Admission,
    decide,
    retry_after_seconds,
)
from otasuke.pipeline import pending_count
from otasuke.settings import Settings
from otasuke.web.app import create_app
from tests.conftest import wait_drained

LIMIT = 50
BATCH = 10
SHED_RE = re.compile(r'^otasuke_events_shed_total\{transport="http"\} ([0-9.e+]+)$', re.M)


def set_setting(settings: Settings, name: str, value: Any) -> None:
    assert name in type(settings).model_fields, name
    setattr(settings, name, value)


def batch(start: int, n: int) -> bytes:
    return b"\n".join(
        orjson.dumps(
            {
                "format": "fortigate",
                "raw": f"date=2026-11-24 time=10:00:00 devname=FG60F type=event "
                f'subtype=system level=notice msg="seq={i:05d}"',
                "event_id": f"bp-{i}",
            }
        )
        for i in range(start, start + n)
    )


def shed_http(client: TestClient) -> float:
    r = client.get("/metrics")
    assert r.status_code == 200
    match = SHED_RE.search(r.text)
    return float(match.group(1)) if match else 0.0


def stored(db: Database) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(StoredEvent)) or 0)


@pytest.fixture
def client_token(
    sqlite_db: Database, settings: Settings
) -> Iterator[tuple[TestClient, str, Database]]:
    set_setting(settings, "ingest_max_pending", LIMIT)
    with sqlite_db.session() as s:
        _, tokens = seed_demo(s)
        s.execute(update(StoredEvent).values(processed=True))
    token = tokens["tokai-parts/本社UTM FortiGate 60F"]
    with TestClient(create_app(settings, db=sqlite_db)) as client:
        yield client, token, sqlite_db


def test_overload_is_refused_counted_and_nothing_of_it_stored(
    client_token: tuple[TestClient, str, Database],
) -> None:
    client, token, db = client_token
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
    before_rows = stored(db)
    before_shed = shed_http(client)
    sent = accepted = refused = 0
    statuses = []
    for k in range(2 * LIMIT // BATCH):
        r = client.post("/api/v1/ingest", content=batch(k * BATCH, BATCH), headers=headers)
        sent += BATCH
        statuses.append(r.status_code)
        if r.status_code == 202:
            assert r.json()["accepted"] == BATCH
            accepted += BATCH
        else:
            assert r.status_code == 429, r.text
            assert 1 <= int(r.headers["Retry-After"]) <= RETRY_MAX_SECONDS
            body = r.json()
            assert "backlog" in body["error"] and "again" in body["hint"]
            assert body["stored"] == 0 and body["refused"] == BATCH
            refused += BATCH
    assert statuses == [202] * (LIMIT // BATCH) + [429] * (LIMIT // BATCH)
    assert accepted == LIMIT and accepted + refused == sent == 2 * LIMIT
    wait_drained(client)
    assert stored(db) - before_rows == accepted
    with db.session() as s:
        assert pending_count(s) == accepted
    assert shed_http(client) - before_shed == refused

    # The backlog is processed (here: marked so; admission only reads the count) …
    with db.session() as s:
        s.execute(update(StoredEvent).values(processed=True))
    admission = client.app.state.ingest_admission  # type: ignore[attr-defined]
    admission.refresh()
    # … and a refused batch, sent again, is accepted: nothing of it was stored before.
    r = client.post("/api/v1/ingest", content=batch(LIMIT, BATCH), headers=headers)
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": BATCH, "rejected": []}
    wait_drained(client)
    assert stored(db) - before_rows == accepted + BATCH
    assert shed_http(client) - before_shed == refused


def test_inflight_cap_refuses_with_429(client_token: tuple[TestClient, str, Database]) -> None:
    client, token, db = client_token
    set_setting(client.app.state.settings, "ingest_max_inflight", 0)  # type: ignore[attr-defined]
    before_shed = shed_http(client)
    r = client.post(
        "/api/v1/ingest", content=batch(0, 3), headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    assert "at once" in r.json()["error"]
    assert shed_http(client) - before_shed == 3
    with db.session() as s:
        assert pending_count(s) == 0


def test_decision_and_retry_after() -> None:
    common = {"max_pending": 100, "inflight": 0, "max_inflight": 4, "rate": 10.0}
    assert decide(pending=90, incoming=10, **common).admitted  # type: ignore[arg-type]
    refused = decide(pending=90, incoming=11, **common)  # type: ignore[arg-type]
    assert not refused.admitted and refused.status == 429 and refused.retry_after == 1
    assert decide(pending=0, incoming=101, **common).status == 413  # type: ignore[arg-type]
    assert retry_after_seconds(250, 10.0) == 25
    assert retry_after_seconds(10_000, 10.0) == 60
    assert retry_after_seconds(5, 0.0) == 60
    assert retry_after_seconds(1, 1000.0) == 1


def test_admission_observes_the_processing_rate() -> None:
    now = [0.0]
    backlog = [100]
    admission = Admission(lambda: backlog[0], clock=lambda: now[0])
    admission.refresh()
    assert admission.estimate() == 100
    assert admission.try_admit(20, max_pending=1000, max_inflight=4).admitted
    admission.done(20, 20)
    assert admission.estimate() == 120
    now[0], backlog[0] = 2.0, 20  # 100 of the 120 processed in 2 s
    assert admission.stale()
    admission.refresh()
    assert admission.rate == pytest.approx(50.0)
    assert admission.estimate() == 20
