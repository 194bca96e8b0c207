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
from typing import TYPE_CHECKING, Any

from sigma.filters import SigmaFilter
from sigma.rule import SigmaRule

from otasuke.detect.sigma.compile import Node, Predicate, from_pysigma, simplify
from otasuke.detect.sigma.compile import predicate as build_predicate
from otasuke.detect.sigma.mappings import LogSource
from otasuke.detect.sigma.values import Unsupported

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
