"""Sigma ルールセット: the loaded rules, indexed, matched against events (the hot path).

Windows event log records go through the (Channel, EventID) index and the literal
prefilter, and only Windows rules are evaluated on them. Other events (Zeek, Suricata,
FortiGate traffic, auditd) are tagged with their log sources
(:mod:`otasuke.detect.sigma.mappings`) and only the non-Windows rules whose log source
accepts one of them are evaluated, on the fields with Sigma aliases added. Correlation
rules (相関ルール) and filters (除外フィルタ) load with the rules; correlation state lives
in the :class:`~otasuke.detect.engine.Detector`, not here (a rule set is shared).
"""

from __future__ import annotations

import gc
import hashlib
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol, cast

from otasuke.detect.detection import Detection, DetectionSource
from otasuke.detect.sigma import native
from otasuke.detect.sigma.cache import ENGINE_VERSION, default_cache_dir
from otasuke.detect.sigma.correlation import CorrelationSpec
from otasuke.detect.sigma.filters import apply_filters
from otasuke.detect.sigma.index import (
    Bucket,
    IndexKey,
    build_bucket,
    cached_bucket,
    index_keys,
    literals_fingerprint,
    required_literals,
)
from otasuke.detect.sigma.mappings import EventSources, sigma_event
from otasuke.detect.sigma.rules import (
    BUNDLED_DIR,
    CompiledRule,
    RuleInfo,
    RuleRefusal,
    RuleTree,
    compiled,
    load_rule_trees,
)
from otasuke.detect.sigma.view import EventView, sigma_name
from otasuke.ingest.event import Event, SourceFormat

__all__ = [
    "PythonRecordScreen",
    "RecordScreen",
    "RuleSet",
    "Screened",
    "default_cache_dir",
    "default_rule_paths",
]

Correlation = tuple[RuleInfo, CorrelationSpec]


class Screened(NamedTuple):
    """What :meth:`RuleSet.text_screen` learnt of a record before it was decoded.

    A named tuple: one is made for every record that goes on to be decoded."""

    key: IndexKey
    bucket: Bucket
    found: Collection[int]
    """The bucket's literal numbers seen in the record's JSON text (a superset of those
    in its values): :meth:`RuleSet.matching_rules` need not search the values again."""


class RecordScreen(Protocol):
    """The literal screen over a file's ``records_json()`` items (:meth:`RuleSet.record_screen`)."""

    ruled_out: int
    """Items no rule can match, skipped so far."""

    def next_passing(self, records: Iterator[Any]) -> tuple[Any, Screened | None]:
        """The next item that may match a rule, as (item, what the screen found); None:
        the item's key could not be read, or it is not a dict with a ``data`` text.
        StopIteration at the end; the iterator's errors propagate."""
        ...


class PythonRecordScreen:
    """:class:`RecordScreen` in Python: :meth:`RuleSet.text_screen` item by item (the
    twin of the compiled ``otasuke._speedups.RecordScreen``)."""

    __slots__ = ("_screen", "ruled_out")

    def __init__(self, screen: Callable[[str], Screened | Literal[False] | None]) -> None:
        self._screen = screen
        self.ruled_out = 0

    def next_passing(self, records: Iterator[Any]) -> tuple[Any, Screened | None]:
        screen = self._screen
        for item in records:
            data = item.get("data") if type(item) is dict else None
            if type(data) is not str:
                return item, None
            screened = screen(data)
            if screened is False:
                self.ruled_out += 1
                continue
            return item, screened
        raise StopIteration


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a burst of long-lived objects is made.

    Loading ~2,700 rules makes a few hundred thousand objects that all stay; each
    collection the allocations trigger walks those made so far, none of which is garbage:
    half of a warm load (0.9 → 0.46 s measured). The collector's state is restored after.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def default_rule_paths() -> list[Path]:
    """The bundled SigmaHQ rules (``otasuke/rules/sigma``; DRL 1.1)."""
    return [BUNDLED_DIR]


