"""Palo Alto Networks PAN-OS parser: the CSV syslog format (TRAFFIC, THREAT, SYSTEM, CONFIG).

A line is ``FUTURE_USE,Receive Time,Serial Number,Type,Subtype,…`` (PAN-OS 8–11),
alone or after a syslog header. Columns are named by their position as in the
PAN-OS syslog field descriptions, with the variable names of PAN-OS custom log
formats (``receive_time``, ``serial``, ``type``, ``subtype``, ``time_generated``,
``src``, ``dst``, ``rule``, ``app``, ``from``, ``to``, ``sport``, ``dport``,
``proto``, ``action``, ``threatid``, ``severity`` …). Columns beyond the known ones,
and those of other log types (GLOBALPROTECT, HIP-MATCH, AUTH …), are kept as
``column_<n>`` (0-based). Empty columns are left out.

``observed_at``: ``time_generated`` (``YYYY/MM/DD HH:MM:SS`` in ``device_tz``), else
``receive_time``, else the syslog header; none of them valid is a ParseError.

``host``: the internal side of ``src``/``dst`` (社内端末), else ``serial``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, ClassVar

from otasuke.errors import ParseError
from otasuke.ingest.event import Event, SourceFormat, content_id
from otasuke.ingest.netaddr import internal_host, is_internal
from otasuke.ingest.parsers import ParseContext, RawRecord, register_parser
from otasuke.ingest.parsers.jsonl import first_line, read_lines
from otasuke.ingest.parsers.syslog_text import (
    civil_time,
    header_time,
    split_syslog,
    text_line,
)

COMMON = ("future_use1", "receive_time", "serial", "type", "subtype", "future_use2")
SESSION = (
    *("time_generated", "src", "dst", "natsrc", "natdst", "rule", "srcuser", "dstuser"),
    *("app", "vsys", "from", "to", "inbound_if", "outbound_if", "logset", "future_use3"),
    *("sessionid", "repeatcnt", "sport", "dport", "natsport", "natdport", "flags"),
    *("proto", "action"),
)
COLUMNS: dict[str, tuple[str, ...]] = {
    "TRAFFIC": (
        *COMMON,
        *SESSION,
        *("bytes", "bytes_sent", "bytes_received", "packets", "start", "elapsed"),
        *("category", "future_use4", "seqno", "actionflags", "srcloc", "dstloc"),
        *("future_use5", "pkts_sent", "pkts_received", "session_end_reason"),
    ),
    "THREAT": (
        *COMMON,
        *SESSION,
        *("misc", "threatid", "category", "severity", "direction", "seqno"),
        *("actionflags", "srcloc", "dstloc", "future_use4", "contenttype", "pcap_id"),
        *("filedigest", "cloud", "url_idx", "user_agent", "filetype", "xff", "referer"),
        *("sender", "subject", "recipient", "reportid"),
    ),
    "SYSTEM": (
        *COMMON,
        *("time_generated", "vsys", "eventid", "object", "future_use3", "future_use4"),
        *("module", "severity", "opaque", "seqno", "actionflags"),
    ),
    "CONFIG": (
        *COMMON,
        *("time_generated", "host", "vsys", "cmd", "admin", "client", "result"),
        *("path", "before_change_detail", "after_change_detail", "seqno", "actionflags"),
    ),
}
LOG_TYPES = frozenset(
    {
        *COLUMNS,
        *("HIP-MATCH", "GLOBALPROTECT", "USERID", "AUTH", "DECRYPTION", "TUNNEL"),
        *("CORRELATION", "SCTP", "IPTAG", "GTP", "OTHERS"),
    }
)
_START = re.compile(r"[0-9]+,(?:[0-9]{4}/[0-9]{2}/[0-9]{2} [0-9:]{8})?,[^,]*,([A-Z][A-Z-]+),")
_TIME = re.compile(r"([0-9]{4})/([0-9]{2})/([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})")
TIME_COLUMNS = ("time_generated", "receive_time")


def columns(body: str) -> list[str]:
    """The CSV columns of the PAN-OS record (quoted values unquoted)."""
    try:
        return next(csv.reader([body]), [])
    except csv.Error as err:
        raise ParseError(f"not CSV: {err}", field="raw", hint="send the line unchanged") from None


def name_columns(values: list[str]) -> dict[str, str]:
    """Columns by PAN-OS name (or ``column_<n>``), empty ones left out."""
    names = COLUMNS.get(values[3], (*COMMON, "time_generated"))
    fields: dict[str, str] = {}
    for index, value in enumerate(values):
        if value == "":
            continue
        name = names[index] if index < len(names) else f"column_{index}"
        fields.setdefault(name, value)
    return fields


def pan_time(fields: Mapping[str, str], tz: tzinfo) -> datetime | None:
    """``time_generated`` or ``receive_time`` in UTC, the first that is a valid moment."""
    for key in TIME_COLUMNS:
        match = _TIME.fullmatch(fields.get(key, "").strip())
        if match is None:
            continue
        moment = civil_time(match.groups(), tz)
        if moment is not None:
            return moment
    return None


class PaloAltoParser:
    """PAN-OS CSV syslog (TRAFFIC, THREAT, SYSTEM, CONFIG; other types by position)."""

    name: ClassVar[str] = "paloalto"

    def parse(self, raw: str | Mapping[str, Any], ctx: ParseContext) -> Event:
        line = text_line(raw, "PAN-OS")
        start = _START.search(line)
        if start is None or start.group(1) not in LOG_TYPES:
            raise ParseError(
                "not a PAN-OS CSV record",
                field="raw",
                hint="expected 1,2024/04/01 09:30:00,<serial>,TRAFFIC|THREAT|SYSTEM|CONFIG,…",
            )
        header = split_syslog(line[: start.start()], ctx.device_tz)
        fields = name_columns(columns(line[start.start() :]))
        body_time = pan_time(fields, ctx.device_tz)
        if body_time is None and header.timestamp is None:
            raise ParseError(
                f"no valid time: time_generated {fields.get('time_generated')!r}, "
                f"receive_time {fields.get('receive_time')!r}",
                field="time_generated",
                hint="PAN-OS writes YYYY/MM/DD HH:MM:SS; check the firewall's clock",
            )
        src, dst = fields.get("src"), fields.get("dst")
        host = internal_host(src, dst) if is_internal(src) or is_internal(dst) else None
        return Event(
            event_id=content_id(line),
            observed_at=header_time(header, body_time),
            source_format=SourceFormat.PALOALTO,
            fields=fields,
            host=host or fields.get("serial"),
            raw=line,
        )

    def sniff(self, path: Path, head: bytes) -> bool:
        """A first line with ``<n>,YYYY/MM/DD HH:MM:SS,<serial>,<TYPE>,``."""
        start = _START.search(first_line(head))
        return start is not None and start.group(1) in LOG_TYPES

    def read_file(self, path: Path) -> Iterator[RawRecord]:
        return read_lines(path, self.name)


register_parser(PaloAltoParser())
