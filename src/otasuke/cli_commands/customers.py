"""``otasuke customers``: the customers with slugs, plans, contracts and sensor states."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from otasuke.cli_commands import OutputFormat, open_database, out
from otasuke.db.models import Organization, Sensor
from otasuke.tenancy.admin import contract_terms
from otasuke.tenancy.scope import Viewer, list_contracts, list_customers, list_sensors


def sensor_state(sensor: Sensor, now: datetime) -> str:
    """ok, silent (nothing for longer than its threshold) or never (no event yet)."""
    if sensor.last_event_at is None:
        return "never"
    if now - sensor.last_event_at > timedelta(minutes=sensor.silent_after_minutes):
        return "silent"
    return "ok"


def customer_rows() -> list[dict[str, Any]]:
    db = open_database()
    now = datetime.now(UTC)
    viewer = Viewer.system()
    rows = []
    with db.session() as s:
        for c in list_customers(s, viewer):
            parent = s.get(Organization, c.parent_id) if c.parent_id else None
            contracts = []
            for k in list_contracts(s, viewer, c.id):
                t = contract_terms(k)
                contracts.append(
                    {
                        "id": k.id,
                        "plan": k.plan_type,
                        "monitoring": k.monitoring,
                        "initial_price_jpy": k.initial_price_jpy,
                        "monthly_price_jpy": t.monthly_price_jpy,
                        "device_count": k.device_count,
                        "minimum_term_months": k.minimum_term_months,
                        "status": k.status,
                        "start_date": k.start_date.isoformat(),
                        "device": f"{k.device_maker} {k.device_model}",
                    }
                )
            sensors = [
                {
                    "id": x.id,
                    "name": x.name,
                    "kind": x.kind,
                    "state": sensor_state(x, now),
                    "last_event_at": x.last_event_at.isoformat() if x.last_event_at else None,
                    "events": x.event_count,
                    "token_prefix": x.token_prefix,
                    "syslog_source": x.syslog_source,
                }
                for x in list_sensors(s, viewer, c.id)
            ]
            rows.append(
                {
                    "slug": c.slug,
                    "name": c.name,
                    "reseller": parent.name if parent and parent.kind == "reseller" else None,
                    "contracts": contracts,
                    "sensors": sensors,
                }
            )
    db.dispose()
    return rows


def customers_command(
    format: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
) -> None:
    """List the customers with their slugs, plans, contracts and sensor states."""
    rows = customer_rows()
    if format is OutputFormat.json:
        typer.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(title="お客様 / Customers")
    for col in ("slug", "name", "reseller", "plan", "monthly (JPY)", "devices", "sensors"):
        table.add_column(col)
    for r in rows:
        k = r["contracts"][0] if r["contracts"] else {}
        sensors = ", ".join(f"{x['name']} [{x['state']}]" for x in r["sensors"])
        table.add_row(
            r["slug"],
            r["name"],
            r["reseller"] or "-",
            f"{k.get('plan', '-')} / {k.get('monitoring', '-')}",
            f"{k.get('monthly_price_jpy', 0):,}",
            str(k.get("device_count", "-")),
            sensors,
        )
    out.print(table)
