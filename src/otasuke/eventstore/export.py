"""Export processed events from the relational store into Parquet (idempotent).

:func:`export_processed` writes, per customer, the events the pipeline has
processed and that are not yet in the store, in id order, and then moves the
customer's high-water mark (the last exported id) in ``export-state.json``
(written atomically). A crash between the Parquet write and the state write
exports the same rows again on the next run: the file of a batch has the same
name and replaces the first one, and readers remove any remaining duplicate by
``event_uid``. Nothing is exported twice in a way a search could see.

Only rows below the oldest unprocessed event, and received at least
``settle_seconds`` ago, are exported: with PostgreSQL, ids are handed out before
their transaction commits, so a row with a smaller id can appear after a larger
one; waiting for it to settle keeps the high-water mark from passing it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from otasuke.db.engine import Database
from otasuke.db.models import StoredEvent
from otasuke.eventstore.layout import STATE_FILE
from otasuke.eventstore.writer import write_stored
from otasuke.tenancy.scope import Viewer, list_customers

log = logging.getLogger(__name__)

DEFAULT_BATCH = 5000
DEFAULT_SETTLE = timedelta(seconds=60)


@dataclass(slots=True)
class ExportResult:
    events: int = 0
    files: list[Path] = field(default_factory=list)
    per_customer: dict[str, int] = field(default_factory=dict)


def load_state(root: Path) -> dict[str, int]:
    """Customer id (as text) → last exported event id."""
    try:
        data = orjson.loads((root / STATE_FILE).read_bytes())
    except FileNotFoundError:
        return {}
    return {str(k): int(v) for k, v in data.get("exported_through", {}).items()}


def save_state(root: Path, state: dict[str, int]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    path = root / STATE_FILE
    tmp = path.with_name(f".{STATE_FILE}.tmp")
    body = orjson.dumps({"exported_through": state}, option=orjson.OPT_SORT_KEYS)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def export_processed(
    s: Session,
    root: Path,
    *,
    now: datetime | None = None,
    batch: int = DEFAULT_BATCH,
    settle: timedelta = DEFAULT_SETTLE,
) -> ExportResult:
    """Export every customer's processed events not yet in Parquet; return what was written."""
    now = now or datetime.now(UTC)
    result = ExportResult()
    state = load_state(root)
    first_pending = s.scalar(
        select(func.min(StoredEvent.id)).where(StoredEvent.processed.is_(False))
    )
    for customer in list_customers(s, Viewer.system()):
        key = str(customer.id)
        last = state.get(key, 0)
        while True:
            q = (
                select(StoredEvent)
                .where(
                    StoredEvent.customer_id == customer.id,
                    StoredEvent.processed.is_(True),
                    StoredEvent.id > last,
                    StoredEvent.received_at <= now - settle,
                )
                .order_by(StoredEvent.id)
                .limit(batch)
            )
            if first_pending is not None:
                q = q.where(StoredEvent.id < first_pending)
            rows = s.scalars(q).all()
            if not rows:
                break
            result.files.extend(write_stored(root, customer.slug, rows))
            last = rows[-1].id
            state[key] = last
            save_state(root, state)
            result.events += len(rows)
            result.per_customer[customer.slug] = result.per_customer.get(customer.slug, 0) + len(
                rows
            )
            s.expunge_all()  # the batch is on disk: let its rows go
    return result


class EventExporter:
    """Runs :func:`export_processed` at most every ``interval_seconds`` (for the worker loop)."""

    def __init__(
        self,
        db: Database,
        root: Path,
        *,
        interval_seconds: float = 60.0,
        settle: timedelta = DEFAULT_SETTLE,
    ) -> None:
        self.db = db
        self.root = root
        self.interval = interval_seconds
        self.settle = settle
        self._last_run = float("-inf")
        self._lock = threading.Lock()
        self.last_result: ExportResult | None = None

    def run_if_due(self) -> ExportResult | None:
        """Export if the interval has passed since the last run; never two runs at once."""
        if time.monotonic() - self._last_run < self.interval or not self._lock.acquire(False):
            return None
        try:
            with self.db.sessions() as s:
                self.last_result = export_processed(s, self.root, settle=self.settle)
            self._last_run = time.monotonic()
            if self.last_result.events:
                log.info(
                    "event store: %d events exported to %d files",
                    self.last_result.events,
                    len(self.last_result.files),
                )
            return self.last_result
        finally:
            self._lock.release()
