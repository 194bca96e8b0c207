"""Japanese first (STYLE §10): every msgid translated, nothing extracted left out."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "otasuke"
JA = SRC / "locale" / "ja" / "LC_MESSAGES" / "otasuke.po"
METHODS = [("**.py", "python"), ("**/templates/**.html", "jinja2")]
OPTIONS = {"**/templates/**.html": {"extensions": "jinja2.ext.i18n"}}


def ja_catalogue() -> dict[tuple[str | None, str], tuple[str, bool]]:
    with JA.open("rb") as fh:
        catalogue = read_po(fh, locale="ja")
    return {(m.context, str(m.id)): (str(m.string or ""), m.fuzzy) for m in catalogue if m.id}


def test_every_ja_entry_is_translated_and_not_fuzzy() -> None:
    bad = [
        msgid for (ctx, msgid), (text, fuzzy) in ja_catalogue().items() if not text.strip() or fuzzy
    ]
    assert not bad, f"untranslated or fuzzy ja entries: {bad}"


def test_every_extracted_string_is_in_the_ja_catalogue() -> None:
    known = ja_catalogue()
    missing = []
    for filename, _lineno, message, _comments, context in extract_from_dir(
        SRC, METHODS, options_map=OPTIONS
    ):
        msgid = message[0] if isinstance(message, tuple) else message
        if msgid and (context, msgid) not in known:
            missing.append(f"{filename}: {msgid!r}")
    assert not missing, (
        "strings missing from ja/otasuke.po (run pybabel extract -F babel.cfg):\n"
        + "\n".join(missing)
    )


def test_babel_cfg_exists_for_extraction() -> None:
    assert "jinja2.ext.i18n" in (ROOT / "babel.cfg").read_text()
