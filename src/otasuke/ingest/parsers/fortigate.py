"""FortiGate syslog parser (UTM ログ): ``key=value`` lines, FortiOS 3.x to 7.x.

A line may start with a ``<PRI>`` prefix and a syslog header; the record starts at
the first ``key=value`` token (``date=…`` on FortiOS, ``logver=…``/``itime=…`` when
forwarded by FortiAnalyzer). Values may be quoted (``msg="a \\"b\\" c"``; ``\\"`` and
``\\\\`` are unescaped). A truncated line (syslog relays cut at 1 KiB) keeps its
unterminated last value. A bare word after an unquoted value continues it (FortiOS 3
wrote ``time=10: 13:03``); bare words after a quoted value go to ``_text``.

``fields`` are the pairs as strings under FortiGate's own names (``type``,
``subtype``, ``level``, ``action``, ``srcip``, ``dstip``, ``devname``, ``attack``,
``virus``, ``url``, ``hostname`` …).

``observed_at``: ``date`` + ``time`` in ``tz`` (``+0900``) or, without it, the
sensor's ``device_tz`` (Japanese UTMs log JST). When ``eventtime`` (or ``logtime``)
is present — epoch s/ms/µs/ns, unambiguous and more precise — and within 26 hours
of that reading (any time-zone error), it wins; a line with only ``eventtime``
uses it.

``host`` is the PC concerned (社内端末), since that is what the customer must act on:
the internal side of the traffic (``srcname`` when FortiGate knows the source PC's name,
else the private address among ``srcip``/``dstip``); for logs about the UTM itself
(VPN logins, system events) it is ``devname`` (``devid`` without it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any, ClassVar

from otasuke.errors import ParseError
from otasuke.ingest.event import Event, SourceFormat, content_id
from otasuke.ingest.netaddr import internal_host, is_internal
from otasuke.ingest.parsers import ParseContext, RawRecord, register_parser
from otasuke.ingest.parsers.jsonl import first_line, from_epoch, read_lines

_PRI = re.compile(r"<[0-9]{1,3}>")
_KEY = re.compile(r"[A-Za-z_][\w.-]*=")
_DATE = re.compile(r"([0-9]{4})[-/]([0-9]{1,2})[-/]([0-9]{1,2})")
_TIME = re.compile(r"([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})")
_OFFSET = re.compile(r"(?:UTC|GMT)?([+-])([0-9]{2}):?([0-9]{2})")
EPOCH_KEYS = ("eventtime", "logtime")
MAX_SKEW = timedelta(hours=26)


def split_pairs(line: str) -> dict[str, str]:
    """The ``key=value`` pairs of a FortiGate line after any syslog header."""
    start = _body_start(line)
    if start is None:
        raise ParseError(
            "no key=value pairs found",
            field="raw",
            hint="expected a FortiGate syslog line such as: date=2024-04-01 time=09:30:00 "
            "devname=FGT60F type=traffic …",
        )
    pairs: dict[str, str] = {}
    extra: list[str] = []
    last: str | None = None
    last_quoted = False
    pos, end = start, len(line)
    while pos < end:
        while pos < end and line[pos].isspace():
            pos += 1
        if pos >= end:
            break
        match = _KEY.match(line, pos)
        if match is None:  # a bare word
            word_end = _word_end(line, pos)
            word = line[pos:word_end]
            if last is not None and not last_quoted:
                pairs[last] = f"{pairs[last]} {word}"
            else:
                extra.append(word)
            pos = word_end
            continue
        key = match.group()[:-1]
        pos = match.end()
        if pos < end and line[pos] == '"':
            value, pos = _quoted(line, pos + 1)
            last_quoted = True
        else:
            word_end = _word_end(line, pos)
            value, pos = line[pos:word_end], word_end
            last_quoted = False
        pairs[key] = value
        last = key
    if extra:
        pairs["_text"] = " ".join(extra)
    return pairs


def _body_start(line: str) -> int | None:
    pri = _PRI.match(line)
    pos = pri.end() if pri else 0
    for match in re.finditer(r"\S+", line[pos:]):
        if _KEY.match(match.group()):
            return pos + match.start()
    return None


def _word_end(line: str, pos: int) -> int:
    end = len(line)
    while pos < end and not line[pos].isspace():
        pos += 1
    return pos


def _quoted(line: str, pos: int) -> tuple[str, int]:
    """Value up to the closing quote (``\\"`` and ``\\\\`` unescaped) and the next position."""
    chars: list[str] = []
    end = len(line)
    while pos < end:
        char = line[pos]
        if char == "\\" and pos + 1 < end and line[pos + 1] in '"\\':
            chars.append(line[pos + 1])
            pos += 2
        elif char == '"':
            return "".join(chars), pos + 1
        else:
            chars.append(char)
            pos += 1
    return "".join(chars), pos  # truncated line: keep what is there


def observed_at(pairs: Mapping[str, str], device_tz: tzinfo) -> datetime:
    """When the UTM logged the record, in UTC (see the module docstring)."""
    local = _date_time(pairs, device_tz)
    for key in EPOCH_KEYS:
        text = pairs.get(key, "").strip()
        if text.isascii() and text.isdigit() and len(text) <= 20:
            precise = from_epoch(int(text), key)
            if local is None or abs(precise - local) <= MAX_SKEW:
                return precise
    if local is None:
        missing = "date" if "date" not in pairs else "time"
        raise ParseError(
            f"{missing} is missing",
            field=missing,
            hint="FortiGate writes date=YYYY-MM-DD time=HH:MM:SS; check the syslog format "
            "is 'default' (CEF is not read by this parser)",
        )
    return local


def _date_time(pairs: Mapping[str, str], device_tz: tzinfo) -> datetime | None:
    if "date" not in pairs or "time" not in pairs:
        return None
    date = _DATE.fullmatch(pairs["date"].strip())
    if date is None:
        raise ParseError(
            f"date {pairs['date']!r} is not YYYY-MM-DD", field="date", hint="e.g. date=2024-04-01"
        )
    clock = _TIME.fullmatch(re.sub(r"\s+", "", pairs["time"]))
    if clock is None:
        raise ParseError(
            f"time {pairs['time']!r} is not HH:MM:SS", field="time", hint="e.g. time=09:30:00"
        )
    zone = _offset(pairs.get("tz", "")) or device_tz
    try:
        year, month, day = map(int, date.groups())
        hour, minute, second = map(int, clock.groups())
        local = datetime(year, month, day, hour, minute, second, tzinfo=zone)
        return local.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ParseError(
            f"date {pairs['date']!r} time {pairs['time']!r} is not a valid moment",
            field="date",
            hint="check the UTM's clock",
        ) from None


def _offset(text: str) -> timezone | None:
    match = _OFFSET.fullmatch(text.strip())
    if match is None:
        return None  # absent, or an abbreviation such as "JST": use device_tz
    sign, hours, minutes = match.groups()
    if int(hours) > 23 or int(minutes) > 59:
        return None
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    return timezone(-delta if sign == "-" else delta)


def _host(pairs: dict[str, str]) -> str | None:
    src, dst = pairs.get("srcip"), pairs.get("dstip")
    if is_internal(src) and pairs.get("srcname"):
        return pairs["srcname"]
    if is_internal(src) or is_internal(dst):
        return internal_host(src, dst)
    return pairs.get("devname") or pairs.get("devid") or pairs.get("device_id") or None


class FortiGateParser:
    """FortiGate ``key=value`` syslog (traffic, event, utm: ips/virus/webfilter …)."""

    name: ClassVar[str] = "fortigate"

    def parse(self, raw: str | Mapping[str, Any], ctx: ParseContext) -> Event:
        if not isinstance(raw, str):
            raise ParseError(
                "FortiGate records are text lines",
                field="raw",
                hint="send the syslog line as it came from the UTM",
            )
        line = raw.strip()
        if "CEF:" in line[:200] and "|" in line:
            raise ParseError(
                "CEF is not read by the fortigate parser",
                field="raw",
                hint="set the FortiGate syslog format to 'default' (key=value)",
            )
        pairs = split_pairs(line)
        when = observed_at(pairs, ctx.device_tz)
        host = _host(pairs)
        return Event(
            event_id=content_id(line),
            observed_at=when,
            source_format=SourceFormat.FORTIGATE,
            fields=pairs,
            host=host,
            raw=line,
        )

    def sniff(self, path: Path, head: bytes) -> bool:
        """Text whose first line has ``date=`` and ``devname=`` or ``type=``."""
        line = first_line(head)
        if line.startswith("{"):
            return False
        return "date=" in line and ("devname=" in line or "type=" in line)

    def read_file(self, path: Path) -> Iterator[RawRecord]:
        return read_lines(path, self.name)


register_parser(FortiGateParser())
