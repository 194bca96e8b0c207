"""ルールの関数化: a rule's generated function answers as its closures do, and a loaded
rule runs as its function, kept in the rule cache."""

from __future__ import annotations

import marshal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otasuke.detect.sigma import RuleSet, default_rule_paths
from otasuke.detect.sigma.codegen import bound_predicate, predicate_code
from otasuke.detect.sigma.compile import predicate
from otasuke.detect.sigma.rules import compiled, load_rule_trees
from otasuke.detect.sigma.view import EventView
from otasuke.ingest.parsers import ParseContext
from otasuke.ingest.parsers.evtx import EvtxParser

RULES = RuleSet.load(default_rule_paths())
PAIRS: dict[str, tuple[Any, Any]] = {}


def both(rule: Any) -> tuple[Any, Any]:
    """The rule's loaded predicate (its generated function) and its closure."""
    pair = PAIRS.get(rule.info.id)
    if pair is None:
        pair = PAIRS[rule.info.id] = (rule.predicate, predicate(rule.tree))
    return pair


def is_generated(function: Any) -> bool:
    return str(function.__code__.co_filename).startswith("<sigma rule ")


def test_every_loaded_rule_runs_as_its_generated_function() -> None:
    windows = [r for r in RULES.compiled if r.windows]  # off Windows: wrapped (field check)
    assert len(windows) > 2000
    assert all(is_generated(rule.predicate) for rule in windows)


def test_every_bundled_rule_answers_alike_on_the_corpus(corpus: Path) -> None:
    """Every bundled rule filed under a record's key, on one corpus record in four:
    matches and non-matches alike (the candidates' prefilter is not applied)."""
    parser = EvtxParser()
    ctx = ParseContext(sensor="test")
    compared = matched = 0
    for path in sorted((corpus / "evtx").rglob("*.evtx")):
        for number, record in enumerate(parser.read_file(path)):
            if number % 4 or "_parse_error" in record.raw:
                continue
            view = EventView(parser.parse_for_detection(record.raw, ctx).fields)
            for rule in RULES._bucket(view.key()).rules:
                pair = both(rule)
                answer = bool(pair[1](view))  # a predicate's answer is its truth value
                assert bool(pair[0](view)) is answer, (rule.info.title, path, number)
                compared += 1
                matched += answer
    assert compared > 100_000
    assert matched > 100  # not an empty comparison


FIELDS = ["image", "commandline", "parentimage", "user", "targetfilename", "ipaddress"]
VALUES = st.one_of(
    st.none(),
    st.sampled_from(
        ["c:\\windows\\system32\\cmd.exe", "powershell.exe -enc abc", "10.1.2.3", "", "-"]
    ),
    st.text(alphabet="abc\\.:-/ 0123", max_size=12),
    st.lists(st.text(alphabet="abc\\.exe", max_size=6), max_size=3),
)


@settings(max_examples=150, deadline=None)
@given(values=st.fixed_dictionaries({}, optional=dict.fromkeys(FIELDS, VALUES)))
def test_generated_events_answer_alike(values: dict[str, Any]) -> None:
    """Lists, null values and absent fields on every process-creation rule."""
    view = EventView({"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1, **values})
    for rule in RULES._bucket(view.key()).rules[:400]:
        function, closure = both(rule)
        assert bool(function(view)) is bool(closure(view)), rule.info.title


def test_the_rule_cache_keeps_each_rules_code(tmp_path: Path) -> None:
    """A warm load takes the code made by the cold one (nothing generated again)."""
    rule_file = next(default_rule_paths()[0].rglob("proc_creation_win_whoami_all_execution.yml"))
    cold = load_rule_trees([rule_file], cache_dir=tmp_path)[0]
    warm = load_rule_trees([rule_file], cache_dir=tmp_path)[0]
    assert cold[0].code is not None and warm[0].code == cold[0].code
    assert is_generated(compiled(warm[0]).predicate)
    view = EventView(
        {
            "Channel": "Microsoft-Windows-Sysmon/Operational",
            "EventID": 1,
            "Image": "C:\\Windows\\System32\\whoami.exe",
            "CommandLine": "whoami /all",
        }
    )
    assert compiled(warm[0]).predicate(view)
    assert not compiled(warm[0]).predicate(EventView({**view.original, "commandline": "whoami"}))


@pytest.mark.parametrize("damage", [b"", b"\x00garbage", b"\xe3" * 40])
def test_damaged_code_falls_back_to_the_closures(damage: bytes) -> None:
    rule = next(r for r in RULES.compiled if r.info.title == "Execution Of Non-Existing File")
    assert bound_predicate(damage, rule.tree) is None
    code = predicate_code(rule.tree, rule.info.id)
    assert code is not None and bound_predicate(code, rule.tree) is not None
    assert marshal.loads(code).co_filename.startswith("<sigma rule ")


def test_values_enter_the_source_only_as_string_literals() -> None:
    """A rule value that reads as Python stays a value."""
    from sigma.types import SigmaString

    from otasuke.detect.sigma.compile import FieldMatch
    from otasuke.detect.sigma.values import value_tests

    hostile = "') or __import__('os').system('x') or ('"
    node = FieldMatch("commandline", tuple(value_tests(SigmaString(f"*{hostile}*"))))
    code = predicate_code(node)
    assert code is not None
    function = bound_predicate(code, node)
    assert function is not None
    assert function(EventView({"CommandLine": f"run {hostile} now"}))
    assert not function(EventView({"CommandLine": "run now"}))
