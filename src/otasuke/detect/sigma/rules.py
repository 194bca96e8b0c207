"""Sigma ルール読込 (rule loading): YAML files → compiled rules or refusals.

pySigma parses each file and applies the sysmon and Windows log-source processing
pipelines (a ``logsource`` becomes ``Channel``/``EventID`` conditions); the engine in
:mod:`otasuke.detect.sigma.compile` evaluates the result. A rule that cannot be run
becomes a :class:`RuleRefusal` with the reason, never an exception.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError
from sigma.pipelines.sysmon.sysmon import sysmon_pipeline
from sigma.pipelines.windows.windows import windows_logsource_pipeline
from sigma.rule import SigmaRule

from otasuke.detect.sigma.compile import Node, Or, Predicate, fields_named, from_pysigma, simplify
from otasuke.detect.sigma.compile import predicate as build_predicate
from otasuke.detect.sigma.values import Unsupported

BUNDLED_DIR = Path(__file__).resolve().parent.parent.parent / "rules" / "sigma"
SIGMAHQ_COMMIT = "8eaafff1f2845a696050e05e72ba1140ee190698"
SIGMAHQ_URL = "https://github.com/SigmaHQ/sigma"
SIGMAHQ_FOLDERS = ("rules", "rules-emerging-threats", "rules-threat-hunting", "rules-dfir")
DRL_URL = "https://github.com/SigmaHQ/Detection-Rule-License/blob/main/LICENSE.Detection.Rules.md"
LEVELS = ("informational", "low", "medium", "high", "critical")


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """What an alert keeps of its rule: DRL 1.1 attribution (author, licence, link)."""

    id: str
    title: str
    level: str
    status: str | None
    author: str
    description: str
    references: tuple[str, ...]
    tags: tuple[str, ...]
    path: str
    rule_url: str
    licence: str = "DRL-1.1"
    licence_url: str = DRL_URL


@dataclass(frozen=True, slots=True)
class RuleRefusal:
    """A rule file (or one rule in it) that is not evaluated, and why."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One rule ready to evaluate (コンパイル済みルール)."""

    info: RuleInfo
    tree: Node
    predicate: Predicate
    fields: frozenset[str]
    """Lowercased field names the rule looks at."""


def rule_files(paths: Sequence[Path]) -> list[Path]:
    """The ``.yml``/``.yaml`` files named or found (recursively) under ``paths``."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(p for p in path.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())
            )
        else:
            found.append(path)
    return found


def load_rules(
    paths: Sequence[Path], progress: Callable[[int, int], None] | None = None
) -> tuple[list[CompiledRule], list[RuleRefusal]]:
    """Compile every rule under ``paths``; refuse (with a reason) what cannot be run."""
    files = rule_files(paths)
    pipeline = sysmon_pipeline() + windows_logsource_pipeline()
    compiled: list[CompiledRule] = []
    refused: list[RuleRefusal] = []
    seen: dict[str, str] = {}
    for done, path in enumerate(files, start=1):
        for item in _compile_file(path, pipeline):
            if isinstance(item, RuleRefusal):
                refused.append(item)
            elif item.info.id in seen:
                reason = f"duplicate rule id {item.info.id} (first in {seen[item.info.id]})"
                refused.append(RuleRefusal(str(path), reason))
            else:
                seen[item.info.id] = str(path)
                compiled.append(item)
        if progress is not None:
            progress(done, len(files))
    return compiled, refused


def _compile_file(path: Path, pipeline: Any) -> Iterator[CompiledRule | RuleRefusal]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        yield RuleRefusal(str(path), f"unreadable: {err}")
        return
    try:
        if "correlation:" in text:
            documents = [d for d in yaml.safe_load_all(text) if d is not None]
            for document in documents:
                if isinstance(document, dict) and "correlation" in document:
                    yield RuleRefusal(str(path), "correlation rule (not yet supported)")
            others = [d for d in documents if not (isinstance(d, dict) and "correlation" in d)]
            if not others:
                return
            collection = SigmaCollection.from_dicts(others, collect_errors=True)
        else:
            collection = SigmaCollection.from_yaml(text, collect_errors=True)
    except (SigmaError, yaml.YAMLError) as err:
        yield RuleRefusal(str(path), f"not a Sigma rule file: {err}")
        return
    if collection.errors and not collection.rules:
        yield RuleRefusal(str(path), f"pySigma: {collection.errors[0]}")
        return
    for rule in collection.rules:
        yield _compile_rule(rule, path, pipeline)


def _compile_rule(rule: Any, path: Path, pipeline: Any) -> CompiledRule | RuleRefusal:
    where = str(path)
    if isinstance(rule, SigmaCorrelationRule):
        return RuleRefusal(where, "correlation rule (not yet supported)")
    if not isinstance(rule, SigmaRule):
        return RuleRefusal(where, f"{type(rule).__name__} (not yet supported)")
    if rule.errors:
        return RuleRefusal(where, f"pySigma: {rule.errors[0]}")
    try:
        pipeline.apply(rule)
        conditions = [c.parsed for c in rule.detection.parsed_condition]
        trees = [from_pysigma(c) for c in conditions]
    except Unsupported as err:
        return RuleRefusal(where, str(err))
    except SigmaError as err:
        return RuleRefusal(where, f"pySigma: {err}")
    except RecursionError:
        return RuleRefusal(where, "condition nested too deeply")
    if not trees:
        return RuleRefusal(where, "no condition")
    tree = simplify(trees[0] if len(trees) == 1 else Or(tuple(trees)))
    return CompiledRule(
        info=rule_info(rule, path),
        tree=tree,
        predicate=build_predicate(tree),
        fields=frozenset(fields_named(tree)),
    )


def rule_info(rule: SigmaRule, path: Path) -> RuleInfo:
    """The attribution an alert carries (DRL 1.1: author, licence, link to the rule)."""
    level = rule.level.name.lower() if rule.level is not None else "medium"
    return RuleInfo(
        id=str(rule.id) if rule.id is not None else f"file:{path.name}",
        title=rule.title or path.stem,
        level=level if level in LEVELS else "medium",
        status=rule.status.name.lower() if rule.status is not None else None,
        author=rule.author or "unknown",
        description=(rule.description or "").strip(),
        references=tuple(str(r) for r in rule.references or ()),
        tags=tuple(str(t) for t in rule.tags or ()),
        path=str(path),
        rule_url=rule_url(path),
    )


def rule_url(path: Path) -> str:
    """Link to the rule in SigmaHQ/sigma when the path shows where it comes from."""
    resolved = path.resolve()
    if resolved.is_relative_to(BUNDLED_DIR):
        relative = resolved.relative_to(BUNDLED_DIR).as_posix()
        return f"{SIGMAHQ_URL}/blob/{SIGMAHQ_COMMIT}/rules/{relative}"
    parts = resolved.parts
    for at in range(len(parts) - 2, -1, -1):
        if parts[at] in SIGMAHQ_FOLDERS:
            return f"{SIGMAHQ_URL}/blob/{SIGMAHQ_COMMIT}/" + "/".join(parts[at:])
    return resolved.as_uri()
