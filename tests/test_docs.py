"""Docs that test themselves: every setting is documented, README shows the two commands."""

from __future__ import annotations

from pathlib import Path

from otasuke.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "operator" / "settings.md").read_text()
    missing = [n for n in Settings.model_fields if f"`OTASUKE_{n.upper()}`" not in doc]
    assert missing == []


def test_readme_opens_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text()[:1500]
    assert "make demo" in head and "make test" in head
