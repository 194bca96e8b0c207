"""Incident severity, the SLA clock and the five steps (REQ-MON-60MIN, REQ-MON-WEEKLY, REQ-IR-STEPS).

Severity of an incident (one documented table, used everywhere):

==============================================  =================================
what was detected                               severity
==============================================  =================================
anything the customer's device already blocked  防御済み DEFENDED (weekly report)
level critical or high, not blocked             重大 SERIOUS (tell the customer now)
level medium, low or informational              情報 INFO (weekly report)
==============================================  =================================

An incident's severity is the highest of its detections' (SERIOUS > DEFENDED > INFO).
A serious incident must be notified within 60 minutes of its first evidence.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from otasuke.i18n import _

NOTIFY_TARGET = timedelta(minutes=60)
"""REQ-MON-60MIN: 即時 (目標60分以内)."""


class Severity(StrEnum):
    SERIOUS = "serious"  # 重大: notify now
    DEFENDED = "defended"  # 防御済み: handled by the defence, weekly report
    INFO = "info"  # 情報: informational, weekly report

    @property
    def rank(self) -> int:
        return {Severity.SERIOUS: 3, Severity.DEFENDED: 2, Severity.INFO: 1}[self]

    @property
    def label(self) -> str:
        return {
            Severity.SERIOUS: _("Serious"),
            Severity.DEFENDED: _("Blocked by defence"),
            Severity.INFO: _("Informational"),
        }[self]


class IRStep(StrEnum):
    """REQ-IR-STEPS: 発見報告 → 初動 → 調査・対応 → 復旧 → 最終報告."""

    DISCOVERY = "discovery"  # 発見報告
    FIRST_RESPONSE = "first_response"  # 初動
    INVESTIGATION = "investigation"  # 調査・対応
    RECOVERY = "recovery"  # 復旧
    FINAL_REPORT = "final_report"  # 最終報告

    @property
    def label(self) -> str:
        return {
            IRStep.DISCOVERY: _("Discovery report"),
            IRStep.FIRST_RESPONSE: _("First response"),
            IRStep.INVESTIGATION: _("Investigation and response"),
            IRStep.RECOVERY: _("Recovery"),
            IRStep.FINAL_REPORT: _("Final report"),
        }[self]

    @property
    def next(self) -> IRStep | None:
        steps = list(IRStep)
        i = steps.index(self)
        return steps[i + 1] if i + 1 < len(steps) else None


def severity_of(level: str, blocked: bool) -> Severity:
    """The table above for one detection: Sigma level and whether the device blocked it."""
    if blocked:
        return Severity.DEFENDED
    if level in ("critical", "high"):
        return Severity.SERIOUS
    return Severity.INFO


def worst(a: Severity, b: Severity) -> Severity:
    return a if a.rank >= b.rank else b


def notify_deadline(first_evidence: datetime, target: timedelta = NOTIFY_TARGET) -> datetime:
    """通知期限: first evidence + the target (60 minutes by the standard)."""
    return first_evidence + target


def sla_met(
    first_evidence: datetime,
    notified_at: datetime | None,
    now: datetime,
    target: timedelta = NOTIFY_TARGET,
) -> bool | None:
    """True if told in time, False if the deadline passed untold or told late, None while open."""
    deadline = notify_deadline(first_evidence, target)
    if notified_at is not None:
        return notified_at <= deadline
    return False if now > deadline else None
