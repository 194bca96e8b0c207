"""HTTP ingest acknowledges on the fsynced spool (issue 5 point 3), real spool files and databases.

202 (and the ``_bulk`` answer) means: the accepted envelopes are in the spool on disk;
refused envelopes are answered line by line and kept in the quarantine; the drain
parses and stores afterwards, at least once, idempotent by event id.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from otasuke.db.engine import Database
from otasuke.db.models import QuarantinedRecord, Sensor, StoredEvent
from otasuke.demo.seed import seed_demo
from otasuke.ingest.event import content_id
from otasuke.ingest.receivers.drain import Drain, IngestSpool
from otasuke.ingest.spool import Position, Spool, scan
from otasuke.settings import Settings
from otasuke.web.app import create_app

UTM = "tokai-parts/本社UTM FortiGate 60F"
WINDOWS = "tokai-parts/社内PC イベントログ"


def fortigate(seq: int, event_id: str | None = None) -> bytes:
    env: dict[str, object] = {
        "format": "fortigate",
        "raw": f"date=2026-11-24 time=10:00:00 devname=FG60F type=event subtype=system "
        f'level=notice msg="seq={seq}"',
    }
    if event_id is not None:
        env["event_id"] = event_id
    return orjson.dumps(env)


def spool_payloads(directory: Path) -> list[dict[str, object]]:
    """Every intact record in the spool's segment files, read straight from disk."""
    out = []
    for path in sorted(directory.glob("*.seg")):
        for _offset, payload, _size in scan(path.read_bytes()):
            if payload is not None:
                out.append(orjson.loads(payload))
    return out


@dataclass
class Rig:
    client: TestClient
    db: Database
    spool_dir: Path
    drain: Drain
    tokens: dict[str, str]

    def post(self, body: bytes, token: str = UTM) -> tuple[int, dict[str, object]]:
        r = self.client.post(
            "/api/v1/ingest",
            content=body,
            headers={"Authorization": f"Bearer {self.tokens[token]}"},
        )
        return r.status_code, r.json()

    def uids(self) -> list[str]:
        with self.db.session() as s:
            return list(s.scalars(select(StoredEvent.event_uid).order_by(StoredEvent.id)))


@contextmanager
def make_rig(db: Database, settings: Settings, tmp_path: Path) -> Iterator[Rig]:
    """The app with a spool whose drain does not run by itself: the test drives it."""
    with db.session() as s:
        _, tokens = seed_demo(s)
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir)
    drain = Drain(spool, db)
    app = create_app(settings, db=db, ingest_spool=IngestSpool.of_drain(spool, drain))
    try:
        with TestClient(app) as client:
            yield Rig(client, db, spool_dir, drain, tokens)
    finally:
        spool.close()


@pytest.fixture
def rig(sqlite_db: Database, settings: Settings, tmp_path: Path) -> Iterator[Rig]:
    with make_rig(sqlite_db, settings, tmp_path) as r:
        yield r


@pytest.fixture
def any_rig(any_db: Database, settings: Settings, tmp_path: Path) -> Iterator[Rig]:
    """The same on SQLite and on the real PostgreSQL."""
    with make_rig(any_db, settings, tmp_path) as r:
        yield r


def test_202_means_in_the_spool_file_then_drained_once(any_rig: Rig) -> None:
    rig = any_rig
    status, answer = rig.post(b"\n".join([fortigate(1, "fw-1"), fortigate(2)]))
    assert status == 202 and answer == {"accepted": 2, "rejected": []}
    # acknowledged: on disk in the spool, not yet in the database
    records = spool_payloads(rig.spool_dir)
    raw_2 = orjson.loads(fortigate(2))["raw"]
    assert [(r["kind"], r["line"], r.get("event_id")) for r in records] == [
        ("http", 1, "fw-1"),
        ("http", 2, content_id(raw_2)),  # no event_id sent: its content's SHA-256
    ]
    assert 'msg="seq=2"' in str(records[1]["raw"])
    assert rig.uids() == []
    rig.drain.run_once()
    uids = rig.uids()
    assert uids[0] == "fw-1"
    assert uids[1] == content_id(raw_2)
    # a crash between the commit and the cursor move replays the batch: stored once
    rig.drain.position = Position(0, 0)
    rig.drain.run_once()
    assert rig.drain.stats.duplicates == 2
    assert rig.uids() == uids


def test_bad_envelope_is_answered_per_line_and_quarantined_at_once(rig: Rig) -> None:
    body = b"\n".join(
        [fortigate(1, "ok-1"), b'{"format": "fortigate", "raw": "cut', b'{"raw": "x"}', b""]
    )
    status, answer = rig.post(body)
    assert status == 202
    assert answer["accepted"] == 1
    rejected = answer["rejected"]
    assert isinstance(rejected, list)
    assert [(e["line"], e["field"]) for e in rejected] == [(2, "line"), (3, "format")]
    assert "not valid JSON" in rejected[0]["error"] and rejected[0]["hint"]
    with rig.db.session() as s:  # before any drain: the refused lines are already kept
        rows = s.scalars(select(QuarantinedRecord).order_by(QuarantinedRecord.id)).all()
        assert [(q.field, q.location) for q in rows] == [
            ("line", "POST /api/v1/ingest line 2"),
            ("format", "POST /api/v1/ingest line 3"),
        ]
        assert rows[0].raw == '{"format": "fortigate", "raw": "cut'
    assert len(spool_payloads(rig.spool_dir)) == 1
    status, answer = rig.post(b"not json\n[1]")
    assert status == 422 and answer["accepted"] == 0


