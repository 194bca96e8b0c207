"""Accept a batch: parse, store durably, quarantine what cannot be parsed.

Nothing accepted is lost: events are committed (SQLite WAL with
synchronous=FULL, or PostgreSQL) before the sender gets its answer. Nothing
rejected vanishes: each bad record is kept in the quarantine with its error.
Re-sent events (same customer and event id) are counted as duplicates and
stored once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import ColumnElement, Table, any_, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute, Session

from otasuke.db.models import QuarantinedRecord, Sensor, StoredEvent, UTCDateTime
from otasuke.errors import OtasukeError, ParseError
from otasuke.ingest.envelope import Envelope, parse_envelope
from otasuke.ingest.event import Event
from otasuke.ingest.parsers import ParseContext, RawRecord, get_parser


@dataclass(slots=True)
class LineError:
    """Why one line of a batch was refused (and quarantined)."""

    line: int
    error: str
    field: str | None = None
    hint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "error": self.error, "field": self.field, "hint": self.hint}


@dataclass(slots=True)
class AcceptResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[LineError] = field(default_factory=list)

    def add(self, other: AcceptResult) -> None:
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.rejected.extend(other.rejected)


@dataclass(frozen=True, slots=True)
class Source:
    """Where a batch comes from: a customer and, usually, one of its sensors."""

    customer_id: int
    sensor_id: int | None
    sensor_name: str
    timezone: str = "Asia/Tokyo"

    @classmethod
    def of(cls, sensor: Sensor) -> Source:
        return cls(
            customer_id=sensor.customer_id,
            sensor_id=sensor.id,
            sensor_name=sensor.name,
            timezone=sensor.timezone,
        )


def _raw_text(raw: str | Any) -> str:
    return raw if isinstance(raw, str) else orjson.dumps(raw).decode()


def parse_one(env: Envelope, ctx: ParseContext) -> Event:
    event = get_parser(env.format).parse(env.raw, ctx)
    if env.event_id or env.host:
        from dataclasses import replace

        event = replace(event, event_id=env.event_id or event.event_id, host=env.host or event.host)
    return event


def accept_lines(
    s: Session,
    source: Source,
    lines: Iterable[bytes | str],
    *,
    locations: Sequence[str] | None = None,
) -> AcceptResult:
    """Parse and store NDJSON envelope lines; the caller commits.

    ``locations`` (one per line) names where each line came from in its quarantine row;
    without it the row says ``line <n>``.
    """
    ctx = ParseContext(sensor=source.sensor_name, device_tz=ZoneInfo(source.timezone))
    result = AcceptResult()
    events: list[Event] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        env: Envelope | None = None
        try:
            env = parse_envelope(line)
            events.append(parse_one(env, ctx))
        except OtasukeError as err:
            raw = line if isinstance(line, str) else line.decode("utf-8", "replace")
            result.rejected.append(LineError(n, err.message, err.field, err.hint))
            location = locations[n - 1] if locations is not None else f"line {n}"
            quarantine(s, source, location, env.format if env else None, err, raw)
    _store(s, source, events, result)
    return result


def accept_records(s: Session, source: Source, records: Iterable[RawRecord]) -> AcceptResult:
    """Parse and store records read from files (``otasuke import``); the caller commits."""
    ctx = ParseContext(sensor=source.sensor_name, device_tz=ZoneInfo(source.timezone))
    result = AcceptResult()
    events: list[Event] = []
    for n, rec in enumerate(records, start=1):
        try:
            events.append(get_parser(rec.format).parse(rec.raw, ctx))
        except OtasukeError as err:
            result.rejected.append(
                LineError(n, f"{rec.location}: {err.message}", err.field, err.hint)
            )
            quarantine(s, source, rec.location, rec.format, err, _raw_text(rec.raw))
    _store(s, source, events, result)
    return result


def quarantine(
    s: Session, source: Source, location: str, fmt: str | None, err: OtasukeError, raw: str
) -> None:
    """Keep one refused record with its reason (the caller commits)."""
    s.add(
        QuarantinedRecord(
            customer_id=source.customer_id,
            sensor_id=source.sensor_id,
            location=location[:500],
            source_format=fmt,
            field=err.field,
            reason=str(err),
            raw=raw,
        )
    )


def _store(s: Session, source: Source, events: list[Event], result: AcceptResult) -> None:
    """Insert the events in bulk, each event id once per customer (REQ-MON-NET,
    REQ-MON-EP: what the sensors send is stored, a re-sent event once; REQ-MON-60MIN:
    storing keeps up with the receivers, so detection is not kept waiting).

    PostgreSQL and SQLite ≥ 3.35: ``INSERT … ON CONFLICT (customer_id, event_uid) DO
    NOTHING RETURNING event_uid``, so the database itself keeps the second copy out, also
    when two drains or workers insert the same ids at the same time (the later one waits
    for the earlier one's commit, then counts them as duplicates); what comes back is what
    was really inserted. Rows go in in arrival order (their ids, hence the order detection
    takes them in, follow it). Two transactions inserting the same ids in opposite orders
    can deadlock: PostgreSQL aborts one, which is retried like any database error (the
    drain's batch, the worker's message). Older SQLite (single writer): the ids already
    stored are looked up first, as before.
    """
    if not events:
        return
    now = datetime.now(UTC)
    rows: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.event_id in rows:  # the same id twice in one batch: the first one is kept
            result.duplicates += 1
            continue
        rows[e.event_id] = {
            "customer_id": source.customer_id,
            "sensor_id": source.sensor_id,
            "event_uid": e.event_id,
            "source_format": e.source_format.value,
            "observed_at": e.observed_at,
            "received_at": now,
            "host": e.host,
            "record_id": e.record_id,
            "fields": dict(e.fields),
            "raw": e.raw,
            "processed": False,
        }
    values = list(rows.values())
    dialect = s.get_bind().dialect
    if dialect.name in ("postgresql", "sqlite") and dialect.insert_returning:
        inserted = _insert_new(s, dialect.name, values)
    else:
        inserted = _insert_absent(s, source, values)
    result.accepted += inserted
    result.duplicates += len(values) - inserted
    if source.sensor_id is not None and inserted:
        # One UPDATE adding to the stored count: two concurrent writers both count.
        # (A loaded Sensor object gets the same values: synchronize_session "evaluate".)
        s.execute(
            update(Sensor)
            .where(Sensor.id == source.sensor_id)
            .values(last_event_at=now, event_count=Sensor.event_count + inserted)
            .execution_options(synchronize_session="evaluate")
        )


EVENTS = cast(Table, StoredEvent.__table__)

_PG_COLUMNS = (
    ("customer_id", "bigint"),
    ("sensor_id", "bigint"),
    ("event_uid", "text"),
    ("source_format", "text"),
    ("observed_at", "timestamptz"),
    ("received_at", "timestamptz"),
    ("host", "text"),
    ("record_id", "bigint"),
    ("fields", "json"),
    ("raw", "text"),
    ("processed", "boolean"),
)
"""The inserted columns of ``events`` and the array type each is sent as (no length: a
too long value fails the insert's own assignment to ``varchar(n)``, it is never cut)."""

_PG_INSERT = (
    f"INSERT INTO {StoredEvent.__tablename__} ({', '.join(c for c, _ in _PG_COLUMNS)}) "
    "SELECT * FROM unnest("
    + ", ".join(f"CAST(%({c})b AS {t}[])" for c, t in _PG_COLUMNS)
    + ") ON CONFLICT (customer_id, event_uid) DO NOTHING RETURNING event_uid"
)
"""PostgreSQL: every row in one statement of eleven array parameters. The statement text
stays the same for any number of rows (psycopg parses it once and caches it), where a
multi-row ``VALUES`` of 11 × n placeholders is parsed anew for each batch; sent in
binary, the arrays need no quoting of each string (psycopg's text arrays escape every
element with a regex)."""


def _json_text(fields: dict[str, Any]) -> str:
    """JSON text of an event's fields; what orjson cannot write (an integer beyond 64
    bits) goes through the standard library, as SQLAlchemy's JSON type would send it."""
    try:
        return orjson.dumps(fields).decode()
    except TypeError:
        return json.dumps(fields)


def _insert_new(s: Session, dialect: str, values: list[dict[str, Any]]) -> int:
    """``INSERT … ON CONFLICT DO NOTHING RETURNING``; the number of rows really inserted."""
    if dialect == "postgresql":
        utc = UTCDateTime()
        for v in values:  # what the column types do on bind: aware UTC times, JSON text
            v["observed_at"] = utc.process_bind_param(v["observed_at"], s.get_bind().dialect)
            v["fields"] = _json_text(v["fields"])
        arrays = {c: [v[c] for v in values] for c, _ in _PG_COLUMNS}
        # Straight to psycopg (its own %(name)b placeholders: binary parameters) on the
        # session's connection and transaction; errors still come as SQLAlchemy's.
        return len(s.connection().exec_driver_sql(_PG_INSERT, arrays).all())
    # SQLite: one statement compiled once (and cached) with the rows as executemany
    # parameters; SQLAlchemy sends them as multi-row VALUES ("insertmanyvalues") and
    # gathers the RETURNING rows of every batch.
    table = EVENTS
    stmt = (
        sqlite.insert(table)
        .on_conflict_do_nothing(index_elements=["customer_id", "event_uid"])
        .returning(table.c.event_uid)
    )
    return len(s.execute(stmt, values).all())


def _insert_absent(s: Session, source: Source, values: list[dict[str, Any]]) -> int:
    """Without ``RETURNING`` (SQLite < 3.35, one writer): leave out the ids already stored."""
    existing = set(
        s.scalars(
            select(StoredEvent.event_uid).where(
                StoredEvent.customer_id == source.customer_id,
                StoredEvent.event_uid.in_([v["event_uid"] for v in values]),
            )
        )
    )
    new = [v for v in values if v["event_uid"] not in existing]
    if new:
        s.execute(insert(EVENTS), new)
    return len(new)


def among(
    s: Session, column: InstrumentedAttribute[Any], values: Sequence[Any]
) -> ColumnElement[bool]:
    """``column`` is one of ``values``: on PostgreSQL ``= ANY(<one array parameter>)``.

    ``IN (…)`` with hundreds of placeholders is a new statement text for every length,
    which psycopg parses anew each time (and PostgreSQL plans anew); one array parameter
    keeps the text the same.
    """
    if s.get_bind().dialect.name == "postgresql":
        return column == any_(literal(list(values), postgresql.ARRAY(column.type)))
    return column.in_(values)


def mark_processed(s: Session, ids: Sequence[int]) -> None:
    """Mark stored events processed, in one UPDATE per 1,000 ids rather than one per row.

    Loaded :class:`StoredEvent` objects keep their old ``processed`` value until the
    session expires them (at commit): the callers read it no more.
    """
    for first in range(0, len(ids), 1000):
        s.execute(
            update(StoredEvent)
            .where(among(s, StoredEvent.id, ids[first : first + 1000]))
            .values(processed=True)
            .execution_options(synchronize_session=False)
        )


def stored_to_event(row: StoredEvent) -> Event:
    """Rebuild the Event a stored row came from (for detection after the commit)."""
    from otasuke.ingest.event import SourceFormat

    return Event(
        event_id=row.event_uid,
        observed_at=row.observed_at,
        source_format=SourceFormat(row.source_format),
        fields=row.fields,
        host=row.host,
        record_id=row.record_id,
        raw=row.raw,
    )


__all__ = [
    "AcceptResult",
    "LineError",
    "ParseError",
    "Source",
    "accept_lines",
    "accept_records",
    "among",
    "mark_processed",
    "quarantine",
    "stored_to_event",
]
