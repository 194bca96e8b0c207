"""``GET /metrics``: every figure of :mod:`otasuke.metrics` in the Prometheus text format.

Not customer data (counts only, no names or slugs), but not for everyone either:
with the setting ``metrics_token`` set, a scrape must send
``Authorization: Bearer <metrics_token>``; unset, the endpoint is open, so keep
the server on a private address or set the token (docs/operator/monitoring.md).

With ``bus_url`` set, each scrape also asks JetStream (within the connect timeout)
for the stream's size and the workers' consumer lag; a server that does not answer
is reported as ``otasuke_bus_up 0``, the scrape itself still succeeds.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from otasuke.bus.jetstream import BusConfig, read_figures
from otasuke.metrics import METRICS, Metrics, render_metrics

router = APIRouter(tags=["metrics"])


def authorised(request: Request, token: str | None) -> bool:
    if not token:
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


@router.get("/metrics", include_in_schema=False, response_model=None)
async def metrics(request: Request) -> Response:
    state = request.app.state
    settings = state.settings
    if not authorised(request, getattr(settings, "metrics_token", None)):
        return JSONResponse(
            {
                "error": "metrics token required",
                "field": "Authorization",
                "hint": "send 'Authorization: Bearer <OTASUKE_METRICS_TOKEN>'",
            },
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    registry_metrics: Metrics = getattr(state, "metrics", None) or METRICS
    spool_dir = getattr(settings, "spool_dir", None) or Path(settings.data_dir) / "spool"
    bus = None
    if getattr(settings, "bus_url", None):  # asked now, briefly; unreachable is a figure too
        bus = await read_figures(BusConfig.from_settings(settings))
    body = await run_in_threadpool(
        render_metrics,
        state.db,
        registry_metrics,
        worker=getattr(state, "worker", None),
        spool_dir=Path(spool_dir),
        bus=bus,
    )
    return Response(body, media_type=CONTENT_TYPE_LATEST)
