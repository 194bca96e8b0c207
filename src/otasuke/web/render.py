"""画面表示 (rendering): the Jinja2 environment, its filters and the page helper.

Texts in templates go through ``_()`` / ``pgettext()`` (Babel extracts them
with ``babel.cfg``); times are shown in Asia/Tokyo (日本時間), prices in yen (円).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from otasuke.i18n import _, current_language, gettext, pgettext
from otasuke.standard.incident import IRStep, Severity
from otasuke.tenancy.roles import Permission
from otasuke.web.deps import CSRF_FIELD, csrf_expected, optional_user

JST = ZoneInfo("Asia/Tokyo")
TEMPLATES = Path(__file__).parent / "templates"


def ngettext(singular: str, plural: str, n: int) -> str:
    return gettext(singular) if n == 1 else gettext(plural)


def jst(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A UTC time as Japan time (日本時間); "—" when absent."""
    if value is None:
        return "—"
    return value.astimezone(JST).strftime(fmt)


def yen(value: int | None) -> str:
    """A price in yen (円), tax excluded where the contract says so."""
    if value is None:
        return "—"
    return _("{amount} JPY").format(amount=f"{value:,}")


def countdown(deadline: datetime | None, now: datetime | None = None) -> str:
    """残り時間: minutes:seconds left until ``deadline``, or how long it is overdue."""
    if deadline is None:
        return "—"
    now = now or datetime.now(UTC)
    seconds = int((deadline - now).total_seconds())
    minutes, secs = divmod(abs(seconds), 60)
    clock = f"{minutes}:{secs:02d}"
    if seconds >= 0:
        return _("{clock} left").format(clock=clock)
    return _("{clock} overdue").format(clock=clock)


def severity_label(value: str) -> str:
    """重大 / 防御済み / 情報."""
    try:
        return Severity(value).label
    except ValueError:
        return value


def step_label(value: str) -> str:
    """The five IR steps (REQ-IR-STEPS): 発見報告 … 最終報告."""
    try:
        return IRStep(value).label
    except ValueError:
        return value


def csrf_input(request: Request) -> Markup:
    """The hidden CSRF field every form carries."""
    token = escape(csrf_expected(request))
    return Markup(f'<input type="hidden" name="{CSRF_FIELD}" value="{token}">')


def make_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_callables(  # type: ignore[attr-defined]  # added by the i18n extension
        gettext=gettext, ngettext=ngettext, newstyle=False, pgettext=pgettext
    )
    env.filters.update(
        jst=jst, yen=yen, countdown=countdown, severity_label=severity_label, step_label=step_label
    )
    env.globals.update(csrf_input=csrf_input, steps=list(IRStep), Permission=Permission)
    return env


templates = Jinja2Templates(env=make_environment())


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, *, status_code: int = 200
) -> HTMLResponse:
    """A page in the request's language, with the user and the time for the header."""
    ctx: dict[str, Any] = {
        "user": optional_user(request),
        "lang": current_language.get(),
        "now": datetime.now(UTC),
    }
    ctx.update(context or {})
    return templates.TemplateResponse(request, name, ctx, status_code=status_code)
