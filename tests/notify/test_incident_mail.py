"""REQ-MON-60MIN: the customer is told in plain Japanese over real SMTP; one mail, one customer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from otasuke.db.engine import Database
from otasuke.db.models import Incident, Notification, Organization, StoredEvent
from otasuke.demo.seed import seed_demo
from otasuke.detect.detection import Detection, DetectionSource
from otasuke.incidents.correlate import record_detections
from otasuke.notify.channels.smtp import SmtpChannel
from otasuke.notify.incident_mail import notify_incident
from otasuke.settings import Settings
from tests.conftest import Inbox, wait_for

RULE = Detection(
    source=DetectionSource.SIGMA,
    rule_id="0d894093-71bc-43c3-8c4d-ecfa28dcf5a9",
    title="LSASS Memory Dump",
    level="high",
    author="Florian Roth (Nextron Systems)",
    licence="DRL-1.1",
    licence_url="https://example.org/drl",
    tags=("attack.credential-access", "attack.t1003.001"),
)


def make_event(s: object, customer: Organization, host: str, when: datetime) -> StoredEvent:
    ev = StoredEvent(
        customer_id=customer.id,
        event_uid=f"{customer.slug}-{host}-{when}",
        source_format="evtx",
        observed_at=when,
        received_at=when,
        host=host,
        fields={"EventID": 10},
        raw="{}",
    )
    s.add(ev)  # type: ignore[attr-defined]
    s.flush()  # type: ignore[attr-defined]
    return ev


def test_req_mon_60min_serious_mail_reaches_only_its_customer(
    sqlite_db: Database, settings: Settings, smtp_server: tuple[str, int, Inbox]
) -> None:
    host, port, inbox = smtp_server
    settings.smtp_host, settings.smtp_port = host, port
    now = datetime.now(UTC)
    with sqlite_db.session() as s:
        seed_demo(s)
        orgs = {o.slug: o for o in s.scalars(select(Organization))}
        # Same rule, same host name, same minute, two customers: never one incident or mail.
        for slug in ("tokai-parts", "sakura-clinic"):
            ev = make_event(s, orgs[slug], "PC-01", now - timedelta(minutes=3))
            [inc] = record_detections(
                s, ev, [RULE], window=timedelta(hours=1), notify_target=timedelta(minutes=60)
            )
            assert inc.notify_deadline == ev.observed_at + timedelta(minutes=60)
    with sqlite_db.session() as s:
        incidents = s.scalars(select(Incident).order_by(Incident.id)).all()
        assert len(incidents) == 2
        channel = SmtpChannel(settings)
        for inc in incidents:
            note = notify_incident(s, inc, channel, settings)
            assert note.status == "sent", note.error
    wait_for(lambda: len(inbox.messages) == 2)
    tokai, _sakura = inbox.messages
    assert inbox.envelopes[0][1] == ["suzuki@tokai-parts.example.jp"]
    assert inbox.envelopes[1][1] == ["office@sakura-clinic.example.jp"]
    assert tokai["Subject"].startswith("【重大】東海精密部品株式会社")
    body = tokai.get_body().get_content()  # type: ignore[union-attr]
    assert "PC-01" in body
    assert "パスワード" in body  # plain words for credential access, not the rule title alone
    assert "ケーブル" in body  # what to do now: unplug the network cable
    assert "0120-000-000" in body  # how to reach the desk
    assert "Florian Roth" in body  # DRL 1.1: the rule's author on every alert
    assert "さくら" not in body
    with sqlite_db.session() as s:
        for inc in s.scalars(select(Incident)):
            assert inc.notified_at is not None and inc.notified_at <= inc.notify_deadline  # type: ignore[operator]
        assert len(s.scalars(select(Notification)).all()) == 2


def test_failed_delivery_is_recorded_not_lost(sqlite_db: Database, settings: Settings) -> None:
    from tests.conftest import free_port

    settings.smtp_host, settings.smtp_port = "127.0.0.1", free_port()  # nobody listens
    now = datetime.now(UTC)
    with sqlite_db.session() as s:
        seed_demo(s)
        org = s.scalars(select(Organization).where(Organization.slug == "yamada-office")).one()
        [inc] = record_detections(
            s,
            make_event(s, org, "PC-9", now),
            [RULE],
            window=timedelta(hours=1),
            notify_target=timedelta(minutes=60),
        )
        note = notify_incident(s, inc, SmtpChannel(settings), settings)
        assert note.status == "failed" and note.error and "SMTP" in note.error
        assert inc.notified_at is None
