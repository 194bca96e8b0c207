"""Drain (スプール排出): spool records → parsed, stored events, at-least-once.

The drain reads spool records in order from the durable cursor, groups them per
sensor, calls :func:`~otasuke.ingest.store.accept_lines`, commits, and only then
moves the cursor. A crash between the commit and the cursor move replays the
batch: each syslog line's event id is derived from where it sits in the spool
(``syslog-<sensor>-<segment>-<offset>``), so the replay is recognised as
duplicates and nothing is stored twice.

What cannot be stored is kept in the quarantine with the reason: lines from a
peer that no sensor claims ("unknown syslog source <ip>"), lines of a sensor
deleted meanwhile, damaged spool records (CRC or length wrong), and every line a
parser refuses. Quarantine rows are written at least once too: a replay after a
crash can repeat one.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from otasuke.db.engine import Database
from otasuke.db.models import QuarantinedRecord, Sensor
from otasuke.ingest.spool import Damaged, Position, Record, Spool
from otasuke.ingest.store import Source, accept_lines

log = logging.getLogger(__name__)


def syslog_event_id(sensor_id: int, position: Position) -> str:
    """The idempotency key of a syslog line: where it sits in the spool."""
    return f"syslog-{sensor_id}-{position.segment}-{position.offset}"


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


class Drain:
    """Moves spool records into the database; one drain per spool."""

    def __init__(self, spool: Spool, db: Database, *, batch_records: int = 2000) -> None:
        self.spool = spool
        self.db = db
        self.batch_records = batch_records
        self.stats = DrainStats()
        self.position = spool.cursor()

    def backlog_bytes(self) -> int:
        """Spool bytes not yet drained (the backlog shown in status)."""
        return self.spool.backlog_bytes(self.position)

    def run_once(self) -> int:
        """Drain one batch; return the number of records (and damaged stretches) handled."""
        batch = self.spool.read(self.position, max_records=self.batch_records)
        handled = len(batch.records) + len(batch.damaged)
        if handled:
            with self.db.session() as s:
                self._store(s, batch.records)
                for damaged in batch.damaged:
                    self._keep_damaged(s, damaged)
            self.stats.batches += 1
        if batch.next_position != self.position:
            self.spool.commit(batch.next_position)
            self.position = batch.next_position
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
                        "format": item["format"],
                        "raw": item["raw"],
                        "event_id": syslog_event_id(sensor.id, position),
                        **({"host": item["host"]} if item.get("host") else {}),
                    }
                )
                for position, item in items
            ]
            result = accept_lines(s, Source.of(sensor), lines)
            self.stats.accepted += result.accepted
            self.stats.duplicates += result.duplicates
            self.stats.quarantined += len(result.rejected)

    def _keep_unrouted(
        self, s: Session, position: Position, item: dict[str, Any], sensor_id: int | None
    ) -> None:
        peer = item.get("peer", "?")
        if sensor_id is None:
            self.stats.unknown_source += 1
            reason = f"unknown syslog source {peer}"
        else:
            reason = f"sensor {sensor_id} no longer exists (syslog from {peer})"
        self.stats.quarantined += 1
        s.add(
            QuarantinedRecord(
                customer_id=None,
                sensor_id=None,
                location=f"syslog {item.get('transport', '?')} from {peer}, spool "
                f"{position.segment}:{position.offset}",
                source_format=item.get("format"),
                field="source",
                reason=reason,
                raw=str(item.get("line") or item.get("raw") or ""),
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
