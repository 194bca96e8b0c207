"""The console and the portal in a real browser (Debian's chromium through Playwright).

Each role logs in through the page, opens its main pages and checks what a user
would check; full-page screenshots go to test-artifacts/screenshots/<role>-<page>.png.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, expect, sync_playwright

from otasuke.demo.seed import DEMO_PASSWORD
from tests.web.conftest import World, build_world

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "screenshots"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, World]]:
    """uvicorn with the seeded app on a free loopback port, in a thread."""
    world = build_world(tmp_path_factory.mktemp("e2e"))
    port = _free_port()
    config = uvicorn.Config(
        world.app, host="127.0.0.1", port=port, log_level="warning", ws="none", lifespan="on"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not srv.started:  # wait on the condition, with a deadline
        assert time.monotonic() < deadline, "uvicorn did not start within 15 s"
        assert thread.is_alive(), "uvicorn stopped while starting"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", world
    srv.should_exit = True
    thread.join(timeout=10)
    world.db.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = "Debian's chromium is missing: apt-get install -y chromium fonts-noto-cjk"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    expect.set_options(timeout=15_000)  # a loaded CI machine is slow, not wrong
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def _session(browser: Browser, base: str, email: str) -> Page:
    context = browser.new_context(
        base_url=base,
        locale="ja-JP",
        timezone_id="Asia/Tokyo",
        viewport={"width": 1280, "height": 900},
    )
    page = context.new_page()
    page.goto("/login")
    expect(page.get_by_role("heading", name="ログイン")).to_be_visible()
    page.get_by_label("メールアドレス").fill(email)
    page.get_by_label("パスワード").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="ログイン").click()
    page.wait_for_url(lambda url: "/login" not in url)
    return page


def _shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_customer_admin_sees_action_needed(server: tuple[str, World], browser: Browser) -> None:
    base, world = server
    page = _session(browser, base, "admin@tokai-parts.example.jp")
    expect(page.locator(".status-word")).to_have_text("要対応")
    expect(page.get_by_text("東海精密部品株式会社").first).to_be_visible()
    _shot(page, "customer_admin-portal")
    page.get_by_role("link", name="いますぐ行うことを見る").click()
    expect(page.get_by_text("パソコンの電源は切らないでください")).to_be_visible()
    page.goto(f"/portal/incidents/{world.incidents['tokai-serious']}")
    expect(page.get_by_text("作成者: Florian Roth (Nextron Systems)")).to_be_visible()
    _shot(page, "customer_admin-incident")
    page.get_by_role("link", name="ご契約内容").click()
    expect(page.get_by_text("月額料金 (税抜)")).to_be_visible()
    _shot(page, "customer_admin-contract")
    page.get_by_role("link", name="監視機器").first.click()
    expect(page.get_by_text("ログが届いていません").first).to_be_visible()
    _shot(page, "customer_admin-devices")
    page.get_by_role("button", name="ログアウト").click()
    expect(page.get_by_role("heading", name="ログイン")).to_be_visible()


def test_other_customer_sees_safe(server: tuple[str, World], browser: Browser) -> None:
    base, world = server
    page = _session(browser, base, "admin@yamada-office.example.jp")
    expect(page.locator(".status-word")).to_have_text("安全")
    _shot(page, "customer_admin_yamada-portal")
    page.goto(f"/portal/incidents/{world.incidents['tokai-serious']}")
    expect(page.get_by_text("ページが見つかりません")).to_be_visible()
    _shot(page, "customer_admin_yamada-404")


def test_analyst_works_the_queue(server: tuple[str, World], browser: Browser) -> None:
    base, _world = server
    page = _session(browser, base, "analyst@provider.example.jp")
    _shot(page, "analyst-home")
    page.get_by_role("link", name="インシデント", exact=True).click()
    expect(page.get_by_role("heading", name="インシデント対応待ち一覧")).to_be_visible()
    countdown = page.locator(".countdown").first
    expect(countdown).to_contain_text("残り")
    first = countdown.inner_text()
    expect(countdown).not_to_have_text(first)  # the countdown ticks
    expect(page.get_by_text("通知済み").first).to_be_visible()
    expect(page.get_by_text("東海精密部品株式会社").first).to_be_visible()
    _shot(page, "analyst-incidents")
    page.get_by_role("link", name="Suspicious Encoded PowerShell Command Line").click()
    expect(page.locator("[aria-current=step]")).to_have_text("1発見報告")
    page.get_by_role("button", name="次の段階へ進める: 初動").click()
    expect(page.locator("[aria-current=step]")).to_have_text("2初動")
    expect(page.get_by_text("ルール: Suspicious Encoded PowerShell Command Line")).to_be_visible()
    _shot(page, "analyst-incident")


def test_provider_admin_pages(server: tuple[str, World], browser: Browser) -> None:
    base, _world = server
    page = _session(browser, base, "admin@provider.example.jp")
    page.goto("/console/customers")
    expect(page.get_by_role("link", name="東海精密部品株式会社")).to_be_visible()
    _shot(page, "provider_admin-customers")
    page.get_by_role("link", name="東海精密部品株式会社").click()
    expect(page.get_by_text("FortiGate 60F").first).to_be_visible()
    _shot(page, "provider_admin-customer")
    page.goto("/console/mail")
    expect(page.get_by_text("【重大】東海精密部品株式会社 様").first).to_be_visible()
    _shot(page, "provider_admin-mail")
    page.goto("/console/audit")
    expect(page.get_by_role("heading", name="監査ログ")).to_be_visible()
    _shot(page, "provider_admin-audit")


def test_reseller_and_partner(server: tuple[str, World], browser: Browser) -> None:
    base, _world = server
    page = _session(browser, base, "staff@minato-it.example.jp")
    page.goto("/console/customers")
    expect(page.get_by_text("さくら内科クリニック")).to_be_visible()
    expect(page.get_by_text("東海精密部品株式会社")).to_have_count(0)
    _shot(page, "reseller_staff-customers")
    page.goto("/console/customers/tokai-parts")
    expect(page.get_by_text("ページが見つかりません")).to_be_visible()
    partner = _session(browser, base, "tech@kaketsuke.example.jp")
    expect(partner.get_by_text("まだ担当の作業はありません")).to_be_visible()
    _shot(partner, "partner_technician-console")


def test_login_redirect_never_outruns_the_session(server: tuple[str, World]) -> None:
    """A client that follows the login redirect at once must arrive logged in.

    The session row used to be committed after the response was sent; a fast
    client then reached /console before it existed and was sent back to /login.
    """
    import re

    import httpx2

    base, _world = server
    sent_back = 0
    for _ in range(20):
        with httpx2.Client(base_url=base, follow_redirects=True, timeout=30) as client:
            html = client.get("/login").text
            match = re.search(r'name="csrf_token" value="([^"]+)"', html)
            assert match is not None
            r = client.post(
                "/login",
                data={
                    "email": "analyst@provider.example.jp",
                    "password": DEMO_PASSWORD,
                    "csrf_token": match.group(1),
                },
            )
            assert r.status_code == 200
            sent_back += r.url.path == "/login"
    assert sent_back == 0
