"""One module per ``otasuke`` command; shared helpers here."""

from __future__ import annotations

from enum import StrEnum

import typer
from rich.console import Console

from otasuke.db.engine import Database
from otasuke.errors import OtasukeError
from otasuke.settings import Settings, get_settings

out = Console()
err = Console(stderr=True)


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


def open_database(settings: Settings | None = None) -> Database:
    """The configured database, migrated to the newest schema."""
    settings = settings or get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.effective_database_url)
    db.migrate()
    return db


def fail(error: OtasukeError | str, code: int = 2) -> typer.Exit:
    """Print an error the user can act on and return the Exit to raise."""
    err.print(f"[bold red]エラー / error:[/] {error}")
    return typer.Exit(code)
