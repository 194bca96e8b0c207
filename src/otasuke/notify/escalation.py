"""エスカレーション (REQ-MON-60MIN): tell the provider's staff before the 60 minutes run out.

A serious incident that is still untold ``escalate_after_minutes`` after its SLA
start (a mail that failed, a customer without a contact, an SMTP server down)
is escalated once: the provider's administrators and analysts get a mail
naming the customer, the incident and the deadline, so a person can phone the
customer in time. Each escalation is recorded on the incident and in the
audit log.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from sqlalchemy import select
from sqlalchemy.orm import Session

from otasuke import audit
from otasuke.db.models import Incident, Organization, User
from otasuke.i18n import _, language, pgettext
from otasuke.notify.channels import Channel, DeliveryError
from otasuke.notify.incident_mail import jst
from otasuke.settings import Settings
from otasuke.standard.incident import Severity
from otasuke.tenancy.roles import Role
from otasuke.tenancy.scope import Viewer

ON_DUTY = (Role.PROVIDER_ADMIN.value, Role.ANALYST.value)


def overdue(s: Session, now: datetime, after: timedelta) -> list[Incident]:
    """Serious incidents still untold, not yet escalated, whose SLA started ``after`` ago."""
    return list(
        s.scalars(
            select(Incident)
            .where(
                Incident.severity == Severity.SERIOUS.value,
                Incident.notified_at.is_(None),
                Incident.escalated_at.is_(None),
                Incident.closed.is_(False),
                Incident.sla_started_at <= now - after,
            )
            .order_by(Incident.notify_deadline)
        )
    )


def staff_of(s: Session, provider_id: int | None) -> list[User]:
    """The provider's active administrators and analysts (those who can phone a customer)."""
    return list(
        s.scalars(
            select(User)
            .join(Organization, User.organization_id == Organization.id)
            .where(
                Organization.id == provider_id,
                User.role.in_(ON_DUTY),
                User.active.is_(True),
            )
            .order_by(User.id)
        )
    )


def escalation_message(
    incident: Incident, customer: Organization, recipients: list[str], settings: Settings
) -> EmailMessage:
    with language("ja"):
        deadline = jst(incident.notify_deadline) if incident.notify_deadline else "-"
        subject = pgettext(
            "mail subject", "[Escalation] {company}: serious incident #{number} not yet told"
        ).format(company=customer.name, number=incident.id)
        body = "\n".join(
            [
                _("A serious incident has not been notified to the customer yet."),
                _("Customer: {company}").format(company=customer.name),
                _("Incident: #{number} {title}").format(number=incident.id, title=incident.title),
                _("Where: {host}").format(host=incident.host or "-"),
                _("Notification deadline: {time} (Japan time)").format(time=deadline),
                _("Please contact the customer by phone now and record it in the console."),
                f"{settings.public_url}/console/incidents/{incident.id}",
            ]
        )
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = settings.mail_from
    msg["To"] = ", ".join(recipients)
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain="otasuke")
    msg["X-Otasuke-Incident"] = str(incident.id)
    msg.set_content(body, charset="utf-8")
    return msg


def escalate_overdue(
    s: Session, channel: Channel, settings: Settings, now: datetime | None = None
) -> int:
    """Escalate every overdue untold serious incident once; returns how many were escalated."""
    now = now or datetime.now(UTC)
    done = 0
    for incident in overdue(s, now, timedelta(minutes=settings.escalate_after_minutes)):
        customer = s.get_one(Organization, incident.customer_id)
        recipients = [u.email for u in staff_of(s, customer.provider_id)]
        if not recipients:
            continue
        try:
            channel.send(escalation_message(incident, customer, recipients, settings))
        except DeliveryError as err:
            audit.record(
                s,
                Viewer.system(),
                "incident.escalation_failed",
                f"incident:{incident.id}",
                customer_id=customer.id,
                error=str(err),
            )
            continue
        incident.escalated_at = now
        audit.record(
            s,
            Viewer.system(),
            "incident.escalate",
            f"incident:{incident.id}",
            customer_id=customer.id,
            recipients=recipients,
        )
        done += 1
    return done
