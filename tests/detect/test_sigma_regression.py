"""REQ-MON-EP: every SigmaHQ regression case fires its rule (recall over the corpus).

Each case folder under ``corpus/sigma-regression`` holds ``info.yml`` (the rule that must
fire) and the ``.evtx`` it must fire on. Rules not in the bundled set (emerging threats,
threat hunting) are loaded from ``corpus/sigma-rules`` at the same relative path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import typer
import yaml
from typer.testing import CliRunner

from otasuke.detect.command import detect_command
from otasuke.detect.sigma import RuleSet, default_rule_paths
from otasuke.ingest.parsers import ParseContext
from otasuke.ingest.parsers.evtx import EvtxParser
from tests.conftest import CORPUS

pytestmark = pytest.mark.corpus


@dataclass(frozen=True)
class Case:
    name: str
    rule_id: str
    evtx: Path | None
    corpus_rule: Path


def _cases() -> list[Case]:
    root = CORPUS / "sigma-regression"
    cases = []
    for info in sorted(root.glob("**/info.yml")):
        relative = info.parent.relative_to(root)
        rule_id = yaml.safe_load(info.read_text())["rule_metadata"][0]["id"]
        samples = sorted(info.parent.glob("*.evtx"))
        cases.append(
            Case(
                name=str(relative),
                rule_id=rule_id,
                evtx=samples[0] if samples else None,
                corpus_rule=CORPUS / "sigma-rules" / f"{relative}.yml",
            )
        )
    return cases


CASES = _cases() if CORPUS.is_dir() else []
EVTX_CASES = [c for c in CASES if c.evtx is not None]


@pytest.fixture(scope="session")
def bundled_ruleset() -> RuleSet:
    return RuleSet.load(default_rule_paths())


@pytest.fixture(scope="session")
def bundled_ids(bundled_ruleset: RuleSet) -> set[str]:
    return {rule.id for rule in bundled_ruleset.rules}


@pytest.fixture(scope="session")
def extra_rules(corpus: Path, bundled_ids: set[str]) -> list[Path]:
    """Corpus rule files for expected rules that are not bundled."""
    return [c.corpus_rule for c in EVTX_CASES if c.rule_id not in bundled_ids]


@pytest.fixture(scope="session")
def regression_ruleset(bundled_ruleset: RuleSet, extra_rules: list[Path]) -> RuleSet:
    """Bundled rules plus the extra corpus rules, compiled once per session."""
    bundled = bundled_ruleset
    extra = RuleSet.load(extra_rules)
    return RuleSet([*bundled.compiled, *extra.compiled], [*bundled.refused, *extra.refused])


def test_regression_cases_are_windows_evtx(corpus: Path) -> None:
    """The one case without an .evtx is the Cisco CLI case (raw text, commented out)."""
    assert len(CASES) >= 100
    assert all("cisco" in c.name for c in CASES if c.evtx is None)


def test_req_mon_ep_detect_cli_fires_every_regression_rule(
    corpus: Path, extra_rules: list[Path], tmp_path: Path
) -> None:
    """`otasuke detect` over all cases: every expected rule fires on its own sample."""
    app = typer.Typer()
    app.command("detect")(detect_command)
    app.command("version")(lambda: None)  # two commands keep "detect" as a sub-command
    out = tmp_path / "matches.jsonl"
    args = ["detect", "--output", str(out)]
    for rule in [*default_rule_paths(), *extra_rules]:
        args += ["--rules", str(rule)]
    args += [str(c.evtx) for c in EVTX_CASES]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    fired: dict[str, set[str]] = {}
    for line in out.read_text().splitlines():
        row = orjson.loads(line)
        assert row["rule_author"] and row["rule_licence"] == "DRL-1.1"
        fired.setdefault(row["file"], set()).add(row["rule_id"])
    misses = [c.name for c in EVTX_CASES if c.rule_id not in fired.get(str(c.evtx), set())]
    recall = 1 - len(misses) / len(EVTX_CASES)
    assert not misses, f"recall {recall:.1%}; missed {len(misses)}: " + "\n".join(misses)


@pytest.mark.parametrize("case", EVTX_CASES, ids=lambda c: c.name.rsplit("/", 1)[-1])
def test_req_mon_ep_rule_fires_on_its_sample(case: Case, regression_ruleset: RuleSet) -> None:
    parser = EvtxParser()
    assert case.evtx is not None
    fired: set[str] = set()
    for record in parser.read_file(case.evtx):
        event = parser.parse(record.raw, ParseContext())
        fired.update(d.rule_id for d in regression_ruleset.detections(event))
    assert case.rule_id in fired
