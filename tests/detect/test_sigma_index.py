"""ルール索引: the one-pass literal prefilter, literals required by regexes, the event view,
and which rules count as Windows rules."""

from __future__ import annotations

import platform
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otasuke.detect.sigma import RuleSet
from otasuke.detect.sigma.compile import ANY_FIELD
from otasuke.detect.sigma.index import BUCKET_CACHE, build_bucket, hyperscan, literal_matcher
from otasuke.detect.sigma.values import (
    _FOLD_UNSAFE,
    MIN_REGEX_LITERAL,
    gapped_runs,
    regex_guard,
    regex_literal,
)
from otasuke.detect.sigma.values import test_from_recipe as rebuilt_test
from otasuke.detect.sigma.view import EventView, text_of

RULE = """
title: {title}
id: {id}
status: test
author: Otasuke tests
level: high
logsource:
{logsource}
detection:
{detection}
"""
WINDOWS = "    product: windows\n    category: process_creation"


def load(tmp_path: Path, *rules: tuple[str, str]) -> RuleSet:
    """Rules from (logsource, detection) pairs, one file each."""
    for number, (logsource, detection) in enumerate(rules):
        text = RULE.format(
            title=f"rule {number}",
            id=f"00000000-0000-0000-0000-{number:012d}",
            logsource=logsource,
            detection=detection,
        )
        (tmp_path / f"rule{number}.yml").write_text(text, encoding="utf-8")
    loaded = RuleSet.load([tmp_path])
    assert not loaded.refused, loaded.refused
    return loaded


def sysmon(**fields: Any) -> dict[str, Any]:
    return {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1, **fields}


def titles(rules: RuleSet, fields: dict[str, Any]) -> list[str]:
    return [rule.title for rule in rules.match(fields)]


# --- the prefilter: one literal matcher, one search per event -------------------------------

ENGINES = ["pyahocorasick", *(["hyperscan"] if hyperscan is not None else [])]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@settings(max_examples=300, deadline=None)
@given(
    literals=st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=12, unique=True),
    text=st.text(max_size=40),
)
def test_matchers_find_exactly_the_literals_in_the_text(literals: list[str], text: str) -> None:
    """Both engines answer as ``literal in text`` does, for any Unicode text."""
    expected = {n for n, literal in enumerate(literals) if literal in text}
    for name in ENGINES:
        assert set(literal_matcher(literals, name).found(text)) == expected, name


def test_hyperscan_is_used_where_installed() -> None:
    """The fast engine is not silently lost (the bench figures assume it on x86-64)."""
    if platform.machine() in ("x86_64", "AMD64"):
        assert hyperscan is not None, "pip install hyperscan (a pinned dependency on x86-64)"
        assert literal_matcher(["x"]).engine == "hyperscan"


def test_field_literal_counts_only_in_its_field(engine: str) -> None:
    bucket = build_bucket(["a", "b"], [frozenset({("commandline", "mimikatz")}), None], engine)
    assert bucket.candidates(EventView({"CommandLine": "run MIMIKATZ now"})) == [0, 1]
    assert bucket.candidates(EventView({"Image": "mimikatz.exe", "CommandLine": "x"})) == [1]
    assert bucket.candidates(EventView({"Image": "mimikatz.exe"})) == [1]


def test_keyword_literal_counts_in_any_value_and_list_items(engine: str) -> None:
    bucket = build_bucket(["k"], [frozenset({(ANY_FIELD, "dumpcreds")})], engine)
    assert bucket.candidates(EventView({"A": "1", "B": "x DumpCreds y"})) == [0]
    assert bucket.candidates(EventView({"A": ["x", "dumpcreds"], "B": None})) == [0]
    assert bucket.candidates(EventView({"A": "dump", "B": "creds"})) == []


def test_field_literal_in_a_list_value(engine: str) -> None:
    bucket = build_bucket(["r"], [frozenset({("hashes", "md5=abc")})], engine)
    assert bucket.candidates(EventView({"Hashes": ["SHA1=00", "MD5=ABC"]})) == [0]
    assert bucket.candidates(EventView({"Hashes": ["SHA1=00"], "Other": "md5=abc"})) == []


def test_one_literal_wanted_by_several_fields_and_keywords(engine: str) -> None:
    bucket = build_bucket(
        ["image", "keyword", "commandline"],
        [
            frozenset({("image", "evil")}),
            frozenset({(ANY_FIELD, "evil")}),
            frozenset({("commandline", "evil")}),
        ],
        engine,
    )
    assert bucket.candidates(EventView({"CommandLine": "evil"})) == [1, 2]
    assert bucket.candidates(EventView({"Image": "EVIL", "CommandLine": "good"})) == [0, 1]
    assert bucket.matcher is not None and len(bucket.payloads) == 1


