"""センサー監視 (sensor health, REQ-MON-24H): a sensor that falls silent is itself an alert.

:func:`sensor_states` reads every sensor's last event, its rate over the last hour
and whether it is silent. :func:`check_sensors` (run by the worker about once a
minute, see :class:`SensorWatch`) turns silence into an incident and back:

* a sensor is **silent** when its last event is older than ``silent_after_minutes``,
  or, if it never sent anything, when it was registered longer ago than that;
* a silent sensor gets ONE open incident (family ``health:sensor-silent:<id>``,
  severity 情報 info: a quiet UTM is not a confirmed attack, but the console and the
  portal show it in red) with one alert (source ``health``); checking again while it
  stays silent changes nothing;
* when its logs flow again the incident is closed by the system, with an audit
  entry saying who closed it and when. A later silence opens a new incident.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from otasuke import audit
from otasuke.db.engine import Database
from otasuke.db.models import Alert, Incident, Organization, Sensor, StoredEvent
from otasuke.detect.detection import DetectionSource
from otasuke.i18n import _
from otasuke.notify.incident_mail import jst
from otasuke.standard.incident import Severity
from otasuke.tenancy.scope import Viewer, visible_customers

log = logging.getLogger(__name__)

HEALTH_SOURCE = DetectionSource.HEALTH.value
"""Alert.source of health alerts."""
SILENT_RULE = "sensor-silent"
RATE_WINDOW = timedelta(hours=1)


class SensorStatus(StrEnum):
    OK = "ok"  # 正常
    SILENT = "silent"  # ログが届いていません
    WAITING = "waiting"  # registered recently, no log yet

    @property
    def label(self) -> str:
        return {
            SensorStatus.OK: _("Working normally"),
            SensorStatus.SILENT: _("No logs are arriving"),
            SensorStatus.WAITING: _("Waiting for the first logs"),
        }[self]


@dataclass(frozen=True, slots=True)
class SensorState:
    """One sensor as the health check sees it."""

    sensor_id: int
    customer_id: int
    customer_slug: str
    name: str
    kind: str
    status: SensorStatus
    last_event_at: datetime | None
    silent_since: datetime | None
    """Last event, or registration if none; set only while silent."""
    silent_after_minutes: int
    event_count: int
    events_last_hour: int

    @property
    def silent(self) -> bool:
        return self.status is SensorStatus.SILENT


def status_of(sensor: Sensor, now: datetime) -> SensorStatus:
    limit = timedelta(minutes=sensor.silent_after_minutes)
    if sensor.last_event_at is not None:
        return SensorStatus.SILENT if now - sensor.last_event_at > limit else SensorStatus.OK
    return SensorStatus.SILENT if now - sensor.created_at > limit else SensorStatus.WAITING


def sensor_states(s: Session, now: datetime, *, viewer: Viewer | None = None) -> list[SensorState]:
    """Every sensor the viewer (default: the system) may see, by customer and name."""
    viewer = viewer or Viewer.system()
    rows = s.execute(
        select(Sensor, Organization.slug)
        .join(Organization, Sensor.customer_id == Organization.id)
        .where(visible_customers(viewer))
        .order_by(Organization.slug, Sensor.name)
    ).all()
    recent: dict[int | None, int] = {
        sensor_id: int(count)
        for sensor_id, count in s.execute(
            select(StoredEvent.sensor_id, func.count())
            .where(StoredEvent.received_at >= now - RATE_WINDOW)
            .group_by(StoredEvent.sensor_id)
        )
    }
    states = []
    for sensor, slug in rows:
        status = status_of(sensor, now)
        states.append(
            SensorState(
                sensor_id=sensor.id,
                customer_id=sensor.customer_id,
                customer_slug=slug,
                name=sensor.name,
                kind=sensor.kind,
                status=status,
                last_event_at=sensor.last_event_at,
                silent_since=(sensor.last_event_at or sensor.created_at)
                if status is SensorStatus.SILENT
                else None,
                silent_after_minutes=sensor.silent_after_minutes,
                event_count=sensor.event_count or 0,
                events_last_hour=recent.get(sensor.id, 0),
            )
        )
    return states


def silence_family(sensor_id: int) -> str:
    return f"{HEALTH_SOURCE}:{SILENT_RULE}:{sensor_id}"


def open_silence_incident(s: Session, state: SensorState) -> Incident | None:
    return s.scalar(
        select(Incident)
        .where(
            Incident.customer_id == state.customer_id,
            Incident.family == silence_family(state.sensor_id),
            Incident.closed.is_(False),
        )
        .order_by(Incident.id)
        .limit(1)
    )


def raise_silence(s: Session, state: SensorState, now: datetime) -> Incident:
    """Open the incident and its one alert for a silent sensor."""
    since = state.silent_since or now
    title = _("No logs are arriving from {sensor}").format(sensor=state.name)
    description = _(
        "{sensor} has sent no logs since {since} (Japan time); the limit is {minutes} "
        "minutes. Check that the device is switched on and connected to the network. "
        "If it is, call the help desk."
    ).format(sensor=state.name, since=jst(since), minutes=state.silent_after_minutes)
    incident = Incident(
        customer_id=state.customer_id,
        host=state.name[:255],
        family=silence_family(state.sensor_id),
        title=title[:500],
        severity=Severity.INFO.value,
        first_evidence_at=since,
        last_evidence_at=now,
        alert_count=1,
        created_at=now,
        updated_at=now,
    )
    s.add(incident)
    s.flush()
    s.add(
        Alert(
            customer_id=state.customer_id,
            incident_id=incident.id,
            event_id=None,
            source=HEALTH_SOURCE,
            rule_id=f"{SILENT_RULE}:{state.sensor_id}",
            rule_title=title[:500],
            level="medium",
            blocked=False,
            severity=Severity.INFO.value,
            description=description,
            matched={
                "sensor_id": state.sensor_id,
                "sensor": state.name,
                "last_event_at": state.last_event_at.isoformat() if state.last_event_at else None,
                "silent_after_minutes": state.silent_after_minutes,
            },
            host=state.name[:255],
            observed_at=now,
            created_at=now,
        )
    )
    log.warning("sensor %s (%s) is silent since %s", state.sensor_id, state.name, since)
    return incident


def clear_silence(s: Session, incident: Incident, state: SensorState, now: datetime) -> None:
    """Close the incident: the sensor's logs flow again (audited as the system)."""
    incident.closed = True
    incident.updated_at = now
    entry = audit.record(
        s,
        Viewer.system(),
        "incident.close",
        f"incident:{incident.id}",
        customer_id=incident.customer_id,
        reason="sensor logs are arriving again",
        sensor_id=state.sensor_id,
        last_event_at=state.last_event_at.isoformat() if state.last_event_at else None,
    )
    entry.at = now
    log.info(
        "sensor %s (%s) sends logs again; incident %s closed",
        state.sensor_id,
        state.name,
        incident.id,
    )


