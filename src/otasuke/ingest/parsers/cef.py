"""CEF parser (Common Event Format): FortiGate CEF, Trend Micro, Sophos, Check Point ….

``CEF:Version|Vendor|Product|Version|Signature ID|Name|Severity|Extension``, alone
or after a syslog header. Header fields are split on unescaped ``|`` (``\\|`` and
``\\\\`` unescaped); the extension is ``key=value`` pairs where a value runs up to
the next `` key=`` (so it may hold spaces) and ``\\=``, ``\\\\``, ``\\n``, ``\\r`` are
unescaped.

``fields``: ``cef_version``, ``device_vendor``, ``device_product``,
``device_version``, ``signature_id``, ``name``, ``severity`` (as sent: ``0``–``10``
or ``Low``…``Very-High``), and every extension key under its own name (``src``,
``dst``, ``spt``, ``dpt``, ``act``, ``cs1``/``cs1Label``, ``FTNTFGTlogid`` …).

``observed_at``: extension ``rt`` (else ``end``, ``start``, FortiGate's
``FTNTFGTeventtime``) as epoch ms or ``MMM dd yyyy HH:mm:ss[.SSS] [zone]`` (no zone:
``device_tz``); else the syslog header's time; else now.

``host``: the internal side of the traffic (``shost``/``src`` when ``src`` is private,
else ``dhost``/``dst`` when ``dst`` is); otherwise ``dvchost``/``dhost``/``shost``/``dvc``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from otasuke.errors import ParseError
from otasuke.ingest.event import Event, SourceFormat, content_id
from otasuke.ingest.netaddr import is_internal
from otasuke.ingest.parsers import ParseContext, RawRecord, register_parser
from otasuke.ingest.parsers.jsonl import first_line, from_epoch, read_lines
from otasuke.ingest.parsers.syslog_text import (
    MONTHS,
    header_time,
    offset_zone,
    split_syslog,
    text_line,
)

HEADER_NAMES = (
    "cef_version",
    "device_vendor",
    "device_product",
    "device_version",
    "signature_id",
    "name",
    "severity",
)
TIME_KEYS = ("rt", "end", "start", "FTNTFGTeventtime")
_START = re.compile(r"CEF:\s?\d")
_EXT_KEY = re.compile(r"(?:^|(?<=\s))([A-Za-z0-9_.\[\]-]+)=")
_TEXT_TIME = re.compile(
    r"(?P<mon>[A-Za-z]{3}) (?P<day>\d{1,2}) (?P<year>\d{4}) "
    r"(?P<h>\d{1,2}):(?P<m>\d{2}):(?P<s>\d{2})(?:\.(?P<ms>\d{1,6}))?(?: (?P<zone>\S+))?"
)
_EXT_ESCAPES = {"=": "=", "\\": "\\", "n": "\n", "r": "\r", "|": "|"}


def split_header(text: str) -> tuple[list[str], str]:
    """The seven header fields and the raw extension of ``CEF:…`` text."""
    parts: list[str] = []
    current: list[str] = []
    pos, end = 0, len(text)
    while pos < end and len(parts) < 7:
        char = text[pos]
        if char == "\\" and pos + 1 < end and text[pos + 1] in "|\\":
            current.append(text[pos + 1])
            pos += 2
            continue
        if char == "|":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        pos += 1
    if len(parts) < 7:
        raise ParseError(
            f"CEF header has {len(parts)} of 7 '|'-separated fields",
            field="header",
            hint="CEF:Version|Vendor|Product|Version|Signature ID|Name|Severity|Extension",
        )
    parts[0] = parts[0].removeprefix("CEF:").strip()
    return parts, text[pos:]


def split_extension(text: str) -> dict[str, str]:
    """Extension ``key=value`` pairs; a value runs to the next `` key=``."""
    keys = [m for m in _EXT_KEY.finditer(text) if not _escaped(text, m.start(1))]
    pairs: dict[str, str] = {}
    for index, match in enumerate(keys):
        stop = keys[index + 1].start() if index + 1 < len(keys) else len(text)
        pairs[match.group(1)] = _unescape(text[match.end() : stop].strip())
    return pairs


def _escaped(text: str, pos: int) -> bool:
    """Whether the key at ``pos`` is really part of a value (``a\\=b``)."""
    return pos > 0 and text[pos - 1] == "\\"


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    out: list[str] = []
    pos, end = 0, len(value)
    while pos < end:
        char = value[pos]
        if char == "\\" and pos + 1 < end and value[pos + 1] in _EXT_ESCAPES:
            out.append(_EXT_ESCAPES[value[pos + 1]])
            pos += 2
        else:
            out.append(char)
            pos += 1
    return "".join(out)


def event_time(pairs: Mapping[str, str], ctx: ParseContext) -> datetime | None:
    """The first of TIME_KEYS that reads as epoch or CEF text time, else None."""
    for key in TIME_KEYS:
        text = pairs.get(key, "").strip()
        if not text:
            continue
        if text.isascii() and text.isdigit() and len(text) <= 20:
            return from_epoch(int(text), key)
        match = _TEXT_TIME.fullmatch(text)
        if match is None or match["mon"].lower() not in MONTHS:
            raise ParseError(
                f"{key} {text!r} is neither epoch ms nor 'MMM dd yyyy HH:mm:ss'",
                field=key,
                hint="e.g. rt=1711931400000 or rt=Apr 01 2024 09:30:00",
            )
        zone = (offset_zone(match["zone"]) if match["zone"] else None) or ctx.device_tz
        if match["zone"] in ("UTC", "GMT", "Z"):
            zone = UTC
        try:
            local = datetime(
                int(match["year"]),
                MONTHS[match["mon"].lower()],
                int(match["day"]),
                int(match["h"]),
                int(match["m"]),
                int(match["s"]),
                int((match["ms"] or "0").ljust(6, "0")),
                tzinfo=zone,
            )
            return local.astimezone(UTC)
        except (ValueError, OverflowError):
            raise ParseError(
                f"{key} {text!r} is not a valid moment", field=key, hint="check the clock"
            ) from None
    return None


def cef_host(fields: Mapping[str, Any]) -> str | None:
    """The customer's PC side of the record, else the reporting device."""
    if is_internal(fields.get("src")):
        return str(fields.get("shost") or fields["src"])
    if is_internal(fields.get("dst")):
        return str(fields.get("dhost") or fields["dst"])
    for key in ("dvchost", "dhost", "shost", "dvc", "dst"):
        value = fields.get(key)
        if isinstance(value, str) and value:
            return value
    return None


