"""Windows events as JSON (Winlogbeat / NXLog): Sigma field names, OTRF datasets, fuzzing."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from otasuke.errors import ParseError
from otasuke.ingest.event import SourceFormat
from otasuke.ingest.parsers import ParseContext, get_parser, parser_for_file
from otasuke.ingest.parsers.winjson import WindowsJsonParser

PARSER = WindowsJsonParser()
CTX = ParseContext(sensor="test-pc")
OTRF = "json-events/otrf-security-datasets/atomic"
WINLOGBEAT = {
    "@timestamp": "2024-04-01T00:30:00.123Z",
    "event": {"code": "4688", "provider": "Microsoft-Windows-Security-Auditing"},
    "host": {"name": "pc01"},
    "winlog": {
        "event_id": 4688,
        "channel": "Security",
        "computer_name": "PC01.example.local",
        "provider_name": "Microsoft-Windows-Security-Auditing",
        "record_id": 1234,
        "process": {"pid": 4, "thread": {"id": 8}},
        "event_data": {
            "NewProcessName": "C:\\Windows\\System32\\cmd.exe",
            "CommandLine": "cmd /c whoami",
        },
    },
}


def test_registered_under_its_format_name() -> None:
    assert isinstance(get_parser("winlogbeat"), WindowsJsonParser)


def test_winlogbeat_gets_evtx_field_names() -> None:
    event = PARSER.parse(orjson.dumps(WINLOGBEAT).decode(), CTX)
    fields = event.fields
    assert event.source_format is SourceFormat.WINLOGBEAT
    assert (fields["EventID"], fields["Channel"], fields["Computer"]) == (
        4688,
        "Security",
        "PC01.example.local",
    )
    assert fields["Provider_Name"] == "Microsoft-Windows-Security-Auditing"
    assert (fields["EventRecordID"], fields["ProcessID"], fields["ThreadID"]) == (1234, 4, 8)
    assert fields["CommandLine"] == "cmd /c whoami"
    assert fields["host.name"] == "pc01"
    assert event.host == "PC01.example.local"
    assert event.record_id == 1234
    assert event.observed_at.isoformat() == "2024-04-01T00:30:00.123000+00:00"


def test_nxlog_keywords_and_numbers_as_evtx_renders_them() -> None:
    line = orjson.dumps(
        {
            "EventID": "1",
            "Channel": "Microsoft-Windows-Sysmon/Operational",
            "Hostname": "PC02",
            "SourceName": "Microsoft-Windows-Sysmon",
            "Keywords": -9223372036854775808,
            "Task": "1",
            "EventTime": "2024-04-01 09:30:00",
            "Image": "C:\\x.exe",
            "RecordNumber": 7,
        }
    ).decode()
    fields = PARSER.parse(line, CTX).fields
    assert (fields["EventID"], fields["Task"], fields["EventRecordID"]) == (1, 1, 7)
    assert fields["Keywords"] == "0x8000000000000000"
    assert (fields["Computer"], fields["Provider_Name"], fields["Image"]) == (
        "PC02",
        "Microsoft-Windows-Sysmon",
        "C:\\x.exe",
    )
    assert PARSER.parse(line, CTX).observed_at.isoformat() == "2024-04-01T00:30:00+00:00"  # JST


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"a": 1}, "EventID"),
        ({"EventID": 1, "Channel": "Security"}, "@timestamp"),
        ({"EventID": "x", "Channel": "S", "EventTime": "2024-04-01 00:00:00"}, "EventID"),
    ],
)
def test_bad_records_name_the_field(obj: dict[str, object], field: str) -> None:
    with pytest.raises(ParseError) as err:
        PARSER.parse(obj, CTX)
    assert err.value.field == field


@pytest.mark.corpus
def test_every_otrf_windows_record_parses(corpus: Path) -> None:
    """28 Windows zips, 20,445 records; the 2 Linux zips hold auditd text, not sniffed here."""
    zips = sorted((corpus / OTRF).rglob("*.zip"))
    windows = [z for z in zips if "/windows/" in str(z)]
    assert (len(zips), len(windows)) == (30, 28)
    total = 0
    for path in windows:
        assert parser_for_file(path).name == "winlogbeat"
        for record in PARSER.read_file(path):
            event = PARSER.parse(record.raw, CTX)
            assert isinstance(event.fields["EventID"], int) and event.fields["Channel"]
            total += 1
    assert total == 20445
    assert not PARSER.sniff(zips[0], zips[0].read_bytes()[:4096]) or "/windows/" in str(zips[0])


@pytest.mark.corpus
def test_sigma_rule_fires_on_an_otrf_lsass_dump(corpus: Path) -> None:
    """T1003.001 (LSASS memory dump via comsvcs.dll): bundled Sigma rules fire on the JSON."""
    from otasuke.detect.engine import Detector

    detector = Detector.load()
    path = corpus / OTRF / "windows/credential_access/host/psh_lsass_memory_dump_comsvcs.zip"
    titles = {
        found.title
        for record in PARSER.read_file(path)
        for found in detector.detect(PARSER.parse(record.raw, CTX))
        if found.source.value == "sigma"
    }
    assert "LSASS Access From Non System Account" in titles


@given(
    obj=st.dictionaries(
        st.sampled_from(
            [
                "EventID",
                "Channel",
                "EventTime",
                "@timestamp",
                "winlog",
                "Event",
                "Keywords",
                "Hostname",
                "x",
            ]
        ),
        st.one_of(
            st.none(),
            st.integers(),
            st.text(max_size=30),
            st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
        ),
        max_size=8,
    )
)
def test_parser_is_total(obj: dict[str, object]) -> None:
    try:
        PARSER.parse(obj, CTX)
    except ParseError as err:
        assert err.field is not None


@given(line=st.text(max_size=200))
def test_parser_is_total_on_text(line: str) -> None:
    try:
        PARSER.parse(line, CTX)
    except ParseError as err:
        assert err.field is not None