def test_bucket_without_literals_has_no_matcher() -> None:
    bucket = build_bucket(["a", "b"], [None, frozenset()])
    assert bucket.matcher is None
    assert bucket.candidates(EventView({"A": "x"})) == [0, 1]


def test_keyword_and_field_rules_end_to_end(tmp_path: Path) -> None:
    rules = load(
        tmp_path,
        (WINDOWS, "    keywords:\n        - 'sekurlsa::'\n    condition: keywords"),
        (
            WINDOWS,
            "    selection:\n        CommandLine|contains: 'whoami'\n    condition: selection",
        ),
    )
    assert titles(rules, sysmon(CommandLine="x sekurlsa::logonpasswords")) == ["rule 0"]
    assert titles(rules, sysmon(Image="c:\\whoami.exe", CommandLine="y")) == []
    assert titles(rules, sysmon(CommandLine="WHOAMI /all")) == ["rule 1"]


# --- literals required by regular expressions ----------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "flags", "expected"),
    [
        (r"cmd.{0,5}(?:/c|/r).+powershell", 0, "powershell"),
        (r"\$PSHome\[\s*\d{1,3}\s*\]", 0, "$pshome["),
        (r"(?:ab(cde)){2,}x", 0, "abcde"),
        (r"(?P<g>Net)User", 0, "netuser"),
        (r"(?>abc)d", 0, "abcd"),
        (r"(?i)echo.*clip", 0, "echo"),  # "clip": i ends a run under |i
        (r"invoke-expression", re.IGNORECASE, "nvoke-expre"),
        (r"invoke-expression", 0, "invoke-expression"),
        (r"ab|cdef", 0, None),  # alternatives: no run every match contains
        (r"(?i:abcdef)", 0, None),  # a group with its own flags
        (r"x(?=abcdef)", 0, None),  # lookahead: not part of the match
        (r"(?:abcdef)?x", 0, None),
        (r"(?:abcdef)*", 0, None),
        (r"ab", 0, None),  # shorter than MIN_REGEX_LITERAL
        (r"\u00e9t\u00e9s", 0, None),  # non-ASCII ends a run
        (r"[abc]def", 0, "def"),
        (r"(", 0, None),  # does not parse: no literal (the rule is refused elsewhere)
    ],
)
def test_regex_literal(pattern: str, flags: int, expected: str | None) -> None:
    assert regex_literal(pattern, flags) == expected


def test_fold_unsafe_letters_cover_unicode() -> None:
    """Under re.IGNORECASE an ASCII character outside _FOLD_UNSAFE matches only characters
    whose str.lower() is its own lowercase: the literal run lowercased stays exact."""
    others = "".join(chr(c) for c in range(0x80, sys.maxunicode + 1) if not 0xD800 <= c < 0xE000)
    safe = [chr(c) for c in range(0x20, 0x7F) if chr(c) not in _FOLD_UNSAFE]
    matched = set(re.findall("[" + re.escape("".join(safe)) + "]", others, re.IGNORECASE))
    for char in matched:
        for ascii_char in safe:
            if re.fullmatch(re.escape(ascii_char), char, re.IGNORECASE):
                assert char.lower() == ascii_char.lower(), (hex(ord(char)), ascii_char)
    assert re.search("(?i)invoke", "\u0130NVOKE") and "nvoke" in "\u0130NVOKE".lower()


PATTERNS = [
    r"cmd.{0,5}(?:/c|/r).+powershell.+(?:\$\{?input\}?|noexit).+\"",
    r"(?i)echo.*clip.*&&.*(?:Clipboard|i`?n`?v`?o`?k`?e`?)",
    r"(?i)\$\{env:path\}\s*-f",
    r"\$env:ComSpec\[(?:\s*\d{1,3}\s*,){2}",
    r"(?i)\.exe[\"']?\s+[^\"]{0,64}werfaultsecure\.exe",
    r"(?i)Kelvin.{0,3}STRASSE",
    r"net\s+(?:user|group)\s+/domain",
]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_match_contains_the_regex_literal(data: st.DataObject) -> None:
    pattern = data.draw(st.sampled_from(PATTERNS))
    literal = regex_literal(pattern, 0)
    assert literal is not None and len(literal) >= MIN_REGEX_LITERAL
    value = data.draw(st.from_regex(pattern))
    assert re.search(pattern, value)
    assert literal in value.lower()


@pytest.mark.parametrize(
    ("pattern", "flags", "expected"),
    [
        (r"\+.*\+.*\+", 0, ((("+", 3),), False)),
        (r"`.*`", 0, ((("`", 2),), False)),
        (r"\u00e9t\u00e9", 0, ((("\u00e9t\u00e9", 1),), False)),
        (r"(?i)AB.*ab", 0, ((("ab", 2),), True)),
        (r"(?i)\u00e9t\u00e9", 0, ((("t", 1),), True)),
        (r"a|b", 0, ((), False)),
    ],
)
def test_regex_guard(pattern: str, flags: int, expected: object) -> None:
    assert regex_guard(pattern, flags) == expected


