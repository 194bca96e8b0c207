"""``otasuke status``: the figures of ``/metrics`` for a person (REQ-MON-24H at a glance).

Per customer: every sensor with its state (正常 / ログが届いていません), the events
received today (Japan time), events waiting for detection, quarantined records
and open incidents by severity; for the whole service: the detection backlog and
the spool backlog (when a spool folder exists). With a bus (``bus_url``): whether
NATS answers (「NATS に接続できません」 when not), the stream's messages, the workers'
consumer lag and unacknowledged messages, and the spool bytes not yet published.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import orjson
import typer
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from otasuke.bus.jetstream import BusConfig, bus_figures
from otasuke.cli_commands import OutputFormat, fail, open_database, out
from otasuke.db.models import Incident, Organization, QuarantinedRecord, StoredEvent
from otasuke.errors import NotFound
from otasuke.health import SensorStatus, sensor_states
from otasuke.i18n import _
from otasuke.metrics import db_figures, spool_backlog_bytes
from otasuke.notify.incident_mail import jst
from otasuke.settings import get_settings
from otasuke.standard.incident import Severity
from otasuke.tenancy.scope import Viewer, access_customer_by_slug, list_customers

JST = ZoneInfo("Asia/Tokyo")


def today_start(now: datetime) -> datetime:
    """00:00 today in Japan, in UTC."""
    return datetime.combine(now.astimezone(JST).date(), time(0), tzinfo=JST).astimezone(UTC)


def _count(s: Session, model: Any, *where: Any) -> int:
    return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def customer_status(s: Session, customer: Organization, now: datetime) -> dict[str, Any]:
    cid = customer.id
    open_rows = s.execute(
        select(Incident.severity, func.count())
        .where(Incident.customer_id == cid, Incident.closed.is_(False))
        .group_by(Incident.severity)
    ).all()
    return {
        "slug": customer.slug,
        "name": customer.name,
        "events_today": _count(
            s,
            StoredEvent,
            StoredEvent.customer_id == cid,
            StoredEvent.received_at >= today_start(now),
        ),
        "pending": _count(
            s, StoredEvent, StoredEvent.customer_id == cid, StoredEvent.processed.is_(False)
        ),
        "quarantined": _count(s, QuarantinedRecord, QuarantinedRecord.customer_id == cid),
        "open_incidents": {str(sev): int(n) for sev, n in open_rows},
        "sensors": [],
    }


def status_data(customer: str | None, now: datetime) -> dict[str, Any]:
    settings = get_settings()
    db = open_database(settings)
    viewer = Viewer.system()
    try:
        with db.session() as s:
            if customer is not None:
                customers = [access_customer_by_slug(s, viewer, customer)]
            else:
                customers = list(list_customers(s, viewer))
            rows = {c.id: customer_status(s, c, now) for c in customers}
            for st in sensor_states(s, now, viewer=viewer):
                if st.customer_id in rows:
                    rows[st.customer_id]["sensors"].append(
                        {
                            "id": st.sensor_id,
                            "name": st.name,
                            "kind": st.kind,
                            "state": st.status.value,
                            "last_event_at": st.last_event_at.isoformat()
                            if st.last_event_at
                            else None,
                            "events_last_hour": st.events_last_hour,
                            "silent_after_minutes": st.silent_after_minutes,
                        }
                    )
            figures = db_figures(s, now)
    finally:
        db.dispose()
    spool_dir = getattr(settings, "spool_dir", None) or settings.data_dir / "spool"
    return {
        "at": now.isoformat(),
        "customers": list(rows.values()),
        "pending_events": figures.pending_events,
        "pending_oldest_seconds": round(figures.pending_oldest_seconds, 1),
        "sensors_silent": figures.sensors_silent,
        "notify_overdue": figures.notify_overdue,
        "spool_backlog_bytes": spool_backlog_bytes(Path(spool_dir)),
        "bus": bus_status(settings),
    }


def bus_status(settings: Any) -> dict[str, Any] | None:
    """JetStream's figures when a bus is configured (None without one); never fails."""
    if not getattr(settings, "bus_url", None):
        return None
    config = BusConfig.from_settings(settings)
    data = bus_figures(config).to_dict()
    data["servers"] = list(config.servers)
    return data


