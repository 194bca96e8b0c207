"""OpenSSH server (sshd) parser: every corpus line, the login messages, fuzzing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otasuke.errors import ParseError
from otasuke.ingest.parsers import ParseContext, get_parser, parser_for_file
from otasuke.ingest.parsers.sshd import SshdParser

PARSER = SshdParser()
CTX = ParseContext(sensor="test-linux")
CROWDSEC = [
    "ssh-bf",
    "ssh-slow-bf",
    "sshd-invalid-bf",
    "sshd-logs",
    "sshd-success-logs",
    "opnsense-sshd",
]


def _lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.strip()]


def test_registered_under_its_format_name() -> None:
    assert isinstance(get_parser("sshd"), SshdParser)


@pytest.mark.parametrize(
    ("msg", "expected"),
    [
        (
            "Failed password for root from 203.0.113.9 port 50000 ssh2",
            {"event": "failed", "user": "root", "outcome": "failure"},
        ),
        (
            "Failed password for invalid user admin from 203.0.113.9 port 1 ssh2",
            {"user": "admin", "invalid_user": True},
        ),
        (
            "Accepted publickey for alice from 192.168.1.5 port 2 ssh2: RSA SHA256:x",
            {"event": "accepted", "method": "publickey", "outcome": "success"},
        ),
        (
            "Invalid user oracle from 203.0.113.9 port 3",
            {"event": "invalid_user", "user": "oracle", "src_port": "3"},
        ),
        (
            "Connection closed by authenticating user root 203.0.113.9 port 4 [preauth]",
            {"event": "connection_closed", "user": "root"},
        ),
    ],
)
def test_login_messages(msg: str, expected: dict[str, object]) -> None:
    event = PARSER.parse(f"Apr  1 09:30:00 web01 sshd[123]: {msg}", CTX)
    assert {k: event.fields.get(k) for k in expected} == expected
    assert event.fields["src_ip"] in ("203.0.113.9", "192.168.1.5")
    assert event.host == "web01"


def test_bare_message_from_the_receiver_and_other_programs() -> None:
    assert PARSER.parse("Invalid user x from 1.2.3.4 port 5", CTX).fields["event"] == "invalid_user"
    with pytest.raises(ParseError) as err:
        PARSER.parse("Apr  1 09:30:00 web01 sudo[1]: Failed password for root from 1.2.3.4", CTX)
    assert err.value.field == "app"


@pytest.mark.corpus
def test_every_sshd_sample_parses(corpus: Path) -> None:
    lines = _lines(corpus / "syslog/wazuh/sshd.log")
    for case in CROWDSEC:
        lines += _lines(corpus / f"syslog/crowdsec/{case}/{case}.log")
    events = [PARSER.parse(line, CTX) for line in lines]
    assert len(events) == 71 + 6 + 22 + 6 + 24 + 4 + 10
    kinds = Counter(str(e.fields["event"]) for e in events)
    assert kinds["failed"] >= 10 and kinds["invalid_user"] >= 30 and kinds["accepted"] >= 3
    assert kinds["other"] == 29  # debug/error lines without a login in them


@pytest.mark.corpus
def test_sniff_recognises_the_sample_file(corpus: Path) -> None:
    assert parser_for_file(corpus / "syslog/crowdsec/ssh-bf/ssh-bf.log").name == "sshd"


@given(line=st.text(max_size=300))
def test_parser_is_total(line: str) -> None:
    for text in (
        line,
        f"Apr  1 09:30:00 h sshd[1]: {line}",
        f"Failed password for {line} from x port 1",
    ):
        try:
            PARSER.parse(text, CTX)
        except ParseError as err:
            assert err.field is not None