def test_a_line_its_parser_refuses_is_quarantined_by_the_drain(rig: Rig) -> None:
    bad = orjson.dumps({"format": "fortigate", "raw": "no key value pairs here"})
    status, answer = rig.post(b"\n".join([fortigate(1, "p-1"), bad]))
    assert status == 202 and answer == {"accepted": 2, "rejected": []}
    rig.drain.run_once()
    with rig.db.session() as s:
        [row] = s.scalars(select(QuarantinedRecord)).all()
        assert row.location.startswith("POST /api/v1/ingest line 2, spool ")
        assert row.customer_id is not None and row.sensor_id is not None
    assert rig.uids() == ["p-1"]


def test_a_retried_batch_is_stored_once_with_or_without_event_id(rig: Rig) -> None:
    """A client that lost the 202 and sends the batch again: one copy of each event."""
    for _ in range(2):
        assert rig.post(b"\n".join([fortigate(7, "retry-7"), fortigate(8)]))[0] == 202
    rig.drain.run_once()
    uids = rig.uids()
    assert uids.count("retry-7") == 1
    assert len(uids) == 2  # the envelope without event_id: its content's SHA-256, once


def test_bulk_documents_are_spooled_and_drained(rig: Rig) -> None:
    doc = {"message": "a generic JSON log", "@timestamp": "2026-11-24T01:00:00Z"}
    body = b"\n".join(
        orjson.dumps(x)
        for x in ({"index": {"_id": "doc-1"}}, doc, {"create": {}}, doc | {"message": "two"})
    )
    r = rig.client.post(
        "/api/v1/_bulk",
        content=body + b"\n",
        headers={"Authorization": f"Bearer {rig.tokens[WINDOWS]}"},
    )
    assert r.status_code == 200 and r.json()["errors"] is False, r.text
    records = spool_payloads(rig.spool_dir)
    assert [(x["kind"], x["line"]) for x in records] == [("bulk", 2), ("bulk", 4)]
    assert records[0]["event_id"] == "doc-1"
    assert records[1]["event_id"] == content_id(doc | {"message": "two"})
    rig.drain.run_once()
    uids = rig.uids()
    assert sorted(uids) == sorted(["doc-1", content_id(doc | {"message": "two"})])


def test_deleted_sensor_records_are_quarantined(rig: Rig) -> None:
    assert rig.post(fortigate(1, "gone-1"))[0] == 202
    with rig.db.session() as s:
        sensor = s.scalar(select(Sensor).where(Sensor.name == "本社UTM FortiGate 60F"))
        assert sensor is not None
        s.delete(sensor)
    rig.drain.run_once()
    with rig.db.session() as s:
        [row] = s.scalars(select(QuarantinedRecord)).all()
        assert "no longer exists" in row.reason and "POST /api/v1/ingest" in row.reason
        assert (
            s.scalar(
                select(func.count())
                .select_from(StoredEvent)
                .where(StoredEvent.event_uid == "gone-1")
            )
            == 0
        )


def test_spool_backlog_limit_is_429(rig: Rig) -> None:
    """The drain is stopped (here: never run) and the spool fills: the sender is told to wait."""
    settings = rig.client.app.state.settings  # type: ignore[attr-defined]
    settings.ingest_max_spool_bytes = 1024 * 1024
    big = b"\n".join(fortigate(n, f"big-{n}") for n in range(8000))
    assert rig.post(big)[0] == 202
    status, answer = rig.post(fortigate(9000, "late"))
    assert status == 429 and "spool backlog" in str(answer["error"])
    rig.drain.run_once()
    assert "late" not in rig.uids()


def test_without_the_lifespan_ingest_is_503(sqlite_db: Database, settings: Settings) -> None:
    with sqlite_db.session() as s:
        _, tokens = seed_demo(s)
    client = TestClient(create_app(settings, db=sqlite_db))  # no `with`: no lifespan
    r = client.post(
        "/api/v1/ingest", content=fortigate(1), headers={"Authorization": f"Bearer {tokens[UTM]}"}
    )
    assert r.status_code == 503 and r.json()["hint"]


def test_a_spool_that_cannot_be_written_acknowledges_nothing(rig: Rig) -> None:
    rig.drain.spool.close()  # as if its disk were gone
    status, answer = rig.post(fortigate(1, "never"))
    assert status == 503 and "spool could not be written" in str(answer["error"])
    assert "again" in str(answer["hint"])
    r = rig.client.post(
        "/api/v1/_bulk",
        content=b'{"index": {}}\n{"message": "x"}\n',
        headers={"Authorization": f"Bearer {rig.tokens[WINDOWS]}"},
    )
    assert r.status_code == 503
