"""Windows イベントログ (EVTX) parser: records as rendered by the ``evtx`` package.

``parse`` flattens one record (a dict with top key ``"Event"``, or its JSON text) into
the field names Sigma rules use for Windows events:

* ``System`` → ``EventID`` (always an int), ``Channel``, ``Computer``, ``Provider_Name``,
  ``Provider_Guid``, ``Level``, ``Task``, ``Opcode``, ``Keywords``, ``EventRecordID``,
  ``ProcessID``/``ThreadID`` (``Execution``), ``UserID`` (``Security``), ``TimeCreated``
  (``SystemTime``); any other ``System`` child keeps its own name.
* ``EventData`` named children → their own keys; the unnamed ``<Data>`` list → ``Data``.
* ``UserData`` (and any other payload element, e.g. ``ProcessingErrorData``) → the keys of
  its named child, nested elements flattened by their leaf names.

Values keep the type the renderer gave (str, int, bool, None, or a list of those);
``{"#text": …}`` wrappers are unwrapped. A payload key that would overwrite a ``System``
field is kept as ``EventData.<key>``. No code is specific to one Event ID.

``parse`` gives the :class:`Event` ingest stores: its id is SHA-256 of the record's
sorted-key JSON (:func:`~otasuke.ingest.event.content_id`), its ``raw`` that JSON text.
``parse_for_detection`` (``otasuke detect``, the bench) flattens the same way and skips
both: the same fields, time, host and record id, the same ParseErrors, about half the
time per record.

``read_file`` signals a record the ``evtx`` library cannot read by yielding a
:class:`RawRecord` whose ``raw`` is ``{"_parse_error": "<library message>"}``;
``parse`` turns it into a :class:`ParseError` so the caller quarantines it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import evtx
import orjson

from otasuke.errors import ParseError
from otasuke.ingest.event import Event, SourceFormat, content_id
from otasuke.ingest.parsers import ParseContext, RawRecord, register_parser

if TYPE_CHECKING:  # the detection side, which imports this module
    from otasuke.detect.sigma.ruleset import RecordScreen, Screened

EVTX_MAGIC = b"ElfFile\x00"
PARSE_ERROR_KEY = "_parse_error"
"""Key of the placeholder record ``read_file`` yields for an unreadable record."""

_MAX_CONSECUTIVE_ERRORS = 1000
_PAYLOAD_SKIP = frozenset({"System", "#attributes", "RenderingInfo"})
_ATTRIBUTE_NAMES: dict[str, dict[Any, str]] = {
    "Provider": {
        "Name": "Provider_Name",
        "Guid": "Provider_Guid",
        "EventSourceName": "Provider_EventSourceName",
    },
    "TimeCreated": {"SystemTime": "TimeCreated"},
}
"""System child → attribute → field name; any other attribute keeps its own name."""
_SHAPE_ERRORS = (TypeError, ValueError, KeyError, AttributeError, RecursionError)
_SCALAR_TYPES = frozenset({str, int, float, bool, type(None)})
"""Exact types a value is kept as (the renderer's JSON scalars)."""
_STR = frozenset({str})
_PAYLOAD_SPECIAL = frozenset({"#attributes", "#text", "EventID"})
"""Payload keys the general loop does not copy as they are."""
_SYSTEM_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?\s*(Z|[+-]\d{2}:?\d{2})?"
)

Scalar = str | int | float | bool | None
FieldValue = Scalar | list[Scalar]

_compiled_flatten: Callable[..., dict[str, FieldValue] | None] | None
_compiled_flat_record: Callable[..., FlatRecord | None] | None
_compiled_rendered_key: Callable[[str], tuple[str | None, str] | None] | None
try:  # built by `make install` (Cython): the same answers as the Python below, faster
    from otasuke._speedups import flat_record as _compiled_flat_record
    from otasuke._speedups import flatten_event as _compiled_flatten
    from otasuke._speedups import rendered_key as _compiled_rendered_key
except ImportError:  # pragma: no cover - depends on the build
    _compiled_flatten = _compiled_flat_record = _compiled_rendered_key = None


