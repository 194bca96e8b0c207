"""ルール調整 (rule tuning): disable a rule, add an exception, override a level.

Issue 4 point 6. Tunings come in three layers, later ones overriding earlier ones:

1. the provider-wide defaults shipped with Otasuke (``otasuke/rules/tuning``, derived
   from Hayabusa's noisy-rule list and level tuning, DRL 1.1);
2. a provider's own provider-wide tunings (database, ``customer_id`` NULL);
3. one customer's tunings (database).

For one rule and one customer, the last layer that disables the rule or overrides its
level decides (a customer's level override re-enables a rule the provider disabled);
exceptions (除外条件) add up over all layers. Tuning is applied to the Sigma detections
after matching: a customer with no tuning costs nothing, and a rule's own alert is
tuned, not the correlations it feeds (tune a correlation rule by its own id).

This module is pure: no database. :meth:`otasuke.detect.engine.Detector.refresh_tunings`
reads the rows and hands them here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule

from otasuke.detect.detection import SIGMA_LEVELS, Detection, DetectionSource
from otasuke.detect.sigma.compile import Predicate, from_pysigma, predicate, simplify
from otasuke.detect.sigma.values import Unsupported
from otasuke.detect.sigma.view import EventView
from otasuke.errors import OtasukeError

SHIPPED_PATH = Path(__file__).resolve().parent.parent / "rules" / "tuning" / "provider_defaults.yml"
"""The provider-wide defaults shipped with Otasuke (see the README beside it)."""

MAX_SELECTION_FIELDS = 20


class TuningAction(StrEnum):
    DISABLE = "disable"  # 無効化
    EXCEPTION = "exception"  # 除外条件
    LEVEL = "level"  # レベル変更


class TuningError(OtasukeError):
    """A tuning that cannot be used (unknown action, bad level, bad selection)."""


@dataclass(frozen=True, slots=True)
class Tuning:
    """One tuning of one rule: shipped, provider-wide or for one customer."""

    rule_id: str
    action: TuningAction
    reason: str
    selection: Mapping[str, Any] | None = None
    """Exception: Sigma selection, ``Field|modifier`` → value or list of values."""
    level: str | None = None
    """Level override: one of SIGMA_LEVELS."""
    customer_id: int | None = None
    provider_id: int | None = None
    """Provider-wide row: its provider. None with no customer: shipped, every provider."""
    id: int | None = None
    """Database row id; None for a shipped entry."""
    title: str = ""
    bundled: bool = True
    """False for a shipped entry whose rule is not bundled (a Hayabusa rule)."""

    def __post_init__(self) -> None:
        if not self.rule_id.strip():
            raise TuningError("rule id is empty", field="rule_id")
        if self.action is TuningAction.LEVEL and self.level not in SIGMA_LEVELS:
            raise TuningError(
                f"level must be one of {', '.join(SIGMA_LEVELS)}, not {self.level!r}",
                field="level",
            )
        if self.action is TuningAction.EXCEPTION:
            compile_selection(self.selection)

    @property
    def shipped(self) -> bool:
        return self.id is None


def make_tuning(rule_id: str, action: str, reason: str, **fields: Any) -> Tuning:
    """A Tuning from plain values (a form, a file, a row); raises TuningError."""
    try:
        kind = TuningAction(action)
    except ValueError:
        raise TuningError(
            f"action must be disable, exception or level, not {action!r}", field="action"
        ) from None
    return Tuning(rule_id=rule_id.strip(), action=kind, reason=reason.strip(), **fields)


def compile_selection(selection: Mapping[str, Any] | None) -> Predicate:
    """除外条件: a Sigma selection (``Field|endswith: value`` …) as a predicate on events.

    Compiled like a rule's selection (same modifiers, case-insensitive, wildcards), so an
    exception behaves the way a Sigma rule author expects.
    """
    if not isinstance(selection, Mapping) or not selection:
        raise TuningError(
            "an exception needs a selection: field → value(s)",
            field="selection",
            hint="Image|endswith: '\\backup.exe'",
        )
    if len(selection) > MAX_SELECTION_FIELDS:
        raise TuningError(f"at most {MAX_SELECTION_FIELDS} fields", field="selection")
    for key, value in selection.items():
        values = value if isinstance(value, list) else [value]
        if not isinstance(key, str) or not key.split("|")[0].strip():
            raise TuningError(f"field name {key!r} is not a name", field="selection")
        if not values or not all(isinstance(v, str | int | float) for v in values):
            raise TuningError(
                f"{key}: give a value or a list of values (text or numbers)", field="selection"
            )
    return _compiled(_freeze(selection))


def _freeze(selection: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in selection.items()))


@cache
def _compiled(frozen: tuple[tuple[str, Any], ...]) -> Predicate:
    search = {k: list(v) if isinstance(v, tuple) else v for k, v in frozen}
    document = {
        "title": "exception",
        "logsource": {"category": "exception"},
        "detection": {"selection": search, "condition": "selection"},
    }
    try:
        rule = SigmaRule.from_dict(document)
        [condition] = rule.detection.parsed_condition
        tree = simplify(from_pysigma(condition.parsed))
    except (SigmaError, Unsupported) as err:
        raise TuningError(str(err), field="selection") from None
    return predicate(tree)


@dataclass(frozen=True, slots=True)
class RuleTune:
    """What is done to one rule's detections for one customer."""

    disabled: bool = False
    level: str | None = None
    exceptions: tuple[Predicate, ...] = ()

    def tuned(self, detection: Detection, view: EventView | None) -> Detection | None:
        """The detection after tuning, or None when it is suppressed."""
        if self.disabled:
            return None
        if self.exceptions and view is not None and any(p(view) for p in self.exceptions):
            return None
        if self.level is not None and self.level != detection.level:
            return replace(detection, level=self.level)
        return detection


