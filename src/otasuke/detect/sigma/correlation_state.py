"""相関ルールの状態 (correlation state): Sigma correlations over the event stream.

:class:`CorrelationEngine` is fed, in time order, the ids of the rules each event matched;
it keeps per (correlation, customer, group-by values) a small window state and returns a
:class:`CorrelationHit` when a correlation's condition is met. Memory is bounded:

* each window only holds what its condition needs (at most ``count + 1`` timestamps for
  ``event_count`` with ``gt``/``gte``; at most ``max_per_group`` values otherwise);
* the numeric aggregates (``value_sum``, ``value_avg``, ``value_percentile``,
  ``value_median``): a window decided at its close keeps a running sum and count (exact,
  whatever the number of events) and, for a percentile, the most recent ``max_per_group``
  values; a sliding window (``gt``/``gte``) keeps its most recent ``max_per_group``
  (time, value) pairs, sorted too for a percentile. Past the cap the oldest values are
  dropped (counted in :attr:`CorrelationEngine.truncated`): the aggregate is then over the
  window's most recent ``max_per_group`` values. We chose exact values with a cap over a
  random sample so that a hit can be explained and replayed exactly; 10,000 values is far
  beyond what one host or address produces within a usual timespan. A value that is not
  a number (or a list) is skipped; a window without any number never fires. Percentiles
  interpolate linearly between the closest ranks (position ``(n - 1) * p / 100``);
* at most ``max_groups`` groups in all: the least recently updated is evicted first and
  counted in :attr:`CorrelationEngine.evicted`;
* groups idle for longer than their timespan are dropped as time moves on (a sweep at most
  every ``sweep_every`` seconds of event time), counted in :attr:`CorrelationEngine.expired`.

Conditions that can only grow true (``gt``, ``gte``) are decided on the event that meets
them, over a sliding window, and the group starts afresh. The others (``lt``, ``lte``,
``eq``, ``neq``) are decided when a window (first event + timespan) closes: on a later
event, a sweep or :meth:`CorrelationEngine.flush`. A group that saw no event at all is not
known, so "fewer than N" never fires for zero events.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass
from datetime import datetime
from hashlib import sha256
from typing import Any

from otasuke.detect.sigma.correlation import CorrelationSpec
from otasuke.detect.sigma.rules import RuleInfo
from otasuke.detect.sigma.view import text_of

SNAPSHOT_FORMAT = 1
"""Changes when :meth:`CorrelationEngine.snapshot`'s layout does (an older one is ignored)."""
GroupValues = tuple[Any, ...]
GroupKey = tuple[int, str | None, GroupValues]
"""(correlation position, customer, group-by values)."""
MAX_CHAIN = 4
"""Correlations of correlations are followed this deep."""


class _AllCustomers:
    """The default of :meth:`CorrelationEngine.snapshot`: every customer's windows."""


ALL_CUSTOMERS: Any = _AllCustomers()


@dataclass(frozen=True, slots=True)
class CorrelationHit:
    """A correlation rule's condition met for one group (相関検知)."""

    info: RuleInfo
    spec: CorrelationSpec
    customer: str | None
    group: Mapping[str, Any]
    """The group-by field values."""
    count: int
    """Events (event_count), distinct values (value_count), rules seen (temporal) or
    numbers aggregated (value_sum, value_avg, value_percentile, value_median)."""
    first_seen: float
    last_seen: float
    """Epoch seconds of the window's first and last event."""
    value: float | None = None
    """The aggregate the condition held for (numeric types only)."""

    def matched(self) -> dict[str, object]:
        """What the alert shows: the group-by values, the count, the field and aggregate."""
        out: dict[str, object] = dict(self.group)
        out["count"] = self.count
        if self.spec.field:
            out["field"] = self.spec.field
        if self.value is not None:
            name = self.spec.type.removeprefix("value_")
            if self.spec.type == "value_percentile":
                name = f"p{self.spec.percentile}"
            out[name] = int(self.value) if self.value.is_integer() else round(self.value, 6)
        return out


