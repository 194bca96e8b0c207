"""REQ-TEAM: every GET route, every role, own and foreign objects (STYLE §5).

A route must be listed either as public (no customer data) or in SCOPED with the
roles that may open it. With another tenant's slug or id every route answers 404,
the same as for an absent object; without the right, 404 too (never 403, never 200).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from fastapi.routing import iter_route_contexts
from starlette.routing import Mount

from otasuke.tenancy.roles import Role
from tests.web.conftest import OTHER_PROVIDER_ADMIN, TestClient, World, login

PUBLIC: dict[str, str] = {
    "/": "redirects to the login page or the user's start page",
    "/login": "the login form",
    "/static": "CSS, htmx and the countdown script",
    "/openapi.json": "the API schema (HTML pages are left out of it)",
    "/metrics": "Prometheus figures, counts only; bearer token when metrics_token is set",
    "/api/v1": "Elasticsearch-like cluster info for shippers, no customer data; sensor token",
    "/api/v1/": "Elasticsearch-like cluster info for shippers, no customer data; sensor token",
    "/api/v1/_license": "a fixed basic licence for Beats, no customer data; sensor token",
    "/api/v1/_xpack": "a fixed basic licence for older Beats, no customer data; sensor token",
}

PROVIDER = {Role.PROVIDER_ADMIN, Role.ANALYST, Role.HELPDESK}
READERS = PROVIDER | {Role.RESELLER_STAFF}
STAFF = READERS | {Role.PARTNER_TECHNICIAN}
CUSTOMERS = {Role.CUSTOMER_ADMIN, Role.CUSTOMER_USER}

SCOPED: dict[str, set[Role]] = {
    "/console": STAFF,
    "/console/customers": READERS,
    "/console/customers/{slug}": READERS,
    "/console/customers/{slug}/events": READERS,
    "/console/incidents": READERS,
    "/console/incidents/rows": READERS,
    "/console/incidents/{incident_id}": READERS,
    "/console/mail": PROVIDER,
    "/console/audit": {Role.PROVIDER_ADMIN},
    "/console/tuning": {Role.PROVIDER_ADMIN, Role.ANALYST},
    "/console/customers/{slug}/tuning": {Role.PROVIDER_ADMIN, Role.ANALYST},
    "/portal": CUSTOMERS,
    "/portal/contract": CUSTOMERS,
    "/portal/devices": CUSTOMERS,
    "/portal/incidents/{incident_id}": CUSTOMERS,
}


@dataclass(frozen=True)
class Tenant:
    """The objects of one customer, to fill path parameters with."""

    slug: str
    name: str
    incident: str


TOKAI = Tenant("tokai-parts", "東海精密部品株式会社", "tokai-serious")
SAKURA = Tenant("sakura-clinic", "さくら内科クリニック", "sakura-defended")
ELSEWHERE = Tenant("elsewhere-shop", "よその商店", "other-serious")

# who → (own tenant, another tenant's)
VIEWERS: dict[str, tuple[Role, Tenant, Tenant]] = {
    "provider_admin": (Role.PROVIDER_ADMIN, TOKAI, ELSEWHERE),
    "analyst": (Role.ANALYST, TOKAI, ELSEWHERE),
    "helpdesk": (Role.HELPDESK, TOKAI, ELSEWHERE),
    "reseller_staff": (Role.RESELLER_STAFF, SAKURA, TOKAI),
    "partner_technician": (Role.PARTNER_TECHNICIAN, TOKAI, TOKAI),
    "customer_admin": (Role.CUSTOMER_ADMIN, TOKAI, SAKURA),
    "customer_user": (Role.CUSTOMER_USER, TOKAI, SAKURA),
    "other_provider_admin": (Role.PROVIDER_ADMIN, ELSEWHERE, TOKAI),
}
PARAM = re.compile(r"{(\w+)}")


def get_paths(world: World) -> list[str]:
    """Every GET path of the app (mounts by their prefix)."""
    paths = []
    for ctx in iter_route_contexts(world.app.routes):  # routers included, flattened
        is_mount = isinstance(ctx.original_route, Mount)
        if ctx.path is not None and (is_mount or "GET" in (ctx.methods or set())):
            paths.append(ctx.path)
    assert paths, "no routes found: has FastAPI changed how it lists routes?"
    return paths


def fill(world: World, path: str, tenant: Tenant) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "slug":
            return tenant.slug
        if name == "incident_id":
            return str(world.incidents[tenant.incident])
        raise AssertionError(f"{path}: no test value for path parameter {name!r}; add one")

    return PARAM.sub(value, path)


@pytest.fixture(scope="module")
def viewer_clients(world: World, clients: dict[Role, TestClient]) -> dict[str, TestClient]:
    out = {
        name: clients[role]
        for name, (role, _own, _other) in VIEWERS.items()
        if name != "other_provider_admin"
    }
    out["other_provider_admin"] = login(world.app, OTHER_PROVIDER_ADMIN)
    return out


def test_every_get_route_is_public_or_scoped(world: World) -> None:
    unlisted = [p for p in get_paths(world) if p not in PUBLIC and p not in SCOPED]
    assert not unlisted, f"routes neither scoped nor declared public: {unlisted}"
    missing = [p for p in SCOPED if p not in get_paths(world)]
    assert not missing, f"SCOPED names routes that no longer exist: {missing}"


@pytest.mark.parametrize("viewer", list(VIEWERS))
def test_req_team_route_walk(
    world: World, viewer_clients: dict[str, TestClient], viewer: str
) -> None:
    role, own, other = VIEWERS[viewer]
    client = viewer_clients[viewer]
    failures = []
    for path in get_paths(world):
        if path in PUBLIC:
            continue
        allowed = role in SCOPED[path]
        if PARAM.search(path):
            url = fill(world, path, own)
            expected = 200 if allowed and viewer != "partner_technician" else 404
            got = client.get(url).status_code
            if got != expected:
                failures.append(f"own {url}: {got}, expected {expected}")
            url = fill(world, path, other)
            response = client.get(url)
            if response.status_code != 404:
                failures.append(f"foreign {url}: {response.status_code}, expected 404")
        else:
            response = client.get(path)
            expected = 200 if allowed else 404
            if response.status_code != expected:
                failures.append(f"{path}: {response.status_code}, expected {expected}")
            if response.status_code == 200 and other.name in response.text and other != own:
                failures.append(f"{path}: shows another tenant's customer {other.name}")
    assert not failures, "\n".join(failures)


def test_reseller_on_tokai_parts_is_404_like_absent(viewer_clients: dict[str, TestClient]) -> None:
    client = viewer_clients["reseller_staff"]
    foreign = client.get("/console/customers/tokai-parts")
    absent = client.get("/console/customers/no-such-company")
    assert foreign.status_code == absent.status_code == 404
    assert "東海精密部品" not in foreign.text
    assert "東海精密部品" not in client.get("/console/customers").text


def test_customer_on_another_customers_incident_is_404(
    world: World, viewer_clients: dict[str, TestClient]
) -> None:
    client = viewer_clients["customer_admin"]
    response = client.get(f"/portal/incidents/{world.incidents['sakura-defended']}")
    assert response.status_code == 404
    assert "ページが見つかりません" in response.text
    assert "FortiGate IPS" not in response.text


def test_public_routes_answer_without_login(world: World) -> None:
    anonymous = TestClient(world.app)
    assert anonymous.get("/login").status_code == 200
    assert anonymous.get("/static/otasuke.css").status_code == 200
    assert anonymous.get("/static/htmx.min.js").status_code == 200
    home = anonymous.get("/", follow_redirects=False)
    assert home.status_code == 303 and home.headers["location"] == "/login"
    page = anonymous.get("/console/incidents", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"].startswith("/login?next=/console/incidents")
