"""Suricata EVE JSON (IDS ログ) parser: the real capture, hand-written events, fuzzing."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from otasuke.errors import ParseError
from otasuke.ingest.event import Event, SourceFormat
from otasuke.ingest.parsers import ParseContext, get_parser, parser_for_file
from otasuke.ingest.parsers.suricata import SuricataEveParser

PARSER = SuricataEveParser()
CTX = ParseContext(sensor="test-ids")
SLIPS = "suricata/slips/test6-malicious.suricata.json"
DNS_QUERY = {
    "timestamp": "2024-04-01T09:30:00.123456+0900",
    "flow_id": 1,
    "event_type": "dns",
    "src_ip": "192.168.1.20",
    "src_port": 53000,
    "dest_ip": "8.8.8.8",
    "dest_port": 53,
    "proto": "UDP",
    "dns": {"type": "query", "id": 7, "rrname": "evil.example", "rrtype": "A"},
}


def parse(raw: str | Mapping[str, Any], ctx: ParseContext = CTX) -> Event:
    return PARSER.parse(raw, ctx)


def test_registered_under_its_format_name() -> None:
    assert isinstance(get_parser("suricata_eve"), SuricataEveParser)


def test_dns_event_is_flattened_with_dotted_keys() -> None:
    event = parse(json.dumps(DNS_QUERY))
    assert event.source_format is SourceFormat.SURICATA_EVE
    assert event.fields["dns.rrname"] == "evil.example"
    assert event.fields["event_type"] == "dns"
    assert event.observed_at == datetime(2024, 4, 1, 0, 30, 0, 123456, tzinfo=UTC)
    assert event.host == "192.168.1.20"  # the internal PC


def test_mapping_and_line_give_the_same_fields() -> None:
    assert parse(DNS_QUERY).fields == parse(json.dumps(DNS_QUERY)).fields


def test_timestamp_without_offset_uses_device_tz() -> None:
    record = {**DNS_QUERY, "timestamp": "2024-04-01T09:30:00"}
    assert parse(record).observed_at == datetime(2024, 4, 1, 0, 30, tzinfo=UTC)
    utc_ctx = ParseContext(device_tz=ZoneInfo("UTC"))
    assert parse(record, utc_ctx).observed_at == datetime(2024, 4, 1, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("src", "dest", "host"),
    [
        ("203.0.113.9", "192.168.1.129", "192.168.1.129"),
        ("10.0.0.5", "198.51.100.7", "10.0.0.5"),
        ("10.0.0.5", "10.0.0.1", "10.0.0.5"),
        ("198.51.100.7", "203.0.113.9", "203.0.113.9"),
    ],
)
def test_host_is_the_internal_side(src: str, dest: str, host: str) -> None:
    assert parse({**DNS_QUERY, "src_ip": src, "dest_ip": dest}).host == host


def test_list_of_objects_becomes_one_list_per_key() -> None:
    record = {
        **DNS_QUERY,
        "dns": {"answers": [{"rdata": "1.2.3.4", "ttl": 60}, {"rdata": "5.6.7.8", "ttl": 30}]},
    }
    fields = parse(record).fields
    assert fields["dns.answers.rdata"] == ["1.2.3.4", "5.6.7.8"]
    assert fields["dns.answers.ttl"] == [60, 30]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ("not json", "raw"),
        ("[1, 2]", "raw"),
        (json.dumps({"timestamp": "2024-04-01T09:30:00Z"}), "event_type"),
        (json.dumps({"event_type": "flow"}), "timestamp"),
        (json.dumps({"event_type": "flow", "timestamp": "soon"}), "timestamp"),
    ],
)
def test_bad_records_name_the_field(raw: str, field: str) -> None:
    with pytest.raises(ParseError) as err:
        parse(raw)
    assert err.value.field == field
    assert err.value.hint


@pytest.mark.corpus
def test_every_event_of_the_slips_capture_parses(corpus: Path) -> None:
    records = list(PARSER.read_file(corpus / SLIPS))
    events = [parse(record.raw) for record in records]
    assert len(events) == 5000
    counts = Counter(str(e.fields["event_type"]) for e in events)
    assert counts == {
        "flow": 3512,
        "alert": 745,
        "dns": 680,
        "http": 56,
        "fileinfo": 3,
        "anomaly": 3,
        "tls": 1,
    }
    first = events[0]
    assert first.observed_at == datetime(2021, 6, 6, 13, 59, 46, 457984, tzinfo=UTC)
    assert first.host == "192.168.1.129"
    assert first.fields["alert.signature_id"] == 2403388
    assert len({e.event_id for e in events}) == 5000


@pytest.mark.corpus
def test_crowdsec_eve_samples_parse_and_fast_log_does_not(corpus: Path) -> None:
    base = corpus / "suricata/crowdsec"
    eve = [
        record.raw
        for name in ("suricata-eve-detect", "suricata-logs-evelog")
        for record in PARSER.read_file(base / name / f"{name}.log")
    ]
    types = Counter(str(parse(raw).fields["event_type"]) for raw in eve)
    assert types == {"alert": 8, "flow": 2, "stats": 2}
    fast = list(PARSER.read_file(base / "suricata-logs-fastlog/suricata-logs-fastlog.log"))
    assert len(fast) == 4
    for record in fast:  # fast.log is not EVE: refused with a hint
        with pytest.raises(ParseError):
            parse(record.raw)


@pytest.mark.corpus
def test_sniff_picks_suricata_for_eve_files(corpus: Path) -> None:
    assert parser_for_file(corpus / SLIPS).name == "suricata_eve"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(line=st.text(max_size=300))
def test_parser_is_total_on_text(line: str) -> None:
    try:
        parse(line)
    except ParseError as err:
        assert err.field is not None


@given(value=JSON)
def test_parser_is_total_on_json_values(value: Any) -> None:
    for raw in (value, orjson.dumps(value).decode() if _encodable(value) else "null"):
        try:
            parse(raw)
        except ParseError as err:
            assert err.field is not None


@given(
    extra=st.dictionaries(st.text(max_size=8), JSON, max_size=5),
    timestamp=JSON,
    event_type=JSON,
)
def test_parser_is_total_on_eve_like_objects(
    extra: dict[str, Any], timestamp: Any, event_type: Any
) -> None:
    record = {**extra, "timestamp": timestamp, "event_type": event_type}
    try:
        event = parse(record)
    except ParseError as err:
        assert err.field is not None
    else:
        assert event.observed_at.tzinfo is UTC


def _encodable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return True
