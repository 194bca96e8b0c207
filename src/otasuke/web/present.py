"""表示用の判定 (what the pages show about a thing): sensor state, SLA state, explanations.

Pure helpers over rows the scope functions already returned; no queries here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from otasuke.db.models import Alert, Contract, Incident, Sensor
from otasuke.i18n import _
from otasuke.incidents.explain import Explanation, explain
from otasuke.standard.incident import Severity
from otasuke.standard.plans import Monitoring, PlanType, monitoring_label, plan_label


def sensor_silent(sensor: Sensor, now: datetime) -> bool:
    """ログが届いていません: no event ever, or none for ``silent_after_minutes`` (REQ-MON-24H)."""
    if sensor.last_event_at is None:
        return True
    return now - sensor.last_event_at > timedelta(minutes=sensor.silent_after_minutes)


def sensor_state(sensor: Sensor, now: datetime) -> str:
    """正常 or ログが届いていません, in plain words for the customer."""
    return _("No logs are arriving") if sensor_silent(sensor, now) else _("Working normally")


@dataclass(frozen=True, slots=True)
class NotifyState:
    """通知状況 of one incident (REQ-MON-60MIN)."""

    deadline: datetime | None
    notified_at: datetime | None
    met: bool | None
    """True: told in time (SLA 達成); False: told late or overdue (超過); None: still running."""


def notify_state(incident: Incident, now: datetime) -> NotifyState:
    deadline = incident.notify_deadline
    met: bool | None = None
    if deadline is not None:
        if incident.notified_at is not None:
            met = incident.notified_at <= deadline
        elif now > deadline:
            met = False
    return NotifyState(deadline=deadline, notified_at=incident.notified_at, met=met)


def explain_incident(incident: Incident, alerts: Iterable[Alert] | None = None) -> Explanation:
    """やさしい説明 (REQ-EASY) of an incident from its own alerts."""
    alerts = list(incident.alerts if alerts is None else alerts)
    try:
        severity = Severity(incident.severity)
    except ValueError:
        severity = Severity.INFO
    return explain(
        severity, {a.source for a in alerts}, [t for a in alerts for t in a.tags], incident.title
    )


def attribution(alert: Alert) -> str:
    """DRL 1.1 attribution: "Rule: <title> — author: <author> — licence: <licence>"."""
    return _("Rule: {title} — author: {author} — licence: {licence}").format(
        title=alert.rule_title,
        author=alert.rule_author or _("unknown"),
        licence=alert.rule_licence or _("unknown"),
    )


def plan_text(contract: Contract | None) -> str:
    """1類 / 2類."""
    return plan_label(PlanType(contract.plan_type)) if contract else "—"


def monitoring_text(contract: Contract | None) -> str:
    """ネットワーク監視 / 端末監視 / 両方."""
    return monitoring_label(Monitoring(contract.monitoring)) if contract else "—"
