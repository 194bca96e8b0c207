"""A subset of the Elasticsearch ``_bulk`` API, so that stock shippers can send to us.

Winlogbeat, Fluent Bit (``es`` output), Vector (``elasticsearch`` sink) and NXLog
speak Elasticsearch; pointed at ``https://<otasuke>/api/v1`` they deliver to:

- ``POST /api/v1/_bulk`` and ``POST /api/v1/{index}/_bulk``: NDJSON, an action line
  ``{"index": {…}}`` or ``{"create": {…}}`` followed by the document. ``_index`` is
  ignored; ``_id`` (1 to 100 characters) becomes the event id, so a re-sent document
  is stored once. ``update`` and ``delete`` are answered with an item status 400.
- ``GET``/``HEAD /api/v1/``: a minimal cluster info with an 8.x version number
  (Beats and Vector read it before they send), ``GET /api/v1/_license`` and
  ``GET /api/v1/_xpack`` (Beats check for a licence before they send).

Authentication is the sensor token, as for ``POST /api/v1/ingest``: either
``Authorization: Bearer <token>`` or HTTP Basic with the token as the password
(the user name is ignored). A document that looks like a Windows event (a ``winlog``
object, a rendered ``Event``, or ``EventID`` with ``Channel``/``SourceName``) is
parsed as ``winlogbeat``, anything else as ``jsonl``.

The answer, in Elasticsearch's bulk response shape, is given only after the batch is
in the spool on disk (fsynced; the same spool and drain as ``POST /api/v1/ingest``,
see :mod:`otasuke.web.api.ingest` for what that means): every item with status 201
is durable there; an item with status 400 was refused and is in the quarantine with
its reason (``update``/``delete`` actions carry no event and are only refused).
Before the answer a document is only checked to be a JSON object; the Windows or
JSON parser reads it in the drain afterwards, and a document it refuses (a Windows
event without a time, say) is kept in the quarantine then — its item said 201.
A document is stored once however often it is sent: its event id is its ``_id``, or
without one the SHA-256 of the document (a re-sent batch is recognised). ``gzip`` request bodies are accepted (Beats 8
compress by default); the limit ``ingest_max_batch_bytes`` applies to the body after
decompression.
"""

from __future__ import annotations

import base64
import binascii
import time
import zlib
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from otasuke import metrics
from otasuke.db.engine import Database
from otasuke.db.models import Sensor
from otasuke.errors import ParseError
from otasuke.ingest.envelope import Envelope
from otasuke.ingest.parsers.winjson import windows_shape
from otasuke.ingest.receivers.drain import envelope_record
from otasuke.ingest.spool import SpoolError
from otasuke.ingest.store import LineError, Source
from otasuke.settings import Settings
from otasuke.tenancy.auth import hash_token
from otasuke.web.api.ingest import (
    Checked,
    admit,
    ingest_spool,
    keep_and_spool,
    spool_failed,
    spool_missing,
)

router = APIRouter(prefix="/api/v1", tags=["ingest"])

ES_VERSION = "8.17.0"
"""The version we claim: Beats 8 refuse (or warn about) a cluster older than themselves."""
ES_HEADERS = {"X-Elastic-Product": "Elasticsearch"}
ACTIONS_WITH_DOCUMENT = frozenset({"index", "create", "update"})
ACTIONS = ACTIONS_WITH_DOCUMENT | {"delete"}
MAX_EVENT_ID = 100


class BulkSyntaxError(Exception):
    """The request body is not a bulk request; Elasticsearch refuses it whole (400)."""


class TooLarge(Exception):
    """The body (after decompression) is larger than ``ingest_max_batch_bytes``."""


@dataclass(slots=True)
class Item:
    """One action of the bulk request and, once stored, its answer."""

    action: str
    index: str
    doc_id: str | None
    envelope: Envelope | None = None
    """The document as an ingest envelope (index and create actions)."""
    error: LineError | None = None
    refused: ParseError | None = None
    """Why the document was refused before spooling (kept in the quarantine)."""
    line: int = 0
    """The document's line in the request body (1-based; 0: no document line)."""

    def answer(self) -> dict[str, Any]:
        body: dict[str, Any] = {"_index": self.index}
        if self.doc_id is not None:
            body["_id"] = self.doc_id
        if self.error is None:
            body.update(status=201, result="created", _version=1)
        else:
            body["status"] = 400
            body["error"] = {
                "type": "document_parsing_exception",
                "reason": self.error.error,
                "field": self.error.field,
                "hint": self.error.hint,
            }
        return {self.action: body}


def _es_error(status: int, kind: str, reason: str, **extra: Any) -> JSONResponse:
    return JSONResponse(
        {"error": {"type": kind, "reason": reason, **extra}, "status": status},
        status_code=status,
        headers=ES_HEADERS,
    )


