"""Search one customer's events with DuckDB (調査用検索), and nobody else's.

Tenant scoping is done three times over:

1. the folder is built from the customer's slug, which the caller got from
   :func:`~otasuke.tenancy.scope.access_customer_by_slug` (checked against
   :data:`~otasuke.eventstore.layout.SLUG` again here);
2. the user's query is compiled by :mod:`otasuke.eventstore.query` into a WHERE
   clause with bound parameters: it cannot name a table, a function or a file;
3. DuckDB runs with ``allowed_directories`` set to that one folder,
   ``enable_external_access=false``, extension loading off and the configuration
   locked, so even SQL we did not mean to run could read no other file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import duckdb

from otasuke.eventstore.layout import EventStoreError, customer_dir, partitions
from otasuke.eventstore.query import JST, compile_query
from otasuke.eventstore.writer import COLUMNS
from otasuke.i18n import _

MAX_LIMIT = 10_000
SHOWN = ("observed_at", "host", "source_format", "sensor_id", "event_uid", "fields", "raw")


@dataclass(frozen=True, slots=True)
class SearchResult:
    columns: tuple[str, ...]
    rows: list[dict[str, Any]]
    files: int
    """Parquet files the search read (after skipping days before ``since``)."""


def jst_day_start(day: date) -> datetime:
    """00:00 Japan time of ``day``, in UTC (dates given by people are Japanese dates)."""
    return datetime.combine(day, time(0), tzinfo=JST).astimezone(UTC)


def _files(root: Path, slug: str, since: datetime | None, until: datetime | None) -> list[Path]:
    base = customer_dir(root, slug).resolve()
    found = []
    for day, path in partitions(root, slug):
        if since is not None and day < since.astimezone(UTC).date():
            continue
        if until is not None and day > until.astimezone(UTC).date():
            continue
        for f in sorted(path.glob("*.parquet")):
            if f.is_file() and f.resolve().is_relative_to(base):  # no symlink leads out
                found.append(f.resolve())
    return found


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect(folder: Path, files: list[Path]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that can read ``files`` (all inside ``folder``) and nothing else."""
    con = duckdb.connect(
        ":memory:",
        config={
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "threads": 2,
        },
    )
    con.execute(f"SET allowed_directories=[{_sql_literal(str(folder.resolve()) + '/')}]")
    con.execute("SET enable_external_access=false")
    listed = ", ".join(_sql_literal(str(f)) for f in files)
    # Exported twice after a crash? The same event is shown once (first received).
    con.execute(
        "CREATE TEMP VIEW events AS SELECT * EXCLUDE (dedupe_rank) FROM ("
        " SELECT *, row_number() OVER (PARTITION BY event_uid ORDER BY received_at, id)"
        " AS dedupe_rank"
        f" FROM read_parquet([{listed}], union_by_name=true)) WHERE dedupe_rank = 1"
    )
    con.execute("SET lock_configuration=true")
    return con


def _where(query: str, since: datetime | None, until: datetime | None) -> tuple[str, list[Any]]:
    """The compiled query and the time window as one WHERE clause with its parameters."""
    where = compile_query(query)
    sql = f"({where.sql})"
    params: list[Any] = list(where.params)
    if since is not None:
        sql += " AND observed_at >= ?"
        params.append(since)
    if until is not None:
        sql += " AND observed_at < ?"
        params.append(until)
    return sql, params


def _run(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> duckdb.DuckDBPyConnection:
    try:
        return con.execute(sql, params)
    except duckdb.Error as err:
        raise EventStoreError(
            _("the search could not run: {error}").format(error=err),
            field="query",
            hint=_("see otasuke search --help"),
        ) from None


def search_events(
    root: Path,
    slug: str,
    query: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
) -> SearchResult:
    """Events of the customer ``slug`` matching ``query``, newest first (at most ``limit``)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise EventStoreError(_("limit must be 1 to {most}").format(most=MAX_LIMIT), field="limit")
    where, params = _where(query, since, until)
    folder = customer_dir(root, slug)
    files = _files(root, slug, since, until)
    if not files:
        return SearchResult(COLUMNS, [], 0)
    sql = f"SELECT {', '.join(COLUMNS)} FROM events WHERE {where}"
    sql += " ORDER BY observed_at DESC, event_uid LIMIT ?"
    params.append(limit)
    con = connect(folder, files)
    try:
        cursor = _run(con, sql, params)
        names = tuple(d[0] for d in cursor.description or ())
        rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    finally:
        con.close()
    for row in rows:
        for key in ("observed_at", "received_at"):
            if isinstance(row.get(key), datetime):
                row[key] = row[key].astimezone(UTC)
    return SearchResult(names, rows, len(files))


@dataclass(frozen=True, slots=True)
class HitCounts:
    """How many events match, and how many per hour or per Japanese day (oldest first)."""

    total: int
    bucket_seconds: int
    """3600 (per hour) or 86400 (per day, days starting at 00:00 Japan time)."""
    buckets: list[tuple[datetime, int]]
    """Start of each bucket that has hits (UTC) and its count."""


HOUR, DAY = 3600, 86400
HOURLY_UP_TO = timedelta(days=2)
"""Hits spread over at most this long are counted per hour, longer spans per day."""
JST_OFFSET = 9 * 3600


def count_hits(
    root: Path,
    slug: str,
    query: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> HitCounts:
    """All events of ``slug`` matching ``query`` counted, over time (for a chart beside
    :func:`search_events`, which shows at most ``limit`` of them)."""
    where, params = _where(query, since, until)
    folder = customer_dir(root, slug)
    files = _files(root, slug, since, until)
    if not files:
        return HitCounts(0, HOUR, [])
    con = connect(folder, files)
    try:
        total, first, last = _run(
            con,
            f"SELECT count(*), min(epoch(observed_at)), max(epoch(observed_at))"
            f" FROM events WHERE {where}",
            params,
        ).fetchall()[0]
        if not total:
            return HitCounts(0, HOUR, [])
        size = HOUR if last - first <= HOURLY_UP_TO.total_seconds() else DAY
        # Whole seconds since the epoch, shifted to Japan time, cut into buckets.
        bucket = f"floor((epoch(observed_at) + {JST_OFFSET}) / {size})"
        rows = _run(
            con,
            f"SELECT {bucket} AS b, count(*) FROM events WHERE {where} GROUP BY b ORDER BY b",
            params,
        ).fetchall()
    finally:
        con.close()
    buckets = [(datetime.fromtimestamp(int(b) * size - JST_OFFSET, UTC), int(n)) for b, n in rows]
    return HitCounts(int(total), size, buckets)


def day_range(since: date | None, until: date | None) -> tuple[datetime | None, datetime | None]:
    """Japanese dates given on the command line → UTC instants (``until`` inclusive)."""
    start = jst_day_start(since) if since else None
    end = jst_day_start(until) + timedelta(days=1) if until else None
    return start, end
