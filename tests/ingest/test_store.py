"""Nothing accepted is lost, nothing rejected vanishes: the store behind the ingest API."""

from __future__ import annotations

import orjson
from sqlalchemy import func, select

from otasuke.db.engine import Database
from otasuke.db.models import QuarantinedRecord, Sensor, StoredEvent
from otasuke.demo.seed import demo_sensor, seed_demo
from otasuke.ingest.store import Source, accept_lines

FG = (
    'date=2026-11-24 time=10:00:00 devname="FG60F" type="utm" subtype="ips" level="alert" '
    'srcip=203.0.113.5 dstip=192.168.1.2 action="dropped" attack="X" severity="high"'
)


def env(raw: object, **extra: object) -> bytes:
    return orjson.dumps({"format": "fortigate", "raw": raw, **extra})


def test_accepts_quarantines_and_dedupes(any_db: Database) -> None:
    with any_db.session() as s:
        seed_demo(s)
        source = Source.of(demo_sensor(s, "tokai-parts", "fortigate"))
    lines = [
        env(FG, event_id="a-1"),
        b"{not json",
        env(FG, event_id="a-1"),
        orjson.dumps({"format": "nope", "raw": "x"}),
        orjson.dumps({"raw": "x"}),
        b"",
        env(FG.replace("10:00:00", "10:00:01")),
    ]
    with any_db.session() as s:
        result = accept_lines(s, source, lines)
    assert result.accepted == 2
    assert result.duplicates == 1
    assert [(e.line, e.field) for e in result.rejected] == [
        (2, "line"),
        (4, "format"),
        (5, "format"),
    ]
    assert "fortigate" in (result.rejected[1].hint or "")
    with any_db.session() as s:
        assert s.scalar(select(func.count()).select_from(StoredEvent)) == 2
        q = s.scalars(select(QuarantinedRecord).order_by(QuarantinedRecord.id)).all()
        assert q[0].raw == "{not json"
        assert all(r.customer_id == source.customer_id and r.reason for r in q)
        sensor = s.get_one(Sensor, source.sensor_id)
        assert sensor.event_count == 2 and sensor.last_event_at is not None
    with any_db.session() as s:  # re-sending the same batch stores nothing twice
        again = accept_lines(s, source, [env(FG, event_id="a-1")])
    assert (again.accepted, again.duplicates) == (0, 1)
