"""``POST /api/v1/ingest``: NDJSON envelopes with a per-sensor bearer token.

202 means every accepted line is committed to the database (durable) and every
refused line is in the quarantine with its reason; the answer lists the refused
lines with field, error and hint. 422 when no line at all could be accepted.

Overload (backpressure, :mod:`otasuke.ingest.backpressure`): when the detection
backlog is above ``ingest_max_pending`` or this batch would take it above, or
``ingest_max_inflight`` requests are being stored already, the answer is **429**
with ``Retry-After`` (seconds) and a JSON body naming the reason and what to do.
Nothing of a refused batch is stored: the client keeps the batch and sends it
again after ``Retry-After`` — that is the contract. Every refused event is
counted in ``otasuke_events_shed_total{transport="http"}``. A batch larger than
``ingest_max_pending`` on its own can never be admitted: 413, split it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from otasuke import metrics
from otasuke.db.engine import Database
from otasuke.db.models import Sensor
from otasuke.ingest.backpressure import (
    Admission,
    Decision,
)
from otasuke.ingest.store import Source, accept_lines
from otasuke.pipeline import pending_count
from otasuke.settings import Settings
from otasuke.tenancy.auth import hash_token

router = APIRouter(prefix="/api/v1", tags=["ingest"])


def _unauthorized(detail: str) -> JSONResponse:
    return JSONResponse(
        {
            "error": detail,
            "field": "Authorization",
            "hint": "send 'Authorization: Bearer <sensor token>' "
            "(otasuke sensors add prints it once)",
        },
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


def _admission(request: Request, db: Database) -> Admission:
    """The app's admission state, made on first use (one per app)."""
    state = request.app.state
    admission: Admission | None = getattr(state, "ingest_admission", None)
    if admission is None:

        def read_pending() -> int:
            with db.sessions() as s:
                return pending_count(s)

        admission = Admission(read_pending)
        state.ingest_admission = admission
    return admission


async def admit(
    request: Request, db: Database, settings: Settings, events: int
) -> tuple[Admission, JSONResponse | None]:
    """Admission control shared by every HTTP receiver: the 429/413 answer, or None to go on.

    After an admitted batch is stored the caller must call ``admission.done(events, accepted)``.
    """
    admission = _admission(request, db)
    if admission.stale():
        await run_in_threadpool(admission.refresh)
    decision = admission.try_admit(
        events, max_pending=settings.ingest_max_pending, max_inflight=settings.ingest_max_inflight
    )
    return admission, None if decision.admitted else _refused(request, decision, events)


def _refused(request: Request, decision: Decision, events: int) -> JSONResponse:
    counters = getattr(request.app.state, "metrics", None) or metrics.METRICS
    counters.count_shed("http", events)
    headers = {"Retry-After": str(decision.retry_after)} if decision.status == 429 else {}
    return JSONResponse(
        {
            "error": decision.reason,
            "field": "body",
            "hint": decision.hint,
            "stored": 0,
            "refused": events,
            "retry_after": decision.retry_after if decision.status == 429 else None,
        },
        status_code=decision.status,
        headers=headers,
    )


@router.post("/ingest", status_code=202, responses={401: {}, 413: {}, 422: {}, 429: {}})
async def ingest(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    db: Database = request.app.state.db
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _unauthorized("missing bearer token")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > settings.ingest_max_batch_bytes:
            return JSONResponse(
                {
                    "error": "batch too large",
                    "field": "body",
                    "hint": f"send at most {settings.ingest_max_batch_bytes} bytes per request",
                },
                status_code=413,
            )
    token_hash = hash_token(token.strip())
    if not await run_in_threadpool(_known_token, db, token_hash):
        return _unauthorized("unknown or revoked sensor token")  # before admission: not shed
    events = sum(1 for line in body.splitlines() if line.strip())
    admission, refusal = await admit(request, db, settings, events)
    if refusal is not None:
        return refusal
    accepted = 0
    try:
        result = await run_in_threadpool(_store, db, token_hash, bytes(body))
        if result is not None:
            accepted = int(result["accepted"])
    finally:
        admission.done(events, accepted)
    if result is None:
        return _unauthorized("unknown or revoked sensor token")
    worker = getattr(request.app.state, "worker", None)
    if worker is not None and result["accepted"]:
        worker.wake()
    status = 422 if result["accepted"] == 0 and result["rejected"] else 202
    return JSONResponse(result, status_code=status)


def _known_token(db: Database, token_hash: str) -> bool:
    with db.session() as s:
        return s.scalar(select(Sensor.id).where(Sensor.token_hash == token_hash)) is not None


def _store(db: Database, token_hash: str, body: bytes) -> dict[str, Any] | None:
    with db.session() as s:
        sensor = s.scalar(select(Sensor).where(Sensor.token_hash == token_hash))
        if sensor is None:
            return None
        result = accept_lines(s, Source.of(sensor), body.splitlines())
        metrics.count_accepted(result, "http")
    # committed here: the answer below is given only after the data is durable
    return {
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "rejected": [e.to_dict() for e in result.rejected],
    }
