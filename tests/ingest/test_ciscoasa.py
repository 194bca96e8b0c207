"""Cisco ASA parser: every corpus line, the common message ids, fuzzing."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otasuke.errors import ParseError
from otasuke.ingest.parsers import ParseContext, get_parser, parser_for_file
from otasuke.ingest.parsers.ciscoasa import CiscoAsaParser

PARSER = CiscoAsaParser()
CTX = ParseContext(sensor="test-asa")


def _lines(path: Path) -> list[str]:
    if path.suffix == ".ini":
        text = path.read_text().splitlines()
        return [
            ln.split(" pass = ", 1)[1] for ln in text if ln.startswith("log ") and " pass = " in ln
        ]
    return [ln for ln in path.read_text().splitlines() if ln.strip()]


def test_registered_under_its_format_name() -> None:
    assert isinstance(get_parser("cisco_asa"), CiscoAsaParser)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            '%ASA-4-106023: Deny tcp src outside:203.0.113.9/4444 dst inside:192.168.1.5/445 by access-group "out_in"',
            {
                "action": "deny",
                "src_ip": "203.0.113.9",
                "dst_ip": "192.168.1.5",
                "dst_port": "445",
                "acl": "out_in",
            },
        ),
        (
            "%ASA-6-106100: access-list in_in denied tcp inside/10.0.0.5(51234) -> outside/203.0.113.9(445) hit-cnt 1",
            {"action": "deny", "src_ip": "10.0.0.5", "dst_port": "445", "acl": "in_in"},
        ),
        (
            "%ASA-6-302013: Built outbound TCP connection 9 for outside:203.0.113.9/443 (203.0.113.9/443) to inside:10.1.1.2/53496 (198.51.100.1/53496)",
            {"action": "built", "src_ip": "10.1.1.2", "dst_ip": "203.0.113.9", "dst_port": "443"},
        ),
        (
            "%ASA-6-302015: Built inbound UDP connection 7 for outside:203.0.113.9/53 (203.0.113.9/53) to inside:10.1.1.2/5353 (10.1.1.2/5353)",
            {"action": "built", "src_ip": "203.0.113.9", "dst_ip": "10.1.1.2", "protocol": "UDP"},
        ),
        (
            "%ASA-6-302016: Teardown UDP connection 7 for outside:203.0.113.9/53 to inside:10.1.1.2/5353 duration 0:02:01 bytes 120",
            {"action": "teardown", "bytes": "120", "src_port": "53"},
        ),
        (
            "%ASA-3-710003: TCP access denied by ACL from 203.0.113.9/1234 to outside:198.51.100.2/22",
            {"action": "deny", "src_ip": "203.0.113.9", "dst_port": "22"},
        ),
        (
            "%ASA-4-733100: [ Scanning] drop rate-1 exceeded. Current burst rate is 10 per second, max configured rate is 10; Current average rate is 5 per second, max configured rate is 5; Cumulative total count is 3000",
            {"object": "Scanning", "rate_id": "1", "total": "3000"},
        ),
    ],
)
def test_common_messages_are_read(line: str, expected: dict[str, str]) -> None:
    fields = PARSER.parse(line, CTX).fields
    assert {k: fields.get(k) for k in expected} == expected


def test_header_time_and_host() -> None:
    line = '<164>Mar 11 2024 10:00:00 fw01 : %ASA-4-106023: Deny tcp src outside:203.0.113.9/1 dst inside:192.168.1.5/445 by access-group "a"'
    event = PARSER.parse(line, CTX)
    assert event.observed_at.isoformat() == "2024-03-11T01:00:00+00:00"  # JST
    assert event.host == "192.168.1.5"
    assert event.fields["hostname"] == "fw01"


@pytest.mark.corpus
@pytest.mark.parametrize("name", ["cisco_asa.log", "cisco_asa.ini"])
def test_every_wazuh_sample_parses(corpus: Path, name: str) -> None:
    events = [PARSER.parse(line, CTX) for line in _lines(corpus / "syslog/wazuh" / name)]
    assert len(events) == 88
    assert sum(1 for e in events if e.fields.get("src_ip")) == 31
    assert {e.fields["message_id"] for e in events} >= {
        "106023",
        "302013",
        "302014",
        "710003",
        "733100",
    }


@pytest.mark.corpus
def test_sniff_recognises_the_sample_file(corpus: Path) -> None:
    assert parser_for_file(corpus / "syslog/wazuh/cisco_asa.log").name == "cisco_asa"


@given(
    text=st.text(max_size=300),
    message_id=st.sampled_from(
        ["106023", "106100", "302013", "302014", "710003", "733100", "999999"]
    ),
)
def test_parser_is_total(text: str, message_id: str) -> None:
    for line in (text, f"%ASA-4-{message_id}: {text}"):
        try:
            PARSER.parse(line, CTX)
        except ParseError as err:
            assert err.field is not None
