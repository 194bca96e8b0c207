"""Settings a newcomer changes first: where the console is reached."""

from __future__ import annotations

from pathlib import Path

from otasuke.settings import Settings


def test_links_follow_the_port_the_console_is_served_on(tmp_path: Path) -> None:
    """`OTASUKE_PORT=8123 otasuke demo` prints and mails links to :8123, not :8000."""
    assert Settings(data_dir=tmp_path, port=8123).public_url == "http://127.0.0.1:8123"
    public = Settings(data_dir=tmp_path, port=8123, base_url="https://soc.example.jp/")
    assert public.public_url == "https://soc.example.jp"
