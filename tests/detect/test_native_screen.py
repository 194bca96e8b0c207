"""ネイティブ選別 (compiled screen): ``otasuke._speedups.RecordScreen`` searches EVTX
records' JSON text for the rules' literals with Hyperscan's C library, in one loop. It must
let through exactly the records the Python screen lets through, with the same literals
found; ``make install`` builds it, Debian's libhyperscan5 provides the library, CI
requires both."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otasuke.detect.sigma import RuleSet, native
from otasuke.detect.sigma.index import PREFILTER_CACHE, Bucket, build_bucket
from otasuke.ingest.parsers.evtx import EvtxParser, rendered_key
from tests.detect.test_rendered_screen import KEY_TEXTS, PICKS, cut_literals, records, view_of

if not native.available():  # pragma: no cover - depends on the machine
    if os.environ.get("CI") == "true":
        pytest.fail(
            "the compiled screen cannot run: build otasuke._speedups (make install) and "
            "install Hyperscan's C library (apt-get install libhyperscan5)"
        )
    pytest.skip(
        "the compiled screen cannot run here (otasuke._speedups not built or libhs.so.5 "
        "missing: apt-get install libhyperscan5); the Python screen runs alone",
        allow_module_level=True,
    )

from otasuke import _speedups

PARSER = EvtxParser()
KEY = ("security", "1")


def screen_with(bucket: Bucket, compiled: bool) -> Any:
    """A record screen over one bucket, every text read as of key ``KEY``."""
    if compiled:
        return _speedups.RecordScreen(
            lambda _text: KEY, lambda _key: bucket.native_screen(), lambda *made: made
        )
    search = bucket.rendered_search()
    always = bool(bucket.always)

    class Python:
        ruled_out = 0

        def next_passing(self, items: Iterator[Any]) -> tuple[Any, Any]:
            for item in items:
                found = search(item["data"])
                if found or always:
                    return item, (KEY, bucket, found)
                self.ruled_out += 1
            raise StopIteration

    return Python()


def found_by(bucket: Bucket, text: str, compiled: bool) -> set[int] | None:
    """The literal numbers the screen finds in ``text``; None: ruled out."""
    screen = screen_with(bucket, compiled)
    try:
        _item, (_key, _bucket, found) = screen.next_passing(iter([{"data": text}]))
    except StopIteration:
        assert screen.ruled_out == 1
        return None
    return set(found)


def test_corpus_records_pass_and_find_alike(corpus: Path) -> None:
    """Every corpus record, the bundled rules: the same records let through, with the same
    keys and literal numbers, and the same count ruled out."""
    ruleset = RuleSet.load([Path(__file__).parents[2] / "src/otasuke/rules/sigma"])
    compiled = ruleset.record_screen(PARSER.rendered_key, compiled=True)
    python = ruleset.record_screen(PARSER.rendered_key, compiled=False)
    assert type(compiled) is _speedups.RecordScreen
    passed = 0
    for path in sorted((corpus / "evtx").rglob("*.evtx")):
        both = [
            [
                (record.location, s and (s.key, s.bucket, sorted(s.found)))
                for record, s in PARSER.read_screened(path, screen)
            ]
            for screen in (compiled, python)
        ]
        assert both[0] == both[1], path
        passed += len(both[0])
    assert compiled.ruled_out == python.ruled_out > 5_000
    assert passed > 2_000


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    record=records(),
    picks=PICKS,
    always=st.booleans(),
    case=st.sampled_from([str, str.upper, str.lower, str.swapcase]),
)
def test_generated_records_find_the_same_literals(
    record: dict[str, Any],
    picks: list[tuple[int, int, str]],
    always: bool,
    case: Any,
) -> None:
    """Literals cut from the record's own values (non-ASCII, İ, Kelvin K, Σ/ς, escapes
    included), the text's case changed: the compiled screen finds what the Python one does."""
    text = orjson.dumps(record).decode()
    literals: list[frozenset[tuple[str, str]] | None] = [*cut_literals(view_of(text), picks)]
    if always:
        literals.append(None)
    bucket = build_bucket(list(range(len(literals))), literals, "hyperscan")
    cased = case(text)
    assert found_by(bucket, cased, compiled=True) == found_by(bucket, cased, compiled=False)


@pytest.mark.parametrize(
    ("value", "literal", "found"),
    [
        ("zı", "ı", True),  # dotless i
        ("ΑΣΑ", "ασα", True),  # Greek capitals: the lowercased search
        ("ΟΔΟΣ", "οδος", True),  # final sigma
        ("\u212b", "å", True),  # Angstrom sign
        ("Microsoft® – Ü", "® – ü", True),
        ("KELVIN \u212a", "kelvin k", True),  # Kelvin sign lowercases to ASCII k
        ("İSTANBUL", "i̇stanbul", True),  # İ lowercases to two characters
        ("C:\\Temp\\X.EXE", "\\temp\\x.exe", True),  # escaped in JSON
        ('say "Hi"', 'y "hi', True),
        ("nothing here", "absent", False),
    ],
)
def test_literals_found_whatever_the_case(value: str, literal: str, found: bool) -> None:
    record = {
        "Event": {
            "System": {"EventID": 1, "Channel": "Security", "Computer": "pc"},
            "EventData": {"Image": value},
        }
    }
    text = orjson.dumps(record).decode()
    bucket = build_bucket([0, 1], [frozenset({("image", literal)}), frozenset({("x", "zz")})])
    numbers = found_by(bucket, text, compiled=True)
    assert numbers == found_by(bucket, text, compiled=False)
    if found:
        assert numbers is not None
        assert [bucket.payloads[n][0] for n in numbers] == [literal]
    else:
        assert numbers is None