def print_bus(table: Table, bus: dict[str, Any], spool_bytes: int | None) -> None:
    """NATS rows of the summary: reachable or not, stream size, consumer lag, unpublished."""
    servers = ", ".join(bus["servers"])
    if not bus["up"]:
        table.add_row("NATS", f"[bold red]{_('Cannot connect to NATS')}[/] ({servers})")
        table.add_row("", str(bus["error"]))
    else:
        table.add_row("NATS", f"[green]{_('Connected')}[/] ({servers})")
        if bus["stream_exists"]:
            table.add_row(
                _("Messages in the stream {stream}").format(stream=bus["stream"]),
                _("{messages} ({size} bytes)").format(
                    messages=bus["stream_messages"], size=bus["stream_bytes"]
                ),
            )
        else:
            table.add_row(_("Stream {stream}").format(stream=bus["stream"]), _("not created yet"))
        if bus["consumer_exists"]:
            lag = bus["consumer_pending"]
            table.add_row(
                _("Consumer lag (not yet delivered to a worker)"),
                f"[yellow]{lag}[/]" if lag else "0",
            )
            table.add_row(_("Delivered, not yet acknowledged"), str(bus["consumer_ack_pending"]))
        else:
            table.add_row(
                _("Consumer {consumer}").format(consumer=bus["consumer"]), _("not created yet")
            )
    if spool_bytes is not None:
        table.add_row(_("Not yet published to NATS"), _("{size} bytes").format(size=spool_bytes))


def _state_text(state: str) -> str:
    status = SensorStatus(state)
    colour = {SensorStatus.OK: "green", SensorStatus.SILENT: "bold red"}.get(status, "yellow")
    return f"[{colour}]{status.label}[/]"


def _incidents_text(counts: dict[str, int]) -> str:
    parts = [f"{sev.label} {counts[sev.value]}" for sev in Severity if counts.get(sev.value)]
    return ", ".join(parts) or "0"


def print_status(data: dict[str, Any]) -> None:
    at = jst(datetime.fromisoformat(data["at"]))
    summary = Table(title=_("Otasuke status") + f" ({at})", show_header=False)
    summary.add_column()
    summary.add_column(justify="right")
    summary.add_row(_("Waiting for detection"), str(data["pending_events"]))
    summary.add_row(
        _("Oldest waiting event"),
        _("{seconds} s").format(seconds=data["pending_oldest_seconds"]),
    )
    if data["spool_backlog_bytes"] is not None and data.get("bus") is None:
        summary.add_row(
            _("Spool backlog"), _("{size} bytes").format(size=data["spool_backlog_bytes"])
        )
    if data.get("bus") is not None:
        print_bus(summary, data["bus"], data["spool_backlog_bytes"])
    silent = data["sensors_silent"]
    summary.add_row(_("Silent sensors"), f"[bold red]{silent}[/]" if silent else "0")
    overdue = data["notify_overdue"]
    summary.add_row(_("Overdue notifications"), f"[bold red]{overdue}[/]" if overdue else "0")
    out.print(summary)
    if not data["customers"]:
        out.print(_("No customers yet."))
        return
    customers = Table(title=_("Customers"))
    for col in (
        _("Customer"),
        _("Events today"),
        _("Waiting for detection"),
        _("Quarantined"),
        _("Open incidents"),
    ):
        customers.add_column(col)
    sensors = Table(title=_("Sensors"))
    for col in (_("Customer"), _("Sensors"), _("State"), _("Last log"), _("Logs in the last hour")):
        sensors.add_column(col)
    for c in data["customers"]:
        customers.add_row(
            c["slug"],
            str(c["events_today"]),
            str(c["pending"]),
            str(c["quarantined"]),
            _incidents_text(c["open_incidents"]),
        )
        for x in c["sensors"]:
            last = x["last_event_at"]
            sensors.add_row(
                c["slug"],
                x["name"],
                _state_text(x["state"]),
                jst(datetime.fromisoformat(last)) if last else _("never"),
                str(x["events_last_hour"]),
            )
    out.print(customers)
    out.print(sensors)


def status_command(
    customer: Annotated[str | None, typer.Option("--customer", "-c", help="customer slug")] = None,
    format: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
) -> None:
    """Show sensors (正常 / ログが届いていません), events today, backlogs and open incidents."""
    try:
        data = status_data(customer, datetime.now(UTC))
    except NotFound as exc:
        raise fail(exc) from None
    if format is OutputFormat.json:
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    print_status(data)
