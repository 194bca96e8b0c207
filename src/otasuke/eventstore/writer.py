"""Parquet writer: events of one customer, in batches, one file per day and batch.

Each file holds the raw record and the normalised fields (as JSON text) of every
event, with the columns of :data:`SCHEMA`. A file is written beside its final name
and renamed into place after an fsync, so a reader never sees half a file. File
names are derived from the batch (the relational ids ``ids-<first>-<last>``, or a
hash of the event ids), so writing the same batch again replaces the file instead
of adding a copy; readers remove any other duplicate by ``event_uid``.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from otasuke.db.models import StoredEvent
from otasuke.eventstore.layout import partition_dir
from otasuke.ingest.event import Event

SCHEMA = pa.schema(
    [
        pa.field("event_uid", pa.string(), nullable=False),
        pa.field("observed_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("received_at", pa.timestamp("us", tz="UTC")),
        pa.field("source_format", pa.string()),
        pa.field("host", pa.string()),
        pa.field("sensor_id", pa.int64()),
        pa.field("record_id", pa.int64()),
        pa.field("fields", pa.string()),
        pa.field("raw", pa.string()),
        pa.field("id", pa.int64()),
    ]
)
"""Columns of every file; ``fields`` is the normalised mapping as JSON text and ``id``
the event's row id in the relational store (what ``Alert.event_id`` points at)."""
COLUMNS = tuple(SCHEMA.names)


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One row of the event store."""

    event_uid: str
    observed_at: datetime
    received_at: datetime | None
    source_format: str
    host: str | None
    sensor_id: int | None
    record_id: int | None
    fields: str
    raw: str
    id: int | None = None

    @classmethod
    def from_stored(cls, row: StoredEvent) -> EventRecord:
        return cls(
            event_uid=row.event_uid,
            observed_at=row.observed_at,
            received_at=row.received_at,
            source_format=row.source_format,
            host=row.host,
            sensor_id=row.sensor_id,
            record_id=row.record_id,
            fields=fields_json(row.fields),
            raw=row.raw,
            id=row.id,
        )

    @classmethod
    def from_event(
        cls, event: Event, *, sensor_id: int | None = None, received_at: datetime | None = None
    ) -> EventRecord:
        return cls(
            event_uid=event.event_id,
            observed_at=event.observed_at,
            received_at=received_at,
            source_format=event.source_format.value,
            host=event.host,
            sensor_id=sensor_id,
            record_id=event.record_id,
            fields=fields_json(event.fields),
            raw=event.raw,
        )

    @property
    def day(self) -> date:
        """The partition: the UTC date of ``observed_at``."""
        return self.observed_at.astimezone(UTC).date()


def fields_json(fields: Any) -> str:
    """Normalised fields as JSON text (UTF-8 kept readable; unknown types as text)."""
    return orjson.dumps(fields, default=str, option=orjson.OPT_SORT_KEYS).decode()


def to_table(records: Sequence[EventRecord]) -> Any:
    """A pyarrow Table with :data:`SCHEMA` (timestamps converted to UTC)."""
    columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    for r in records:
        for name in COLUMNS:
            value = getattr(r, name)
            if isinstance(value, datetime):
                value = value.astimezone(UTC)
            columns[name].append(value)
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def file_name(records: Sequence[EventRecord]) -> str:
    """``ids-<first>-<last>.parquet`` for stored rows, else a hash of the event ids."""
    ids = [r.id for r in records]
    if ids and all(i is not None for i in ids):
        known = [i for i in ids if i is not None]
        return f"ids-{min(known):012d}-{max(known):012d}.parquet"
    digest = hashlib.sha256("\n".join(sorted(r.event_uid for r in records)).encode())
    return f"uids-{digest.hexdigest()[:24]}.parquet"


def write_file(path: Path, records: Sequence[EventRecord]) -> Path:
    """Write ``records`` to ``path`` atomically (temp file, fsync, rename, fsync of the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(to_table(records), tmp, compression="zstd")
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def write_events(root: Path, slug: str, records: Iterable[EventRecord]) -> list[Path]:
    """Write one customer's events: one file per UTC day in the batch; return the files."""
    by_day: dict[date, list[EventRecord]] = defaultdict(list)
    for r in records:
        by_day[r.day].append(r)
    written = []
    for day, rows in sorted(by_day.items()):
        folder = partition_dir(root, slug, day)
        written.append(write_file(folder / file_name(rows), rows))
    return written


def write_stored(root: Path, slug: str, rows: Iterable[StoredEvent]) -> list[Path]:
    """Write rows of the relational store (all of the customer ``slug``)."""
    return write_events(root, slug, (EventRecord.from_stored(r) for r in rows))


def read_partition(folder: Path) -> Any:
    """Every row of one day folder as one Table (duplicates by ``event_uid`` included)."""
    files = sorted(folder.glob("*.parquet"))
    if not files:
        return SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(f, schema=SCHEMA) for f in files])
