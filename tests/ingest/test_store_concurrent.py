"""Two writers storing the same event ids at the same moment, in the real PostgreSQL.

The drain and the bus workers store in bulk with ``INSERT … ON CONFLICT (customer_id,
event_uid) DO NOTHING RETURNING``: the database, not a look-up before the insert, keeps
the second copy out. A re-sent batch (a redelivered bus message racing its first
delivery, a client re-posting what it got no answer for) is stored once, counted once as
accepted and once as duplicates, and its events are detected once (REQ-MON-NET,
REQ-MON-EP: nothing accepted is lost, nothing is doubled).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select

from otasuke.bus.batch import BusRecord, encode_batch
from otasuke.bus.consume import BatchHandler, HandleResult
from otasuke.db.engine import Database
from otasuke.db.models import Alert, Sensor, StoredEvent
from otasuke.detect.engine import Detector
from otasuke.ingest.store import AcceptResult, Source, accept_lines
from tests.bus.test_workers import fortigate_line, make_body, seeded_sensor, tiny_detector_paths

pytestmark = pytest.mark.postgres


def envelopes(seqs: range) -> list[bytes]:
    return [
        orjson.dumps({"format": "fortigate", "raw": fortigate_line(i), "event_id": f"c-{i}"})
        for i in seqs
    ]


def stored(db: Database, customer_id: int) -> list[str]:
    with db.sessions() as s:
        return list(
            s.scalars(select(StoredEvent.event_uid).where(StoredEvent.customer_id == customer_id))
        )


def test_a_writer_waiting_on_the_same_ids_counts_them_as_duplicates(pg_db: Database) -> None:
    sensor_id, customer_id = seeded_sensor(pg_db)
    with pg_db.sessions() as s:
        source = Source.of(s.get_one(Sensor, sensor_id))
    lines = envelopes(range(1000))
    inserted = threading.Event()
    results: dict[str, AcceptResult] = {}
    waited: list[float] = []

    def first() -> None:  # inserts, then keeps its transaction open for a while
        with pg_db.session() as s:
            results["first"] = accept_lines(s, source, lines)
            inserted.set()
            time.sleep(0.5)

    def second() -> None:  # the same ids while the first has not committed yet
        inserted.wait(10)
        started = time.monotonic()
        with pg_db.session() as s:
            results["second"] = accept_lines(s, source, lines)
        waited.append(time.monotonic() - started)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    print(f"\nfirst {results['first']}\nsecond (waited {waited[0]:.2f} s) {results['second']}")
    assert (results["first"].accepted, results["first"].duplicates) == (1000, 0)
    assert (results["second"].accepted, results["second"].duplicates) == (0, 1000)
    assert waited[0] > 0.3  # it really ran into the first one's uncommitted rows
    uids = stored(pg_db, customer_id)
    assert len(uids) == len(set(uids)) == 1000
    with pg_db.sessions() as s:
        assert s.get_one(Sensor, sensor_id).event_count == 1000


def test_two_writers_with_overlapping_batches_store_each_event_once(pg_db: Database) -> None:
    sensor_id, customer_id = seeded_sensor(pg_db)
    with pg_db.sessions() as s:
        source = Source.of(s.get_one(Sensor, sensor_id))
    # 0-2999 and 2000-4999 overlap by 1,000; each batch also repeats one of its own ids
    batches = [envelopes(range(0, 3000)) + envelopes(range(5)), envelopes(range(2000, 5000))]
    start = threading.Barrier(2)
    results: list[AcceptResult] = []

    def write(lines: list[bytes]) -> None:
        start.wait(10)
        with pg_db.session() as s:
            results.append(accept_lines(s, source, lines))

    threads = [threading.Thread(target=write, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    print(f"\n{results}")
    assert len(results) == 2
    assert sum(r.accepted for r in results) == 5000
    assert sum(r.duplicates for r in results) == 1000 + 5
    uids = stored(pg_db, customer_id)
    assert len(uids) == len(set(uids)) == 5000
    with pg_db.sessions() as s:
        assert s.get_one(Sensor, sensor_id).event_count == 5000  # both writers' counts


def test_two_workers_handling_the_same_message_at_once_store_and_detect_it_once(
    pg_db: Database, tmp_path: Path
) -> None:
    sensor_id, customer_id = seeded_sensor(pg_db)
    rules, iocs = tiny_detector_paths(tmp_path)
    detector = Detector.load([rules], [iocs], cache_dir=tmp_path / "c")
    workers = [BatchHandler(pg_db, detector), BatchHandler(pg_db, detector)]
    body = make_body(sensor_id, range(400))  # 8 alert lines, 3 records for the quarantine
    start = threading.Barrier(2)
    results: list[HandleResult] = []

    def handle(worker: BatchHandler, label: str) -> None:
        start.wait(10)
        results.append(worker.handle(body, label))

    threads = [
        threading.Thread(target=handle, args=(w, f"T#1 ({n})")) for n, w in enumerate(workers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    print(f"\n{results}")
    assert len(results) == 2
    assert sum(r.accepted for r in results) == 400
    assert sum(r.duplicates for r in results) == 400
    assert sum(r.processed for r in results) == 400
    assert sum(r.alerts for r in results) == 8
    uids = stored(pg_db, customer_id)
    assert len(uids) == len(set(uids)) == 400
    with pg_db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Alert)) == 8
        unprocessed = select(func.count()).select_from(StoredEvent)
        assert s.scalar(unprocessed.where(StoredEvent.processed.is_(False))) == 0


def test_two_workers_storing_the_same_ids_in_opposite_orders_store_each_once(
    pg_db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Opposite orders can deadlock in PostgreSQL: the aborted message is tried again."""
    sensor_id, customer_id = seeded_sensor(pg_db)
    rules, iocs = tiny_detector_paths(tmp_path)
    detector = Detector.load([rules], [iocs], cache_dir=tmp_path / "c")
    records = [
        BusRecord(
            event_id=f"syslog-{sensor_id}-o-1-{seq}",
            sensor_id=sensor_id,
            raw=fortigate_line(seq),
            format="fortigate",
        )
        for seq in range(2000)
    ]
    bodies = [encode_batch(records), encode_batch(records[::-1])]
    start = threading.Barrier(2)
    results: list[HandleResult] = []
    errors: list[BaseException] = []

    def handle(body: bytes, label: str) -> None:
        start.wait(10)
        try:
            results.append(BatchHandler(pg_db, detector).handle(body, label))
        except BaseException as err:  # reported below
            errors.append(err)

    caplog.set_level(logging.INFO, logger="otasuke.bus.consume")
    threads = [threading.Thread(target=handle, args=(b, f"T#{n}")) for n, b in enumerate(bodies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    retried = [r.message for r in caplog.records if "retrying" in r.message]
    print(f"\n{results}\nretried: {retried}")
    assert not errors
    assert sum(r.accepted for r in results) == 2000
    assert sum(r.duplicates for r in results) == 2000
    assert sum(r.processed for r in results) == 2000
    uids = stored(pg_db, customer_id)
    assert len(uids) == len(set(uids)) == 2000
