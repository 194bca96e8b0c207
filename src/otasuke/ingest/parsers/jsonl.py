"""JSON Lines parser (JSON ログ): the reference parser, one JSON object per line.

``fields`` is the object flattened with dotted keys (``{"a": {"b": 1}}`` →
``{"a.b": 1}``); a list of objects becomes one list per dotted key.
``observed_at`` comes from ``@timestamp``, ``timestamp`` or ``time`` (ISO 8601 or
epoch seconds/ms/µs/ns; without an offset the sensor's ``device_tz``). A record
with none of them gets the current time (``datetime.now(UTC)``): a parser cannot
know when the record was received, and generic logs often carry no time. A time
that is present but unreadable is a :class:`ParseError`.

The helpers :func:`load_object`, :func:`flatten`, :func:`parse_time` and
:func:`from_epoch` are shared with the other JSON and syslog parsers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import orjson

from otasuke.errors import ParseError
from otasuke.ingest.event import Event, SourceFormat, content_id
from otasuke.ingest.parsers import ParseContext, RawRecord, register_parser

Scalar = str | int | float | bool | None
MAX_DEPTH = 64
"""Deeper nesting is refused (no real log nests this far)."""
TIME_KEYS = ("@timestamp", "timestamp", "time")
HOST_KEYS = ("host.name", "hostname", "Computer", "host")


def load_object(raw: str | Mapping[str, Any], fmt: str) -> tuple[dict[str, Any], str]:
    """The record as a dict and as canonical JSON text, or a ParseError."""
    if isinstance(raw, str):
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            raise ParseError(
                f"not valid JSON: {err}",
                field="raw",
                hint=f"{fmt} expects one JSON object per line",
            ) from None
        text = raw.strip()
    elif isinstance(raw, Mapping):
        value = raw
        try:
            text = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS).decode()
        except (TypeError, orjson.JSONEncodeError) as err:
            raise ParseError(
                f"record is not JSON-serialisable: {err}",
                field="raw",
                hint="keys must be strings, values JSON types with 64-bit integers",
            ) from None
    else:
        raise ParseError(
            f"record is a {type(raw).__name__}, not text or an object",
            field="raw",
            hint=f"send {fmt} records as a JSON line or a JSON object",
        )
    if not isinstance(value, Mapping):
        raise ParseError(
            f"record is a JSON {type(value).__name__}, not an object",
            field="raw",
            hint=f"{fmt} expects one JSON object per line",
        )
    return dict(value), text


def flatten(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Nested objects → dotted keys; lists of objects → one list per dotted key."""
    out: dict[str, Any] = {}
    _flatten_into(out, "", obj, 0)
    return out


def _flatten_into(out: dict[str, Any], prefix: str, obj: Mapping[str, Any], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ParseError(
            f"nested deeper than {MAX_DEPTH} levels", field=prefix or "raw", hint="flatten it"
        )
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _flatten_into(out, f"{name}.", value, depth + 1)
        elif isinstance(value, list | tuple):
            _flatten_list(out, name, value, depth + 1)
        else:
            out[name] = _scalar(name, value)


def _flatten_list(out: dict[str, Any], name: str, items: Any, depth: int) -> None:
    scalars: list[Scalar] = []
    objects = False
    for item in items:
        if isinstance(item, Mapping):
            objects = True
            part: dict[str, Any] = {}
            _flatten_into(part, f"{name}.", item, depth + 1)
            for key, value in part.items():
                _append(out, key, value)
        elif isinstance(item, list | tuple):
            nested: dict[str, Any] = {}
            _flatten_list(nested, name, item, depth + 1)
            scalars.extend(nested.pop(name, []))
            for key, value in nested.items():
                _append(out, key, value)
        else:
            scalars.append(_scalar(name, item))
    if scalars or not objects:
        out[name] = scalars


def _append(out: dict[str, Any], key: str, value: Any) -> None:
    bucket = out.get(key)
    if not isinstance(bucket, list):
        bucket = out[key] = [] if key not in out else [bucket]
    bucket.extend(value if isinstance(value, list) else [value])


def _scalar(name: str, value: Any) -> Scalar:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    raise ParseError(
        f"value of type {type(value).__name__} is not a JSON value",
        field=name,
        hint="send strings, numbers, booleans, null, lists or objects",
    )


def from_epoch(value: int | float, field: str) -> datetime:
    """Epoch seconds, ms, µs or ns (told apart by magnitude) → aware UTC datetime."""
    number = abs(value)
    scale = 1 if number < 1e11 else 1e3 if number < 1e14 else 1e6 if number < 1e17 else 1e9
    try:
        return datetime.fromtimestamp(value / scale, UTC)
    except (ValueError, OverflowError, OSError):
        raise ParseError(
            f"epoch time {value!r} is out of range",
            field=field,
            hint="send seconds (or ms/µs/ns) since 1970-01-01 UTC",
        ) from None


def parse_time(value: Any, field: str, tz: ZoneInfo) -> datetime:
    """ISO 8601 text or epoch number → aware UTC; no offset means ``tz``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ParseError(f"time {value!r} is not a number", field=field)
        return from_epoch(value, field)
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            parsed = None
        if parsed is not None:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=tz)
            try:
                return parsed.astimezone(UTC)
            except (ValueError, OverflowError):
                pass
    raise ParseError(
        f"time {value!r} is not ISO 8601 or epoch",
        field=field,
        hint="use e.g. 2024-04-01T09:30:00+09:00 or epoch seconds",
    )


def read_lines(path: Path, fmt: str) -> Iterator[RawRecord]:
    """Non-empty lines of a text file (UTF-8; undecodable bytes replaced)."""
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        for number, line in enumerate(fh, start=1):
            text = line.rstrip("\r\n")
            if text.strip():
                yield RawRecord(format=fmt, raw=text, location=f"{path}:{number}")


def first_line(head: bytes) -> str:
    """The first non-empty line of a file's head, decoded leniently."""
    for line in head.decode("utf-8", errors="replace").splitlines():
        if line.strip():
            return line.strip()
    return ""


class JsonLinesParser:
    """JSON Lines (汎用 JSON ログ): any JSON object per line, flattened."""

    name: ClassVar[str] = "jsonl"

    def parse(self, raw: str | Mapping[str, Any], ctx: ParseContext) -> Event:
        obj, text = load_object(raw, self.name)
        fields = flatten(obj)
        observed_at = datetime.now(UTC)
        for key in TIME_KEYS:
            if fields.get(key) is not None:
                observed_at = parse_time(fields[key], key, ctx.device_tz)
                break
        host = next((fields[k] for k in HOST_KEYS if isinstance(fields.get(k), str)), None)
        return Event(
            event_id=content_id(text),
            observed_at=observed_at,
            source_format=SourceFormat.JSONL,
            fields=fields,
            host=host or None,
            raw=text,
        )

    def sniff(self, path: Path, head: bytes) -> bool:
        """Only ``*.jsonl``/``*.ndjson`` files whose first line is a generic JSON object."""
        if path.suffix.lower() not in (".jsonl", ".ndjson"):
            return False
        line = first_line(head)
        if not line.startswith("{") or '"event_type"' in line or '"EventID"' in line:
            return False
        try:
            return isinstance(orjson.loads(line), dict)
        except orjson.JSONDecodeError:
            return b"\n" not in head  # a first line longer than the head

    def read_file(self, path: Path) -> Iterator[RawRecord]:
        return read_lines(path, self.name)


register_parser(JsonLinesParser())
