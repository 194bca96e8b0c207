"""ルール索引 (rule index): which rules an event can possibly match.

Two stages, both derived generically from each rule's compiled tree:

1. **Key**: the processing pipelines AND a ``Channel`` and an ``EventID`` condition onto
   each rule; :func:`required_values` reads back the values one of which an event must
   have, so rules are filed under (channel, event id), with ``None`` for "any".
2. **Literal prefilter**: :func:`required_literals` gives, per rule, (field, literal)
   pairs one of which must occur in the event (AND: the most selective child; OR: the
   union; NOT, null: none; a regex: the literal run every match contains, when certain).
   Per index key one Aho-Corasick automaton (pyahocorasick) over all those literals is
   searched once per event over its lowercased values joined by ``"\\0"``; a field's
   literal found there is then checked in that field. Rules without literals are always
   evaluated.
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


Payload = tuple[str, tuple[int, ...], tuple[tuple[str, tuple[int, ...]], ...]]
"""An automaton word's payload: (literal, rules wanting it anywhere, ((field, rules), …))."""


@dataclass(slots=True)
class Bucket:
    """The rules one index key can match, with their prefilter."""

    rules: Sequence[Any]
    always: tuple[int, ...]
    """Positions of rules evaluated on every event of this key."""
    automaton: Any | None
    """One Aho-Corasick automaton over every literal of the bucket (payload: :data:`Payload`),
    searched once per event over :meth:`EventView.search_text`; None: no literals."""

    def candidates(self, view: EventView) -> list[int]:
        """Positions (ascending) of the rules whose literals occur in the event.

        The automaton runs once over all lowercased values joined by ``"\\0"``. A literal
        found there is in some value; keyword literals need no more, a field's literal is
        checked against that field's value (a plain substring test, only on a hit). A hit
        spanning two values is at worst a spurious candidate, never a missed one.
        """
        automaton = self.automaton
        if automaton is None:
            return list(self.always)
        hits: set[int] = set(self.always)
        lower = view.lower
        seen: set[str] = set()
        for _end, (literal, anywhere, fields) in automaton.iter(view.search_text()):
            if literal in seen:
                continue
            seen.add(literal)
            if anywhere:
                hits.update(anywhere)
            for field, positions in fields:
                value = lower.get(field)
                if value is None:
                    continue
                if type(value) is str:
                    if literal in value:
                        hits.update(positions)
                else:
                    for item in value:
                        if literal in item:
                            hits.update(positions)
                            break
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
            words.setdefault(literal, {}).setdefault(field, set()).add(position)
    automaton: Any | None = None
    if words:
        automaton = ahocorasick.Automaton()
        for literal, by_field in words.items():
            anywhere = tuple(sorted(by_field.pop(ANY_FIELD, ())))
            fields = tuple((f, tuple(sorted(p))) for f, p in sorted(by_field.items()))
            payload: Payload = (literal, anywhere, fields)
            automaton.add_word(literal, payload)
        automaton.make_automaton()
    return Bucket(rules=rules, always=tuple(always), automaton=automaton)
