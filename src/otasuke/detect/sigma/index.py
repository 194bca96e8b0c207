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

import functools
import hashlib
import itertools
import json
import os
import pickle
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

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

    def found(self, text: str) -> list[int]:
        """Numbers of the literals occurring in ``text`` (a number may repeat)."""
        return [number for _end, number in self._automaton.iter(text)]

    def finder(self) -> Callable[[str], Collection[int]]:
        """:meth:`found` for use by the calling thread only (hot loops)."""
        iterate = self._automaton.iter

        def found(text: str) -> Collection[int]:
            return [number for _end, number in iterate(text)]

        return found


class HyperscanMatcher(LiteralMatcher):
    """The same answers as :class:`LiteralMatcher` from a Hyperscan literal database.

    Hyperscan scans bytes: text and literals are UTF-8 (``surrogatepass``, so any Python
    string goes), and a literal's bytes occur in the text's bytes exactly where the
    literal occurs in the text. ``SINGLEMATCH`` reports each literal once. A scan needs a
    scratch space no other scan uses at the same time: one per thread. The binding passes
    literals as C strings, so a literal holding NUL (none in the shipped rules) is tested
    with ``in`` instead.

    ``caseless``: ASCII letters compared without case, for texts searched as they are
    rather than lowercased (see :meth:`Bucket.prepare_rendered`); an empty literal stands
    for none (the caller's way of leaving a literal out while keeping the numbers).
    """

    engine = "hyperscan"

    def __init__(
        self, literals: Sequence[str], cache_dir: Path | None = None, *, caseless: bool = False
    ) -> None:
        assert hyperscan is not None
        numbered = [(n, literal) for n, literal in enumerate(literals) if literal]
        plain = [(n, literal) for n, literal in numbered if "\0" not in literal]
        self._with_nul = [(n, literal) for n, literal in numbered if "\0" in literal]
        flags = hyperscan.HS_FLAG_SINGLEMATCH
        if caseless:
            flags |= hyperscan.HS_FLAG_CASELESS
        self._caseless = caseless
        self._database: Any = _hyperscan_database(plain, cache_dir, flags) if plain else None
        self._local = threading.local()

    def _scratch(self) -> Any:
        """The calling thread's scratch space for this database."""
        local = self._local
        scratch = getattr(local, "scratch", None)
        if scratch is None:
            scratch = local.scratch = hyperscan.Scratch(self._database)
        return scratch

    def finder(self) -> Callable[[str], Collection[int]]:
        database = self._database
        if database is None or self._with_nul:
            return self.found
        scan = database.scan
        scratch = self._scratch()

        def found(text: str) -> Collection[int]:
            numbers: list[int] = []
            scan(
                text.encode("utf-8", "surrogatepass"),
                match_event_handler=_append_number,
                context=numbers,
                scratch=scratch,
            )
            return numbers

        return found

    def found(self, text: str) -> list[int]:
        numbers: list[int] = []
        database = self._database
        if database is not None:
            scratch = self._scratch()
            database.scan(
                text.encode("utf-8", "surrogatepass"),
                match_event_handler=_append_number,
                context=numbers,
                scratch=scratch,
            )
        if self._with_nul:
            searched = text.lower() if self._caseless else text
            for number, literal in self._with_nul:
                if literal in searched:
                    numbers.append(number)
        return numbers


PREFILTER_CACHE = "prefilter"
"""Sub-folder of the rule cache holding compiled Hyperscan databases."""
_STALE_SECONDS = 30 * 86400


