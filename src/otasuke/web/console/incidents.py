"""インシデント対応 (incident queue and one incident): SLA clocks and the five IR steps.

REQ-MON-60MIN: the queue is sorted by 通知期限 (notify deadline) with a live
countdown; REQ-IR-STEPS: 発見報告 → 初動 → 調査・対応 → 復旧 → 最終報告, advanced
by roles with TRIAGE_INCIDENTS, each step written to the audit log (REQ-LAW).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from otasuke import audit
from otasuke.db.models import Incident
from otasuke.standard.incident import IRStep
from otasuke.tenancy.roles import Permission
from otasuke.tenancy.scope import access_incident_by_id, list_incidents, list_notifications
from otasuke.web.deps import CurrentUser, DbSession, needs
from otasuke.web.present import attribution, explain_incident, notify_state
from otasuke.web.render import render

router = APIRouter()
IncidentViewer = Annotated[CurrentUser, Depends(needs(Permission.VIEW_CUSTOMERS))]
Triager = Annotated[CurrentUser, Depends(needs(Permission.TRIAGE_INCIDENTS))]


def queue_context(s: DbSession, user: CurrentUser) -> dict[str, object]:
    now = datetime.now(UTC)
    rows = [(i, notify_state(i, now)) for i in list_incidents(s, user.viewer, open_only=True)]
    return {"rows": rows, "now": now}


@router.get("/console/incidents", response_class=HTMLResponse)
def incident_queue(request: Request, s: DbSession, user: IncidentViewer) -> Response:
    """対応待ちインシデント: open incidents, the nearest notify deadline first."""
    return render(request, "console/incidents.html", queue_context(s, user))


@router.get("/console/incidents/rows", response_class=HTMLResponse)
def incident_queue_rows(request: Request, s: DbSession, user: IncidentViewer) -> Response:
    """The queue's rows alone, polled by htmx every 30 seconds."""
    return render(request, "console/_incident_rows.html", queue_context(s, user))


@router.get("/console/incidents/{incident_id}", response_class=HTMLResponse)
def incident_detail(
    request: Request, incident_id: int, s: DbSession, user: IncidentViewer
) -> Response:
    viewer = user.viewer
    incident = access_incident_by_id(s, viewer, incident_id)
    alerts = list(incident.alerts)
    try:
        current = IRStep(incident.step)
    except ValueError:
        current = IRStep.DISCOVERY
    return render(
        request,
        "console/incident.html",
        {
            "incident": incident,
            "explanation": explain_incident(incident, alerts),
            "alerts": [(a, attribution(a)) for a in alerts],
            "current": current,
            "next_step": current.next,
            "can_triage": user.can(Permission.TRIAGE_INCIDENTS),
            "notifications": list_notifications(s, viewer, incident_id=incident.id),
            "state": notify_state(incident, datetime.now(UTC)),
        },
    )


def advance(s: DbSession, user: CurrentUser, incident: Incident) -> None:
    """Move to the next IR step, or close the incident after 最終報告; audited."""
    try:
        current = IRStep(incident.step)
    except ValueError:
        current = IRStep.DISCOVERY
    now = datetime.now(UTC)
    following = current.next
    target = f"incident:{incident.id}"
    if following is None:
        if not incident.closed:
            incident.closed = True
            incident.updated_at = now
            audit.record(
                s,
                user.viewer,
                "incident.close",
                target,
                customer_id=incident.customer_id,
                step=current.value,
            )
        return
    incident.step = following.value
    incident.updated_at = now
    audit.record(
        s,
        user.viewer,
        "incident.step",
        target,
        customer_id=incident.customer_id,
        from_step=current.value,
        to_step=following.value,
    )


@router.post("/console/incidents/{incident_id}/advance")
def advance_step(incident_id: int, s: DbSession, user: Triager) -> Response:
    """次の段階へ進める (advance to the next step); CSRF-checked like every form."""
    incident = access_incident_by_id(s, user.viewer, incident_id)
    advance(s, user, incident)
    return RedirectResponse(f"/console/incidents/{incident.id}", status_code=303)