class _Group:
    __slots__ = (
        "counts",
        "first",
        "last",
        "numbers",
        "ranked",
        "seen",
        "steps",
        "sum",
        "times",
        "total",
        "values",
    )

    def __init__(self, t: float, steps: int) -> None:
        self.first = t
        self.last = t
        self.total = 0
        self.times: deque[float] = deque()
        self.values: deque[tuple[float, str]] = deque()
        self.counts: dict[str, int] = {}
        self.seen: dict[str, float] = {}
        self.steps: list[float | None] = [None] * steps
        self.sum = 0.0
        """Numeric types: the sum of the numbers held (sliding) or seen (at close)."""
        self.numbers: deque[tuple[float, float]] = deque()
        """Numeric types: (time, number), sliding windows and percentiles at close."""
        self.ranked: list[float] = []
        """Percentiles over a sliding window: the numbers held, sorted."""


class CorrelationEngine:
    """Bounded, expiring state for a set of correlation rules (one per Detector)."""

    def __init__(
        self,
        correlations: Sequence[tuple[RuleInfo, CorrelationSpec]],
        *,
        max_groups: int = 100_000,
        max_per_group: int = 10_000,
        sweep_every: float = 60.0,
    ) -> None:
        self.correlations = list(correlations)
        self.max_groups = max_groups
        self.max_per_group = max_per_group
        self.sweep_every = sweep_every
        self.evicted = 0
        """Groups dropped because ``max_groups`` was reached."""
        self.expired = 0
        """Groups dropped because their window had passed."""
        self.truncated = 0
        """Numbers dropped from a window holding ``max_per_group`` already."""
        self._watch: dict[str, tuple[int, ...]] = {}
        for position, (_info, spec) in enumerate(self.correlations):
            for rule_id in dict.fromkeys(spec.rules):
                self._watch[rule_id] = (*self._watch.get(rule_id, ()), position)
        self._state: OrderedDict[GroupKey, _Group] = OrderedDict()
        self._next_sweep = float("-inf")
        self.clock = float("-inf")
        """The latest event time seen (epoch seconds): what a snapshot is taken at."""
        self._closing = 0
        """Open groups of conditions decided at window close (lt/lte/eq/neq)."""

    @property
    def watched(self) -> frozenset[str]:
        """Rule ids some correlation refers to."""
        return frozenset(self._watch)

    @property
    def groups(self) -> int:
        """Groups currently held."""
        return len(self._state)

    @property
    def needs_ticks(self) -> bool:
        """True while windows are open that only time can close (see :meth:`tick`)."""
        return self._closing > 0

    def feed(
        self,
        event_time: float | datetime,
        customer_key: str | int | None,
        matched_rule_ids: Iterable[str],
        fields: Mapping[str, Any],
    ) -> list[CorrelationHit]:
        """One event's matched rules; the correlation hits it completes (usually none)."""
        watched = [r for r in matched_rule_ids if r in self._watch]
        if not watched:
            return []
        t = event_time.timestamp() if isinstance(event_time, datetime) else float(event_time)
        customer = None if customer_key is None else str(customer_key)
        if t > self.clock:
            self.clock = t
        hits = self.tick(t)
        lookup = _Fields(fields)
        for depth in range(MAX_CHAIN):
            found: list[CorrelationHit] = []
            for rule_id in watched:
                for position in self._watch[rule_id]:
                    hit = self._update(position, customer, rule_id, t, lookup)
                    if hit is not None:
                        found.append(hit)
            hits.extend(found)
            watched = [h.info.id for h in found if h.info.id in self._watch]
            if not watched or depth == MAX_CHAIN - 1:
                break
            merged = dict(fields)
            for h in found:
                merged.update(h.group)
            lookup = _Fields(merged)
        return hits

    def tick(self, now: float) -> list[CorrelationHit]:
        """Let time move on: drop idle groups, close windows that have passed."""
        if now > self.clock:
            self.clock = now
        if now < self._next_sweep:
            return []
        self._next_sweep = now + self.sweep_every
        hits: list[CorrelationHit] = []
        for key in [k for k, g in self._state.items() if self._passed(k, g, now)]:
            group = self._state.pop(key)
            self.expired += 1
            hits.extend(self._closed(key, group))
        return hits

    def flush(self) -> list[CorrelationHit]:
        """Close every open window (end of a file or of the stream) and forget all state."""
        hits: list[CorrelationHit] = []
        for key, group in self._state.items():
            hits.extend(self._closed(key, group))
        self._state.clear()
        self._closing = 0
        return hits

    def snapshot(self, customer: str | int | None = ALL_CUSTOMERS) -> dict[str, Any]:
        """The open windows as plain JSON-able data (see :meth:`restore`).

        Each group names its correlation by rule id and a fingerprint of its spec, so a
        snapshot restored after the rules changed only brings back what still means the
        same thing. Groups are listed least recently updated first. ``customer``: only
        that customer's windows (None: events without a customer).
        """
        fingerprints = [_fingerprint(spec) for _, spec in self.correlations]
        only = customer if customer is ALL_CUSTOMERS or customer is None else str(customer)
        groups = []
        for (position, owner, values), g in self._state.items():
            if only is not ALL_CUSTOMERS and owner != only:
                continue
            groups.append(
                {
                    "rule": self.correlations[position][0].id,
                    "spec": fingerprints[position],
                    "customer": owner,
                    "group": list(values),
                    "first": g.first,
                    "last": g.last,
                    "total": g.total,
                    "times": list(g.times),
                    "values": [list(pair) for pair in g.values],
                    "counts": g.counts,
                    "seen": g.seen,
                    "steps": g.steps,
                    "sum": g.sum,
                    "numbers": [list(pair) for pair in g.numbers],
                }
            )
        return {"format": SNAPSHOT_FORMAT, "clock": self.clock, "groups": groups}

    def restore(self, snapshot: Mapping[str, Any]) -> int:
        """Bring back the windows of a :meth:`snapshot` (after a restart); how many.

        Groups of correlations no longer loaded, or whose spec changed, are left out, and
        so are sliding windows already past at the snapshot's clock (nothing more can
        happen in them). Windows decided at their close (lt, lte, eq, neq) are kept even
        if past: the next event or tick closes them and raises what they hold, as it
        would have without the restart. At most ``max_groups`` are kept (the most
        recently updated).
        """
        if snapshot.get("format") != SNAPSHOT_FORMAT:
            return 0
        by_rule = {
            (info.id, _fingerprint(spec)): position
            for position, (info, spec) in enumerate(self.correlations)
        }
        clock = float(snapshot.get("clock") or float("-inf"))
        self.clock = max(self.clock, clock)
        restored = 0
        for item in snapshot.get("groups", ()):
            position = by_rule.get((item["rule"], item["spec"]))
            if position is None:
                continue
            spec = self.correlations[position][1]
            key: GroupKey = (position, item["customer"], _group_values(item["group"]))
            group = _Group(float(item["first"]), 0)
            group.last = float(item["last"])
            group.total = int(item["total"])
            group.times = deque(float(t) for t in item["times"])
            group.values = deque((float(t), str(v)) for t, v in item["values"])
            group.counts = {str(k): int(v) for k, v in item["counts"].items()}
            group.seen = {str(k): float(v) for k, v in item["seen"].items()}
            group.steps = [None if v is None else float(v) for v in item["steps"]]
            group.sum = float(item["sum"])
            group.numbers = deque((float(t), float(v)) for t, v in item["numbers"])
            if spec.numeric and spec.rising and spec.percentile is not None:
                group.ranked = sorted(v for _, v in group.numbers)
            closing = _decided_at_close(spec)
            if not closing and self._passed(key, group, clock):
                continue
            if key in self._state:
                continue
            self._state[key] = group
            if closing:
                self._closing += 1
            restored += 1
        while len(self._state) > self.max_groups:
            old_key, _ = self._state.popitem(last=False)
            self.evicted += 1
            if _decided_at_close(self.correlations[old_key[0]][1]):
                self._closing -= 1
        return restored

    def replace_customer(self, customer: str | int | None, snapshot: Mapping[str, Any]) -> int:
        """Forget one customer's windows and take those of ``snapshot`` (its own
        :meth:`snapshot` as another process wrote it); how many were taken."""
        owner = None if customer is None else str(customer)
        for key in [k for k in self._state if k[1] == owner]:
            del self._state[key]
            if _decided_at_close(self.correlations[key[0]][1]):
                self._closing -= 1
        return self.restore(
            {
                **snapshot,
                "groups": [g for g in snapshot.get("groups", ()) if g["customer"] == owner],
            }
        )

    def _passed(self, key: GroupKey, group: _Group, now: float) -> bool:
        spec = self.correlations[key[0]][1]
        return now - group.last > spec.timespan or (
            not spec.rising and now - group.first > spec.timespan
        )

    def _closed(self, key: GroupKey, group: _Group) -> list[CorrelationHit]:
        spec = self.correlations[key[0]][1]
        if not _decided_at_close(spec):
            return []
        self._closing -= 1
        if spec.numeric:
            value = _aggregate(spec, group, closing=True)
            if value is None or not spec.holds(value):
                return []
            return [self._hit(key, group, group.total, value)]
        count = group.total if spec.type == "event_count" else len(group.counts)
        return [self._hit(key, group, count)] if spec.holds(count) else []

    def _update(
        self, position: int, customer: str | None, rule_id: str, t: float, fields: _Fields
    ) -> CorrelationHit | None:
        spec = self.correlations[position][1]
        values = tuple(fields.get(spec.field_for(name, rule_id)) for name in spec.group_by)
        key: GroupKey = (position, customer, values)
        group = self._state.get(key)
        closed: CorrelationHit | None = None
        if group is not None and not spec.rising and t - group.first > spec.timespan:
            del self._state[key]
            ended = self._closed(key, group)
            closed = ended[0] if ended else None
            group = None
        if group is None:
            group = self._new_group(key, spec, t)
        else:
            self._state.move_to_end(key)
        group.last = max(group.last, t)
        count = self._count(spec, group, rule_id, t, fields)
        if closed is not None:
            return closed
        decided_now = not _decided_at_close(spec)
        if count is not None and decided_now and spec.holds(count):
            del self._state[key]
            if spec.numeric:
                return self._hit(key, group, len(group.numbers), count)
            return self._hit(key, group, int(count))
        return None

    def _new_group(self, key: GroupKey, spec: CorrelationSpec, t: float) -> _Group:
        while len(self._state) >= self.max_groups:
            old_key, _ = self._state.popitem(last=False)
            self.evicted += 1
            if _decided_at_close(self.correlations[old_key[0]][1]):
                self._closing -= 1
        group = _Group(t, len(spec.rules) if spec.type == "temporal_ordered" else 0)
        self._state[key] = group
        if _decided_at_close(spec):
            self._closing += 1
        return group

    def _count(
        self, spec: CorrelationSpec, group: _Group, rule_id: str, t: float, fields: _Fields
    ) -> float | None:
        horizon = t - spec.timespan
        if spec.numeric:
            return self._add_number(spec, group, rule_id, t, fields, horizon)
        if spec.type == "event_count":
            group.total += 1
            if not spec.rising:
                return group.total
            times = group.times
            times.append(t)
            while times and times[0] < horizon:
                times.popleft()
            while len(times) > spec.count + 1:
                times.popleft()
            group.first = times[0]
            return len(times)
        if spec.type == "value_count":
            return self._count_value(spec, group, rule_id, t, fields, horizon)
        if spec.type == "temporal":
            seen = group.seen
            seen[rule_id] = t
            for other in [r for r, when in seen.items() if when < horizon]:
                del seen[other]
            group.first = min(seen.values())
            return len(seen)
        return self._count_ordered(spec, group, rule_id, t, horizon)

    def _count_value(
        self,
        spec: CorrelationSpec,
        group: _Group,
        rule_id: str,
        t: float,
        fields: _Fields,
        horizon: float,
    ) -> int | None:
        value = fields.get(spec.field_for(spec.field or "", rule_id))
        if value is None:
            return None
        text = str(value)
        counts = group.counts
        if spec.rising:
            pairs = group.values
            pairs.append((t, text))
            counts[text] = counts.get(text, 0) + 1
            while pairs and (pairs[0][0] < horizon or len(pairs) > self.max_per_group):
                _, old = pairs.popleft()
                left = counts[old] - 1
                if left:
                    counts[old] = left
                else:
                    del counts[old]
            group.first = pairs[0][0]
        elif text in counts or len(counts) < self.max_per_group:
            counts[text] = counts.get(text, 0) + 1
        return len(counts)

    def _add_number(
        self,
        spec: CorrelationSpec,
        group: _Group,
        rule_id: str,
        t: float,
        fields: _Fields,
        horizon: float,
    ) -> float | None:
        """Numeric types: take the event's number; the sliding aggregate (gt/gte) or None."""
        number = _number(fields.get(spec.field_for(spec.field or "", rule_id)))
        if number is None:
            return None
        percentile = spec.percentile is not None
        numbers = group.numbers
        if not spec.rising:
            group.total += 1
            group.sum += number
            if percentile:
                numbers.append((t, number))
                if len(numbers) > self.max_per_group:
                    numbers.popleft()
                    self.truncated += 1
            return None
        numbers.append((t, number))
        group.sum += number
        if percentile:
            insort(group.ranked, number)
        while numbers and (numbers[0][0] < horizon or len(numbers) > self.max_per_group):
            if numbers[0][0] >= horizon:
                self.truncated += 1
            _, old = numbers.popleft()
            group.sum -= old
            if percentile:
                del group.ranked[bisect_left(group.ranked, old)]
        if not numbers:
            group.sum = 0.0
            return None
        group.first = numbers[0][0]
        return _aggregate(spec, group, closing=False)

    def _count_ordered(
        self, spec: CorrelationSpec, group: _Group, rule_id: str, t: float, horizon: float
    ) -> int:
        steps = group.steps
        for k in range(len(spec.rules) - 1, -1, -1):
            if spec.rules[k] != rule_id:
                continue
            if k == 0:
                steps[0] = t
            else:
                start = steps[k - 1]
                if start is not None and start >= horizon:
                    current = steps[k]
                    steps[k] = start if current is None else max(current, start)
        for k, start in enumerate(steps):
            if start is not None and start < horizon:
                steps[k] = None
        done = 0
        for k, start in enumerate(steps):
            if start is not None:
                done = k + 1
        starts = [s for s in steps if s is not None]
        group.first = min(starts) if starts else t
        return done

    def _hit(
        self, key: GroupKey, group: _Group, count: int, value: float | None = None
    ) -> CorrelationHit:
        position, customer, values = key
        info, spec = self.correlations[position]
        return CorrelationHit(
            info=info,
            spec=spec,
            customer=customer,
            group=dict(zip(spec.group_by, values, strict=True)),
            count=count,
            first_seen=group.first,
            last_seen=group.last,
            value=value,
        )


