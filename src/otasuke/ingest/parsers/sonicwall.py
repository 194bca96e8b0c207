"""SonicWall (SonicOS) parser: ``id=firewall sn=<serial> time="…" fw=… m=… msg="…" …``.

The ``key=value`` pairs (quoted values unquoted, as for FortiGate) keep SonicWall's
names: ``sn``, ``fw``, ``pri``, ``c`` (category), ``m`` (message id), ``msg``, ``n``,
``src``, ``dst``, ``proto``, ``rule``, ``app``, ``fw_action`` …. ``src``/``dst``
(``ip:port:interface[:host]``; IPv6 addresses in ``srcV6``/``dstV6``) are also split
into ``src_ip``, ``src_port``, ``src_interface``, ``src_host`` (and ``dst_*``).

``observed_at``: ``time`` (``YYYY-MM-DD HH:MM:SS`` with ``UTC`` or, without a zone,
``device_tz``), else the syslog header, else now. ``host``: the internal side of the
traffic (its ``src_host`` name when SonicWall knows it), else ``sn``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, ClassVar

from otasuke.errors import ParseError
from otasuke.ingest.event import Event, SourceFormat, content_id
from otasuke.ingest.netaddr import internal_host, is_internal
from otasuke.ingest.parsers import ParseContext, RawRecord, register_parser
from otasuke.ingest.parsers.fortigate import split_pairs
from otasuke.ingest.parsers.jsonl import first_line, read_lines
from otasuke.ingest.parsers.syslog_text import (
    civil_time,
    header_time,
    split_syslog,
    text_line,
)

_TIME = re.compile(
    r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2}) ([0-9]{1,2}):([0-9]{2}):([0-9]{2})(?:\s+(UTC|GMT))?"
)
_SNIFF = re.compile(r"(?:^|[\s>])id=\S+\s+sn=\S+")


def split_endpoint(fields: dict[str, str], side: str) -> None:
    """``src=ip:port:iface[:host]`` → ``src_ip``, ``src_port``, ``src_interface``, ``src_host``."""
    value = fields.get(side, "")
    parts = value.split(":")
    if len(parts) > 4:  # an IPv6 address written inline: keep the value only
        return
    names = ("ip", "port", "interface", "host")
    for name, part in zip(names, parts, strict=False):
        if part:
            fields[f"{side}_{name}"] = part
    if fields.get(f"{side}V6"):
        fields[f"{side}_ip"] = fields[f"{side}V6"]


def sonicwall_time(text: str | None, tz: tzinfo) -> datetime | None:
    """``time`` as UTC, or a ParseError when present and unreadable."""
    if text is None:
        return None
    match = _TIME.fullmatch(text.strip())
    if match is None:
        raise ParseError(
            f"time {text!r} is not 'YYYY-MM-DD HH:MM:SS [UTC]'",
            field="time",
            hint='e.g. time="2024-04-01 09:30:00 UTC"',
        )
    zone = UTC if match.group(7) else tz
    moment = civil_time(match.groups(), zone)
    if moment is None:
        raise ParseError(
            f"time {text!r} is not a valid moment", field="time", hint="check the clock"
        )
    return moment


class SonicWallParser:
    """SonicWall ``id=… sn=…`` key=value syslog."""

    name: ClassVar[str] = "sonicwall"

    def parse(self, raw: str | Mapping[str, Any], ctx: ParseContext) -> Event:
        line = text_line(raw, "SonicWall")
        header = split_syslog(line, ctx.device_tz)
        fields = split_pairs(header.msg)
        if "sn" not in fields or "id" not in fields:
            raise ParseError(
                "id= and sn= are missing",
                field="sn",
                hint='expected a SonicWall line: id=firewall sn=<serial> time="…" m=… msg="…"',
            )
        split_endpoint(fields, "src")
        split_endpoint(fields, "dst")
        src, dst = fields.get("src_ip"), fields.get("dst_ip")
        host: str | None = None
        if is_internal(src):
            host = fields.get("src_host") or src
        elif is_internal(dst):
            host = internal_host(src, dst)
        return Event(
            event_id=content_id(line),
            observed_at=header_time(header, sonicwall_time(fields.get("time"), ctx.device_tz)),
            source_format=SourceFormat.SONICWALL,
            fields=fields,
            host=host or fields["sn"],
            raw=line,
        )

    def sniff(self, path: Path, head: bytes) -> bool:
        """A first line with ``id=<…> sn=<…>``."""
        return _SNIFF.search(first_line(head)) is not None

    def read_file(self, path: Path) -> Iterator[RawRecord]:
        return read_lines(path, self.name)


register_parser(SonicWallParser())
