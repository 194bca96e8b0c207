"""Correctness, second proof: our engine finds what pySigma's SQLite backend finds.

Over every record of ``corpus/evtx`` and every bundled SigmaHQ Windows rule, the set of
(rule id, record) matches of our engine is compared with the rows the backend's SQL selects
from an in-memory SQLite table of the same events (the method of Zircolite, the most used
Python Sigma tool; see :mod:`otasuke.detect.sigma.sqlite_reference`). Each remaining
difference is reviewed in ``fixtures/differential_reviewed.yml`` with its reason.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from otasuke.detect.sigma import RuleSet, default_rule_paths
from otasuke.detect.sigma.sqlite_reference import EventTable, convert_rules, event_row
from otasuke.detect.sigma.view import EventView
from otasuke.ingest.parsers import ParseContext
from otasuke.ingest.parsers.evtx import EvtxParser

pytestmark = pytest.mark.corpus

REVIEWED = Path(__file__).parent / "fixtures" / "differential_reviewed.yml"
Match = tuple[str, int]  # (rule id, record index)


@dataclass(frozen=True)
class Corpus:
    events: list[dict[str, object]]
    where: list[str]


@pytest.fixture(scope="module")
def evtx_events(corpus: Path) -> Corpus:
    parser = EvtxParser()
    events: list[dict[str, object]] = []
    where: list[str] = []
    root = corpus / "evtx"
    for path in sorted(root.rglob("*.evtx")):
        for record in parser.read_file(path):
            event = parser.parse(record.raw, ParseContext(sensor=str(path)))
            events.append(dict(event.fields))
            where.append(f"{path.relative_to(root)}#{event.record_id}")
    return Corpus(events, where)


@pytest.fixture(scope="module")
def ours(evtx_events: Corpus, tmp_path_factory: pytest.TempPathFactory) -> set[Match]:
    rules = RuleSet.load(default_rule_paths(), cache_dir=tmp_path_factory.mktemp("cache"))
    return {
        (rule.info.id, at)
        for at, fields in enumerate(evtx_events.events)
        for rule in rules.matching_rules(EventView(fields))
    }


@pytest.fixture(scope="module")
def sqlite(evtx_events: Corpus) -> set[Match]:
    rules, refused = convert_rules(default_rule_paths())
    assert len(rules) > 2300, refused[:3]
    table = EventTable(event_row(fields) for fields in evtx_events.events)
    try:
        return table.matches(rules)
    finally:
        table.close()


def differences(ours: set[Match], sqlite: set[Match]) -> dict[tuple[str, str], list[int]]:
    found: dict[tuple[str, str], list[int]] = defaultdict(list)
    for rule_id, at in sorted(ours - sqlite):
        found[(rule_id, "ours_only")].append(at)
    for rule_id, at in sorted(sqlite - ours):
        found[(rule_id, "sqlite_only")].append(at)
    return found


def test_matches_equal_sqlite_backend_except_reviewed(
    ours: set[Match], sqlite: set[Match], evtx_events: Corpus
) -> None:
    reviewed = {
        (entry["rule_id"], entry["side"]): entry
        for entry in yaml.safe_load(REVIEWED.read_text(encoding="utf-8"))["differences"]
    }
    found = differences(ours, sqlite)
    problems = []
    for (rule_id, side), records in sorted(found.items()):
        entry = reviewed.get((rule_id, side))
        examples = ", ".join(evtx_events.where[at] for at in records[:3])
        if entry is None:
            problems.append(
                f"NEW {side} {rule_id}: {len(records)} records, e.g. {examples}; review it "
                f"and list it in {REVIEWED.name} with the reason, or fix the engine"
            )
        elif entry["records"] != len(records):
            problems.append(
                f"CHANGED {side} {rule_id} ({entry['rule']}): {len(records)} records, "
                f"reviewed {entry['records']}; e.g. {examples}"
            )
    for (rule_id, side), entry in sorted(reviewed.items()):
        if (rule_id, side) not in found:
            problems.append(
                f"GONE {side} {rule_id} ({entry['rule']}): no longer differs; "
                f"remove it from {REVIEWED.name}"
            )
    assert not problems, "\n".join(problems)
    assert len(ours & sqlite) > 1000  # the comparison is not vacuous


def test_reviewed_entries_have_reasons() -> None:
    entries = yaml.safe_load(REVIEWED.read_text(encoding="utf-8"))["differences"]
    for entry in entries:
        assert entry["side"] in ("ours_only", "sqlite_only")
        assert len(entry["reason"].split()) >= 8, entry
