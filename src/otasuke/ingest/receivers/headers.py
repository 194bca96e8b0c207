"""Syslog headers: RFC 5424 and RFC 3164 (BSD) → (timestamp, hostname, app, msg).

Devices are loose about both, so the parser is forgiving and never fails: what
it cannot read as a header stays in ``msg``.

- RFC 5424: ``<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD…] MSG`` (``-`` is empty;
  structured data is skipped, a UTF-8 BOM before MSG removed).
- RFC 3164: ``<PRI>Mmm dd hh:mm:ss HOST TAG[pid]: MSG``; also with the year
  (``Mmm dd yyyy hh:mm:ss``), with an RFC 3339 time (rsyslog), or without host.
  The time has no zone and no year: it is read in the sensor's zone, in the year
  that puts it not more than a day in the future.
- No header at all: FortiGate sends ``<189>date=2026-11-24 time=10:00:00 devname=…``;
  everything after ``<PRI>`` is the MSG (the ``key=value`` line the parser reads).

Bytes are UTF-8; a line that is not valid UTF-8 is read as CP932 (Shift_JIS, still
used by some Japanese devices), and failing that with replacement characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

_PRI = re.compile(r"<([0-9]{1,3})>")
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1
    )
}
_BSD_TIME = re.compile(
    r"(?P<mon>[A-Z][a-z]{2}) {1,2}(?P<day>[0-9]{1,2})(?: (?P<year>[0-9]{4}))? "
    r"(?P<h>[0-9]{2}):(?P<m>[0-9]{2}):(?P<s>[0-9]{2})(?:\.[0-9]+)?(?: |$)"
)
_ISO_TIME = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+(?:Z|[+-][0-9]{2}:?[0-9]{2})?)(?: |$)")
_TAG = re.compile(r"([^\s:\[\]]{1,64})(?:\[[^\]\s]*\])?: ?")
BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class SyslogMessage:
    """One syslog message after its header was read."""

    msg: str
    timestamp: datetime | None = None
    """Aware UTC; None when the header has no time."""
    hostname: str | None = None
    app: str | None = None
    """RFC 5424 APP-NAME, or the RFC 3164 TAG without ``[pid]``."""
    facility: int | None = None
    severity: int | None = None
    header: str = "none"
    """Which header was found: ``rfc5424``, ``rfc3164`` or ``none``."""


def decode(line: bytes) -> str:
    """UTF-8, else CP932 (Shift_JIS), else UTF-8 with replacement characters."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return line.decode("cp932")
    except UnicodeDecodeError:
        return line.decode("utf-8", "replace")


def parse_syslog(
    line: bytes | str, *, tz: tzinfo = UTC, now: datetime | None = None
) -> SyslogMessage:
    """Read the header of one syslog line; never raises."""
    text = decode(line) if isinstance(line, bytes) else line
    text = text.rstrip("\r\n\x00")
    facility = severity = None
    match = _PRI.match(text)
    if match and int(match.group(1)) < 192:
        pri = int(match.group(1))
        facility, severity = pri >> 3, pri & 7
        text = text[match.end() :]
    if text.startswith("1 "):
        parsed = _rfc5424(text[2:])
        if parsed is not None:
            return SyslogMessage(parsed[3], *parsed[:3], facility, severity, "rfc5424")
    ts, rest = _bsd_time(text, tz, now or datetime.now(UTC))
    if ts is None:
        return SyslogMessage(text, None, None, None, facility, severity)
    host: str | None = None
    head, _, tail = rest.partition(" ")
    if head and not _TAG.fullmatch(head + " ") and "=" not in head:
        host, rest = head, tail
    app = None
    tag = _TAG.match(rest)
    if tag and "=" not in tag.group(1):
        app, rest = tag.group(1), rest[tag.end() :]
    return SyslogMessage(rest, ts, host, app, facility, severity, "rfc3164")


def _nil(value: str) -> str | None:
    return None if value == "-" else value


def _rfc5424(text: str) -> tuple[datetime | None, str | None, str | None, str] | None:
    parts = text.split(" ", 5)
    if len(parts) < 5:
        return None
    stamp, host, app = parts[0], parts[1], parts[2]
    ts: datetime | None = None
    if stamp != "-":
        try:
            ts = datetime.fromisoformat(stamp)
        except ValueError:
            return None
        ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    rest = parts[5] if len(parts) > 5 else ""
    msg = _skip_structured_data(rest)
    if msg.startswith(BOM):
        msg = msg[1:]
    return ts, _nil(host), _nil(app), msg


def _skip_structured_data(rest: str) -> str:
    """The MSG after STRUCTURED-DATA (``-`` or ``[id k="v"]…``)."""
    if rest.startswith("-"):
        return rest[2:] if rest.startswith("- ") else rest[1:]
    pos = 0
    while pos < len(rest) and rest[pos] == "[":
        quoted = False
        pos += 1
        while pos < len(rest):
            ch = rest[pos]
            if quoted and ch == "\\":
                pos += 2
                continue
            if ch == '"':
                quoted = not quoted
            elif ch == "]" and not quoted:
                break
            pos += 1
        pos += 1
    if pos == 0:
        return rest  # no SD: treat all as MSG
    return rest[pos + 1 :] if rest[pos : pos + 1] == " " else rest[pos:]


def _bsd_time(text: str, tz: tzinfo, now: datetime) -> tuple[datetime | None, str]:
    match = _BSD_TIME.match(text)
    if match is not None:
        month = _MONTHS.get(match["mon"])
        if month is None:
            return None, text
        year = int(match["year"]) if match["year"] else now.astimezone(tz).year
        try:
            local = datetime(
                year, month, int(match["day"]), int(match["h"]), int(match["m"]), int(match["s"])
            )
        except ValueError:
            return None, text
        try:
            ts = local.replace(tzinfo=tz).astimezone(UTC)
            if not match["year"] and ts > now + timedelta(days=1):
                # Last year's stamp; 29 February steps back to the last leap year.
                back = year - 1
                while True:
                    try:
                        ts = local.replace(year=back, tzinfo=tz).astimezone(UTC)
                        break
                    except ValueError:
                        back -= 1
        except OverflowError:  # year 1 with a positive offset: no time, the text stays
            return None, text
        return ts, text[match.end() :]
    match = _ISO_TIME.match(text)
    if match is not None:
        try:
            parsed = datetime.fromisoformat(match.group(1))
        except ValueError:
            return None, text
        ts = parsed.replace(tzinfo=tz) if parsed.tzinfo is None else parsed
        return ts.astimezone(UTC), text[match.end() :]
    return None, text
