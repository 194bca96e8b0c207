"""Group alerts into incidents (REQ-MON-60MIN, REQ-IR-STEPS).

Alerts join one incident when they share the customer, the host and the rule
family (detector + rule) and the new evidence is within the window of the
incident's last evidence. A customer's alerts never join another customer's
incident: the customer is part of every key.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from otasuke.db.models import Alert, Incident, StoredEvent
from otasuke.detect.detection import Detection, DetectionSource
from otasuke.incidents.explain import primary_tactic
from otasuke.standard.incident import Severity, notify_deadline, severity_of, worst

LATE_EVIDENCE = timedelta(minutes=10)
"""Evidence arriving later than this after it happened starts the clock on arrival."""


def sla_start(observed_at: datetime, received_at: datetime) -> datetime:
    """REQ-MON-60MIN clock start: the first evidence, not the time of correlation.

    Evidence that reached us more than LATE_EVIDENCE after it happened (a file
    imported days later, a sensor's backlog) starts the clock when it arrived:
    nobody could have told the customer before that.
    """
    if received_at - observed_at <= LATE_EVIDENCE:
        return min(observed_at, received_at)
    return received_at


def family_of(d: Detection) -> str:
    """Rule family (grouping key): what kind of attack, not which of many rules saw it.

    Sigma: the main ATT&CK tactic (a Mimikatz run fires several credential-access
    rules at once: one incident, one mail); Suricata: the signature's category;
    otherwise the detector and rule.
    """
    if d.source is DetectionSource.SIGMA and (tactic := primary_tactic(d.tags)):
        return f"sigma:{tactic}"
    if d.source is DetectionSource.SURICATA and (category := d.matched.get("alert.category")):
        return f"suricata:{category}"[:300]
    return f"{d.source.value}:{d.rule_id}"[:300]


RecentIncidents = dict[tuple[int, str, str | None], Incident]


def _in_window(incident: Incident, observed_at: datetime, window: timedelta) -> bool:
    return (
        not incident.closed
        and incident.last_evidence_at >= observed_at - window
        and incident.first_evidence_at <= observed_at + window
    )


def _open_incident(
    s: Session, event: StoredEvent, family: str, window: timedelta
) -> Incident | None:
    return s.scalar(
        select(Incident)
        .where(
            Incident.customer_id == event.customer_id,
            Incident.family == family,
            Incident.host.is_(None) if event.host is None else Incident.host == event.host,
            Incident.closed.is_(False),
            Incident.last_evidence_at >= event.observed_at - window,
            Incident.first_evidence_at <= event.observed_at + window,
        )
        .order_by(Incident.id.desc())
        .limit(1)
    )


def record_detections(
    s: Session,
    event: StoredEvent,
    detections: list[Detection],
    *,
    window: timedelta,
    notify_target: timedelta,
    recent: RecentIncidents | None = None,
) -> list[Incident]:
    """Turn one event's detections into alerts on (new or open) incidents; return those touched.

    ``recent``: the incidents this transaction already touched, by grouping key, so a batch
    of events does not ask the database again for the incident it just created or joined.
    """
    touched: dict[int, Incident] = {}
    for d in detections:
        severity = severity_of(d.level, d.blocked)
        family = family_of(d)
        key = (event.customer_id, family, event.host)
        incident = recent.get(key) if recent is not None else None
        if incident is None or not _in_window(incident, event.observed_at, window):
            incident = _open_incident(s, event, family, window)
        now = datetime.now(UTC)
        if incident is None:
            incident = Incident(
                customer_id=event.customer_id,
                host=event.host,
                family=family,
                title=d.title[:500],
                severity=severity.value,
                first_evidence_at=event.observed_at,
                last_evidence_at=event.observed_at,
                alert_count=0,
                created_at=now,
                updated_at=now,
            )
            s.add(incident)
            s.flush()
        else:
            incident.first_evidence_at = min(incident.first_evidence_at, event.observed_at)
            incident.last_evidence_at = max(incident.last_evidence_at, event.observed_at)
            incident.severity = worst(Severity(incident.severity), severity).value
            incident.updated_at = now
        if incident.severity == Severity.SERIOUS.value and incident.sla_started_at is None:
            incident.sla_started_at = sla_start(event.observed_at, event.received_at or now)
            incident.notify_deadline = notify_deadline(incident.sla_started_at, notify_target)
        incident.alert_count = (incident.alert_count or 0) + 1
        s.add(
            Alert(
                customer_id=event.customer_id,
                incident_id=incident.id,
                event_id=event.id,
                source=d.source.value,
                rule_id=d.rule_id[:300],
                rule_title=d.title[:500],
                level=d.level,
                blocked=d.blocked,
                severity=severity.value,
                rule_author=d.author,
                rule_licence=d.licence,
                rule_licence_url=d.licence_url,
                rule_url=d.rule_url,
                description=d.description,
                references=list(d.references),
                tags=list(d.tags),
                matched=dict(d.matched),
                host=event.host,
                observed_at=event.observed_at,
                created_at=now,
            )
        )
        touched[incident.id] = incident
        if recent is not None:
            recent[key] = incident
    return list(touched.values())
