"""Sigma 値の照合 (value matching): one resolved pySigma value → a test on one string.

Sigma compares values as strings, case-insensitively unless ``cased``. The event view
(:mod:`otasuke.detect.sigma.view`) hands each test the field's lowercased string, or its
original string when the test says it needs case (``cased``, regular expressions).
"""

from __future__ import annotations

import importlib
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
    on one field run as one set lookup and one tuple ``startswith``; ``cidr`` with the
    network as ``text``: one address read for all networks; ``other`` uses ``test``."""
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
        _regex_search(compiled),
        cased=True,
        literal=regex_literal(pattern, flags),
        recipe=("re", pattern, flags),
    )


_re_parser: Any = importlib.import_module("re._parser")
"""The ``re`` module's own parser (``sre_parse``, deprecated under that name since 3.11)."""
_FOLD_UNSAFE = frozenset("iIsS")
"""ASCII letters that ``re.IGNORECASE`` also matches with a character whose ``str.lower()``
is not that letter alone (U+0130 İ → "i̇", U+0131 ı, U+017F ſ; tests/detect/test_sigma_index.py
checks the whole of Unicode): under ``|i`` they end a literal run."""
MIN_REGEX_LITERAL = 3
"""Shorter required runs are not worth a prefilter word (a regex then has no literal)."""


def regex_literal(pattern: str, flags: int) -> str | None:
    """A lowercased substring of every string ``re.search(pattern, s, flags)`` finds, or None.

    The longest of the pattern's required literal runs (:func:`_required_runs`) made of
    ASCII characters only, whose lowercase does not depend on context: the run lowercased
    is in the lowercased value whenever the run (or, case-insensitively, a variant) is in
    the value.
    """
    required = _required_runs(pattern, flags, ascii_only=True)
    if required is None:
        return None
    longest = max(required[0], key=len, default="")
    return longest.lower() if len(longest) >= MIN_REGEX_LITERAL else None


def regex_guard(pattern: str, flags: int) -> tuple[tuple[tuple[str, int], ...], bool]:
    """What a value must hold before the regex is worth running: ((run, times), …) and
    whether to look in the lowercased value (case-insensitive patterns, lowercased runs).

    Each run is a literal run the match contains; a run met k times in the pattern is at
    k places of the match (``str.count`` finds as many). Case-sensitive runs are compared
    as they are, any character; case-insensitive ones as :func:`regex_literal` does.
    """
    required = _required_runs(pattern, flags, ascii_only=False)
    if required is None:
        return (), False
    runs, ignore_case = required
    counts: dict[str, int] = {}
    for run in runs:
        key = run.lower() if ignore_case else run
        counts[key] = counts.get(key, 0) + 1
    return tuple(counts.items()), ignore_case


def _required_runs(pattern: str, flags: int, *, ascii_only: bool) -> tuple[list[str], bool] | None:
    """The literal runs every match of ``pattern`` contains, and whether it ignores case.

    Runs of the top-level sequence (groups that change no flags are opened in place; the
    body of a repetition of at least one is searched alone; alternatives, classes,
    anchors and lookarounds end a run). Case-insensitively only ASCII characters outside
    :data:`_FOLD_UNSAFE` count; case-sensitively any character, or ASCII with
    ``ascii_only``. None when the pattern does not parse.
    """
    try:
        parsed = _re_parser.parse(pattern, flags)
    except (re.error, RecursionError):
        return None
    ignore_case = bool(parsed.state.flags & re.IGNORECASE)
    if ignore_case:
        unsafe = frozenset(ord(c) for c in _FOLD_UNSAFE)
        accept: Callable[[int], bool] = lambda code: code < 128 and code not in unsafe  # noqa: E731
    elif ascii_only:
        accept = (128).__gt__
    else:
        accept = lambda _code: True  # noqa: E731
    runs: list[str] = []
    _literal_runs(parsed, accept, runs)
    return runs, ignore_case


def _literal_runs(items: Any, accept: Callable[[int], bool], runs: list[str]) -> None:
    """Append to ``runs`` the literal runs every match of the sequence ``items`` contains."""
    parser = _re_parser
    run: list[str] = []
    for op, argument in _flattened(items):
        if op is parser.LITERAL and accept(argument):
            run.append(chr(argument))
            continue
        if run:
            runs.append("".join(run))
            run = []
        if op in (parser.MAX_REPEAT, parser.MIN_REPEAT, parser.POSSESSIVE_REPEAT):
            low, _high, body = argument
            if low >= 1:
                _literal_runs(body, accept, runs)
    if run:
        runs.append("".join(run))


def _flattened(items: Any) -> list[tuple[Any, Any]]:
    """The sequence with groups that change no flags (and atomic groups) opened in place."""
    parser = _re_parser
    flat: list[tuple[Any, Any]] = []
    for op, argument in items:
        if op is parser.SUBPATTERN and not argument[1] and not argument[2]:
            flat.extend(_flattened(argument[3]))
        elif op is parser.ATOMIC_GROUP:
            flat.extend(_flattened(argument))
        else:
            flat.append((op, argument))
    return flat


