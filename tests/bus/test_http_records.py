"""HTTP envelopes in the spool travel the bus too (scale-out mode): kinds ``http`` and ``bulk``.

The publisher turns each spool record into a bus record; the worker stores it with
the envelope's own event id, or the one made of the spool id and place, so a
re-published message stores nothing twice. Real spool files, real SQLite.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from otasuke.bus.batch import encode_batch
from otasuke.bus.consume import BatchHandler
from otasuke.db.engine import Database
from otasuke.db.models import StoredEvent
from otasuke.detect.engine import Detector
from otasuke.ingest.envelope import Envelope
from otasuke.ingest.event import content_id
from otasuke.ingest.receivers.drain import envelope_record
from otasuke.ingest.receivers.publish import to_bus_record
from otasuke.ingest.spool import Position, Spool
from tests.bus.test_workers import seeded_sensor, tiny_detector_paths

LINE = 'date=2026-11-24 time=10:00:00 devname=FG60F type=event subtype=system msg="seq={n}"'


def test_http_and_bulk_records_cross_the_bus_and_are_stored_once(
    sqlite_db: Database, tmp_path: Path
) -> None:
    sensor_id, _ = seeded_sensor(sqlite_db)
    spool = Spool(tmp_path / "spool")
    try:
        spool.append(
            [
                envelope_record(
                    "http", sensor_id, 1, Envelope("fortigate", LINE.format(n=1), "own-1")
                ),
                envelope_record("http", sensor_id, 2, Envelope("fortigate", LINE.format(n=2))),
                envelope_record(
                    "bulk",
                    sensor_id,
                    2,
                    Envelope("jsonl", {"message": "hi", "@timestamp": "2026-11-24T01:00:00Z"}),
                ),
            ]
        )
        read = spool.read(Position(0, 0))
    finally:
        spool.close()
    records = [to_bus_record("abc123", r) for r in read.records]
    assert [r.event_id for r in records] == [  # without event_id: the content's SHA-256
        "own-1",
        content_id(LINE.format(n=2)),
        content_id({"message": "hi", "@timestamp": "2026-11-24T01:00:00Z"}),
    ]
    assert [r.transport for r in records] == ["http", "http", "bulk"]
    rules, iocs = tiny_detector_paths(tmp_path)
    handler = BatchHandler(sqlite_db, Detector.load([rules], [iocs], cache_dir=tmp_path / "c"))
    body = encode_batch(records)
    first = handler.handle(body, "T#1")
    again = handler.handle(body, "T#1")  # redelivered after a crash before the ack
    assert (first.accepted, first.quarantined) == (3, 0)
    assert (again.accepted, again.duplicates) == (0, 3)
    with sqlite_db.session() as s:
        rows = s.scalars(select(StoredEvent).order_by(StoredEvent.id)).all()
        assert [r.event_uid for r in rows] == [r.event_id for r in records]
        assert [r.source_format for r in rows] == ["fortigate", "fortigate", "jsonl"]
        assert rows[2].fields["message"] == "hi"
