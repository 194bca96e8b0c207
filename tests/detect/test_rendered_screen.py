"""テキスト段階の絞り込み (screen on the JSON text): ``otasuke detect`` reads an EVTX record's
(Channel, EventID) and searches the rules' literals in its JSON text before decoding it.
It is only a shortcut: the matches must be those of decoding every record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from otasuke.detect.command import Tally, scan_file
from otasuke.detect.sigma import RuleSet, native
from otasuke.detect.sigma.compile import ANY_FIELD
from otasuke.detect.sigma.index import (
    _LOWER_TO_ASCII,
    build_bucket,
    case_stable,
    hyperscan,
    lowercase_sources,
    rendered_forms,
    rendered_text,
)
from otasuke.detect.sigma.view import EventView
from otasuke.ingest.parsers import ParseContext
from otasuke.ingest.parsers.evtx import EvtxParser, rendered_key

ENGINES = ["pyahocorasick", *(["hyperscan"] if hyperscan is not None else [])]
PARSER = EvtxParser()
CTX = ParseContext()


def view_of(text: str) -> EventView:
    return EventView(PARSER.parse_for_detection(text, CTX).fields)


def matches(ruleset: RuleSet, files: list[Path], screen_text: bool) -> tuple[Tally, set[Any]]:
    tally = Tally()
    found = set()
    for path in files:
        for rule, event in scan_file(path, ruleset, tally, lambda _: None, screen_text=screen_text):
            found.add((rule.info.id, str(path), event.record_id))
    return tally, found


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled screen", "python screen"])
def test_corpus_matches_are_those_of_decoding_every_record(
    corpus: Path, compiled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every EVTX file of the corpus, the bundled rules: the same (rule, record) pairs,
    whichever screen runs (the compiled one only where it can: test_native_screen.py)."""
    if compiled and not native.available():
        pytest.skip("the compiled screen cannot run here (test_native_screen.py says why)")
    monkeypatch.setattr(native, "available", lambda: compiled)
    ruleset = RuleSet.load([Path(__file__).parents[2] / "src/otasuke/rules/sigma"])
    files = sorted((corpus / "evtx").rglob("*.evtx"))
    screened_tally, screened = matches(ruleset, files, screen_text=True)
    decoded_tally, decoded = matches(ruleset, files, screen_text=False)
    assert screened == decoded
    assert len(decoded) > 1000  # the corpus fires hundreds of rules: not an empty comparison
    assert screened_tally.records == decoded_tally.records > 10_000
    assert screened_tally.matches == decoded_tally.matches
    # Most records are ruled out on their text (66 % of the corpus when written).
    assert decoded_tally.screened == 0
    assert screened_tally.screened > screened_tally.records // 2


def test_key_from_the_text_is_the_key_of_the_fields(corpus: Path) -> None:
    """Where rendered_key answers, it equals the decoded record's (Channel, EventID)."""
    answered = unanswered = 0
    for path in sorted((corpus / "evtx").rglob("*.evtx")):
        for record in PARSER.read_rendered(path):
            if not isinstance(record.raw, str):
                continue
            key = rendered_key(record.raw)
            if key is None:
                unanswered += 1
                continue
            answered += 1
            assert key == view_of(record.raw).key(), record.location
    # Qualified EventIDs, quoted EventIDs and null channels are read too; a record
    # without a Channel element is the one left to decoding.
    assert answered > 10_000
    assert unanswered <= 5


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        ({"EventID": 4624, "Channel": "Security", "Computer": "pc"}, ("security", "4624")),
        (
            {"EventID": {"#attributes": {"Qualifiers": 16384}, "#text": 7036}, "Channel": "System"},
            None,  # no Computer after the Channel: not the renderer's System, decoded instead
        ),
        (
            {
                "EventID": {"#attributes": {"Qualifiers": 16384}, "#text": 7036},
                "Channel": "System",
                "Computer": "pc",
            },
            ("system", "7036"),
        ),
        ({"EventID": "0042", "Channel": "Security", "Computer": "pc"}, ("security", "42")),
        ({"EventID": 1, "Channel": None, "Computer": "pc"}, (None, "1")),
        ({"EventID": 1, "Channel": 'a"b', "Computer": "pc"}, None),
        ({"EventID": -1, "Channel": "Security", "Computer": "pc"}, None),
        ({"Channel": "Security", "Computer": "pc"}, None),
    ],
)
def test_key_shapes(system: dict[str, Any], expected: tuple[str | None, str] | None) -> None:
    provider = {"Provider": {"#attributes": {"Name": "P", "Guid": "{g}"}}}
    record = {"Event": {"#attributes": {"xmlns": "x"}, "System": {**provider, **system}}}
    assert rendered_key(orjson.dumps(record).decode()) == expected


