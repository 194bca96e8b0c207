"""JSON Lines reference parser (汎用 JSON ログ): flattening, times, totality."""

from __future__ import annotations

import contextlib
import json
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from otasuke.errors import ParseError
from otasuke.ingest.event import Event, SourceFormat
from otasuke.ingest.parsers import ParseContext, get_parser
from otasuke.ingest.parsers.jsonl import JsonLinesParser, flatten

PARSER = JsonLinesParser()
CTX = ParseContext(sensor="test")


def parse(raw: str | dict[str, Any]) -> Event:
    return PARSER.parse(raw, CTX)


def test_registered_under_its_format_name() -> None:
    assert isinstance(get_parser("jsonl"), JsonLinesParser)


def test_nested_objects_get_dotted_keys() -> None:
    event = parse('{"@timestamp": "2024-04-01T00:30:00Z", "a": {"b": {"c": 1}}, "l": [1, "x"]}')
    assert event.source_format is SourceFormat.JSONL
    assert event.fields["a.b.c"] == 1
    assert event.fields["l"] == [1, "x"]
    assert event.observed_at == datetime(2024, 4, 1, 0, 30, tzinfo=UTC)


def test_flatten_lists_of_objects_and_nested_lists() -> None:
    assert flatten({"x": [{"a": 1}, {"a": 2, "b": [3, [4]]}], "e": []}) == {
        "x.a": [1, 2],
        "x.b": [3, 4],
        "e": [],
    }


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("timestamp", "2024-04-01T09:30:00+09:00", datetime(2024, 4, 1, 0, 30, tzinfo=UTC)),
        ("time", "2024-04-01 09:30:00", datetime(2024, 4, 1, 0, 30, tzinfo=UTC)),  # JST
        ("time", 1711931400, datetime(2024, 4, 1, 0, 30, tzinfo=UTC)),
        ("time", 1711931400000, datetime(2024, 4, 1, 0, 30, tzinfo=UTC)),
        (
            "@timestamp",
            "2024-04-01T00:30:00.123456789Z",
            datetime(2024, 4, 1, 0, 30, 0, 123456, tzinfo=UTC),
        ),
    ],
)
def test_time_fields(key: str, value: Any, expected: datetime) -> None:
    assert parse({key: value}).observed_at == expected


def test_record_without_time_gets_the_current_time() -> None:
    before = datetime.now(UTC)
    observed = parse({"msg": "hello"}).observed_at
    assert before <= observed <= before + timedelta(seconds=5)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ("{", "raw"),
        ("42", "raw"),
        ('{"timestamp": "next tuesday"}', "timestamp"),
        ('{"time": true}', "time"),
        ('{"time": 1e300}', "time"),
    ],
)
def test_bad_records_name_the_field(raw: str, field: str) -> None:
    with pytest.raises(ParseError) as err:
        parse(raw)
    assert err.value.field == field


def test_too_deep_nesting_is_refused() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(100):
        node["n"] = {}
        node = node["n"]
    with pytest.raises(ParseError, match="nested deeper"):
        parse(deep)


def test_host_from_common_keys() -> None:
    assert parse({"host": {"name": "PC-01"}}).host == "PC-01"
    assert parse({"Computer": "PC-02.example.local"}).host == "PC-02.example.local"


def test_sniff_only_generic_jsonl_files(tmp_path: Path) -> None:
    generic = b'{"msg": "hi"}\n'
    assert PARSER.sniff(tmp_path / "a.jsonl", generic)
    assert not PARSER.sniff(tmp_path / "a.json", generic)
    assert not PARSER.sniff(tmp_path / "a.jsonl", b'{"event_type": "dns"}\n')


@pytest.mark.corpus
def test_otrf_winlogbeat_lines_parse(corpus: Path) -> None:
    """Real JSON lines: every record of one OTRF dataset zip (MIT)."""
    base = corpus / "json-events/otrf-security-datasets/atomic/windows"
    archive = sorted(base.rglob("*.zip"))[0]
    with zipfile.ZipFile(archive) as zf:
        lines = [
            line
            for name in zf.namelist()
            if not name.endswith("/")
            for line in zf.read(name).decode("utf-8", "replace").splitlines()
            if line.strip()
        ]
    events = [parse(line) for line in lines]
    assert len(events) == len(lines) > 0
    assert all(json.loads(e.raw) for e in events)


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


@given(value=JSON, time=JSON)
def test_parser_is_total_on_json_values(value: Any, time: Any) -> None:
    candidates: list[Any] = [value, {"time": time, "v": value}]
    for candidate in list(candidates):
        with contextlib.suppress(TypeError, orjson.JSONEncodeError):
            candidates.append(orjson.dumps(candidate).decode())
    for raw in candidates:
        try:
            parse(raw)
        except ParseError as err:
            assert err.field is not None
