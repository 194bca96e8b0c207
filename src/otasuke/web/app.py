"""The FastAPI application: ingest API, provider console, customer portal."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from otasuke.db.engine import Database
from otasuke.errors import Forbidden, NotFound
from otasuke.i18n import _
from otasuke.ingest.receivers.drain import IngestSpool
from otasuke.pipeline import Pipeline
from otasuke.settings import Settings, get_settings
from otasuke.web import auth, console, portal
from otasuke.web.api import bulk, ingest
from otasuke.web.api import metrics as metrics_api
from otasuke.web.deps import CsrfError, LoginRequired, SessionMiddleware
from otasuke.web.render import render
from otasuke.worker import BackgroundWorker

STATIC = Path(__file__).parent / "static"
log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    db: Database | None = None,
    make_pipeline: Callable[[], Pipeline] | None = None,
    ingest_spool: IngestSpool | None = None,
) -> FastAPI:
    """The app; with ``make_pipeline`` it also runs the in-process worker.

    HTTP ingest appends to ``ingest_spool`` (``otasuke serve`` passes the syslog
    receivers' spool and its drain or publisher). Without it, the lifespan opens the
    data folder's spool itself with a drain (or, with ``OTASUKE_BUS_URL``, a JetStream
    publisher) and closes it on shutdown; until the lifespan runs, ingest answers 503.
    """
    settings = settings or get_settings()
    db = db or Database(settings.effective_database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = None if ingest_spool is not None else open_ingest_spool(settings, db)
        spool = ingest_spool or owned
        worker = None
        if make_pipeline is not None:
            worker = BackgroundWorker(make_pipeline, settings.worker_poll_seconds)
            worker.start()
        app.state.worker = worker
        if worker is not None and spool is not None and spool.drain is not None:
            wake = worker.wake
            spool.drain.on_stored = lambda _n: wake()
        app.state.ingest_spool = spool
        try:
            yield
        finally:
            app.state.ingest_spool = None
            if owned is not None:
                owned.close()
            if worker is not None:
                worker.stop()

    app = FastAPI(title="Otasuke", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.db = db
    app.state.worker = None
    app.state.ingest_spool = None
    app.include_router(ingest.router)
    app.include_router(bulk.router)
    app.include_router(metrics_api.router)
    app.include_router(auth.router)
    app.include_router(console.router)
    app.include_router(portal.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    install_error_pages(app)
    app.add_middleware(SessionMiddleware, db=db, settings=settings)
    return app


def open_ingest_spool(settings: Settings, db: Database) -> IngestSpool:
    """The data folder's spool with its consumer, for an app that runs without ``otasuke serve``."""
    from otasuke.ingest.receivers.syslog import SyslogConfig
    from otasuke.ingest.spool import Spool

    config = SyslogConfig.from_settings(settings)
    spool = Spool(config.spool_dir, segment_bytes=config.segment_bytes, fsync=config.fsync)
    if not settings.bus_url:
        return IngestSpool.open(spool, db, batch_records=config.drain_batch_records)
    from otasuke.bus.jetstream import BusConfig
    from otasuke.ingest.receivers.publish import start_publisher

    handle = start_publisher(spool, BusConfig.from_settings(settings))
    publisher = handle.publisher

    def stop() -> None:
        handle.stop()
        spool.close()

    return IngestSpool(spool, publisher, lambda: publisher.stats.records, stop=stop)


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def error_page(request: Request, status: int, message: str) -> Response:
    """エラー画面: 403 / 404 / 500 in the user's language, never a stack trace."""
    if _is_api(request):
        return JSONResponse({"error": message}, status_code=status)
    titles = {
        403: _("This request was refused"),
        404: _("Page not found"),
        500: _("Something went wrong on our side"),
    }
    return render(
        request,
        "error.html",
        {"status": status, "title": titles.get(status, _("Error")), "message": message},
        status_code=status,
    )


def install_error_pages(app: FastAPI) -> None:
    """Map Otasuke's errors to pages: not yours = absent = 404 (REQ-TEAM)."""

    def not_found_message() -> str:
        return _("This page does not exist, or you have no access to it.")

    async def on_not_found(request: Request, exc: Exception) -> Response:
        return error_page(request, 404, not_found_message())

    async def on_forbidden(request: Request, exc: Exception) -> Response:
        # A role without the right sees the same as for an absent page.
        return error_page(request, 404, not_found_message())

    async def on_csrf(request: Request, exc: Exception) -> Response:
        return error_page(request, 403, str(exc))

    async def on_login(request: Request, exc: Exception) -> Response:
        target = quote(request.url.path, safe="/")
        return RedirectResponse(f"/login?next={target}", status_code=303)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return error_page(request, 404, not_found_message())
        if _is_api(request):
            return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
        return error_page(request, exc.status_code, _("This request could not be handled."))

    async def on_invalid(request: Request, exc: Exception) -> Response:
        if _is_api(request):
            assert isinstance(exc, RequestValidationError)
            return JSONResponse(
                {"error": "invalid request", "detail": exc.errors()}, status_code=422
            )
        if request.method == "GET":
            return error_page(request, 404, not_found_message())
        return error_page(request, 400, _("The form was incomplete. Please try again."))

    async def on_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_page(
            request, 500, _("Please try again later. If this keeps happening, call the help desk.")
        )

    app.add_exception_handler(NotFound, on_not_found)
    app.add_exception_handler(Forbidden, on_forbidden)
    app.add_exception_handler(CsrfError, on_csrf)
    app.add_exception_handler(LoginRequired, on_login)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_invalid)
    app.add_exception_handler(Exception, on_error)
