"""除外フィルタ (Sigma filters): per-rule exceptions, e.g. for one customer.

A Sigma filter document (``filter:`` with ``rules:`` and searches plus a ``condition``)
narrows the rules it names (by id or ``name``; ``any`` or an empty list: every rule of its
log source): as the Sigma filter specification says, the filter's condition is ANDed
to the rule's, so a rule fires only when its own condition **and** the filter's hold.
The usual exception is written ``condition: not selection`` — "never when this matches".

Filters load with the rules (:meth:`~otasuke.detect.sigma.ruleset.RuleSet.load` of a
folder holding them) or later, per customer
(:meth:`~otasuke.detect.sigma.ruleset.RuleSet.with_filters`). A filter is compiled like a
rule but without the log-source pipelines: the rule it narrows already checks the log
source.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from sigma.filters import SigmaFilter
from sigma.rule import SigmaRule

from otasuke.detect.sigma.compile import Node, Predicate, from_pysigma, simplify
from otasuke.detect.sigma.compile import predicate as build_predicate
from otasuke.detect.sigma.mappings import LogSource
from otasuke.detect.sigma.values import Unsupported
from otasuke.errors import RuleError

if TYPE_CHECKING:
    from otasuke.detect.sigma.rules import CompiledRule, RuleTree


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """Which rules a filter narrows."""

    rules: tuple[str, ...] | None
    """Rule ids or names; None: every rule whose log source the filter's covers."""
    logsource: LogSource


def is_filter_document(document: Mapping[str, Any]) -> bool:
    """A Sigma filter (``filter:`` and no ``detection:``)."""
    return "filter" in document and "detection" not in document


def parse_filter(document: dict[str, Any]) -> tuple[SigmaFilter, FilterSpec, Node]:
    """pySigma's filter, what it applies to, and its condition as our tree.

    Raises Unsupported or a pySigma error for a filter that cannot be used.
    """
    parsed = SigmaFilter.from_dict(document, collect_errors=True)
    body = document.get("filter")
    if not isinstance(body, dict):
        raise Unsupported("filter: must be a mapping with rules, searches and a condition")
    references = parsed.filter.rules
    rules = None if isinstance(references, str) else tuple(r.reference for r in references)
    logsource = parsed.logsource
    spec = FilterSpec(
        rules=rules or None,
        logsource=LogSource(
            _lower(logsource.product), _lower(logsource.category), _lower(logsource.service)
        ),
    )
    searches = {k: v for k, v in body.items() if k != "rules"}
    as_rule = {
        "title": document.get("title") or "filter",
        "logsource": document.get("logsource") or {},
        "detection": searches,
    }
    rule = SigmaRule.from_dict(as_rule)
    trees = [from_pysigma(c.parsed) for c in rule.detection.parsed_condition]
    if len(trees) != 1:
        raise Unsupported("a filter needs exactly one condition")
    return parsed, spec, simplify(trees[0])


class FilterProblem(RuleError):
    """A pasted filter that cannot be used; ``kind`` says which check failed.

    ``kind``: ``yaml`` (not YAML; ``line`` set when known), ``documents`` (not exactly one
    document), ``not_filter`` (no ``filter:`` section, or a ``detection:`` one), ``sigma``
    (pySigma or our compiler refused it; ``message`` is their reason).
    """

    def __init__(self, kind: str, message: str, *, line: int | None = None) -> None:
        super().__init__(message, field="document")
        self.kind = kind
        self.line = line


def filter_from_text(text: str, where: str = "customer filter") -> RuleTree:
    """顧客別フィルタ: one pasted Sigma filter document checked with pySigma, as a tree.

    Raises :class:`FilterProblem` saying what is wrong.
    """
    from otasuke.detect.sigma.rules import RuleRefusal, _compile_filter

    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise FilterProblem("yaml", str(err).splitlines()[0], line=line) from None
    if len(documents) != 1:
        raise FilterProblem("documents", f"{len(documents)} YAML documents")
    [document] = documents
    if not isinstance(document, dict) or not is_filter_document(document):
        raise FilterProblem("not_filter", "no filter: section, or a detection: section")
    compiled = _compile_filter(document, Path(where))
    if isinstance(compiled, RuleRefusal):
        raise FilterProblem("sigma", compiled.reason)
    return compiled


def _lower(value: str | None) -> str | None:
    return value.lower() if value else None


def targets(filter_spec: FilterSpec, rule: CompiledRule) -> bool:
    """Whether a filter narrows this rule."""
    if not filter_spec.logsource.accepts(rule.logsource):
        return False
    if filter_spec.rules is None:
        return True
    return rule.info.id in filter_spec.rules or (
        rule.name is not None and rule.name in filter_spec.rules
    )


def apply_filters(rules: Sequence[CompiledRule], filters: Sequence[RuleTree]) -> list[CompiledRule]:
    """``rules`` with each filter's condition ANDed to the rules it narrows."""
    compiled: list[tuple[FilterSpec, Predicate]] = [
        (f.filter, build_predicate(f.tree)) for f in filters if f.filter is not None
    ]
    if not compiled:
        return list(rules)
    out = []
    for rule in rules:
        extra = tuple(test for spec, test in compiled if targets(spec, rule))
        out.append(_narrowed(rule, extra) if extra else rule)
    return out


def _narrowed(rule: CompiledRule, extra: tuple[Predicate, ...]) -> CompiledRule:
    inner = rule.predicate

    def narrowed(view: Any) -> bool:
        if not inner(view):
            return False
        for test in extra:  # noqa: SIM110 - hot path: no generator per call
            if not test(view):
                return False
        return True

    return replace(rule, predicate=narrowed)
