"""送信メール・監査ログ (sent mail and the audit log), for the roles allowed to read them.

The mail page shows the Notification table (the Maildir / SMTP log), so a demo
without an SMTP server still shows every message the customers were sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from otasuke.db.models import AuditEntry, Organization, User
from otasuke.tenancy.roles import Permission
from otasuke.tenancy.scope import Viewer, list_customers, list_notifications, visible_customer_ids
from otasuke.web.deps import CurrentUser, DbSession, needs
from otasuke.web.render import render

router = APIRouter()
MailViewer = Annotated[CurrentUser, Depends(needs(Permission.VIEW_MAIL))]
AuditViewer = Annotated[CurrentUser, Depends(needs(Permission.VIEW_AUDIT))]


def list_audit_entries(s: Session, viewer: Viewer, limit: int = 300) -> Sequence[AuditEntry]:
    """監査ログ scoped like everything else: entries about the viewer's customers, or made
    by people of the viewer's own team (entries of other teams stay hidden).

    Belongs in tenancy/scope.py; kept here until the scope module grows one.
    """
    team_users = (
        select(User.id)
        .join(Organization, User.organization_id == Organization.id)
        .where(Organization.provider_id == viewer.provider_id)
    )
    q = select(AuditEntry).where(
        or_(
            AuditEntry.customer_id.in_(visible_customer_ids(viewer)),
            AuditEntry.actor_user_id.in_(team_users),
        )
    )
    return s.scalars(q.order_by(AuditEntry.id.desc()).limit(limit)).all()


@router.get("/console/mail", response_class=HTMLResponse)
def mail(request: Request, s: DbSession, user: MailViewer) -> Response:
    """送信済みメール: subject, recipients, status and body of every notification."""
    viewer = user.viewer
    names = {c.id: c.name for c in list_customers(s, viewer)}
    return render(
        request,
        "console/mail.html",
        {"notifications": list_notifications(s, viewer), "names": names},
    )


@router.get("/console/audit", response_class=HTMLResponse)
def audit_log(request: Request, s: DbSession, user: AuditViewer) -> Response:
    """監査ログ (REQ-LAW): who did what to which object."""
    viewer = user.viewer
    names = {c.id: c.name for c in list_customers(s, viewer)}
    return render(
        request, "console/audit.html", {"entries": list_audit_entries(s, viewer), "names": names}
    )
