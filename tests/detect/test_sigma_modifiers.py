"""Sigma ルール評価: one small hand-written rule per modifier, plus properties."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otasuke.detect.sigma import RuleSet

HEADER = """
title: Test rule
id: 11111111-2222-3333-4444-555555555555
status: test
author: Otasuke tests
level: high
logsource:
    product: windows
    category: process_creation
detection:
"""


def ruleset(tmp_path: Path, detection: str, *, name: str = "rule.yml") -> RuleSet:
    path = tmp_path / name
    path.write_text(HEADER + detection, encoding="utf-8")
    return RuleSet.load([path])


def sysmon(**fields: Any) -> dict[str, Any]:
    """A Sysmon process creation (EID 1) event with the given EventData fields."""
    return {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1, **fields}


def fires(rules: RuleSet, **fields: Any) -> bool:
    return bool(rules.match(sysmon(**fields)))


SELECTION = "    selection:\n        {item}\n    condition: selection\n"


@pytest.fixture
def rule(tmp_path: Path) -> Any:
    def make(item: str) -> RuleSet:
        rules = ruleset(tmp_path, SELECTION.format(item=item))
        assert not rules.refused, rules.refused
        return rules

    return make


def test_plain_value_is_exact_and_case_insensitive(rule: Any) -> None:
    rules = rule("Image: 'C:\\Windows\\cmd.exe'")
    assert fires(rules, Image="c:\\windows\\CMD.EXE")
    assert not fires(rules, Image="C:\\Windows\\cmd.exe.bak")


def test_field_names_match_case_insensitively(rule: Any) -> None:
    assert fires(rule("image: 'x'"), IMAGE="X")


def test_logsource_needs_channel_and_event_id(rule: Any) -> None:
    rules = rule("Image: 'x'")
    assert not rules.match({"Channel": "Security", "EventID": 1, "Image": "x"})
    assert not rules.match({**sysmon(Image="x"), "EventID": 4688})
    assert not rules.match({"EventID": 1, "Image": "x"})  # ETW capture without Channel


def test_contains_startswith_endswith(rule: Any) -> None:
    assert fires(rule("CommandLine|contains: 'mimi'"), CommandLine="run MIMIkatz now")
    assert fires(rule("Image|startswith: 'C:\\Temp\\'"), Image="c:\\temp\\a.exe")
    assert not fires(rule("Image|startswith: 'C:\\Temp\\'"), Image="D:\\c:\\temp\\a.exe")
    assert fires(rule("Image|endswith: '\\a.exe'"), Image="C:\\x\\A.EXE")
    assert not fires(rule("Image|endswith: '\\a.exe'"), Image="C:\\x\\A.EXE ")


def test_wildcards_and_escapes(rule: Any) -> None:
    rules = rule("CommandLine: 'a*b?c'")
    assert fires(rules, CommandLine="aXXXbYc")
    assert not fires(rules, CommandLine="aXXXbc")
    literal = rule("CommandLine: 'what\\?'")
    assert fires(literal, CommandLine="what?")
    assert not fires(literal, CommandLine="whatX")


def test_contains_all_needs_every_value(rule: Any) -> None:
    rules = rule("CommandLine|contains|all:\n            - 'foo'\n            - 'bar'")
    assert fires(rules, CommandLine="bar and foo")
    assert not fires(rules, CommandLine="only foo")


def test_value_list_is_or(rule: Any) -> None:
    rules = rule("Image|endswith:\n            - '\\a.exe'\n            - '\\b.exe'")
    assert fires(rules, Image="c:\\b.exe")
    assert not fires(rules, Image="c:\\c.exe")


def test_cased(rule: Any) -> None:
    rules = rule("CommandLine|cased|contains: 'Secret'")
    assert fires(rules, CommandLine="a Secret b")
    assert not fires(rules, CommandLine="a secret b")


def test_regex_with_and_without_i(rule: Any) -> None:
    assert fires(
        rule("CommandLine|re: '-e(nc)? [A-Za-z0-9+/=]{8,}'"), CommandLine="x -enc SQBFAFgA"
    )
    assert not fires(rule("CommandLine|re: 'abc'"), CommandLine="ABC")
    assert fires(rule("CommandLine|re|i: 'abc'"), CommandLine="xABCx")


def test_windash(rule: Any) -> None:
    rules = rule("CommandLine|windash|contains: ' -enc '")
    for dash in ("-", "/", "–", "—", "―"):
        assert fires(rules, CommandLine=f"powershell {dash}enc AAA")
    assert not fires(rules, CommandLine="powershell +enc AAA")


def test_base64offset(rule: Any) -> None:
    import base64

    rules = rule("CommandLine|base64offset|contains: 'http://'")
    for prefix in ("", "a", "ab"):
        encoded = base64.b64encode(f"{prefix}http://evil".encode()).decode()
        assert fires(rules, CommandLine=f"x {encoded} y"), prefix


def test_utf16le_base64(rule: Any) -> None:
    import base64

    rules = rule("CommandLine|wide|base64offset|contains: 'iex'")
    encoded = base64.b64encode("; iex(x)".encode("utf-16-le")).decode()
    assert fires(rules, CommandLine=encoded)


def test_cidr(rule: Any) -> None:
    rules = rule("DestinationIp|cidr: '10.0.0.0/8'")
    assert fires(rules, DestinationIp="10.1.2.3")
    assert not fires(rules, DestinationIp="11.1.2.3")
    assert not fires(rules, DestinationIp="not an ip")


def test_cidr_lists_of_both_versions(rule: Any) -> None:
    """A list of networks (one address read for all of them), IPv4 and IPv6 mixed."""
    rules = rule(
        "IpAddress|cidr:\n"
        "          - '10.0.0.0/8'\n"
        "          - '192.168.0.0/16'\n"
        "          - 'fe80::/10'\n"
        "          - '::1/128'"
    )
    for inside in ("10.9.8.7", "192.168.1.1", " 192.168.1.1 ", "fe80::1", "::1"):
        assert fires(rules, IpAddress=inside), inside
    for outside in ("11.0.0.1", "192.169.0.1", "2001:db8::1", "::2", "-", "", "10.0.0.0/8"):
        assert not fires(rules, IpAddress=outside), outside
    not_inside = rule("IpAddress|cidr:\n          - '10.0.0.0/8'\n          - 'fc00::/7'")
    assert fires(not_inside, IpAddress="fd00::5")
    assert not fires(not_inside, IpAddress="8.8.8.8")


def test_numeric_comparisons(rule: Any) -> None:
    assert fires(rule("LogonType|gt: 2"), LogonType=3)
    assert not fires(rule("LogonType|gt: 2"), LogonType="2")
    assert fires(rule("LogonType|lte: 2"), LogonType="2")
    assert not fires(rule("LogonType|lt: 2"), LogonType="abc")


def test_numbers_and_booleans_compare_as_strings(rule: Any) -> None:
    assert fires(rule("LogonType: 3"), LogonType="3")
    assert fires(rule("Signed: 'true'"), Signed=True)


def test_null_exists_and_fieldref(rule: Any) -> None:
    assert fires(rule("ParentImage: null"), Image="x")
    assert fires(rule("ParentImage: null"), ParentImage="")
    assert not fires(rule("ParentImage: null"), ParentImage="x")
    assert fires(rule("ParentImage|exists: true"), ParentImage="x")
    assert fires(rule("ParentImage|exists: false"), Image="x")
    assert fires(rule("Image|fieldref: ParentImage"), Image="A", ParentImage="a")
    assert not fires(rule("Image|fieldref: ParentImage"), Image="A", ParentImage="b")


def test_list_values_match_any_element(rule: Any) -> None:
    assert fires(rule("Data|contains: 'CLIENT: 10.'"), Data=["user", " [CLIENT: 10.0.0.1]"])


def test_keywords_search_every_value(tmp_path: Path) -> None:
    rules = ruleset(tmp_path, "    keywords:\n        - 'sekurlsa::'\n    condition: keywords\n")
    assert fires(rules, CommandLine="mimikatz SEKURLSA::logonpasswords")
    assert not fires(rules, CommandLine="mimikatz")


def test_conditions_not_and_or_of(tmp_path: Path) -> None:
    detection = """    sel_a:
        Image|endswith: '\\a.exe'
    sel_b:
        Image|endswith: '\\b.exe'
    filter:
        User: 'admin'
    condition: 1 of sel_* and not filter
