"""Drain (スプール排出): spool records → parsed, stored events, at-least-once.

The drain reads spool records in order from the durable cursor, groups them per
sensor, calls :func:`~otasuke.ingest.store.accept_lines`, commits, and only then
moves the cursor. A crash between the commit and the cursor move replays the
batch: each record's event id is stable across the replay, so the replay is
recognised as duplicates and nothing is stored twice.

Record kinds (the ``kind`` field of the spool record's JSON; absent means syslog):

- ``syslog``: a line of the syslog receivers; event id ``syslog-<sensor>-<segment>-<offset>``.
- ``http``: an envelope of ``POST /api/v1/ingest`` (:func:`envelope_record`), and
- ``bulk``: a document of the Elasticsearch ``_bulk`` subset, as an envelope.
  Event id: the envelope's own ``event_id`` (the ``_bulk`` ``_id``) when it has one,
  else the SHA-256 of its ``raw`` (:func:`~otasuke.ingest.event.content_id`), written
  into the record at receipt (:func:`envelope_record`): a client that re-sends a batch
  whose answer it lost stores it once. A record without any id (none is written so
  today) falls back to ``<kind>-<sensor>-<segment>-<offset>``.

What cannot be stored is kept in the quarantine with the reason: lines from a
peer that no sensor claims ("unknown syslog source <ip>"), lines of a sensor
deleted meanwhile, damaged spool records (CRC or length wrong), and every line a
parser refuses. Quarantine rows are written at least once too: a replay after a
crash can repeat one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from otasuke.db.engine import Database
from otasuke.db.models import QuarantinedRecord, Sensor
from otasuke.ingest.envelope import Envelope
from otasuke.ingest.event import content_id
from otasuke.ingest.spool import Damaged, Position, Record, Spool
from otasuke.ingest.store import Source, accept_lines

log = logging.getLogger(__name__)

ENVELOPE_KINDS = {"http": "POST /api/v1/ingest", "bulk": "POST /api/v1/_bulk"}
"""Spool record kinds that carry an ingest envelope, and where they were received."""


def syslog_event_id(sensor_id: int, position: Position) -> str:
    """The idempotency key of a syslog line: where it sits in the spool."""
    return f"syslog-{sensor_id}-{position.segment}-{position.offset}"


def envelope_event_id(kind: str, sensor_id: int, position: Position) -> str:
    """The idempotency key of an HTTP envelope without its own ``event_id``: its spool place."""
    return f"{kind}-{sensor_id}-{position.segment}-{position.offset}"


def envelope_record(kind: str, sensor_id: int, line: int, env: Envelope) -> bytes:
    """One validated envelope of an HTTP request (``kind`` http or bulk) as a spool record."""
    obj: dict[str, Any] = {
        "kind": kind,
        "sensor": sensor_id,
        "line": line,
        "format": env.format,
        "raw": env.raw,
    }
    obj["event_id"] = env.event_id or content_id(env.raw)
    if env.host:
        obj["host"] = env.host
    return orjson.dumps(obj)


def record_event_id(item: dict[str, Any], sensor_id: int, position: Position) -> str:
    """The event id of a spool record of any kind (see the module docstring)."""
    kind = item.get("kind") or "syslog"
    if kind in ENVELOPE_KINDS:
        own = item.get("event_id")
        return own if isinstance(own, str) and own else envelope_event_id(kind, sensor_id, position)
    return syslog_event_id(sensor_id, position)


@dataclass(slots=True)
class DrainStats:
    """Counters since start (a seam for /metrics and ``otasuke status``)."""

    records: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    unknown_source: int = 0
    damaged_records: int = 0
    batches: int = 0
    db_errors: int = 0
    errors: int = 0
    """Other failures of a batch (logged with the traceback; the batch is retried)."""
    drained: int = 0
    """Intact records whose batch is committed and behind the cursor."""


class Drain:
    """Moves spool records into the database; one drain per spool."""

    def __init__(
        self,
        spool: Spool,
        db: Database,
        *,
        batch_records: int = 2000,
        on_stored: Callable[[int], None] | None = None,
    ) -> None:
        self.spool = spool
        self.db = db
        self.batch_records = batch_records
        self.on_stored = on_stored
        """Called with the number of events stored after each committed batch (wakes the
        in-process detection worker)."""
        self.stats = DrainStats()
        self.position = spool.cursor()

    def backlog_bytes(self) -> int:
        """Spool bytes not yet drained (the backlog shown in status)."""
        return self.spool.backlog_bytes(self.position)

    def run_once(self) -> int:
        """Drain one batch; return the number of records (and damaged stretches) handled."""
        batch = self.spool.read(self.position, max_records=self.batch_records)
        handled = len(batch.records) + len(batch.damaged)
        accepted_before = self.stats.accepted
        if handled:
            with self.db.session() as s:
                self._store(s, batch.records)
                for damaged in batch.damaged:
                    self._keep_damaged(s, damaged)
            # committed: the records count as pending events in the database from now on
            self.stats.drained += len(batch.records)
            self.stats.batches += 1
        if batch.next_position != self.position:
            self.spool.commit(batch.next_position)
            self.position = batch.next_position
        stored = self.stats.accepted - accepted_before
        if stored and self.on_stored is not None:
            self.on_stored(stored)
        return handled

    def run(self, stop: threading.Event, idle_seconds: float = 0.05) -> None:
        """Drain until ``stop`` is set; a database error is logged and retried with backoff."""
        backoff = idle_seconds
        while not stop.is_set():
            try:
                handled = self.run_once()
                backoff = idle_seconds
            except SQLAlchemyError as err:
                self.stats.db_errors += 1
                log.warning("drain: database error, retrying in %.1f s: %s", backoff, err)
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            except Exception:  # the batch stays in the spool; retried, and visible in the log
                self.stats.errors += 1
                log.exception(
                    "drain: batch at %s failed, retrying in %.1f s", self.position, backoff
                )
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if not handled:
                stop.wait(idle_seconds)

    def _store(self, s: Session, records: list[Record]) -> None:
        groups: dict[int | None, list[tuple[Position, dict[str, Any]]]] = defaultdict(list)
        for record in records:
            self.stats.records += 1
            try:
                item = orjson.loads(record.payload)
            except orjson.JSONDecodeError:
                self._keep_damaged(s, Damaged(record.position, record.payload))
                continue
            groups[item.get("sensor")].append((record.position, item))
        for sensor_id, items in groups.items():
            sensor = s.get(Sensor, sensor_id) if sensor_id is not None else None
            if sensor is None:
                for position, item in items:
                    self._keep_unrouted(s, position, item, sensor_id)
                continue
            lines = [
                orjson.dumps(
                    {
                        "format": item.get("format"),
                        "raw": item.get("raw"),
                        "event_id": record_event_id(item, sensor.id, position),
                        **({"host": item["host"]} if item.get("host") else {}),
                    }
                )
                for position, item in items
            ]
            locations = [where(item, position) for position, item in items]
            result = accept_lines(s, Source.of(sensor), lines, locations=locations)
            self.stats.accepted += result.accepted
            self.stats.duplicates += result.duplicates
            self.stats.quarantined += len(result.rejected)

    def _keep_unrouted(
        self, s: Session, position: Position, item: dict[str, Any], sensor_id: int | None
    ) -> None:
        peer = item.get("peer", "?")
        kind = item.get("kind")
        if kind in ENVELOPE_KINDS:  # the token was valid at receipt: the sensor was deleted
            reason = f"sensor {sensor_id} no longer exists (received by {ENVELOPE_KINDS[kind]})"
            raw: Any = item.get("raw")
            text = raw if isinstance(raw, str) else orjson.dumps(raw).decode()
        elif sensor_id is None:
            self.stats.unknown_source += 1
            reason = f"unknown syslog source {peer}"
            text = str(item.get("line") or item.get("raw") or "")
        else:
            reason = f"sensor {sensor_id} no longer exists (syslog from {peer})"
            text = str(item.get("line") or item.get("raw") or "")
        self.stats.quarantined += 1
        s.add(
            QuarantinedRecord(
                customer_id=None,
                sensor_id=None,
                location=where(item, position),
                source_format=item.get("format"),
                field="source",
                reason=reason,
                raw=text.replace("\x00", "\\x00"),
            )
        )

    def _keep_damaged(self, s: Session, damaged: Damaged) -> None:
        self.stats.damaged_records += 1
        self.stats.quarantined += 1
        log.warning(
            "spool: damaged record at %d:%d (%d bytes) kept in the quarantine",
            damaged.position.segment,
            damaged.position.offset,
            len(damaged.data),
        )
        s.add(
            QuarantinedRecord(
                customer_id=None,
                sensor_id=None,
                location=f"spool {damaged.position.segment}:{damaged.position.offset}",
                source_format=None,
                field="spool",
                reason=f"spool record damaged: length or CRC32 wrong ({len(damaged.data)} bytes)",
                # PostgreSQL text cannot hold NUL: keep it visible as the text \x00.
                raw=damaged.data.decode("utf-8", "replace").replace("\x00", "\\x00"),
            )
        )


def where(item: dict[str, Any], position: Position) -> str:
    """Where a spool record came from, for its quarantine row."""
    spool = f"spool {position.segment}:{position.offset}"
    kind = item.get("kind")
    if kind in ENVELOPE_KINDS:
        return f"{ENVELOPE_KINDS[kind]} line {item.get('line', '?')}, {spool}"
    return f"syslog {item.get('transport', '?')} from {item.get('peer', '?')}, {spool}"


class SpoolConsumer(Protocol):
    """What :class:`IngestSpool` reads of the spool's consumer (the drain or the publisher)."""

    def backlog_bytes(self) -> int: ...