def _unauthorized(reason: str) -> JSONResponse:
    response = _es_error(
        401,
        "security_exception",
        reason,
        field="Authorization",
        hint="send 'Authorization: Bearer <sensor token>' or Basic auth with any user name "
        "and the sensor token as the password (otasuke sensors add prints it once)",
    )
    response.headers["WWW-Authenticate"] = 'Basic realm="otasuke", Bearer'
    return response


def sensor_token(authorization: str) -> str | None:
    """The sensor token of a Bearer or Basic ``Authorization`` header, or None."""
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if not credentials:
        return None
    if scheme.lower() == "bearer":
        return credentials
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _user, colon, password = decoded.partition(":")
        return password if colon and password else None
    return None


def _find_sensor(db: Database, token_hash: str) -> Source | None:
    with db.session() as s:
        sensor = s.scalar(select(Sensor).where(Sensor.token_hash == token_hash))
        return None if sensor is None else Source.of(sensor)


async def _authenticate(request: Request) -> Source | JSONResponse:
    token = sensor_token(request.headers.get("authorization", ""))
    if token is None:
        return _unauthorized("missing credentials: Bearer token or Basic auth")
    db: Database = request.app.state.db
    source = await run_in_threadpool(_find_sensor, db, hash_token(token))
    if source is None:
        return _unauthorized("unknown or revoked sensor token")
    return source


async def _read_body(request: Request, limit: int) -> bytes:
    gzipped = request.headers.get("content-encoding", "").strip().lower() == "gzip"
    inflater = zlib.decompressobj(wbits=31) if gzipped else None
    body = bytearray()
    async for chunk in request.stream():
        if inflater is not None:
            chunk = inflater.decompress(chunk, limit + 1 - len(body))
            if inflater.unconsumed_tail:
                raise TooLarge
        body += chunk
        if len(body) > limit:
            raise TooLarge
    if inflater is not None:
        body += inflater.flush()
        if len(body) > limit:
            raise TooLarge
    return bytes(body)


def document_format(doc: dict[str, Any]) -> str:
    """``winlogbeat`` for a Windows event (Winlogbeat, NXLog, rendered EVTX), else ``jsonl``."""
    return "jsonl" if windows_shape(doc) is None else "winlogbeat"


def _envelope(doc_line: bytes, doc_id: str | None) -> tuple[Envelope, ParseError | None]:
    """The ingest envelope of one document line, and why it is refused (None: spool it).

    A document that is not a JSON object stays as text, to be kept in the quarantine.
    """
    error: ParseError | None = None
    try:
        doc = orjson.loads(doc_line)
    except orjson.JSONDecodeError as err:
        doc = None
        error = ParseError(
            f"document is not valid JSON: {err}",
            field="raw",
            hint="send one JSON object per document line",
        )
    event_id = doc_id if doc_id is not None and 0 < len(doc_id) <= MAX_EVENT_ID else None
    if isinstance(doc, dict) and doc:
        return Envelope(document_format(doc), doc, event_id), None
    if error is None:
        error = ParseError(
            "document is not a non-empty JSON object",
            field="raw",
            hint="send one JSON object per document line",
        )
    text = doc_line.decode("utf-8", "replace")
    return Envelope("jsonl", text, event_id), error


def parse_bulk(body: bytes, default_index: str | None) -> list[Item]:
    """The actions of a bulk body, each with its envelope, or a BulkSyntaxError."""
    lines = [line for line in body.split(b"\n") if line.strip()]
    items: list[Item] = []
    n = 0
    while n < len(lines):
        try:
            action_line = orjson.loads(lines[n])
        except orjson.JSONDecodeError as err:
            raise BulkSyntaxError(f"line {n + 1}: action line is not JSON: {err}") from None
        if not (isinstance(action_line, dict) and len(action_line) == 1):
            raise BulkSyntaxError(f"line {n + 1}: expected one action such as {{'index': {{}}}}")
        [(action, meta)] = action_line.items()
        if action not in ACTIONS or not isinstance(meta, dict):
            raise BulkSyntaxError(f"line {n + 1}: unknown action {action!r}")
        raw_id = meta.get("_id")
        doc_id = str(raw_id) if isinstance(raw_id, str | int) and raw_id != "" else None
        index = str(meta.get("_index") or default_index or "otasuke")
        item = Item(action=action, index=index, doc_id=doc_id)
        n += 1
        if action in ACTIONS_WITH_DOCUMENT:
            if n >= len(lines):
                raise BulkSyntaxError(f"line {n}: the last action has no document line")
            if action == "index" or action == "create":
                item.envelope, item.refused = _envelope(lines[n].strip(), doc_id)
                item.line = n + 1
            n += 1
        if item.envelope is None:
            item.error = LineError(
                n, f"action {action!r} is not supported", "action", "use index or create"
            )
        elif item.refused is not None:
            item.error = LineError(n, item.refused.message, item.refused.field, item.refused.hint)
        items.append(item)
    return items


