"""ルールの関数化 (rules as functions): one generated Python function per rule.

:func:`~otasuke.detect.sigma.compile.predicate` turns a rule tree into nested closures:
an AND calls each child, a field test fetches its value and calls its string test. Most
of an evaluation was those calls. Here the same tree becomes the source of one function,
``return (<a> and (<b> or not <c>))``, with each field's value fetched once and its plain
tests written out (``v in {…}``, ``v.startswith((…))``, ``'…' in v``); anything else
(case-sensitive tests, null, exists, field references, keywords) calls the closure
``predicate`` builds for that node. The answers are the closures' (a test compares both
on every bundled rule over the corpus); only constants and ``repr`` of field names go
into the source, never rule text.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from otasuke.detect.sigma.compile import (
    And,
    FieldMatch,
    Node,
    Not,
    Or,
    Predicate,
    combine_tests,
    predicate,
)
from otasuke.detect.sigma.values import ValueTest, cidr_any
from otasuke.detect.sigma.view import Text

MAX_INLINE_NEEDLES = 16
"""More ``contains`` values than this run as the combined test (one call, a loop)."""


def _on_value(value: Text, test: Callable[[str], bool]) -> bool:
    """A field test on a value that is not one string: None never matches, a list if
    any item does (as ``predicate``'s field tests)."""
    if value is None or type(value) is str:
        return value is not None and test(value)
    for item in value:  # noqa: SIM110 - hot path: no generator per call
        if test(item):
            return True
    return False


def generated_predicate(node: Node, name: str = "rule") -> Predicate:
    """The function evaluating ``node`` on an event view; the closure if generation fails."""
    generator = _Generator()
    try:
        body = generator.expression(node)
        source = f"def predicate(view):\n    L = view.lower\n    return {body}\n"
        namespace = dict(generator.constants)
        exec(compile(source, f"<sigma rule {name}>", "exec"), namespace)
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return predicate(node)
    made: Predicate = namespace["predicate"]
    return made


class _Generator:
    def __init__(self) -> None:
        self.constants: dict[str, Any] = {"_on_value": _on_value}

    def constant(self, value: Any) -> str:
        name = f"_k{len(self.constants)}"
        self.constants[name] = value
        return name

    def expression(self, node: Node) -> str:
        if isinstance(node, And):
            return "(" + " and ".join(self.expression(c) for c in node.children) + ")"
        if isinstance(node, Or):
            return "(" + " or ".join(self.expression(c) for c in node.children) + ")"
        if isinstance(node, Not):
            return f"(not {self.expression(node.child)})"
        if isinstance(node, FieldMatch) and node.tests and not any(t.cased for t in node.tests):
            tests = list(node.tests)
            on_string = self.string_test(tests)
            combined = self.constant(combine_tests(tests))
            return (
                f"(({on_string}) if type(_v := L[{node.field!r}]) is str"
                f" else _on_value(_v, {combined}))"
            )
        return f"{self.constant(predicate(node))}(view)"

    def string_test(self, tests: list[ValueTest]) -> str:
        """An expression true when the lowercased string ``_v`` passes any of ``tests``
        (what :func:`combine_tests` answers)."""
        parts: list[str] = []
        equal = sorted({t.text for t in tests if t.kind == "eq"})
        if len(equal) == 1:
            parts.append(f"_v == {equal[0]!r}")
        elif equal:
            parts.append(f"_v in {self.constant(frozenset(equal))}")
        prefixes = tuple(t.text for t in tests if t.kind == "prefix")
        if prefixes:
            parts.append(f"_v.startswith({self.constant(prefixes)})")
        suffixes = tuple(t.text for t in tests if t.kind == "suffix")
        if suffixes:
            parts.append(f"_v.endswith({self.constant(suffixes)})")
        needles = [t for t in tests if t.kind == "contains"]
        if len(needles) <= MAX_INLINE_NEEDLES:
            parts.extend(f"{t.text!r} in _v" for t in needles)
        else:
            parts.append(f"{self.constant(combine_tests(needles))}(_v)")
        networks = [ipaddress.ip_network(t.text, strict=False) for t in tests if t.kind == "cidr"]
        if networks:
            parts.append(f"{self.constant(cidr_any(networks))}(_v)")
        parts.extend(f"{self.constant(t.test)}(_v)" for t in tests if t.kind == "other")
        return " or ".join(parts) or "False"