class _Fields:
    """Case-insensitive field lookup (Sigma names), values as comparable text."""

    __slots__ = ("_fields", "_lower")

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self._fields = fields
        self._lower: dict[str, Any] | None = None

    def get(self, name: str) -> Any:
        if name in self._fields:
            return _hashable(self._fields[name])
        if self._lower is None:
            self._lower = {k.lower(): v for k, v in self._fields.items()}
        return _hashable(self._lower.get(name.lower()))

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None


def _decided_at_close(spec: CorrelationSpec) -> bool:
    """Counted conditions that only the window's end decides (lt, lte, eq, neq): open
    windows of these are what :meth:`CorrelationEngine.tick` must close."""
    return not spec.rising and not spec.type.startswith("temporal")


def _hashable(value: Any) -> Any:
    text = text_of(value)
    return tuple(text) if isinstance(text, list) else text


def _number(value: Any) -> float | None:
    """A field's text as a finite number; None for no value, a list or non-numeric text."""
    if not isinstance(value, str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _aggregate(spec: CorrelationSpec, group: _Group, *, closing: bool) -> float | None:
    """The numeric aggregate of a window; None when it holds no number."""
    n = group.total if closing else len(group.numbers)
    if n == 0:
        return None
    if spec.type == "value_sum":
        return group.sum
    if spec.type == "value_avg":
        return group.sum / n
    ranked = sorted(v for _, v in group.numbers) if closing else group.ranked
    return _percentile(ranked, 50 if spec.percentile is None else spec.percentile)


def _percentile(ranked: Sequence[float], p: int) -> float:
    """Linear interpolation between the closest ranks of sorted numbers (as NumPy's default)."""
    position = (len(ranked) - 1) * p / 100
    low = math.floor(position)
    high = min(low + 1, len(ranked) - 1)
    return ranked[low] + (ranked[high] - ranked[low]) * (position - low)


def _fingerprint(spec: CorrelationSpec) -> str:
    """Stable across processes (unlike ``hash``): what the correlation counts, and how."""
    return sha256(repr(astuple(spec)).encode()).hexdigest()[:16]


def _group_values(values: Sequence[Any]) -> GroupValues:
    """Group-by values back from JSON: a list (a multi-valued field) was a tuple."""
    return tuple(tuple(v) if isinstance(v, list) else v for v in values)
