"""Windows events as JSON (Winlogbeat, NXLog ``to_json``, Logstash): Sigma field names.

Three shapes are read, one JSON object per line (files may also be ``.zip`` archives
of such files, as the OTRF Security-Datasets ship them):

- Winlogbeat / Elastic Agent: ``winlog.event_id``, ``winlog.channel``,
  ``winlog.computer_name``, ``winlog.provider_name``, ``winlog.event_data.*`` …;
- NXLog ``im_msvistalog`` → ``to_json()`` (and the flat exports derived from it): the
  payload at top level beside ``EventID``, ``Channel``, ``Hostname``, ``SourceName``,
  ``ProviderGuid``, ``RecordNumber``, ``ExecutionProcessID`` …;
- a rendered EVTX record (``{"Event": {"System": …}}``), passed through as it is.

Each record is rebuilt as the EVTX renderer's ``{"Event": {"System": …, "EventData": …}}``
and flattened by :class:`~otasuke.ingest.parsers.evtx.EvtxParser`, so ``fields`` carry
exactly the names an EVTX record gets (``EventID`` int, ``Channel``, ``Computer``,
``Provider_Name``, ``Provider_Guid``, ``EventRecordID``, ``ProcessID``, ``ThreadID``,
``UserID``, ``Task``, ``Level``, ``Keywords`` as ``0x…`` text, ``TimeCreated``, and the
EventData keys ``Image``, ``CommandLine``, ``TargetObject`` …) and the same Sigma rules
fire. Winlogbeat's other keys (``message``, ``host.name``, ``event.code`` …) are added
under their dotted names; NXLog's transport keys stay as they are.

``observed_at``: ``@timestamp`` (Winlogbeat: the event's time), else ``TimeCreated``,
``EventTime``, ``EventReceivedTime`` (without an offset in ``device_tz``).
``host``: ``Computer``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from otasuke.errors import ParseError
from otasuke.ingest.event import Event, SourceFormat, content_id
from otasuke.ingest.parsers import ParseContext, RawRecord, register_parser
from otasuke.ingest.parsers.evtx import EvtxParser
from otasuke.ingest.parsers.jsonl import first_line, flatten, load_object, parse_time, read_lines

EVTX = EvtxParser()
TIME_KEYS = ("@timestamp", "TimeCreated", "EventTime", "EventReceivedTime")
NXLOG_SYSTEM = {
    "EventID": "EventID",
    "Channel": "Channel",
    "Hostname": "Computer",
    "Computer": "Computer",
    "Level": "Level",
    "Task": "Task",
    "OpcodeValue": "Opcode",
    "Keywords": "Keywords",
    "RecordNumber": "EventRecordID",
    "EventRecordID": "EventRecordID",
    "Version": "Version",
}
"""NXLog key → EVTX System child; these keys leave the payload."""
NXLOG_ATTRIBUTES = {
    "SourceName": ("Provider", "Name"),
    "ProviderGuid": ("Provider", "Guid"),
    "ExecutionProcessID": ("Execution", "ProcessID"),
    "ThreadID": ("Execution", "ThreadID"),
    "UserID": ("Security", "UserID"),
}
WINLOGBEAT_SYSTEM = {
    "winlog.event_id": "EventID",
    "winlog.channel": "Channel",
    "winlog.computer_name": "Computer",
    "winlog.record_id": "EventRecordID",
    "winlog.task": "Task",
    "winlog.opcode": "Opcode",
    "winlog.version": "Version",
}
WINLOGBEAT_ATTRIBUTES = {
    "winlog.provider_name": ("Provider", "Name"),
    "winlog.provider_guid": ("Provider", "Guid"),
    "winlog.process.pid": ("Execution", "ProcessID"),
    "winlog.process.thread.id": ("Execution", "ThreadID"),
    "winlog.user.identifier": ("Security", "UserID"),
}
_NUMERIC = frozenset({"EventID", "Level", "Task", "Opcode", "EventRecordID", "Version"})
ZIP_MAGIC = b"PK\x03\x04"
MAX_MEMBER_BYTES = 512 * 1024 * 1024


def windows_shape(obj: Mapping[str, Any]) -> str | None:
    """``winlogbeat``, ``nxlog``, ``evtx`` or None (not a Windows event)."""
    if isinstance(obj.get("winlog"), Mapping):
        return "winlogbeat"
    if isinstance(obj.get("Event"), Mapping):
        return "evtx"
    if "EventID" in obj and ("Channel" in obj or "SourceName" in obj):
        return "nxlog"
    return None


def observed_at(obj: Mapping[str, Any], ctx: ParseContext) -> datetime:
    for key in TIME_KEYS:
        if obj.get(key) not in (None, ""):
            return parse_time(obj[key], key, ctx.device_tz)
    raise ParseError(
        "no time: none of @timestamp, TimeCreated, EventTime",
        field="@timestamp",
        hint="Winlogbeat and NXLog send @timestamp or EventTime; check the shipper's output",
    )


def _system_value(name: str, value: Any) -> Any:
    if name in _NUMERIC and isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if name == "Keywords" and isinstance(value, int) and not isinstance(value, bool):
        return f"0x{value & 0xFFFFFFFFFFFFFFFF:016x}"
    return value


def rendered(
    obj: Mapping[str, Any], system_map: Mapping[str, str], attr_map: Mapping[str, tuple[str, str]]
) -> tuple[dict[str, Any], set[str]]:
    """The System element built from ``obj`` and the keys it used."""
    system: dict[str, Any] = {}
    used: set[str] = set()
    for key, name in system_map.items():
        if obj.get(key) is not None and name not in system:
            system[name] = _system_value(name, obj[key])
            used.add(key)
    for key, (element, attribute) in attr_map.items():
        if obj.get(key) is not None:
            attrs = system.setdefault(element, {"#attributes": {}})["#attributes"]
            attrs[attribute] = obj[key]
            used.add(key)
    return system, used


def to_evtx(
    obj: Mapping[str, Any], shape: str, when: datetime
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The record as the EVTX renderer would give it, and the keys left over."""
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if shape == "winlogbeat":
        flat = flatten(obj)
        system, used = rendered(flat, WINLOGBEAT_SYSTEM, WINLOGBEAT_ATTRIBUTES)
        winlog = obj["winlog"]
        event: dict[str, Any] = {"EventData": dict(winlog.get("event_data") or {})}
        if isinstance(winlog.get("user_data"), Mapping):
            event["UserData"] = {"data": dict(winlog["user_data"])}
        extra = {k: v for k, v in flat.items() if not k.startswith("winlog.") and k not in used}
        if "EventID" not in system and flat.get("event.code") is not None:
            system["EventID"] = _system_value("EventID", flat["event.code"])
    else:
        system, used = rendered(obj, NXLOG_SYSTEM, NXLOG_ATTRIBUTES)
        payload = {k: v for k, v in obj.items() if k not in used and k != "TimeCreated"}
        event, extra = {"EventData": payload}, {}
    system["TimeCreated"] = {"#attributes": {"SystemTime": stamp}}
    event["System"] = system
    return {"Event": event}, extra


