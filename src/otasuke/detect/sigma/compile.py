"""Sigma ルール評価 (rule evaluation): pySigma's condition tree → Python closures.

pySigma parses the rule and applies the processing pipelines; its
``parsed_condition[…].parsed`` tree (modifiers already resolved into typed values) is
turned here into a small tree of our own (:class:`Node`), simplified (nested AND/OR
flattened, an OR of values on one field merged into one field test), and then into a
closure ``predicate(view) -> bool`` over an :class:`~otasuke.detect.sigma.view.EventView`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.types import (
    SigmaExists,
    SigmaFieldReference,
    SigmaNull,
    SigmaString,
    SpecialChars,
)

from otasuke.detect.sigma.values import Unsupported, ValueTest, cidr_any, value_tests
from otasuke.detect.sigma.view import EventView, Text

Predicate = Callable[[EventView], bool]
ANY_FIELD = "*"
"""Field name standing for "any field" (keyword searches) in literal sets."""


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    child: Node


@dataclass(frozen=True, slots=True)
class FieldMatch:
    """The field (lowercased name) has a value passing any of the tests."""

    field: str
    tests: tuple[ValueTest, ...]


@dataclass(frozen=True, slots=True)
class FieldNull:
    """``field: null``: absent, null or empty."""

    field: str


@dataclass(frozen=True, slots=True)
class FieldExists:
    """``field|exists: true/false``."""

    field: str
    exists: bool


@dataclass(frozen=True, slots=True)
class FieldRef:
    """``field|fieldref``: equal to (or starting/ending with) another field's value."""

    field: str
    other: str
    starts_with: bool
    ends_with: bool


@dataclass(frozen=True, slots=True)
class Keyword:
    """A field-less value: found in any value of the event."""

    tests: tuple[ValueTest, ...]


Node = And | Or | Not | FieldMatch | FieldNull | FieldExists | FieldRef | Keyword


def from_pysigma(condition: Any) -> Node:
    """Our tree for one resolved pySigma condition; Unsupported for what we cannot run."""
    if isinstance(condition, ConditionAND):
        return And(tuple(from_pysigma(arg) for arg in condition.args))
    if isinstance(condition, ConditionOR):
        return Or(tuple(from_pysigma(arg) for arg in condition.args))
    if isinstance(condition, ConditionNOT):
        return Not(from_pysigma(condition.args[0]))
    if isinstance(condition, ConditionFieldEqualsValueExpression):
        field = condition.field.lower()
        value = condition.value
        if isinstance(value, SigmaNull):
            return FieldNull(field)
        if isinstance(value, SigmaExists):
            return FieldExists(field, bool(value.exists))
        if isinstance(value, SigmaFieldReference):
            return FieldRef(field, value.field.lower(), value.starts_with, value.ends_with)
        return FieldMatch(field, tuple(value_tests(value)))
    if isinstance(condition, ConditionValueExpression):
        return Keyword(tuple(value_tests(_anywhere(condition.value))))
    if condition is None:
        raise Unsupported("the condition is empty after processing")
    raise Unsupported(f"condition element {type(condition).__name__} is not supported")


def _anywhere(value: Any) -> Any:
    """A keyword is found anywhere in a value: ``foo`` means ``*foo*``."""
    if isinstance(value, SigmaString):
        many = SpecialChars.WILDCARD_MULTI
        if not value.startswith(many):
            value = many + value
        if not value.endswith(many):
            value = value + many
    return value


def simplify(node: Node) -> Node:
    """Flatten nested AND/OR; merge an OR of tests on one field (or of keywords) into one."""
    if isinstance(node, Not):
        return Not(simplify(node.child))
    if not isinstance(node, And | Or):
        return node
    kind = type(node)
    flat: list[Node] = []
    for child in (simplify(c) for c in node.children):
        if type(child) is kind:
            flat.extend(child.children)
        else:
            flat.append(child)
    if kind is Or:
        flat = _merge_same_field(flat)
    if len(flat) == 1:
        return flat[0]
    return kind(tuple(flat))


def _merge_same_field(children: list[Node]) -> list[Node]:
    merged: list[Node] = []
    position: dict[str, int] = {}
    for child in children:
        if isinstance(child, Keyword):
            at = position.get(ANY_FIELD)
            if at is not None:
                previous_keyword = merged[at]
                assert isinstance(previous_keyword, Keyword)
                merged[at] = Keyword(previous_keyword.tests + child.tests)
                continue
            position[ANY_FIELD] = len(merged)
        elif isinstance(child, FieldMatch):
            at = position.get(child.field)
            if at is not None:
                previous = merged[at]
                assert isinstance(previous, FieldMatch)
                merged[at] = FieldMatch(child.field, previous.tests + child.tests)
                continue
            position[child.field] = len(merged)
        merged.append(child)
    return merged


def fields_named(node: Node) -> set[str]:
    """Lowercased field names a rule looks at (for the alert's ``matched``)."""
    if isinstance(node, And | Or):
        return set().union(*(fields_named(c) for c in node.children))
    if isinstance(node, Not):
        return fields_named(node.child)
    if isinstance(node, FieldRef):
        return {node.field, node.other}
    if isinstance(node, FieldMatch | FieldNull | FieldExists):
        return {node.field}
    return set()


