"""保存期間 (retention): delete a customer's day folders older than the contract allows.

A day folder is deleted when its whole day (UTC) lies more than ``days`` days
before today: with 90 days, on 2026-11-24 the folder ``date=2026-08-25`` stays
and ``date=2026-08-24`` goes. Only ``date=YYYY-MM-DD`` folders inside the
customer's own folder are ever touched.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from otasuke.eventstore.layout import EventStoreError, partitions

DEFAULT_RETENTION_DAYS = 90


@dataclass(slots=True)
class RetentionResult:
    slug: str
    kept: int = 0
    deleted: list[date] = field(default_factory=list)
    deleted_bytes: int = 0


def retention_days(settings: Any, contract: Any = None) -> int:
    """The contract's ``event_retention_days`` if it has one, else the setting, else 90."""
    for source in (contract, settings):
        days = getattr(source, "event_retention_days", None) if source is not None else None
        if isinstance(days, int) and days > 0:
            return days
    return DEFAULT_RETENTION_DAYS


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def enforce_retention(
    root: Path,
    slug: str,
    days: int = DEFAULT_RETENTION_DAYS,
    *,
    today: date | None = None,
    dry_run: bool = False,
    on_partition: Callable[[date, bool], None] | None = None,
) -> RetentionResult:
    """Delete ``slug``'s day folders older than ``days`` days; report what went."""
    if days < 1:
        raise EventStoreError("retention must be at least one day", field="days")
    today = today or datetime.now(UTC).date()
    oldest_kept = today - timedelta(days=days)
    result = RetentionResult(slug)
    for day, folder in partitions(root, slug):
        old = day < oldest_kept
        if old:
            result.deleted.append(day)
            result.deleted_bytes += _size(folder)
            if not dry_run:
                shutil.rmtree(folder)
        else:
            result.kept += 1
        if on_partition is not None:
            on_partition(day, old)
    return result
