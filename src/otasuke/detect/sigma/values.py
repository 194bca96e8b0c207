"""Sigma 値の照合 (value matching): one resolved pySigma value → a test on one string.

Sigma compares values as strings, case-insensitively unless ``cased``. The event view
(:mod:`otasuke.detect.sigma.view`) hands each test the field's lowercased string, or its
original string when the test says it needs case (``cased``, regular expressions).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sigma.types import (
    CompareOperators,
    Placeholder,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExpansion,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaTimestampPart,
    SpecialChars,
)

StringTest = Callable[[str], bool]
Part = str | int
"""A piece of a Sigma string: literal text, or :data:`MULTI` (``*``) / :data:`SINGLE` (``?``)."""
MULTI: Final = 0
SINGLE: Final = 1
Recipe = tuple[Any, ...]
"""Plain data a test function is rebuilt from (the rule cache pickles it, not the closure)."""


class Unsupported(Exception):
    """A value or construct this engine does not evaluate; the rule is refused with it."""


@dataclass(frozen=True, slots=True)
class ValueTest:
    """A test on one string value, with what the index may use of it."""

    test: StringTest = field(compare=False)
    """Rebuilt from ``recipe`` when unpickled; two tests with equal recipes are equal."""
    cased: bool
    """True: gets the original string; False: the lowercased one."""
    literal: str | None
    """A lowercased substring every matching value contains (for the prefilter)."""
    exact: str | None = None
    """The lowercased value when the test is plain equality (for the rule index)."""
    kind: str = "other"
    """``eq``, ``prefix``, ``suffix`` or ``contains`` with ``text``: lets an OR of values
    on one field run as one set lookup and one tuple ``startswith``; ``other`` uses ``test``."""
    text: str = ""
    recipe: Recipe = ()
    """How to rebuild ``test`` (see :func:`test_from_recipe`); ``()``: not rebuildable."""

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        if not self.recipe:
            raise TypeError("this ValueTest has no recipe and cannot be pickled")
        fields = (self.recipe, self.cased, self.literal, self.exact, self.kind, self.text)
        return (_restore, fields)


def _restore(
    recipe: Recipe, cased: bool, literal: str | None, exact: str | None, kind: str, text: str
) -> ValueTest:
    return ValueTest(test_from_recipe(recipe), cased, literal, exact, kind, text, recipe)


def test_from_recipe(recipe: Recipe) -> StringTest:
    """The string test a recipe describes: ``("s", parts)``, ``("eq", text)``,
    ``("re", pattern, flags)``, ``("cidr", network)`` or ``("cmp", op, bound)``."""
    kind = recipe[0]
    if kind == "s":
        return _wildcard_test(recipe[1])
    if kind == "eq":
        return str(recipe[1]).__eq__
    if kind == "re":
        return _regex_search(re.compile(recipe[1], recipe[2]))
    if kind == "cidr":
        return _cidr_test(ipaddress.ip_network(recipe[1], strict=False))
    if kind == "cmp":
        return _compare_test(recipe[1], recipe[2])
    raise ValueError(f"unknown value test recipe {recipe!r:.60}")


def value_tests(value: Any) -> list[ValueTest]:
    """The tests for one pySigma value (an expansion gives one test per alternative)."""
    if isinstance(value, SigmaExpansion):
        return [test for inner in value.values for test in value_tests(inner)]
    if isinstance(value, SigmaString):
        return [string_test(value)]
    if isinstance(value, SigmaTimestampPart):
        raise Unsupported("timestamp part modifiers (minute, hour, day…) are not supported")
    if isinstance(value, SigmaNumber):
        text = str(value.number).lower()
        return [ValueTest(text.__eq__, False, text, text, "eq", text, ("eq", text))]
    if isinstance(value, SigmaBool):
        text = "true" if value.boolean else "false"
        return [ValueTest(text.__eq__, False, text, text, "eq", text, ("eq", text))]
    if isinstance(value, SigmaRegularExpression):
        return [regex_test(value)]
    if isinstance(value, SigmaCIDRExpression):
        return [cidr_test(value)]
    if isinstance(value, SigmaCompareExpression):
        return [compare_test(value)]
    raise Unsupported(f"value type {type(value).__name__} is not supported")


def string_test(value: SigmaString) -> ValueTest:
    """Sigma 文字列: plain parts and the wildcards ``*`` and ``?``."""
    if value.contains_placeholder():
        names = ", ".join(f"%{p.name}%" for p in value.s if isinstance(p, Placeholder))
        raise Unsupported(
            f"placeholder {names} (expand modifier) has no value: per-customer values "
            "are not yet configurable"
        )
    cased = isinstance(value, SigmaCasedString)
    parts: list[Part] = []
    for part in value.s:
        if isinstance(part, str):
            text = part if cased else part.lower()
            if parts and isinstance(parts[-1], str):
                parts[-1] += text
            else:
                parts.append(text)
        elif part is SpecialChars.WILDCARD_MULTI:
            parts.append(MULTI)
        elif part is SpecialChars.WILDCARD_SINGLE:
            parts.append(SINGLE)
        else:
            raise Unsupported(f"string part {part!r} is not supported")
    literals = [p for p in parts if isinstance(p, str)]
    longest = max(literals, key=len, default="")
    literal = (longest if not cased else longest.lower()) or None
    kind, text = _shape(parts)
    frozen = tuple(parts)
    return ValueTest(
        _wildcard_test(frozen),
        cased,
        literal,
        None if cased else _exact(parts),
        kind,
        text,
        ("s", frozen),
    )


def _shape(parts: Sequence[Part]) -> tuple[str, str]:
    """``eq``/``prefix``/``suffix``/``contains`` and its text, or ``other``."""
    texts = [p for p in parts if isinstance(p, str)]
    if len(texts) != 1:
        return ("eq", "") if not parts else ("other", "")
    text = texts[0]
    shape = tuple("s" if isinstance(p, str) else ("*" if p == MULTI else "?") for p in parts)
    kinds = {("s",): "eq", ("s", "*"): "prefix", ("*", "s"): "suffix", ("*", "s", "*"): "contains"}
    return kinds.get(shape, "other"), text


def _exact(parts: Sequence[Part]) -> str | None:
    if not parts:
        return ""
    if len(parts) == 1 and isinstance(parts[0], str):
        return parts[0]
    return None


def _wildcard_test(parts: Sequence[Part]) -> StringTest:
    """Fast str methods for the usual shapes, a compiled regex otherwise."""
    if not parts:
        return "".__eq__
    if len(parts) == 1:
        only = parts[0]
        if isinstance(only, str):
            return only.__eq__
        if only == MULTI:
            return lambda _value: True
    if len(parts) == 2:
        first, second = parts
        if first == MULTI and isinstance(second, str):
            return _endswith(second)
        if second == MULTI and isinstance(first, str):
            return _startswith(first)
    if len(parts) == 3:
        first, middle, last = parts
        if first == MULTI and last == MULTI and isinstance(middle, str):
            return _contains(middle)
    pattern = "".join(
        re.escape(p) if isinstance(p, str) else (".*" if p == MULTI else ".") for p in parts
    )
    return re.compile(pattern, re.DOTALL).fullmatch  # type: ignore[return-value]


def _endswith(suffix: str) -> StringTest:
    def test(s: str) -> bool:
        return s.endswith(suffix)

    return test


def _contains(needle: str) -> StringTest:
    def test(s: str) -> bool:
        return needle in s

    return test


def _startswith(prefix: str) -> StringTest:
    def test(s: str) -> bool:
        return s.startswith(prefix)

    return test


_REGEX_FLAGS = {
    SigmaRegularExpressionFlag.IGNORECASE: re.IGNORECASE,
    SigmaRegularExpressionFlag.MULTILINE: re.MULTILINE,
    SigmaRegularExpressionFlag.DOTALL: re.DOTALL,
}


def regex_test(value: SigmaRegularExpression) -> ValueTest:
    """``|re``: searched anywhere in the original (case-sensitive unless ``|i``) value."""
    flags = 0
    for flag in value.flags:
        flags |= _REGEX_FLAGS[flag]
    pattern = str(value.regexp)
    try:
        compiled = re.compile(pattern, flags)
    except re.error as err:
        raise Unsupported(f"regular expression does not compile in Python: {err}") from None
    return ValueTest(
        _regex_search(compiled), cased=True, literal=None, recipe=("re", pattern, flags)
    )


def _regex_search(compiled: re.Pattern[str]) -> StringTest:
    search = compiled.search

    def test(s: str) -> bool:
        return search(s) is not None

    return test


def cidr_test(value: SigmaCIDRExpression) -> ValueTest:
    """``|cidr``: the value is an IP address inside the network."""
    network = value.network
    return ValueTest(_cidr_test(network), cased=False, literal=None, recipe=("cidr", str(network)))


def _cidr_test(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> StringTest:
    def in_network(s: str) -> bool:
        try:
            return ipaddress.ip_address(s.strip()) in network
        except ValueError:
            return False

    return in_network


def compare_test(value: SigmaCompareExpression) -> ValueTest:
    """``|lt`` ``|lte`` ``|gt`` ``|gte``: numeric comparison; a non-number never matches."""
    bound = float(value.number.number)
    op = value.op.name
    return ValueTest(_compare_test(op, bound), cased=False, literal=None, recipe=("cmp", op, bound))


def _compare_test(op: str, bound: float) -> StringTest:
    compare: Callable[[float], bool]
    if op == CompareOperators.LT.name:
        compare = bound.__gt__
    elif op == CompareOperators.LTE.name:
        compare = bound.__ge__
    elif op == CompareOperators.GT.name:
        compare = bound.__lt__
    elif op == CompareOperators.GTE.name:
        compare = bound.__le__
    else:
        compare = bound.__ne__

    def numeric(s: str) -> bool:
        try:
            number = float(int(s, 0)) if s[:2] in ("0x", "0X") else float(s)
        except ValueError:
            return False
        return bool(compare(number))

    return numeric