class WindowsJsonParser:
    """Windows events shipped as JSON by Winlogbeat or NXLog."""

    name: ClassVar[str] = "winlogbeat"

    def parse(self, raw: str | Mapping[str, Any], ctx: ParseContext) -> Event:
        obj, text = load_object(raw, "Windows event JSON")
        shape = windows_shape(obj)
        if shape is None:
            raise ParseError(
                "not a Windows event: no winlog object, no EventID with Channel",
                field="EventID",
                hint="send Winlogbeat or NXLog JSON (one event per line)",
            )
        if shape == "evtx":
            record, extra, when = obj, dict[str, Any](), None
        else:
            when = observed_at(obj, ctx)
            record, extra = to_evtx(obj, shape, when)
        try:
            flat = EVTX.parse(record, ctx)
        except ParseError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as err:
            raise ParseError(f"malformed Windows event: {err}", field="Event") from None
        fields = dict(flat.fields)
        for key, value in extra.items():
            fields.setdefault(key, value)
        return Event(
            event_id=content_id(text),
            observed_at=when or flat.observed_at,
            source_format=SourceFormat.WINLOGBEAT,
            fields=fields,
            host=flat.host,
            record_id=flat.record_id,
            raw=text,
        )

    def sniff(self, path: Path, head: bytes) -> bool:
        """JSON lines (or a zip of them) whose first record is a Windows event."""
        if head.startswith(ZIP_MAGIC):
            head = _zip_head(path)
        line = first_line(head)
        if not line.startswith("{"):
            return False
        if '"winlog"' in line:
            return True
        return '"EventID"' in line and ('"Channel"' in line or '"SourceName"' in line)

    def read_file(self, path: Path) -> Iterator[RawRecord]:
        with path.open("rb") as fh:
            is_zip = fh.read(4) == ZIP_MAGIC
        if not is_zip:
            yield from read_lines(path, self.name)
            return
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if member.is_dir() or member.file_size > MAX_MEMBER_BYTES:
                    continue
                with archive.open(member) as fh:
                    for number, line in enumerate(fh, start=1):
                        text = line.decode("utf-8", "replace").rstrip("\r\n")
                        if text.strip():
                            yield RawRecord(self.name, text, f"{path}!{member.filename}:{number}")


def _zip_head(path: Path) -> bytes:
    """The first 4 KiB of the first member of a zip archive (b"" if unreadable)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if not members:
                return b""
            with archive.open(members[0]) as fh:
                return fh.read(4096)
    except (OSError, zipfile.BadZipFile, ValueError):
        return b""


register_parser(WindowsJsonParser())
