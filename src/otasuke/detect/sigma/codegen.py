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

from typing import Any

from otasuke.detect.sigma.compile import (
    And,
    FieldMatch,
    Node,
    Not,
    Or,
    Predicate,
    combine_tests,
    on_value,
    predicate,
    test_groups,
)
from otasuke.detect.sigma.values import ValueTest


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
        self.constants: dict[str, Any] = {"_on_value": on_value}

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
        groups = test_groups(tests)
        equal = sorted(groups.equal)
        if len(equal) == 1:
            parts.append(f"_v == {equal[0]!r}")
        elif equal:
            parts.append(f"_v in {self.constant(groups.equal)}")
        if groups.prefixes:
            parts.append(f"_v.startswith({self.constant(groups.prefixes)})")
        if groups.suffixes:
            parts.append(f"_v.endswith({self.constant(groups.suffixes)})")
        parts.extend(f"{needle!r} in _v" for needle in groups.needles)
        parts.extend(f"{self.constant(other)}(_v)" for other in groups.others)
        return " or ".join(parts) or "False"