def predicate(node: Node) -> Predicate:
    """The closure evaluating ``node`` on an event view."""
    if isinstance(node, And):
        return _all_of(tuple(predicate(c) for c in node.children))
    if isinstance(node, Or):
        return _any_of(tuple(predicate(c) for c in node.children))
    if isinstance(node, Not):
        inner = predicate(node.child)
        return lambda view: not inner(view)
    if isinstance(node, FieldMatch):
        return _field_match(node.field, node.tests)
    if isinstance(node, FieldNull):
        return _field_null(node.field)
    if isinstance(node, FieldExists):
        name, wanted = node.field, node.exists
        return lambda view: (name in view.original) is wanted
    if isinstance(node, FieldRef):
        return _field_ref(node)
    return _keyword(node.tests)


def _all_of(preds: tuple[Predicate, ...]) -> Predicate:
    if len(preds) == 2:
        first, second = preds
        return lambda view: first(view) and second(view)

    def all_of(view: EventView) -> bool:
        for pred in preds:  # noqa: SIM110 - hot path: no generator per call
            if not pred(view):
                return False
        return True

    return all_of


def _any_of(preds: tuple[Predicate, ...]) -> Predicate:
    if len(preds) == 2:
        first, second = preds
        return lambda view: first(view) or second(view)

    def any_of(view: EventView) -> bool:
        for pred in preds:  # noqa: SIM110 - hot path: no generator per call
            if pred(view):
                return True
        return False

    return any_of


class TestGroups(NamedTuple):
    """An OR of string tests sorted by what they need: a set, two tuples, substrings,
    the others (CIDR networks as one test)."""

    equal: frozenset[str]
    prefixes: tuple[str, ...]
    suffixes: tuple[str, ...]
    needles: tuple[str, ...]
    others: tuple[Callable[[str], bool], ...]


def test_groups(tests: Sequence[ValueTest]) -> TestGroups:
    return TestGroups(
        frozenset(t.text for t in tests if t.kind == "eq"),
        tuple(t.text for t in tests if t.kind == "prefix"),
        tuple(t.text for t in tests if t.kind == "suffix"),
        tuple(t.text for t in tests if t.kind == "contains"),
        other_tests(tests),
    )


def other_tests(tests: Sequence[ValueTest]) -> tuple[Callable[[str], bool], ...]:
    """The tests of an OR that run as functions: the ``other`` ones in order, then all
    CIDR networks as one."""
    others = tuple(t.test for t in tests if t.kind == "other")
    networks = [ipaddress.ip_network(t.text, strict=False) for t in tests if t.kind == "cidr"]
    if networks:
        others = (*others, cidr_any(networks))
    return others


def combine_tests(tests: Sequence[ValueTest]) -> Callable[[str], bool]:
    """One string test for an OR of tests (:func:`test_groups`, in that order)."""
    if len(tests) == 1:
        return tests[0].test
    equal, prefixes, suffixes, needles, others = test_groups(tests)

    def any_test(s: str) -> bool:
        if s in equal:
            return True
        if prefixes and s.startswith(prefixes):
            return True
        if suffixes and s.endswith(suffixes):
            return True
        for needle in needles:
            if needle in s:
                return True
        for other in others:  # noqa: SIM110 - hot path: no generator per call
            if other(s):
                return True
        return False

    return any_test


def on_value(value: Text, test: Callable[[str], bool]) -> bool:
    """A string test on a field's value: None never passes, a list if any item does."""
    if type(value) is str:
        return test(value)
    if value is None:
        return False
    for item in value:  # noqa: SIM110 - hot path: no generator per call
        if test(item):
            return True
    return False


def _field_match(name: str, tests: tuple[ValueTest, ...]) -> Predicate:
    plain = [t for t in tests if not t.cased]
    cased = [t for t in tests if t.cased]
    plain_test = combine_tests(plain) if plain else None
    cased_test = combine_tests([_as_other(t) for t in cased]) if cased else None

    if cased_test is None and plain_test is not None:
        lower_test = plain_test

        def match_lower(view: EventView) -> bool:
            value = view.lower[name]
            if type(value) is str:
                return lower_test(value)
            return on_value(value, lower_test)

        return match_lower

    def match_both(view: EventView) -> bool:
        if plain_test is not None and on_value(view.lower[name], plain_test):
            return True
        return cased_test is not None and on_value(view.original.get(name), cased_test)

    return match_both


def _as_other(test: ValueTest) -> ValueTest:
    """Cased tests run as their own function (their ``text`` is not lowercased)."""
    return replace(test, kind="other", text="")


def _field_null(name: str) -> Predicate:
    def is_null(view: EventView) -> bool:
        value = view.original.get(name)
        return value is None or value == "" or value == []

    return is_null


def _field_ref(node: FieldRef) -> Predicate:
    def refers(view: EventView) -> bool:
        value = view.lower[node.field]
        other = view.lower[node.other]
        if type(value) is not str or type(other) is not str:
            return False
        if node.starts_with:
            return value.startswith(other)
        if node.ends_with:
            return value.endswith(other)
        return value == other

    return refers


def _keyword(tests: tuple[ValueTest, ...]) -> Predicate:
    plain = [t for t in tests if not t.cased]
    cased = [_as_other(t) for t in tests if t.cased]
    plain_test = combine_tests(plain) if plain else None
    cased_test = combine_tests(cased) if cased else None

    def found(view: EventView) -> bool:
        if plain_test is not None:
            for value in view.all_values(cased=False):
                if plain_test(value):
                    return True
        if cased_test is not None:
            for value in view.all_values(cased=True):
                if cased_test(value):
                    return True
        return False

    return found