def resolve(layers: Sequence[Sequence[Tuning]]) -> dict[str, RuleTune]:
    """One customer's tuning per rule id, from its layers (shipped, provider, customer)."""
    state: dict[str, tuple[bool, str | None]] = {}
    exceptions: dict[str, list[Predicate]] = {}
    for layer in layers:
        decided: dict[str, tuple[bool, str | None]] = {}
        for t in layer:
            if t.action is TuningAction.EXCEPTION:
                exceptions.setdefault(t.rule_id, []).append(compile_selection(t.selection))
            elif t.action is TuningAction.DISABLE:
                decided[t.rule_id] = (True, None)
            elif not decided.get(t.rule_id, (False, None))[0]:
                decided[t.rule_id] = (False, t.level)
        state.update(decided)
    return {
        rule: RuleTune(
            disabled=state.get(rule, (False, None))[0],
            level=state.get(rule, (False, None))[1],
            exceptions=tuple(exceptions.get(rule, ())),
        )
        for rule in state.keys() | exceptions.keys()
    }


@dataclass(slots=True)
class TuningTable:
    """Every tuning the detector applies, resolved per customer on first use."""

    tunings: Sequence[Tuning]
    customer_provider: Mapping[int, int | None] = field(default_factory=dict)
    """customer id → provider id, for the provider-wide layer."""
    _resolved: dict[str | None, dict[str, RuleTune]] = field(default_factory=dict)

    def for_customer(self, customer: str | int | None) -> dict[str, RuleTune]:
        key = None if customer is None else str(customer)
        found = self._resolved.get(key)
        if found is None:
            found = self._resolved[key] = resolve(self.layers(key))
        return found

    def layers(self, key: str | None) -> list[list[Tuning]]:
        customer = int(key) if key is not None and key.isdigit() else None
        provider = self.customer_provider.get(customer) if customer is not None else None
        shipped = [t for t in self.tunings if t.shipped]
        wide = [t for t in self.tunings if not t.shipped and t.customer_id is None]
        own = [t for t in self.tunings if customer is not None and t.customer_id == customer]
        return [shipped, [t for t in wide if provider and t.provider_id == provider], own]

    def apply(
        self,
        detections: list[Detection],
        fields: Mapping[str, Any],
        customer: str | int | None,
    ) -> list[Detection]:
        """The Sigma detections after this customer's tuning (others pass unchanged)."""
        tunes = self.for_customer(customer)
        if not tunes:
            return detections
        view: EventView | None = None
        out: list[Detection] = []
        for d in detections:
            tune = tunes.get(d.rule_id) if d.source == DetectionSource.SIGMA else None
            if tune is None:
                out.append(d)
                continue
            if tune.exceptions and view is None:
                view = EventView(fields)
            tuned = tune.tuned(d, view)
            if tuned is not None:
                out.append(tuned)
        return out


@cache
def shipped_tunings(path: Path = SHIPPED_PATH) -> tuple[Tuning, ...]:
    """The provider-wide defaults shipped with Otasuke (read once)."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    out = []
    for n, entry in enumerate(document.get("entries") or [], start=1):
        try:
            out.append(
                make_tuning(
                    str(entry["rule_id"]),
                    str(entry["action"]),
                    str(entry.get("reason") or ""),
                    level=entry.get("level"),
                    selection=entry.get("selection"),
                    title=str(entry.get("title") or ""),
                    bundled=bool(entry.get("bundled", True)),
                )
            )
        except (KeyError, TuningError) as err:
            raise TuningError(f"entry {n}: {err}", source=str(path)) from None
    return tuple(out)


def shipped_source(path: Path = SHIPPED_PATH) -> dict[str, str]:
    """Where the shipped list comes from (shown in the console)."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {k: str(v) for k, v in document.items() if k != "entries"}
