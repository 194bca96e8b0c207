"""ルール索引 (rule index): which rules an event can possibly match.

Two stages, both derived generically from each rule's compiled tree:

1. **Key**: the processing pipelines AND a ``Channel`` and an ``EventID`` condition onto
   each rule; :func:`required_values` reads back the values one of which an event must
   have, so rules are filed under (channel, event id), with ``None`` for "any".
2. **Literal prefilter**: :func:`required_literals` gives, per rule, (field, literal)
   pairs one of which must occur in the event (AND: the most selective child; OR: the
   union; NOT, null: none; a regex: the literal run every match contains, when certain).
   Per index key one multi-literal matcher over all those literals is searched once per
   event over its lowercased values joined by ``"\\0"``; a field's literal found there is
   then checked in that field. Rules without literals are always evaluated.

The matcher is Hyperscan (Intel's multi-pattern engine, the one Suricata uses; Python
binding ``hyperscan``, BSD/MIT) where its wheel exists (x86-64), else pyahocorasick: the
same literals, the same answers (a test runs both), Hyperscan ~5× faster on this search
(bench/README.md).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ahocorasick

from otasuke.detect.sigma.compile import ANY_FIELD, And, FieldMatch, Keyword, Node, Or
from otasuke.detect.sigma.view import EventView

hyperscan: Any
try:  # x86-64 wheels only; elsewhere the pyahocorasick matcher does the same work
    import hyperscan
except ImportError:  # pragma: no cover - depends on the platform
    hyperscan = None

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
"""A literal's payload: (literal, rules wanting it anywhere, ((field, rules), …))."""


class LiteralMatcher:
    """Which of a fixed list of literals occur in a text: pyahocorasick (portable)."""

    engine = "pyahocorasick"

    def __init__(self, literals: Sequence[str]) -> None:
        automaton = ahocorasick.Automaton()
        for number, literal in enumerate(literals):
            automaton.add_word(literal, number)
        automaton.make_automaton()
        self._automaton = automaton

    def found(self, text: str) -> Iterable[int]:
        """Numbers of the literals occurring in ``text`` (a number may repeat)."""
        return [number for _end, number in self._automaton.iter(text)]


class HyperscanMatcher(LiteralMatcher):
    """The same answers as :class:`LiteralMatcher` from a Hyperscan literal database.

    Hyperscan scans bytes: text and literals are UTF-8 (``surrogatepass``, so any Python
    string goes), and a literal's bytes occur in the text's bytes exactly where the
    literal occurs in the text. ``SINGLEMATCH`` reports each literal once. A scan needs a
    scratch space no other scan uses at the same time: one per thread. The binding passes
    literals as C strings, so a literal holding NUL (none in the shipped rules) is tested
    with ``in`` instead.
    """

    engine = "hyperscan"

    def __init__(self, literals: Sequence[str], cache_dir: Path | None = None) -> None:
        assert hyperscan is not None
        plain = [(n, literal) for n, literal in enumerate(literals) if "\0" not in literal]
        self._with_nul = [(n, literal) for n, literal in enumerate(literals) if "\0" in literal]
        self._database: Any = _hyperscan_database(plain, cache_dir) if plain else None
        self._local = threading.local()

    def found(self, text: str) -> Iterable[int]:
        numbers: list[int] = []
        database = self._database
        if database is not None:
            local = self._local
            scratch = getattr(local, "scratch", None)
            if scratch is None:
                scratch = local.scratch = hyperscan.Scratch(database)
            database.scan(
                text.encode("utf-8", "surrogatepass"),
                match_event_handler=_append_number,
                context=numbers,
                scratch=scratch,
            )
        for number, literal in self._with_nul:
            if literal in text:
                numbers.append(number)
        return numbers


PREFILTER_CACHE = "prefilter"
"""Sub-folder of the rule cache holding compiled Hyperscan databases."""
_STALE_SECONDS = 30 * 86400


