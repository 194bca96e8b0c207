"""Nothing accepted is lost, nothing rejected vanishes: the store behind the ingest API."""

from __future__ import annotations

from datetime import UTC, datetime

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


def test_a_batch_in_bulk_keeps_its_order_and_its_first_copy(any_db: Database) -> None:
    with any_db.session() as s:
        seed_demo(s)
        source = Source.of(demo_sensor(s, "tokai-parts", "fortigate"))
    times = [f"10:00:{n:02d}" for n in (5, 1, 9, 3)]
    lines = [env(FG.replace("10:00:00", t), event_id=f"o-{t}") for t in times]
    lines.append(env(FG.replace("10:00:00", "10:59:59"), event_id="o-10:00:01"))  # repeated id
    with any_db.session() as s:
        result = accept_lines(s, source, lines)
    assert (result.accepted, result.duplicates) == (4, 1)
    with any_db.session() as s:
        rows = s.scalars(select(StoredEvent).order_by(StoredEvent.id)).all()
        # stored in arrival order (detection takes pending events by id), first copy kept
        assert [r.event_uid for r in rows] == [f"o-{t}" for t in times]
        assert rows[1].observed_at.minute == 0 and not rows[1].processed
        assert rows[0].fields["devname"] == "FG60F" and rows[0].raw.startswith("date=")


def test_without_returning_the_stored_ids_are_looked_up_first(sqlite_db: Database) -> None:
    """The path for SQLite older than 3.35 (no RETURNING): one writer, ids looked up."""
    from otasuke.ingest import store

    with sqlite_db.session() as s:
        seed_demo(s)
        source = Source.of(demo_sensor(s, "tokai-parts", "fortigate"))
        accept_lines(s, source, [env(FG, event_id="x-1")])
    values = [
        {
            "customer_id": source.customer_id,
            "sensor_id": source.sensor_id,
            "event_uid": uid,
            "source_format": "fortigate",
            "observed_at": datetime(2026, 11, 24, 1, tzinfo=UTC),
            "received_at": datetime.now(UTC),
            "host": None,
            "record_id": None,
            "fields": {"a": uid},
            "raw": "r",
            "processed": False,
        }
        for uid in ("x-1", "x-2", "x-3")
    ]
    with sqlite_db.session() as s:
        assert store._insert_absent(s, source, values) == 2
    with sqlite_db.session() as s:
        uids = s.scalars(select(StoredEvent.event_uid).order_by(StoredEvent.id)).all()
        assert uids == ["x-1", "x-2", "x-3"]


def test_fields_orjson_cannot_write_go_through_the_standard_library() -> None:
    from otasuke.ingest import store

    assert orjson.loads(store._json_text({"n": 2**70, "s": "東海"})) == {"n": 2**70, "s": "東海"}