def _hyperscan_database(
    plain: Sequence[tuple[int, str]],
    cache_dir: Path | None,
    flags: int = 0,
) -> Any:
    """The compiled database for these (number, literal) pairs, from the cache if there.

    Compiling the largest bucket (Sysmon process creation, ~7,500 literals) takes ~0.2 s;
    loading it ~1 ms (:func:`cached_database`).
    """
    assert hyperscan is not None
    flags = flags or hyperscan.HS_FLAG_SINGLEMATCH
    tag = hyperscan.__version__
    if flags != hyperscan.HS_FLAG_SINGLEMATCH:  # entries of plain databases keep their names
        tag += f"flags:{flags}:"

    def load(data: bytes) -> Any:
        try:
            return hyperscan.loadb(data, hyperscan.HS_MODE_BLOCK)
        except hyperscan.error as error:
            raise ValueError(str(error)) from error

    def build() -> Any:
        database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        database.compile(
            expressions=[literal.encode("utf-8", "surrogatepass") for _, literal in plain],
            ids=[n for n, _ in plain],
            elements=len(plain),
            flags=flags,
            literal=True,
        )
        return database

    return cached_database(database_entry(cache_dir, tag, plain), load, build, hyperscan.dumpb)


_Database = TypeVar("_Database")


def database_entry(
    cache_dir: Path | None,
    tag: str,
    plain: Iterable[tuple[int, str]],
    named_by: str | None = None,
) -> Path | None:
    """Where the database of these (number, literal) pairs is kept in the cache folder.

    Entries are named by the SHA-256 of ``tag`` (the engine, its version, its flags) and
    the literals: content-addressed, so a rule change makes a new entry, never a wrong one.
    ``named_by``: a name that already stands for the literals (a cached bucket's key), so
    they need not be hashed again.
    """
    if cache_dir is None:
        return None
    if named_by is not None:
        return cache_dir / PREFILTER_CACHE / f"{named_by}-{_digest(tag)[:16]}.hs"
    named = "".join([f"{number}:{len(literal)}:{literal}" for number, literal in plain])
    return cache_dir / PREFILTER_CACHE / f"{_digest(tag + chr(0) + named)}.hs"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def cached_database(
    entry: Path | None,
    load: Callable[[bytes], _Database],
    build: Callable[[], _Database],
    dump: Callable[[_Database], bytes],
) -> _Database:
    """The database kept at ``entry`` (``load``), or else ``build`` it and keep it there.

    An entry that does not load (``ValueError``: another CPU, another version, damaged) is
    built again and rewritten. Entries unused for 30 days are removed when a new one is
    written.
    """
    if entry is not None and entry.is_file():
        try:
            database = load(entry.read_bytes())
            os.utime(entry)  # recently used: not pruned
            return database
        except (OSError, ValueError):
            pass  # built again below and rewritten
    database = build()
    if entry is not None:
        _store_entry(entry, dump(database))
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
            for old in entry.parent.glob(f"*{entry.suffix}"):
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


@functools.cache  # a literal is in many buckets; the rules' literals are a bounded set
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
    if literal.isprintable() and '"' not in literal and "\\" not in literal:
        return (literal,)  # nothing JSON escapes (printable: no control characters)
    escaped = json.dumps(literal, ensure_ascii=False)[1:-1].lower()
    return (literal,) if escaped == literal else (literal, escaped)


def rendered_text(text: str) -> str:
    """A JSON document lowercased as :meth:`Bucket.rendered_found` searches it."""
    return text.lower().replace(FINAL_SIGMA, SIGMA)


class RenderedMatchers(NamedTuple):
    """What :meth:`Bucket.rendered_found` searches with."""

    lowered: LiteralMatcher
    """Every pattern (a literal's :func:`rendered_forms`), on lowercased JSON text."""
    by_pattern: tuple[tuple[int, ...], ...]
    """Per pattern, the literal numbers it stands for."""
    caseless: LiteralMatcher | None
    """For texts as they are (Hyperscan only): the :func:`case_stable` patterns with the
    same numbers, then the :func:`_case_triggers` of the others, numbered from
    ``len(by_pattern)`` on."""


