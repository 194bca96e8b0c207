"""顧客一覧・顧客詳細 (customers and one customer's profile, contract, contacts, sensors)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from otasuke.db.models import Organization, Sensor
from otasuke.i18n import _
from otasuke.tenancy.admin import contract_terms
from otasuke.tenancy.roles import OrgKind, Permission
from otasuke.tenancy.scope import (
    access_customer_by_slug,
    list_contacts,
    list_contracts,
    list_customers,
    list_incidents,
    list_sensors,
)
from otasuke.web.deps import CurrentUser, DbSession, needs
from otasuke.web.present import monitoring_text, plan_text, sensor_silent
from otasuke.web.render import render

router = APIRouter()
CustomerViewer = Annotated[CurrentUser, Depends(needs(Permission.VIEW_CUSTOMERS))]


def parent_names(s: DbSession, customers: list[Organization]) -> dict[int, str]:
    """販売元: the reseller's name, or 直販 (direct) when the provider sells itself."""
    ids = {c.parent_id for c in customers if c.parent_id is not None}
    parents = s.scalars(select(Organization).where(Organization.id.in_(ids))).all()
    return {
        p.id: (p.name if p.kind == OrgKind.RESELLER.value else _("Direct (provider)"))
        for p in parents
    }


def profile_rows(profile: dict[str, object]) -> list[tuple[str, object]]:
    """ユーザー概況 (REQ-PROFILE) with Japanese labels, known keys first."""
    labels = {
        "industry": _("Industry"),
        "employees": _("Employees"),
        "pcs": _("PCs"),
        "it_staff": _("IT staff"),
        "region": _("Region"),
        "notes": _("Notes"),
    }
    rows = [(labels[k], profile[k]) for k in labels if k in profile]
    rows += [(k, v) for k, v in profile.items() if k not in labels]
    return rows


@router.get("/console/customers", response_class=HTMLResponse)
def customer_list(request: Request, s: DbSession, user: CustomerViewer) -> Response:
    viewer = user.viewer
    customers = list(list_customers(s, viewer))
    open_count = Counter(i.customer_id for i in list_incidents(s, viewer, open_only=True))
    now = datetime.now(UTC)
    rows = []
    for c in customers:
        contracts = list_contracts(s, viewer, c.id)
        contract = contracts[0] if contracts else None
        sensors: list[Sensor] = list(list_sensors(s, viewer, c.id))
        rows.append(
            {
                "customer": c,
                "contract": contract,
                "plan": plan_text(contract),
                "monitoring": monitoring_text(contract),
                "sensors": [(x, sensor_silent(x, now)) for x in sensors],
                "open": open_count.get(c.id, 0),
            }
        )
    return render(
        request, "console/customers.html", {"rows": rows, "parents": parent_names(s, customers)}
    )


@router.get("/console/customers/{slug}", response_class=HTMLResponse)
def customer_detail(request: Request, slug: str, s: DbSession, user: CustomerViewer) -> Response:
    viewer = user.viewer
    customer = access_customer_by_slug(s, viewer, slug)
    contracts = [
        {
            "row": c,
            "plan": plan_text(c),
            "monitoring": monitoring_text(c),
            "monthly": contract_terms(c).monthly_price_jpy,
        }
        for c in list_contracts(s, viewer, customer.id)
    ]
    now = datetime.now(UTC)
    return render(
        request,
        "console/customer.html",
        {
            "customer": customer,
            "parent": parent_names(s, [customer]).get(customer.parent_id or 0, "—"),
            "profile": profile_rows(customer.profile or {}),
            "contracts": contracts,
            "contacts": list_contacts(s, viewer, customer.id),
            "sensors": [(x, sensor_silent(x, now)) for x in list_sensors(s, viewer, customer.id)],
            "incidents": list_incidents(s, viewer, customer_id=customer.id, limit=20),
        },
    )