GUARDED = [
    *PATTERNS,
    r"\+.*\+.*\+.*\+",
    r"`.*`.*`",
    r"(?i)ab.*AB.*aB",
    r"\u00e9t\u00e9.{1,3}x",
    r"(?i)\u00e9t\u00e9s.{1,3}K",
]


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_guarded_regex_agrees_with_search(data: st.DataObject) -> None:
    pattern = data.draw(st.sampled_from(GUARDED))
    flags = data.draw(st.sampled_from([0, re.IGNORECASE]))
    value = data.draw(
        st.from_regex(pattern) | st.text("+`aAbB\u00e9\u0130\u017ftsSxK\u212a", max_size=20)
    )
    guarded = rebuilt_test(("re", pattern, flags))
    assert guarded(value) == (re.search(pattern, value, flags) is not None)


@pytest.mark.parametrize(
    "value", ["\u0130nvoke-ExpreSSion", "INVOKE-EXPRESSION", "invoke-expre\u017f\u017fion"]
)
def test_case_insensitive_regex_rule_fires_through_the_prefilter(
    tmp_path: Path, value: str
) -> None:
    rules = load(
        tmp_path,
        (
            WINDOWS,
            "    selection:\n        CommandLine|re|i: 'invoke-expression'\n"
            "    condition: selection",
        ),
    )
    assert rules._literals[0] == frozenset({("commandline", "nvoke-expre")})
    assert re.search("invoke-expression", value, re.IGNORECASE)
    assert titles(rules, sysmon(CommandLine=f"x {value} y")) == ["rule 0"]
    assert titles(rules, sysmon(Image=value, CommandLine="x")) == []


# --- which rules are Windows rules -----------------------------------------------------------


def test_service_without_product_is_not_a_windows_rule(tmp_path: Path) -> None:
    keywords = "    keywords:\n        - 'exit signal Segmentation Fault'\n    condition: keywords"
    rules = load(
        tmp_path,
        ("    service: apache", keywords),
        ("    product: windows", keywords),
        ("    category: antivirus", keywords),
    )
    assert [rule.windows for rule in rules.compiled] == [False, True, True]
    fields = sysmon(CommandLine="exit signal Segmentation Fault")
    assert titles(rules, fields) == ["rule 1", "rule 2"]


# --- the event view --------------------------------------------------------------------------


def test_view_converts_values_as_sigma_compares_them() -> None:
    view = EventView(
        {
            "EventID": 4688,
            "Flag": True,
            "Ratio": 1.5,
            "Empty": None,
            "Items": [1, "B", None, False],
            "Image": "C:\\X.exe",
        }
    )
    assert view.original == {
        "eventid": "4688",
        "flag": "true",
        "ratio": "1.5",
        "empty": None,
        "items": ["1", "B", "false"],
        "image": "C:\\X.exe",
    }
    assert view.lower["items"] == ["1", "b", "false"]
    assert view.lower["image"] == "c:\\x.exe"
    assert view.all_values(cased=True) == ["4688", "true", "1.5", "1", "B", "false", "C:\\X.exe"]
    assert view.search_text() == "\0".join(view.all_values(cased=False))
    assert text_of(False) == "false" and text_of(7) == "7" and text_of((1, None)) == ["1"]


def test_view_later_name_wins_and_spaced_names_get_an_alias() -> None:
    view = EventView({"ProcessID": 4, "ProcessId": 88, "Threat Name": "Trojan:X"})
    assert view.original == {"processid": "88", "threat name": "Trojan:X", "threatname": "Trojan:X"}
    assert view.all_values(cased=False) == ["88", "trojan:x", "trojan:x"]
    assert view.search_text() == "88\0trojan:x\0trojan:x"
    assert view.key() == (None, None)


def test_view_key() -> None:
    view = EventView({"Channel": "Security", "EventID": 4624})
    assert view.key() == ("security", "4624")


@pytest.mark.skipif(hyperscan is None, reason="Hyperscan is not installed on this platform")
def test_compiled_prefilters_are_cached_and_a_damaged_entry_is_rebuilt(tmp_path: Path) -> None:
    literals = [frozenset({("commandline", "mimikatz")}), frozenset({(ANY_FIELD, "sekurlsa")})]
    event = EventView({"CommandLine": "x MIMIKATZ", "Other": "sekurlsa::x"})
    first = build_bucket(["a", "b"], literals, cache_dir=tmp_path)
    assert not (tmp_path / "prefilter").exists()  # built on first use
    assert first.candidates(event) == [0, 1]
    entries = list((tmp_path / "prefilter").glob("*.hs"))
    assert len(entries) == 1
    # the same literals again: the entry is reused, not a second one written
    assert build_bucket(["a", "b"], literals, cache_dir=tmp_path).candidates(event) == [0, 1]
    assert list((tmp_path / "prefilter").glob("*.hs")) == entries
    # a damaged entry (a disk error, another CPU) is compiled again and replaced
    entries[0].write_bytes(b"not a database")
    assert build_bucket(["a", "b"], literals, cache_dir=tmp_path).candidates(event) == [0, 1]
    assert entries[0].read_bytes() != b"not a database"


