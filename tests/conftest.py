"""Shared fixtures: the corpus, real services (fail in CI, skip elsewhere)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("OTASUKE_CORPUS", ROOT.parent / "shared" / "corpus"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(reason: str) -> None:
    """A missing prerequisite fails in CI and skips elsewhere, saying how to get it."""
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def corpus() -> Path:
    """../shared/corpus; tests that read it fail in CI and skip elsewhere when absent."""
    if not CORPUS.is_dir():
        need(f"corpus not found at {CORPUS}: set OTASUKE_CORPUS or check out shared/ beside main/")
    return CORPUS


# --- real services -----------------------------------------------------------------

import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from email import message_from_bytes, policy  # noqa: E402
from email.message import EmailMessage  # noqa: E402
from typing import Any, TypeVar  # noqa: E402

from otasuke.db.engine import Database  # noqa: E402
from otasuke.settings import Settings, get_settings  # noqa: E402

T = TypeVar("T")
PG_BASE = os.environ.get("OTASUKE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def wait_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def wait_drained(app: Any, timeout: float = 30.0) -> None:
    """Wait until the spool behind an app's HTTP ingest is drained into the database.

    202 means "in the spool"; tests that then look for rows call this instead of sleeping.
    ``app`` is the FastAPI app or a TestClient of it (its lifespan must be running).
    """
    app = getattr(app, "app", app)
    spool = app.state.ingest_spool
    assert spool is not None, "the app's lifespan is not running: use `with TestClient(app)`"
    assert spool.wait_drained(timeout), f"spool not drained within {timeout} s"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Inbox:
    """Messages received by the loopback SMTP server."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = message_from_bytes(envelope.content, policy=policy.default)
        with self.lock:
            self.messages.append(msg)  # type: ignore[arg-type]
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[str, int, Inbox]]:
    """A real SMTP server (aiosmtpd) on loopback."""
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield "127.0.0.1", port, inbox
    finally:
        controller.stop()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", base_url="http://127.0.0.1:8000")


@pytest.fixture
def sqlite_db(settings: Settings) -> Iterator[Database]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.effective_database_url)
    db.migrate()
    yield db
    db.dispose()


@pytest.fixture
def pg_db() -> Iterator[Database]:
    """A fresh schema in the real PostgreSQL 'test' database, dropped afterwards."""
    import sqlalchemy as sa

    schema = f"otasuke_t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_BASE)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        need(
            f"PostgreSQL not reachable at {PG_BASE} ({exc.__class__.__name__}); start it with "
            "'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start'"
        )
    sep = "&" if "?" in PG_BASE else "?"
    db = Database(f"{PG_BASE}{sep}options=-csearch_path%3D{schema}")
    try:
        db.migrate()
        yield db
    finally:
        db.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def any_db(request: pytest.FixtureRequest) -> Database:
    """The same test on the embedded SQLite and on the real PostgreSQL."""
    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
        return request.getfixturevalue("pg_db")  # type: ignore[no-any-return]
    return request.getfixturevalue("sqlite_db")  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def bundled_detector() -> Any:
    """All bundled rules and IOC lists, loaded once for the whole run."""
    from otasuke.detect.engine import Detector

    return Detector.load()


@pytest.fixture
def live_app(
    sqlite_db: Database,
    settings: Settings,
    bundled_detector: Any,
    smtp_server: tuple[str, int, Inbox],
) -> Iterator[tuple[Any, dict[str, str]]]:
    """The app with its in-process worker and the real detector, mail to the loopback SMTP
    server, the demo team seeded; yields a TestClient and the demo sensors' tokens."""
    from starlette.testclient import TestClient

    from otasuke.demo.seed import seed_demo
    from otasuke.pipeline import Pipeline
    from otasuke.web.app import create_app

    settings.smtp_host, settings.smtp_port = smtp_server[0], smtp_server[1]
    with sqlite_db.session() as s:
        _, tokens = seed_demo(s)
    app = create_app(
        settings,
        db=sqlite_db,
        make_pipeline=lambda: Pipeline(sqlite_db, settings, bundled_detector),
    )
    with TestClient(app) as client:
        yield client, tokens


def seeded_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Database]:
    """``OTASUKE_DATA_DIR`` set to a new folder whose SQLite database holds the demo team.

    For CLI tests (``otasuke status``, ``search``); the caller disposes of the database
    and clears the settings cache when done.
    """
    from otasuke.demo.seed import seed_demo

    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("OTASUKE_DATA_DIR", str(data))
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    db = Database(f"sqlite:///{data / 'otasuke.db'}")
    db.migrate()
    with db.session() as s:
        seed_demo(s)
    return data, db