class FlatRecord(NamedTuple):
    """One record flattened: what detection needs of an :class:`Event`.

    The same ``fields``, ``observed_at``, ``host`` and ``record_id`` as the Event
    :meth:`EvtxParser.parse` builds, without the content hash and the raw JSON text.
    """

    fields: dict[str, FieldValue]
    observed_at: datetime
    host: str | None
    record_id: int | None


class EvtxParser:
    """EVTX (Windows イベントログ) records → 正規化イベント with Sigma field names."""

    name: ClassVar[str] = "evtx"

    def parse(self, raw: str | Mapping[str, Any], ctx: ParseContext) -> Event:
        """One rendered record → Event; anything malformed → ParseError naming the field."""
        record = _record(raw, ctx)
        if isinstance(raw, str | bytes):
            text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
            canonical: bytes | None = None
        else:
            try:  # sorted keys: the bytes content_id() hashes, so it is serialised once
                canonical = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
            except TypeError as err:
                raise ParseError(f"not JSON-serialisable: {err}", field="Event") from None
            text = canonical.decode()
        try:
            flat = _flatten(record, ctx)
            return Event(
                # A record's id: SHA-256 of its sorted-key JSON, whichever form came in.
                event_id=content_id(record if canonical is None else canonical),
                observed_at=flat.observed_at,
                source_format=SourceFormat.EVTX,
                fields=flat.fields,
                host=flat.host,
                record_id=flat.record_id,
                raw=text,
            )
        except ParseError:
            raise
        except _SHAPE_ERRORS as err:
            raise _malformed(err, ctx) from err

    def parse_for_detection(self, raw: str | Mapping[str, Any], ctx: ParseContext) -> FlatRecord:
        """As :meth:`parse`, without the content hash and raw text detection does not use.

        For a record ``read_file`` yields (or any JSON text) the fields, time, host and
        record id equal those of ``parse``, and the same records raise ParseError. Only a
        Python mapping that cannot be serialised to JSON (which ``parse`` must hash) is not
        refused here.
        """
        record = _record(raw, ctx)
        try:
            return _flatten(record, ctx)
        except ParseError:
            raise
        except _SHAPE_ERRORS as err:
            raise _malformed(err, ctx) from err

    @property
    def rendered_key(self) -> Callable[[str], tuple[str | None, str] | None]:
        """Reads (Channel, EventID) of a record ``read_rendered`` yields: :func:`rendered_key`
        (its compiled twin where ``otasuke._speedups`` is built; called once per record)."""
        return _compiled_rendered_key or rendered_key

    def sniff(self, path: Path, head: bytes) -> bool:
        """An EVTX file starts with the file header magic ``ElfFile\\0``."""
        return head.startswith(EVTX_MAGIC)

    def read_file(self, path: Path) -> Iterator[RawRecord]:
        """Every record of the file; an unreadable one as a ``_parse_error`` placeholder."""
        loads = orjson.loads
        for record in self.read_rendered(path):
            text = record.raw
            if type(text) is not str:
                yield record  # a placeholder already
                continue
            try:
                data = loads(text)
            except orjson.JSONDecodeError as err:
                yield _error_record(path, record.location.rpartition("#")[2], err)
                continue
            yield RawRecord(format="evtx", raw=data, location=record.location)

    def read_rendered(self, path: Path) -> Iterator[RawRecord]:
        """As :meth:`read_file`, each record's ``raw`` left as the renderer's JSON text."""
        for record, _screened in self.read_screened(path, _PASS_ALL):
            yield record

    def read_screened(
        self, path: Path, screen: RecordScreen
    ) -> Iterator[tuple[RawRecord, Screened | None]]:
        """The records ``screen`` lets through, as :meth:`read_rendered` gives them, each
        with what the screen found (``otasuke detect``: :meth:`RuleSet.record_screen`).

        The screen reads each record's key (:func:`rendered_key`) and searches its text for
        the rules' literals before anything is decoded; most records stop there and are
        counted in ``screen.ruled_out``. Unreadable records come as error records.
        """
        try:
            records = evtx.PyEvtxParser(str(path), 1).records_json()  # 1 thread: 2× faster here
        except (OSError, RuntimeError, ValueError) as err:
            yield _error_record(path, "file", err), None
            return
        errors = 0
        unreadable = 0
        ruled_out = screen.ruled_out
        prefix = f"{path}#"
        next_passing = screen.next_passing
        while True:
            try:
                item, screened = next_passing(records)
            except StopIteration:
                return
            except (RuntimeError, ValueError, OSError) as err:
                if screen.ruled_out != ruled_out:  # records were read since the last error
                    ruled_out = screen.ruled_out
                    errors = 0
                errors += 1
                unreadable += 1
                yield _error_record(path, f"unreadable-{unreadable}", err), None
                if errors >= _MAX_CONSECUTIVE_ERRORS:
                    return
                continue
            errors = 0
            if not isinstance(item, dict):
                return
            record_id = item.get("event_record_id")
            data = item.get("data")
            if type(data) is not str:
                yield _error_record(path, str(record_id), TypeError("no JSON text")), None
                continue
            yield RawRecord(format="evtx", raw=data, location=f"{prefix}{record_id}"), screened