"""
    rules = ruleset(tmp_path, detection)
    assert fires(rules, Image="c:\\a.exe", User="bob")
    assert fires(rules, Image="c:\\b.exe")
    assert not fires(rules, Image="c:\\b.exe", User="ADMIN")
    everything = ruleset(
        tmp_path, detection.replace("1 of sel_* and not filter", "all of them"), name="all.yml"
    )
    assert not fires(everything, Image="c:\\a.exe", User="admin")  # a.exe and b.exe never both
    any_of = ruleset(
        tmp_path, detection.replace("1 of sel_* and not filter", "1 of them"), name="any.yml"
    )
    assert fires(any_of, User="admin")
    assert not fires(any_of, Image="c:\\c.exe")


def test_spaced_field_names_reach_sigma_names(rule: Any) -> None:
    assert fires(rule("ThreatName|contains: 'EICAR'"), **{"Threat Name": "Virus:DOS/EICAR"})


def test_correlation_rule_over_an_unknown_rule_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "corr.yml"
    path.write_text(
        """title: Many failed logons
id: 22222222-2222-3333-4444-555555555555
correlation:
    type: event_count
    rules:
        - 11111111-2222-3333-4444-555555555555
    group-by:
        - User
    timespan: 5m
    condition:
        gte: 10
""",
        encoding="utf-8",
    )
    rules = RuleSet.load([path])
    assert [r.reason for r in rules.refused] == [
        "correlation rule refers to unknown rule 11111111-2222-3333-4444-555555555555"
    ]


def test_broken_and_unsupported_rules_are_refused_not_raised(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text("title: [unclosed\n", encoding="utf-8")
    (tmp_path / "expand.yml").write_text(
        HEADER + SELECTION.format(item="Image|expand: '%programfiles%\\x.exe'"),
        encoding="utf-8",
    )
    (tmp_path / "undefined.yml").write_text(
        HEADER + "    selection:\n        Image: x\n    condition: nothing\n", encoding="utf-8"
    )
    rules = RuleSet.load([tmp_path])
    assert not rules.rules
    reasons = " | ".join(r.reason for r in rules.refused)
    assert len(rules.refused) == 3, reasons
    assert "placeholder" in reasons


def test_detection_carries_drl_attribution(rule: Any) -> None:
    from datetime import UTC, datetime

    from otasuke.ingest.event import Event, SourceFormat

    rules = rule("Image|endswith: '\\a.exe'")
    event = Event(
        event_id="x",
        observed_at=datetime(2026, 1, 1, tzinfo=UTC),
        source_format=SourceFormat.EVTX,
        fields=sysmon(Image="c:\\a.exe", User="bob"),
    )
    [detection] = rules.detections(event)
    assert detection.author == "Otasuke tests"
    assert detection.licence == "DRL-1.1" and detection.licence_url
    assert detection.matched == {
        "Image": "c:\\a.exe",
        "Channel": "Microsoft-Windows-Sysmon/Operational",
        "EventID": 1,
    }


# Properties: a value built around the literal matches; with the literal mutated it does not.
LITERAL = st.text(alphabet="abcdefghij.-_\\:", min_size=3, max_size=12)
PADDING = st.text(alphabet="klmnopqrstuvwxyz 0123456789", max_size=20)
MODIFIERS = {
    "contains": lambda lit, a, b: a + lit + b,
    "startswith": lambda lit, a, b: lit + b,
    "endswith": lambda lit, a, b: a + lit,
}
_cache: dict[str, RuleSet] = {}


def _property_rules(tmp_path_factory: pytest.TempPathFactory, modifier: str, lit: str) -> RuleSet:
    key = f"{modifier}:{lit}"
    if key not in _cache:
        quoted = lit.replace("'", "''")
        item = f"CommandLine|{modifier}: '{quoted}'"
        _cache[key] = ruleset(tmp_path_factory.mktemp("p"), SELECTION.format(item=item))
    return _cache[key]


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> pytest.TempPathFactory:
    return tmp_path_factory


@pytest.mark.parametrize("modifier", sorted(MODIFIERS))
@given(literal=LITERAL, before=PADDING, after=PADDING, data=st.data())
def test_built_value_matches_mutated_does_not(
    factory: pytest.TempPathFactory,
    modifier: str,
    literal: str,
    before: str,
    after: str,
    data: st.DataObject,
) -> None:
    escaped = literal.replace("\\", "\\\\")
    rules = _property_rules(factory, modifier, escaped)
    value = MODIFIERS[modifier](literal, before, after)
    assert fires(rules, CommandLine=value.upper())
    position = data.draw(st.integers(min_value=0, max_value=len(literal) - 1))
    mutated = literal[:position] + "Z" + literal[position + 1 :]  # Z is in neither alphabet
    assert not fires(rules, CommandLine=MODIFIERS[modifier](mutated, before, after))
