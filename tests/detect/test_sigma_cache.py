"""The compiled-rule cache: a warm load is the cold load; a changed file is compiled again."""

from __future__ import annotations

import gc
import os
import pickle
from pathlib import Path

import pytest

from otasuke.detect.sigma import RuleSet, default_rule_paths
from otasuke.detect.sigma import rules as rules_module
from otasuke.detect.sigma.cache import RuleCache

RULE = """
title: Rule {n}
id: 00000000-0000-0000-0000-00000000000{n}
status: test
author: Otasuke tests
level: high
logsource:
    product: windows
    category: process_creation
detection:
    selection:
        CommandLine|contains: '{needle}'
        Image|re: '(?i)\\\\cmd\\.exe$'
    condition: selection
"""


def sysmon(command_line: str) -> dict[str, object]:
    return {
        "Channel": "Microsoft-Windows-Sysmon/Operational",
        "EventID": 1,
        "Image": "C:\\Windows\\System32\\cmd.exe",
        "CommandLine": command_line,
    }


@pytest.fixture
def rule_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    for n, needle in enumerate(("whoami", "vssadmin", "certutil")):
        (folder / f"rule{n}.yml").write_text(RULE.format(n=n, needle=needle), encoding="utf-8")
    (folder / "broken.yml").write_text("title: [unclosed\n", encoding="utf-8")
    return folder


def compiled_files(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record which files the loader really compiles (cache misses)."""
    seen: list[str] = []
    original = rules_module._compile_file

    def spy(path: Path, content: bytes | None, pipeline: object) -> object:
        seen.append(path.name)
        return original(path, content, pipeline)

    monkeypatch.setattr(rules_module, "_compile_file", spy)
    return seen


def test_warm_load_equals_cold_load(
    rule_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cold = RuleSet.load([rule_dir], cache_dir=cache)
    compiled = compiled_files(monkeypatch)
    warm = RuleSet.load([rule_dir], cache_dir=cache)
    assert compiled == []  # nothing compiled: all from the cache
    assert warm.rules == cold.rules
    assert warm.refused == cold.refused and len(warm.refused) == 1
    for line in ("whoami /all", "vssadmin delete shadows", "notepad"):
        assert warm.match(sysmon(line)) == cold.match(sysmon(line))
    assert [r.id for r in warm.match(sysmon("whoami"))] == [cold.rules[0].id]


def test_editing_one_rule_recompiles_only_it(
    rule_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    RuleSet.load([rule_dir], cache_dir=cache)
    edited = rule_dir / "rule1.yml"
    edited.write_text(RULE.format(n=1, needle="bcdedit"), encoding="utf-8")
    compiled = compiled_files(monkeypatch)
    rules = RuleSet.load([rule_dir], cache_dir=cache)
    assert compiled == ["rule1.yml"]
    assert not rules.match(sysmon("vssadmin delete shadows"))
    assert [r.title for r in rules.match(sysmon("bcdedit /set"))] == ["Rule 1"]


def test_touching_a_rule_file_recompiles_it(
    rule_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    RuleSet.load([rule_dir], cache_dir=cache)
    touched = rule_dir / "rule2.yml"
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    compiled = compiled_files(monkeypatch)
    RuleSet.load([rule_dir], cache_dir=cache)
    assert compiled == ["rule2.yml"]


def test_engine_version_change_invalidates_the_store(
    rule_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    RuleSet.load([rule_dir], cache_dir=cache)
    [store] = cache.glob("*.pickle")
    payload = pickle.loads(store.read_bytes())
    payload["engine"] = "an older engine"
    store.write_bytes(pickle.dumps(payload))
    compiled = compiled_files(monkeypatch)
    RuleSet.load([rule_dir], cache_dir=cache)
    assert sorted(compiled) == ["broken.yml", "rule0.yml", "rule1.yml", "rule2.yml"]


def test_corrupt_store_is_rebuilt(rule_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = RuleSet.load([rule_dir], cache_dir=cache)
    [store] = cache.glob("*.pickle")
    store.write_bytes(b"not a pickle")
    again = RuleSet.load([rule_dir], cache_dir=cache)
    assert again.rules == first.rules
    assert RuleCache(cache, [rule_dir]).get(rule_dir / "rule0.yml", _key(rule_dir)) is not None


def _key(rule_dir: Path) -> object:
    from otasuke.detect.sigma.cache import file_key

    path = rule_dir / "rule0.yml"
    return file_key(path, path.read_bytes())


@pytest.mark.corpus
def test_bundled_rules_warm_equal_cold(tmp_path: Path, corpus: Path) -> None:
    """Every bundled rule survives the cache: same rules, same trees, same refusals."""
    cold = RuleSet.load(default_rule_paths(), cache_dir=tmp_path)
    warm = RuleSet.load(default_rule_paths(), cache_dir=tmp_path)
    assert warm.rules == cold.rules and warm.refused == cold.refused
    assert [r.tree for r in warm.compiled] == [r.tree for r in cold.compiled]
    assert [r.fields for r in warm.compiled] == [r.fields for r in cold.compiled]
    assert [r.windows for r in warm.compiled] == [r.windows for r in cold.compiled]


@pytest.mark.parametrize("enabled", [True, False])
def test_loading_leaves_the_garbage_collector_as_it_was(
    rule_dir: Path, tmp_path: Path, enabled: bool
) -> None:
    """The collector is paused while rules load (half a warm load was its walks over the
    new trees) and left as the caller had it, also when loading fails."""
    if not enabled:
        gc.disable()
    try:
        RuleSet.load([rule_dir], cache_dir=tmp_path / "cache")
        assert gc.isenabled() is enabled

        def interrupted(_done: int, _total: int) -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            RuleSet.load([rule_dir], progress=interrupted)
        assert gc.isenabled() is enabled
    finally:
        gc.enable()
