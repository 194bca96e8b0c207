"""REQ-MON-60MIN: an untold serious incident is escalated to the provider's staff in time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from otasuke.db.engine import Database
from otasuke.db.models import AuditEntry, Contact, Incident, Organization
from otasuke.demo.seed import seed_demo
from otasuke.incidents.correlate import record_detections
from otasuke.notify.channels.smtp import SmtpChannel
from otasuke.notify.escalation import escalate_overdue
from otasuke.settings import Settings
from tests.conftest import Inbox, wait_for
from tests.notify.test_incident_mail import RULE, make_event


def test_req_mon_60min_untold_incident_escalates_once_to_staff(
    sqlite_db: Database, settings: Settings, smtp_server: tuple[str, int, Inbox]
) -> None:
    host, port, inbox = smtp_server
    settings.smtp_host, settings.smtp_port = host, port
    start = datetime.now(UTC) - timedelta(minutes=5)
    with sqlite_db.session() as s:
        seed_demo(s)
        org = s.scalars(select(Organization).where(Organization.slug == "yamada-office")).one()
        s.execute(delete(Contact).where(Contact.customer_id == org.id))  # nobody to tell
        [inc] = record_detections(
            s,
            make_event(s, org, "PC-3", start),
            [RULE],
            window=timedelta(hours=1),
            notify_target=timedelta(minutes=60),
        )
        channel = SmtpChannel(settings)
        assert escalate_overdue(s, channel, settings, start + timedelta(minutes=39)) == 0
        assert escalate_overdue(s, channel, settings, start + timedelta(minutes=40)) == 1
        assert escalate_overdue(s, channel, settings, start + timedelta(minutes=45)) == 0  # once
        incident_id = inc.id
    [mail] = wait_for(lambda: list(inbox.messages))
    assert sorted(inbox.envelopes[0][1]) == [
        "admin@provider.example.jp",
        "analyst@provider.example.jp",
    ]
    assert mail["Subject"].startswith("【エスカレーション】山田会計事務所")
    body = mail.get_body().get_content()  # type: ignore[union-attr]
    assert "PC-3" in body and f"/console/incidents/{incident_id}" in body
    with sqlite_db.session() as s:
        assert s.get_one(Incident, incident_id).escalated_at is not None
        assert s.scalar(select(AuditEntry).where(AuditEntry.action == "incident.escalate"))
