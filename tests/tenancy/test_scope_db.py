"""REQ-TEAM on both databases: who sees which customers and incidents (not-yours = NotFound)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from otasuke.db.engine import Database
from otasuke.db.models import AuditEntry, Incident, Organization, User
from otasuke.demo.seed import seed_demo
from otasuke.errors import NotFound
from otasuke.tenancy.scope import (
    Viewer,
    access_customer_by_slug,
    access_incident_by_id,
    list_customers,
    list_incidents,
)

EXPECTED = {
    "admin@provider.example.jp": {"tokai-parts", "sakura-clinic", "yamada-office"},
    "analyst@provider.example.jp": {"tokai-parts", "sakura-clinic", "yamada-office"},
    "desk@provider.example.jp": {"tokai-parts", "sakura-clinic", "yamada-office"},
    "staff@minato-it.example.jp": {"sakura-clinic", "yamada-office"},
    "tech@kaketsuke.example.jp": set(),
    "admin@tokai-parts.example.jp": {"tokai-parts"},
    "user@tokai-parts.example.jp": {"tokai-parts"},
    "admin@sakura-clinic.example.jp": {"sakura-clinic"},
    "admin@yamada-office.example.jp": {"yamada-office"},
}


def test_req_team_each_role_sees_only_its_customers(any_db: Database) -> None:
    now = datetime.now(UTC)
    with any_db.session() as s:
        seed_demo(s)
        tokai = s.scalar(select(Organization).where(Organization.slug == "tokai-parts"))
        assert tokai is not None
        s.add(
            Incident(
                customer_id=tokai.id,
                host="PC1",
                family="sigma:x",
                title="t",
                severity="serious",
                first_evidence_at=now,
                last_evidence_at=now,
            )
        )
    with any_db.session() as s:
        incident_id = s.scalar(select(Incident.id))
        assert incident_id is not None
        for user in s.scalars(select(User)):
            viewer = Viewer.of(user)
            seen = {c.slug for c in list_customers(s, viewer)}
            assert seen == EXPECTED[user.email], user.email
            if "tokai-parts" in seen:
                assert access_customer_by_slug(s, viewer, "tokai-parts").slug == "tokai-parts"
                assert access_incident_by_id(s, viewer, incident_id).id == incident_id
                assert len(list_incidents(s, viewer)) == 1
            else:
                with pytest.raises(NotFound):
                    access_customer_by_slug(s, viewer, "tokai-parts")
                with pytest.raises(NotFound):
                    access_incident_by_id(s, viewer, incident_id)
                assert list_incidents(s, viewer) == []
            with pytest.raises(NotFound):  # absent answers the same as not-yours
                access_customer_by_slug(s, viewer, "no-such-company")


def test_demo_seed_is_idempotent_and_audited(any_db: Database) -> None:
    with any_db.session() as s:
        _, tokens = seed_demo(s)
    with any_db.session() as s:
        _, again = seed_demo(s)
        assert len(tokens) == 6 and again == {}
        assert s.scalar(select(AuditEntry).where(AuditEntry.action == "contract.create"))
        assert len(list(s.scalars(select(Organization)))) == 6
