"""Cisco ASA / FTD parser: ``%ASA-<severity>-<message id>: <text>`` syslog messages.

Every such message is kept with ``product`` (ASA, FTD, PIX, FWSM), ``severity`` (0–7),
``message_id`` and ``message``. For the common firewall messages the text is read
into Sigma-style names — ``action``, ``protocol``, ``src_interface``, ``src_ip``,
``src_port``, ``dst_interface``, ``dst_ip``, ``dst_port`` and a few extras:

=========  ===============================================================
106023     Deny <proto> src <if>:<ip>/<port> dst <if>:<ip>/<port> by access-group "<acl>"
106100     access-list <acl> permitted|denied <proto> <if>/<ip>(<port>) -> <if>/<ip>(<port>)
302013/15  Built inbound|outbound TCP|UDP connection <id> for … to … (outbound: the
           second side opened it, so src/dst are swapped to name the initiator as src)
302014/16  Teardown TCP|UDP connection <id> for … to … duration … bytes … [reason]
710003     <proto> access denied by ACL from <ip>/<port> to <if>:<ip>/<port>
733100     [<object>] drop rate-<n> exceeded (threat detection: burst/average rates)
=========  ===============================================================

Other messages get ``src_ip``/``dst_ip`` (and ports, interfaces) from an IPv4
``from … to …`` when they have one, and ``action`` deny when they start with Deny or
say denied/dropped. ``observed_at`` is the syslog header time (ASA's ``logging
timestamp``; without a year the current one), else now. ``host``: the internal side
of ``src_ip``/``dst_ip``, else the header's hostname.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from otasuke.errors import ParseError
from otasuke.ingest.event import Event, SourceFormat, content_id
from otasuke.ingest.netaddr import internal_host, is_internal
from otasuke.ingest.parsers import ParseContext, RawRecord, register_parser
from otasuke.ingest.parsers.jsonl import first_line, read_lines
from otasuke.ingest.parsers.syslog_text import header_time, split_syslog, text_line

_TAG = re.compile(r"%(?P<product>ASA|FTD|PIX|FWSM)-(?P<severity>[0-7])-(?P<id>[0-9]{6}):?\s*")
_IF_IP = r"(?P<{p}_interface>[^:\s]+):(?P<{p}_ip>[^/\s]+)(?:/(?P<{p}_port>\d+))?"
_SRC, _DST = _IF_IP.format(p="src"), _IF_IP.format(p="dst")
_MAPPED = r"(?: \([^)]*\))?"
PATTERNS: dict[str, re.Pattern[str]] = {
    "106023": re.compile(
        rf"Deny (?P<protocol>\S+) src {_SRC} dst {_DST}.*?"
        r'by access-group "(?P<acl>[^"]*)"'
    ),
    "106100": re.compile(
        r"access-list (?P<acl>\S+) (?P<action>permitted|denied|est-allowed) (?P<protocol>\S+) "
        r"(?P<src_interface>[^/\s]+)/(?P<src_ip>[^(\s]+)\((?P<src_port>\d+)\)\S* -> "
        r"(?P<dst_interface>[^/\s]+)/(?P<dst_ip>[^(\s]+)\((?P<dst_port>\d+)\)"
    ),
    "302013": re.compile(
        r"Built (?P<direction>inbound|outbound) (?P<protocol>TCP|UDP) connection "
        rf"(?P<connection_id>\d+) for {_SRC}{_MAPPED} to {_DST}{_MAPPED}"
    ),
    "302014": re.compile(
        rf"Teardown (?P<protocol>TCP|UDP) connection (?P<connection_id>\d+) for {_SRC} "
        rf"to {_DST} duration (?P<duration>\S+) bytes (?P<bytes>\d+)(?: (?P<reason>.+))?"
    ),
    "710003": re.compile(
        r"(?P<protocol>\S+) access denied by ACL from (?P<src_ip>[^/\s]+)/(?P<src_port>\d+) "
        rf"to {_DST}"
    ),
    "733100": re.compile(
        r"\[?\s*(?P<object>.*?)\s*\]? drop rate[- ]?(?P<rate_id>\d+) exceeded\. "
        r"Current burst rate is (?P<burst_rate>\d+) per second, max configured rate is "
        r"(?P<burst_max>\d+); Current average rate is (?P<average_rate>\d+) per second, "
        r"max configured rate is (?P<average_max>\d+); Cumulative total count is (?P<total>\d+)"
    ),
}
PATTERNS["302015"] = PATTERNS["302013"]
PATTERNS["302016"] = PATTERNS["302014"]
ACTIONS = {
    "106023": "deny",
    "710003": "deny",
    "302013": "built",
    "302015": "built",
    "302014": "teardown",
    "302016": "teardown",
    "733100": "drop-rate-exceeded",
}
_V4 = r"\d{1,3}(?:\.\d{1,3}){3}"
_GENERIC = re.compile(
    rf"from (?:(?P<src_interface>[\w.-]+):)?(?P<src_ip>{_V4})(?:/(?P<src_port>\d+))? "
    rf"to (?:(?P<dst_interface>[\w.-]+):)?(?P<dst_ip>{_V4})(?:/(?P<dst_port>\d+))?"
)
_DENIED = re.compile(r"^(?:Deny|Denied)\b|\b(?:denied|dropped|[Dd]rop)\b")


def message_fields(message_id: str, text: str) -> dict[str, str]:
    """What the message text says, under Sigma-style names (see the module docstring)."""
    pattern = PATTERNS.get(message_id)
    match = pattern.search(text) if pattern is not None else None
    if match is None:
        match = _GENERIC.search(text)
        fields = {k: v for k, v in (match.groupdict() if match else {}).items() if v}
        if _DENIED.search(text):
            fields["action"] = "deny"
        return fields
    fields = {k: v for k, v in match.groupdict().items() if v}
    if fields.get("direction") == "outbound":
        fields = _swap(fields)
    if message_id in ACTIONS:
        fields["action"] = ACTIONS[message_id]
    elif fields.get("action") == "denied":
        fields["action"] = "deny"
    elif fields.get("action") == "permitted":
        fields["action"] = "permit"
    return fields


def _swap(fields: dict[str, str]) -> dict[str, str]:
    swapped: dict[str, str] = {}
    for key, value in fields.items():
        if key.startswith("src_"):
            swapped["dst_" + key[4:]] = value
        elif key.startswith("dst_"):
            swapped["src_" + key[4:]] = value
        else:
            swapped[key] = value
    return swapped


class CiscoAsaParser:
    """Cisco ASA / FTD ``%ASA-n-NNNNNN`` syslog messages."""

    name: ClassVar[str] = "cisco_asa"

    def parse(self, raw: str | Mapping[str, Any], ctx: ParseContext) -> Event:
        line = text_line(raw, "Cisco ASA")
        tag = _TAG.search(line)
        if tag is None:
            raise ParseError(
                "no %ASA-<severity>-<message id> tag found",
                field="raw",
                hint="expected e.g. %ASA-4-106023: Deny tcp src outside:… dst inside:…",
            )
        header = split_syslog(line[: tag.start()], ctx.device_tz)
        text = line[tag.end() :]
        fields: dict[str, Any] = {
            "product": tag["product"],
            "severity": int(tag["severity"]),
            "message_id": tag["id"],
            "message": text,
            **message_fields(tag["id"], text),
        }
        if header.hostname:
            fields["hostname"] = header.hostname.rstrip(":")
        src, dst = fields.get("src_ip"), fields.get("dst_ip")
        host = internal_host(src, dst) if is_internal(src) or is_internal(dst) else None
        return Event(
            event_id=content_id(line),
            observed_at=header_time(header),
            source_format=SourceFormat.CISCO_ASA,
            fields=fields,
            host=host or fields.get("hostname"),
            raw=line,
        )

    def sniff(self, path: Path, head: bytes) -> bool:
        """A first line with a ``%ASA-n-NNNNNN`` (or FTD/PIX/FWSM) tag."""
        return _TAG.search(first_line(head)) is not None

    def read_file(self, path: Path) -> Iterator[RawRecord]:
        return read_lines(path, self.name)


register_parser(CiscoAsaParser())
