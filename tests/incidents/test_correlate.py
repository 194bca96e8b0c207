"""Alerts into incidents: per customer, host, rule family and time window (REQ-MON-60MIN)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from otasuke.db.engine import Database
from otasuke.db.models import Incident, Organization, StoredEvent
from otasuke.demo.seed import seed_demo
from otasuke.detect.detection import Detection, DetectionSource
from otasuke.incidents.correlate import record_detections, sla_start

T0 = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
MIMIKATZ = Detection(
    source=DetectionSource.SIGMA,
    rule_id="a",
    title="Mimikatz Execution",
    level="high",
    tags=("attack.credential-access", "attack.execution"),
)
LSASS = Detection(
    source=DetectionSource.SIGMA,
    rule_id="b",
    title="LSASS Access",
    level="high",
    tags=("attack.credential-access",),
)
BLOCKED = Detection(
    source=DetectionSource.FORTIGATE,
    rule_id="43181",
    title="RDP brute force",
    level="high",
    blocked=True,
)
WINDOW, TARGET = timedelta(hours=1), timedelta(minutes=60)


def event(s: object, org: Organization, host: str, at: datetime, n: int) -> StoredEvent:
    ev = StoredEvent(
        customer_id=org.id,
        event_uid=f"{org.slug}-{n}",
        source_format="evtx",
        observed_at=at,
        received_at=at + timedelta(seconds=5),
        host=host,
        fields={},
        raw="",
    )
    s.add(ev)  # type: ignore[attr-defined]
    s.flush()  # type: ignore[attr-defined]
    return ev


def test_grouping_by_customer_host_family_window(any_db: Database) -> None:
    with any_db.session() as s:
        seed_demo(s)
        orgs = {o.slug: o for o in s.scalars(select(Organization))}
        tokai, sakura = orgs["tokai-parts"], orgs["sakura-clinic"]
        record_detections(
            s, event(s, tokai, "PC1", T0, 1), [MIMIKATZ, LSASS], window=WINDOW, notify_target=TARGET
        )
        record_detections(
            s,
            event(s, tokai, "PC1", T0 + timedelta(minutes=50), 2),
            [LSASS],
            window=WINDOW,
            notify_target=TARGET,
        )
        record_detections(
            s, event(s, tokai, "PC2", T0, 3), [LSASS], window=WINDOW, notify_target=TARGET
        )
        record_detections(
            s, event(s, sakura, "PC1", T0, 4), [LSASS], window=WINDOW, notify_target=TARGET
        )
        record_detections(
            s,
            event(s, tokai, "PC1", T0 + timedelta(hours=3), 5),
            [LSASS],
            window=WINDOW,
            notify_target=TARGET,
        )
        record_detections(
            s, event(s, tokai, "FG", T0, 6), [BLOCKED], window=WINDOW, notify_target=TARGET
        )
    with any_db.session() as s:
        rows = [
            (i.customer.slug, i.host, i.alert_count, i.severity)
            for i in s.scalars(select(Incident).order_by(Incident.id))
        ]
        assert rows == [
            ("tokai-parts", "PC1", 3, "serious"),
            ("tokai-parts", "PC2", 1, "serious"),
            ("sakura-clinic", "PC1", 1, "serious"),
            ("tokai-parts", "PC1", 1, "serious"),
            ("tokai-parts", "FG", 1, "defended"),
        ]
        first = s.scalars(select(Incident).order_by(Incident.id)).first()
        assert first is not None and first.notify_deadline == T0 + TARGET
        defended = s.scalars(select(Incident).where(Incident.severity == "defended")).one()
        assert defended.notify_deadline is None


def test_sla_clock_starts_at_first_evidence_or_late_arrival() -> None:
    assert sla_start(T0, T0 + timedelta(minutes=3)) == T0
    late = T0 + timedelta(days=2)
    assert sla_start(T0, late) == late
