"""SonicWall parser: every corpus line, endpoints split, fuzzing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otasuke.errors import ParseError
from otasuke.ingest.parsers import ParseContext, get_parser, parser_for_file
from otasuke.ingest.parsers.sonicwall import SonicWallParser

PARSER = SonicWallParser()
CTX = ParseContext(sensor="test-sw")


def _lines(path: Path) -> list[str]:
    if path.suffix == ".ini":
        text = path.read_text().splitlines()
        return [
            ln.split(" pass = ", 1)[1] for ln in text if ln.startswith("log ") and " pass = " in ln
        ]
    return [ln for ln in path.read_text().splitlines() if ln.strip()]


def test_registered_under_its_format_name() -> None:
    assert isinstance(get_parser("sonicwall"), SonicWallParser)


def test_endpoints_and_time() -> None:
    line = (
        '<134>id=firewall sn=0017C5000001 time="2024-04-01 09:30:00" fw=198.51.100.1 pri=1 c=32 '
        'm=608 msg="IPS Prevention Alert: ..." sid=1234 ipscat="MALWARE" ipspri=1 '
        "src=203.0.113.9:4444:X1 dst=192.168.1.20:445:X0:pc01 proto=tcp/445"
    )
    event = PARSER.parse(line, CTX)
    assert event.observed_at == datetime(2024, 4, 1, 0, 30, tzinfo=UTC)  # no zone: JST
    assert (event.fields["dst_ip"], event.fields["dst_port"], event.fields["dst_host"]) == (
        "192.168.1.20",
        "445",
        "pc01",
    )
    assert event.host == "192.168.1.20"
    assert event.fields["ipscat"] == "MALWARE"


def test_utc_time_and_a_line_without_sn() -> None:
    ok = 'id=firewall sn=1 time="2024-04-01 00:30:00 UTC" m=1 msg="x"'
    assert PARSER.parse(ok, CTX).observed_at == datetime(2024, 4, 1, 0, 30, tzinfo=UTC)
    with pytest.raises(ParseError) as err:
        PARSER.parse('time="2024-04-01 00:30:00" m=1', CTX)
    assert err.value.field == "sn"


@pytest.mark.corpus
@pytest.mark.parametrize("name", ["SonicWall.log", "SonicWall.ini"])
def test_every_wazuh_sample_parses(corpus: Path, name: str) -> None:
    events = [PARSER.parse(line, CTX) for line in _lines(corpus / "syslog/wazuh" / name)]
    assert len(events) == 11
    assert all(e.fields.get("sn") and e.fields.get("m") for e in events)
    web = [e for e in events if e.fields.get("msg") == "Web site access denied"]
    assert web and web[0].host == "pc048.example.com"


@pytest.mark.corpus
def test_sniff_recognises_the_sample_file(corpus: Path) -> None:
    assert parser_for_file(corpus / "syslog/wazuh/SonicWall.log").name == "sonicwall"


@given(line=st.text(max_size=300))
def test_parser_is_total(line: str) -> None:
    for text in (line, f"id=firewall sn=1 {line}", f'id=firewall sn=1 time="{line[:25]}"'):
        try:
            PARSER.parse(text, CTX)
        except ParseError as err:
            assert err.field is not None
