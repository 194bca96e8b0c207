"""OpenSSH server parser (sshd): logins, failures, invalid users, disconnects.

``[header] sshd[pid]: <message>`` (also ``sshd-session``, and the bare message the
syslog receiver passes on). ``fields``: ``app``, ``pid``, ``hostname``, ``msg`` and,
for the messages below, ``event``, ``outcome`` (success/failure for authentication),
``user``, ``invalid_user`` (true when sshd says the account does not exist),
``method`` (password, publickey, keyboard-interactive/pam, none), ``src_ip``,
``src_port``, ``reason``:

==================  ===========================================================
event               message
==================  ===========================================================
accepted            Accepted <method> for <user> from <ip> port <n>
failed              Failed <method> for [invalid user ]<user> from <ip> port <n>
invalid_user        Invalid user <user> from <ip> [port <n>]
not_allowed         User <user> from <ip> not allowed because <reason>
max_auth_exceeded   error: maximum authentication attempts exceeded for …
pam_auth_failure    error: PAM: <reason> for [illegal user ]<user> from <ip>
disconnected        Disconnected from [authenticating|invalid] user <user> <ip> port <n>
connection_closed   Connection closed|reset by [authenticating|invalid user <user>] <ip> port <n>
no_identification   Did not receive identification string from <ip> [port <n>]
negotiation_failed  Unable to negotiate with <ip> [port <n>]: <reason>
bad_protocol        Bad protocol version identification '…' from <ip> port <n>
break_in_attempt    Address <ip> maps to …, but this does not map back … / reverse mapping …
==================  ===========================================================

Any other sshd message is kept with ``event`` ``other``. A line from another program
is refused. ``observed_at``: the syslog header (``device_tz``), else now. ``host``:
the SSH server (the header's hostname): the customer's machine being logged in to.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from otasuke.errors import ParseError
from otasuke.ingest.event import Event, SourceFormat, content_id
from otasuke.ingest.parsers import ParseContext, RawRecord, register_parser
from otasuke.ingest.parsers.jsonl import first_line, read_lines
from otasuke.ingest.parsers.syslog_text import header_time, split_syslog, text_line

APPS = frozenset({"sshd", "sshd-session", "sshd-auth"})
_IP = r"(?P<src_ip>[0-9A-Fa-f:.]+|\S+)"
_PORT = r"(?: port (?P<src_port>\d+))?"
_WHO = r"(?:(?P<invalid>invalid |illegal )user )?(?P<user>\S*?)"
MESSAGES: tuple[tuple[str, str | None, re.Pattern[str]], ...] = (
    (
        "accepted",
        "success",
        re.compile(rf"Accepted (?P<method>\S+) for (?P<user>\S+) from {_IP}{_PORT}"),
    ),
    ("failed", "failure", re.compile(rf"Failed (?P<method>\S+) for {_WHO} from {_IP}{_PORT}")),
    ("invalid_user", "failure", re.compile(rf"Invalid user (?P<user>.*?) from {_IP}{_PORT}\s*$")),
    (
        "not_allowed",
        "failure",
        re.compile(rf"User (?P<user>\S+) from {_IP} not allowed because (?P<reason>.+)"),
    ),
    (
        "max_auth_exceeded",
        "failure",
        re.compile(rf"maximum authentication attempts exceeded for {_WHO} from {_IP}{_PORT}"),
    ),
    (
        "pam_auth_failure",
        "failure",
        re.compile(rf"error: PAM: (?P<reason>.+?) for {_WHO} from {_IP}\s*$"),
    ),
    (
        "disconnected",
        None,
        re.compile(
            rf"Disconnect(?:ed from|ing) (?:(?:authenticating|invalid) )?user (?P<user>\S+) "
            rf"{_IP}{_PORT}"
        ),
    ),
    (
        "connection_closed",
        None,
        re.compile(
            r"Connection (?:closed|reset) by (?:(?:authenticating |invalid )?user "
            rf"(?P<user>\S+) )?{_IP}{_PORT}"
        ),
    ),
    (
        "no_identification",
        None,
        re.compile(rf"Did not receive identification string from {_IP}{_PORT}"),
    ),
    (
        "negotiation_failed",
        None,
        re.compile(rf"Unable to negotiate with {_IP}{_PORT}: (?P<reason>.+)"),
    ),
    (
        "bad_protocol",
        None,
        re.compile(rf"Bad protocol version identification .* from {_IP}{_PORT}"),
    ),
    ("break_in_attempt", None, re.compile(r"POSSIBLE BREAK-IN ATTEMPT")),
)
_ADDRESS_IN_TEXT = re.compile(r"(?:Address |\[)(?P<src_ip>[0-9A-Fa-f:.]+)[\] ]")
_SNIFF = re.compile(r"\bsshd(?:-session|-auth)?(?:\[[0-9]+\]:| [0-9]+ )")


def sshd_fields(msg: str) -> dict[str, Any]:
    """``event`` and the values of one sshd message (see the module docstring)."""
    for event, outcome, pattern in MESSAGES:
        match = pattern.search(msg)
        if match is None:
            continue
        found: dict[str, Any] = {"event": event}
        if outcome:
            found["outcome"] = outcome
        for key, value in match.groupdict().items():
            if value:
                found[key] = value.strip()
        if "invalid" in found or event == "invalid_user":
            found.pop("invalid", None)
            found["invalid_user"] = True
        if event == "break_in_attempt":
            address = _ADDRESS_IN_TEXT.search(msg)
            if address:
                found["src_ip"] = address["src_ip"]
        return found
    return {"event": "other"}


def known_message(msg: str) -> bool:
    """Whether a header-less message is one of the sshd messages above."""
    return bool(sshd_fields(msg)["event"] != "other")


class SshdParser:
    """OpenSSH server (sshd) syslog lines."""

    name: ClassVar[str] = "sshd"

    def parse(self, raw: str | Mapping[str, Any], ctx: ParseContext) -> Event:
        line = text_line(raw, "sshd")
        header = split_syslog(line, ctx.device_tz)
        if header.app not in APPS and (header.app is not None or not known_message(header.msg)):
            raise ParseError(
                f"syslog program is {header.app!r}, not sshd",
                field="app",
                hint="only OpenSSH server lines (sshd[pid]: …) are read by this parser",
            )
        fields: dict[str, Any] = {
            "app": header.app,
            "pid": header.pid,
            "hostname": header.hostname,
            "msg": header.msg,
            **sshd_fields(header.msg),
        }
        return Event(
            event_id=content_id(line),
            observed_at=header_time(header),
            source_format=SourceFormat.SSHD,
            fields=fields,
            host=header.hostname,
            raw=line,
        )

    def sniff(self, path: Path, head: bytes) -> bool:
        """A first line from the ``sshd`` program."""
        return _SNIFF.search(first_line(head)) is not None

    def read_file(self, path: Path) -> Iterator[RawRecord]:
        return read_lines(path, self.name)


register_parser(SshdParser())
