"""正規化イベント (normalised event): one record after parsing.

Every parser turns one raw record into an :class:`Event`. ``fields`` is a flat
mapping whose keys are the names detection rules use (Sigma field names for
Windows events: ``EventID``, ``Channel``, ``Image``, ``CommandLine`` …; the
source's own names elsewhere). Values are str, int, float, bool, None or a
list of those.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson

from otasuke.errors import ParseError


class SourceFormat(StrEnum):
    """The source formats the parser registry knows (the envelope's ``format``)."""

    EVTX = "evtx"
    SURICATA_EVE = "suricata_eve"
    FORTIGATE = "fortigate"
    JSONL = "jsonl"
    ZEEK = "zeek"
    AUDITD = "auditd"
    CEF = "cef"
    PALOALTO = "paloalto"
    CISCO_ASA = "cisco_asa"
    SONICWALL = "sonicwall"
    SOPHOS = "sophos"
    FILTERLOG = "filterlog"
    IPTABLES = "iptables"
    SSHD = "sshd"
    WINLOGBEAT = "winlogbeat"
    SYSLOG = "syslog"


@dataclass(frozen=True, slots=True)
class Event:
    """正規化イベント: one record after parsing; frozen, checked once."""

    event_id: str
    """Idempotency key: the sender's id, or a hash of the raw record."""
    observed_at: datetime
    """When the source says it happened; aware, UTC."""
    source_format: SourceFormat
    fields: Mapping[str, Any]
    host: str | None = None
    """The PC or device the event is about (Windows Computer, UTM devname, IDS dest …)."""
    record_id: int | None = None
    """Position in the source (EVTX EventRecordID), when it has one."""
    raw: str = field(default="", repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.observed_at.tzinfo is None or self.observed_at.utcoffset() != timedelta(0):
            raise ParseError("observed_at must be an aware UTC datetime", field="observed_at")


def content_id(raw: str | bytes | Mapping[str, Any]) -> str:
    """A stable id for a record without one: SHA-256 of its canonical bytes."""
    if isinstance(raw, Mapping):
        data = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)
    elif isinstance(raw, str):
        data = raw.encode("utf-8", "surrogatepass")
    else:
        data = raw
    return hashlib.sha256(data).hexdigest()[:32]


def utc(dt: datetime) -> datetime:
    """The same instant in UTC; a naive datetime is taken as UTC."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)