class _PassAll:
    """A :class:`RecordScreen` that lets every record through (:meth:`read_rendered`)."""

    ruled_out = 0

    @staticmethod
    def next_passing(records: Iterator[Any]) -> tuple[Any, None]:
        return next(records), None


_PASS_ALL = _PassAll()


_WINDOWS_EVENT = (
    '{"Event":{"#attributes":{"xmlns":"http://schemas.microsoft.com/win/2004/08/events/event"},'
    '"System":{'
)
_SYSTEM_AFTER_ATTRIBUTES = ',"System":{'
_SYSTEM_FIRST = '{"Event":{"System":{'
_EVENT_ATTRIBUTES = '{"Event":{"#attributes":{'
_QUALIFIED = '{"#attributes":{'
_QUALIFIED_TEXT = '},"#text":'
_NULL_CHANNEL = 'null,"Computer":'


def rendered_key(text: str) -> tuple[str | None, str] | None:
    """(Channel lowercased, EventID digits) of a rendered record, read without decoding it.

    The ``evtx`` renderer writes compact JSON in the XML's order: ``Event`` opens with its
    attributes, then ``System``, whose ``EventID`` comes before ``Channel``, and
    ``Channel`` just before ``Computer``. A quote inside a JSON string is escaped, so
    ``"EventID":`` can only be a key; the first one after ``System`` opens, first in
    ``System`` or right after an element (``Provider``), is System's.
    Anything else (other spacing, an escaped channel) answers None, and the caller decodes
    the record as usual: this is only a shortcut, and where it answers it equals the key
    the fields of :func:`_flatten` give (a ``null`` channel: None).
    """
    if text.startswith(_WINDOWS_EVENT):  # the usual opening, in one test
        at = len(_WINDOWS_EVENT)
    elif text.startswith(_SYSTEM_FIRST):
        at = len(_SYSTEM_FIRST)
    elif text.startswith(_EVENT_ATTRIBUTES):
        close = text.find("}", len(_EVENT_ATTRIBUTES))  # Event's attributes are flat
        if close < 0 or not text.startswith(_SYSTEM_AFTER_ATTRIBUTES, close + 1):
            return None
        at = close + 1 + len(_SYSTEM_AFTER_ATTRIBUTES)
    else:
        return None
    system = at
    at = text.find('"EventID":', at)
    if at < 0 or (at != system and not text.startswith("}},", at - 3)):
        return None  # first in System, or right after Provider: not one of its attributes
    at += 10
    if text.startswith(_QUALIFIED, at):  # {"#attributes":{"Qualifiers":0},"#text":7036}
        at = text.find("}", at + len(_QUALIFIED))
        if not text.startswith(_QUALIFIED_TEXT, at):
            return None
        at += len(_QUALIFIED_TEXT)
        end = text.find("}", at)
        if not text.startswith(",", end + 1):
            return None
    else:
        end = text.find(",", at)
    digits = text[at:end]
    if digits[:1] == '"' and digits[-1:] == '"':  # some exports write "EventID":"4624"
        digits = digits[1:-1]
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 20):
        return None
    if digits[0] == "0" and len(digits) > 1:  # as int() reads it
        digits = str(int(digits))
    at = text.find('"Channel":', end)
    if at < 0:
        return None
    at += 10
    if text.startswith(_NULL_CHANNEL, at):
        return None, digits
    if text[at : at + 1] != '"':
        return None
    at += 1
    end = text.find('"', at)
    channel = text[at:end]
    if end < 0 or "\\" in channel or not text.startswith(',"Computer":', end + 1):
        return None
    return channel.lower(), digits


