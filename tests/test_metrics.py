"""Observability (issue 5 point 8): /metrics in the Prometheus format, from real rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update
from starlette.testclient import TestClient

from otasuke.db.engine import Database
from otasuke.db.models import Incident, Sensor
from otasuke.demo.seed import demo_sensor, seed_demo
from otasuke.health import check_sensors
from otasuke.ingest.spool import Spool
from otasuke.ingest.store import Source, accept_lines
from otasuke.metrics import Metrics, render_metrics, spool_backlog_bytes
from otasuke.settings import Settings
from otasuke.web.api import metrics as metrics_api
from otasuke.web.app import create_app

FG = 'date=2026-11-24 time=10:00:00 devname="FG60F" type="event" msg="x{n}"'


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def seed(db: Database) -> None:
    with db.session() as s:
        seed_demo(s)
        source = Source.of(demo_sensor(s, "tokai-parts", "fortigate"))
        s.execute(update(Sensor).values(created_at=datetime.now(UTC) - timedelta(hours=3)))
    lines = [orjson.dumps({"format": "fortigate", "raw": FG.format(n=n)}) for n in range(3)]
    lines += [lines[0], b"{broken", orjson.dumps({"format": "nope", "raw": "x"})]
    with db.session() as s:
        result = accept_lines(s, source, lines)
    assert (result.accepted, result.duplicates, len(result.rejected)) == (3, 1, 2)
    with db.session() as s:
        check_sensors(s, datetime.now(UTC))  # five demo sensors never sent anything
        started = datetime.now(UTC) - timedelta(minutes=5)
        incident = s.scalars(select(Incident)).first()
        assert incident is not None
        incident.sla_started_at = started
        incident.notified_at = started + timedelta(seconds=42)
    return None


@pytest.fixture
def app_metrics(sqlite_db: Database, settings: Settings) -> tuple[TestClient, Metrics]:
    seed(sqlite_db)
    app = create_app(settings, db=sqlite_db)
    app.include_router(metrics_api.router)
    app.state.metrics = mine = Metrics()
    with sqlite_db.session() as s:
        source = Source.of(demo_sensor(s, "tokai-parts", "fortigate"))
    with sqlite_db.session() as s:  # what the HTTP ingest API will report
        mine.count_accepted(accept_lines(s, source, [b"{bad"]), "http")
    mine.count_shed("http", 4)
    return TestClient(app), mine


def test_scrape_shows_events_quarantine_pending_and_silence(
    app_metrics: tuple[TestClient, Metrics],
) -> None:
    client, _ = app_metrics
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    got = samples(response.content)
    assert got[("otasuke_events_parsed_total", (("format", "fortigate"),))] == 3
    assert got[("otasuke_events_quarantined_total", (("reason_field", "line"),))] == 2
    assert got[("otasuke_events_quarantined_total", (("reason_field", "format"),))] == 1
    assert got[("otasuke_pending_events", ())] == 3
    assert got[("otasuke_sensors_silent", ())] == 5
    assert got[("otasuke_alerts_total", (("source", "health"),))] == 5
    assert got[("otasuke_incidents_open", (("severity", "info"),))] == 5
    assert got[("otasuke_events_received_total", (("transport", "http"),))] == 1
    assert got[("otasuke_events_shed_total", (("transport", "http"),))] == 4
    assert got[("otasuke_notify_latency_seconds_count", ())] == 1
    assert got[("otasuke_notify_latency_seconds_bucket", (("le", "60.0"),))] == 1
    assert got[("otasuke_notify_latency_seconds_bucket", (("le", "30.0"),))] == 0
    assert got[("otasuke_notify_latency_seconds_sum", ())] == 42
    assert got[("otasuke_worker_ready", ())] == 0


def test_metrics_token_is_required_when_set(
    app_metrics: tuple[TestClient, Metrics], settings: Settings
) -> None:
    client, _ = app_metrics
    client.app.state.settings = settings.model_copy(update={"metrics_token": "s3cret"})  # type: ignore[attr-defined]
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and b"otasuke_pending_events" in ok.content


def test_registries_are_apart(sqlite_db: Database) -> None:
    one, two = Metrics(), Metrics()
    one.count_received("http", 7)
    text = samples(render_metrics(sqlite_db, two))
    assert ("otasuke_events_received_total", (("transport", "http"),)) not in text


def test_spool_depth_without_opening_the_spool(tmp_path: Path) -> None:
    assert spool_backlog_bytes(tmp_path / "absent") is None
    spool = Spool(tmp_path / "spool")
    spool.append([b"a" * 100, b"b" * 50])
    position = spool.cursor()
    expected = spool.backlog_bytes(position)
    assert spool_backlog_bytes(tmp_path / "spool") == expected == 166  # 2 x 8-byte headers
    spool.close()
