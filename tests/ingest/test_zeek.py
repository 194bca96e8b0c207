"""Zeek ログ: JSON and TSV records with Zeek's own field names and the log type."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otasuke.errors import ParseError
from otasuke.ingest.parsers import ParseContext
from otasuke.ingest.parsers.zeek import ZeekParser

CTX = ParseContext()
PARSER = ZeekParser()


def test_tsv_header_types_and_unset_fields(corpus: Path) -> None:
    path = corpus / "zeek" / "slips" / "test10-mixed-zeek-dir" / "dns.log"
    assert PARSER.sniff(path, path.read_bytes()[:4096])
    record = next(iter(PARSER.read_file(path)))
    event = PARSER.parse(record.raw, CTX)
    fields = event.fields
    assert fields["_path"] == "dns" and fields["query"] == "clients6.google.com"
    assert fields["id.resp_p"] == 53 and fields["AA"] is False and fields["RD"] is True
    assert fields["answers"] == ["clients.l.google.com", "2a00:1450:4014:80c::200e"]
    assert event.observed_at.year == 2020


def test_json_log_type_from_file_name_or_fields(corpus: Path) -> None:
    path = corpus / "zeek" / "slips" / "test9-mixed-zeek-dir" / "http.log"
    event = PARSER.parse(next(iter(PARSER.read_file(path))).raw, CTX)
    assert event.fields["_path"] == "http" and "id.orig_h" in event.fields
    line = '{"ts": 1.5, "uid": "C1", "query": "example.com", "qtype_name": "A"}'
    assert PARSER.parse(line, CTX).fields["_path"] == "dns"


def test_gzip_json_logs_are_read(corpus: Path) -> None:
    folder = corpus / "zeek" / "wrccdc-2018" / "zeek-json"
    path = next(p for p in sorted(folder.glob("*.json.gz")) if p.name.startswith("dce_rpc"))
    assert PARSER.sniff(path, path.read_bytes()[:4096])
    events = [PARSER.parse(r.raw, CTX) for r in PARSER.read_file(path)]
    assert events and all(e.fields["_path"] == "dce_rpc" for e in events)


def test_every_slips_record_with_a_time_parses(corpus: Path) -> None:
    count = 0
    for path in sorted((corpus / "zeek" / "slips").rglob("*.log")):
        if "loaded_scripts" in path.name or not PARSER.sniff(path, path.read_bytes()[:4096]):
            continue
        for record in PARSER.read_file(path):
            PARSER.parse(record.raw, CTX)
            count += 1
    assert count > 1_000


def test_missing_ts_is_a_parse_error(tmp_path: Path) -> None:
    with pytest.raises(ParseError) as err:
        PARSER.parse('{"uid": "C1"}', CTX)
    assert err.value.field == "ts"
    gz = tmp_path / "conn.log.gz"
    gz.write_bytes(gzip.compress(b'{"ts": 1.0, "uid": "C1", "id.orig_h": "10.0.0.1"}\n'))
    assert PARSER.sniff(gz, gz.read_bytes()[:4096])


@given(line=st.text(max_size=300))
def test_parser_is_total(line: str) -> None:
    try:
        PARSER.parse(line, CTX)
    except ParseError as err:
        assert err.field is not None
