"""相関ルール: Sigma correlation rules over a synthetic event stream, with bounded state."""

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
FAILED = "11111111-0000-0000-0000-000000000001"
PROC = "11111111-0000-0000-0000-000000000002"
NET = "11111111-0000-0000-0000-000000000003"

BASE = f"""title: Failed logon
id: {FAILED}
name: failed_logon
author: Otasuke tests
level: low
logsource: {{product: windows, service: security}}
detection:
    selection: {{EventID: 4625}}
    condition: selection
---
title: Whoami
id: {PROC}
name: whoami
author: Otasuke tests
level: low
logsource: {{product: windows, category: process_creation}}
detection:
    selection: {{Image|endswith: '\\whoami.exe'}}
    condition: selection
---
title: Net user
id: {NET}
name: net_user
author: Otasuke tests
level: low
logsource: {{product: windows, category: process_creation}}
detection:
    selection: {{CommandLine|contains: 'net user'}}
    condition: selection
"""


def correlation(rid: str, body: str, generate: bool = False) -> str:
    return f"""title: Correlation {rid}
id: 22222222-0000-0000-0000-00000000000{rid}
author: Otasuke tests
level: high
correlation:
    generate: {"true" if generate else "false"}
{body}"""


BRUTE = correlation(
    "1",
    """    type: event_count
    rules: [failed_logon]
    group-by: [IpAddress]
    timespan: 5m
    condition: {gte: 5}
""",
)
SPRAY = correlation(
    "2",
    f"""    type: value_count
    rules: [{FAILED}]
    group-by: [IpAddress]
    timespan: 5m
    condition: {{gte: 3, field: TargetUserName}}
""",
)
TEMPORAL = correlation(
    "3",
    """    type: temporal
    rules: [whoami, net_user]
    group-by: [Computer]
    timespan: 10m
""",
    generate=True,
)
ORDERED = correlation(
    "4",
    """    type: temporal_ordered
    rules: [whoami, net_user]
    group-by: [Computer]
    timespan: 10m
""",
    generate=True,
)
QUIET = correlation(
    "5",
    """    type: event_count
    rules: [failed_logon]
    group-by: [IpAddress]
    timespan: 5m
    condition: {lt: 2}
""",
)


def detector(tmp_path: Path, *documents: str) -> Detector:
    (tmp_path / "rules.yml").write_text("\n---\n".join([BASE, *documents]))
    rules = RuleSet.load([tmp_path])
    assert not rules.refused, rules.refused
    return Detector(rules, IocSet())


def logon(seconds: float, ip: str = "192.0.2.7", user: str = "admin") -> Event:
    return event(seconds, Channel="Security", EventID=4625, IpAddress=ip, TargetUserName=user)


def process(seconds: float, computer: str = "pc1", **fields: str) -> Event:
    fields.setdefault("Image", "C:\\Windows\\System32\\cmd.exe")
    return event(
        seconds,
        Channel="Microsoft-Windows-Sysmon/Operational",
        EventID=1,
        Computer=computer,
        **fields,
    )


def event(seconds: float, **fields: object) -> Event:
    return Event(
        event_id=f"e{seconds}{sorted(fields.items())}",
        observed_at=T0 + timedelta(seconds=seconds),
        source_format=SourceFormat.EVTX,
        fields=fields,
    )


def fired(found: list[Detection], rule_id: str) -> list[Detection]:
    return [d for d in found if d.rule_id == rule_id]


def test_brute_force_five_failed_logons_from_one_address_in_five_minutes(tmp_path: Path) -> None:
    d = detector(tmp_path, BRUTE)
    hits = []
    for i in range(4):
        hits += d.detect(logon(i * 30))
    assert not fired(hits, "22222222-0000-0000-0000-000000000001")
    [hit] = fired(d.detect(logon(130)), "22222222-0000-0000-0000-000000000001")
    assert hit.matched == {"IpAddress": "192.0.2.7", "count": 5}
    assert hit.level == "high" and hit.author == "Otasuke tests"
    # generate: false — the base rule raises no alert of its own
    assert not fired(hits, FAILED)


def test_event_count_needs_the_events_within_the_timespan(tmp_path: Path) -> None:
    d = detector(tmp_path, BRUTE)
    found = [x for i in range(8) for x in d.detect(logon(i * 90))]  # 4 per 5 minutes at most
    assert not fired(found, "22222222-0000-0000-0000-000000000001")
    other = [x for i in range(4) for x in d.detect(logon(900 + i, ip="198.51.100.1"))]
    assert not fired(other, "22222222-0000-0000-0000-000000000001")  # grouped apart


