"""``otasuke demo``: a seeded single-process instance, attack samples replayed, then served.

Idempotent: run it twice and nothing is created twice (events are
deduplicated by id). The demo data ships inside the package (CC0 / MIT
samples, see demo/data/README.md), so it works without ../shared.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from otasuke.cli_commands import open_database, out
from otasuke.cli_commands.imports import import_files, print_summary, run_pipeline
from otasuke.demo.replay import DEMO_FILES, utm_envelopes
from otasuke.demo.seed import DEMO_PASSWORD, demo_sensor, seed_demo
from otasuke.ingest.store import AcceptResult, Source, accept_lines
from otasuke.settings import get_settings


def demo_command(
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="seed and replay, do not serve")
    ] = False,
) -> None:
    """Create the demo provider, team and three customers, replay attacks, and serve."""
    started = time.monotonic()
    settings = get_settings()
    db = open_database(settings)
    with db.session() as s:
        logins, _tokens = seed_demo(s)
    accepted = AcceptResult()
    for customer, kind, files in DEMO_FILES:
        with db.session() as s:
            source = Source.of(demo_sensor(s, customer, kind))
        accepted.add(import_files(db, source, [Path(f) for f in files]))
    now = datetime.now(UTC)
    for customer in ("tokai-parts", "sakura-clinic"):
        with db.session() as s:
            source = Source.of(demo_sensor(s, customer, "fortigate"))
            accepted.add(accept_lines(s, source, utm_envelopes(customer, now)))
    result = run_pipeline(db, settings)
    print_summary(accepted, result)
    db.dispose()
    url = settings.public_url
    table = Table(title="デモのログイン / demo logins (password: " + DEMO_PASSWORD + ")")
    table.add_column("e-mail")
    table.add_column("role")
    table.add_column("organisation")
    for login in logins:
        table.add_row(login.email, login.role.value, login.organization)
    out.print(table)
    out.print(f"データ / data: {settings.data_dir}")
    if not settings.smtp_host:
        out.print(
            f"メール / mail (no SMTP configured): {settings.maildir} — also at {url}/console/mail"
        )
    out.print(f"準備完了 / ready in {time.monotonic() - started:.1f} s")
    if no_serve:
        return
    out.print(f"[bold green]提供者コンソール / provider console:[/] {url}/console")
    out.print(f"[bold green]お客様ポータル / customer portal:[/] {url}/portal")
    out.print(f"[bold green]ログイン / login:[/] {url}/login")
    from otasuke.cli_commands.serve import serve

    serve(settings)
