"""iptables / firewalld / UFW kernel LOG parser: every corpus line, fuzzing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otasuke.errors import ParseError
from otasuke.ingest.parsers import ParseContext, get_parser, parser_for_file
from otasuke.ingest.parsers.iptables import IptablesParser

PARSER = IptablesParser()
CTX = ParseContext(sensor="test-linux")
NOW = datetime.now(UTC)


def _lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.strip()]


def test_registered_under_its_format_name() -> None:
    assert isinstance(get_parser("iptables"), IptablesParser)


def test_ufw_block_line() -> None:
    line = (
        "Dec 26 09:05:47 server01 kernel: [126140.629122] [UFW BLOCK] IN=eth0 OUT= "
        "MAC=00:11 SRC=203.0.113.9 DST=192.168.1.5 LEN=52 TTL=128 ID=9209 DF PROTO=TCP "
        "SPT=1234 DPT=3389 WINDOW=8192 RES=0x00 SYN URGP=0"
    )
    event = PARSER.parse(line, CTX)
    fields = event.fields
    assert (fields["prefix"], fields["action"]) == ("[UFW BLOCK]", "block")
    assert (fields["SRC"], fields["DPT"], fields["flags"]) == ("203.0.113.9", "3389", "DF SYN")
    assert event.host == "192.168.1.5"
    assert (event.observed_at.month, event.observed_at.day) == (12, 26)
    assert event.observed_at <= NOW + (datetime(2000, 1, 2) - datetime(2000, 1, 1))


def test_firewalld_prefix_and_missing_fields() -> None:
    ok = "kernel: filter_IN_public_REJECT: IN=ens3 OUT= SRC=1.2.3.4 DST=10.0.0.2 PROTO=UDP SPT=1 DPT=2"
    assert PARSER.parse(ok, CTX).fields["action"] == "block"
    with pytest.raises(ParseError) as err:
        PARSER.parse("kernel: IN=ens3 OUT= SRC=1.2.3.4", CTX)
    assert err.value.field == "DST"


@pytest.mark.corpus
def test_every_packet_log_sample_parses(corpus: Path) -> None:
    lines = _lines(corpus / "syslog/wazuh/iptables.log")
    for case in ("iptables-logs", "iptables-scan-multi-port"):
        lines += _lines(corpus / f"syslog/crowdsec/{case}/{case}.log")
    events = [PARSER.parse(line, CTX) for line in lines]
    assert len(events) == 43 + 4 + 49
    assert sum(1 for e in events if e.fields.get("action") == "block") >= 30


@pytest.mark.corpus
def test_firewalld_daemon_errors_are_not_packet_logs(corpus: Path) -> None:
    """Not supported: firewalld.log's 3 lines are the daemon's own ERROR messages (no
    packet); the generic syslog parser keeps them."""
    lines = _lines(corpus / "syslog/wazuh/firewalld.log")
    assert len(lines) == 3
    for line in lines:
        with pytest.raises(ParseError):
            PARSER.parse(line, CTX)


@pytest.mark.corpus
def test_sniff_recognises_the_sample_file(corpus: Path) -> None:
    assert parser_for_file(corpus / "syslog/wazuh/iptables.log").name == "iptables"


@given(line=st.text(max_size=300))
def test_parser_is_total(line: str) -> None:
    for text in (line, f"kernel: IN=eth0 OUT= SRC={line[:20]} DST=1.2.3.4 PROTO=TCP {line}"):
        try:
            PARSER.parse(text, CTX)
        except ParseError as err:
            assert err.field is not None
