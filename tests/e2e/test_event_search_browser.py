"""イベント検索 in a real browser: an analyst opens a customer, searches, reads the hits.

Screenshots: test-artifacts/screenshots/analyst-event-search*.png.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from playwright.sync_api import Browser, expect

from otasuke.tenancy.roles import Role
from tests.e2e.test_browser import _free_port, _session, _shot, browser
from tests.web.conftest import LOGIN_OF, World, build_world
from tests.web.test_event_search import add_events

pytestmark = pytest.mark.browser
__all__ = ["browser"]  # the chromium fixture of test_browser.py


@pytest.fixture(scope="module")
def search_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The seeded app with exported events, served by uvicorn on a free loopback port."""
    world: World = build_world(tmp_path_factory.mktemp("e2e-search"))
    add_events(world)
    port = _free_port()
    config = uvicorn.Config(
        world.app, host="127.0.0.1", port=port, log_level="warning", ws="none", lifespan="on"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start within 15 s"
        assert thread.is_alive(), "uvicorn stopped while starting"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)
    world.db.dispose()


def test_analyst_searches_a_customers_events(search_server: str, browser: Browser) -> None:
    page = _session(browser, search_server, LOGIN_OF[Role.ANALYST])
    page.goto("/console/customers/tokai-parts")
    page.get_by_role("link", name="イベント検索").click()
    expect(page.get_by_role("heading", name="イベント検索: 東海精密部品株式会社")).to_be_visible()
    page.get_by_label("検索式").fill('"failed password" srcip=203.0.113.5')
    page.get_by_role("button", name="検索", exact=True).click()
    expect(page.get_by_text("2 件見つかりました")).to_be_visible()
    expect(page.locator("svg[role=img] rect")).to_have_count(25)  # 23rd 10:00 … 24th 10:00
    rows = page.locator("table.events tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("2026-11-24 10:00:00")
    rows.first.locator("summary").click()
    expect(rows.first.locator("pre").first).to_contain_text('user="tanaka"')
    _shot(page, "analyst-event-search")
    page.get_by_label("検索式").fill('"failed password')
    page.get_by_role("button", name="検索", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text('引用符 (") が閉じていません')
    expect(page.get_by_role("alert")).to_contain_text("正しい検索式の例")
    _shot(page, "analyst-event-search-error")
