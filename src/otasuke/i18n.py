"""Japanese first, English second (gettext catalogues read with Babel).

msgids are English; ``locale/ja/LC_MESSAGES/otasuke.po`` carries the Japanese.
The current language is a context variable: the web sets it per request from
the user's choice, mails use the recipient's, the CLI uses ``OTASUKE_LANG``
(default ``ja``). A test fails on any untranslated or fuzzy ``ja`` entry.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path

from babel.messages.pofile import read_po

LOCALE_DIR = Path(__file__).parent / "locale"
LANGUAGES = ("ja", "en")
DEFAULT_LANGUAGE = os.environ.get("OTASUKE_LANG", "ja")

current_language: ContextVar[str] = ContextVar("current_language", default=DEFAULT_LANGUAGE)


@lru_cache(maxsize=8)
def catalogue(lang: str) -> dict[tuple[str | None, str], str]:
    """msgid (with its context) → translation, leaving out empty and fuzzy entries."""
    path = LOCALE_DIR / lang / "LC_MESSAGES" / "otasuke.po"
    if not path.is_file():
        return {}
    with path.open("rb") as fh:
        cat = read_po(fh, locale=lang)
    out: dict[tuple[str | None, str], str] = {}
    for msg in cat:
        if not msg.id or msg.fuzzy or not isinstance(msg.id, str):
            continue
        if isinstance(msg.string, str) and msg.string:
            out[(msg.context, msg.id)] = msg.string
    return out


def gettext(message: str) -> str:
    """Translate ``message`` into the current language."""
    return catalogue(current_language.get()).get((None, message), message)


def pgettext(context: str, message: str) -> str:
    """Translate ``message`` within ``context`` (e.g. "mail subject")."""
    return catalogue(current_language.get()).get((context, message), message)


_ = gettext


@contextmanager
def language(lang: str) -> Iterator[None]:
    """Run a block in another language (a mail in the recipient's language)."""
    token = current_language.set(lang if lang in LANGUAGES else "ja")
    try:
        yield
    finally:
        current_language.reset(token)
