"""監査ログ: auditd records, hex-encoded values decoded."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otasuke.errors import ParseError
from otasuke.ingest.parsers import ParseContext
from otasuke.ingest.parsers.auditd import AuditdParser

CTX = ParseContext()
PARSER = AuditdParser()


def test_syscall_record(corpus: Path) -> None:
    path = corpus / "auditd" / "crowdsec" / "auditd-base64-exec" / "auditd-base64-exec.log"
    assert PARSER.sniff(path, path.read_bytes()[:4096])
    event = PARSER.parse(next(iter(PARSER.read_file(path))).raw, CTX)
    assert event.fields["type"] == "SYSCALL" and event.fields["exe"] == "/usr/bin/perl"
    assert event.fields["syscall"] == "59" and event.fields["key"] == "(null)"
    assert event.record_id == 2995 and event.observed_at.year == 2023


def test_hex_encoded_values_are_decoded() -> None:
    line = (
        'node=web1 type=EXECVE msg=audit(1696431255.037:8272): argc=3 a0="bash" a1="-c" '
        "a2=6563686F2068656C6C6F"
    )
    event = PARSER.parse(line, CTX)
    assert event.fields["a2"] == "echo hello" and event.host == "web1"
    title = "type=PROCTITLE msg=audit(1.0:1): proctitle=2F62696E2F7368002D63006964"
    assert PARSER.parse(title, CTX).fields["proctitle"] == "/bin/sh -c id"
    syscall = "type=SYSCALL msg=audit(1.0:2): arch=c000003e syscall=59 a0=237f568"
    assert PARSER.parse(syscall, CTX).fields["a0"] == "237f568"  # a pointer, not text


def test_user_space_msg_and_enriched_pairs(corpus: Path) -> None:
    events = [
        PARSER.parse(r.raw, CTX)
        for r in PARSER.read_file(corpus / "auditd" / "wazuh" / "auditd.log")
    ]
    assert len(events) == 35
    crash = corpus / "auditd" / "crowdsec" / "auditd-suid-crash" / "auditd-suid-crash.log"
    first = PARSER.parse(next(iter(PARSER.read_file(crash))).raw, CTX)
    assert first.fields["key"] == "susp_shell" and first.fields["SYSCALL"] == "execve"
    line = "type=USER_LOGIN msg=audit(1.0:3): pid=1 uid=0 msg='op=login acct=\"root\" res=failed'"
    fields = PARSER.parse(line, CTX).fields
    assert fields["acct"] == "root" and fields["res"] == "failed"


def test_not_auditd_is_a_parse_error() -> None:
    with pytest.raises(ParseError) as err:
        PARSER.parse("Jan  1 00:00:00 host sshd[1]: hello", CTX)
    assert err.value.field == "raw"


@given(line=st.text(max_size=300))
def test_parser_is_total(line: str) -> None:
    try:
        PARSER.parse("type=X msg=audit(1.0:1): " + line, CTX)
        PARSER.parse(line, CTX)
    except ParseError as err:
        assert err.field is not None
