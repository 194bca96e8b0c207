"""イベント検索 (event search) of one customer in the console (issue 5 point 6).

The same search as ``otasuke search``: the query language of
:mod:`otasuke.eventstore.query`, run by :func:`otasuke.eventstore.search.search_events`
on the customer's own folder of the Parquet event store only. The customer is
looked up through :func:`~otasuke.tenancy.scope.access_customer_by_slug` with the
same permission as the customer page (REQ-TEAM): another tenant's customer answers
404, like an absent one. The form is a GET (nothing changes, so no CSRF token).

Events reach the store when the worker's exporter has copied them
(:class:`~otasuke.eventstore.export.EventExporter`): after detection processed them,
once they are a minute old, every ``event_export_interval_seconds``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from otasuke.errors import OtasukeError
from otasuke.eventstore import events_root
from otasuke.eventstore.layout import partitions
from otasuke.eventstore.search import (
    DAY,
    HitCounts,
    count_hits,
    day_range,
    search_events,
)
from otasuke.i18n import _
from otasuke.tenancy.roles import Permission
from otasuke.tenancy.scope import access_customer_by_slug
from otasuke.web.deps import CurrentUser, DbSession, needs
from otasuke.web.render import JST, render

router = APIRouter(include_in_schema=False)
CustomerViewer = Annotated[CurrentUser, Depends(needs(Permission.VIEW_CUSTOMERS))]

PAGE_LIMIT = 1000
"""Most events one page lists (the count and the chart cover every hit)."""
DEFAULT_LIMIT = 100
EXAMPLE = 'host=PC-SOUMU-01 "failed password" user~admin'
SUMMARY_KEYS = (
    "EventID",
    "action",
    "subtype",
    "user",
    "TargetUserName",
    "srcip",
    "dstip",
    "Image",
    "CommandLine",
    "alert.signature",
    "msg",
    "message",
)
SUMMARY_CHARS = 160
CHART_WIDTH, CHART_HEIGHT = 720, 90
MAX_BARS = 400


class SearchFormError(OtasukeError):
    """A field of the search form that cannot be used (shown on the page, not raised on)."""


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    hits: int


def summary(fields: str | None, raw: str | None) -> str:
    """A short line for the table: well-known normalised fields, else the start of the record."""
    try:
        values: Any = orjson.loads(fields) if fields else {}
    except orjson.JSONDecodeError:
        values = {}
    if isinstance(values, dict):
        parts = [f"{k}={values[k]}" for k in SUMMARY_KEYS if values.get(k) not in (None, "")]
        if parts:
            text = " ".join(parts)
            return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"
    text = " ".join((raw or "").split())
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


def pretty_fields(fields: str | None) -> str:
    try:
        values = orjson.loads(fields) if fields else {}
    except orjson.JSONDecodeError:
        return fields or ""
    return orjson.dumps(values, option=orjson.OPT_INDENT_2).decode()


def parse_day(value: str | None, field: str, label: str) -> date | None:
    if not value or not value.strip():
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise SearchFormError(
            _("{label}: {value} is not a date. Write it as 2026-11-24.").format(
                label=label, value=repr(value)
            ),
            field=field,
        ) from None


def parse_limit(value: str | None) -> int:
    if not value or not value.strip():
        return DEFAULT_LIMIT
    try:
        limit = int(value.strip())
    except ValueError:
        limit = 0
    if not 1 <= limit <= PAGE_LIMIT:
        raise SearchFormError(
            _("Number shown: {value} is not a whole number from 1 to {most}.").format(
                value=repr(value), most=PAGE_LIMIT
            ),
            field="limit",
        )
    return limit


def bars(hits: HitCounts) -> list[Bar]:
    """Bars of the chart, one per hour or day from the first hit to the last (gaps at 0)."""
    if not hits.buckets:
        return []
    step = timedelta(seconds=hits.bucket_seconds)
    counts = dict(hits.buckets)
    first, last = hits.buckets[0][0], hits.buckets[-1][0]
    slots = int((last - first) / step) + 1
    starts = (
        [first + i * step for i in range(slots)]
        if slots <= MAX_BARS
        else [start for start, _n in hits.buckets]
    )
    top = max(counts.values())
    width = CHART_WIDTH / len(starts)
    fmt = "%Y-%m-%d" if hits.bucket_seconds >= DAY else "%Y-%m-%d %H:00"
    out = []
    for i, start in enumerate(starts):
        n = counts.get(start, 0)
        height = (CHART_HEIGHT - 2) * n / top if n else 0
        out.append(
            Bar(
                x=round(i * width, 2),
                y=round(CHART_HEIGHT - height, 2),
                width=round(max(width - 1, 1), 2),
                height=round(height, 2),
                label=start.astimezone(JST).strftime(fmt),
                hits=n,
            )
        )
    return out


@router.get("/console/customers/{slug}/events", response_class=HTMLResponse)
def customer_events(
    request: Request,
    slug: str,
    s: DbSession,
    user: CustomerViewer,
    q: str = "",
    since: Annotated[str | None, Query(alias="from")] = None,
    until: Annotated[str | None, Query(alias="to")] = None,
    limit: str | None = None,
) -> Response:
    customer = access_customer_by_slug(s, user.viewer, slug)
    settings = request.app.state.settings
    root = events_root(settings)
    form = {"q": q, "from": since or "", "to": until or "", "limit": limit or str(DEFAULT_LIMIT)}
    context: dict[str, Any] = {
        "customer": customer,
        "form": form,
        "limits": (50, 100, 500, PAGE_LIMIT),
        "example": EXAMPLE,
        "export_seconds": int(settings.event_export_interval_seconds),
        "stored": bool(partitions(root, customer.slug)),
        "error": None,
        "rows": [],
        "hits": None,
        "bars": [],
        "chart": {"width": CHART_WIDTH, "height": CHART_HEIGHT},
    }
    status = 200
    try:
        first = parse_day(since, "from", _("First day"))
        last = parse_day(until, "to", _("Last day"))
        if first and last and first > last:
            raise SearchFormError(
                _("First day ({first}) is after the last day ({last}): swap the two dates.").format(
                    first=first, last=last
                ),
                field="from",
            )
        shown = parse_limit(limit)
        start, end = day_range(first, last)
        result = search_events(root, customer.slug, q, since=start, until=end, limit=shown)
        hits = count_hits(root, customer.slug, q, since=start, until=end)
    except OtasukeError as exc:
        context["error"] = {"field": exc.field, "text": error_text(exc)}
        status = 400
    else:
        context["rows"] = [
            {
                "at": row["observed_at"],
                "host": row["host"],
                "format": row["source_format"],
                "summary": summary(row.get("fields"), row.get("raw")),
                "raw": row.get("raw") or "",
                "fields": pretty_fields(row.get("fields")),
                "uid": row["event_uid"],
            }
            for row in result.rows
        ]
        context["hits"] = hits
        context["bars"] = bars(hits)
        context["limit"] = shown
    return render(request, "console/events.html", context, status_code=status)


def error_text(exc: OtasukeError) -> str:
    """What was wrong, for the page (the query language's own messages are translated)."""
    return exc.message + (f" ({exc.hint})" if exc.hint else "")
