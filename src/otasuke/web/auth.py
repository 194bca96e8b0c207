"""ログイン・ログアウト (login, logout) and the language switch (日本語 / English).

A login creates a server-side :class:`~otasuke.db.models.WebSession` holding only
the SHA-256 of the token; the cookie holds the token (HttpOnly, SameSite=Lax,
Secure when ``cookie_secure``). Failed logins never say which part was wrong.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import delete, select

from otasuke.db.models import User, WebSession
from otasuke.i18n import LANGUAGES, _
from otasuke.tenancy.auth import hash_password, hash_token, new_token, verify_password
from otasuke.tenancy.roles import Role
from otasuke.web.deps import (
    LANG_COOKIE,
    SESSION_COOKIE,
    AppSettings,
    CurrentUser,
    DbSession,
    check_csrf,
    optional_user,
)
from otasuke.web.render import render

router = APIRouter(dependencies=[Depends(check_csrf)], include_in_schema=False)

_DUMMY_HASH = hash_password("not a real password, only for equal timing")


def home_of(role: Role) -> str:
    """Staff go to the provider console (提供者コンソール), customers to the portal."""
    return "/console" if role.is_staff else "/portal"


def safe_next(target: str | None, default: str) -> str:
    """Only a path on this site may follow a login (no open redirect)."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return default


@router.get("/", response_class=HTMLResponse)
def root(user: Annotated[CurrentUser | None, Depends(optional_user)]) -> Response:
    return RedirectResponse(home_of(user.role) if user else "/login", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(
    request: Request,
    user: Annotated[CurrentUser | None, Depends(optional_user)],
    next: str | None = None,
) -> Response:
    if user is not None:
        return RedirectResponse(home_of(user.role), status_code=303)
    return render(request, "login.html", {"next": next or "", "email": "", "error": None})


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    s: DbSession,
    settings: AppSettings,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    user = s.scalar(select(User).where(User.email == email.strip().lower()))
    ok = verify_password(user.password_hash if user else _DUMMY_HASH, password)
    if user is None or not ok or not user.active:
        return render(
            request,
            "login.html",
            {
                "next": next,
                "email": email,
                "error": _("The e-mail address or the password is wrong."),
            },
            status_code=401,
        )
    token, token_hash = new_token()
    csrf, _unused = new_token()
    now = datetime.now(UTC)
    s.add(
        WebSession(
            token_hash=token_hash,
            csrf_token=csrf,
            user_id=user.id,
            created_at=now,
            expires_at=now + timedelta(hours=settings.session_hours),
        )
    )
    response = RedirectResponse(safe_next(next, home_of(Role(user.role))), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.session_hours * 3600,
        httponly=True,
        samesite="lax",
        secure=settings.cookie_secure,
    )
    return response


@router.post("/logout")
def logout(request: Request, s: DbSession) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        s.execute(delete(WebSession).where(WebSession.token_hash == hash_token(token)))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="lax")
    return response


@router.post("/language")
def set_language(
    s: DbSession,
    settings: AppSettings,
    user: Annotated[CurrentUser | None, Depends(optional_user)],
    lang: Annotated[str, Form()] = "ja",
    next: Annotated[str, Form()] = "",
) -> Response:
    """表示言語: ja (default) or en; kept on the user, and in a cookie before login."""
    lang = lang if lang in LANGUAGES else "ja"
    if user is not None:
        row = s.get(User, user.user_id)
        if row is not None:
            row.language = lang
    response = RedirectResponse(safe_next(next, "/"), status_code=303)
    response.set_cookie(
        LANG_COOKIE,
        lang,
        max_age=365 * 24 * 3600,
        httponly=True,
        samesite="lax",
        secure=settings.cookie_secure,
    )
    return response