def test_state_is_per_customer(tmp_path: Path) -> None:
    d = detector(tmp_path, BRUTE)
    found = [x for i in range(5) for x in d.detect(logon(i), customer=i % 2)]
    assert not fired(found, "22222222-0000-0000-0000-000000000001")
    assert d.detect(logon(1)) == []  # old call without customer still works


def test_value_count_of_distinct_target_users(tmp_path: Path) -> None:
    d = detector(tmp_path, SPRAY)
    found = [x for i in range(4) for x in d.detect(logon(i, user="admin"))]
    found += d.detect(logon(5, user="guest"))
    assert not fired(found, "22222222-0000-0000-0000-000000000002")
    [hit] = fired(d.detect(logon(6, user="root")), "22222222-0000-0000-0000-000000000002")
    assert hit.matched["count"] == 3 and hit.matched["field"] == "TargetUserName"


def test_temporal_two_rules_on_the_same_host(tmp_path: Path) -> None:
    d = detector(tmp_path, TEMPORAL)
    first = d.detect(process(0, Image="C:\\x\\whoami.exe"))
    assert fired(first, PROC)  # generate: true keeps the base alert
    assert not d.detect(process(10, computer="pc2", CommandLine="net user x"))[1:]
    [hit] = fired(
        d.detect(process(20, CommandLine="net user x")), "22222222-0000-0000-0000-000000000003"
    )
    assert hit.matched == {"Computer": "pc1", "count": 2}


def test_temporal_ordered_order_matters(tmp_path: Path) -> None:
    d = detector(tmp_path, ORDERED)
    rule = "22222222-0000-0000-0000-000000000004"
    assert not fired(d.detect(process(0, CommandLine="net user x")), rule)
    assert not fired(d.detect(process(5, Image="C:\\x\\whoami.exe")), rule)
    assert fired(d.detect(process(9, CommandLine="net user y")), rule)
    assert not fired(d.detect(process(700, Image="C:\\x\\whoami.exe")), rule)
    assert not fired(d.detect(process(1400, CommandLine="net user z")), rule)  # too late


def test_lt_condition_is_decided_when_the_window_closes(tmp_path: Path) -> None:
    d = detector(tmp_path, QUIET)
    rule = "22222222-0000-0000-0000-000000000005"
    assert not fired(d.detect(logon(0)), rule)
    for i in range(3):
        d.detect(logon(i, ip="198.51.100.9"))
    [hit] = fired(d.detect(logon(400, ip="203.0.113.1")), rule)
    assert hit.matched["IpAddress"] == "192.0.2.7"
    d.flush()


def test_memory_is_bounded_under_many_group_keys(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text("\n---\n".join([BASE, BRUTE]))
    rules = RuleSet.load([tmp_path])
    engine = CorrelationEngine(rules.correlations, max_groups=1_000)
    for i in range(100_000):
        engine.feed(T0.timestamp() + i * 0.001, "c", [FAILED], {"IpAddress": f"10.{i}"})
    assert engine.groups == 1_000
    assert engine.evicted == 99_000
    engine.feed(T0.timestamp() + 10_000, "c", [FAILED], {"IpAddress": "x"})
    assert engine.groups == 1 and engine.expired == 1_000


def test_events_no_correlated_rule_matched_cost_nothing(tmp_path: Path) -> None:
    d = detector(tmp_path, BRUTE)
    d.detect(process(0, Image="C:\\x\\whoami.exe"))
    assert d.correlation is not None and d.correlation.groups == 0


def test_unknown_reference_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c.yml").write_text(BRUTE.replace("failed_logon", "no_such_rule"))
    trees, refused = load_rule_trees([tmp_path])
    assert not trees
    assert refused[0].reason == "correlation rule refers to unknown rule no_such_rule"


def test_hayabusa_correlation_rules_load(corpus: Path) -> None:
    folder = corpus / "hayabusa-rules" / "hayabusa" / "builtin" / "Security" / "LogonLogoff"
    rules = RuleSet.load([folder / "Logon"])
    titles = {info.title for info, _ in rules.correlations}
    assert {"User Guessing", "PW Spray"} <= titles
    assert not [r for r in rules.refused if r.reason.startswith("correlation")]
