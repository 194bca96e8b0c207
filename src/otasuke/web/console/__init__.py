"""提供者コンソール (provider console): customers, incident queue, mail, audit log.

Every page reads customer data through :mod:`otasuke.tenancy.scope`; what a
role may not see answers 404, the same as what does not exist (REQ-TEAM).
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from otasuke.tenancy.roles import Permission, Role
from otasuke.tenancy.scope import list_customers, list_incidents
from otasuke.web.console import customers, events, incidents, records, tuning
from otasuke.web.deps import DbSession, StaffUser, check_csrf
from otasuke.web.render import render

router = APIRouter(dependencies=[Depends(check_csrf)], include_in_schema=False)


@router.get("/console", response_class=HTMLResponse)
def console_home(request: Request, s: DbSession, user: StaffUser) -> Response:
    """Start page: open work at a glance; partner technicians see their (empty) job list."""
    if user.role is Role.PARTNER_TECHNICIAN:
        return render(request, "console/partner.html")
    viewer = user.viewer
    open_incidents = list_incidents(s, viewer, open_only=True)
    serious = [i for i in open_incidents if i.severity == "serious"]
    untold = [i for i in serious if i.notified_at is None]
    return render(
        request,
        "console/home.html",
        {
            "customer_count": len(list_customers(s, viewer)),
            "open_count": len(open_incidents),
            "serious_count": len(serious),
            "untold": untold,
            "can_mail": user.can(Permission.VIEW_MAIL),
            "can_audit": user.can(Permission.VIEW_AUDIT),
            "now": datetime.now(UTC),
        },
    )


router.include_router(customers.router)
router.include_router(events.router)
router.include_router(incidents.router)
router.include_router(records.router)
router.include_router(tuning.router)
