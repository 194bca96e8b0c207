"""The serious-incident mail (REQ-MON-60MIN): what happened, on which PC, what we do, what you do.

One mail concerns one customer: the recipients are that customer's contacts
and the content is built from that incident's alerts only, all checked to
belong to the same customer (a peer system once mixed customers in one digest).
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from otasuke.db.models import Alert, Contact, Incident, Notification, Organization
from otasuke.i18n import _, language, pgettext
from otasuke.incidents.explain import explain
from otasuke.notify.channels import Channel, DeliveryError
from otasuke.settings import Settings
from otasuke.standard.incident import Severity

JST = ZoneInfo("Asia/Tokyo")


def jst(dt: datetime) -> str:
    return dt.astimezone(JST).strftime("%Y-%m-%d %H:%M")


def build_message(
    incident: Incident,
    customer: Organization,
    alerts: list[Alert],
    recipients: list[str],
    settings: Settings,
    lang: str = "ja",
) -> EmailMessage:
    if any(a.customer_id != customer.id for a in alerts) or incident.customer_id != customer.id:
        raise ValueError("an incident mail may only carry its own customer's alerts")
    with language(lang):
        host = incident.host or _("a device in your network")
        ex = explain(
            Severity(incident.severity),
            {a.source for a in alerts},
            [t for a in alerts for t in a.tags],
            incident.title,
        )
        subject = pgettext(
            "mail subject", "[Serious] {company}: suspicious activity on {host}"
        ).format(company=customer.name, host=host)
        lines = [
            _("Dear {company},").format(company=customer.name),
            "",
            _("We detected something serious in your network. Please read this now."),
            "",
            "■ " + _("What happened"),
            ex.what_happened,
            _("Where: {host}").format(host=host),
            _("When: {time} (Japan time)").format(time=jst(incident.first_evidence_at)),
            "",
            "■ " + _("What we are doing"),
            ex.what_we_do,
            "",
            "■ " + _("What you should do now"),
            *[f"{n}. {step}" for n, step in enumerate(ex.what_you_do, start=1)],
            "",
            "■ " + _("Contact the help desk"),
            _("Phone: {phone} / Mail: {mail} (24 hours)").format(
                phone=settings.desk_phone, mail=settings.desk_email
            ),
            _("Incident number: {number}").format(number=incident.id),
            _("Details: {url}").format(url=f"{settings.public_url}/portal/incidents/{incident.id}"),
            "",
            "――",
            _("For your IT contact: what was detected"),
        ]
        for a in alerts[:10]:
            lines.append(f"- {a.rule_title} ({a.level}, {a.source})")
            if a.rule_author:
                lines.append(
                    "  "
                    + _("Detection rule by {author}, {licence} ({url})").format(
                        author=a.rule_author,
                        licence=a.rule_licence or "",
                        url=a.rule_licence_url or a.rule_url or "",
                    )
                )
        if len(alerts) > 10:
            lines.append(_("… and {count} more").format(count=len(alerts) - 10))
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = settings.mail_from
    msg["To"] = ", ".join(recipients)
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain="otasuke")
    msg["X-Otasuke-Incident"] = str(incident.id)
    msg["X-Otasuke-Customer"] = customer.slug
    msg.set_content("\n".join(lines), charset="utf-8")
    return msg


def notify_incident(
    s: Session, incident: Incident, channel: Channel, settings: Settings
) -> Notification:
    """Send the serious-incident mail for ``incident`` and record it (sent or failed)."""
    customer = s.get_one(Organization, incident.customer_id)
    contacts = s.scalars(
        select(Contact).where(Contact.customer_id == customer.id, Contact.notify.is_(True))
    ).all()
    alerts = list(
        s.scalars(select(Alert).where(Alert.incident_id == incident.id).order_by(Alert.id))
    )
    recipients = [c.email for c in contacts]
    lang = contacts[0].language if contacts else "ja"
    message = build_message(incident, customer, alerts, recipients, settings, lang)
    note = Notification(
        customer_id=customer.id,
        incident_id=incident.id,
        channel=channel.name,
        recipients=recipients,
        subject=str(message["Subject"]),
        body=message.get_content(),
        status="failed",
        message_id=str(message["Message-ID"]),
    )
    s.add(note)
    if not recipients:
        note.error = "no contact of this customer is set to receive notifications"
        return note
    try:
        receipt = channel.send(message)
    except DeliveryError as err:
        note.error = str(err)
        return note
    note.status = "sent"
    note.sent_at = receipt.sent_at
    incident.notified_at = receipt.sent_at
    return note
