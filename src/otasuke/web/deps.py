"""ログイン状態 (login state) per request: the session cookie, the language, the CSRF token.

:class:`SessionMiddleware` reads the session cookie once per request, looks up
the server-side :class:`~otasuke.db.models.WebSession` by the token's hash, and
sets :data:`otasuke.i18n.current_language` for the whole request (日本語 first).
Pages get the result through the dependencies below; no page reads cookies.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.cookies import CookieError, SimpleCookie
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from otasuke.db.engine import Database
from otasuke.db.models import User, WebSession
from otasuke.errors import NotFound, OtasukeError
from otasuke.i18n import LANGUAGES, _, current_language
from otasuke.settings import Settings
from otasuke.tenancy.auth import hash_token
from otasuke.tenancy.roles import Permission, Role
from otasuke.tenancy.scope import Viewer

SESSION_COOKIE = "otasuke_session"
"""Holds the session token; the database keeps only its SHA-256."""
CSRF_COOKIE = "otasuke_csrf"
"""Pre-session CSRF token (double submit) for the login and language forms."""
LANG_COOKIE = "otasuke_lang"
"""Language chosen before logging in."""
CSRF_FIELD = "csrf_token"


class CsrfError(OtasukeError):
    """A form came without the token of this session (偽造リクエスト対策): answered 403."""


class LoginRequired(OtasukeError):
    """A page needs a login: answered with a redirect to the login page."""


@dataclass(frozen=True, slots=True)
class CurrentUser:
    """The logged-in user of this request, detached from the database session."""

    session_id: int
    user_id: int
    email: str
    display_name: str
    role: Role
    organization_id: int
    organization_name: str
    provider_id: int | None
    language: str
    csrf_token: str

    @property
    def viewer(self) -> Viewer:
        return Viewer(
            user_id=self.user_id,
            email=self.email,
            role=self.role,
            organization_id=self.organization_id,
            provider_id=self.provider_id,
        )

    @property
    def is_staff(self) -> bool:
        return self.role.is_staff

    def can(self, permission: Permission) -> bool:
        return self.viewer.can(permission)


def load_session(db: Database, token: str, now: datetime) -> CurrentUser | None:
    """The live session whose token hashes to the stored hash, or None."""
    with db.session() as s:
        row = s.scalar(
            select(WebSession).where(
                WebSession.token_hash == hash_token(token), WebSession.expires_at > now
            )
        )
        if row is None:
            return None
        user = s.get(User, row.user_id)
        if user is None or not user.active:
            return None
        org = user.organization
        return CurrentUser(
            session_id=row.id,
            user_id=user.id,
            email=user.email,
            display_name=user.display_name,
            role=Role(user.role),
            organization_id=org.id,
            organization_name=org.name,
            provider_id=org.provider_id,
            language=user.language,
            csrf_token=row.csrf_token,
        )


def _cookies(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in scope.get("headers", []):
        if key == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except CookieError:  # a malformed cookie header counts as no cookie
                continue
            out.update({k: m.value for k, m in jar.items()})
    return out


class SessionMiddleware:
    """Pure ASGI middleware: finds the user, sets the language, issues the pre-session token."""

    def __init__(self, app: ASGIApp, *, db: Database, settings: Settings) -> None:
        self.app = app
        self.db = db
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(("/api/", "/static/")):
            await self.app(scope, receive, send)
            return
        cookies = _cookies(scope)
        user: CurrentUser | None = None
        token = cookies.get(SESSION_COOKIE)
        if token:
            user = await run_in_threadpool(load_session, self.db, token, datetime.now(UTC))
        pre_csrf = cookies.get(CSRF_COOKIE)
        new_csrf = None
        if not pre_csrf:
            pre_csrf = new_csrf = secrets.token_urlsafe(32)
        state = scope.setdefault("state", {})
        state["user"] = user
        state["pre_csrf"] = pre_csrf
        lang = user.language if user else cookies.get(LANG_COOKIE, "ja")
        reset = current_language.set(lang if lang in LANGUAGES else "ja")

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start" and new_csrf is not None:
                headers = MutableHeaders(scope=message)
                secure = "; Secure" if self.settings.cookie_secure else ""
                headers.append(
                    "set-cookie",
                    f"{CSRF_COOKIE}={new_csrf}; Path=/; HttpOnly; SameSite=Lax{secure}",
                )
            await send(message)

        try:
            await self.app(scope, receive, send_with_cookie)
        finally:
            current_language.reset(reset)


def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def db_session(db: Annotated[Database, Depends(get_db)]) -> Iterator[Session]:
    """One database session per request, committed before the response is sent.

    ``scope="function"`` below matters: with the default, the commit ran after
    the response went out, and a browser following the login redirect at once
    arrived before its session row existed and was sent back to the login page.
    """
    with db.session() as s:
        yield s


def optional_user(request: Request) -> CurrentUser | None:
    user: CurrentUser | None = request.state.user
    return user


def current_user(request: Request) -> CurrentUser:
    """The logged-in user; anonymous visitors are sent to the login page."""
    user = optional_user(request)
    if user is None:
        raise LoginRequired(_("Please log in."))
    return user


def staff_user(user: Annotated[CurrentUser, Depends(current_user)]) -> CurrentUser:
    """提供者コンソール (provider console): staff roles only; others get 404."""
    if not user.is_staff:
        raise NotFound(_("No such page."))
    return user


def customer_user(user: Annotated[CurrentUser, Depends(current_user)]) -> CurrentUser:
    """お客さまポータル (customer portal): customer roles only; others get 404."""
    if user.is_staff:
        raise NotFound(_("No such page."))
    return user


def needs(permission: Permission) -> Callable[[CurrentUser], CurrentUser]:
    """A dependency: the staff user if the role has ``permission``, else 404 (REQ-TEAM)."""

    def check(user: Annotated[CurrentUser, Depends(staff_user)]) -> CurrentUser:
        if not user.can(permission):
            raise NotFound(_("No such page."))
        return user

    return check


def csrf_expected(request: Request) -> str:
    """The token a form of this request must carry: the session's, or the pre-session one."""
    user = optional_user(request)
    if user is not None:
        return user.csrf_token
    token: str = request.state.pre_csrf
    return token


async def check_csrf(request: Request) -> None:
    """Router dependency: every POST must carry this session's CSRF token (else 403)."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    expected = csrf_expected(request)
    if not isinstance(sent, str) or not sent or not secrets.compare_digest(sent, expected):
        raise CsrfError(
            _(
                "This form has expired or did not come from this site. Please reload "
                "the page and try again."
            )
        )


DbSession = Annotated[Session, Depends(db_session, scope="function")]
AppSettings = Annotated[Settings, Depends(get_settings)]
StaffUser = Annotated[CurrentUser, Depends(staff_user)]
CustomerUser = Annotated[CurrentUser, Depends(customer_user)]
