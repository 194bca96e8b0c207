"""Bus messages (バッチ): many spool records per JetStream message, as NDJSON.

One message carries up to ``max_batch_records`` records and ``max_batch_bytes`` bytes
(measured on this machine: one message per event with a durable sync is 10-100× slower
than batches, see DESIGN.md). Each line is one :class:`BusRecord`::

    {"sensor_id": 3, "event_id": "syslog-3-7f2c…-1-4096", "format": "fortigate",
     "raw": "date=… type=utm …", "host": null}

An envelope received over HTTP (spool record kind ``http`` or ``bulk``, see
:mod:`otasuke.ingest.receivers.drain`) travels the same way with ``transport`` naming the
kind, its ``raw`` as text (a JSON object is written as JSON), and as event id its own
``event_id`` or ``<kind>-<sensor>-<spool id>-<segment>-<offset>``
(:func:`envelope_bus_record`).

A record no sensor claims (``sensor_id`` null, with ``peer`` and ``transport``) and a
damaged spool record (``damaged`` true) travel too, so the worker keeps them in the
quarantine: nothing that was acknowledged disappears between spool and database.

The message id (header ``Nats-Msg-Id``) is the spool range the batch covers, so a
re-publish after a crash between the PubAck and the cursor move is dropped by
JetStream's duplicate window; whatever slips past it (a batch cut differently after
a restart) is removed by the event id when stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from otasuke.errors import OtasukeError
from otasuke.ingest.spool import Position


class BusMessageError(OtasukeError):
    """A bus message line that is not a valid record."""


@dataclass(frozen=True, slots=True)
class BusRecord:
    """One spool record on the bus."""

    event_id: str
    """Idempotency key: unique per spool record, stable across re-publishing."""
    sensor_id: int | None
    """None: no sensor claims the sender (quarantined as unknown source) or damaged."""
    raw: str
    format: str | None = None
    host: str | None = None
    peer: str | None = None
    transport: str | None = None
    damaged: bool = False
    """A spool record whose length or CRC was wrong (``raw`` holds its bytes, decoded)."""
    note: str | None = None
    """Why the record could not travel whole (e.g. larger than the bus allows)."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "sensor_id": self.sensor_id,
            "format": self.format,
            "raw": self.raw,
            "host": self.host,
        }
        for name in ("peer", "transport", "note"):
            if (value := getattr(self, name)) is not None:
                out[name] = value
        if self.damaged:
            out["damaged"] = True
        return out

    @classmethod
    def from_dict(cls, obj: Any) -> BusRecord:
        if not isinstance(obj, dict):
            raise BusMessageError("bus record is not a JSON object", field="record")
        event_id, sensor_id, raw = obj.get("event_id"), obj.get("sensor_id"), obj.get("raw")
        if not isinstance(event_id, str) or not event_id:
            raise BusMessageError("bus record has no event_id", field="event_id")
        if sensor_id is not None and (
            isinstance(sensor_id, bool) or not isinstance(sensor_id, int)
        ):
            raise BusMessageError("sensor_id must be an integer or null", field="sensor_id")
        if not isinstance(raw, str):
            raise BusMessageError("raw must be a string", field="raw")

        def text(name: str) -> str | None:
            value = obj.get(name)
            if value is not None and not isinstance(value, str):
                raise BusMessageError(f"{name} must be a string or null", field=name)
            return value

        return cls(
            event_id=event_id,
            sensor_id=sensor_id,
            raw=raw,
            format=text("format"),
            host=text("host"),
            peer=text("peer"),
            transport=text("transport"),
            damaged=obj.get("damaged") is True,
            note=text("note"),
        )


def envelope_bus_record(spool_id: str, position: Position, obj: dict[str, Any]) -> BusRecord:
    """A spool record of kind ``http`` or ``bulk`` (an ingest envelope) as a bus record."""
    kind = str(obj.get("kind"))
    sensor = obj.get("sensor")
    own = obj.get("event_id")
    sensor_id = sensor if isinstance(sensor, int) and not isinstance(sensor, bool) else None
    event_id = (
        own
        if isinstance(own, str) and own
        else f"{kind}-{sensor}-{spool_id}-{position.segment}-{position.offset}"
    )
    raw = obj.get("raw")
    host = obj.get("host")
    fmt = obj.get("format")
    return BusRecord(
        event_id=event_id,
        sensor_id=sensor_id,
        raw=raw if isinstance(raw, str) else orjson.dumps(raw).decode(),
        format=fmt if isinstance(fmt, str) else None,
        host=host if isinstance(host, str) and host else None,
        transport=kind,
    )


def encode_record(record: BusRecord) -> bytes:
    return orjson.dumps(record.to_dict())


def encode_batch(records: list[BusRecord]) -> bytes:
    """NDJSON body of one bus message."""
    return b"\n".join(encode_record(r) for r in records)


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line of a bus message that could not be decoded (kept in the quarantine)."""

    line: int
    text: str
    error: str


def decode_batch(body: bytes) -> tuple[list[BusRecord], list[BadLine]]:
    """The records of one bus message, and the lines that are not records."""
    records: list[BusRecord] = []
    bad: list[BadLine] = []
    for n, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(BusRecord.from_dict(orjson.loads(line)))
        except orjson.JSONDecodeError as err:
            bad.append(BadLine(n, line.decode("utf-8", "replace"), f"not JSON: {err}"))
        except BusMessageError as err:
            bad.append(BadLine(n, line.decode("utf-8", "replace"), str(err)))
    return records, bad


def message_id(spool_id: str, first: Position, end: Position) -> str:
    """``Nats-Msg-Id`` of a batch: the spool and the range [first, end) it covers."""
    return f"{spool_id}:{first.segment}:{first.offset}-{end.segment}:{end.offset}"
