"""Generic syslog parser (the fallback): headers, year rule, every corpus line, fuzzing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otasuke.errors import ParseError
from otasuke.ingest.parsers import ParseContext, get_parser, parser_for_file
from otasuke.ingest.parsers.syslog_text import SyslogTextParser, split_syslog

PARSER = SyslogTextParser()
CTX = ParseContext(sensor="test-syslog")
JST = ZoneInfo("Asia/Tokyo")
NOW = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)  # 12:00 JST on New Year's Day


def test_registered_under_its_format_name() -> None:
    assert isinstance(get_parser("syslog"), SyslogTextParser)


def test_rfc3164_fields() -> None:
    event = PARSER.parse("<38>Apr  1 09:30:00 nas01 synoscgi[2197]: login failed", CTX)
    fields = event.fields
    assert (fields["app"], fields["pid"], fields["hostname"], fields["msg"]) == (
        "synoscgi",
        "2197",
        "nas01",
        "login failed",
    )
    assert (fields["facility"], fields["severity"]) == (4, 6)
    assert event.host == "nas01"


def test_rfc5424_fields() -> None:
    line = '<35>1 2022-01-19T15:14:32+00:00 OPNsense.localdomain audit 24409 - [meta sequenceId="4"] /index.php: error'
    event = PARSER.parse(line, CTX)
    assert (event.fields["app"], event.fields["msg"]) == ("audit", "/index.php: error")
    assert event.observed_at == datetime(2022, 1, 19, 15, 14, 32, tzinfo=UTC)


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("Jan  1 11:00:00", datetime(2026, 1, 1, 2, 0, tzinfo=UTC)),  # this year, JST
        ("Jan  2 11:00:00", datetime(2026, 1, 2, 2, 0, tzinfo=UTC)),  # within a day ahead
        ("Dec 31 23:59:00", datetime(2025, 12, 31, 14, 59, tzinfo=UTC)),  # last year
        ("Feb 29 10:00:00", datetime(2024, 2, 29, 1, 0, tzinfo=UTC)),  # the last leap day
    ],
)
def test_year_rule(stamp: str, expected: datetime) -> None:
    assert split_syslog(f"{stamp} host app: x", JST, NOW).timestamp == expected


def test_unreadable_time_is_still_stored() -> None:
    event = PARSER.parse("May 00 00:00:00 host app: x", CTX)
    assert event.fields["bad_time"] == "May 00 00:00:00"


@pytest.mark.corpus
def test_every_syslog_corpus_line_is_stored(corpus: Path) -> None:
    files = sorted((corpus / "syslog").glob("*/*.log")) + sorted(
        (corpus / "syslog").glob("*/*/*.log")
    )
    lines = [ln for f in files for ln in f.read_text().splitlines() if ln.strip()]
    events = [PARSER.parse(line, CTX) for line in lines]
    assert len(events) == len(lines) == 601


@pytest.mark.corpus
def test_sniff_never_takes_a_specific_parsers_file(corpus: Path) -> None:
    ssh = corpus / "syslog/crowdsec/ssh-bf/ssh-bf.log"
    assert not PARSER.sniff(ssh, ssh.read_bytes()[:4096])
    smb = corpus / "syslog/crowdsec/smb-bf/smb-bf.log"
    assert parser_for_file(smb).name == "syslog"


@given(line=st.text(max_size=300))
def test_parser_is_total(line: str) -> None:
    try:
        PARSER.parse(line, CTX)
    except ParseError as err:
        assert err.field is not None
