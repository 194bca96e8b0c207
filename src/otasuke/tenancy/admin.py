"""Creating the team and its customers: organisations, users, contracts, contacts, sensors.

Each change writes an audit entry in the same transaction (REQ-LAW).
"""

from __future__ import annotations

import ipaddress
import re
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session

from otasuke import audit
from otasuke.db.models import Contact, Contract, Organization, Sensor, User
from otasuke.errors import ContractError, OtasukeError
from otasuke.i18n import _
from otasuke.standard.plans import ContractTerms, contract_problems
from otasuke.tenancy.auth import hash_password, new_token
from otasuke.tenancy.roles import OrgKind, Role
from otasuke.tenancy.scope import Viewer

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
SENSOR_KINDS = (
    "fortigate",
    "paloalto",
    "cisco_asa",
    "sonicwall",
    "sophos",
    "pfsense",
    "iptables",
    "suricata",
    "zeek",
    "windows",
    "sysmon",
    "edr",
    "agent",
    "linux",
    "syslog",
    "other",
)
"""What a sensor is; for syslog senders it picks the parser (ingest/receivers/syslog.py)."""


class AdminError(OtasukeError):
    """A team or customer change was refused."""


def create_organization(
    s: Session,
    viewer: Viewer,
    *,
    kind: OrgKind,
    slug: str,
    name: str,
    parent: Organization | None = None,
    partner_role: str | None = None,
    profile: dict[str, Any] | None = None,
) -> Organization:
    if not SLUG.match(slug):
        raise AdminError(
            _("must be 2–63 lowercase letters, digits or hyphens"), field="slug", hint="tokai-parts"
        )
    if s.scalar(select(Organization.id).where(Organization.slug == slug)) is not None:
        raise AdminError(_("this slug is already used"), field="slug", hint=slug)
    if kind is not OrgKind.PROVIDER and parent is None:
        raise AdminError(_("needs a parent organisation"), field="parent")
    org = Organization(
        kind=kind.value,
        slug=slug,
        name=name,
        parent_id=parent.id if parent else None,
        partner_role=partner_role,
        profile=profile or {},
    )
    s.add(org)
    s.flush()
    org.provider_id = org.id if parent is None else (parent.provider_id or parent.id)
    audit.record(
        s,
        viewer,
        "organization.create",
        f"organization:{org.slug}",
        customer_id=org.id if kind is OrgKind.CUSTOMER else None,
        kind=kind.value,
    )
    return org


def create_user(
    s: Session,
    viewer: Viewer,
    *,
    organization: Organization,
    email: str,
    display_name: str,
    role: Role,
    password: str,
    language: str = "ja",
) -> User:
    if role.org_kind.value != organization.kind:
        raise AdminError(
            _("role {role} does not belong to a {kind} organisation").format(
                role=role.value, kind=organization.kind
            ),
            field="role",
        )
    if len(password) < 10:
        raise AdminError(_("must be at least 10 characters"), field="password")
    email = email.strip().lower()
    if "@" not in email:
        raise AdminError(_("not an e-mail address"), field="email", hint="name@example.jp")
    user = User(
        email=email,
        display_name=display_name,
        password_hash=hash_password(password),
        role=role.value,
        organization_id=organization.id,
        language=language,
    )
    s.add(user)
    s.flush()
    audit.record(
        s, viewer, "user.create", f"user:{email}", role=role.value, organization=organization.slug
    )
    return user


