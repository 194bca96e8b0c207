"""ルール索引 (rule index): which rules an event can possibly match.

Two stages, both derived generically from each rule's compiled tree:

1. **Key**: the processing pipelines AND a ``Channel`` and an ``EventID`` condition onto
   each rule; :func:`required_values` reads back the values one of which an event must
   have, so rules are filed under (channel, event id), with ``None`` for "any".
2. **Literal prefilter**: :func:`required_literals` gives, per rule, (field, literal)
   pairs one of which must occur in the event (AND: the most selective child; OR: the
   union; NOT, null, regex: none). Per index key one Aho-Corasick automaton per field
   (pyahocorasick, over lowercased values; keyword searches scan every value) finds the
   rules worth evaluating; rules without such literals are always evaluated.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import ahocorasick

from otasuke.detect.sigma.compile import ANY_FIELD, And, FieldMatch, Keyword, Node, Or
from otasuke.detect.sigma.view import EventView

KEY_FIELDS = ("channel", "eventid")
IndexKey = tuple[str | None, str | None]
Literals = frozenset[tuple[str, str]]


def required_values(node: Node, field: str) -> frozenset[str] | None:
    """Lowercased values one of which ``field`` must equal for ``node`` to hold, or None."""
    if isinstance(node, FieldMatch):
        if node.field != field:
            return None
        exact = [t.exact for t in node.tests]
        if any(e is None for e in exact):
            return None
        return frozenset(e for e in exact if e is not None)
    if isinstance(node, And):
        found = [v for v in (required_values(c, field) for c in node.children) if v is not None]
        return frozenset.intersection(*found) if found else None
    if isinstance(node, Or):
        options = [required_values(c, field) for c in node.children]
        if any(o is None for o in options):
            return None
        return frozenset().union(*(o for o in options if o is not None))
    return None


def index_keys(node: Node) -> list[IndexKey]:
    """The (channel, event id) keys to file a rule under (``None``: any)."""
    channels = required_values(node, "channel")
    event_ids = required_values(node, "eventid")
    return list(
        itertools.product(
            sorted(channels) if channels is not None else [None],
            sorted(event_ids) if event_ids is not None else [None],
        )
    )


def required_literals(node: Node, skip: Iterable[str] = KEY_FIELDS) -> Literals | None:
    """(field, lowercased literal) pairs one of which every matching event contains."""
    skipped = frozenset(skip)
    return _literals(node, skipped)


def _literals(node: Node, skip: frozenset[str]) -> Literals | None:
    if isinstance(node, FieldMatch):
        if node.field in skip:
            return None
        if any(not t.literal for t in node.tests):
            return None
        return frozenset((node.field, t.literal) for t in node.tests if t.literal)
    if isinstance(node, Keyword):
        if any(not t.literal for t in node.tests):
            return None
        return frozenset((ANY_FIELD, t.literal) for t in node.tests if t.literal)
    if isinstance(node, And):
        options = [o for o in (_literals(c, skip) for c in node.children) if o]
        return max(options, key=_selectivity, default=None)
    if isinstance(node, Or):
        alternatives = [_literals(c, skip) for c in node.children]
        if any(not a for a in alternatives):
            return None
        return frozenset().union(*(a for a in alternatives if a))
    return None


def _selectivity(literals: Literals) -> tuple[int, int]:
    """Prefer the shortest literal being long, then fewer alternatives."""
    return (min(len(lit) for _, lit in literals), -len(literals))


@dataclass(slots=True)
class Bucket:
    """The rules one index key can match, with their prefilter."""

    rules: Sequence[Any]
    always: tuple[int, ...]
    """Positions of rules evaluated on every event of this key."""
    automata: dict[str, Any]
    """Lowercased field name → Aho-Corasick automaton; payload: rule positions."""

    def candidates(self, view: EventView) -> list[int]:
        """Positions (ascending) of the rules whose literals occur in the event."""
        if not self.automata:
            return list(self.always)
        hits: set[int] = set(self.always)
        lower = view.lower
        for field, automaton in self.automata.items():
            value = view.all_values(cased=False) if field == ANY_FIELD else lower.get(field)
            if value is None:
                continue
            if type(value) is str:
                for _end, positions in automaton.iter(value):
                    hits.update(positions)
            else:
                for item in value:
                    for _end, positions in automaton.iter(item):
                        hits.update(positions)
        return sorted(hits)


def build_bucket(rules: Sequence[Any], literals: Sequence[Literals | None]) -> Bucket:
    """A bucket over ``rules`` (in order) whose literal sets are ``literals``."""
    always: list[int] = []
    words: dict[str, dict[str, set[int]]] = {}
    for position, rule_literals in enumerate(literals):
        if not rule_literals:
            always.append(position)
            continue
        for field, literal in rule_literals:
            words.setdefault(field, {}).setdefault(literal, set()).add(position)
    automata: dict[str, Any] = {}
    for field, by_literal in words.items():
        automaton = ahocorasick.Automaton()
        for literal, positions in by_literal.items():
            automaton.add_word(literal, tuple(sorted(positions)))
        automaton.make_automaton()
        automata[field] = automaton
    return Bucket(rules=rules, always=tuple(always), automata=automata)
