"""相関ルール (数値集計): value_sum, value_avg, value_percentile and value_median correlations.

REQ-MON-NET, REQ-MON-EP: hand-written rules and events; each correlation must fire on exactly the event
whose number makes the aggregate meet the condition, never before it, and never with a
number that has left the timespan.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from otasuke.detect.detection import Detection
from otasuke.detect.engine import Detector
from otasuke.detect.ioc import IocSet
from otasuke.detect.sigma import RuleSet
from otasuke.detect.sigma.correlation_state import CorrelationEngine
from otasuke.detect.sigma.rules import load_rule_trees
from otasuke.ingest.event import Event, SourceFormat

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
UPLOAD = "33333333-0000-0000-0000-000000000001"
CORR = "44444444-0000-0000-0000-000000000001"

BASE = f"""title: Outbound connection allowed
id: {UPLOAD}
name: outbound
author: Otasuke tests
level: informational
logsource: {{product: windows, service: security}}
detection:
    selection: {{EventID: 5156}}
    condition: selection
"""


def correlation(kind: str, condition: str, timespan: str = "5m") -> str:
    return f"""title: Upload volume
id: {CORR}
author: Otasuke tests
level: high
correlation:
    type: {kind}
    rules: [outbound]
    group-by: [SourceAddress]
    timespan: {timespan}
    condition: {condition}
"""


def detector(tmp_path: Path, document: str) -> Detector:
    (tmp_path / "rules.yml").write_text("\n---\n".join([BASE, document]))
    rules = RuleSet.load([tmp_path])
    assert not rules.refused, rules.refused
    return Detector(rules, IocSet())


def sent(seconds: float, number: object, host: str = "192.0.2.10") -> Event:
    return Event(
        event_id=f"e{seconds}-{host}-{number}",
        observed_at=T0 + timedelta(seconds=seconds),
        source_format=SourceFormat.EVTX,
        fields={"Channel": "Security", "EventID": 5156, "SourceAddress": host, "Bytes": number},
    )


def fired(found: list[Detection]) -> list[Detection]:
    return [d for d in found if d.rule_id == CORR]


def feed(d: Detector, *events: Event) -> list[Detection]:
    return [x for e in events for x in d.detect(e, customer=1)]


def test_value_sum_fires_on_the_event_that_reaches_the_bound(tmp_path: Path) -> None:
    d = detector(tmp_path, correlation("value_sum", "{gte: 1000, field: Bytes}"))
    assert not fired(feed(d, sent(0, 300), sent(30, 300), sent(60, 300)))
    assert not fired(feed(d, sent(61, 50, host="198.51.100.1")))  # another group
    [hit] = fired(feed(d, sent(90, 100)))
    assert hit.matched == {"SourceAddress": "192.0.2.10", "count": 4, "field": "Bytes", "sum": 1000}
    assert hit.level == "high"
    # the window starts afresh after a hit
    assert not fired(feed(d, sent(100, 900)))


def test_value_sum_forgets_numbers_older_than_the_timespan(tmp_path: Path) -> None:
    d = detector(tmp_path, correlation("value_sum", "{gt: 1000, field: Bytes}"))
    assert not fired(feed(d, sent(0, 600), sent(301, 600)))  # 1200, but 301 s apart
    [hit] = fired(feed(d, sent(302, 401)))  # 600 (t=301) + 401 within 5 minutes
    assert hit.matched["sum"] == 1001 and hit.matched["count"] == 2


def test_value_avg_skips_values_that_are_not_numbers(tmp_path: Path) -> None:
    d = detector(tmp_path, correlation("value_avg", "{gt: 500, field: Bytes}"))
    assert not fired(feed(d, sent(0, 400), sent(1, "n/a"), sent(2, 500)))  # avg 450
    [hit] = fired(feed(d, sent(3, 700)))  # (400 + 500 + 700) / 3 = 533.3
    assert hit.matched["count"] == 3 and hit.matched["avg"] == 533.333333


def test_value_percentile_interpolates_between_ranks(tmp_path: Path) -> None:
    d = detector(
        tmp_path, correlation("value_percentile", "{gte: 100, field: Bytes, percentile: 50}")
    )
    assert not fired(feed(d, sent(0, 10), sent(1, 10), sent(2, 200)))  # p50 = 10
    [hit] = fired(feed(d, sent(3, 200)))  # p50 of 10, 10, 200, 200 = 105
    assert hit.matched["p50"] == 105


def test_value_median_lt_is_decided_when_the_window_closes(tmp_path: Path) -> None:
    d = detector(tmp_path, correlation("value_median", "{lt: 100, field: Bytes}"))
    quiet = feed(d, sent(0, 50), sent(10, 60), sent(20, 500))  # median 60
    busy = feed(d, sent(5, 200, host="198.51.100.1"), sent(6, 300, host="198.51.100.1"))
    assert not fired(quiet + busy)  # not before the window closes
    [hit] = fired(feed(d, sent(400, 1, host="203.0.113.5")))
    assert hit.matched["SourceAddress"] == "192.0.2.10" and hit.matched["median"] == 60
    [late] = fired(d.flush())  # flushing closes the last window: median 1 < 100
    assert late.matched["SourceAddress"] == "203.0.113.5"


def test_value_sum_eq_and_neq_at_window_close(tmp_path: Path) -> None:
    d = detector(tmp_path, correlation("value_sum", "{eq: 300, field: Bytes}"))
    feed(d, sent(0, 100), sent(1, 200), sent(2, 100, host="198.51.100.1"))
    [hit] = fired(d.flush())
    assert hit.matched == {"SourceAddress": "192.0.2.10", "count": 2, "field": "Bytes", "sum": 300}
    d = detector(tmp_path, correlation("value_sum", "{neq: 300, field: Bytes}"))
    feed(d, sent(0, 100), sent(1, 200), sent(2, 100, host="198.51.100.1"))
    [hit] = fired(d.flush())
    assert hit.matched["SourceAddress"] == "198.51.100.1"


def test_a_window_without_any_number_never_fires(tmp_path: Path) -> None:
    d = detector(tmp_path, correlation("value_avg", "{lt: 10, field: Bytes}"))
    feed(d, sent(0, "unknown"), sent(1, None))
    assert not fired(d.flush())


def test_percentile_without_percentile_is_refused_with_what_to_add(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_text(
        "\n---\n".join([BASE, correlation("value_percentile", "{gte: 5, field: Bytes}")])
    )
    trees, refused = load_rule_trees([tmp_path])
    assert [t.info.id for t in trees] == [UPLOAD]
    assert "percentile: 95" in refused[0].reason


def test_percentile_memory_is_capped_per_group(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_text(
        "\n---\n".join(
            [BASE, correlation("value_percentile", "{gte: 900, field: Bytes, percentile: 0}")]
        )
    )
    rules = RuleSet.load([tmp_path])
    engine = CorrelationEngine(rules.correlations, max_per_group=100)
    t = T0.timestamp()
    hits = []
    for i in range(1_000):  # all within the timespan; only the last 100 are held
        hits += engine.feed(t + i * 0.01, "c", [UPLOAD], {"SourceAddress": "a", "Bytes": i})
    assert engine.truncated == 900
    # the minimum of the held numbers reaches 900 on the last event (numbers 900..999)
    assert len(hits) == 1 and hits[0].value == 900.0 and hits[0].count == 100