def _error_record(path: Path, where: str, err: BaseException) -> RawRecord:
    message = f"{type(err).__name__}: {err}"
    return RawRecord(format="evtx", raw={PARSE_ERROR_KEY: message}, location=f"{path}#{where}")


def _record(raw: str | bytes | Mapping[str, Any], ctx: ParseContext) -> Mapping[str, Any]:
    """The record as a mapping (JSON text is decoded); a read error → ParseError."""
    if isinstance(raw, str | bytes):
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            raise ParseError(
                f"not JSON: {err}", field="raw", source=ctx.sensor, hint="one rendered record"
            ) from None
    else:
        record = raw
    if type(record) is not dict and not isinstance(record, Mapping):
        raise ParseError(
            f"expected a JSON object, got {type(record).__name__}",
            field="Event",
            source=ctx.sensor,
        )
    if PARSE_ERROR_KEY in record:
        raise ParseError(
            f"unreadable EVTX record: {record[PARSE_ERROR_KEY]}",
            field="record",
            source=ctx.sensor,
            hint="the file is damaged at this record; the others are kept",
        )
    return record


def _malformed(err: Exception, ctx: ParseContext) -> ParseError:
    """A shape no check foresaw: still a ParseError, never another type."""
    return ParseError(
        f"malformed EVTX record: {type(err).__name__}: {err}", field="Event", source=ctx.sensor
    )


def _flatten(record: Mapping[str, Any], ctx: ParseContext) -> FlatRecord:
    """Every field of the record in one pass over the parsed JSON (hot path)."""
    if _compiled_flat_record is not None:
        made = _compiled_flat_record(
            record, _ATTRIBUTE_NAMES, _PAYLOAD_SKIP, _PAYLOAD_SPECIAL, FlatRecord
        )
        if made is not None:  # the usual record, all in compiled code
            return made
    event = record.get("Event")
    if type(event) is not dict and not isinstance(event, Mapping):
        raise ParseError("missing or not an object", field="Event", source=ctx.sensor)
    system = event.get("System")
    if type(system) is not dict and not isinstance(system, Mapping):
        raise ParseError("missing or not an object", field="Event.System", source=ctx.sensor)
    fields = None
    if _compiled_flatten is not None and type(event) is dict and type(system) is dict:
        fields = _compiled_flatten(event, system, _ATTRIBUTE_NAMES, _PAYLOAD_SKIP, _PAYLOAD_SPECIAL)
    if fields is None:  # the general loop (and anything the compiled one leaves to it)
        fields = {}
        _flatten_system(system, fields)
        fields["EventID"] = _event_id(system.get("EventID"), ctx)
        system_keys = system.keys()
        for key, payload in event.items():
            if key in _PAYLOAD_SKIP:
                continue
            if key == "UserData" and (type(payload) is dict or isinstance(payload, Mapping)):
                for child_key, child in payload.items():
                    if child_key != "#attributes":
                        _flatten_payload(child, fields, system_keys)
            else:
                _flatten_payload(payload, fields, system_keys)
    observed_at = _system_time(fields.get("TimeCreated"), ctx)
    computer = fields.get("Computer")
    return FlatRecord(
        fields,
        observed_at,
        computer if isinstance(computer, str) else None,
        _as_int(fields.get("EventRecordID")),
    )


def _flatten_system(system: Mapping[str, Any], fields: dict[str, FieldValue]) -> None:
    scalars = _SCALAR_TYPES
    for key, value in system.items():
        if type(key) is not str and not isinstance(key, str):
            raise ParseError("System keys must be strings", field="Event.System")
        kind = type(value)
        if kind in scalars:  # the common case: EventID, Level, Channel, Computer …
            if value is not None:
                fields[key] = value
        elif kind is dict or isinstance(value, Mapping):
            attributes = value.get("#attributes")
            if type(attributes) is dict or isinstance(attributes, Mapping):
                names = _ATTRIBUTE_NAMES.get(key)
                for attr, attr_value in attributes.items():
                    name = attr if type(attr) is str else str(attr)
                    if names is not None:
                        name = names.get(attr, name)
                    fields[name] = (
                        attr_value if type(attr_value) in scalars else _scalar(attr_value)
                    )
            if "#text" in value:
                fields[key] = _value(value["#text"])
        else:
            fields[key] = _value(value)