@functools.cache
def case_stable(literal: str) -> bool:
    """Whether every non-ASCII character of ``literal`` is one no case mapping touches.

    Such a character is in a lowercased text exactly where it is in the text (no other
    character lowercases to it: tests/detect/test_rendered_screen.py checks all of
    Unicode), so the literal can be searched in the text as it is, with ASCII letters
    compared without case. True of dashes, ®, CJK; not of Greek or accented letters.
    """
    return literal.isascii() or all(c.isascii() or c.lower() == c == c.upper() for c in literal)


_OTHER_SOURCES = {
    "å": "\u212b",  # ANGSTROM SIGN
    "θ": "\u03f4",  # GREEK CAPITAL THETA SYMBOL
    "ω": "\u2126",  # OHM SIGN
    "ß": "\u1e9e",  # LATIN CAPITAL LETTER SHARP S
    "\u0307": "\u0130",  # COMBINING DOT ABOVE, from İ
    SIGMA: FINAL_SIGMA,
}
"""Characters whose lowercase holds a character other than by its own upper or title case
(Angstrom sign, Ohm sign …), and ς, which :func:`rendered_text` writes as σ."""


def lowercase_sources(char: str) -> frozenset[str]:
    """Every character whose :func:`rendered_text` holds ``char`` (a non-ASCII one)."""
    sources = {char, *_OTHER_SOURCES.get(char, "")}
    sources.update(c for c in (char.upper(), char.title()) if len(c) == 1)
    return frozenset(sources)


def _case_triggers(patterns: Sequence[str]) -> list[str]:
    """Characters at least one of which a text holds if a pattern that is not
    :func:`case_stable` can occur in its lowercase: one cased character of each such
    pattern, with every character that lowercases to it."""
    triggers: set[str] = set()
    for pattern in patterns:
        if pattern.isascii():
            continue
        for char in pattern:
            if not char.isascii() and not case_stable(char):
                triggers.update(lowercase_sources(char))
                break
    return sorted(triggers)


_LOWER_TO_ASCII = ("\u0130", "\u212a")
"""The only characters whose ``str.lower()`` holds ASCII letters (İ → "i̇", Kelvin K → "k");
İ is also the only one that lowercases to two characters."""


def lowers_alike(text: str) -> bool:
    """Whether ``text.lower()`` maps each character alone and ASCII only from ASCII."""
    return _LOWER_TO_ASCII[0] not in text and _LOWER_TO_ASCII[1] not in text