def _hyperscan_database(plain: Sequence[tuple[int, str]], cache_dir: Path | None) -> Any:
    """The compiled database for these (number, literal) pairs, from the cache if there.

    Compiling the largest bucket (Sysmon process creation, ~7,500 literals) takes ~0.2 s;
    loading it ~1 ms. Entries are named by the SHA-256 of the literals and the Hyperscan
    version (content-addressed: a rule change makes a new entry, never a wrong one); an
    entry that does not load (another CPU, another version, damaged) is compiled again.
    Entries unused for 30 days are removed when a new one is written.
    """
    assert hyperscan is not None
    digest = hashlib.sha256(hyperscan.__version__.encode())
    for number, literal in plain:
        digest.update(f"{number}:{len(literal)}:".encode())
        digest.update(literal.encode("utf-8", "surrogatepass"))
    entry = cache_dir / PREFILTER_CACHE / f"{digest.hexdigest()}.hs" if cache_dir else None
    if entry is not None and entry.is_file():
        try:
            database = hyperscan.loadb(entry.read_bytes(), hyperscan.HS_MODE_BLOCK)
            os.utime(entry)  # recently used: not pruned
            return database
        except (OSError, hyperscan.error):
            pass  # compiled again below and rewritten
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(
        expressions=[literal.encode("utf-8", "surrogatepass") for _, literal in plain],
        ids=[n for n, _ in plain],
        elements=len(plain),
        flags=hyperscan.HS_FLAG_SINGLEMATCH,
        literal=True,
    )
    if entry is not None:
        _store_entry(entry, hyperscan.dumpb(database))
    return database


