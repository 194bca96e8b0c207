"""`otasuke rules check`: every rule that cannot be used is listed with why, then counted."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import typer
from typer.testing import CliRunner

from otasuke.detect.rules_command import reason_category, rules_app

HEADER = """title: {title}
id: {id}
status: test
author: Otasuke tests
level: medium
logsource:
    product: {product}
    category: process_creation
"""

GOOD = (
    HEADER
    + """detection:
    selection:
        CommandLine|contains: whoami
    condition: selection
"""
)

UNKNOWN_MODIFIER = (
    HEADER
    + """detection:
    selection:
        CommandLine|sparkles: whoami
    condition: selection
"""
)

CORRELATION = """title: Many whoami
id: 44444444-0000-0000-0000-000000000000
status: test
correlation:
    type: event_count
    rules:
        - 11111111-0000-0000-0000-000000000000
    group-by:
        - Computer
    timespan: 10m
    condition:
        gte: 5
"""


@pytest.fixture
def rule_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    (folder / "sub").mkdir(parents=True)
    (folder / "good.yml").write_text(
        GOOD.format(title="Good", id="11111111-0000-0000-0000-000000000000", product="windows")
    )
    (folder / "sub" / "linux.yml").write_text(
        GOOD.format(title="Linux", id="22222222-0000-0000-0000-000000000000", product="linux")
    )
    (folder / "broken.yml").write_text("title: [unclosed\ndetection: {\n")
    (folder / "correlation.yml").write_text(CORRELATION)
    orphan = CORRELATION.replace("44444444", "55555555").replace("11111111", "99999999")
    (folder / "orphan.yml").write_text(orphan)
    (folder / "modifier.yml").write_text(
        UNKNOWN_MODIFIER.format(
            title="Sparkles", id="33333333-0000-0000-0000-000000000000", product="windows"
        )
    )
    return folder


def invoke(*args: str) -> str:
    app = typer.Typer()
    app.add_typer(rules_app, name="rules")
    result = CliRunner().invoke(app, ["rules", "check", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_json_summary_counts_loaded_and_refused_by_reason(rule_dir: Path) -> None:
    report = orjson.loads(invoke("--format", "json", str(rule_dir)))
    assert report["loaded"] == 3  # good, linux, and the correlation over good
    assert report["loaded_correlations"] == 1  # counted apart from the rules
    assert report["loaded_windows"] == 1 and report["loaded_other_logsources"] == 1
    assert report["refused"] == 3
    assert report["by_reason"]["not YAML"] == 1
    [orphan] = [r for r in report["refusals"] if r["path"].endswith("orphan.yml")]
    assert "refers to unknown rule 99999999" in orphan["reason"]
    [modifier] = [r for r in report["refusals"] if r["path"].endswith("modifier.yml")]
    assert "sparkles" in modifier["reason"]
    assert sum(report["by_reason"].values()) == 3


def test_table_lists_each_refused_rule_with_its_reason(rule_dir: Path) -> None:
    out = invoke(str(rule_dir))
    for name in ("broken.yml", "orphan.yml", "modifier.yml"):
        assert name in out
    for name in ("good.yml", "linux.yml", "correlation.yml"):
        assert name not in out
    assert "unknown rule" in out
    assert "loaded 3" in out and "refused 3" in out
    assert "correlations 1" in out


def test_missing_folder_exits_2(tmp_path: Path) -> None:
    app = typer.Typer()
    app.add_typer(rules_app, name="rules")
    result = CliRunner().invoke(app, ["rules", "check", str(tmp_path / "absent")])
    assert result.exit_code == 2


def test_reason_category_drops_specifics() -> None:
    assert reason_category("duplicate rule id 1234 (first in a.yml)") == "duplicate rule id"
    assert reason_category("pySigma: value 'abc' is bad") == "pySigma: value … is bad"
