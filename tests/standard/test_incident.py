"""REQ-MON-60MIN, REQ-MON-WEEKLY, REQ-IR-STEPS: severity table, deadline, the five steps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from otasuke.standard.incident import IRStep, Severity, notify_deadline, severity_of, sla_met, worst

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def test_severity_table() -> None:
    assert severity_of("critical", blocked=False) is Severity.SERIOUS
    assert severity_of("high", blocked=False) is Severity.SERIOUS
    assert severity_of("medium", blocked=False) is Severity.INFO
    assert severity_of("critical", blocked=True) is Severity.DEFENDED
    assert worst(Severity.INFO, Severity.SERIOUS) is Severity.SERIOUS
    assert worst(Severity.DEFENDED, Severity.INFO) is Severity.DEFENDED


def test_req_mon_60min_deadline_and_sla() -> None:
    assert notify_deadline(T0) == T0 + timedelta(minutes=60)
    assert sla_met(T0, T0 + timedelta(minutes=60), T0) is True
    assert sla_met(T0, T0 + timedelta(minutes=61), T0) is False
    assert sla_met(T0, None, T0 + timedelta(minutes=30)) is None
    assert sla_met(T0, None, T0 + timedelta(minutes=61)) is False


def test_req_ir_steps_in_order() -> None:
    steps = [IRStep.DISCOVERY]
    while (nxt := steps[-1].next) is not None:
        steps.append(nxt)
    assert [s.value for s in steps] == [
        "discovery",
        "first_response",
        "investigation",
        "recovery",
        "final_report",
    ]