def test_an_attribute_named_eventid_is_not_the_key() -> None:
    """Only System's own EventID (first, or right after an element) gives the key."""
    system = {
        "Provider": {"#attributes": {"Name": "P", "EventID": 9}},
        "EventID": 4624,
        "Channel": "Security",
        "Computer": "pc",
    }
    text = orjson.dumps({"Event": {"System": system}}).decode()
    assert rendered_key(text) is None


def test_forms_of_a_literal_in_json_text() -> None:
    assert rendered_forms("cmd.exe") == ("cmd.exe",)
    assert rendered_forms("\\cmd.exe") == ("\\cmd.exe", "\\\\cmd.exe")
    assert rendered_forms('" /c') == ('" /c', '\\" /c')
    assert rendered_forms("a\nb") == ("a\nb", "a\\nb")
    assert rendered_forms("日本語") == ("日本語",)
    assert rendered_forms("ας") == ("ασ",)  # final sigma: σ in literals and text alike


# Values with the characters JSON escapes, letters whose case changes, and non-ASCII.
# Few ordinary letters, so that most cut literals hold one of the others.
# An ASCII record is searched as it is, without lowercasing (Hyperscan, caseless): half
# the records are drawn from the ASCII characters alone.
ASCII_CHARS = "aZ0 " + '\\"/\n\t\x01\x7f'
CHARS = ASCII_CHARS + "İıΣς日\u212a\u212b–"  # Kelvin K, Angstrom Å (lowercase k, å), a dash
NAMES = ["Image", "CommandLine", "User", "Hashes", "Target Name", "Data", "Inner"]
names = st.sampled_from(NAMES)


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    values = st.text(alphabet=draw(st.sampled_from([ASCII_CHARS, CHARS])), max_size=12)
    data: dict[str, Any] = {}
    for name in draw(st.lists(names, max_size=4, unique=True)):
        data[name] = draw(
            st.one_of(
                values,
                st.integers(-5, 10**6),
                st.booleans(),
                st.none(),
                st.lists(values, max_size=3),
                st.fixed_dictionaries({"#text": values}),
                st.fixed_dictionaries({"Inner": values}),  # nested: its leaf name
            )
        )
    system = {
        "Provider": {"#attributes": {"Name": draw(values)}},
        "EventID": draw(st.integers(0, 70000)),
        "Channel": draw(st.one_of(st.none(), values)),
        "Computer": draw(values),
        "TimeCreated": {"#attributes": {"SystemTime": "2025-11-27T07:40:10.165324Z"}},
    }
    return {"Event": {"#attributes": {"xmlns": "x"}, "System": system, "EventData": data}}


PICKS = st.lists(
    st.tuples(st.integers(0, 10**6), st.integers(1, 6), st.sampled_from([*NAMES, ANY_FIELD])),
    min_size=1,
    max_size=6,
)
"""Where to cut literals from a record's values: (start, length, field or anywhere)."""


