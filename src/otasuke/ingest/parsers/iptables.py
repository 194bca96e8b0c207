"""iptables / netfilter parser: kernel ``LOG`` lines (firewalld, UFW, OpenWrt, SuSEfirewall).

``[header] kernel: [uptime] <prefix> IN=eth0 OUT= MAC=… SRC=… DST=… LEN=… PROTO=TCP
SPT=… DPT=… … SYN URGP=0``. ``fields`` keep the kernel's names (``IN``, ``OUT``,
``MAC``, ``SRC``, ``DST``, ``PROTO``, ``SPT``, ``DPT``, ``TTL`` …; a key logged twice,
such as ``LEN`` of IP and UDP, keeps its first value); bare flags (``SYN``, ``ACK``,
``DF`` …) go to ``flags`` as one space-separated string; ``prefix`` is the rule's log
prefix (``[UFW BLOCK]``, ``FINAL_REJECT:``, ``DROP(src wan)`` …), ``uptime`` the
kernel's ``[seconds]``. ``action`` is ``block`` when the prefix says DROP, BLOCK,
REJECT or DENY, ``allow`` when it says ACCEPT or ALLOW, absent otherwise.

A line needs ``SRC=``, ``DST=`` and ``PROTO=``. ``observed_at``: the syslog header
(``device_tz``; the current year, or the previous one), else now. ``host``: the
internal side of the packet, else the logging machine's host name.
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

REQUIRED = ("SRC", "DST", "PROTO")
_UPTIME = re.compile(r"\s*\[\s*([0-9]+\.[0-9]+)\]\s*")
_FIRST_KEY = re.compile(r"(?:IN|OUT|PHYSIN|PHYSOUT|MAC|SRC)=")
_TOKEN = re.compile(r"([A-Z][A-Z0-9_]*)=(\S*)|(\S+)")
_BLOCK = re.compile(r"DROP|BLOCK|REJECT|DENY", re.IGNORECASE)
_ALLOW = re.compile(r"ACCEPT|ALLOW", re.IGNORECASE)
_SNIFF = re.compile(r"\bSRC=\S+ DST=\S+ .*\bPROTO=")


def netfilter_fields(msg: str) -> dict[str, str]:
    """The fields of one kernel LOG message (see the module docstring)."""
    fields: dict[str, str] = {}
    uptime = _UPTIME.match(msg)
    if uptime is not None:
        fields["uptime"] = uptime.group(1)
        msg = msg[uptime.end() :]
    first = _FIRST_KEY.search(msg)
    if first is None:
        raise ParseError(
            "no IN=/OUT=/SRC= found",
            field="SRC",
            hint="expected a netfilter LOG line: IN=eth0 OUT= SRC=… DST=… PROTO=…",
        )
    prefix = msg[: first.start()].strip()
    if prefix:
        fields["prefix"] = prefix
    flags: list[str] = []
    for key, value, bare in _TOKEN.findall(msg[first.start() :]):
        if bare:
            flags.append(bare)
        else:
            fields.setdefault(key, value)
    if flags:
        fields["flags"] = " ".join(flags)
    missing = [key for key in REQUIRED if not fields.get(key)]
    if missing:
        raise ParseError(
            f"{missing[0]}= is missing or empty",
            field=missing[0],
            hint="a netfilter LOG line has SRC=, DST= and PROTO=",
        )
    if prefix and _BLOCK.search(prefix):
        fields["action"] = "block"
    elif prefix and _ALLOW.search(prefix):
        fields["action"] = "allow"
    return fields


class IptablesParser:
    """Linux netfilter (iptables, nftables, firewalld, UFW) kernel LOG lines."""

    name: ClassVar[str] = "iptables"

    def parse(self, raw: str | Mapping[str, Any], ctx: ParseContext) -> Event:
        line = text_line(raw, "iptables")
        header = split_syslog(line, ctx.device_tz)
        fields = netfilter_fields(header.msg)
        return packet_event(line, header, fields, SourceFormat.IPTABLES, "SRC", "DST")

    def sniff(self, path: Path, head: bytes) -> bool:
        """A first line with ``SRC=… DST=… … PROTO=``."""
        return _SNIFF.search(first_line(head)) is not None

    def read_file(self, path: Path) -> Iterator[RawRecord]:
        return read_lines(path, self.name)


register_parser(IptablesParser())