def create_contract(
    s: Session,
    viewer: Viewer,
    customer: Organization,
    terms: ContractTerms,
    *,
    start_date: date,
    insurance_limit_jpy: int | None = None,
    free_dispatches_per_year: int = 1,
) -> Contract:
    """契約 (REQ-PACKAGE): refused with every broken rule named when it breaks the standard."""
    problems = contract_problems(terms)
    if problems:
        first = problems[0]
        raise ContractError(
            "; ".join(f"{p.message} ({p.rule})" for p in problems),
            rule=first.rule,
            field=first.field,
            hint=first.hint,
        )
    if free_dispatches_per_year < 1:
        raise ContractError(
            _("at least one free dispatch a year is required"),
            rule="REQ-DISPATCH",
            field="free_dispatches_per_year",
        )
    contract = Contract(
        customer_id=customer.id,
        plan_type=terms.plan_type.value,
        monitoring=terms.monitoring.value,
        initial_price_jpy=terms.initial_price_jpy,
        monthly_network_jpy=terms.monthly_network_jpy,
        monthly_endpoint_per_device_jpy=terms.monthly_endpoint_per_device_jpy,
        device_count=terms.device_count,
        minimum_term_months=terms.minimum_term_months,
        early_termination_fee_jpy=terms.early_termination_fee_jpy,
        cancellation_terms=terms.cancellation_terms,
        device_maker=terms.device_maker,
        device_model=terms.device_model,
        service_country=terms.service_country,
        data_country=terms.data_country,
        cloud_monitoring=terms.cloud_monitoring,
        monthly_added_service=terms.monthly_added_service,
        insurance_limit_jpy=insurance_limit_jpy,
        free_dispatches_per_year=free_dispatches_per_year,
        start_date=start_date,
    )
    s.add(contract)
    s.flush()
    audit.record(
        s,
        viewer,
        "contract.create",
        f"contract:{contract.id}",
        customer_id=customer.id,
        plan=terms.plan_type.value,
        monitoring=terms.monitoring.value,
    )
    return contract


def contract_terms(c: Contract) -> ContractTerms:
    from otasuke.standard.plans import Monitoring, PlanType

    return ContractTerms(
        plan_type=PlanType(c.plan_type),
        monitoring=Monitoring(c.monitoring),
        initial_price_jpy=c.initial_price_jpy,
        monthly_network_jpy=c.monthly_network_jpy,
        monthly_endpoint_per_device_jpy=c.monthly_endpoint_per_device_jpy,
        device_count=c.device_count,
        minimum_term_months=c.minimum_term_months,
        early_termination_fee_jpy=c.early_termination_fee_jpy,
        cancellation_terms=c.cancellation_terms,
        device_maker=c.device_maker,
        device_model=c.device_model,
        service_country=c.service_country,
        data_country=c.data_country,
        cloud_monitoring=c.cloud_monitoring,
        monthly_added_service=c.monthly_added_service,
    )


def add_contact(
    s: Session,
    viewer: Viewer,
    customer: Organization,
    *,
    name: str,
    email: str,
    phone: str | None = None,
    language: str = "ja",
) -> Contact:
    contact = Contact(
        customer_id=customer.id, name=name, email=email.strip(), phone=phone, language=language
    )
    s.add(contact)
    s.flush()
    audit.record(s, viewer, "contact.create", f"contact:{contact.id}", customer_id=customer.id)
    return contact


def add_sensor(
    s: Session,
    viewer: Viewer,
    customer: Organization,
    *,
    kind: str,
    name: str,
    timezone: str = "Asia/Tokyo",
    syslog_source: str | None = None,
) -> tuple[Sensor, str]:
    """Register a sensor; returns it and its ingest token, shown once and stored hashed."""
    if kind not in SENSOR_KINDS:
        raise AdminError(
            _("unknown sensor kind {kind!r}").format(kind=kind),
            field="kind",
            hint=", ".join(SENSOR_KINDS),
        )
    if not name.strip():
        raise AdminError(_("must not be empty"), field="name")
    if (
        s.scalar(select(Sensor.id).where(Sensor.customer_id == customer.id, Sensor.name == name))
        is not None
    ):
        raise AdminError(
            _("this customer already has a sensor with this name"), field="name", hint=name
        )
    source_ip = None
    if syslog_source is not None:
        try:
            source_ip = str(ipaddress.ip_address(syslog_source.strip()))
        except ValueError:
            raise AdminError(
                _("not an IP address"), field="syslog_source", hint="192.168.1.1"
            ) from None
        if s.scalar(select(Sensor.id).where(Sensor.syslog_source == source_ip)) is not None:
            raise AdminError(
                _("another sensor already sends syslog from this address"),
                field="syslog_source",
                hint=source_ip,
            )
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise AdminError(_("unknown time zone"), field="timezone", hint="Asia/Tokyo") from None
    token, token_hash = new_token("osk_")
    sensor = Sensor(
        customer_id=customer.id,
        kind=kind,
        name=name,
        token_hash=token_hash,
        token_prefix=token[:10],
        timezone=timezone,
        syslog_source=source_ip,
    )
    s.add(sensor)
    s.flush()
    audit.record(
        s,
        viewer,
        "sensor.create",
        f"sensor:{sensor.id}",
        customer_id=customer.id,
        kind=kind,
        name=name,
        syslog_source=source_ip,
    )
    return sensor, token