class CefParser:
    """CEF (Common Event Format) lines from any vendor."""

    name: ClassVar[str] = "cef"

    def parse(self, raw: str | Mapping[str, Any], ctx: ParseContext) -> Event:
        line = text_line(raw, "CEF")
        start = _START.search(line)
        if start is None:
            raise ParseError(
                "no 'CEF:' header found",
                field="raw",
                hint="expected CEF:0|Vendor|Product|Version|ID|Name|Severity|key=value …",
            )
        header = split_syslog(line[: start.start()], ctx.device_tz)
        parts, extension = split_header(line[start.start() :])
        fields: dict[str, Any] = split_extension(extension)
        fields.update(zip(HEADER_NAMES, parts, strict=True))
        return Event(
            event_id=content_id(line),
            observed_at=header_time(header, event_time(fields, ctx)),
            source_format=SourceFormat.CEF,
            fields=fields,
            host=cef_host(fields),
            raw=line,
        )

    def sniff(self, path: Path, head: bytes) -> bool:
        """A first line with ``CEF:<digit>`` and at least seven ``|``."""
        line = first_line(head)
        start = _START.search(line)
        return start is not None and line.count("|", start.start()) >= 7

    def read_file(self, path: Path) -> Iterator[RawRecord]:
        return read_lines(path, self.name)


register_parser(CefParser())
