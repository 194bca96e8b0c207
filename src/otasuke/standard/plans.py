"""Plans and price caps of the service standard (REQ-PRICE, REQ-PACKAGE, REQ-TYPE2).

All prices are JPY, tax excluded (税抜). The caps of 1類 (type 1):

=================  ====================  ===========================
monitoring         initial (one-off)     monthly
=================  ====================  ===========================
network            ≤ 500,000             ≤ 10,000
endpoint           ≤ 500,000 (any count) ≤ 2,000 per device
network+endpoint   ≤ 1,000,000           both of the above
=================  ====================  ===========================

Minimum contract term ≤ 2 years; contractable from one device; initial costs,
term, early-termination fee and the customer's right to cancel must be written
in the contract. 2類 (type 2) relaxes the price caps (the standard publishes no
figure) and requires at least one addition: ≥ 50 monitored devices, more
monitoring (network + endpoint, or cloud monitoring such as CASB/SASE), or a
regular added service at least monthly.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from otasuke.errors import ContractError
from otasuke.i18n import _


class PlanType(StrEnum):
    """類型: 1類 (type 1) or 2類 (type 2)."""

    TYPE1 = "type1"
    TYPE2 = "type2"


class Monitoring(StrEnum):
    """監視の種類: network (UTM等), endpoint (EDR等) or both."""

    NETWORK = "network"
    ENDPOINT = "endpoint"
    BOTH = "both"

    @property
    def network(self) -> bool:
        return self in (Monitoring.NETWORK, Monitoring.BOTH)

    @property
    def endpoint(self) -> bool:
        return self in (Monitoring.ENDPOINT, Monitoring.BOTH)


INITIAL_CAP_NETWORK = 500_000
INITIAL_CAP_ENDPOINT = 500_000
INITIAL_CAP_BOTH = 1_000_000
MONTHLY_CAP_NETWORK = 10_000
MONTHLY_CAP_ENDPOINT_PER_DEVICE = 2_000
MAX_MINIMUM_TERM_MONTHS = 24
TYPE2_MIN_DEVICES = 50


@dataclass(frozen=True, slots=True)
class ContractTerms:
    """契約条件: what one contract of the one package says (REQ-PACKAGE)."""

    plan_type: PlanType
    monitoring: Monitoring
    initial_price_jpy: int
    monthly_network_jpy: int
    """Monthly price of network monitoring (0 when not contracted)."""
    monthly_endpoint_per_device_jpy: int
    """Monthly price per endpoint device (0 when not contracted)."""
    device_count: int
    minimum_term_months: int
    early_termination_fee_jpy: int | None
    cancellation_terms: str
    device_maker: str
    device_model: str
    service_country: str
    data_country: str | None = None
    cloud_monitoring: bool = False
    monthly_added_service: str | None = None

    @property
    def monthly_price_jpy(self) -> int:
        """月額 (tax excluded): network part + endpoint part × devices."""
        endpoint = self.monthly_endpoint_per_device_jpy * self.device_count
        return (self.monthly_network_jpy if self.monitoring.network else 0) + (
            endpoint if self.monitoring.endpoint else 0
        )


def _yen(value: int) -> str:
    return f"{value:,}"


def contract_problems(terms: ContractTerms) -> list[ContractError]:
    """Every rule of the standard that ``terms`` breaks; empty when it conforms."""
    problems: list[ContractError] = []
    add = problems.append
    if terms.device_count < 1:
        add(
            ContractError(
                _("device count must be at least 1"),
                rule="REQ-PRICE",
                field="device_count",
                hint=_("the service is contractable from one device"),
            )
        )
    for name in ("initial_price_jpy", "monthly_network_jpy", "monthly_endpoint_per_device_jpy"):
        if getattr(terms, name) < 0:
            add(ContractError(_("price must not be negative"), rule="REQ-PRICE", field=name))
    if terms.plan_type is PlanType.TYPE1:
        problems.extend(_type1_price_problems(terms))
    else:
        problems.extend(_type2_problems(terms))
    if terms.minimum_term_months > MAX_MINIMUM_TERM_MONTHS:
        add(
            ContractError(
                _("minimum term of {months} months exceeds the limit of {limit} months").format(
                    months=terms.minimum_term_months, limit=MAX_MINIMUM_TERM_MONTHS
                ),
                rule="REQ-PRICE",
                field="minimum_term_months",
                hint=_("shorten the minimum term"),
            )
        )
    if terms.early_termination_fee_jpy is None:
        add(
            ContractError(
                _("the early-termination fee must be written in the contract"),
                rule="REQ-PRICE",
                field="early_termination_fee_jpy",
                hint=_("enter 0 if there is none"),
            )
        )
    if not terms.cancellation_terms.strip():
        add(
            ContractError(
                _("the customer's right to cancel must be written in the contract"),
                rule="REQ-PRICE",
                field="cancellation_terms",
            )
        )
    for name in ("device_maker", "device_model", "service_country"):
        if not getattr(terms, name).strip():
            add(
                ContractError(
                    _("the contract must name this item"),
                    rule="REQ-PACKAGE",
                    field=name,
                    hint=_(
                        "maker and model of the monitoring device, and the country "
                        "the service is provided from"
                    ),
                )
            )
    return problems


def _type1_price_problems(terms: ContractTerms) -> list[ContractError]:
    out: list[ContractError] = []
    m = terms.monitoring
    initial_cap = {
        Monitoring.NETWORK: INITIAL_CAP_NETWORK,
        Monitoring.ENDPOINT: INITIAL_CAP_ENDPOINT,
        Monitoring.BOTH: INITIAL_CAP_BOTH,
    }[m]
    label = monitoring_label(m)
    if terms.initial_price_jpy > initial_cap:
        out.append(
            ContractError(
                _(
                    "initial price {price} JPY exceeds the type 1 {monitoring} cap of {cap} JPY"
                ).format(
                    price=_yen(terms.initial_price_jpy), monitoring=label, cap=_yen(initial_cap)
                ),
                rule="REQ-PRICE",
                field="initial_price_jpy",
            )
        )
    if m.network and terms.monthly_network_jpy > MONTHLY_CAP_NETWORK:
        out.append(
            ContractError(
                _(
                    "monthly price {price} JPY exceeds the type 1 {monitoring} cap of {cap} JPY"
                ).format(
                    price=_yen(terms.monthly_network_jpy),
                    monitoring=monitoring_label(Monitoring.NETWORK),
                    cap=_yen(MONTHLY_CAP_NETWORK),
                ),
                rule="REQ-PRICE",
                field="monthly_network_jpy",
            )
        )
    if m.endpoint and terms.monthly_endpoint_per_device_jpy > MONTHLY_CAP_ENDPOINT_PER_DEVICE:
        out.append(
            ContractError(
                _(
                    "monthly price {price} JPY per device exceeds the type 1 {monitoring} cap of "
                    "{cap} JPY per device"
                ).format(
                    price=_yen(terms.monthly_endpoint_per_device_jpy),
                    monitoring=monitoring_label(Monitoring.ENDPOINT),
                    cap=_yen(MONTHLY_CAP_ENDPOINT_PER_DEVICE),
                ),
                rule="REQ-PRICE",
                field="monthly_endpoint_per_device_jpy",
            )
        )
    return out


def _type2_problems(terms: ContractTerms) -> list[ContractError]:
    added = (
        terms.device_count >= TYPE2_MIN_DEVICES
        or terms.monitoring is Monitoring.BOTH
        or terms.cloud_monitoring
        or bool(terms.monthly_added_service and terms.monthly_added_service.strip())
    )
    if added:
        return []
    return [
        ContractError(
            _(
                "a type 2 plan needs at least one addition to type 1: {devices} or more devices, "
                "network and endpoint monitoring, cloud monitoring, or a service added at least "
                "monthly"
            ).format(devices=TYPE2_MIN_DEVICES),
            rule="REQ-TYPE2",
            field="plan_type",
        )
    ]


def monitoring_label(monitoring: Monitoring) -> str:
    return {
        Monitoring.NETWORK: _("network monitoring"),
        Monitoring.ENDPOINT: _("endpoint monitoring"),
        Monitoring.BOTH: _("network and endpoint monitoring"),
    }[monitoring]


def plan_label(plan: PlanType) -> str:
    return {PlanType.TYPE1: _("Type 1"), PlanType.TYPE2: _("Type 2")}[plan]
