"""pfSense / OPNsense filterlog parser: every corpus line, IPv4 and IPv6, fuzzing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otasuke.errors import ParseError
from otasuke.ingest.parsers import ParseContext, get_parser, parser_for_file
from otasuke.ingest.parsers.filterlog import FilterlogParser

PARSER = FilterlogParser()
CTX = ParseContext(sensor="test-pf")
CROWDSEC = ["pf-logs", "pf-scan-multi-port", "pfsense-rfc5424-filterlog"]


def _lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.strip()]


def test_registered_under_its_format_name() -> None:
    assert isinstance(get_parser("filterlog"), FilterlogParser)


def test_tcp_line() -> None:
    line = (
        "<134>1 2025-11-06T11:32:42.868451+00:00 firewall.lan filterlog 92653 - - "
        "7,,,1000000102,vtnet0.5,match,block,in,4,0x0,,64,19008,0,DF,6,tcp,60,"
        "203.0.113.6,192.168.1.100,42970,80,0,S,523876198,,64240,,mss"
    )
    event = PARSER.parse(line, CTX)
    fields = event.fields
    assert (fields["action"], fields["direction"], fields["protocol"]) == ("block", "in", "tcp")
    assert (fields["src_ip"], fields["dst_ip"], fields["dst_port"]) == (
        "203.0.113.6",
        "192.168.1.100",
        "80",
    )
    assert fields["tcp_flags"] == "S"
    assert event.host == "192.168.1.100"
    assert event.observed_at == datetime(2025, 11, 6, 11, 32, 42, 868451, tzinfo=UTC)


def test_other_programs_are_refused() -> None:
    with pytest.raises(ParseError) as err:
        PARSER.parse("Oct 26 14:50:21 pfSense php-fpm[374]: /index.php: error", CTX)
    assert err.value.field == "app"


@pytest.mark.corpus
def test_every_filterlog_sample_parses(corpus: Path) -> None:
    lines = _lines(corpus / "syslog/wazuh/pfsense.log")
    for case in CROWDSEC:
        lines += _lines(corpus / f"syslog/crowdsec/{case}/{case}.log")
    events = [PARSER.parse(line, CTX) for line in lines]
    assert len(events) == 2 + 9 + 16 + 4
    assert {e.fields["ip_version"] for e in events} == {"4", "6"}
    assert {e.fields["action"] for e in events} == {"block", "pass"}


@pytest.mark.corpus
def test_sniff_recognises_the_sample_files(corpus: Path) -> None:
    assert parser_for_file(corpus / "syslog/wazuh/pfsense.log").name == "filterlog"
    rfc5424 = corpus / "syslog/crowdsec/pfsense-rfc5424-filterlog/pfsense-rfc5424-filterlog.log"
    assert parser_for_file(rfc5424).name == "filterlog"


@given(
    cells=st.lists(
        st.text(alphabet=st.characters(blacklist_characters=",\n\r"), max_size=8), max_size=30
    )
)
def test_parser_is_total(cells: list[str]) -> None:
    for line in (",".join(cells), "Jan 22 18:34:00 filterlog: " + ",".join(cells)):
        try:
            PARSER.parse(line, CTX)
        except ParseError as err:
            assert err.field is not None
