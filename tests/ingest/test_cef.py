"""CEF parser: header and extension escaping, FortiGate / Trend Micro style lines, fuzzing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otasuke.errors import ParseError
from otasuke.ingest.event import SourceFormat
from otasuke.ingest.parsers import ParseContext, get_parser
from otasuke.ingest.parsers.cef import CefParser

PARSER = CefParser()
CTX = ParseContext(sensor="test-cef")
FORTIGATE = (
    "<189>Apr  1 09:30:00 FGT60F CEF:0|Fortinet|Fortigate|v7.0.5|16384|utm:ips signature|5|"
    "start=Apr 01 2024 09:30:00 logver=700 deviceExternalId=FGT60FTK0001 src=192.168.1.20 "
    "spt=50123 dst=203.0.113.5 dpt=443 act=dropped FTNTFGTattack=Backdoor.Cobalt.Strike.Beacon"
)
APEX = (
    "CEF:0|Trend Micro|Apex Central|2019|AV:File quarantined|Eicar_test_file|3|rt=1711931400000 "
    "dhost=PC-07 dst=192.168.1.7 duser=yamada act=File quarantined cn1=1 cn1Label=VLF_PatternNumber "
    "cs1Label=ScanType cs1=Real-time Scan fname=C:\\\\Users\\\\yamada\\\\eicar.com"
)


def test_registered_under_its_format_name() -> None:
    assert isinstance(get_parser("cef"), CefParser)


def test_fortigate_cef() -> None:
    event = PARSER.parse(FORTIGATE, CTX)
    fields = event.fields
    assert event.source_format is SourceFormat.CEF
    assert (fields["device_vendor"], fields["name"], fields["severity"]) == (
        "Fortinet",
        "utm:ips signature",
        "5",
    )
    assert (fields["src"], fields["act"], fields["FTNTFGTattack"]) == (
        "192.168.1.20",
        "dropped",
        "Backdoor.Cobalt.Strike.Beacon",
    )
    assert event.observed_at == datetime(2024, 4, 1, 0, 30, tzinfo=UTC)  # start= in JST
    assert event.host == "192.168.1.20"


def test_trend_micro_values_with_spaces_and_escapes() -> None:
    event = PARSER.parse(APEX, CTX)
    fields = event.fields
    assert fields["cs1"] == "Real-time Scan"
    assert fields["act"] == "File quarantined"
    assert fields["fname"] == "C:\\Users\\yamada\\eicar.com"
    assert event.host == "PC-07"
    assert event.observed_at == datetime(2024, 4, 1, 0, 30, tzinfo=UTC)


def test_header_escapes() -> None:
    line = r"CEF:0|Acme|FW\|Pro|1.0|100|a \\ b \| c|7|msg=x\=y src=10.0.0.1"
    fields = PARSER.parse(line, CTX).fields
    assert (fields["device_product"], fields["name"], fields["msg"]) == (
        "FW|Pro",
        "a \\ b | c",
        "x=y",
    )


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("", "raw"),
        ("hello", "raw"),
        ("CEF:0|a|b|c", "header"),
        ("CEF:0|a|b|c|d|e|5|rt=yesterday", "rt"),
    ],
)
def test_bad_lines_name_the_field(line: str, field: str) -> None:
    with pytest.raises(ParseError) as err:
        PARSER.parse(line, CTX)
    assert err.value.field == field


@given(header=st.lists(st.text(max_size=10), min_size=0, max_size=9), ext=st.text(max_size=200))
def test_parser_is_total(header: list[str], ext: str) -> None:
    for line in ("CEF:0|" + "|".join(header) + "|" + ext, ext):
        try:
            PARSER.parse(line, CTX)
        except ParseError as err:
            assert err.field is not None