_VALUES = st.one_of(
    st.text(max_size=8),
    st.integers(),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.lists(st.one_of(st.text(max_size=4), st.integers(), st.none()), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=6), _VALUES, max_size=8))
def test_event_view_is_the_same_the_first_and_the_second_time(fields: dict[str, Any]) -> None:
    """The first view of new field names learns them; the next takes the fast path."""
    first, second = EventView(fields), EventView(fields)
    assert first.original == second.original
    assert first.search_text() == second.search_text()
    assert first.all_values(cased=False) == second.all_values(cased=False)
    for name in first.original:
        assert first.lower[name] == second.lower[name]


GAPS = [".*", ".+", ".*?", ".{2,}", "(.*)", "(?:.+?)"]


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_runs_and_gaps_are_searched_as_the_regex_engine_does(data: st.DataObject) -> None:
    """``a.*b.+c`` patterns run without the regex engine, with the same answers."""
    runs = data.draw(st.lists(st.text("+{^`aB", min_size=1, max_size=3), min_size=2, max_size=5))
    pattern = "".join(re.escape(run) + data.draw(st.sampled_from(GAPS)) for run in runs[:-1])
    pattern = data.draw(st.sampled_from(["", ".*", ".+"])) + pattern + re.escape(runs[-1])
    pattern += data.draw(st.sampled_from(["", ".*", ".{3,}"]))
    flags = data.draw(st.sampled_from([0, re.DOTALL, re.MULTILINE, re.IGNORECASE]))
    value = data.draw(st.text("+{^`aBb\n x", max_size=30) | st.from_regex(pattern))
    if flags != re.IGNORECASE or not any(c.isalpha() for c in "".join(runs)):
        assert gapped_runs(pattern, flags) is not None, pattern
    assert rebuilt_test(("re", pattern, flags))(value) == bool(re.search(pattern, value, flags))


@pytest.mark.parametrize(
    "pattern",
    [r"a.{0,5}b", r"a.*b|c", r"^a.*b", r"a.*b$", r"(?>.*)a.*b", r"a.*+b", r"(?i)x.*y", r"a\s*b"],
)
def test_other_patterns_keep_the_regex_engine(pattern: str) -> None:
    assert gapped_runs(pattern, 0) is None


def test_the_sigmahq_obfuscation_pattern_runs_without_the_engine() -> None:
    pattern = r"\+.*\+.*\+.*\+.*\+.*\+.*\+.*\+.*\+.*\+.*\+.*\+.*\+.*\+"
    assert gapped_runs(pattern, 0) == (("+",) * 14, (0,) * 15, False)
    test = rebuilt_test(("re", pattern, 0))
    assert test("a+" * 14) and not test("a+" * 13 + "\n+")


def test_built_buckets_are_kept_by_their_rules_literals(tmp_path: Path) -> None:
    """A second run takes its buckets from the cache folder and matches alike; a rule
    whose literals change gets a bucket of its own; a damaged entry is built again."""
    rules_dir, cache = tmp_path / "rules", tmp_path / "cache"
    rules_dir.mkdir()
    rule = (WINDOWS, "    selection:\n        CommandLine|contains: 'mimikatz'\n")
    load(rules_dir, rule)
    event = sysmon(CommandLine="run MIMIKATZ now")

    def run() -> list[str]:
        return titles(RuleSet.load([rules_dir], cache_dir=cache), event)

    assert run() == ["rule 0"]
    entries = sorted((cache / BUCKET_CACHE).glob("*.pickle"))
    assert len(entries) == 1
    assert run() == ["rule 0"]
    assert sorted((cache / BUCKET_CACHE).glob("*.pickle")) == entries  # reused
    entries[0].write_bytes(b"damaged")
    assert run() == ["rule 0"]
    assert entries[0].read_bytes() != b"damaged"
    load(rules_dir, (WINDOWS, "    selection:\n        CommandLine|contains: 'rubeus'\n"))
    assert RuleSet.load([rules_dir], cache_dir=cache).match(event) == []
    assert titles(RuleSet.load([rules_dir], cache_dir=cache), sysmon(CommandLine="rubeus")) == [
        "rule 0"
    ]
    assert len(list((cache / BUCKET_CACHE).glob("*.pickle"))) == 2