@dataclass(slots=True)
class Bucket:
    """The rules one index key can match, with their prefilter."""

    rules: Sequence[Any]
    always: tuple[int, ...]
    """Positions of rules evaluated on every event of this key."""
    payloads: Sequence[Payload]
    """Per literal number of :attr:`matcher`: who wants it (:data:`Payload`)."""
    engine: str | None = None
    cache_dir: Path | None = None
    _matcher: LiteralMatcher | None = None
    _rendered: RenderedMatchers | None = None
    """The matchers of :meth:`rendered_found` (built on first use) and, per pattern, the
    literal numbers it stands for."""
    _patterns: tuple[list[str], tuple[tuple[int, ...], ...]] | None = None
    _lowered: LiteralMatcher | None = None
    _native: Any = None
    _screen: list[str] | None = None
    key: str | None = None
    """The bucket's name in the cache folder (:func:`cached_bucket`), when kept there."""

    @property
    def matcher(self) -> LiteralMatcher | None:
        """One matcher over every literal of the bucket, searched once per event over
        :meth:`EventView.search_text`; None: no literals. Built on first use: records
        screened on their text (:meth:`rendered_found`) never need it."""
        matcher = self._matcher
        if matcher is None and self.payloads:
            literals = [payload[0] for payload in self.payloads]
            matcher = self._matcher = literal_matcher(literals, self.engine, self.cache_dir)
        return matcher

    def candidates(self, view: EventView, found: Iterable[int] | None = None) -> list[int]:
        """Positions (ascending) of the rules whose literals occur in the event.

        The matcher runs once over all lowercased values joined by ``"\\0"``. A literal
        found there is in some value; keyword literals need no more, a field's literal is
        checked against that field's value (a plain substring test, only on a hit). A hit
        spanning two values is at worst a spurious candidate, never a missed one.
        ``found``: literal numbers already known to include every literal of the event's
        values (:meth:`rendered_found` on its JSON text); the search is then skipped.
        """
        if not self.payloads:
            return list(self.always)
        hits: set[int] = set(self.always)
        lower = view.lower
        payloads = self.payloads
        if found is None:
            matcher = self.matcher
            assert matcher is not None  # there are literals
            found = matcher.found(view.search_text())
        for number in set(found):
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
        return set(self.rendered_search()(text))

    def rendered_search(self) -> Callable[[str], Collection[int]]:
        """:meth:`rendered_found` as a function with its matchers bound, for one thread's
        loop over many records (the Hyperscan scratch space is taken once, not per text)."""
        if not self.payloads:
            return _nothing_found
        matchers = self._rendered or self.prepare_rendered()
        triggered = len(matchers.by_pattern)
        by_pattern = matchers.by_pattern
        search_lowered = self.lowered_search()
        found_as_is = matchers.caseless.finder() if matchers.caseless is not None else None

        def search(text: str) -> Collection[int]:
            if found_as_is is None or not (text.isascii() or lowers_alike(text)):
                return search_lowered(text)  # isascii() reads a flag: no scan
            patterns = found_as_is(text)
            if not patterns:
                return ()
            found: set[int] = set()
            for pattern in patterns:
                if pattern >= triggered:  # a pattern with cased non-ASCII may be there
                    return search_lowered(text)
                found.update(by_pattern[pattern])
            return found

        return search

    def lowered_search(self) -> Callable[[str], set[int]]:
        """:meth:`rendered_found` by searching the lowercased text (:func:`rendered_text`)
        for every pattern: right for any text, the slower way."""
        by_pattern = self.rendered_patterns()[1]
        found_in_lowered = self._lowered_matcher().finder()

        def search_lowered(text: str) -> set[int]:
            found: set[int] = set()
            for pattern in found_in_lowered(rendered_text(text)):
                found.update(by_pattern[pattern])
            return found

        return search_lowered

    def _lowered_matcher(self) -> LiteralMatcher:
        """The matcher of every pattern in lowercased texts (built once)."""
        lowered = self._lowered
        if lowered is None:
            patterns = self.rendered_patterns()[0]
            lowered = self._lowered = literal_matcher(patterns, self.engine, self.cache_dir)
        return lowered

    def rendered_patterns(self) -> tuple[list[str], tuple[tuple[int, ...], ...]]:
        """Each distinct rendered form of the bucket's literals, and per form the literal
        numbers it stands for (two literals can share a form: ``\\\\`` plain and ``\\``
        escaped; ``σ`` and ``ς``)."""
        made = self._patterns
        if made is None:
            forms: dict[str, list[int]] = {}
            for number, (literal, _anywhere, _fields) in enumerate(self.payloads):
                for form in rendered_forms(literal):
                    forms.setdefault(form, []).append(number)
            made = self._patterns = (list(forms), tuple(tuple(n) for n in forms.values()))
        return made

    def screen_patterns(self) -> list[str]:
        """The patterns searched in texts as they are (ASCII letters without case): the
        :func:`case_stable` rendered forms with their numbers (others empty: none), then
        the :func:`_case_triggers` of the others, numbered from the number of forms on."""
        screen = self._screen
        if screen is None:
            patterns, _by_pattern = self.rendered_patterns()
            stable = [pattern if case_stable(pattern) else "" for pattern in patterns]
            screen = self._screen = [*stable, *_case_triggers(patterns)]
        return screen

    def prepare_rendered(self) -> RenderedMatchers:
        """Build (or load from the cache folder) the matchers of :meth:`rendered_found`.

        With Hyperscan, a second database searches texts as they are, sparing the
        lowercasing of each (~1.5 µs a record; ~15 µs for one with non-ASCII characters,
        such as Sysmon's "Microsoft®"). In a text that :func:`lowers_alike`, lowercasing
        maps each character alone and gives ASCII letters only from ASCII letters, so a
        :func:`case_stable` pattern occurs in the lowercased text iff it occurs in the
        text with ASCII case ignored (Hyperscan's ``CASELESS``). Any other pattern holds a
        cased non-ASCII character, and can only occur if the text holds a character that
        lowercases to it (:func:`_case_triggers`, searched in the same scan): then the text
        is lowercased and searched as before (:meth:`lowered_search`).
        """
        rendered = self._rendered
        if rendered is None:
            lowered = self._lowered_matcher()
            caseless = None
            if isinstance(lowered, HyperscanMatcher):
                caseless = HyperscanMatcher(self.screen_patterns(), self.cache_dir, caseless=True)
            by_pattern = self.rendered_patterns()[1]
            rendered = self._rendered = RenderedMatchers(lowered, by_pattern, caseless)
        return rendered

    def native_screen(self) -> Any:
        """The bucket's part of ``otasuke._speedups.RecordScreen`` (built once): the
        :meth:`screen_patterns` compiled by Hyperscan's C library, kept in the cache
        folder. Only when :func:`otasuke.detect.sigma.native.available`."""
        screen = self._native
        if screen is None:
            from otasuke.detect.sigma.native import bucket_screen

            screen = self._native = bucket_screen(self)
        return screen


