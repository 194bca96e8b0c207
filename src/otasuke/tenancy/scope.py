"""The one scoping layer: every query for customer data passes here (STYLE §5).

``access_<thing>_by_<key>`` returns the object if the viewer may see it and
raises :class:`NotFound` otherwise — the same answer for "absent" and "not
yours", so a reseller cannot even learn that another's customer exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Select, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from otasuke.db.models import (
    Alert,
    Contact,
    Contract,
    Incident,
    Notification,
    Organization,
    Sensor,
    User,
)
from otasuke.errors import Forbidden, NotFound
from otasuke.i18n import _
from otasuke.tenancy.roles import PERMISSIONS, OrgKind, Permission, Role


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is asking: a logged-in user, or the system itself (CLI, workers)."""

    user_id: int | None
    email: str
    role: Role | None
    """None for the system (CLI run by the operator on the server, workers)."""
    organization_id: int | None
    provider_id: int | None

    @classmethod
    def system(cls) -> Viewer:
        return cls(user_id=None, email="system", role=None, organization_id=None, provider_id=None)

    @classmethod
    def of(cls, user: User) -> Viewer:
        org = user.organization
        return cls(
            user_id=user.id,
            email=user.email,
            role=Role(user.role),
            organization_id=org.id,
            provider_id=org.provider_id,
        )

    @property
    def is_system(self) -> bool:
        return self.role is None

    def can(self, permission: Permission) -> bool:
        return self.is_system or (self.role is not None and permission in PERMISSIONS[self.role])

    def require(self, permission: Permission) -> None:
        if not self.can(permission):
            raise Forbidden(_("Your role may not do this."), hint=permission.value)


def visible_customers(viewer: Viewer) -> ColumnElement[bool]:
    """SQL condition on Organization: the customers this viewer may see."""
    is_customer = Organization.kind == OrgKind.CUSTOMER.value
    if viewer.is_system:
        return is_customer
    role = viewer.role
    if role in (Role.PROVIDER_ADMIN, Role.ANALYST, Role.HELPDESK):
        return is_customer & (Organization.provider_id == viewer.provider_id)
    if role is Role.RESELLER_STAFF:
        return is_customer & (Organization.parent_id == viewer.organization_id)
    if role in (Role.CUSTOMER_ADMIN, Role.CUSTOMER_USER):
        return is_customer & (Organization.id == viewer.organization_id)
    return Organization.id.is_(None)  # partners: no customer data (jobs come later)


def visible_customer_ids(viewer: Viewer) -> Select[int]:
    return select(Organization.id).where(visible_customers(viewer))


def list_customers(s: Session, viewer: Viewer) -> Sequence[Organization]:
    return s.scalars(
        select(Organization).where(visible_customers(viewer)).order_by(Organization.name)
    ).all()


def access_customer_by_slug(s: Session, viewer: Viewer, slug: str) -> Organization:
    org = s.scalar(select(Organization).where(Organization.slug == slug, visible_customers(viewer)))
    if org is None:
        raise NotFound(_("No such customer."), field="customer", hint=slug)
    return org


def access_customer_by_id(s: Session, viewer: Viewer, customer_id: int) -> Organization:
    org = s.scalar(
        select(Organization).where(Organization.id == customer_id, visible_customers(viewer))
    )
    if org is None:
        raise NotFound(_("No such customer."), field="customer")
    return org


def incidents_query(viewer: Viewer) -> Select[Incident]:
    return select(Incident).where(Incident.customer_id.in_(visible_customer_ids(viewer)))


def list_incidents(
    s: Session,
    viewer: Viewer,
    *,
    customer_id: int | None = None,
    open_only: bool = False,
    limit: int = 500,
) -> Sequence[Incident]:
    q = incidents_query(viewer)
    if customer_id is not None:
        q = q.where(Incident.customer_id == customer_id)
    if open_only:
        q = q.where(Incident.closed.is_(False))
    q = q.order_by(
        Incident.notify_deadline.is_(None),
        Incident.notify_deadline,
        Incident.last_evidence_at.desc(),
    ).limit(limit)
    return s.scalars(q).all()


def access_incident_by_id(s: Session, viewer: Viewer, incident_id: int) -> Incident:
    inc = s.scalar(incidents_query(viewer).where(Incident.id == incident_id))
    if inc is None:
        raise NotFound(_("No such incident."), field="incident")
    return inc


def access_alert_by_id(s: Session, viewer: Viewer, alert_id: int) -> Alert:
    alert = s.scalar(
        select(Alert).where(
            Alert.id == alert_id, Alert.customer_id.in_(visible_customer_ids(viewer))
        )
    )
    if alert is None:
        raise NotFound(_("No such alert."), field="alert")
    return alert


def list_contracts(s: Session, viewer: Viewer, customer_id: int) -> Sequence[Contract]:
    access_customer_by_id(s, viewer, customer_id)
    return s.scalars(
        select(Contract)
        .where(Contract.customer_id == customer_id)
        .order_by(Contract.start_date.desc())
    ).all()


def list_sensors(s: Session, viewer: Viewer, customer_id: int) -> Sequence[Sensor]:
    access_customer_by_id(s, viewer, customer_id)
    return s.scalars(
        select(Sensor).where(Sensor.customer_id == customer_id).order_by(Sensor.name)
    ).all()


def list_contacts(s: Session, viewer: Viewer, customer_id: int) -> Sequence[Contact]:
    access_customer_by_id(s, viewer, customer_id)
    return s.scalars(
        select(Contact).where(Contact.customer_id == customer_id).order_by(Contact.id)
    ).all()


def list_notifications(
    s: Session, viewer: Viewer, *, incident_id: int | None = None, limit: int = 200
) -> Sequence[Notification]:
    q = select(Notification).where(Notification.customer_id.in_(visible_customer_ids(viewer)))
    if incident_id is not None:
        q = q.where(Notification.incident_id == incident_id)
    return s.scalars(q.order_by(Notification.id.desc()).limit(limit)).all()
