"""汎用 syslog parser: any RFC 3164 / RFC 5424 text line, the fallback of the registry.

A line no specific parser reads is still stored (and counted), not quarantined:
``fields`` are ``app``, ``pid``, ``msg``, ``hostname``, ``facility``, ``severity``
(numbers from ``<PRI>``; absent parts are None) and ``header`` (``rfc5424``,
``rfc3164`` or ``none``). Registered last; ``sniff`` also declines any file another
file parser recognises, so it never takes a file from a specific parser.

:func:`split_syslog` is the header reader the other syslog parsers share:

- RFC 5424 ``<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD…] MSG`` (``-`` is empty);
- RFC 3164 ``[<PRI>]Mmm dd [yyyy] hh:mm:ss[.fff][:] [HOST] [TAG[pid]:] MSG``, and the
  same with an ISO 8601 time (``2020-03-23T06:47:42.8+01:00`` or with a space and
  ``-0700``, as rsyslog and macOS write).

Times without an offset are read in the sensor's ``device_tz`` (Japanese devices log
JST); a time without a year takes the current year, or the previous year when that
would put it more than a day in the future. A header time that is no valid moment
(``May 00``, anonymised samples) is kept as ``bad_time``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any, ClassVar

from otasuke.errors import ParseError
from otasuke.ingest.event import Event, SourceFormat, content_id
from otasuke.ingest.netaddr import internal_host, is_internal
from otasuke.ingest.parsers import ParseContext, RawRecord, file_parsers, register_parser
from otasuke.ingest.parsers.jsonl import first_line, read_lines

MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
FUTURE_SLACK = timedelta(days=1)
_PRI = re.compile(r"<([0-9]{1,3})>")
_BSD = re.compile(
    r"(?P<mon>[A-Za-z]{3})\s+(?P<day>[0-9]{1,2})(?:\s+(?P<year>[0-9]{4}))?\s+"
    r"(?P<h>[0-9]{1,2}):(?P<m>[0-9]{2}):(?P<s>[0-9]{2})(?:\.(?P<frac>[0-9]{1,9}))?:?(?:\s+|$)"
)
_ISO = re.compile(
    r"(?P<year>[0-9]{4})-(?P<mon>[0-9]{2})-(?P<day>[0-9]{2})[T ]"
    r"(?P<h>[0-9]{2}):(?P<m>[0-9]{2}):(?P<s>[0-9]{2})(?:[.,](?P<frac>[0-9]{1,9}))?"
    r"\s?(?P<tz>Z|[+-][0-9]{2}(?::?[0-9]{2})?)?:?(?:\s+|$)"
)
_TAG = re.compile(r"(?P<app>[^\s:\[\]=%]{1,64})(?:\[(?P<pid>[^\]\s]*)\])?:(?:\s+|$)")


@dataclass(frozen=True, slots=True)
class SyslogLine:
    """One syslog line split into its header parts and the message."""

    msg: str
    timestamp: datetime | None = None
    """Aware UTC; None when the line has no (valid) header time."""
    hostname: str | None = None
    app: str | None = None
    pid: str | None = None
    facility: int | None = None
    severity: int | None = None
    header: str = "none"
    bad_time: str | None = None
    """The header's time text when it is no valid moment."""


def split_syslog(line: str, tz: tzinfo, now: datetime | None = None) -> SyslogLine:
    """Read the header of one syslog line; never raises."""
    text = line.strip()
    facility = severity = None
    pri = _PRI.match(text)
    if pri and int(pri.group(1)) < 192:
        facility, severity = int(pri.group(1)) >> 3, int(pri.group(1)) & 7
        text = text[pri.end() :].lstrip()
    if pri and text.startswith("1 "):
        parsed = _rfc5424(text[2:], facility, severity)
        if parsed is not None:
            return parsed
    stamp, bad, rest = _header_time(text, tz, now or datetime.now(UTC))
    if stamp is None and bad is None:
        return SyslogLine(text, facility=facility, severity=severity)
    host: str | None = None
    tag = _TAG.match(rest)
    if tag is None:
        word, _, tail = rest.partition(" ")
        if word and "=" not in word and not word.startswith(("%", "[")):
            host, rest = word, tail.lstrip()
            tag = _TAG.match(rest)
    app = pid = None
    if tag is not None:
        app, pid, rest = tag["app"], tag["pid"] or None, rest[tag.end() :]
    return SyslogLine(rest, stamp, host, app, pid, facility, severity, "rfc3164", bad)


def _rfc5424(text: str, facility: int | None, severity: int | None) -> SyslogLine | None:
    parts = text.split(" ", 5)
    if len(parts) < 5:
        return None
    stamp: datetime | None = None
    if parts[0] != "-":
        try:
            stamp = datetime.fromisoformat(parts[0].replace("z", "Z"))
            stamp = stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp
            stamp = stamp.astimezone(UTC)
        except (ValueError, OverflowError):
            return None
    host, app, pid = (None if p == "-" else p for p in parts[1:4])
    msg = _skip_structured_data(parts[5] if len(parts) > 5 else "").removeprefix("\ufeff")
    return SyslogLine(msg, stamp, host, app, pid, facility, severity, "rfc5424")


def _skip_structured_data(rest: str) -> str:
    if rest.startswith("-"):
        return rest[1:].lstrip(" ")
    pos, end = 0, len(rest)
    while pos < end and rest[pos] == "[":
        quoted = False
        pos += 1
        while pos < end and (quoted or rest[pos] != "]"):
            if quoted and rest[pos] == "\\":
                pos += 1
            elif rest[pos] == '"':
                quoted = not quoted
            pos += 1
        pos += 1
    return rest[pos:].lstrip(" ")