def _nothing_found(_text: str) -> Collection[int]:
    return ()


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
    return Bucket(
        rules=rules,
        always=tuple(always),
        payloads=payloads,
        engine=engine,
        cache_dir=cache_dir,
    )


BUCKET_CACHE = "buckets"
"""Sub-folder of the rule cache holding built buckets (:func:`cached_bucket`)."""


def literals_fingerprint(literals: Literals | None) -> str:
    """A digest of one rule's literal set (what :func:`build_bucket` reads of the rule)."""
    text = repr(sorted(literals)) if literals else "-"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def cached_bucket(
    rules: Sequence[Any],
    literals: Sequence[Literals | None],
    key: str,
    engine: str | None = None,
    cache_dir: Path | None = None,
) -> Bucket:
    """:func:`build_bucket` with its patterns made (:meth:`Bucket.rendered_patterns`,
    :meth:`Bucket.screen_patterns`), kept in the cache folder under ``key``.

    Building the buckets one pass over the corpus meets (80, 22,000 literals) takes
    ~0.1 s of Python loops; loading them ~10 ms. ``key`` must name the rules' literal sets
    in order (:meth:`RuleSet` hashes the engine version and each rule's tree digest, or
    its :func:`literals_fingerprint`): an entry is never wrong for other rules, only absent.
    """

    def build() -> Bucket:
        bucket = build_bucket(rules, literals, engine, cache_dir)
        bucket.screen_patterns()  # and the rendered patterns it is made from
        return bucket

    def dump(bucket: Bucket) -> bytes:
        made = (
            bucket.always,
            bucket.payloads,
            bucket.rendered_patterns(),
            bucket.screen_patterns(),
        )
        return pickle.dumps(made, protocol=pickle.HIGHEST_PROTOCOL)

    def load(data: bytes) -> Bucket:
        try:
            always, payloads, patterns, screen = pickle.loads(data)
        except Exception as error:  # a damaged entry is built again
            raise ValueError(str(error)) from error
        return Bucket(
            rules, always, payloads, engine, cache_dir, _patterns=patterns, _screen=screen
        )

    entry = None if cache_dir is None else cache_dir / BUCKET_CACHE / f"{key}.pickle"
    bucket = cached_database(entry, load, build, dump)
    bucket.key = key
    return bucket
