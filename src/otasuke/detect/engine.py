"""検知エンジン: every detector over one event (Sigma, IOC lists, device alerts).

Loading the rules takes seconds, so one :class:`Detector` is built per process
and reused for every event. It also holds the correlation state (相関ルールの状態) of
the stream it sees, kept apart per customer, the customers' own filters and the rule
tuning (ルール調整: :mod:`otasuke.detect.tuning`), refreshed from the database by
:meth:`Detector.refresh_tunings` when it changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from otasuke.db.models import Organization, RuleTuning
from otasuke.detect.correlation_file import CorrelationStateFile
from otasuke.detect.customer_filters import refresh_customer_filters
from otasuke.detect.detection import Detection
from otasuke.detect.device import device_detections
from otasuke.detect.ioc import IocSet, default_ioc_paths
from otasuke.detect.sigma import RuleSet, default_rule_paths
from otasuke.detect.sigma.correlation_state import CorrelationEngine, CorrelationHit
from otasuke.detect.sigma.rules import RuleTree
from otasuke.detect.sigma.ruleset import detection, rule_detection
from otasuke.detect.tuning import (
    Tuning,
    TuningError,
    TuningTable,
    make_tuning,
    shipped_tunings,
)
from otasuke.ingest.event import Event

log = logging.getLogger(__name__)

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
        self.tuning: TuningTable | None = None
        """Rule tuning applied after matching; None: none (``otasuke detect``)."""
        self._tuning_version: tuple[object, ...] | None = None
        self.state_file: CorrelationStateFile | None = None
        """Where the correlation state is kept across restarts (saved between batches)."""
        self.correlation_gate: Callable[[str | int | None], None] | None = None
        """Called with the customer before one of its events is fed to the correlations
        (bus workers: takes that customer's shared windows, :mod:`.correlation_shared`)."""

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
            if ids and self.correlation_gate is not None:
                self.correlation_gate(customer)
            hits = correlation.feed(event.observed_at, customer, ids, fields) if ids else []
            if not ids and correlation.needs_ticks:
                hits = correlation.tick(event.observed_at.timestamp())
            found.extend(correlation_detection(hit) for hit in hits)
        if self.tuning is not None and found:
            found = self.tuning.apply(found, fields, customer)
        found.extend(device_detections(event))
        found.extend(self.iocs.detections(event))
        return found

    def set_tunings(
        self, tunings: Sequence[Tuning], customer_provider: dict[int, int | None] | None = None
    ) -> None:
        """ルール調整: apply these tunings (shipped ones included by the caller) from now on."""
        self.tuning = TuningTable(list(tunings), customer_provider or {})

    def refresh_tunings(self, s: Session) -> bool:
        """Reload the tunings if the database's changed since the last call; True if so.

        Cheap enough for every batch: one query of the count, highest id and newest
        creation time of the rows (they are only added and removed, never edited) and the
        highest organisation id (a new customer). The shipped defaults always come first.
        Customers' own Sigma filters are refreshed here too (:mod:`.customer_filters`), and
        the correlation state saved when due (:mod:`.correlation_file`), between batches.
        """
        if self.state_file is not None:
            self.state_file.maybe_save(self.correlation)
        filters_changed = refresh_customer_filters(self, s)
        version = tuple(
            s.execute(
                select(
                    func.count(RuleTuning.id),
                    func.max(RuleTuning.id),
                    func.max(RuleTuning.created_at),
                    select(func.max(Organization.id)).scalar_subquery(),
                )
            ).one()
        )
        if version == self._tuning_version:
            return filters_changed
        rows = s.scalars(select(RuleTuning).order_by(RuleTuning.id)).all()
        owners = s.execute(
            select(Organization.id, Organization.provider_id).where(Organization.kind == "customer")
        ).all()
        self.set_tunings(
            [*shipped_tunings(), *usable_tunings(rows)],
            {org_id: provider_id for org_id, provider_id in owners},
        )
        self._tuning_version = version
        return True

    def flush(self) -> list[Detection]:
        """Close every open correlation window (end of an import); their detections."""
        if self.correlation is None:
            return []
        return [correlation_detection(hit) for hit in self.correlation.flush()]


def correlation_detection(hit: CorrelationHit) -> Detection:
    """相関検知: one correlation hit as a Detection (matched: group-by values and count)."""
    return rule_detection(hit.info, hit.matched())


def usable_tunings(rows: Sequence[RuleTuning]) -> list[Tuning]:
    """The rows as Tunings; a row that no longer compiles is logged and left out."""
    out = []
    for row in rows:
        try:
            out.append(tuning_of(row))
        except TuningError as err:
            log.warning("rule tuning %s (rule %s) not applied: %s", row.id, row.rule_id, err)
    return out


def tuning_of(row: RuleTuning) -> Tuning:
    """A database row as a Tuning (rows were checked when added)."""
    return make_tuning(
        row.rule_id,
        row.action,
        row.reason,
        selection=row.selection,
        level=row.level,
        customer_id=row.customer_id,
        provider_id=row.provider_id,
        id=row.id,
    )
