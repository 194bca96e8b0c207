"""相関ルール (correlation rules): Sigma v2 ``correlation:`` documents as plain data.

pySigma validates the document (:class:`sigma.correlations.SigmaCorrelationRule`); what
the engine needs is kept in a :class:`CorrelationSpec` (cached like rule trees). The
referenced rules are named by id or by ``name`` in the file; :func:`resolve` turns them
into rule ids once all rules are loaded. Evaluation over the event stream is in
:mod:`otasuke.detect.sigma.correlation_state`.

Supported: ``event_count``, ``value_count`` (with ``field``), ``temporal`` and
``temporal_ordered``; the numeric aggregates ``value_sum``, ``value_avg``,
``value_percentile`` (with ``percentile``: 0–100) and ``value_median`` (all with ``field``,
as pySigma 1.5.1 parses them); ``group-by``, ``timespan``, ``aliases``, ``generate``,
conditions ``gt``/``gte``/``lt``/``lte``/``eq``/``neq``. Refused with a reason: extended
(boolean) conditions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from sigma.correlations import SigmaCorrelationCondition, SigmaCorrelationRule

from otasuke.detect.sigma.values import Unsupported

VALUE_TYPES = ("value_sum", "value_avg", "value_percentile", "value_median")
"""Aggregates of a numeric field (数値集計): what the condition compares is the aggregate."""
TYPES = ("event_count", "value_count", "temporal", "temporal_ordered", *VALUE_TYPES)
OPERATORS = ("gt", "gte", "lt", "lte", "eq", "neq")


@dataclass(frozen=True, slots=True)
class CorrelationSpec:
    """What a correlation rule asks: which rules, grouped how, counted over what time."""

    type: str
    """One of :data:`TYPES`."""
    rules: tuple[str, ...]
    """Referenced rules: ids or names as written, rule ids after :func:`resolve`."""
    group_by: tuple[str, ...]
    timespan: float
    """Seconds."""
    op: str
    """One of :data:`OPERATORS`."""
    count: int
    """The condition's bound (a count, or for :data:`VALUE_TYPES` the aggregate's bound)."""
    field: str | None = None
    """``value_count``: the field whose distinct values are counted; :data:`VALUE_TYPES`:
    the numeric field aggregated."""
    generate: bool = False
    """True: the referenced rules also raise their own alerts."""
    aliases: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    """(alias, ((rule reference, field in that rule's events), …)) for ``group-by``."""
    percentile: int | None = None
    """``value_percentile`` (0–100); ``value_median`` is the 50th."""

    @property
    def numeric(self) -> bool:
        """True for the aggregates of a numeric field (:data:`VALUE_TYPES`)."""
        return self.type in VALUE_TYPES

    def holds(self, value: float) -> bool:
        """The condition on a count (events, distinct values, rules seen) or aggregate."""
        op, bound = self.op, self.count
        if op == "gt":
            return value > bound
        if op == "gte":
            return value >= bound
        if op == "lt":
            return value < bound
        if op == "lte":
            return value <= bound
        if op == "eq":
            return value == bound
        return value != bound

    @property
    def rising(self) -> bool:
        """True when the condition, once met, stays met as events are added (gt/gte):
        decided on the event that meets it; otherwise decided when the window closes."""
        return self.op in ("gt", "gte")

    def field_for(self, name: str, rule_id: str) -> str:
        """The event field holding group-by ``name`` for events of ``rule_id``."""
        for alias, mapping in self.aliases:
            if alias == name:
                for reference, field_name in mapping:
                    if reference == rule_id:
                        return field_name
        return name


def correlation_spec(rule: SigmaCorrelationRule) -> CorrelationSpec:
    """The plain-data form of a parsed correlation rule; Unsupported for what we cannot run."""
    kind = str(rule.type.name).lower()
    if kind not in TYPES:
        raise Unsupported(f"correlation type {kind} is not supported")
    condition = rule.condition
    if not isinstance(condition, SigmaCorrelationCondition):
        raise Unsupported("extended (boolean) correlation conditions are not supported")
    if not rule.rules:
        raise Unsupported("correlation rule refers to no rule")
    field = condition.fieldref
    if isinstance(field, list):
        if len(field) != 1:
            raise Unsupported(f"{kind} over several fields is not supported")
        field = field[0]
    if kind == "value_count" and not field:
        raise Unsupported("value_count correlation without a condition field")
    if kind in VALUE_TYPES and not field:
        raise Unsupported(f"{kind} correlation without a condition field")
    percentile = condition.percentile
    if kind == "value_median":
        percentile = 50
    elif kind == "value_percentile":
        if percentile is None:
            raise Unsupported(
                "value_percentile correlation without condition percentile (add e.g. "
                "percentile: 95 beside field)"
            )
        if not 0 <= percentile <= 100:
            raise Unsupported(
                f"value_percentile correlation percentile {percentile} is not between 0 and 100"
            )
    else:
        percentile = None
    aliases = tuple(
        (alias.alias, tuple((ref.reference, name) for ref, name in alias.mapping.items()))
        for alias in rule.aliases
    )
    return CorrelationSpec(
        type=kind,
        rules=tuple(ref.reference for ref in rule.rules),
        group_by=tuple(rule.group_by or ()),
        timespan=float(rule.timespan.seconds),
        op=condition.op.name.lower(),
        count=int(condition.count),
        field=field,
        generate=bool(rule.generate),
        aliases=aliases,
        percentile=percentile,
    )


def default_condition(document: Mapping[str, Any]) -> None:
    """Temporal rules may omit ``condition`` (all referenced rules): make it explicit."""
    body = document.get("correlation")
    if (
        isinstance(body, dict)
        and "condition" not in body
        and body.get("type") in ("temporal", "temporal_ordered")
    ):
        rules = body.get("rules")
        count = len(rules) if isinstance(rules, list) else 1
        body["condition"] = {"gte": count}


def resolve(spec: CorrelationSpec, ids_by_reference: Mapping[str, str]) -> CorrelationSpec:
    """``spec`` with rule references (ids or names) replaced by rule ids.

    Raises Unsupported naming the first reference that matches no loaded rule.
    """
    rules = []
    for reference in spec.rules:
        rule_id = ids_by_reference.get(reference)
        if rule_id is None:
            raise Unsupported(f"correlation rule refers to unknown rule {reference}")
        rules.append(rule_id)
    aliases = tuple(
        (alias, tuple((ids_by_reference.get(ref, ref), name) for ref, name in mapping))
        for alias, mapping in spec.aliases
    )
    return replace(spec, rules=tuple(rules), aliases=aliases)
