"""``POST /api/v1/ingest``: NDJSON envelopes with a per-sensor bearer token.

What **202** means: every accepted line is in the spool on disk (appended and
fsynced, group-committed with the other receivers: :mod:`otasuke.ingest.spool`),
and every refused line is in the quarantine with its reason. The answer lists the
refused lines with line, field, error and hint. 422 when no line at all could be
accepted. Only the envelope is checked before the answer (one JSON object per
line, ``format`` and ``raw`` present, ``event_id`` and ``host`` well formed:
:func:`~otasuke.ingest.envelope.parse_envelope`); the device's line itself is parsed
by the drain (:mod:`otasuke.ingest.receivers.drain`, or with ``OTASUKE_BUS_URL`` the
``otasuke worker``) after the answer, and a line its parser refuses is kept in the
quarantine then, not listed in the answer. ``accepted`` counts the lines spooled;
whether one was a duplicate is decided when it is stored.

Idempotency: the drain works at least once and removes duplicates by event id.
An envelope's own ``event_id`` is that id; without one it is the SHA-256 of the
envelope's ``raw`` (:func:`~otasuke.ingest.event.content_id`, taken at receipt, as the
parsers take it). So a client that sends a batch again because it lost the answer
stores it once; two byte-identical records are one event (send ``event_id`` to keep
such records apart).

The spool is the one of the data folder, shared with the syslog receivers; the
app gets it from ``otasuke serve`` or opens it (with a drain) in its lifespan:
without it (the lifespan did not run) the answer is 503.

Overload (backpressure, :mod:`otasuke.ingest.backpressure`): when the detection
backlog is above ``ingest_max_pending`` or this batch would take it above, or
``ingest_max_inflight`` requests are being spooled already, or the spool holds more
than ``ingest_max_spool_bytes`` not yet drained, the answer is **429**
with ``Retry-After`` (seconds) and a JSON body naming the reason and what to do.
Nothing of a refused batch is stored: the client keeps the batch and sends it
again after ``Retry-After`` — that is the contract. Every refused event is
counted in ``otasuke_events_shed_total{transport="http"}``. A batch larger than
``ingest_max_pending`` on its own can never be admitted: 413, split it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from otasuke import metrics
from otasuke.db.engine import Database
from otasuke.db.models import Sensor
from otasuke.errors import OtasukeError
from otasuke.ingest.backpressure import (
    Admission,
    Decision,
)
from otasuke.ingest.envelope import parse_envelope
from otasuke.ingest.receivers.drain import IngestSpool, envelope_record
from otasuke.ingest.spool import SpoolError
from otasuke.ingest.store import LineError, Source, quarantine
from otasuke.pipeline import pending_count
from otasuke.settings import Settings
from otasuke.tenancy.auth import hash_token

router = APIRouter(prefix="/api/v1", tags=["ingest"])
log = logging.getLogger(__name__)


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


def _admission(request: Request, db: Database, spool: IngestSpool) -> Admission:
    """The app's admission state, made on first use (one per app)."""
    state = request.app.state
    admission: Admission | None = getattr(state, "ingest_admission", None)
    if admission is None:

        def read_pending() -> int:
            waiting = spool.backlog_records()  # first: a batch drained meanwhile counts twice,
            with db.sessions() as s:  # never not at all
                return pending_count(s) + waiting

        admission = Admission(read_pending, read_spool_bytes=spool.backlog_bytes)
        state.ingest_admission = admission
    return admission


def ingest_spool(request: Request) -> IngestSpool | None:
    """The spool the app appends to (None when the app's lifespan has not opened it)."""
    spool: IngestSpool | None = getattr(request.app.state, "ingest_spool", None)
    return spool


def spool_failed(err: Exception) -> JSONResponse:
    """The spool could not be written (disk full or gone): nothing of the batch is acknowledged."""
    log.error("ingest: spool append failed: %s", err)
    return JSONResponse(
        {
            "error": f"the spool could not be written: {err}",
            "field": "server",
            "hint": "nothing of this batch was acknowledged: send it again later "
            "(operators: check the disk of the data folder)",
        },
        status_code=503,
        headers={"Retry-After": "30"},
    )