class IngestSpool:
    """The HTTP receivers' way into the one spool of a data folder.

    :meth:`append` returns once the records are fsynced (group commit with every
    other appender, syslog included); the HTTP answer is given after it. The
    consumer (the drain, or with ``OTASUKE_BUS_URL`` the JetStream publisher) moves
    them on; ``backlog_bytes`` and ``backlog_records`` say how far behind it is, for
    admission control. Made by ``otasuke serve`` around the syslog receivers' spool,
    or by :meth:`open` when the app runs alone (tests, a bare ASGI server).
    """

    def __init__(
        self,
        spool: Spool,
        consumer: SpoolConsumer,
        consumed_records: Callable[[], int],
        *,
        drain: Drain | None = None,
        stop: Callable[[], None] | None = None,
    ) -> None:
        self.spool = spool
        self.consumer = consumer
        self._consumed = consumed_records
        self.drain = drain
        """The drain when records are drained in this process (None: published to the bus)."""
        self._stop = stop

    @classmethod
    def of_drain(
        cls, spool: Spool, drain: Drain, stop: Callable[[], None] | None = None
    ) -> IngestSpool:
        return cls(spool, drain, lambda: drain.stats.drained, drain=drain, stop=stop)

    @classmethod
    def open(cls, spool: Spool, db: Database, *, batch_records: int = 2000) -> IngestSpool:
        """Start a drain thread on ``spool``; :meth:`close` stops it and closes the spool."""
        drain = Drain(spool, db, batch_records=batch_records)
        stop = threading.Event()
        thread = threading.Thread(target=drain.run, args=(stop,), name="ingest-drain", daemon=True)
        thread.start()

        def close() -> None:
            stop.set()
            thread.join(timeout=60)
            spool.close()

        return cls.of_drain(spool, drain, stop=close)

    def append(self, records: list[bytes]) -> None:
        """Write the records; return once they are fsynced (blocking: call it in a thread)."""
        self.spool.append(records)

    def backlog_bytes(self) -> int:
        """Spool bytes the consumer has not yet moved on."""
        return self.consumer.backlog_bytes()

    def backlog_records(self) -> int:
        """Records waiting in the spool: found at open, plus appended, minus moved on."""
        waiting = self.spool.report.intact_records + self.spool.appended_records
        return max(0, waiting - self._consumed())

    def wait_drained(self, timeout: float = 30.0) -> bool:
        """Block until everything appended so far is moved on (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.backlog_bytes() > 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        """Stop the consumer this object started, if any (an ``otasuke serve`` spool is closed
        by its syslog handle)."""
        if self._stop is not None:
            self._stop()
            self._stop = None
