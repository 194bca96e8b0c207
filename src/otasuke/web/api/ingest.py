"""``POST /api/v1/ingest``: NDJSON envelopes with a per-sensor bearer token.

202 means every accepted line is committed to the database (durable) and every
refused line is in the quarantine with its reason; the answer lists the refused
lines with field, error and hint. 422 when no line at all could be accepted.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select

from otasuke import metrics
from otasuke.db.engine import Database
from otasuke.db.models import Sensor
from otasuke.ingest.store import Source, accept_lines
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


@router.post("/ingest", status_code=202, responses={401: {}, 413: {}, 422: {}})
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
    from starlette.concurrency import run_in_threadpool

    result = await run_in_threadpool(_store, db, hash_token(token.strip()), bytes(body))
    if result is None:
        return _unauthorized("unknown or revoked sensor token")
    worker = getattr(request.app.state, "worker", None)
    if worker is not None and result["accepted"]:
        worker.wake()
    status = 422 if result["accepted"] == 0 and result["rejected"] else 202
    return JSONResponse(result, status_code=status)


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
