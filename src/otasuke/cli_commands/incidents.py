"""``otasuke incidents``: incidents with severity, step, deadline, notification and alert count."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from otasuke.cli_commands import OutputFormat, fail, open_database, out
from otasuke.errors import NotFound
from otasuke.notify.incident_mail import jst
from otasuke.standard.incident import sla_met
from otasuke.tenancy.scope import Viewer, access_customer_by_slug, list_incidents


def incident_rows(customer: str | None) -> list[dict[str, Any]]:
    db = open_database()
    viewer = Viewer.system()
    now = datetime.now(UTC)
    rows = []
    with db.session() as s:
        cid = access_customer_by_slug(s, viewer, customer).id if customer else None
        for i in list_incidents(s, viewer, customer_id=cid):
            met = (
                sla_met(i.sla_started_at, i.notified_at, now)
                if i.sla_started_at is not None
                else None
            )
            rows.append(
                {
                    "id": i.id,
                    "customer": i.customer.slug,
                    "severity": i.severity,
                    "step": i.step,
                    "closed": i.closed,
                    "host": i.host,
                    "title": i.title,
                    "family": i.family,
                    "first_evidence_at": i.first_evidence_at.isoformat(),
                    "last_evidence_at": i.last_evidence_at.isoformat(),
                    "notify_deadline": i.notify_deadline.isoformat() if i.notify_deadline else None,
                    "notified_at": i.notified_at.isoformat() if i.notified_at else None,
                    "sla_met": met,
                    "alert_count": i.alert_count,
                }
            )
    db.dispose()
    return rows


def incidents_command(
    customer: Annotated[str | None, typer.Option("--customer", "-c", help="customer slug")] = None,
    format: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
) -> None:
    """List incidents (serious first by deadline) with severity, status, deadline, notification."""
    try:
        rows = incident_rows(customer)
    except NotFound as exc:
        raise fail(exc) from None
    if format is OutputFormat.json:
        typer.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(title="インシデント / Incidents")
    for col in (
        "id",
        "customer",
        "severity",
        "step",
        "host",
        "title",
        "deadline (JST)",
        "notified (JST)",
        "SLA",
        "alerts",
    ):
        table.add_column(col)
    for r in rows:

        def t(v: str | None) -> str:
            return jst(datetime.fromisoformat(v)) if v else "-"

        sla = {True: "met", False: "MISSED", None: "-"}[r["sla_met"]]
        table.add_row(
            str(r["id"]),
            r["customer"],
            r["severity"],
            r["step"],
            r["host"] or "-",
            r["title"][:60],
            t(r["notify_deadline"]),
            t(r["notified_at"]),
            sla,
            str(r["alert_count"]),
        )
    out.print(table)
