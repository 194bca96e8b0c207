"""Parser registry: one module per source format (STYLE §4).

A parser turns one raw record (a text line or a JSON object) into an
:class:`~otasuke.ingest.event.Event`, or raises
:class:`~otasuke.errors.ParseError` naming the field and what was wrong. It never
raises anything else: the pipeline quarantines the record with the error.

A parser that also reads whole files (``otasuke import``) implements
``sniff`` and ``read_file``.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Protocol, cast
from zoneinfo import ZoneInfo

from otasuke.errors import OtasukeError, ParseError
from otasuke.ingest.event import Event


@dataclass(frozen=True, slots=True)
class ParseContext:
    """What a parser may know about where a record came from."""

    sensor: str = "-"
    """Sensor name (for error messages)."""
    device_tz: ZoneInfo = ZoneInfo("Asia/Tokyo")  # noqa: RUF009 (immutable, shared on purpose)
    """Time zone of timestamps that carry no offset (Japanese UTMs log JST)."""


class RawRecord(NamedTuple):
    """One record read from a file, before parsing (a named tuple: one per record, made
    in the hot loop of ``otasuke detect``, where a frozen dataclass cost ~0.5 µs more)."""

    format: str
    raw: str | Mapping[str, Any]
    location: str
    """``file:line`` or ``file#record`` for messages."""


class Parser(Protocol):
    """Parses one raw record of one source format."""

    name: ClassVar[str]

    def parse(self, raw: str | Mapping[str, Any], ctx: ParseContext) -> Event: ...


class FileParser(Parser, Protocol):
    """A parser that can also recognise and read files of its format."""

    def sniff(self, path: Path, head: bytes) -> bool: ...

    def read_file(self, path: Path) -> Iterator[RawRecord]: ...


PARSERS: dict[str, Parser] = {}


class RegistryError(OtasukeError):
    """A plugin registry was used wrongly."""


def register_parser(parser: Parser) -> Parser:
    """Add a parser under its ``name``; a second one with the same name is an error."""
    if parser.name in PARSERS:
        raise RegistryError(f"parser {parser.name!r} registered twice", hint="rename one")
    PARSERS[parser.name] = parser
    return parser


def get_parser(name: str) -> Parser:
    """The parser for an envelope's ``format``, or a ParseError listing the known ones."""
    _load_builtin()
    try:
        return PARSERS[name]
    except KeyError:
        known = ", ".join(sorted(PARSERS))
        raise ParseError(
            f"unknown format {name!r}", field="format", hint=f"use one of: {known}"
        ) from None


def file_parsers() -> list[FileParser]:
    """The registered parsers that read files, in sniffing order."""
    return list(_file_parsers())


def _file_parsers() -> tuple[FileParser, ...]:
    """:func:`file_parsers`, kept until the registry changes (asked once per file)."""
    _load_builtin()
    known = _FILE_PARSERS.get(len(PARSERS))
    if known is None:
        _FILE_PARSERS.clear()
        known = _FILE_PARSERS[len(PARSERS)] = tuple(
            cast(FileParser, p)
            for p in PARSERS.values()
            if hasattr(p, "sniff") and hasattr(p, "read_file")
        )
    return known


_FILE_PARSERS: dict[int, tuple[FileParser, ...]] = {}
"""The file parsers by the registry's size (parsers are only ever added)."""


def parser_for_file(path: Path) -> FileParser:
    """The parser that recognises this file, or a ParseError saying what is supported."""
    descriptor = os.open(path, os.O_RDONLY)  # no buffered file object: one read of the head
    try:
        head = os.read(descriptor, 4096)
    finally:
        os.close(descriptor)
    for parser in _file_parsers():
        if parser.sniff(path, head):
            return parser
    known = ", ".join(sorted(p.name for p in file_parsers()))
    raise ParseError(
        "file format not recognised", source=str(path), hint=f"supported formats: {known}"
    )


_loaded = False
_load_lock = threading.RLock()  # re-entrant: a parser module may call get_parser on import

BUILTIN_ORDER = (
    "evtx",
    "winjson",  # before jsonl: Winlogbeat writes .ndjson
    "suricata",
    "zeek",
    "auditd",
    "cef",
    "paloalto",
    "ciscoasa",
    "sonicwall",
    "sophos",  # before fortigate, whose sniff would claim Sophos XG's key=value lines
    "fortigate",
    "filterlog",
    "iptables",
    "sshd",
    "jsonl",
    "syslog_text",  # last: the fallback that keeps unknown syslog text instead of refusing it
)
"""Registration order, which is the order files are sniffed in: specific formats first."""


def _load_builtin() -> None:
    """Import the built-in parsers once; concurrent first callers wait for the whole set.

    The flag is set only after every module registered itself: set before, a second
    request thread saw a half-filled registry and quarantined its lines as "unknown format".
    """
    global _loaded
    if _loaded:
        return
    with _load_lock:
        if _loaded:
            return
        for module in BUILTIN_ORDER:
            importlib.import_module(f"otasuke.ingest.parsers.{module}")
        _loaded = True
