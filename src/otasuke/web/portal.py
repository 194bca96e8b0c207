"""お客さまポータル (customer portal, REQ-EASY): for owners with no IT staff.

At one glance: 安全 (safe) or 要対応 (action needed, when a serious incident is
open) with one sentence saying what to do; each incident in plain words
(what happened, which PC, what we do, what you do now); the contract in short;
the monitoring devices (監視機器) as 正常 or ログが届いていません.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from otasuke.standard.incident import Severity
from otasuke.tenancy.admin import contract_terms
from otasuke.tenancy.scope import (
    access_customer_by_id,
    access_incident_by_id,
    list_contracts,
    list_incidents,
    list_sensors,
)
from otasuke.web.deps import AppSettings, CustomerUser, DbSession, check_csrf
from otasuke.web.present import (
    attribution,
    explain_incident,
    monitoring_text,
    notify_state,
    plan_text,
    sensor_silent,
)
from otasuke.web.render import render

router = APIRouter(dependencies=[Depends(check_csrf)], include_in_schema=False)


@router.get("/portal", response_class=HTMLResponse)
def portal_home(request: Request, s: DbSession, user: CustomerUser) -> Response:
    """現在の状況: 安全 or 要対応, the incidents in plain words, the devices' state."""
    viewer = user.viewer
    customer = access_customer_by_id(s, viewer, user.organization_id)
    incidents = list_incidents(s, viewer, customer_id=customer.id, limit=30)
    open_serious = [i for i in incidents if not i.closed and i.severity == Severity.SERIOUS.value]
    now = datetime.now(UTC)
    sensors = [(x, sensor_silent(x, now)) for x in list_sensors(s, viewer, customer.id)]
    return render(
        request,
        "portal/home.html",
        {
            "customer": customer,
            "action_needed": bool(open_serious),
            "first_serious": open_serious[0] if open_serious else None,
            "incidents": [(i, explain_incident(i)) for i in incidents],
            "sensors": sensors,
            "silent_count": sum(1 for _x, silent in sensors if silent),
        },
    )


@router.get("/portal/incidents/{incident_id}", response_class=HTMLResponse)
def portal_incident(
    request: Request, incident_id: int, s: DbSession, user: CustomerUser
) -> Response:
    """One incident in plain words; another company's incident is 404."""
    incident = access_incident_by_id(s, user.viewer, incident_id)
    alerts = list(incident.alerts)
    return render(
        request,
        "portal/incident.html",
        {
            "incident": incident,
            "explanation": explain_incident(incident, alerts),
            "alerts": [(a, attribution(a)) for a in alerts],
            "state": notify_state(incident, datetime.now(UTC)),
        },
    )


@router.get("/portal/contract", response_class=HTMLResponse)
def portal_contract(
    request: Request, s: DbSession, user: CustomerUser, settings: AppSettings
) -> Response:
    """ご契約内容: plan, monthly price, devices, minimum term, cancellation, insurance, desk."""
    viewer = user.viewer
    customer = access_customer_by_id(s, viewer, user.organization_id)
    contracts = [
        {
            "row": c,
            "plan": plan_text(c),
            "monitoring": monitoring_text(c),
            "monthly": contract_terms(c).monthly_price_jpy,
        }
        for c in list_contracts(s, viewer, customer.id)
    ]
    return render(
        request,
        "portal/contract.html",
        {
            "customer": customer,
            "contracts": contracts,
            "desk_phone": settings.desk_phone,
            "desk_email": settings.desk_email,
        },
    )


@router.get("/portal/devices", response_class=HTMLResponse)
def portal_devices(request: Request, s: DbSession, user: CustomerUser) -> Response:
    """監視機器: each device that sends us logs, 正常 or ログが届いていません."""
    viewer = user.viewer
    customer = access_customer_by_id(s, viewer, user.organization_id)
    now = datetime.now(UTC)
    return render(
        request,
        "portal/devices.html",
        {
            "customer": customer,
            "sensors": [(x, sensor_silent(x, now)) for x in list_sensors(s, viewer, customer.id)],
        },
    )
