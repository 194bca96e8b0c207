"""``otasuke search --customer SLUG 'QUERY'``: one customer's events from the event store.

The customer is looked up through the scoping layer
(:func:`~otasuke.tenancy.scope.access_customer_by_slug`) and only that customer's
folder is searched; the query language is documented in
:mod:`otasuke.eventstore.query` and docs/operator/event-store.md.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from otasuke.cli_commands import OutputFormat, fail, open_database, out
from otasuke.errors import OtasukeError
from otasuke.eventstore import events_root, search_events
from otasuke.eventstore.search import MAX_LIMIT, SearchResult, day_range
from otasuke.i18n import _
from otasuke.notify.incident_mail import jst
from otasuke.settings import get_settings
from otasuke.tenancy.scope import Viewer, access_customer_by_slug


def _date(value: str | None, name: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise OtasukeError(f"{value!r} is not a date", field=name, hint="2026-11-01") from None


def run_search(
    customer: str, query: str, since: str | None, until: str | None, limit: int
) -> SearchResult:
    settings = get_settings()
    db = open_database(settings)
    try:
        with db.session() as s:
            slug = access_customer_by_slug(s, Viewer.system(), customer).slug
    finally:
        db.dispose()
    start, end = day_range(_date(since, "since"), _date(until, "until"))
    return search_events(events_root(settings), slug, query, since=start, until=end, limit=limit)


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    out_row = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
    out_row["fields"] = orjson.loads(row["fields"]) if row.get("fields") else {}
    return out_row


def search_command(
    customer: Annotated[str, typer.Option("--customer", "-c", help="customer slug")],
    query: Annotated[
        str, typer.Argument(help="e.g. 'user=admin srcip=203.0.113.5' or 'mimikatz'")
    ] = "",
    since: Annotated[
        str | None, typer.Option("--since", help="first day, Japan time (2026-11-01)")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="last day, Japan time (inclusive)")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=MAX_LIMIT, help="most events shown")
    ] = 100,
    format: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
) -> None:
    """Search one customer's stored events (newest first); see docs/operator/event-store.md."""
    try:
        result = run_search(customer, query, since, until, limit)
    except OtasukeError as exc:
        raise fail(exc) from None
    if format is OutputFormat.json:
        rows = [_json_row(r) for r in result.rows]
        typer.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    if not result.rows:
        out.print(_("No events found."))
        return
    table = Table(title=customer)
    for col in (_("When"), _("Device"), _("Format"), _("Record")):
        table.add_column(col)
    for r in result.rows:
        table.add_row(
            jst(r["observed_at"]),
            r["host"] or "-",
            r["source_format"],
            (r["raw"] or "")[:160],
        )
    out.print(table)
    out.print(
        _("{shown} events shown (at most {limit}); {files} files read.").format(
            shown=len(result.rows), limit=limit, files=result.files
        )
    )
