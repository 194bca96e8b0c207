"""Detection worker's unit of work (検知ワーカー): one bus message, one database transaction.

For each message :class:`BatchHandler` stores its events (``accept_lines`` per sensor,
idempotent by event id), runs detection on exactly the events this message stored
— taken with ``SELECT … FOR UPDATE SKIP LOCKED`` and ``processed = false``, never a
global scan, so two workers never process the same event — records alerts and
incidents, marks the events processed and commits. The caller acknowledges the
message only after that commit.

Two workers may correlate alerts of one customer at the same moment; to keep "one
incident, one mail" they take a PostgreSQL transaction-scoped advisory lock per
customer (in customer order) before correlating. The same lock guards the customer's
correlation-rule windows, which the workers share through the database
(:mod:`otasuke.detect.correlation_shared`): taken while detecting, it may be taken out
of customer order, and PostgreSQL's deadlock detection then aborts one transaction,
which is retried at once (:data:`RETRY_SQLSTATES`).

Notification runs after the commit. :func:`notify_due_claimed` is safe with any number
of workers: each incident is claimed with ``SELECT … FOR UPDATE SKIP LOCKED`` and the
lock is held until the mail is recorded and ``notified_at`` committed, so another
worker skips it. A worker killed after the SMTP server took the mail but before the
commit leaves the incident un-notified: it is mailed again (at least once).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from otasuke.bus.batch import BadLine, BusRecord, decode_batch
from otasuke.db.engine import Database
from otasuke.db.models import Incident, Notification, QuarantinedRecord, Sensor, StoredEvent
from otasuke.detect.correlation_shared import SharedCorrelation, SharedTransaction
from otasuke.detect.detection import Detection
from otasuke.detect.engine import Detector
from otasuke.incidents.correlate import RecentIncidents, record_detections
from otasuke.ingest.store import (
    Source,
    accept_lines,
    among,
    mark_processed,
    stored_to_event,
)
from otasuke.notify.channels import Channel
from otasuke.notify.incident_mail import notify_incident
from otasuke.settings import Settings
from otasuke.standard.incident import Severity

log = logging.getLogger(__name__)

NOTIFY_RETRY_AFTER = timedelta(minutes=1)
CORRELATE_LOCK_SPACE = 0x07A5
"""First key of the advisory lock taken per customer while correlating."""
STORE_ATTEMPTS = 3
"""Events go in with ``ON CONFLICT DO NOTHING``: a worker storing an event another one is
storing (a redelivery racing the first delivery) waits for that commit and counts it as
a duplicate. Two messages holding the same ids in opposite orders can still deadlock;
PostgreSQL aborts one (SQLSTATE 40P01), which rolls back and is tried again at once, as
is a unique-key clash (SQLite without RETURNING looks the ids up before inserting)."""
RETRY_SQLSTATES = frozenset({"40P01", "40001"})
"""Deadlock detected, serialization failure: nothing wrong with the message, try again."""


def no_nul(text: str) -> str:
    """PostgreSQL text cannot hold NUL: written as ``\\x00``, as the syslog receiver does."""
    return text.replace("\x00", "\\x00")


@dataclass(slots=True)
class HandleResult:
    """What one message did."""

    records: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    processed: int = 0
    alerts: int = 0
    incidents: int = 0
    serious_pending: bool = False
    """An incident touched here is serious and not yet notified: notify now."""


@dataclass(slots=True)
class WorkerStats:
    """Counters since start (a seam for /metrics and ``otasuke status``)."""

    messages: int = 0
    redelivered: int = 0
    records: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    alerts: int = 0
    notified: int = 0
    retried: int = 0
    """Messages given back (nak) after a database or other error, to be tried again."""
    poisoned: int = 0
    """Messages that kept failing and were kept whole in the quarantine, then acked."""

    def add(self, result: HandleResult) -> None:
        self.messages += 1
        self.records += result.records
        self.accepted += result.accepted
        self.duplicates += result.duplicates
        self.quarantined += result.quarantined
        self.alerts += result.alerts


class BatchHandler:
    """Stores and processes bus messages in one database (sync; run it in a thread)."""

    def __init__(
        self,
        db: Database,
        detector: Detector,
        *,
        incident_window: timedelta = timedelta(minutes=60),
        notify_target: timedelta = timedelta(minutes=60),
    ) -> None:
        self.db = db
        self.detector = detector
        self.window = incident_window
        self.target = notify_target
        self.postgres = db.engine.dialect.name == "postgresql"
        self.shared: SharedCorrelation | None = None
        """Correlation windows shared with the other workers (PostgreSQL only: the workers
        of one SQLite database are one process)."""
        if self.postgres and detector.correlation is not None:
            self.shared = SharedCorrelation(detector.correlation, lock_customer)

    def handle(self, body: bytes, label: str) -> HandleResult:
        """Store and process one message in one transaction (retried on a clash with another
        worker: see :data:`STORE_ATTEMPTS`)."""
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                return self._transaction(body, label)
            except DBAPIError as err:
                clash = isinstance(err, IntegrityError)
                if not clash and getattr(err.orig, "sqlstate", None) not in RETRY_SQLSTATES:
                    raise
                if attempt == STORE_ATTEMPTS:
                    raise
                log.info(
                    "worker: %s clashed with another worker (%s); retrying",
                    label,
                    type(err.orig).__name__,
                )
        raise AssertionError("unreachable")

    def _transaction(self, body: bytes, label: str) -> HandleResult:
        """One attempt: the message's events, detections and shared correlation windows
        (:mod:`otasuke.detect.correlation_shared`) commit together or not at all."""
        shared: SharedTransaction | None = None
        committed = False
        try:
            with self.db.session() as s:
                if self.shared is not None:
                    shared = self.shared.begin(s)
                    self.detector.correlation_gate = shared.enter
                result = self._handle(s, body, label)
                if shared is not None:
                    shared.write()
            committed = True
            return result
        finally:
            self.detector.correlation_gate = None
            if shared is not None:
                shared.finish(committed)

    def _handle(self, s: Session, body: bytes, label: str) -> HandleResult:
        records, bad = decode_batch(body)
        result = HandleResult(records=len(records) + len(bad))
        for line in bad:
            self._quarantine_line(s, label, line)
            result.quarantined += 1
        groups: dict[int | None, list[BusRecord]] = defaultdict(list)
        for record in records:
            groups[None if record.damaged else record.sensor_id].append(record)
        uids: dict[int, list[str]] = defaultdict(list)
        for sensor_id, items in groups.items():
            sensor = s.get(Sensor, sensor_id) if sensor_id is not None else None
            if sensor is None:
                for record in items:
                    self._quarantine_record(s, label, record, sensor_id)
                result.quarantined += len(items)
                continue
            lines = [
                orjson.dumps(
                    {
                        "format": r.format,
                        "raw": no_nul(r.raw),
                        "event_id": r.event_id,
                        **({"host": r.host} if r.host else {}),
                    }
                )
                for r in items
            ]
            accepted = accept_lines(s, Source.of(sensor), lines)
            result.accepted += accepted.accepted
            result.duplicates += accepted.duplicates
            result.quarantined += len(accepted.rejected)
            uids[sensor.customer_id].extend(r.event_id for r in items)
        s.flush()
        self._process(s, uids, result)
        return result

    def _process(self, s: Session, uids: dict[int, list[str]], result: HandleResult) -> None:
        """Detection on this message's unprocessed events, locked against every other worker."""
        found: list[tuple[StoredEvent, list[Detection]]] = []
        self.detector.refresh_tunings(s)
        for customer_id, event_uids in sorted(uids.items()):
            rows = s.scalars(
                select(StoredEvent)
                .where(
                    StoredEvent.customer_id == customer_id,
                    among(s, StoredEvent.event_uid, event_uids),
                    StoredEvent.processed.is_(False),
                )
                .order_by(StoredEvent.id)
                .with_for_update(skip_locked=True)
            ).all()
            for row in rows:
                found.append(
                    (row, self.detector.detect(stored_to_event(row), customer=row.customer_id))
                )
        if self.postgres:
            for customer_id in sorted({row.customer_id for row, dets in found if dets}):
                lock_customer(s, customer_id)
        touched: dict[int, Incident] = {}
        recent: RecentIncidents = {}
        for row, detections in found:
            if detections:
                for incident in record_detections(
                    s,
                    row,
                    detections,
                    window=self.window,
                    notify_target=self.target,
                    recent=recent,
                ):
                    touched[incident.id] = incident
                result.alerts += len(detections)
        mark_processed(s, [row.id for row, _ in found])
        result.processed = len(found)
        result.incidents = len(touched)
        result.serious_pending = any(
            i.severity == Severity.SERIOUS.value and i.notified_at is None for i in touched.values()
        )

    def _quarantine_record(
        self, s: Session, label: str, record: BusRecord, sensor_id: int | None
    ) -> None:
        if record.damaged:
            reason = (
                record.note or f"spool record damaged: length or CRC32 wrong ({record.event_id})"
            )
            field = "spool"
        elif sensor_id is None:
            reason = f"unknown syslog source {record.peer or '?'}"
            field = "source"
        elif record.transport in ("http", "bulk"):
            reason = f"sensor {sensor_id} no longer exists (received over HTTP, {record.transport})"
            field = "source"
        else:
            reason = f"sensor {sensor_id} no longer exists (syslog from {record.peer or '?'})"
            field = "source"
        s.add(
            QuarantinedRecord(
                customer_id=None,
                sensor_id=None,
                location=f"bus {label}, {record.event_id}"[:500],
                source_format=record.format,
                field=field,
                reason=reason,
                raw=no_nul(record.raw),
            )
        )

    def _quarantine_line(self, s: Session, label: str, line: BadLine) -> None:
        s.add(
            QuarantinedRecord(
                customer_id=None,
                sensor_id=None,
                location=f"bus {label}, line {line.line}"[:500],
                source_format=None,
                field="bus",
                reason=f"bus message line is not a record: {line.error}",
                raw=no_nul(line.text),
            )
        )

    def quarantine_message(self, body: bytes, label: str, error: str) -> None:
        """Keep a message that keeps failing whole in the quarantine (then it is acked)."""
        with self.db.session() as s:
            s.add(
                QuarantinedRecord(
                    customer_id=None,
                    sensor_id=None,
                    location=f"bus {label}"[:500],
                    source_format=None,
                    field="bus",
                    reason=f"bus message failed repeatedly: {error}",
                    raw=no_nul(body.decode("utf-8", "replace")),
                )
            )