def _header_time(text: str, tz: tzinfo, now: datetime) -> tuple[datetime | None, str | None, str]:
    """(UTC time, bad time text, rest) of a line starting with a BSD or ISO time."""
    match = _BSD.match(text)
    if match is not None and match["mon"].lower() in MONTHS:
        rest = text[match.end() :]
        stamp = _bsd_moment(match, tz, now)
        return (stamp, None, rest) if stamp else (None, match.group().strip(), rest)
    match = _ISO.match(text)
    if match is not None:
        rest = text[match.end() :]
        zone = offset_zone(match["tz"]) if match["tz"] else tz
        stamp = _moment(int(match["year"]), int(match["mon"]), match, zone)
        return (stamp, None, rest) if stamp else (None, match.group().strip(), rest)
    return None, None, text


def _bsd_moment(match: re.Match[str], tz: tzinfo, now: datetime) -> datetime | None:
    month = MONTHS[match["mon"].lower()]
    if match["year"]:
        return _moment(int(match["year"]), month, match, tz)
    this_year = now.astimezone(tz).year
    for year in range(this_year, this_year - 5, -1):  # Feb 29 looks back to a leap year
        stamp = _moment(year, month, match, tz)
        if stamp is not None and stamp <= now + FUTURE_SLACK:
            return stamp
    return None


def _moment(year: int, month: int, match: re.Match[str], zone: tzinfo | None) -> datetime | None:
    if zone is None:
        return None
    micro = int((match["frac"] or "0")[:6].ljust(6, "0"))
    try:
        local = datetime(
            year, month, int(match["day"]), int(match["h"]), int(match["m"]), int(match["s"]), micro
        )
        return local.replace(tzinfo=zone).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def civil_time(parts: Sequence[str], zone: tzinfo) -> datetime | None:
    """Year, month, day, hour, minute, second (digit strings) in ``zone`` → UTC, or None."""
    try:
        year, month, day, hour, minute, second = (int(part) for part in parts[:6])
        return datetime(year, month, day, hour, minute, second, tzinfo=zone).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def offset_zone(text: str) -> timezone | None:
    """``Z``, ``+09``, ``+0900`` or ``+09:00`` → a fixed zone; None if out of range."""
    if text in ("Z", "z"):
        return UTC
    digits = text[1:].replace(":", "")
    if not digits.isdigit() or len(digits) not in (2, 4):
        return None
    hours, minutes = int(digits[:2]), int(digits[2:] or "0")
    if hours > 23 or minutes > 59:
        return None
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if text[0] == "-" else delta)


def text_line(raw: str | Mapping[str, Any], what: str) -> str:
    """The raw record as a stripped, non-empty text line, or a ParseError."""
    if not isinstance(raw, str):
        raise ParseError(
            f"{what} records are text lines",
            field="raw",
            hint="send the syslog line as it came from the device",
        )
    line = raw.strip()
    if not line:
        raise ParseError("empty line", field="raw", hint=f"send one {what} line per record")
    return line


def packet_event(
    line: str,
    header: SyslogLine,
    fields: dict[str, Any],
    source_format: SourceFormat,
    src_key: str,
    dst_key: str,
) -> Event:
    """A firewall's packet log line as an Event: the office side of the packet is the host."""
    if header.hostname:
        fields["hostname"] = header.hostname
    src, dst = fields.get(src_key), fields.get(dst_key)
    host = internal_host(src, dst) if is_internal(src) or is_internal(dst) else None
    return Event(
        event_id=content_id(line),
        observed_at=header_time(header),
        source_format=source_format,
        fields=fields,
        host=host or header.hostname,
        raw=line,
    )


def header_time(header: SyslogLine, body_time: datetime | None = None) -> datetime:
    """The record's time: the body's own when given, else the header's, else now.

    A record without any time (the syslog receiver passes only the MSG) is stamped
    with the current time; a header time that is no valid moment is a ParseError.
    """
    if body_time is not None:
        return body_time
    if header.bad_time is not None:
        raise ParseError(
            f"syslog time {header.bad_time!r} is not a valid moment",
            field="timestamp",
            hint="check the device's clock and syslog time format",
        )
    return header.timestamp or datetime.now(UTC)


def has_header(line: str) -> bool:
    """The line starts with a syslog header (PRI, RFC 5424 version or a time)."""
    parsed = split_syslog(line, UTC)
    return parsed.header != "none" or parsed.facility is not None


class SyslogTextParser:
    """Any syslog text line (RFC 3164/5424): stored with its header parts."""

    name: ClassVar[str] = "syslog"

    def parse(self, raw: str | Mapping[str, Any], ctx: ParseContext) -> Event:
        line = text_line(raw, "syslog")
        header = split_syslog(line, ctx.device_tz)
        fields: dict[str, Any] = {
            "app": header.app,
            "pid": header.pid,
            "msg": header.msg,
            "hostname": header.hostname,
            "facility": header.facility,
            "severity": header.severity,
            "header": header.header,
        }
        if header.bad_time is not None:
            fields["bad_time"] = header.bad_time  # stored all the same: this is the fallback
        return Event(
            event_id=content_id(line),
            observed_at=header.timestamp or datetime.now(UTC),
            source_format=SourceFormat.SYSLOG,
            fields=fields,
            host=header.hostname,
            raw=line,
        )

    def sniff(self, path: Path, head: bytes) -> bool:
        """A syslog header on the first line, and no other file parser wants the file."""
        line = first_line(head)
        if not line or line.startswith("{") or not has_header(line):
            return False
        return not any(p.sniff(path, head) for p in file_parsers() if p.name != self.name)

    def read_file(self, path: Path) -> Iterator[RawRecord]:
        return read_lines(path, self.name)


register_parser(SyslogTextParser())