def check_sensors(s: Session, now: datetime) -> list[SensorState]:
    """Raise one incident per newly silent sensor, close those whose logs flow again.

    Idempotent: run it every minute; the caller commits.
    """
    states = sensor_states(s, now)
    for state in states:
        incident = open_silence_incident(s, state)
        if state.silent and incident is None:
            raise_silence(s, state, now)
        elif state.silent and incident is not None:
            incident.last_evidence_at = max(incident.last_evidence_at, now)
        elif not state.silent and incident is not None:
            clear_silence(s, incident, state, now)
    return states


def silent_count(states: Sequence[SensorState]) -> int:
    return sum(1 for st in states if st.silent)


class SensorWatch:
    """Runs :func:`check_sensors` at most every ``interval_seconds`` (for the worker loop)."""

    def __init__(self, db: Database, *, interval_seconds: float = 60.0) -> None:
        self.db = db
        self.interval = interval_seconds
        self._last_run = float("-inf")
        self._lock = threading.Lock()
        self.last_states: list[SensorState] = []

    def run_if_due(self, now: datetime | None = None) -> list[SensorState] | None:
        if time.monotonic() - self._last_run < self.interval or not self._lock.acquire(False):
            return None
        try:
            with self.db.session() as s:
                self.last_states = check_sensors(s, now or datetime.now(UTC))
            self._last_run = time.monotonic()
            return self.last_states
        finally:
            self._lock.release()
