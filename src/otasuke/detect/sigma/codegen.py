"""ルールの関数化 (rules as functions): one generated Python function per rule.

:func:`~otasuke.detect.sigma.compile.predicate` turns a rule tree into nested closures:
an AND calls each child, a field test fetches its value and calls its string test. Most
of an evaluation was those calls. Here the same tree becomes the source of one function,
``return (<a> and (<b> or not <c>))``, with each field's value fetched once and its plain
tests written out (``v in {…}``, ``v.startswith((…))``, ``'…' in v``); anything else
(case-sensitive tests, regular expressions, CIDR, null, exists, field references,
keywords) calls the closure ``predicate`` builds for that node, as ``_k[i]``.

Generating and compiling the source takes ~0.3 ms a rule, so it is done once, when the
rule is compiled from YAML (:func:`predicate_code`), and the code object is kept with the
rule's tree in the compiled-rule cache (``marshal``); loading a rule binds it
(:func:`bound_predicate`, ~10 µs): every rule runs as its function from its first event.

Rule values enter the source only as ``repr`` of a ``str`` (a string literal, never
code) and field names likewise; the closures in ``_k`` are rebuilt from the tree in the
order the generator met them (:func:`closures_of`). The answers are the closures' (a
test compares both on every bundled rule over the corpus).
"""

from __future__ import annotations

import marshal
from collections.abc import Callable
from typing import Any

from otasuke.detect.sigma.compile import (
    And,
    FieldMatch,
    Node,
    Not,
    Or,
    Predicate,
    on_value,
    other_tests,
    predicate,
    test_groups,
)
from otasuke.detect.sigma.values import ValueTest


def predicate_code(node: Node, name: str = "rule") -> bytes | None:
    """The marshalled code of ``node``'s generated function; None if it cannot be made
    (the rule then runs as closures)."""
    generator = _Generator()
    try:
        body = generator.expression(node)
        source = "".join(generator.helpers) + (
            f"def predicate(view):\n    L = view.lower\n    return {body}\n"
        )
        return marshal.dumps(compile(source, f"<sigma rule {name}>", "exec"))
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return None


def bound_predicate(code: bytes, node: Node) -> Predicate | None:
    """The function :func:`predicate_code` made for ``node``; None if ``code`` does not
    load (damaged, or from another Python)."""
    try:
        module = marshal.loads(code)
        namespace: dict[str, Any] = {"_on_value": on_value, "_k": closures_of(node)}
        exec(module, namespace)
    except (ValueError, EOFError, TypeError, NameError, RecursionError):
        return None
    made = namespace.get("predicate")
    return made if callable(made) else None


def _plain(node: Node) -> bool:
    """A field test written out in the source (else a closure is called)."""
    return (
        isinstance(node, FieldMatch) and bool(node.tests) and not any(t.cased for t in node.tests)
    )


def closures_of(node: Node) -> tuple[Callable[..., bool], ...]:
    """The ``_k`` of ``node``'s generated function: in the generator's order (depth
    first), each plain field test's other tests (:func:`other_tests`), and the closure of
    every node not written out."""
    found: list[Callable[..., bool]] = []

    def walk(current: Node) -> None:
        if isinstance(current, And | Or):
            for child in current.children:
                walk(child)
        elif isinstance(current, Not):
            walk(current.child)
        elif _plain(current):
            assert isinstance(current, FieldMatch)
            found.extend(other_tests(current.tests))
        else:
            found.append(predicate(current))

    walk(node)
    return tuple(found)


class _Generator:
    """Walks a tree as :func:`closures_of` does, writing the source."""

    def __init__(self) -> None:
        self.closures = 0
        self.helpers: list[str] = []

    def closure(self) -> str:
        self.closures += 1
        return f"_k[{self.closures - 1}]"

    def expression(self, node: Node) -> str:
        if isinstance(node, And):
            return "(" + " and ".join(self.expression(c) for c in node.children) + ")"
        if isinstance(node, Or):
            return "(" + " or ".join(self.expression(c) for c in node.children) + ")"
        if isinstance(node, Not):
            return f"(not {self.expression(node.child)})"
        if _plain(node):
            assert isinstance(node, FieldMatch)
            on_string = self.string_test(list(node.tests))
            helper = f"_t{len(self.helpers)}"  # the same test for each item of a list value
            self.helpers.append(f"def {helper}(_v):\n    return {on_string}\n")
            return (
                f"(({on_string}) if type(_v := L[{node.field!r}]) is str"
                f" else _on_value(_v, {helper}))"
            )
        return f"{self.closure()}(view)"

    def string_test(self, tests: list[ValueTest]) -> str:
        """An expression true when the lowercased string ``_v`` passes any of ``tests``
        (what :func:`~otasuke.detect.sigma.compile.combine_tests` answers)."""
        parts: list[str] = []
        groups = test_groups(tests)
        equal = sorted(groups.equal)
        if len(equal) == 1:
            parts.append(f"_v == {equal[0]!r}")
        elif equal:  # a set display after ``in``: one frozenset constant in the code
            parts.append(f"_v in {{{', '.join(map(repr, equal))}}}")
        if groups.prefixes:
            parts.append(f"_v.startswith({_tuple(groups.prefixes)})")
        if groups.suffixes:
            parts.append(f"_v.endswith({_tuple(groups.suffixes)})")
        parts.extend(f"{needle!r} in _v" for needle in groups.needles)
        parts.extend(f"{self.closure()}(_v)" for _other in groups.others)
        return " or ".join(parts) or "False"


def _tuple(texts: tuple[str, ...]) -> str:
    return "(" + "".join(f"{text!r}, " for text in texts) + ")"