def _store_entry(entry: Path, data: bytes) -> None:
    """Write atomically (a reader never sees half a file); the cache is only an accelerator."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=entry.parent, delete=False) as handle:
            handle.write(data)
        os.replace(handle.name, entry)
        if entry.parent not in _PRUNED:  # once per process and folder
            _PRUNED.add(entry.parent)
            cutoff = time.time() - _STALE_SECONDS
            for old in entry.parent.glob("*.hs"):
                if old.stat().st_mtime < cutoff:
                    old.unlink(missing_ok=True)
    except OSError:
        pass


_PRUNED: set[Path] = set()


def _append_number(number: int, _start: int, _end: int, _flags: int, numbers: list[int]) -> None:
    """Hyperscan's match callback: the literal's number onto the list passed as context."""
    numbers.append(number)


def literal_matcher(
    literals: Sequence[str], engine: str | None = None, cache_dir: Path | None = None
) -> LiteralMatcher:
    """The fastest matcher available (``engine``: force ``hyperscan`` or ``pyahocorasick``).

    ``cache_dir``: the compiled-rule cache folder, where Hyperscan databases are kept.
    """
    if engine == "pyahocorasick" or (engine is None and hyperscan is None):
        return LiteralMatcher(literals)
    return HyperscanMatcher(literals, cache_dir)


FINAL_SIGMA = "ς"
SIGMA = "σ"
"""``str.lower`` maps Σ to ς or σ by its neighbours, and an escape (``\\n``) gives a Σ
other neighbours in JSON than in its value: text and literals are compared with ς as σ."""


def rendered_forms(literal: str) -> tuple[str, ...]:
    """How a lowercased literal of a value occurs in the value's JSON text, lowercased.

    A JSON string escapes ``"``, ``\\`` and control characters (``\\n``, ``\\u001f``): a
    value holding the literal holds its escaped form in the document. The literal itself is
    kept too, for values whose text is itself JSON (a nested element the parser keeps as
    its compact JSON, with unescaped quotes). Non-ASCII characters are not escaped, by the
    ``evtx`` renderer as by orjson and ``json.dumps(ensure_ascii=False)``. Final sigma is
    written as σ (:func:`rendered_text`).
    """
    literal = literal.replace(FINAL_SIGMA, SIGMA)
    escaped = json.dumps(literal, ensure_ascii=False)[1:-1].lower()
    return (literal,) if escaped == literal else (literal, escaped)


def rendered_text(text: str) -> str:
    """A JSON document lowercased as :meth:`Bucket.rendered_found` searches it."""
    return text.lower().replace(FINAL_SIGMA, SIGMA)


@dataclass(slots=True)
class Bucket:
    """The rules one index key can match, with their prefilter."""

    rules: Sequence[Any]
    always: tuple[int, ...]
    """Positions of rules evaluated on every event of this key."""
    matcher: LiteralMatcher | None
    """One matcher over every literal of the bucket, searched once per event over
    :meth:`EventView.search_text`; None: no literals."""
    payloads: Sequence[Payload]
    """Per literal number of :attr:`matcher`: who wants it (:data:`Payload`)."""
    engine: str | None = None
    cache_dir: Path | None = None
    _rendered: tuple[LiteralMatcher, tuple[tuple[int, ...], ...]] | None = None
    """The matcher of :meth:`rendered_found` (built on first use) and, per pattern, the
    literal numbers it stands for."""

    def candidates(self, view: EventView, found: Iterable[int] | None = None) -> list[int]:
        """Positions (ascending) of the rules whose literals occur in the event.

        The matcher runs once over all lowercased values joined by ``"\\0"``. A literal
        found there is in some value; keyword literals need no more, a field's literal is
        checked against that field's value (a plain substring test, only on a hit). A hit
        spanning two values is at worst a spurious candidate, never a missed one.
        ``found``: literal numbers already known to include every literal of the event's
        values (:meth:`rendered_found` on its JSON text); the search is then skipped.
        """
        matcher = self.matcher
        if matcher is None:
            return list(self.always)
        hits: set[int] = set(self.always)
        lower = view.lower
        payloads = self.payloads
        for number in set(matcher.found(view.search_text()) if found is None else found):
            literal, anywhere, fields = payloads[number]
            if anywhere:
                hits.update(anywhere)
            for field, positions in fields:
                value = lower[field]
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

    def rendered_found(self, text: str) -> set[int]:
        """Numbers of the literals that may occur in an event, from its JSON text.

        ``text``: the event's rendered JSON document, as it is. Every literal occurring
        in one of the event's values occurs here in one of its :func:`rendered_forms`, so
        the answer includes every number :meth:`candidates` could find (names and JSON
        punctuation may add more): an empty answer, in a bucket without ``always`` rules,
        means no rule of the bucket can match and the event need not be decoded at all.
        """
        if self.matcher is None:
            return set()
        matcher, by_pattern = self._rendered or self.prepare_rendered()
        found: set[int] = set()
        for pattern in matcher.found(rendered_text(text)):
            found.update(by_pattern[pattern])
        return found

    def prepare_rendered(self) -> tuple[LiteralMatcher, tuple[tuple[int, ...], ...]]:
        """Build (or load from the cache folder) the matcher of :meth:`rendered_found`.

        Two literals can share a form (``\\\\`` plain and ``\\`` escaped; ``σ`` and ``ς``), so
        each distinct form is one pattern standing for every literal number that has it
        (pyahocorasick keeps one value per word).
        """
        rendered = self._rendered
        if rendered is None:
            forms: dict[str, list[int]] = {}
            for number, (literal, _anywhere, _fields) in enumerate(self.payloads):
                for form in rendered_forms(literal):
                    forms.setdefault(form, []).append(number)
            matcher = literal_matcher(list(forms), self.engine, self.cache_dir)
            rendered = matcher, tuple(tuple(numbers) for numbers in forms.values())
            self._rendered = rendered
        return rendered


def build_bucket(
    rules: Sequence[Any],
    literals: Sequence[Literals | None],
    engine: str | None = None,
    cache_dir: Path | None = None,
) -> Bucket:
    """A bucket over ``rules`` (in order) whose literal sets are ``literals``."""
    always: list[int] = []
    words: dict[str, dict[str, set[int]]] = {}
    for position, rule_literals in enumerate(literals):
        if not rule_literals:
            always.append(position)
            continue
        for field, literal in rule_literals:
            words.setdefault(literal, {}).setdefault(field, set()).add(position)
    payloads: list[Payload] = []
    for literal, by_field in sorted(words.items()):  # stable numbers: the cache key
        anywhere = tuple(by_field.pop(ANY_FIELD, ()))
        fields = tuple((f, tuple(p)) for f, p in by_field.items())
        payloads.append((literal, anywhere, fields))
    literals_in_order = [payload[0] for payload in payloads]
    matcher = literal_matcher(literals_in_order, engine, cache_dir) if words else None
    return Bucket(
        rules=rules,
        always=tuple(always),
        matcher=matcher,
        payloads=payloads,
        engine=engine,
        cache_dir=cache_dir,
    )
