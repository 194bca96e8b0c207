"""イベント検索 in the console (issue 5 point 6): one customer's Parquet events, REQ-TEAM scoped.

A seeded world of its own: FortiGate lines accepted through the real ingest path,
marked processed and exported into the event store as the worker's exporter does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from otasuke.db.models import Organization, StoredEvent
from otasuke.demo.seed import demo_sensor
from otasuke.eventstore import events_root, export_processed
from otasuke.ingest.store import Source, accept_lines
from otasuke.tenancy import admin
from otasuke.tenancy.roles import OrgKind, Role
from otasuke.tenancy.scope import Viewer
from tests.eventstore.test_store import LATER, fg
from tests.web.conftest import LOGIN_OF, OTHER_PROVIDER_ADMIN, World, build_world, login


def add_events(world: World) -> None:
    """Tokai: 3 logins on two days; Sakura: one with a secret user name."""
    with world.db.session() as s:
        tokai = Source.of(demo_sensor(s, "tokai-parts", "fortigate"))
        sakura = Source.of(demo_sensor(s, "sakura-clinic", "fortigate"))
    with world.db.session() as s:
        accept_lines(
            s,
            tokai,
            [
                fg("2026-11-23", "10:00:00", "suzuki"),
                fg("2026-11-24", "10:00:00", "tanaka"),
                fg("2026-11-24", "11:30:00", "admin", srcip="198.51.100.9"),
            ],
        )
        accept_lines(s, sakura, [fg("2026-11-24", "12:00:00", "sakura-secret")])
        s.execute(update(StoredEvent).values(processed=True))
        provider = s.scalar(select(Organization).where(Organization.slug == "otasuke-provider"))
        admin.create_organization(  # a new customer: nothing exported yet
            s,
            Viewer.system(),
            kind=OrgKind.CUSTOMER,
            slug="kaze-bakery",
            name="風のパン工房",
            parent=provider,
        )
    with world.db.session() as s:
        result = export_processed(s, events_root(world.settings), now=LATER)
    assert result.per_customer["tokai-parts"] == 5  # 3 lines + the 2 incidents' events
    assert result.per_customer["sakura-clinic"] == 2


@pytest.fixture(scope="module")
def search_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    world = build_world(tmp_path_factory.mktemp("search"))
    add_events(world)
    yield world
    world.db.dispose()


@pytest.fixture(scope="module")
def analyst(search_world: World) -> TestClient:
    return login(search_world.app, LOGIN_OF[Role.ANALYST])


def page(client: TestClient, slug: str = "tokai-parts", **params: str) -> tuple[int, str]:
    response = client.get(f"/console/customers/{slug}/events", params=params)
    return response.status_code, response.text


def test_customer_page_links_to_the_search(analyst: TestClient) -> None:
    html = analyst.get("/console/customers/tokai-parts").text
    assert '<a href="/console/customers/tokai-parts/events">イベント検索</a>' in html


def test_field_search_finds_the_one_event(analyst: TestClient) -> None:
    status, html = page(analyst, q="user=tanaka")
    assert status == 200
    assert "1 件見つかりました" in html
    assert "user=tanaka" in html and "srcip=203.0.113.5" in html  # the summary
    assert 'user="tanaka"' in html.replace("&#34;", '"')  # the raw record, expandable
    assert "suzuki" not in html
    assert html.count("<rect ") == 1  # one bar in the chart
    assert "2026-11-24 10:00:00" in html  # Japan time, as the FortiGate wrote it


def test_everything_of_one_customer_and_nothing_of_another(analyst: TestClient) -> None:
    status, html = page(analyst, q="")
    assert status == 200 and "5 件見つかりました" in html
    assert "sakura-secret" not in html
    for query in ["sakura-secret", "user=sakura-secret", "' OR 1=1 --", 'raw~"sakura"']:
        status, html = page(analyst, q=query)
        assert status == 200, query
        results = html.split("検索式の書き方", 1)[1].split("</section>", 1)[1]
        assert "条件に合うイベントはありません" in results, query
        assert "sakura-secret" not in results, query


def test_count_covers_every_hit_while_the_table_shows_the_newest(analyst: TestClient) -> None:
    status, html = page(analyst, q='"failed password"', limit="50")
    assert status == 200 and "3 件見つかりました" in html
    # Two days apart (23rd 10:00 to 24th 11:30 JST, 25.5 hours): counted per hour, gaps at 0.
    assert "1 時間ごとの件数" in html
    assert html.count("<rect ") == 26
    rows = re.findall(r'<td class="nowrap">([^<]+)</td>', html)
    assert rows == ["2026-11-24 11:30:00", "2026-11-24 10:00:00", "2026-11-23 10:00:00"]


def test_dates_are_japanese_days_and_inclusive(analyst: TestClient) -> None:
    status, html = page(analyst, q="failed", **{"from": "2026-11-24", "to": "2026-11-24"})
    assert status == 200 and "2 件見つかりました" in html
    status, html = page(analyst, q="failed", **{"from": "2026-11-25"})
    assert status == 200 and "条件に合うイベントはありません" in html


@pytest.mark.parametrize(
    ("params", "wrong"),
    [
        ({"q": '"failed password'}, '引用符 (") が閉じていません'),
        ({"q": "(user=tanaka"}, "'(' が閉じていません"),
        ({"q": "user=tanaka OR"}, "検索式が途中で終わっています"),
        ({"q": "sensor_id=abc"}, "sensor_id は数値の項目です"),
        ({"q": "observed_at>=yesterday"}, "'yesterday' は日付・時刻として読めません"),
        ({"from": "2026-13-01"}, "開始日: '2026-13-01' は日付として読めません。2026-11-24 の形"),
        ({"from": "2026-11-25", "to": "2026-11-24"}, "開始日 (2026-11-25) が終了日 (2026-11-24)"),
        ({"limit": "lots"}, "表示件数: 'lots' は 1 から 1000 までの整数ではありません"),
        ({"limit": "0"}, "表示件数: '0' は 1 から 1000"),
    ],
)
def test_bad_input_says_what_was_wrong_in_japanese(
    analyst: TestClient, params: dict[str, str], wrong: str
) -> None:
    status, html = page(analyst, **params)
    assert status == 400
    text = html.replace("&#34;", '"').replace("&#39;", "'")
    assert "検索できませんでした。" in text
    assert wrong in text
    assert "正しい検索式の例:" in text  # and an example to copy
    assert "件見つかりました" not in text


def test_empty_store_explains_when_events_appear(analyst: TestClient) -> None:
    status, html = page(analyst, slug="kaze-bakery")
    assert status == 200
    assert "イベントストアにまだイベントがありません" in html
    assert "ワーカーがイベントストアへ書き出した後" in html and "60 秒ごと" in html


@pytest.mark.parametrize(
    ("email", "slug"),
    [
        (LOGIN_OF[Role.RESELLER_STAFF], "tokai-parts"),  # not sold by this reseller
        (OTHER_PROVIDER_ADMIN, "tokai-parts"),  # another provider's customer
        (LOGIN_OF[Role.CUSTOMER_ADMIN], "tokai-parts"),  # customers use the portal
        (LOGIN_OF[Role.PARTNER_TECHNICIAN], "tokai-parts"),
        (LOGIN_OF[Role.ANALYST], "elsewhere-shop"),
        (LOGIN_OF[Role.ANALYST], "no-such-company"),
    ],
)
def test_not_yours_is_404(search_world: World, email: str, slug: str) -> None:
    client = login(search_world.app, email)
    status, html = page(client, slug=slug, q="")
    assert status == 404
    assert "failed password" not in html and "tanaka" not in html


def test_reseller_searches_its_own_customer(search_world: World) -> None:
    client = login(search_world.app, LOGIN_OF[Role.RESELLER_STAFF])
    status, html = page(client, slug="sakura-clinic", q="user=sakura-secret")
    assert status == 200 and "1 件見つかりました" in html


def test_store_root_is_the_setting(search_world: World) -> None:
    assert (Path(search_world.settings.data_dir) / "events" / "customer=tokai-parts").is_dir()
