"""The ingest envelope: one JSON object per NDJSON line of ``POST /api/v1/ingest``.

.. code-block:: json

    {"format": "fortigate", "raw": "date=2026-11-24 time=10:00:00 devname=FG60F ...",
     "event_id": "optional sender id", "host": "optional host name"}

``format`` names a parser (evtx, suricata_eve, fortigate, jsonl); ``raw`` is the
record as the device wrote it: a text line, or a JSON object (an EVTX record as
rendered by the ``evtx`` package, a Suricata EVE object). ``event_id`` makes
re-sending idempotent; without it the record's content hash is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from otasuke.errors import ParseError

ALLOWED_KEYS = frozenset({"format", "raw", "event_id", "host"})


@dataclass(frozen=True, slots=True)
class Envelope:
    format: str
    raw: str | dict[str, Any]
    event_id: str | None = None
    host: str | None = None


def parse_envelope(line: bytes | str) -> Envelope:
    """One NDJSON line → Envelope, or a ParseError naming the field and what to do."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ParseError(
            f"not valid JSON: {exc}", field="line", hint="send one JSON object per line (NDJSON)"
        ) from None
    if not isinstance(obj, dict):
        raise ParseError(
            "a line must be a JSON object",
            field="line",
            hint='example: {"format": "fortigate", "raw": "..."}',
        )
    unknown = set(obj) - ALLOWED_KEYS
    if unknown:
        raise ParseError(
            f"unknown key(s): {', '.join(sorted(unknown))}",
            field="line",
            hint="allowed keys: format, raw, event_id, host",
        )
    fmt = obj.get("format")
    if not isinstance(fmt, str) or not fmt:
        raise ParseError(
            "missing or not a string",
            field="format",
            hint="name the source format, e.g. fortigate, suricata_eve, evtx, jsonl",
        )
    raw = obj.get("raw")
    if not isinstance(raw, str | dict) or not raw:
        raise ParseError(
            "missing, empty, or neither a string nor an object",
            field="raw",
            hint="put the device's log line (text) or record (JSON object) here",
        )
    event_id = obj.get("event_id")
    if event_id is not None and (not isinstance(event_id, str) or not 0 < len(event_id) <= 100):
        raise ParseError("must be a string of 1 to 100 characters", field="event_id")
    host = obj.get("host")
    if host is not None and not isinstance(host, str):
        raise ParseError("must be a string", field="host")
    return Envelope(format=fmt, raw=raw, event_id=event_id, host=host)
