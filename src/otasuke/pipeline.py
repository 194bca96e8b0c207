"""The pipeline after acceptance: detect → alerts and incidents → notify.

Accepted events are stored with ``processed = false``; :func:`process_pending`
takes them in id order, records the detections and marks them processed in
the same transaction, so a crash repeats work but loses none. Notification
runs after that commit, for every serious incident not yet told.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from otasuke.db.engine import Database
from otasuke.db.models import Incident, Notification, StoredEvent
from otasuke.detect.engine import Detector
from otasuke.incidents.correlate import RecentIncidents, record_detections
from otasuke.ingest.store import mark_processed, stored_to_event
from otasuke.notify.channels import Channel
from otasuke.notify.channels.maildir import MaildirChannel
from otasuke.notify.channels.smtp import SmtpChannel
from otasuke.notify.escalation import escalate_overdue
from otasuke.notify.incident_mail import notify_incident
from otasuke.settings import Settings
from otasuke.standard.incident import Severity

RETRY_AFTER = timedelta(minutes=1)


@dataclass(slots=True)
class ProcessResult:
    events: int = 0
    alerts: int = 0
    incidents: int = 0
    notified: int = 0


def make_channel(settings: Settings) -> Channel:
    if settings.smtp_host:
        return SmtpChannel(settings)
    return MaildirChannel(settings.maildir)


class Pipeline:
    """Detection, correlation and notification for one database."""

    def __init__(
        self, db: Database, settings: Settings, detector: Detector, channel: Channel | None = None
    ) -> None:
        self.db = db
        self.settings = settings
        self.detector = detector
        self.channel = channel or make_channel(settings)

    def process_pending(
        self, batch: int = 500, on_batch: Callable[[int], None] | None = None
    ) -> ProcessResult:
        """Process accepted events until none are left; then notify."""
        result = ProcessResult()
        window = timedelta(minutes=self.settings.incident_window_minutes)
        target = timedelta(minutes=self.settings.notify_target_minutes)
        while True:
            with self.db.session() as s:
                self.detector.refresh_tunings(s)
                rows = s.scalars(
                    select(StoredEvent)
                    .where(StoredEvent.processed.is_(False))
                    .order_by(StoredEvent.id)
                    .limit(batch)
                ).all()
                if not rows:
                    break
                touched: set[int] = set()
                recent: RecentIncidents = {}
                for row in rows:
                    detections = self.detector.detect(
                        stored_to_event(row), customer=row.customer_id
                    )
                    if detections:
                        incidents = record_detections(
                            s,
                            row,
                            detections,
                            window=window,
                            notify_target=target,
                            recent=recent,
                        )
                        touched.update(i.id for i in incidents)
                        result.alerts += len(detections)
                mark_processed(s, [row.id for row in rows])
                result.events += len(rows)
                result.incidents += len(touched)
            if on_batch is not None:
                on_batch(len(rows))
        result.notified = self.notify_due()
        return result

    def notify_due(self) -> int:
        """Tell customers of serious incidents not yet notified (retrying failures after a minute)."""
        sent = 0
        now = datetime.now(UTC)
        with self.db.session() as s:
            due = s.scalars(
                select(Incident)
                .where(
                    Incident.severity == Severity.SERIOUS.value,
                    Incident.notified_at.is_(None),
                    Incident.closed.is_(False),
                )
                .order_by(Incident.notify_deadline)
            ).all()
            for incident in due:
                last = s.scalar(
                    select(func.max(Notification.created_at)).where(
                        Notification.incident_id == incident.id
                    )
                )
                if last is not None and now - last < RETRY_AFTER:
                    continue
                note = notify_incident(s, incident, self.channel, self.settings)
                s.commit()
                sent += note.status == "sent"
            escalate_overdue(s, self.channel, self.settings, now)
        return sent


def pending_count(s: Session) -> int:
    return (
        s.scalar(
            select(func.count()).select_from(StoredEvent).where(StoredEvent.processed.is_(False))
        )
        or 0
    )
