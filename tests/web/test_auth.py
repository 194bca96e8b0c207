"""Login, logout, sessions and CSRF (REQ-TEAM, STYLE §9): the real login form, no shortcuts."""

from __future__ import annotations

from sqlalchemy import select

from otasuke.db.models import AuditEntry, Incident, WebSession
from otasuke.demo.seed import DEMO_PASSWORD
from otasuke.tenancy.auth import hash_token
from otasuke.web.deps import SESSION_COOKIE
from tests.web.conftest import TestClient, World, csrf_of, login

ANALYST = "analyst@provider.example.jp"


def test_wrong_password_says_so_and_makes_no_session(world: World) -> None:
    client = TestClient(world.app)
    page = client.get("/login")
    with world.db.session() as s:
        before = len(s.scalars(select(WebSession)).all())
    response = client.post(
        "/login",
        data={"email": ANALYST, "password": "wrong-password", "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert response.status_code == 401
    assert "メールアドレスまたはパスワードが正しくありません" in response.text
    assert SESSION_COOKIE not in response.cookies
    unknown = client.post(
        "/login",
        data={"email": "nobody@example.jp", "password": "x", "csrf_token": csrf_of(page.text)},
    )
    assert "メールアドレスまたはパスワードが正しくありません" in unknown.text  # same words
    with world.db.session() as s:
        assert len(s.scalars(select(WebSession)).all()) == before


def test_login_goes_to_the_role_home_and_stores_only_the_token_hash(world: World) -> None:
    client = TestClient(world.app)
    page = client.get("/login")
    response = client.post(
        "/login",
        data={"email": ANALYST, "password": DEMO_PASSWORD, "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == "/console"
    set_cookie = response.headers["set-cookie"]
    assert "httponly" in set_cookie.lower() and "samesite=lax" in set_cookie.lower()
    token = response.cookies[SESSION_COOKIE]
    with world.db.session() as s:
        tokens = {row.token_hash for row in s.scalars(select(WebSession))}
    assert token not in tokens
    assert hash_token(token) in tokens
    customer = login(world.app, "user@tokai-parts.example.jp")
    assert customer.get("/", follow_redirects=False).headers["location"] == "/portal"


def test_login_without_csrf_token_is_403(world: World) -> None:
    client = TestClient(world.app)
    client.get("/login")
    response = client.post("/login", data={"email": ANALYST, "password": DEMO_PASSWORD})
    assert response.status_code == 403
    assert "有効期限が切れた" in response.text
    assert SESSION_COOKIE not in response.cookies


def test_logout_ends_the_session(world: World) -> None:
    client = login(world.app, ANALYST)
    token = client.cookies[SESSION_COOKIE]
    page = client.get("/console")
    assert page.status_code == 200
    response = client.post(
        "/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False
    )
    assert response.status_code == 303
    with world.db.session() as s:
        assert (
            s.scalar(select(WebSession).where(WebSession.token_hash == hash_token(token))) is None
        )
    replay = TestClient(world.app)
    replay.cookies.set(SESSION_COOKIE, token)
    again = replay.get("/console", follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"].startswith("/login")


def test_post_without_csrf_is_403_and_with_it_works(world: World) -> None:
    client = login(world.app, ANALYST)
    incident_id = world.incidents["yamada-info"]
    url = f"/console/incidents/{incident_id}/advance"
    refused = client.post(url, data={}, follow_redirects=False)
    assert refused.status_code == 403
    wrong = client.post(url, data={"csrf_token": "forged"}, follow_redirects=False)
    assert wrong.status_code == 403
    with world.db.session() as s:
        incident = s.get(Incident, incident_id)
        assert incident is not None and incident.step == "discovery"
    page = client.get(f"/console/incidents/{incident_id}")
    done = client.post(url, data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert done.status_code == 303
    with world.db.session() as s:
        incident = s.get(Incident, incident_id)
        assert incident is not None and incident.step == "first_response"
        entry = s.scalar(
            select(AuditEntry).where(
                AuditEntry.action == "incident.step", AuditEntry.target == f"incident:{incident_id}"
            )
        )
        assert entry is not None and entry.actor == ANALYST
        assert entry.details == {"from_step": "discovery", "to_step": "first_response"}
    assert "初動" in client.get(f"/console/incidents/{incident_id}").text


def test_roles_without_triage_cannot_advance(world: World) -> None:
    client = login(world.app, "desk@provider.example.jp")
    incident_id = world.incidents["sakura-defended"]
    page = client.get(f"/console/incidents/{incident_id}")
    assert "次の段階へ進める" not in page.text
    response = client.post(
        f"/console/incidents/{incident_id}/advance", data={"csrf_token": csrf_of(page.text)}
    )
    assert response.status_code == 404


def test_language_switch_to_english_and_back(world: World) -> None:
    client = login(world.app, "admin@yamada-office.example.jp")
    page = client.get("/portal")
    assert "安全" in page.text
    client.post(
        "/language", data={"lang": "en", "next": "/portal", "csrf_token": csrf_of(page.text)}
    )
    english = client.get("/portal")
    assert "Safe" in english.text and 'lang="en"' in english.text
    client.post("/language", data={"lang": "ja", "csrf_token": csrf_of(english.text)})
    assert "安全" in client.get("/portal").text


def test_error_pages_are_japanese_without_traces(clients: dict[object, TestClient]) -> None:
    anonymous_404 = next(iter(clients.values())).get("/no/such/page")
    assert anonymous_404.status_code == 404
    assert "ページが見つかりません" in anonymous_404.text
    assert "Traceback" not in anonymous_404.text
