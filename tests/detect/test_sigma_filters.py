"""除外フィルタ: Sigma filters narrow the rules they name, globally or per customer."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from otasuke.detect.engine import Detector
from otasuke.detect.ioc import IocSet
from otasuke.detect.sigma import RuleSet
from otasuke.ingest.event import Event, SourceFormat

RULE_ID = "33333333-0000-0000-0000-000000000001"
OTHER_ID = "33333333-0000-0000-0000-000000000002"
RULES = f"""title: Whoami
id: {RULE_ID}
name: whoami
author: Otasuke tests
level: medium
logsource: {{product: windows, category: process_creation}}
detection:
    selection: {{Image|endswith: '\\whoami.exe'}}
    condition: selection
---
title: Hostname
id: {OTHER_ID}
author: Otasuke tests
level: medium
logsource: {{product: windows, category: process_creation}}
detection:
    selection: {{Image|endswith: '\\hostname.exe'}}
    condition: selection
"""


def a_filter(rules: str, user: str = "admin") -> str:
    return f"""title: Admins may run it
id: 44444444-0000-0000-0000-000000000001
author: Otasuke tests
logsource: {{product: windows, category: process_creation}}
filter:
    rules: {rules}
    selection:
        User: {user}
    condition: not selection
"""


def sysmon(image: str, user: str) -> dict[str, object]:
    return {
        "Channel": "Microsoft-Windows-Sysmon/Operational",
        "EventID": 1,
        "Image": f"C:\\Windows\\System32\\{image}",
        "User": user,
    }


def load(tmp_path: Path, *documents: str) -> RuleSet:
    (tmp_path / "rules.yml").write_text("\n---\n".join([RULES, *documents]))
    rules = RuleSet.load([tmp_path])
    assert not rules.refused, rules.refused
    return rules


def ids(rules: RuleSet, image: str, user: str) -> list[str]:
    return [r.id for r in rules.match(sysmon(image, user))]


def test_filter_by_name_suppresses_only_when_its_selection_matches(tmp_path: Path) -> None:
    rules = load(tmp_path, a_filter("[whoami]"))
    assert ids(rules, "whoami.exe", "admin") == []
    assert ids(rules, "whoami.exe", "guest") == [RULE_ID]
    assert ids(rules, "hostname.exe", "admin") == [OTHER_ID]  # not named by the filter


def test_filter_by_id_and_any(tmp_path: Path) -> None:
    assert ids(load(tmp_path, a_filter(f"[{RULE_ID}]")), "whoami.exe", "ADMIN") == []
    rules = load(tmp_path, a_filter("any"))
    assert ids(rules, "hostname.exe", "admin") == [] == ids(rules, "whoami.exe", "admin")


def test_filter_of_another_log_source_does_not_apply(tmp_path: Path) -> None:
    other = a_filter("any").replace("category: process_creation", "category: file_event")
    assert ids(load(tmp_path, other), "whoami.exe", "admin") == [RULE_ID]


def test_customer_filters_apply_to_that_customer_only(tmp_path: Path) -> None:
    detector = Detector(load(tmp_path), IocSet())
    folder = tmp_path / "customer-7"
    folder.mkdir()
    (folder / "exception.yml").write_text(a_filter("[whoami]"))
    narrowed = detector.set_customer_filters(7, [folder])
    assert not narrowed.refused
    event = Event(
        event_id="e1",
        observed_at=datetime(2026, 4, 1, tzinfo=UTC),
        source_format=SourceFormat.EVTX,
        fields=sysmon("whoami.exe", "admin"),
    )
    assert detector.detect(event, customer=7) == []
    assert [d.rule_id for d in detector.detect(event, customer=8)] == [RULE_ID]
    assert [d.rule_id for d in detector.detect(event)] == [RULE_ID]
    detector.set_customer_filters(7, [])
    assert [d.rule_id for d in detector.detect(event, customer=7)] == [RULE_ID]


def test_a_rule_given_as_customer_filter_is_refused(tmp_path: Path) -> None:
    rules = load(tmp_path)
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "rule.yml").write_text(RULES.split("---")[0])
    narrowed = rules.with_filters([folder])
    assert [r.reason for r in narrowed.refused] == ["not a filter (customer filters)"]