def cut_literals(view: EventView, picks: list[tuple[int, int, str]]) -> list[frozenset[Any]]:
    """One literal set per pick, cut from the view's joined values (so many do occur)."""
    joined = view.search_text()
    literals = []
    for start, length, field in picks:
        literal = joined[start % max(len(joined), 1) :][:length].replace("\0", "") or "x"
        literals.append(frozenset({(field.lower().replace(" ", ""), literal)}))
    return literals


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=records(), picks=PICKS, engine=st.sampled_from(ENGINES))
@example(  # σ and ς share the form σ: two literal numbers behind one pyahocorasick word
    record={
        "Event": {
            "System": {
                "Provider": {"#attributes": {"Name": "ΣΣ"}},
                "EventID": 0,
                "Channel": None,
                "Computer": "",
                "TimeCreated": {"#attributes": {"SystemTime": "2025-11-27T07:40:10.165324Z"}},
            },
            "EventData": {},
        }
    },
    picks=[(0, 1, "Image"), (1, 1, ANY_FIELD)],
    engine="pyahocorasick",
)
def test_screen_never_drops_a_candidate(
    record: dict[str, Any], picks: list[tuple[int, int, str]], engine: str
) -> None:
    """Literals cut from the record's own values (so many do occur), per field or anywhere:
    every rule the view's prefilter keeps, the text's keeps too."""
    text = orjson.dumps(record).decode()
    view = view_of(text)
    literals = cut_literals(view, picks)
    bucket = build_bucket(list(range(len(literals))), literals, engine)
    found = bucket.rendered_found(text)
    assert set(bucket.candidates(view)) <= set(bucket.candidates(view, found))
    key = rendered_key(text)
    if key is not None:
        assert key == view.key()


KEY_TEXTS = st.one_of(
    st.text(max_size=200),
    st.builds(
        lambda head, tail: head + tail,
        st.sampled_from(
            [
                '{"Event":{"System":{',
                '{"Event":{"#attributes":{',
                '{"Event":{"#attributes":{"xmlns":"x"},"System":{"Provider":{}},',
                "{",
            ]
        ),
        st.text(alphabet='"EventID:Channel,Computer{}#attributes0123456789 \\nul-', max_size=120),
    ),
)
"""Texts near the renderer's opening: quotes, braces not found, leading zeros."""


@settings(max_examples=500, deadline=None)
@given(KEY_TEXTS)
def test_key_reader_never_fails_on_any_text(text: str) -> None:
    """Whatever text comes, rendered_key answers a key or None, never an exception."""
    key = rendered_key(text)
    assert key is None or (isinstance(key[1], str) and key[1].isdigit())


def test_texts_are_searched_unlowered_only_where_lowercasing_changes_nothing_else() -> None:
    """All of Unicode: what the search of texts as they are (Hyperscan ``CASELESS``, no
    ``str.lower``) relies on. Only İ and the Kelvin sign lowercase to ASCII letters or to
    more than one character; a case-stable character comes from itself alone; any other
    non-ASCII character of a lowercased text comes from one of its lowercase_sources."""
    for code in range(0x110000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        char = chr(code)
        lowered = rendered_text(char)
        if char.isascii():
            continue
        if len(lowered) != 1 or lowered.isascii():
            assert char in _LOWER_TO_ASCII, hex(code)
            continue
        if case_stable(lowered):
            assert lowered == char, hex(code)
        else:
            assert char in lowercase_sources(lowered), hex(code)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("zı", "ı"),  # dotless i: its own lowercase only
        ("ΑΣΑ", "ασα"),  # Greek capitals
        ("ΟΔΟΣ", "οδος"),  # final sigma (σ in the patterns)
        ("\u1e9e", "ß"),  # capital sharp s
        ("\u212b", "å"),  # Angstrom sign
        ("À la", "à la"),
        ("Microsoft® – Ü", "® – ü"),  # ® and the dash as they are, Ü lowercased
    ],
)
def test_cased_non_ascii_literals_are_found_in_the_text(
    engine: str, value: str, literal: str
) -> None:
    """A literal with cased non-ASCII letters is found whatever the case in the record:
    the search of texts as they are hands such texts to the lowercased search."""
    record = {
        "Event": {
            "System": {
                "EventID": 1,
                "Channel": "Security",
                "Computer": "pc",
                "TimeCreated": {"#attributes": {"SystemTime": "2025-11-27T07:40:10.165324Z"}},
            },
            "EventData": {"Image": value, "Other": "®"},
        }
    }
    text = orjson.dumps(record).decode()
    bucket = build_bucket(
        [0, 1], [frozenset({("image", literal)}), frozenset({("x", "zz")})], engine
    )
    found = bucket.rendered_found(text)
    assert [bucket.payloads[number][0] for number in found] == [literal]
    assert bucket.candidates(view_of(text), found) == [0]
