"""ルールの関数化: a rule's generated function answers as its closures do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from otasuke.detect.sigma import RuleSet, default_rule_paths
from otasuke.detect.sigma.codegen import generated_predicate
from otasuke.detect.sigma.compile import predicate
from otasuke.detect.sigma.rules import load_rule_trees
from otasuke.detect.sigma.view import EventView
from otasuke.ingest.parsers import ParseContext
from otasuke.ingest.parsers.evtx import EvtxParser

RULES = RuleSet.load(default_rule_paths())
RULES_TREES = {tree.info.id: tree for tree in load_rule_trees(default_rule_paths())[0]}
PAIRS: dict[str, tuple[Any, Any]] = {}


def both(rule: Any) -> tuple[Any, Any]:
    """The rule's generated function and its closure (made once per rule)."""
    pair = PAIRS.get(rule.info.id)
    if pair is None:
        pair = PAIRS[rule.info.id] = (
            generated_predicate(rule.tree, rule.info.id),
            predicate(rule.tree),
        )
    return pair


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


def test_a_rule_evaluated_often_switches_to_its_generated_function() -> None:
    from otasuke.detect.sigma.rules import GENERATE_AFTER, compiled

    rule = next(r for r in RULES.compiled if r.info.title == "Execution Of Non-Existing File")
    fresh = compiled(RULES_TREES[rule.info.id])
    before = fresh.predicate
    views = [
        EventView({"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1, "Image": image})
        for image in ("", "svchost.exe", "C:\\Windows\\explorer.exe", "-", "Registry")
    ]
    answers = [bool(before(v)) for v in views]
    assert answers.count(True) >= 1 and answers.count(False) >= 1
    for number in range(GENERATE_AFTER):
        before(views[number % len(views)])
    assert fresh.predicate is not before  # replaced by the generated function
    assert [bool(fresh.predicate(v)) for v in views] == answers