def test_items_it_cannot_screen_come_back_unscreened() -> None:
    """Not a dict, no text, a key it cannot read: handed back with None, in order; the
    records in between that no rule can match are counted, not lost."""
    bucket = build_bucket([0], [frozenset({("image", "evil")})])
    screen = _speedups.RecordScreen(
        lambda text: None if text == "nokey" else KEY,
        lambda _key: bucket.native_screen(),
        lambda *made: made,
    )
    items: list[Any] = [
        {"data": "calm"},
        "not a dict",
        {"data": b"bytes"},
        {"data": "nokey"},
        {"data": '{"Image":"EVIL.exe"}'},
        {"data": "calm again"},
    ]
    stream = iter(items)
    assert screen.next_passing(stream) == ("not a dict", None)
    assert screen.next_passing(stream) == ({"data": b"bytes"}, None)
    assert screen.next_passing(stream) == ({"data": "nokey"}, None)
    item, (key, screened_bucket, found) = screen.next_passing(stream)
    assert item == items[4] and key == KEY and screened_bucket is bucket
    assert [bucket.payloads[n][0] for n in found] == ["evil"]
    with pytest.raises(StopIteration):
        screen.next_passing(stream)
    assert screen.ruled_out == 2

    def failing() -> Iterator[Any]:
        yield {"data": "calm"}
        raise RuntimeError("damaged chunk")

    with pytest.raises(RuntimeError, match="damaged chunk"):
        screen.next_passing(failing())
    assert screen.ruled_out == 3


def test_databases_are_kept_and_a_damaged_one_is_rebuilt(tmp_path: Path) -> None:
    """The C library's databases go to the cache folder like the binding's; an entry that
    does not load is compiled again, and the screen still finds what it should."""
    literals = [frozenset({("image", "mimikatz")}), frozenset({("commandline", "a\0b")})]
    text = orjson.dumps({"Image": "C:\\mimikatz.exe", "CommandLine": "a\0b"}).decode()

    def fresh() -> Bucket:
        return build_bucket([0, 1], literals, "hyperscan", cache_dir=tmp_path)

    assert found_by(fresh(), text, compiled=True) == {0, 1}  # NUL: a literal like any other
    entries = {p.name: p for p in (tmp_path / PREFILTER_CACHE).glob("*.hs")}
    native_entries = [p for p in entries.values() if p.read_bytes()]
    assert native_entries
    for entry in entries.values():
        entry.write_bytes(b"damaged")
    assert found_by(fresh(), text, compiled=True) == {0, 1}
    assert all(p.read_bytes() != b"damaged" for p in entries.values())
    with pytest.raises(ValueError, match="not a Hyperscan database"):
        _speedups.LiteralDatabase.load(b"damaged", 1)


WINDOWS_OPENING = (
    '{"Event":{"#attributes":{"xmlns":"http://schemas.microsoft.com/win/2004/08/events/event"},'
    '"System":{'
)
RENDERED = st.builds(
    lambda head, event_id, channel, tail: (
        f'{head}"EventID":{event_id},"Version":5,"Channel":{channel},"Computer":"pc"}}{tail}'
    ),
    st.sampled_from([WINDOWS_OPENING, '{"Event":{"System":{', '{"Event":{"System":{"A":{}},']),
    st.sampled_from(["1", "4688", '"7"', "007", '""', "12345678901234567890123", "-1", "1 "]),
    st.sampled_from(
        [
            '"Security"',
            '"Microsoft-Windows-Sysmon/Operational"',
            "null",
            '"a\\b"',
            '"Sécurité"',
            '"Журнал"',
            '"x"',
        ]
    ),
    st.sampled_from(["}", ',"EventData":{"Channel":"other"}}}']),
)


@settings(max_examples=400, deadline=None)
@given(texts=st.lists(RENDERED | KEY_TEXTS, min_size=1, max_size=8))
def test_the_screen_reads_keys_as_rendered_key_does(texts: list[str]) -> None:
    """The compiled screen's own key reading (and its reuse of the last key): every text
    of a stream gets rendered_key's key, or comes back unscreened where that is None."""
    bucket = build_bucket([0], [None])  # one rule evaluated on every record: all pass
    screen = _speedups.RecordScreen(
        _speedups.rendered_key, lambda _key: bucket.native_screen(), lambda key, *_rest: key
    )
    stream = iter([{"data": text} for text in texts])
    for text in texts:
        _item, key = screen.next_passing(stream)
        assert key == rendered_key(text), text