class RuleSet:
    """Compiled Sigma rules filed by (Channel, EventID) with a literal prefilter."""

    def __init__(
        self,
        compiled: Sequence[CompiledRule],
        refused: Sequence[RuleRefusal],
        *,
        correlations: Sequence[Correlation] = (),
        filters: Sequence[RuleTree] = (),
        cache_dir: Path | None = None,
    ) -> None:
        self.cache_dir = cache_dir
        """Where compiled prefilters are kept too (the compiled-rule cache folder)."""
        self.base = list(compiled)
        """The rules before filters (what :meth:`with_filters` starts from)."""
        self.filters = [f for f in filters if f.filter is not None]
        self.compiled = apply_filters(self.base, self.filters)
        self.rules: list[RuleInfo] = [rule.info for rule in self.compiled]
        self.refused: list[RuleRefusal] = list(refused)
        self.correlations: list[Correlation] = list(correlations)
        self.silent = silent_rules(self.correlations)
        """Ids of rules that only feed correlations (``generate: false``): no own alert."""
        self._by_key: dict[IndexKey, list[int]] = {}
        self._literals = [required_literals(rule.tree) for rule in self.compiled]
        self._fingerprints: dict[int, str] = {}
        """Per rule position, what names it in a bucket's cache key: its tree's digest, or
        for a tree made without one its :func:`literals_fingerprint` (made when needed)."""
        for position, rule in enumerate(self.compiled):
            for key in index_keys(rule.tree):
                self._by_key.setdefault(key, []).append(position)
        self._buckets: dict[IndexKey, Bucket] = {}
        self._source_buckets: dict[EventSources, Bucket] = {}
        self._by_positions: dict[tuple[int, ...], Bucket] = {}
        """Keys whose rules are the same share one bucket (163 keys, 80 buckets, corpus)."""
        self._thread_screens = threading.local()
        """Per thread, its :meth:`record_screen` by (key reader, compiled)."""

    @classmethod
    def load(
        cls,
        paths: Sequence[Path],
        *,
        progress: Callable[[int, int], None] | None = None,
        cache_dir: Path | None = None,
    ) -> RuleSet:
        """Rules, correlations and filters from files or directories (recursive ``*.yml``).

        ``cache_dir``: keep and reuse compiled rules there (see
        :mod:`otasuke.detect.sigma.cache`; :func:`default_cache_dir` is the usual place);
        None compiles every file. Refusals are kept in :attr:`refused`.
        """
        with gc_paused():
            trees, refused = load_rule_trees(paths, progress, cache_dir=cache_dir)
            return cls.from_trees(trees, refused, cache_dir=cache_dir)

    @classmethod
    def from_trees(
        cls,
        trees: Sequence[RuleTree],
        refused: Sequence[RuleRefusal],
        *,
        cache_dir: Path | None = None,
    ) -> RuleSet:
        """A rule set from loaded trees: rules compiled, correlations and filters apart."""
        return cls(
            [compiled(t) for t in trees if t.kind == "rule"],
            refused,
            correlations=[(t.info, t.correlation) for t in trees if t.correlation is not None],
            filters=[t for t in trees if t.filter is not None],
            cache_dir=cache_dir,
        )

    def with_filters(self, extra: Sequence[Path | RuleTree]) -> RuleSet:
        """This rule set narrowed by more filters (a customer's exceptions).

        ``extra``: filter files or folders, or filter trees already loaded. Documents in
        those files that are not filters are refused (kept in the new set's ``refused``).
        """
        trees: list[RuleTree] = [t for t in extra if isinstance(t, RuleTree)]
        paths = [p for p in extra if isinstance(p, Path)]
        refused = list(self.refused)
        if paths:
            loaded, problems = load_rule_trees(paths)
            refused.extend(problems)
            for tree in loaded:
                if tree.filter is not None:
                    trees.append(tree)
                else:
                    refused.append(RuleRefusal(tree.info.path, "not a filter (customer filters)"))
        return RuleSet(
            self.base,
            refused,
            correlations=self.correlations,
            filters=[*self.filters, *trees],
            cache_dir=self.cache_dir,
        )

    def match(self, fields: Mapping[str, Any]) -> list[RuleInfo]:
        """Sigma ルール評価: the Windows rules this event's fields match, in load order."""
        return [rule.info for rule in self.matching_rules(EventView(fields))]

    def matching_rules(
        self, view: EventView, screened: Screened | None = None
    ) -> list[CompiledRule]:
        """The compiled Windows rules matching one event view (a Windows event log record).

        ``screened``: what :meth:`text_screen` found in the same record's JSON text; used
        when its key is the view's (else, and without it, the view is searched).
        """
        key = view.key()
        if screened is not None and screened.key == key:
            bucket, found = screened.bucket, screened.found
        else:
            bucket, found = self._bucket(key), None
        rules = bucket.rules
        return [rules[i] for i in bucket.candidates(view, found) if rules[i].predicate(view)]

    def text_screen(
        self, key_of: Callable[[str], IndexKey | None]
    ) -> Callable[[str], Screened | Literal[False] | None]:
        """A function of a record's JSON text telling whether a Windows rule can match it.

        ``key_of`` reads a record's key from its text (EVTX: ``rendered_key``); the
        key's bucket's literal prefilter then runs over the text
        (:meth:`Bucket.rendered_found`): about two records in three of the corpus hold no
        literal of any rule their key can match, and are done with no JSON decoding, no
        flattening, no view. The function answers False when no rule can match the record (it need not be decoded),
        a :class:`Screened` when some may, None when the key could not be read (decode the
        record and match it as usual). Per key, the bucket and its text search are looked
        up once: this runs for every record of ``otasuke detect``.
        """
        entries: dict[IndexKey, tuple[Bucket, Callable[[str], Collection[int]], bool]] = {}

        def screen(text: str) -> Screened | Literal[False] | None:
            key = key_of(text)
            if key is None:
                return None
            entry = entries.get(key)
            if entry is None:
                bucket = self._bucket(key)
                entry = entries[key] = (bucket, bucket.rendered_search(), bool(bucket.always))
            bucket, search, always = entry
            found = search(text)
            if found or always:
                return Screened(key, bucket, found)
            return False

        return screen

    def record_screen(
        self, key_of: Callable[[str], IndexKey | None], *, compiled: bool | None = None
    ) -> RecordScreen:
        """:meth:`text_screen` over files' records (``records_json()`` items).

        The compiled loop (``otasuke._speedups.RecordScreen``, see
        :mod:`otasuke.detect.sigma.native`) where it can run, else its Python twin
        (:class:`PythonRecordScreen`); ``compiled``: force one (tests). The calling thread
        gets the same screen for every file (its ``ruled_out`` counts on): what it learnt
        of each key, and Hyperscan's scratch space, are made once.
        """
        if compiled is None:
            compiled = native.available()
        screens: dict[tuple[Any, bool], RecordScreen] | None
        screens = getattr(self._thread_screens, "screens", None)
        if screens is None:
            screens = self._thread_screens.screens = {}
        screen = screens.get((key_of, compiled))
        if screen is None:
            if compiled:
                made = native.record_screen(key_of, self._native_screen, Screened)
                screen = cast(RecordScreen, made)
            else:
                screen = PythonRecordScreen(self.text_screen(key_of))
            screens[(key_of, compiled)] = screen
        return screen

    def _native_screen(self, key: IndexKey) -> Any:
        return self._bucket(key).native_screen()

    def event_matches(self, event: Event) -> tuple[list[CompiledRule], Mapping[str, Any]]:
        """The rules one event matches (any format), and the fields they were matched on.

        EVTX records (and other records carrying a Windows ``Channel``) are matched against
        Windows rules; other events against the rules of their log sources, on their fields
        with Sigma aliases; events of no known log source against nothing.
        """
        fields = event.fields
        if event.source_format is SourceFormat.EVTX:
            return self.matching_rules(EventView(fields)), fields
        sources, fields = sigma_event(event)
        if not sources:
            if "Channel" in fields:
                return self.matching_rules(EventView(fields)), fields
            return [], fields
        view = EventView(fields)
        bucket = self._source_bucket(sources)
        rules = bucket.rules
        return [rules[i] for i in bucket.candidates(view) if rules[i].predicate(view)], fields

    def detections(self, event: Event) -> list[Detection]:
        """One Detection per matching rule, with the author attribution DRL 1.1 requires."""
        matched, fields = self.event_matches(event)
        silent = self.silent
        return [detection(rule, fields) for rule in matched if rule.info.id not in silent]

    def _bucket(self, key: IndexKey) -> Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            channel, event_id = key
            keys = {(channel, event_id), (channel, None), (None, event_id), (None, None)}
            positions = sorted({p for k in keys for p in self._by_key.get(k, ())})
            positions = [p for p in positions if self.compiled[p].windows]
            bucket = self._bucket_of(positions)
            self._buckets[key] = bucket
        return bucket

    def _source_bucket(self, sources: EventSources) -> Bucket:
        bucket = self._source_buckets.get(sources)
        if bucket is None:
            positions = [
                p
                for p, rule in enumerate(self.compiled)
                if not rule.windows and any(rule.logsource.accepts(s) for s in sources)
            ]
            bucket = self._bucket_of(positions)
            self._source_buckets[sources] = bucket
        return bucket

    def prepare(self) -> int:
        """Build the bucket of every (Channel, EventID) a rule names; return how many.

        Buckets are otherwise built when the first event of a key arrives. Their
        prefilters (on views and on JSON text) are kept in the cache folder, so a prepared
        cache makes the first events of a later run as fast as the rest (the bench's cold
        load does this).
        """
        for key in list(self._by_key):
            bucket = self._bucket(key)
            if bucket.matcher is not None:  # built now, so kept in the cache folder
                bucket.prepare_rendered()
                if native.available():
                    bucket.native_screen()
        return len(self._by_positions)

    def _bucket_of(self, positions: Sequence[int]) -> Bucket:
        bucket = self._by_positions.get(tuple(positions))
        if bucket is None:
            rules = [self.compiled[p] for p in positions]
            literals = [self._literals[p] for p in positions]
            if self.cache_dir is None:
                bucket = build_bucket(rules, literals)
            else:
                bucket = cached_bucket(
                    rules, literals, self._bucket_key(positions), None, self.cache_dir
                )
            self._by_positions[tuple(positions)] = bucket
        return bucket

    def _bucket_key(self, positions: Sequence[int]) -> str:
        """The cache name of the bucket of these rules: their literal sets, in order."""
        fingerprints = self._fingerprints
        digest = hashlib.sha256(ENGINE_VERSION.encode())
        for position in positions:
            fingerprint = fingerprints.get(position)
            if fingerprint is None:  # the tree's digest names its literals (same engine)
                fingerprint = self.compiled[position].digest or literals_fingerprint(
                    self._literals[position]
                )
                fingerprints[position] = fingerprint
            digest.update(fingerprint.encode())
        return digest.hexdigest()


def silent_rules(correlations: Sequence[Correlation]) -> frozenset[str]:
    """Rules referenced only by correlations that do not ``generate`` their own alerts."""
    loud = {r for _, spec in correlations if spec.generate for r in spec.rules}
    return frozenset(r for _, spec in correlations for r in spec.rules if r not in loud)


def detection(rule: CompiledRule, fields: Mapping[str, Any]) -> Detection:
    """The Detection of one matching rule; ``matched``: the event fields the rule names."""
    info = rule.info
    matched = {
        k: v for k, v in fields.items() if k.lower() in rule.fields or sigma_name(k) in rule.fields
    }
    return rule_detection(info, matched)


def rule_detection(info: RuleInfo, matched: Mapping[str, Any]) -> Detection:
    """A Detection carrying the rule's attribution (DRL 1.1: author, licence, link)."""
    return Detection(
        source=DetectionSource.SIGMA,
        rule_id=info.id,
        title=info.title,
        level=info.level,
        author=info.author,
        licence=info.licence,
        licence_url=info.licence_url,
        rule_url=info.rule_url,
        description=info.description,
        references=info.references,
        tags=info.tags,
        matched=matched,
    )
