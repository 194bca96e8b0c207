"""Windows イベントログ (EVTX) parser: flattening on real corpus records, and totality."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otasuke.errors import ParseError
from otasuke.ingest.event import SourceFormat, content_id
from otasuke.ingest.parsers import ParseContext, RawRecord, parser_for_file
from otasuke.ingest.parsers.evtx import PARSE_ERROR_KEY, EvtxParser

PARSER = EvtxParser()
CTX = ParseContext(sensor="test")


def record(corpus: Path, relative: str, record_id: int) -> RawRecord:
    path = corpus / "evtx" / relative
    for raw in PARSER.read_file(path):
        if raw.location.endswith(f"#{record_id}"):
            return raw
    raise AssertionError(f"record {record_id} not in {relative}")


def test_sysmon_record_flattens_to_sigma_names(corpus: Path) -> None:
    case = "sigma-regression/rules-threat-hunting/windows/image_load"
    [sample] = (corpus / case).glob("*/*.evtx")
    [raw] = list(PARSER.read_file(sample))
    event = PARSER.parse(raw.raw, CTX)
    fields = event.fields
    assert fields["EventID"] == 7
    assert fields["Channel"] == "Microsoft-Windows-Sysmon/Operational"
    assert fields["Provider_Name"] == "Microsoft-Windows-Sysmon"
    assert fields["ImageLoaded"] == "C:\\Windows\\System32\\dbgcore.dll"
    assert fields["ProcessId"] == 4460 and fields["ProcessID"] == 3544  # EventData vs System
    assert fields["UserID"] == "S-1-5-18"
    assert event.host == "swachchhanda" and event.record_id == 571146
    assert event.observed_at == datetime(2025, 11, 27, 7, 40, 10, 165324, tzinfo=UTC)
    assert event.source_format is SourceFormat.EVTX
    assert event.event_id == content_id(raw.raw)
    # Stored ids must not move: this is the id the parser gave this record before the
    # fast path (SHA-256 of the record's sorted-key JSON, first 32 hex digits).
    assert event.event_id == "af94f4d6719c76b65c1ebedb350a01eb"
    assert orjson.loads(event.raw) == raw.raw
    assert raw.location == f"{sample}#1"  # the record's number in this file


def test_event_id_with_qualifiers_is_an_int(corpus: Path) -> None:
    raw = record(
        corpus, "evtx-attack-samples/Defense Evasion/DE_WinEventLogSvc_Crash_System_7036.evtx", 1
    )
    fields = PARSER.parse(raw.raw, CTX).fields
    assert fields["EventID"] == 7036
    assert fields["param1"] == "Windows Error Reporting Service"


def test_event_id_as_string_is_an_int(corpus: Path) -> None:
    raw = record(
        corpus, "evtx-to-mitre-attack/Antivirus/ID1116-1117-Defender threat detected.evtx", 1
    )
    assert isinstance(raw.raw, dict)
    assert isinstance(raw.raw["Event"]["System"]["EventID"], str)
    assert PARSER.parse(raw.raw, CTX).fields["EventID"] == 1116


def test_unnamed_data_list_becomes_data(corpus: Path) -> None:
    raw = record(
        corpus, "evtx-attack-samples/Defense Evasion/DE_xp_cmdshell_enabled_MSSQL_EID_15457.evtx", 1
    )
    fields = PARSER.parse(raw.raw, CTX).fields
    assert fields["Data"] == ["show advanced options", "0", "1"]


def test_user_data_child_is_flattened(corpus: Path) -> None:
    relative = "evtx-attack-samples/Command and Control/DE_RDP_Tunneling_TerminalServices-RemoteConnectionManagerOperational_1149.evtx"
    raw = record(corpus, relative, 2)
    fields = PARSER.parse(raw.raw, CTX).fields
    assert fields["listenerName"] == "RDP-Tcp"
    assert "UserData" not in fields


def test_missing_channel_is_accepted(corpus: Path) -> None:
    relative = "evtx-to-mitre-attack/TA0007-Discovery/T1135.xxx-Network Share Discovery/ID5140-5145-Bloodhound-SharpHound enumeration via SMB.evtx"
    raw = record(corpus, relative, 1)
    event = PARSER.parse(raw.raw, CTX)
    assert "Channel" not in event.fields
    assert event.fields["EventID"] == 111


def test_every_corpus_record_parses(corpus: Path) -> None:
    count = 0
    for path in sorted((corpus / "evtx").rglob("*.evtx")):
        for raw in PARSER.read_file(path):
            PARSER.parse(raw.raw, CTX)
            count += 1
    assert count == 10941  # corpus README: 10,941 development records


def test_parse_for_detection_equals_parse_on_every_corpus_record(corpus: Path) -> None:
    """The detection fast path: the same fields (same order and types), time, host, id."""
    count = 0
    for path in sorted((corpus / "evtx").rglob("*.evtx")):
        for raw in PARSER.read_file(path):
            event = PARSER.parse(raw.raw, CTX)
            flat = PARSER.parse_for_detection(raw.raw, CTX)
            assert list(flat.fields.items()) == list(event.fields.items()), raw.location
            assert [type(v) for v in flat.fields.values()] == [
                type(v) for v in event.fields.values()
            ]
            assert (flat.observed_at, flat.host, flat.record_id) == (
                event.observed_at,
                event.host,
                event.record_id,
            )
            count += 1
    assert count == 10941


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-11-27T07:40:10.165324Z", datetime(2025, 11, 27, 7, 40, 10, 165324, tzinfo=UTC)),
        ("2025-11-27 07:40:10.165324Z", datetime(2025, 11, 27, 7, 40, 10, 165324, tzinfo=UTC)),
        ("2022-01-26T09:16:29.2674614Z", datetime(2022, 1, 26, 9, 16, 29, 267461, tzinfo=UTC)),
        ("2021-04-27T15:03:16.983Z", datetime(2021, 4, 27, 15, 3, 16, 983000, tzinfo=UTC)),
        ("2025-11-27T16:40:10.165324+09:00", datetime(2025, 11, 27, 7, 40, 10, 165324, tzinfo=UTC)),
        ("2025-11-27T07:40:10Z", datetime(2025, 11, 27, 7, 40, 10, tzinfo=UTC)),
        ("2025-13-27T07:40:10.165324Z", None),  # month 13: the fast path falls back, refuses
        ("2025-11-27T07:40:60.165324Z", None),  # leap second: datetime refuses
        ("2025-11-27T07:40:1x.165324Z", None),
        ("20251127T074010.1653240000Z", None),  # ISO basic format: not what the renderer writes
    ],
)
def test_system_time_fast_and_general_paths_agree(text: str, expected: datetime | None) -> None:
    raw = {
        "Event": {"System": {"EventID": 1, "TimeCreated": {"#attributes": {"SystemTime": text}}}}
    }
    if expected is None:
        for parse in (PARSER.parse, PARSER.parse_for_detection):
            with pytest.raises(ParseError) as caught:
                parse(raw, CTX)
            assert caught.value.field == "TimeCreated"
        return
    event = PARSER.parse(raw, CTX)
    assert event.observed_at == expected and event.observed_at.tzinfo is UTC
    assert PARSER.parse_for_detection(raw, CTX).observed_at == expected


def test_json_text_and_dict_give_the_same_event(corpus: Path) -> None:
    raw = record(
        corpus, "evtx-attack-samples/Defense Evasion/DE_WinEventLogSvc_Crash_System_7036.evtx", 1
    )
    from_dict = PARSER.parse(raw.raw, CTX)
    from_text = PARSER.parse(orjson.dumps(raw.raw).decode(), CTX)
    assert from_dict.event_id == from_text.event_id
    assert from_dict.fields == from_text.fields


def test_sniff_and_registry(corpus: Path, tmp_path: Path) -> None:
    sample = next((corpus / "evtx").rglob("*.evtx"))
    assert parser_for_file(sample).name == "evtx"
    assert not PARSER.sniff(tmp_path / "x", b"{}")


def test_damaged_file_yields_quarantinable_records(corpus: Path, tmp_path: Path) -> None:
    sample = next((corpus / "evtx").rglob("*.evtx"))
    data = bytearray(sample.read_bytes())
    for at in range(4096 + 600, min(len(data), 4096 + 3000), 7):
        data[at] = 0x41
    damaged = tmp_path / "damaged.evtx"
    damaged.write_bytes(bytes(data))
    records = list(PARSER.read_file(damaged))
    bad = [r for r in records if isinstance(r.raw, dict) and PARSE_ERROR_KEY in r.raw]
    assert bad, records
    with pytest.raises(ParseError) as caught:
        PARSER.parse(bad[0].raw, CTX)
    assert caught.value.field == "record"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ("not json", "raw"),
        ("[1, 2]", "Event"),
        ({"Event": {}}, "Event.System"),
        ({"Event": {"System": {"EventID": "x"}}}, "EventID"),
        ({"Event": {"System": {"EventID": 1}}}, "TimeCreated"),
        (
            {
                "Event": {
                    "System": {
                        "EventID": 1,
                        "TimeCreated": {"#attributes": {"SystemTime": "2026-13-01T00:00:00Z"}},
                    }
                }
            },
            "TimeCreated",
        ),
    ],
)
def test_bad_input_names_the_field(raw: Any, field: str) -> None:
    with pytest.raises(ParseError) as caught:
        PARSER.parse(raw, CTX)
    assert caught.value.field == field


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
SYSTEM_KEYS = st.sampled_from(
    ["EventID", "TimeCreated", "Channel", "Computer", "Provider", "EventRecordID", "Execution"]
)
SYSTEM = st.dictionaries(
    SYSTEM_KEYS, JSON | st.fixed_dictionaries({"#attributes": JSON, "#text": JSON})
)
RECORD = st.fixed_dictionaries(
    {
        "Event": st.fixed_dictionaries(
            {"System": SYSTEM}, optional={"EventData": JSON, "UserData": JSON}
        )
    }
)


@settings(max_examples=300)
@given(raw=RECORD | JSON | st.text(max_size=64))
def test_parse_raises_only_parse_error(raw: Any) -> None:
    try:
        event = PARSER.parse(raw, CTX)
    except ParseError as err:
        assert err.field is not None
    else:
        assert isinstance(event.fields["EventID"], int)
        assert event.observed_at.tzinfo is not None


@settings(max_examples=300)
@given(raw=RECORD | JSON | st.text(max_size=64))
def test_parse_for_detection_refuses_and_accepts_what_parse_does(raw: Any) -> None:
    """Given JSON text, the fast path raises only ParseError, and exactly when parse does."""
    try:
        text = orjson.dumps(raw).decode() if not isinstance(raw, str) else raw
    except TypeError:  # not JSON (e.g. a 65-bit int): parse alone refuses such a mapping
        return
    try:
        event = PARSER.parse(text, CTX)
    except ParseError as err:
        with pytest.raises(ParseError) as caught:
            PARSER.parse_for_detection(text, CTX)
        assert (caught.value.field, str(caught.value)) == (err.field, str(err))
    else:
        flat = PARSER.parse_for_detection(text, CTX)
        assert list(flat.fields.items()) == list(event.fields.items())
        assert (flat.observed_at, flat.host, flat.record_id) == (
            event.observed_at,
            event.host,
            event.record_id,
        )