def spool_missing() -> JSONResponse:
    return JSONResponse(
        {
            "error": "ingest spool is not open",
            "field": "server",
            "hint": "the server is starting or stopping; send the batch again later "
            "(operators: run the app with its lifespan, as `otasuke serve` does)",
        },
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def admit(
    request: Request, db: Database, spool: IngestSpool, settings: Settings, events: int
) -> tuple[Admission, JSONResponse | None]:
    """Admission control shared by every HTTP receiver: the 429/413 answer, or None to go on.

    After an admitted batch is spooled the caller must call
    ``admission.done(events, accepted, spooled_bytes)``.
    """
    admission = _admission(request, db, spool)
    if admission.stale():
        await run_in_threadpool(admission.refresh)
    decision = admission.try_admit(
        events,
        max_pending=settings.ingest_max_pending,
        max_inflight=settings.ingest_max_inflight,
        max_spool_bytes=settings.ingest_max_spool_bytes,
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


@dataclass(slots=True)
class Checked:
    """A batch after the cheap synchronous checks: records to spool, lines to quarantine."""

    records: list[bytes] = field(default_factory=list)
    rejected: list[LineError] = field(default_factory=list)
    refused_raw: list[tuple[str | None, OtasukeError, str]] = field(default_factory=list)
    """(format, error, raw line) of each rejected line, for its quarantine row."""

    @property
    def spooled_bytes(self) -> int:
        return sum(len(r) + 8 for r in self.records)


def check_lines(kind: str, sensor_id: int, body: bytes) -> Checked:
    """Check each NDJSON line's envelope; a good one becomes a spool record of ``kind``."""
    checked = Checked()
    for n, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            env = parse_envelope(line)
        except OtasukeError as err:
            checked.rejected.append(LineError(n, err.message, err.field, err.hint))
            checked.refused_raw.append((None, err, line.decode("utf-8", "replace")))
            continue
        checked.records.append(envelope_record(kind, sensor_id, n, env))
    return checked


def keep_and_spool(
    db: Database, spool: IngestSpool, source: Source, where: str, checked: Checked
) -> None:
    """Quarantine the refused lines (committed), then append the rest to the spool (fsynced).

    Blocking; returns only when both are durable, so the answer may follow.
    """
    if checked.refused_raw:
        with db.session() as s:
            for (fmt, err, raw), error in zip(checked.refused_raw, checked.rejected, strict=True):
                quarantine(s, source, f"{where} line {error.line}", fmt, err, raw)
    spool.append(checked.records)


@router.post("/ingest", status_code=202, responses={401: {}, 413: {}, 422: {}, 429: {}, 503: {}})
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
    source = await run_in_threadpool(find_source, db, hash_token(token.strip()))
    if source is None or source.sensor_id is None:
        return _unauthorized("unknown or revoked sensor token")  # before admission: not shed
    spool = ingest_spool(request)
    if spool is None:
        return spool_missing()
    events = sum(1 for line in body.splitlines() if line.strip())
    admission, refusal = await admit(request, db, spool, settings, events)
    if refusal is not None:
        return refusal
    accepted = spooled_bytes = 0
    try:
        checked = check_lines("http", source.sensor_id, bytes(body))
        await run_in_threadpool(keep_and_spool, db, spool, source, "POST /api/v1/ingest", checked)
        accepted, spooled_bytes = len(checked.records), checked.spooled_bytes
    except (OSError, SpoolError) as err:
        return spool_failed(err)
    finally:
        admission.done(events, accepted, spooled_bytes)
    counters = getattr(request.app.state, "metrics", None) or metrics.METRICS
    counters.count_received("http", accepted + len(checked.rejected))
    result = {"accepted": accepted, "rejected": [e.to_dict() for e in checked.rejected]}
    status = 422 if accepted == 0 and checked.rejected else 202
    return JSONResponse(result, status_code=status)


def find_source(db: Database, token_hash: str) -> Source | None:
    """The sensor of a token, as the source of its batches (None: unknown or revoked)."""
    with db.session() as s:
        sensor = s.scalar(select(Sensor).where(Sensor.token_hash == token_hash))
        return None if sensor is None else Source.of(sensor)