def check_items(sensor_id: int, items: list[Item]) -> Checked:
    """Spool records of the good documents, quarantine rows of the refused ones."""
    checked = Checked()
    for item in items:
        env = item.envelope
        if env is not None and item.error is None:
            checked.records.append(envelope_record("bulk", sensor_id, item.line, env))
        elif env is not None and item.error is not None and item.refused is not None:
            # kept in the quarantine as the envelope it would have been
            raw = orjson.dumps(
                {"format": env.format, "raw": env.raw}
                | ({"event_id": env.event_id} if env.event_id else {})
            ).decode()
            checked.rejected.append(item.error)
            checked.refused_raw.append((env.format, item.refused, raw))
    return checked


async def _bulk(request: Request, default_index: str | None) -> Response:
    started = time.monotonic()
    settings: Settings = request.app.state.settings
    source = await _authenticate(request)
    if isinstance(source, JSONResponse):
        return source
    limit = settings.ingest_max_batch_bytes
    try:
        body = await _read_body(request, limit)
    except TooLarge:
        return _es_error(413, "request_entity_too_large", f"send at most {limit} bytes per request")
    except zlib.error as err:
        return _es_error(400, "parse_exception", f"gzip body could not be read: {err}")
    try:
        items = parse_bulk(body, default_index)
    except BulkSyntaxError as err:
        return _es_error(400, "illegal_argument_exception", str(err))
    if not items:
        return _es_error(400, "action_request_validation_exception", "no requests added")
    db = request.app.state.db
    spool = ingest_spool(request)
    if spool is None or source.sensor_id is None:
        return spool_missing()
    admission, refusal = await admit(request, db, spool, settings, len(items))
    if refusal is not None:  # Beats, Fluent Bit and Vector retry a 429 after Retry-After
        return refusal
    accepted = spooled_bytes = 0
    try:
        checked = check_items(source.sensor_id, items)
        await run_in_threadpool(keep_and_spool, db, spool, source, "POST /api/v1/_bulk", checked)
        accepted, spooled_bytes = len(checked.records), checked.spooled_bytes
    except (OSError, SpoolError) as err:
        return spool_failed(err)
    finally:
        admission.done(len(items), accepted, spooled_bytes)
    counters = getattr(request.app.state, "metrics", None) or metrics.METRICS
    counters.count_received("http", len(items))
    answer = {
        "took": int((time.monotonic() - started) * 1000),
        "errors": any(item.error is not None for item in items),
        "items": [item.answer() for item in items],
    }
    return JSONResponse(answer, status_code=200, headers=ES_HEADERS)


@router.post("/_bulk", responses={400: {}, 401: {}, 413: {}})
async def bulk(request: Request) -> Response:
    """Elasticsearch bulk: index/create actions, answered once they are in the spool."""
    return await _bulk(request, None)


@router.post("/{index}/_bulk", responses={400: {}, 401: {}, 413: {}})
async def bulk_index(index: str, request: Request) -> Response:
    """Elasticsearch bulk with a default index in the path (the index is ignored)."""
    return await _bulk(request, index)


def cluster_info() -> dict[str, Any]:
    return {
        "name": "otasuke",
        "cluster_name": "otasuke",
        "cluster_uuid": "otasuke-bulk-receiver",
        "version": {
            "number": ES_VERSION,
            "build_flavor": "default",
            "build_type": "otasuke",
            "lucene_version": "9.12.0",
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0",
        },
        "tagline": "You Know, for Search",
    }


@router.api_route("", methods=["GET", "HEAD"], include_in_schema=False)
@router.api_route("/", methods=["GET", "HEAD"], responses={401: {}})
async def info(request: Request) -> Response:
    """Cluster info with an 8.x version, for shippers that check it before sending."""
    source = await _authenticate(request)
    if isinstance(source, JSONResponse):
        return source
    if request.method == "HEAD":
        return Response(status_code=200, headers=ES_HEADERS)
    return JSONResponse(cluster_info(), headers=ES_HEADERS)


LICENSE = {
    "status": "active",
    "uid": "otasuke",
    "type": "basic",
    "mode": "basic",
    "issue_date_in_millis": 0,
    "expiry_date_in_millis": 4102444800000,
    "issued_to": "otasuke",
    "issuer": "otasuke",
    "max_nodes": 1000,
}


@router.get("/_license", responses={401: {}})
async def license_info(request: Request) -> Response:
    """A basic, active licence: Beats refuse to send to a cluster without one."""
    source = await _authenticate(request)
    if isinstance(source, JSONResponse):
        return source
    return JSONResponse({"license": LICENSE}, headers=ES_HEADERS)


@router.get("/_xpack", responses={401: {}})
async def xpack_info(request: Request) -> Response:
    """The licence as the ``_xpack`` info API gives it (older Beats ask here)."""
    source = await _authenticate(request)
    if isinstance(source, JSONResponse):
        return source
    return JSONResponse(
        {
            "build": {"hash": "otasuke", "date": "2026-01-01T00:00:00Z"},
            "license": {k: LICENSE[k] for k in ("uid", "type", "mode", "status")}
            | {"expiry_date_in_millis": LICENSE["expiry_date_in_millis"]},
            "features": {},
        },
        headers=ES_HEADERS,
    )