def _flatten_payload(
    payload: Any, fields: dict[str, FieldValue], system_keys: Any, depth: int = 0
) -> None:
    """EventData / UserData child: named children become keys (nested ones by leaf name)."""
    if payload is None:
        return
    scalars = _SCALAR_TYPES
    if type(payload) is not dict:
        if not isinstance(payload, Mapping):
            fields.setdefault("Data", _value(payload))
            return
    elif (
        depth == 0
        and scalars.issuperset(map(type, payload.values()))
        and _STR.issuperset(map(type, payload))
        and payload.keys().isdisjoint(system_keys)
        and payload.keys().isdisjoint(_PAYLOAD_SPECIAL)
    ):
        # The usual EventData: named scalar values, no name a System field has. The loop
        # below would copy every pair as it is; the checks and the copy run in C.
        fields.update(payload)
        return
    for key, value in payload.items():
        if type(key) is not str and not isinstance(key, str):
            continue
        if key == "#attributes":
            continue
        if key == "#text":
            fields.setdefault("Data", _value(value))
            continue
        kind = type(value)
        if (
            kind is not str
            and kind not in scalars
            and isinstance(value, Mapping)
            and "#text" not in value
        ):
            if depth >= 8:
                raise ParseError("elements nested too deeply", field=key)
            _flatten_payload(value, fields, system_keys, depth + 1)
            continue
        name = "EventData." + key if key in system_keys or key == "EventID" else key
        if depth > 0 and name in fields:
            continue  # a nested leaf never overwrites a field seen before
        fields[name] = value if kind in scalars else _value(value)


def _value(value: Any) -> FieldValue:
    """Unwrap ``{"#text": …}``; lists stay lists of scalars."""
    kind = type(value)
    if kind is str or kind is int or value is None or kind is bool or kind is float:
        return value  # type: ignore[no-any-return]
    if isinstance(value, Mapping):
        if "#text" in value:
            return _value(value["#text"])
        return _scalar(value)
    if isinstance(value, list | tuple):
        return [_scalar(item) for item in value]
    return _scalar(value)


def _scalar(value: Any) -> Scalar:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping) and "#text" in value:
        return _scalar(value["#text"])
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:
        return str(value)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _event_id(value: Any, ctx: ParseContext) -> int:
    if isinstance(value, Mapping):
        value = value.get("#text")
    if isinstance(value, str):
        value = value.strip()
        if value.isascii() and value.isdigit():
            return int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ParseError(
        f"EventID must be an integer, got {value!r:.60}",
        field="EventID",
        source=ctx.sensor,
        hint='System.EventID: 4688, "4688" or {"#text": 4688}',
    )


def _rendered_time(value: str) -> bool:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` by its separators (fromisoformat checks the digits)."""
    return (
        len(value) == 27
        and value[26] == "Z"
        and value[19] == "."
        and value[10] == "T"
        and value[4] == value[7] == "-"
        and value[13] == value[16] == ":"
        and value.isascii()
    )


def _system_time(value: Any, ctx: ParseContext) -> datetime:
    if type(value) is str and _rendered_time(value):
        # What the renderer writes ("2025-11-27T07:40:10.165324Z"): the C parser is ~15×
        # faster than the pattern below; anything it refuses takes the general path.
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    match = _SYSTEM_TIME.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ParseError(
            f"TimeCreated.SystemTime missing or not ISO 8601: {value!r:.60}",
            field="TimeCreated",
            source=ctx.sensor,
            hint="e.g. 2025-11-27T07:40:10.165324Z",
        )
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    tz = UTC
    if offset and offset != "Z":
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        if delta >= timedelta(hours=24):
            raise ParseError("time zone offset out of range", field="TimeCreated")
        tz = timezone(sign * delta)
    try:
        stamp = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tz
        )
        return stamp.astimezone(UTC)
    except (ValueError, OverflowError) as err:
        raise ParseError(
            f"TimeCreated.SystemTime out of range: {value!r:.60} ({err})",
            field="TimeCreated",
            source=ctx.sensor,
        ) from None


register_parser(EvtxParser())
