"""The ``otasuke`` command (Typer; rich progress bars on long work)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("otasuke.cli_commands.demo", "demo_command"),
    "serve": ("otasuke.cli_commands.serve", "serve_command"),
    "import": ("otasuke.cli_commands.imports", "import_command"),
    "detect": ("otasuke.detect.command", "detect_command"),
    "customers": ("otasuke.cli_commands.customers", "customers_command"),
    "incidents": ("otasuke.cli_commands.incidents", "incidents_command"),
    "search": ("otasuke.cli_commands.search", "search_command"),
    "status": ("otasuke.cli_commands.status", "status_command"),
    "retention": ("otasuke.cli_commands.retention", "retention_command"),
    "worker": ("otasuke.cli_commands.worker", "worker_command"),
    "sensors": ("otasuke.cli_commands.sensors", "app"),
    "rules": ("otasuke.detect.rules_command", "rules_app"),
}
"""Each command: the module defining it and its function (or Typer group), imported only
when the command runs or help lists it. Importing them all (database, web app, bus,
pySigma) took ~1.3 s before any command started: ``otasuke detect`` on one file waited
longer for its imports than for its work."""


class LazyGroup(TyperGroup):
    """The ``otasuke`` group: commands looked up in :data:`COMMANDS` when asked for."""

    # Typer's own (vendored) click types are private: Any where they appear.
    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *COMMANDS]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, attribute = COMMANDS[cmd_name]
        target: Any = getattr(importlib.import_module(module), attribute)
        if isinstance(target, typer.Typer):
            command: Any = typer.main.get_group(target)
        else:
            single = typer.Typer()
            single.command(cmd_name)(target)
            command = typer.main.get_command(single)
        command.name = cmd_name
        return command


app = typer.Typer(
    cls=LazyGroup,
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


if __name__ == "__main__":  # pragma: no cover
    app()
