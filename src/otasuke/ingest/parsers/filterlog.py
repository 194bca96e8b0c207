"""pfSense / OPNsense ``filterlog`` parser: the packet filter's CSV log lines.

``[header] filterlog[pid]: <CSV>`` (RFC 3164 from pfSense, RFC 5424 from OPNsense and
pfSense 2.6+). Columns, per the pfSense filter log format (2.2 and later):

- every line: ``rule_number``, ``sub_rule``, ``anchor``, ``tracker``, ``interface``,
  ``reason``, ``action`` (pass/block/reject), ``direction`` (in/out), ``ip_version``;
- IPv4: ``tos``, ``ecn``, ``ttl``, ``id``, ``offset``, ``flags``, ``protocol_id``,
  ``protocol``, ``length``, ``src_ip``, ``dst_ip``;
- IPv6: ``class``, ``flow_label``, ``hop_limit``, ``protocol``, ``protocol_id``,
  ``length``, ``src_ip``, ``dst_ip``;
- TCP: ``src_port``, ``dst_port``, ``data_length``, ``tcp_flags``, ``sequence``,
  ``ack``, ``window``, ``urg``, ``options``; UDP: ``src_port``, ``dst_port``,
  ``data_length``; other protocols: ``column_<n>``.

``protocol`` is lowercased (``tcp``, ``udp``, ``icmp`` …). Empty columns are left out.
``observed_at``: the syslog header's time (``device_tz`` when it has no offset), else
now. ``host``: the internal side of the packet, else the header's hostname.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from otasuke.errors import ParseError
from otasuke.ingest.event import Event, SourceFormat
from otasuke.ingest.parsers import ParseContext, RawRecord, register_parser
from otasuke.ingest.parsers.jsonl import first_line, read_lines
from otasuke.ingest.parsers.syslog_text import packet_event, split_syslog, text_line

COMMON = (
    *("rule_number", "sub_rule", "anchor", "tracker", "interface", "reason", "action"),
    *("direction", "ip_version"),
)
IPV4 = ("tos", "ecn", "ttl", "id", "offset", "flags", "protocol_id", "protocol", "length")
IPV6 = ("class", "flow_label", "hop_limit", "protocol", "protocol_id", "length")
ADDRESSES = ("src_ip", "dst_ip")
BY_PROTOCOL = {
    "tcp": (
        *("src_port", "dst_port", "data_length", "tcp_flags", "sequence", "ack", "window"),
        *("urg", "options"),
    ),
    "udp": ("src_port", "dst_port", "data_length"),
}
ACTIONS = frozenset({"pass", "block", "reject"})
_SNIFF = re.compile(r"\bfilterlog(?:\[[0-9]*\])?:|\bfilterlog [0-9-]+ ")


def name_columns(values: list[str]) -> dict[str, str]:
    """The CSV columns by name (see the module docstring)."""
    if len(values) < len(COMMON) or values[8] not in ("4", "6"):
        raise ParseError(
            "not a filterlog record: ip_version (9th column) must be 4 or 6",
            field="ip_version",
            hint="expected e.g. 5,,,1000102433,em0,match,block,in,4,0x0,,128,…",
        )
    names = [*COMMON, *(IPV4 if values[8] == "4" else IPV6), *ADDRESSES]
    if len(values) > len(names):
        protocol = values[names.index("protocol")].lower()
        names.extend(BY_PROTOCOL.get(protocol, ()))
    fields = {
        names[i] if i < len(names) else f"column_{i}": value
        for i, value in enumerate(values)
        if value != ""
    }
    if "protocol" in fields:
        fields["protocol"] = fields["protocol"].lower()
    if fields.get("action") not in ACTIONS:
        raise ParseError(
            f"action {fields.get('action')!r} is not pass, block or reject",
            field="action",
            hint="the 7th column of a filterlog line",
        )
    return fields


class FilterlogParser:
    """pfSense / OPNsense filterlog CSV lines."""

    name: ClassVar[str] = "filterlog"

    def parse(self, raw: str | Mapping[str, Any], ctx: ParseContext) -> Event:
        line = text_line(raw, "filterlog")
        header = split_syslog(line, ctx.device_tz)
        if header.app not in (None, "filterlog"):
            raise ParseError(
                f"syslog program is {header.app!r}, not filterlog",
                field="app",
                hint="only the packet filter's lines (filterlog:) are read by this parser",
            )
        fields = name_columns(header.msg.strip().split(","))
        return packet_event(line, header, fields, SourceFormat.FILTERLOG, "src_ip", "dst_ip")

    def sniff(self, path: Path, head: bytes) -> bool:
        """A first line from the ``filterlog`` program."""
        return _SNIFF.search(first_line(head)) is not None

    def read_file(self, path: Path) -> Iterator[RawRecord]:
        return read_lines(path, self.name)


register_parser(FilterlogParser())
