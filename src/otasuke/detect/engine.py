"""検知エンジン: every detector over one event (Sigma, IOC lists, device alerts).

Loading the rules takes seconds, so one :class:`Detector` is built per process
and reused for every event. It also holds the correlation state (相関ルールの状態) of
the stream it sees, kept apart per customer, and the customers' own filters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from otasuke.detect.detection import Detection
from otasuke.detect.device import device_detections
from otasuke.detect.ioc import IocSet, default_ioc_paths
from otasuke.detect.sigma import RuleSet, default_rule_paths
from otasuke.detect.sigma.correlation_state import CorrelationEngine, CorrelationHit
from otasuke.detect.sigma.rules import RuleTree
from otasuke.detect.sigma.ruleset import detection, rule_detection
from otasuke.ingest.event import Event

MAX_CORRELATION_GROUPS = 100_000
"""Correlation groups held at most per Detector (the least recently updated go first)."""


class Detector:
    """All detectors, loaded once; correlation state for the events it is given."""

    def __init__(
        self, rules: RuleSet, iocs: IocSet, *, max_groups: int = MAX_CORRELATION_GROUPS
    ) -> None:
        self.rules = rules
        self.iocs = iocs
        self.correlation: CorrelationEngine | None = (
            CorrelationEngine(rules.correlations, max_groups=max_groups)
            if rules.correlations
            else None
        )
        self._watched = self.correlation.watched if self.correlation is not None else frozenset()
        self._customer_rules: dict[str, RuleSet] = {}

    @classmethod
    def load(
        cls,
        rule_paths: Sequence[Path] = (),
        ioc_paths: Sequence[Path] = (),
        *,
        progress: Callable[[int, int], None] | None = None,
        cache_dir: Path | None = None,
    ) -> Detector:
        rules = RuleSet.load(
            list(rule_paths) or default_rule_paths(), progress=progress, cache_dir=cache_dir
        )
        iocs = IocSet.load(list(ioc_paths) or default_ioc_paths())
        return cls(rules, iocs)

    def set_customer_filters(
        self, customer: str | int, filters: Sequence[Path | RuleTree]
    ) -> RuleSet:
        """顧客別フィルタ: this customer's events are matched with these filters too.

        An empty ``filters`` removes the customer's filters. Returns the customer's rule
        set (its ``refused`` lists filter files that could not be used).
        """
        key = str(customer)
        if not filters:
            self._customer_rules.pop(key, None)
            return self.rules
        narrowed = self.rules.with_filters(filters)
        self._customer_rules[key] = narrowed
        return narrowed

    def detect(self, event: Event, customer: str | int | None = None) -> list[Detection]:
        """Every detection on one event; ``customer`` scopes filters and correlation state."""
        rules = self.rules
        if customer is not None and self._customer_rules:
            rules = self._customer_rules.get(str(customer), rules)
        matched, fields = rules.event_matches(event)
        silent = rules.silent
        found: list[Detection] = [
            detection(rule, fields) for rule in matched if rule.info.id not in silent
        ]
        correlation = self.correlation
        if correlation is not None:
            ids = [r.info.id for r in matched if r.info.id in self._watched]
            hits = correlation.feed(event.observed_at, customer, ids, fields) if ids else []
            if not ids and correlation.needs_ticks:
                hits = correlation.tick(event.observed_at.timestamp())
            found.extend(correlation_detection(hit) for hit in hits)
        found.extend(device_detections(event))
        found.extend(self.iocs.detections(event))
        return found

    def flush(self) -> list[Detection]:
        """Close every open correlation window (end of an import); their detections."""
        if self.correlation is None:
            return []
        return [correlation_detection(hit) for hit in self.correlation.flush()]


def correlation_detection(hit: CorrelationHit) -> Detection:
    """相関検知: one correlation hit as a Detection (matched: group-by values and count)."""
    info = hit.info
    matched: dict[str, object] = dict(hit.group)
    matched["count"] = hit.count
    if hit.spec.field:
        matched["field"] = hit.spec.field
    return rule_detection(info, matched)
