"""Sigma ルールセット: the loaded rules, indexed, matched against events (the hot path)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from otasuke.detect.detection import Detection, DetectionSource
from otasuke.detect.sigma.cache import default_cache_dir
from otasuke.detect.sigma.index import Bucket, IndexKey, build_bucket, index_keys, required_literals
from otasuke.detect.sigma.rules import (
    BUNDLED_DIR,
    CompiledRule,
    RuleInfo,
    RuleRefusal,
    load_rules,
)
from otasuke.detect.sigma.view import EventView, sigma_name
from otasuke.ingest.event import Event

__all__ = ["RuleSet", "default_cache_dir", "default_rule_paths"]


def default_rule_paths() -> list[Path]:
    """The bundled SigmaHQ rules (``otasuke/rules/sigma``; DRL 1.1)."""
    return [BUNDLED_DIR]


class RuleSet:
    """Compiled Sigma rules filed by (Channel, EventID) with a literal prefilter."""

    def __init__(self, compiled: Sequence[CompiledRule], refused: Sequence[RuleRefusal]) -> None:
        self.compiled = list(compiled)
        self.rules: list[RuleInfo] = [rule.info for rule in self.compiled]
        self.refused: list[RuleRefusal] = list(refused)
        self._by_key: dict[IndexKey, list[int]] = {}
        self._literals = [required_literals(rule.tree) for rule in self.compiled]
        for position, rule in enumerate(self.compiled):
            for key in index_keys(rule.tree):
                self._by_key.setdefault(key, []).append(position)
        self._buckets: dict[IndexKey, Bucket] = {}

    @classmethod
    def load(
        cls,
        paths: Sequence[Path],
        *,
        progress: Callable[[int, int], None] | None = None,
        cache_dir: Path | None = None,
    ) -> RuleSet:
        """Rules from files or directories (recursive ``*.yml``); refusals are kept.

        ``cache_dir``: keep and reuse compiled rules there (see
        :mod:`otasuke.detect.sigma.cache`; :func:`default_cache_dir` is the usual place);
        None compiles every file.
        """
        compiled, refused = load_rules(paths, progress, cache_dir=cache_dir)
        return cls(compiled, refused)

    def match(self, fields: Mapping[str, Any]) -> list[RuleInfo]:
        """Sigma ルール評価: the rules this event's fields match, in load order."""
        return [rule.info for rule in self.matching_rules(EventView(fields))]

    def matching_rules(self, view: EventView) -> list[CompiledRule]:
        """The compiled rules matching one event view."""
        bucket = self._bucket(view.key())
        rules = bucket.rules
        return [rules[i] for i in bucket.candidates(view) if rules[i].predicate(view)]

    def detections(self, event: Event) -> list[Detection]:
        """One Detection per matching rule, with the author attribution DRL 1.1 requires."""
        view = EventView(event.fields)
        found = []
        for rule in self.matching_rules(view):
            info = rule.info
            matched = {
                k: v
                for k, v in event.fields.items()
                if k.lower() in rule.fields or sigma_name(k) in rule.fields
            }
            found.append(
                Detection(
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
            )
        return found

    def _bucket(self, key: IndexKey) -> Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            channel, event_id = key
            keys = {(channel, event_id), (channel, None), (None, event_id), (None, None)}
            positions = sorted({p for k in keys for p in self._by_key.get(k, ())})
            if channel is not None:  # a Windows event log record: not for Linux/network rules
                positions = [p for p in positions if self.compiled[p].windows]
            bucket = build_bucket(
                [self.compiled[p] for p in positions], [self._literals[p] for p in positions]
            )
            self._buckets[key] = bucket
        return bucket
