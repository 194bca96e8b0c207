"""``otasuke retention``: delete event-store days older than each customer's retention.

Run it daily (cron or a systemd timer). The retention is the contract's
``event_retention_days`` once contracts carry it, else the setting
``event_retention_days``, else 90 days; ``--days`` overrides all of them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.progress import Progress

from otasuke.cli_commands import fail, open_database, out
from otasuke.errors import OtasukeError
from otasuke.eventstore import enforce_retention, events_root, retention_days
from otasuke.eventstore.layout import partitions
from otasuke.i18n import _
from otasuke.settings import get_settings
from otasuke.tenancy.scope import Viewer, list_contracts, list_customers


def retention_command(
    days: Annotated[
        int | None, typer.Option("--days", min=1, help="keep this many days for every customer")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="only show what would be deleted")
    ] = False,
) -> None:
    """Delete stored events older than the retention (default 90 days), customer by customer."""
    settings = get_settings()
    root = events_root(settings)
    db = open_database(settings)
    plan: list[tuple[str, int]] = []
    try:
        with db.session() as s:
            viewer = Viewer.system()
            for customer in list_customers(s, viewer):
                contracts = list_contracts(s, viewer, customer.id)
                keep = days or retention_days(settings, contracts[0] if contracts else None)
                plan.append((customer.slug, keep))
    finally:
        db.dispose()
    today = datetime.now(UTC).date()
    total = sum(len(partitions(root, slug)) for slug, _keep in plan)
    results = []
    try:
        with Progress(console=out, transient=True) as progress:
            task = progress.add_task(_("Deleting event days older than the retention"), total=total)
            for slug, keep in plan:
                results.append(
                    enforce_retention(
                        root,
                        slug,
                        keep,
                        today=today,
                        dry_run=dry_run,
                        on_partition=lambda _day, _old: progress.advance(task),
                    )
                )
    except OtasukeError as exc:
        raise fail(exc) from None
    for r in results:
        out.print(
            _("{customer}: {deleted} days deleted, {kept} kept ({size} bytes freed)").format(
                customer=r.slug,
                deleted=len(r.deleted),
                kept=r.kept,
                size=r.deleted_bytes,
            )
        )
    if dry_run:
        out.print(_("Nothing was deleted (dry run)."))