def lock_customer(s: Session, customer_id: int) -> None:
    """The customer's transaction-scoped advisory lock (PostgreSQL; held until commit)."""
    s.execute(
        text("SELECT pg_advisory_xact_lock(:space, :key)"),
        {"space": CORRELATE_LOCK_SPACE, "key": customer_id},
    )


def notify_due_claimed(db: Database, channel: Channel, settings: Settings) -> int:
    """Tell customers of serious incidents not yet notified; safe with many workers.

    Each incident is claimed (row lock, SKIP LOCKED) for the time of its mail, so two
    workers never send the same mail. On SQLite the lock is a no-op: run one worker.
    """
    with db.sessions() as s:
        due = s.scalars(
            select(Incident.id)
            .where(
                Incident.severity == Severity.SERIOUS.value,
                Incident.notified_at.is_(None),
                Incident.closed.is_(False),
            )
            .order_by(Incident.notify_deadline)
        ).all()
    sent = 0
    for incident_id in due:
        with db.session() as s:
            incident = s.scalar(
                select(Incident)
                .where(Incident.id == incident_id, Incident.notified_at.is_(None))
                .with_for_update(skip_locked=True)
            )
            if incident is None:  # another worker holds it, or it was told meanwhile
                continue
            last = s.scalar(
                select(func.max(Notification.created_at)).where(
                    Notification.incident_id == incident.id
                )
            )
            if last is not None and datetime.now(UTC) - last < NOTIFY_RETRY_AFTER:
                continue
            note = notify_incident(s, incident, channel, settings)
            sent += note.status == "sent"
    return sent
