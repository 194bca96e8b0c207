"""Accept a batch: parse, store durably, quarantine what cannot be parsed.

Nothing accepted is lost: events are committed (SQLite WAL with
synchronous=FULL, or PostgreSQL) before the sender gets its answer. Nothing
rejected vanishes: each bad record is kept in the quarantine with its error.
Re-sent events (same customer and event id) are counted as duplicates and
stored once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from otasuke.db.models import QuarantinedRecord, Sensor, StoredEvent
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
    if not events:
        return
    uids = {e.event_id for e in events}
    existing = set(
        s.scalars(
            select(StoredEvent.event_uid).where(
                StoredEvent.customer_id == source.customer_id, StoredEvent.event_uid.in_(uids)
            )
        )
    )
    now = datetime.now(UTC)
    for e in events:
        if e.event_id in existing:
            result.duplicates += 1
            continue
        existing.add(e.event_id)
        s.add(
            StoredEvent(
                customer_id=source.customer_id,
                sensor_id=source.sensor_id,
                event_uid=e.event_id,
                source_format=e.source_format.value,
                observed_at=e.observed_at,
                received_at=now,
                host=e.host,
                record_id=e.record_id,
                fields=dict(e.fields),
                raw=e.raw,
            )
        )
        result.accepted += 1
    if source.sensor_id is not None and result.accepted:
        sensor = s.get(Sensor, source.sensor_id)
        if sensor is not None:
            sensor.last_event_at = now
            sensor.event_count = (sensor.event_count or 0) + result.accepted


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
    "quarantine",
    "stored_to_event",
]
