"""Sophos UTM / XG (SFOS) parser: every corpus line, both dialects, fuzzing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otasuke.errors import ParseError
from otasuke.ingest.parsers import ParseContext, get_parser
from otasuke.ingest.parsers.sophos import SophosParser

PARSER = SophosParser()
CTX = ParseContext(sensor="test-sophos")
UTM = (
    '<30>2024:04:01-09:30:00 utm01 ulogd[4711]: id="2001" severity="info" sys="SecureNet" '
    'sub="packetfilter" name="Packet dropped" action="drop" fwrule="60002" srcip="203.0.113.7" '
    'dstip="192.168.1.10" proto="6" srcport="4444" dstport="445"'
)


def _lines(path: Path) -> list[str]:
    if path.suffix == ".ini":
        text = path.read_text().splitlines()
        return [
            ln.split(" pass = ", 1)[1] for ln in text if ln.startswith("log ") and " pass = " in ln
        ]
    return [ln for ln in path.read_text().splitlines() if ln.strip()]


def test_registered_under_its_format_name() -> None:
    assert isinstance(get_parser("sophos"), SophosParser)


def test_utm_line() -> None:
    event = PARSER.parse(UTM, CTX)
    assert event.fields["variant"] == "utm"
    assert event.fields["name"] == "Packet dropped"
    assert event.observed_at == datetime(2024, 4, 1, 0, 30, tzinfo=UTC)
    assert event.host == "192.168.1.10"


def test_sfos_timestamp_and_log_id() -> None:
    line = (
        'device_name="SFW" timestamp="2024-04-01T09:30:00+0900" log_id=020804602001 '
        'log_type="IDP" log_component="Anti-Exploit" log_subtype="Drop" src_ip=203.0.113.7 '
        "dst_ip=192.168.1.10"
    )
    event = PARSER.parse(line, CTX)
    assert event.observed_at == datetime(2024, 4, 1, 0, 30, tzinfo=UTC)
    assert (event.fields["log_type_id"], event.fields["message_id"]) == ("02", "02001")


@pytest.mark.corpus
@pytest.mark.parametrize("name", ["sophos_fw.log", "sophos_fw.ini"])
def test_every_xg_sample_parses(corpus: Path, name: str) -> None:
    events = [PARSER.parse(line, CTX) for line in _lines(corpus / "syslog/wazuh" / name)]
    assert len(events) == 10
    assert {e.fields["variant"] for e in events} == {"sfos"}
    assert events[0].observed_at == datetime(2019, 10, 9, 9, 19, 6, tzinfo=UTC)  # timezone="+08"


@pytest.mark.corpus
@pytest.mark.parametrize("name", ["sophos.log", "sophos.ini"])
def test_endpoint_antivirus_lines_are_not_firewall_lines(corpus: Path, name: str) -> None:
    """Not supported: the 8 lines of sophos.log are Sophos Anti-Virus endpoint logs
    (savscan XML, Sophos Cloud scan text), not UTM/XG; the generic syslog parser keeps them."""
    lines = _lines(corpus / "syslog/wazuh" / name)
    assert len(lines) == 8
    for line in lines:
        with pytest.raises(ParseError) as err:
            PARSER.parse(line, CTX)
        assert err.value.field == "raw"


@pytest.mark.corpus
def test_sniff_recognises_the_sample_file(corpus: Path) -> None:
    """The fortigate sniff (date= and type=) also takes XG lines: sophos must be registered
    before fortigate for ``parser_for_file`` to pick it."""
    path = corpus / "syslog/wazuh/sophos_fw.log"
    assert PARSER.sniff(path, path.read_bytes()[:4096])


@given(line=st.text(max_size=300))
def test_parser_is_total(line: str) -> None:
    for text in (
        line,
        f'device="SFW" log_type=x log_id=1 {line}',
        f"<30>2024:04:01-09:30:00 h {line}",
    ):
        try:
            PARSER.parse(text, CTX)
        except ParseError as err:
            assert err.field is not None
