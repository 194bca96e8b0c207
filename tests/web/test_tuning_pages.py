"""ルール調整の画面: add and remove with CSRF and an audit entry; scoped like every page."""

from __future__ import annotations

from sqlalchemy import select

from otasuke.db.models import Alert, AuditEntry, Organization, RuleTuning
from otasuke.tenancy.roles import Role
from tests.web.conftest import OTHER_PROVIDER_ADMIN, TestClient, World, csrf_of, login

RULE = "100ef69e-3327-481c-8e5c-6d80d9507556"  # Important Windows Eventlog Cleared (bundled)
TOKAI = "/console/customers/tokai-parts/tuning"


def rows(world: World, rule_id: str = RULE) -> list[RuleTuning]:
    with world.db.session() as s:
        found = list(s.scalars(select(RuleTuning).where(RuleTuning.rule_id == rule_id)))
        s.expunge_all()
        return found


def audit_entries(world: World, action: str) -> list[AuditEntry]:
    with world.db.session() as s:
        found = list(s.scalars(select(AuditEntry).where(AuditEntry.action == action)))
        s.expunge_all()
        return found


def add(client: TestClient, url: str, **form: str) -> int:
    token = csrf_of(client.get(url).text)
    response = client.post(url, data={"csrf_token": token, **form}, follow_redirects=False)
    return response.status_code


def test_analyst_adds_and_removes_an_exception_with_audit(
    world: World, clients: dict[Role, TestClient]
) -> None:
    client = clients[Role.ANALYST]
    status = add(
        client,
        TOKAI,
        rule_id=RULE,
        action="exception",
        selection="SubjectUserName|endswith: '-maint'\n",
        reason="保守業者が月次でログを消去",
    )
    assert status == 303
    [row] = [r for r in rows(world) if r.action == "exception"]
    assert row.selection == {"SubjectUserName|endswith": "-maint"}
    [entry] = [
        e for e in audit_entries(world, "rule_tuning.add") if e.details["tuning_id"] == row.id
    ]
    assert entry.details["reason"] == "保守業者が月次でログを消去"
    assert entry.target == f"rule:{RULE}" and entry.customer_id == row.customer_id
    assert entry.actor == row.created_by and entry.actor_user_id is not None
    page = client.get(TOKAI).text
    assert "保守業者が月次でログを消去" in page and "Important Windows Eventlog Cleared" in page

    token = csrf_of(page)
    response = client.post(
        f"{TOKAI}/{row.id}/remove",
        data={"csrf_token": token, "reason": "契約終了"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert not [r for r in rows(world) if r.id == row.id]
    [gone] = [
        e for e in audit_entries(world, "rule_tuning.remove") if e.details["tuning_id"] == row.id
    ]
    assert gone.details["reason"] == "契約終了" and gone.actor == entry.actor


def test_level_override_and_provider_wide_disable(
    world: World, clients: dict[Role, TestClient]
) -> None:
    admin = clients[Role.PROVIDER_ADMIN]
    assert add(admin, TOKAI, rule_id=RULE, action="level", level="informational", reason="r") == 303
    assert add(admin, "/console/tuning", rule_id=RULE, action="disable", reason="全社") == 303
    wide = [r for r in rows(world) if r.customer_id is None]
    assert [r.action for r in wide] == ["disable"]
    page = admin.get(TOKAI).text  # the customer page shows the provider-wide row too
    assert "全社" in page


def test_form_without_csrf_is_refused(world: World, clients: dict[Role, TestClient]) -> None:
    before = len(rows(world))
    response = clients[Role.ANALYST].post(
        TOKAI, data={"rule_id": RULE, "action": "disable", "reason": "x"}, follow_redirects=False
    )
    assert response.status_code == 403
    assert len(rows(world)) == before


def test_mistakes_are_explained_in_japanese(clients: dict[Role, TestClient]) -> None:
    client = clients[Role.ANALYST]
    token = csrf_of(client.get(TOKAI).text)
    cases = [
        ({"rule_id": "no-such-rule", "action": "disable", "reason": "x"}, "読み込まれたルール"),
        ({"rule_id": RULE, "action": "disable", "reason": " "}, "理由"),
        ({"rule_id": RULE, "action": "exception", "selection": "a: [", "reason": "x"}, "YAML"),
    ]
    for form, words in cases:
        response = client.post(TOKAI, data={"csrf_token": token, **form})
        assert response.status_code == 400
        assert words in response.text


def test_other_tenants_tunings_are_404(world: World, clients: dict[Role, TestClient]) -> None:
    admin = clients[Role.PROVIDER_ADMIN]
    assert add(admin, TOKAI, rule_id=RULE, action="disable", reason="tokai only") == 303
    assert (
        add(admin, "/console/tuning", rule_id=RULE, action="level", level="low", reason="w") == 303
    )
    [mine] = [r for r in rows(world) if r.reason == "tokai only"]
    [wide] = [r for r in rows(world) if r.reason == "w"]
    other = login(world.app, OTHER_PROVIDER_ADMIN)
    assert other.get(TOKAI).status_code == 404
    token = csrf_of(other.get("/console/tuning").text)
    for url in (
        f"{TOKAI}/{mine.id}/remove",
        f"/console/customers/elsewhere-shop/tuning/{mine.id}/remove",
        f"/console/tuning/{wide.id}/remove",
        f"/console/tuning/{mine.id}/remove",
    ):
        response = other.post(url, data={"csrf_token": token, "reason": "x"})
        assert response.status_code == 404, url
    assert "tokai only" not in other.get("/console/tuning").text
    assert {r.id for r in rows(world)} >= {mine.id, wide.id}


def test_customer_and_read_only_roles_cannot_reach_it(clients: dict[Role, TestClient]) -> None:
    for role in (Role.CUSTOMER_ADMIN, Role.CUSTOMER_USER, Role.HELPDESK, Role.RESELLER_STAFF):
        client = clients[role]
        assert client.get(TOKAI).status_code == 404, role
        assert client.get("/console/tuning").status_code == 404, role


def test_tune_this_rule_link_prefills_from_the_alert(
    world: World, clients: dict[Role, TestClient]
) -> None:
    client = clients[Role.ANALYST]
    incident = client.get(f"/console/incidents/{world.incidents['tokai-serious']}").text
    assert "このルールを調整" in incident
    with world.db.session() as s:
        tokai = s.scalar(select(Organization).where(Organization.slug == "tokai-parts"))
        assert tokai is not None
        alert = s.scalar(
            select(Alert).where(Alert.customer_id == tokai.id, Alert.source == "sigma")
        )
        assert alert is not None
        alert_id, rule_id = alert.id, alert.rule_id
        foreign = s.scalar(select(Alert).where(Alert.customer_id != tokai.id))
        assert foreign is not None
    assert f"{TOKAI}?alert={alert_id}" in incident
    page = client.get(f"{TOKAI}?alert={alert_id}").text
    assert rule_id in page and "CommandLine: powershell -enc SQBFAFgA" in page
    assert client.get(f"{TOKAI}?alert={foreign.id}").status_code == 404


def test_provider_page_shows_the_shipped_hayabusa_list(clients: dict[Role, TestClient]) -> None:
    page = clients[Role.PROVIDER_ADMIN].get("/console/tuning").text
    assert "Hayabusa" in page and "DRL 1.1" in page
    assert "0badd08f-c6a3-4630-90d3-6875cca440be" in page  # User Logoff Event: disabled
    assert "ルール調整" in page
