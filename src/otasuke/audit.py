"""監査ログ (REQ-LAW): every administrative action, with who, what and on which object."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from otasuke.db.models import AuditEntry
from otasuke.tenancy.scope import Viewer


def record(
    s: Session,
    viewer: Viewer,
    action: str,
    target: str,
    *,
    customer_id: int | None = None,
    **details: Any,
) -> AuditEntry:
    """Add an audit entry in the caller's transaction (it commits with the change it records)."""
    entry = AuditEntry(
        actor_user_id=viewer.user_id,
        actor=viewer.email,
        action=action,
        target=target,
        customer_id=customer_id,
        details=details,
    )
    s.add(entry)
    return entry
