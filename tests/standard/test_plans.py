"""REQ-PRICE / REQ-PACKAGE / REQ-TYPE2: contract validation on the boundary values."""

from __future__ import annotations

from dataclasses import replace

import pytest

from otasuke.i18n import language
from otasuke.standard.plans import (
    INITIAL_CAP_BOTH,
    INITIAL_CAP_ENDPOINT,
    INITIAL_CAP_NETWORK,
    MONTHLY_CAP_ENDPOINT_PER_DEVICE,
    MONTHLY_CAP_NETWORK,
    ContractTerms,
    Monitoring,
    PlanType,
    contract_problems,
)

BASE = ContractTerms(
    plan_type=PlanType.TYPE1,
    monitoring=Monitoring.NETWORK,
    initial_price_jpy=0,
    monthly_network_jpy=0,
    monthly_endpoint_per_device_jpy=0,
    device_count=1,
    minimum_term_months=12,
    early_termination_fee_jpy=0,
    cancellation_terms="30日前に通知",
    device_maker="Fortinet",
    device_model="FortiGate 60F",
    service_country="日本",
)


def fields(terms: ContractTerms) -> list[str | None]:
    return [p.field for p in contract_problems(terms)]


@pytest.mark.parametrize(
    ("monitoring", "cap"),
    [
        (Monitoring.NETWORK, INITIAL_CAP_NETWORK),
        (Monitoring.ENDPOINT, INITIAL_CAP_ENDPOINT),
        (Monitoring.BOTH, INITIAL_CAP_BOTH),
    ],
)
def test_req_price_initial_cap_boundary(monitoring: Monitoring, cap: int) -> None:
    at = replace(BASE, monitoring=monitoring, initial_price_jpy=cap)
    assert contract_problems(at) == []
    over = replace(at, initial_price_jpy=cap + 1)
    assert fields(over) == ["initial_price_jpy"]


def test_req_price_monthly_network_cap_names_rule_and_number() -> None:
    assert contract_problems(replace(BASE, monthly_network_jpy=MONTHLY_CAP_NETWORK)) == []
    [problem] = contract_problems(replace(BASE, monthly_network_jpy=12_000))
    assert problem.rule == "REQ-PRICE"
    assert problem.field == "monthly_network_jpy"
    with language("en"):
        [problem] = contract_problems(replace(BASE, monthly_network_jpy=12_000))
    assert str(problem.message) == (
        "monthly price 12,000 JPY exceeds the type 1 network monitoring cap of 10,000 JPY"
    )


def test_req_price_message_in_japanese_by_default() -> None:
    with language("ja"):
        [problem] = contract_problems(replace(BASE, monthly_network_jpy=12_000))
    assert "12,000" in problem.message and "10,000" in problem.message
    assert "月額" in problem.message


def test_req_price_endpoint_per_device_cap_any_device_count() -> None:
    t = replace(
        BASE,
        monitoring=Monitoring.ENDPOINT,
        device_count=300,
        monthly_endpoint_per_device_jpy=MONTHLY_CAP_ENDPOINT_PER_DEVICE,
    )
    assert contract_problems(t) == []
    assert t.monthly_price_jpy == 600_000
    over = replace(t, monthly_endpoint_per_device_jpy=MONTHLY_CAP_ENDPOINT_PER_DEVICE + 1)
    assert fields(over) == ["monthly_endpoint_per_device_jpy"]


def test_req_price_both_must_satisfy_both_caps() -> None:
    t = replace(
        BASE,
        monitoring=Monitoring.BOTH,
        device_count=10,
        monthly_network_jpy=10_001,
        monthly_endpoint_per_device_jpy=2_001,
    )
    assert sorted(fields(t), key=str) == ["monthly_endpoint_per_device_jpy", "monthly_network_jpy"]
    ok = replace(t, monthly_network_jpy=10_000, monthly_endpoint_per_device_jpy=2_000)
    assert ok.monthly_price_jpy == 10_000 + 2_000 * 10
    assert contract_problems(ok) == []


def test_req_price_contractable_from_one_device() -> None:
    assert contract_problems(replace(BASE, device_count=1)) == []
    assert fields(replace(BASE, device_count=0)) == ["device_count"]


def test_req_price_minimum_term_at_most_two_years() -> None:
    assert contract_problems(replace(BASE, minimum_term_months=24)) == []
    assert fields(replace(BASE, minimum_term_months=25)) == ["minimum_term_months"]


def test_req_price_termination_fee_and_cancellation_must_be_written() -> None:
    t = replace(BASE, early_termination_fee_jpy=None, cancellation_terms="  ")
    assert fields(t) == ["early_termination_fee_jpy", "cancellation_terms"]


def test_req_package_device_and_country_named() -> None:
    t = replace(BASE, device_maker="", device_model="", service_country="")
    problems = contract_problems(t)
    assert [p.field for p in problems] == ["device_maker", "device_model", "service_country"]
    assert {p.rule for p in problems} == {"REQ-PACKAGE"}


def test_req_type2_needs_an_addition_and_relaxes_caps() -> None:
    t2 = replace(BASE, plan_type=PlanType.TYPE2, monthly_network_jpy=22_500)
    [problem] = contract_problems(t2)
    assert problem.rule == "REQ-TYPE2"
    assert contract_problems(replace(t2, device_count=50)) == []
    assert fields(replace(t2, device_count=49)) == ["plan_type"]
    assert contract_problems(replace(t2, cloud_monitoring=True)) == []
    assert contract_problems(replace(t2, monthly_added_service="月次コンサルティング")) == []
    assert contract_problems(replace(t2, monitoring=Monitoring.BOTH)) == []
