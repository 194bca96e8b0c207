"""A seeded demo world for the web tests: a fresh SQLite database, incidents, a client per role.

The clients log in through the real login form (no shortcuts, no mocks).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from otasuke.db.engine import Database
from otasuke.db.models import Alert, Incident, Notification, Organization, Sensor, StoredEvent
from otasuke.demo.seed import DEMO_PASSWORD, STAFF, seed_demo
from otasuke.settings import Settings
from otasuke.standard.plans import ContractTerms, Monitoring, PlanType
from otasuke.tenancy import admin
from otasuke.tenancy.roles import OrgKind, Role
from otasuke.tenancy.scope import Viewer
from otasuke.web.app import create_app

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
LOGIN_OF: dict[Role, str] = {}
for _email, _name, _role, _org in STAFF:
    LOGIN_OF.setdefault(_role, _email)
OTHER_PROVIDER_ADMIN = "admin@other-provider.example.jp"

DRL_URL = "https://github.com/SigmaHQ/Detection-Rule-License/blob/main/LICENSE.Detection.Rules.md"
SERIOUS_AUTHOR = "Florian Roth (Nextron Systems)"


@dataclass
class World:
    """Everything a web test needs to know about the seeded data."""

    db: Database
    settings: Settings
    app: FastAPI
    incidents: dict[str, int] = field(default_factory=dict)
    """Named incidents: tokai-serious, tokai-notified, sakura-defended, yamada-info, other-serious."""


def _org(s: Session, slug: str) -> Organization:
    org = s.scalar(select(Organization).where(Organization.slug == slug))
    assert org is not None, slug
    return org


def _incident(
    s: Session,
    customer: Organization,
    *,
    title: str,
    host: str,
    severity: str,
    first: datetime,
    source: str,
    level: str,
    blocked: bool = False,
    author: str | None = None,
    tags: list[str] | None = None,
    notified_at: datetime | None = None,
) -> Incident:
    serious = severity == "serious"
    event = StoredEvent(
        customer_id=customer.id,
        event_uid=f"{customer.slug}-{title}",
        source_format="jsonl",
        observed_at=first,
        host=host,
        fields={"CommandLine": "powershell -enc SQBFAFgA"},
        raw='{"CommandLine": "powershell -enc SQBFAFgA"}',
        processed=True,
    )
    s.add(event)
    s.flush()
    incident = Incident(
        customer_id=customer.id,
        host=host,
        family=f"{source}:{title}",
        title=title,
        severity=severity,
        first_evidence_at=first,
        last_evidence_at=first + timedelta(minutes=2),
        sla_started_at=first if serious else None,
        notify_deadline=first + timedelta(minutes=60) if serious else None,
        notified_at=notified_at,
        alert_count=1,
    )
    s.add(incident)
    s.flush()
    s.add(
        Alert(
            customer_id=customer.id,
            incident_id=incident.id,
            event_id=event.id,
            source=source,
            rule_id=f"rule-{title}",
            rule_title=title,
            level=level,
            blocked=blocked,
            severity=severity,
            rule_author=author,
            rule_licence="DRL-1.1" if author else None,
            rule_licence_url=DRL_URL if author else None,
            rule_url="https://github.com/SigmaHQ/sigma" if author else None,
            tags=tags or [],
            matched={"CommandLine": "powershell -enc SQBFAFgA"},
            host=host,
            observed_at=first,
        )
    )
    return incident


def build_world(tmp: Path) -> World:
    settings = Settings(data_dir=tmp, database_url=f"sqlite:///{tmp / 'otasuke.db'}")
    db = Database(settings.effective_database_url)
    db.migrate()
    now = datetime.now(UTC)
    world = World(db=db, settings=settings, app=create_app(settings, db=db))
    with db.session() as s:
        seed_demo(s)
        tokai, sakura, yamada = (
            _org(s, x) for x in ("tokai-parts", "sakura-clinic", "yamada-office")
        )
        # A second team: its customer is "another tenant" even for our provider's staff.
        system = Viewer.system()
        other = admin.create_organization(
            s, system, kind=OrgKind.PROVIDER, slug="other-provider", name="他社セキュリティ"
        )
        elsewhere = admin.create_organization(
            s, system, kind=OrgKind.CUSTOMER, slug="elsewhere-shop", name="よその商店", parent=other
        )
        admin.create_contract(
            s,
            system,
            elsewhere,
            ContractTerms(
                plan_type=PlanType.TYPE1,
                monitoring=Monitoring.NETWORK,
                initial_price_jpy=0,
                monthly_network_jpy=5000,
                monthly_endpoint_per_device_jpy=0,
                device_count=1,
                minimum_term_months=12,
                early_termination_fee_jpy=0,
                cancellation_terms="any time",
                device_maker="X",
                device_model="Y",
                service_country="日本",
            ),
            start_date=now.date(),
        )
        admin.create_user(
            s,
            system,
            organization=other,
            email=OTHER_PROVIDER_ADMIN,
            display_name="他社 管理者",
            role=Role.PROVIDER_ADMIN,
            password=DEMO_PASSWORD,
        )
        fortigate = s.scalar(
            select(Sensor).where(Sensor.customer_id == tokai.id, Sensor.kind == "fortigate")
        )
        assert fortigate is not None
        fortigate.last_event_at = now - timedelta(minutes=2)
        serious = _incident(
            s,
            tokai,
            title="Suspicious Encoded PowerShell Command Line",
            host="PC-SOUMU-01",
            severity="serious",
            first=now - timedelta(minutes=20),
            source="sigma",
            level="high",
            author=SERIOUS_AUTHOR,
            tags=["attack.execution", "attack.t1059.001"],
        )
        first = now - timedelta(minutes=50)
        notified = _incident(
            s,
            tokai,
            title="Known Emotet C2 server contacted",
            host="PC-KOUJOU-03",
            severity="serious",
            first=first,
            source="ioc",
            level="critical",
            author="maltrail",
            notified_at=first + timedelta(minutes=12),
        )
        s.add(
            Notification(
                customer_id=tokai.id,
                incident_id=notified.id,
                channel="maildir",
                recipients=["suzuki@tokai-parts.example.jp"],
                subject="【重大】東海精密部品株式会社 様: PC-KOUJOU-03 で不審な動き",
                body="東海精密部品株式会社 様\n\n重大な問題を検知しました。",
                status="sent",
                sent_at=first + timedelta(minutes=12),
            )
        )
        defended = _incident(
            s,
            sakura,
            title="FortiGate IPS blocked exploit attempt",
            host="院内UTM",
            severity="defended",
            first=now - timedelta(hours=3),
            source="fortigate",
            level="high",
            blocked=True,
        )
        info = _incident(
            s,
            yamada,
            title="Windows Defender scan finished",
            host="YAMADA-PC1",
            severity="info",
            first=now - timedelta(hours=5),
            source="sigma",
            level="low",
            author="SigmaHQ",
        )
        foreign = _incident(
            s,
            elsewhere,
            title="Other team's incident",
            host="SHOP-PC",
            severity="serious",
            first=now - timedelta(minutes=5),
            source="sigma",
            level="high",
            author="someone",
        )
        s.flush()
        world.incidents = {
            "tokai-serious": serious.id,
            "tokai-notified": notified.id,
            "sakura-defended": defended.id,
            "yamada-info": info.id,
            "other-serious": foreign.id,
        }
    return world


def csrf_of(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def login(app: FastAPI, email: str, password: str = DEMO_PASSWORD) -> TestClient:
    """A client logged in through the login form."""
    client = TestClient(app, raise_server_exceptions=True)
    page = client.get("/login")
    assert page.status_code == 200
    response = client.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return client


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = build_world(tmp_path_factory.mktemp("web"))
    yield w
    w.db.dispose()


@pytest.fixture(scope="session")
def clients(world: World) -> dict[Role, TestClient]:
    """One logged-in client per role of the demo team."""
    return {role: login(world.app, email) for role, email in LOGIN_OF.items()}
