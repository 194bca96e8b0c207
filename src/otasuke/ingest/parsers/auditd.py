"""Linux auditd parser (監査ログ): ``type=… msg=audit(<epoch>:<serial>): key=value …``.

``fields`` keep auditd's names: ``type`` (SYSCALL, EXECVE, PATH, USER_LOGIN …), every
``key=value`` pair (quotes removed), the pairs inside a quoted ``msg='…'`` of user-space
records, and the enriched pairs (``AUID="alice"``, ``SYSCALL=execve``) that ``ausearch -i``
or ``log_format=ENRICHED`` append after a ``\\x1d``. Values auditd hex-encodes because they
may hold spaces or control characters (unquoted hex in ``proctitle``, EXECVE ``a0``…,
``name``, ``comm``, ``exe``, ``cwd``, ``key``, ``data``, ``cmd``, ``acct`` …) are decoded;
NULs (between ``proctitle`` arguments) become spaces. ``msg`` is ``audit(<epoch>:<serial>)``.

``observed_at`` is the epoch in ``msg``; ``record_id`` the serial (records of one event —
SYSCALL, EXECVE, PATH … — share it); ``host`` the ``node=`` prefix when present.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from otasuke.errors import ParseError
from otasuke.ingest.event import Event, SourceFormat, content_id
from otasuke.ingest.parsers import ParseContext, RawRecord, register_parser
from otasuke.ingest.parsers.jsonl import first_line, read_lines

FORMAT = SourceFormat.AUDITD
_HEADER = re.compile(
    r"^(?:node=(?P<node>\S+)\s+)?type=(?P<type>\S+)\s+msg=audit\((?P<time>[0-9.]+):(?P<serial>\d+)\):\s?"
)
_PAIR = re.compile(r"""([A-Za-z_][\w-]*)=("[^"]*"|'[^']*'|[^\s\x1d]*)""")
_HEX = re.compile(r"^(?:[0-9A-F]{2})+$")
ENCODED = frozenset(
    {"proctitle", "name", "comm", "exe", "cwd", "key", "data", "cmd", "acct", "path", "old", "new"}
)
"""Fields auditd writes as hex when the value holds a space, quote or control character."""
_EXECVE_ARG = re.compile(r"^a\d+(?:\[\d+\])?$")


def decode(name: str, value: str, record_type: str) -> str:
    """A value as auditd meant it: quotes removed, hex-encoded text decoded."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    encodable = name in ENCODED or (record_type == "EXECVE" and _EXECVE_ARG.match(name))
    if encodable and _HEX.match(value.upper()) and value != "(null)":
        try:
            text = bytes.fromhex(value).decode("utf-8", errors="replace")
        except ValueError:
            return value
        return text.replace("\x00", " ").strip()
    return value


def parse_line(line: str) -> tuple[re.Match[str], dict[str, Any]]:
    """The header match and the fields of one auditd line, or a ParseError."""
    header = _HEADER.match(line)
    if header is None:
        raise ParseError(
            "not an auditd record: expected 'type=… msg=audit(<epoch>:<serial>):'",
            field="raw",
            hint="send /var/log/audit/audit.log lines as they are",
        )
    record_type = header["type"]
    fields: dict[str, Any] = {
        "type": record_type,
        "msg": f"audit({header['time']}:{header['serial']})",
    }
    if header["node"]:
        fields["node"] = header["node"]
    for name, value in _PAIR.findall(line[header.end() :]):
        if name == "msg" and value[:1] == "'":
            for inner, inner_value in _PAIR.findall(value[1:-1]):
                fields.setdefault(inner, decode(inner, inner_value, record_type))
            continue
        fields[name] = decode(name, value, record_type)
    return header, fields


class AuditdParser:
    """Linux auditd lines (raw or enriched format)."""

    name: ClassVar[str] = "auditd"

    def parse(self, raw: str | Mapping[str, Any], ctx: ParseContext) -> Event:
        if not isinstance(raw, str):
            raise ParseError(
                f"record is a {type(raw).__name__}, not a text line",
                field="raw",
                hint="send auditd records as text lines",
            )
        text = raw.strip()
        header, fields = parse_line(text)
        try:
            observed_at = datetime.fromtimestamp(float(header["time"]), UTC)
        except (ValueError, OverflowError, OSError):
            raise ParseError(
                f"audit time {header['time']!r} is out of range", field="msg"
            ) from None
        return Event(
            event_id=content_id(text),
            observed_at=observed_at,
            source_format=FORMAT,
            fields=fields,
            host=header["node"] or None,
            record_id=int(header["serial"]),
            raw=text,
        )

    def sniff(self, path: Path, head: bytes) -> bool:
        """A first line that is an auditd record."""
        return _HEADER.match(first_line(head)) is not None

    def read_file(self, path: Path) -> Iterator[RawRecord]:
        return read_lines(path, self.name)


register_parser(AuditdParser())
