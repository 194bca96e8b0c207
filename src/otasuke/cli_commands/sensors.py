"""``otasuke sensors``: register a sensor (its ingest token is printed once) and list them."""

from __future__ import annotations

from typing import Annotated

import typer

from otasuke.cli_commands import fail, open_database, out
from otasuke.errors import OtasukeError
from otasuke.tenancy import admin
from otasuke.tenancy.scope import Viewer, access_customer_by_slug

app = typer.Typer(help="Sensors: the UTMs, IDSs and PCs that send logs.", no_args_is_help=True)


@app.command("add")
def add(
    customer: Annotated[str, typer.Option("--customer", "-c", help="customer slug")],
    kind: Annotated[str, typer.Option("--kind", help=", ".join(admin.SENSOR_KINDS))],
    name: Annotated[str, typer.Option("--name", help="a name the customer recognises")],
    timezone: Annotated[str, typer.Option("--timezone", help="device clock zone")] = "Asia/Tokyo",
    syslog_source: Annotated[
        str | None,
        typer.Option("--syslog-source", help="IP address the device sends syslog from"),
    ] = None,
) -> None:
    """Register a sensor and print its ingest token (shown only this once)."""
    db = open_database()
    try:
        with db.session() as s:
            viewer = Viewer(
                user_id=None, email="cli", role=None, organization_id=None, provider_id=None
            )
            org = access_customer_by_slug(s, viewer, customer)
            sensor, token = admin.add_sensor(
                s,
                viewer,
                org,
                kind=kind,
                name=name,
                timezone=timezone,
                syslog_source=syslog_source,
            )
            sensor_id = sensor.id
    except OtasukeError as exc:
        raise fail(exc) from None
    out.print(f"sensor {sensor_id} registered for {customer}: {name} ({kind})")
    out.print("ingest token (shown once; store it in the sensor's configuration):")
    typer.echo(token)
