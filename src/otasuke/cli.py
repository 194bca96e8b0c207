"""The ``otasuke`` command (Typer; rich progress bars on long work)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from otasuke.cli_commands import (
    customers,
    demo,
    imports,
    incidents,
    retention,
    search,
    sensors,
    serve,
    status,
    worker,
)
from otasuke.detect.command import detect_command
from otasuke.detect.rules_command import rules_app

app = typer.Typer(
    name="otasuke",
    help="Otasuke: run a サイバーセキュリティお助け隊サービス — monitoring, detection, "
    "notification and the one package around it.",
    no_args_is_help=True,
    add_completion=False,
)
err = Console(stderr=True)


@app.callback()
def main(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            envvar="OTASUKE_DATA_DIR",
            help="Data folder (SQLite database, Maildir). Default: ./data",
        ),
    ] = None,
) -> None:
    """Global options."""
    if data_dir is not None:
        os.environ["OTASUKE_DATA_DIR"] = str(data_dir.resolve())
        from otasuke.settings import get_settings

        get_settings.cache_clear()


app.command("demo")(demo.demo_command)
app.command("serve")(serve.serve_command)
app.command("import")(imports.import_command)
app.command("detect")(detect_command)
app.command("customers")(customers.customers_command)
app.command("incidents")(incidents.incidents_command)
app.command("search")(search.search_command)
app.command("status")(status.status_command)
app.command("retention")(retention.retention_command)
app.command("worker")(worker.worker_command)
app.add_typer(sensors.app, name="sensors")
app.add_typer(rules_app, name="rules")

if __name__ == "__main__":  # pragma: no cover
    app()
