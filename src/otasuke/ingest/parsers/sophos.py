"""Sophos firewall parser: Sophos UTM (``key="value"``) and Sophos Firewall XG/SFOS.

Two ``key=value`` dialects, told apart by their keys and kept under Sophos's names
(``variant`` says which):

- ``sfos`` (XG / SFOS): ``device="SFW" date=… time=… timezone="+09" device_name=…
  log_id=… log_type="Firewall" log_component=… log_subtype="Denied" status="Deny"
  src_ip=… dst_ip=… src_port=… dst_port=… protocol=… fw_rule_id=…`` (v19+ may send
  ``timestamp="2024-04-01T09:30:00+0900"`` instead of date/time). ``log_id`` is also
  decoded into ``log_type_id``, ``log_component_id``, ``log_subtype_id``,
  ``log_severity_id`` and ``message_id`` (2+2+2+1+5 digits).
- ``utm`` (Sophos UTM 9): ``<30>2024:04:01-09:30:00 utm httpproxy[123]: id="0001"
  severity="info" sys="SecureNet" sub="packetfilter" name="Packet dropped"
  action="drop" srcip=… dstip=… srcport=… dstport=… proto=…``.

``observed_at``: SFOS ``timestamp`` or ``date``+``time`` (in ``timezone`` when it is
an offset, else ``device_tz``); UTM's ``YYYY:MM:DD-hh:mm:ss`` header (``device_tz``);
else a syslog header; else now. ``host``: the internal side of the traffic, else
``device_name`` / the UTM's host name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from otasuke.errors import ParseError
from otasuke.ingest.event import Event, SourceFormat, content_id
from otasuke.ingest.netaddr import internal_host, is_internal
from otasuke.ingest.parsers import ParseContext, RawRecord, register_parser
from otasuke.ingest.parsers.fortigate import split_pairs
from otasuke.ingest.parsers.jsonl import first_line, parse_time, read_lines
from otasuke.ingest.parsers.syslog_text import (
    civil_time,
    header_time,
    offset_zone,
    split_syslog,
    text_line,
)

_UTM_HEADER = re.compile(
    r"(?:<[0-9]{1,3}>)?([0-9]{4}):([0-9]{2}):([0-9]{2})-([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\s+(?P<host>[^\s:\[]+))?"
)
_DATE_TIME = re.compile(r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2}) ([0-9]{1,2}):([0-9]{2}):([0-9]{2})")
_LOG_ID = (("log_type_id", 2), ("log_component_id", 2), ("log_subtype_id", 2))
_LOG_ID_TAIL = (("log_severity_id", 1), ("message_id", 5))
SFOS_KEYS = frozenset({"log_id", "log_type", "device_name"})
UTM_KEYS = frozenset({"id", "sys", "name"})


def variant(fields: Mapping[str, str]) -> str | None:
    """``sfos``, ``utm`` or None (not a Sophos firewall line)."""
    if fields.get("device") == "SFW" or len(SFOS_KEYS & fields.keys()) >= 2:
        return "sfos"
    if fields.keys() >= UTM_KEYS:
        return "utm"
    return None


def decode_log_id(fields: dict[str, str]) -> None:
    """SFOS ``log_id`` (12 digits) → its parts; other lengths are left alone."""
    log_id = fields.get("log_id", "")
    if len(log_id) != 12 or not log_id.isdigit():
        return
    pos = 0
    for name, width in (*_LOG_ID, *_LOG_ID_TAIL):
        fields[name] = log_id[pos : pos + width]
        pos += width


def sfos_time(fields: Mapping[str, str], tz: ZoneInfo) -> datetime | None:
    if fields.get("timestamp"):
        return parse_time(fields["timestamp"].replace(" ", "T", 1), "timestamp", tz)
    if "date" not in fields or "time" not in fields:
        return None
    match = _DATE_TIME.fullmatch(f"{fields['date'].strip()} {fields['time'].strip()}")
    if match is None:
        raise ParseError(
            f"date {fields['date']!r} time {fields['time']!r} is not YYYY-MM-DD HH:MM:SS",
            field="date",
            hint="e.g. date=2024-04-01 time=09:30:00",
        )
    zone = offset_zone(fields.get("timezone", "").strip() or "?") or tz
    return _moment(match, zone, "date")


def _moment(match: re.Match[str], zone: tzinfo, field: str) -> datetime:
    moment = civil_time(match.groups(), zone)
    if moment is None:
        raise ParseError(
            f"{match.group()!r} is not a valid moment", field=field, hint="check the clock"
        )
    return moment


class SophosParser:
    """Sophos UTM 9 and Sophos Firewall (XG/SFOS) syslog."""

    name: ClassVar[str] = "sophos"

    def parse(self, raw: str | Mapping[str, Any], ctx: ParseContext) -> Event:
        line = text_line(raw, "Sophos")
        utm_header = _UTM_HEADER.match(line)
        header = split_syslog(line if utm_header is None else "", ctx.device_tz)
        fields = split_pairs(header.msg if utm_header is None else line[utm_header.end() :])
        kind = variant(fields)
        if kind is None:
            raise ParseError(
                "not a Sophos firewall line",
                field="raw",
                hint='expected device="SFW" … log_type=… (XG/SFOS) or id="…" sys="…" '
                'name="…" (UTM)',
            )
        fields["variant"] = kind
        body_time: datetime | None
        if utm_header is not None:
            body_time = _moment(utm_header, ctx.device_tz, "timestamp")
            if utm_header["host"]:
                fields.setdefault("hostname", utm_header["host"])
        else:
            body_time = sfos_time(fields, ctx.device_tz)
            decode_log_id(fields)
        src = fields.get("src_ip") or fields.get("srcip")
        dst = fields.get("dst_ip") or fields.get("dstip")
        host = internal_host(src, dst) if is_internal(src) or is_internal(dst) else None
        device = fields.get("device_name") or fields.get("hostname") or header.hostname
        return Event(
            event_id=content_id(line),
            observed_at=header_time(header, body_time),
            source_format=SourceFormat.SOPHOS,
            fields=fields,
            host=host or device or None,
            raw=line,
        )

    def sniff(self, path: Path, head: bytes) -> bool:
        """A first line in either Sophos dialect."""
        line = first_line(head)
        if line.startswith("{") or "=" not in line:
            return False
        if 'device="SFW"' in line or ("log_type=" in line and "log_id=" in line):
            return True
        return _UTM_HEADER.match(line) is not None and ' sys="' in line and ' name="' in line

    def read_file(self, path: Path) -> Iterator[RawRecord]:
        return read_lines(path, self.name)


register_parser(SophosParser())