def gapped_runs(pattern: str, flags: int) -> tuple[tuple[str, ...], tuple[int, ...], bool] | None:
    """A pattern made only of literal runs and gaps of any characters (``a.*b.+c``), as
    (runs, gaps, dotall); None for any other pattern.

    ``gaps[0]`` is the least number of characters before the first run, ``gaps[i]`` the
    least between run i-1 and run i, ``gaps[-1]`` the least after the last; ``dotall``:
    a gap may hold a newline. Under ``re.IGNORECASE`` only runs of ASCII characters that
    are not letters are taken (no case to fold). At least two runs: one alone is no gain.
    """
    try:
        parsed = _re_parser.parse(pattern, flags)
    except (re.error, RecursionError):
        return None
    state = parsed.state.flags
    parser = _re_parser
    runs: list[str] = []
    gaps = [0]
    run: list[str] = []

    def walk(items: Any) -> bool:
        for op, argument in items:
            if op is parser.LITERAL:
                char = chr(argument)
                if state & re.IGNORECASE and not (char.isascii() and not char.isalpha()):
                    return False
                run.append(char)
            elif op is parser.SUBPATTERN and not argument[1] and not argument[2]:
                if not walk(argument[3]):
                    return False
            elif (
                op in (parser.MAX_REPEAT, parser.MIN_REPEAT)
                and argument[1] is parser.MAXREPEAT
                and list(argument[2]) == [(parser.ANY, None)]
            ):
                if run:
                    runs.append("".join(run))
                    gaps.append(0)
                    run.clear()
                gaps[-1] += argument[0]
            else:
                return False
        return True

    if not walk(parsed):
        return None
    if run:
        runs.append("".join(run))
        gaps.append(0)
    if len(runs) < 2:
        return None
    return tuple(runs), tuple(gaps), bool(state & re.DOTALL)


def _gapped_search(runs: tuple[str, ...], gaps: tuple[int, ...], dotall: bool) -> StringTest:
    """``re.search`` of a :func:`gapped_runs` pattern in one pass: on each line (the whole
    value with ``dotall``), each run found at its earliest place after the one before
    (the earliest leaves the most room for the rest, so none is missed). Linear in the
    value, where the backtracking engine tries gap lengths (``\\+.*\\+.*…``: up to ~0.3 ms a
    long command line)."""
    pairs = tuple(zip(runs, (*gaps[1:-1], 0), strict=True))
    first, last = gaps[0], gaps[-1]

    def test(s: str) -> bool:
        for line in (s,) if dotall or "\n" not in s else s.split("\n"):
            position = first
            for run, gap in pairs:
                found = line.find(run, position)
                if found < 0:
                    break
                position = found + len(run) + gap
            else:
                if position + last <= len(line):
                    return True
        return False

    return test


def _regex_search(compiled: re.Pattern[str]) -> StringTest:
    """``compiled.search`` found something, tried only on values holding its required runs
    (:func:`regex_guard`: plain substring tests and counts, far cheaper than a search);
    a pattern of runs and gaps is searched without the regex engine (:func:`gapped_runs`)."""
    gapped = gapped_runs(compiled.pattern, compiled.flags)
    if gapped is not None:
        return _gapped_search(*gapped)
    search = compiled.search
    needles, fold = regex_guard(compiled.pattern, compiled.flags)
    present = tuple(run for run, times in needles if times == 1)
    counted = tuple((run, times) for run, times in needles if times > 1)
    if not needles:

        def test(s: str) -> bool:
            return search(s) is not None

        return test

    def guarded(s: str) -> bool:
        text = s.lower() if fold else s
        for run in present:
            if run not in text:
                return False
        for run, times in counted:
            if text.count(run) < times:
                return False
        return search(s) is not None

    return guarded


def cidr_test(value: SigmaCIDRExpression) -> ValueTest:
    """``|cidr``: the value is an IP address inside the network."""
    network = value.network
    text = str(network)
    return ValueTest(
        _cidr_test(network),
        cased=False,
        literal=None,
        kind="cidr",
        text=text,
        recipe=("cidr", text),
    )


def _cidr_test(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> StringTest:
    return cidr_any((network,))


def cidr_any(networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> StringTest:
    """The value is an IP address inside one of the networks: the address is read once
    (reading it is what costs: ~1.5 µs; a rule lists up to ten private ranges)."""
    by_version = {version: tuple(n for n in networks if n.version == version) for version in (4, 6)}

    def in_networks(s: str) -> bool:
        try:
            address = ipaddress.ip_address(s.strip())
        except ValueError:
            return False
        for network in by_version[address.version]:  # noqa: SIM110 - hot path: no generator
            if address in network:
                return True
        return False

    return in_networks


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
