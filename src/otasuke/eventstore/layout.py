"""Where the event store keeps its files (hive partitioning, one folder per customer and day).

::

    <data_dir>/events/
        export-state.json                       the exporter's high-water mark per customer
        customer=tokai-parts/
            date=2026-11-24/
                ids-000000000101-000000000250.parquet
                ids-000000000251-000000000400.parquet

The day is the UTC date of ``observed_at``. A customer's folder name is built only
from its slug, and a slug is checked against :data:`SLUG` first, so no text can
name a folder outside ``events/``.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any

from otasuke.errors import OtasukeError

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
"""Customer slugs as ``tenancy.admin`` makes them (lower-case letters, digits, hyphens)."""
DATE_PREFIX = "date="
CUSTOMER_PREFIX = "customer="
STATE_FILE = "export-state.json"


class EventStoreError(OtasukeError):
    """The event store was asked for something it cannot do (bad slug, bad query)."""


def events_root(settings: Any) -> Path:
    """``event_store_dir`` if that setting exists and is set, else ``<data_dir>/events``."""
    configured = getattr(settings, "event_store_dir", None)
    return Path(configured) if configured else Path(settings.data_dir) / "events"


def check_slug(slug: str) -> str:
    if not SLUG.fullmatch(slug):
        raise EventStoreError(
            f"customer slug {slug!r} is not valid",
            field="customer",
            hint="2-63 lower-case letters, digits or hyphens (see otasuke customers)",
        )
    return slug


def customer_dir(root: Path, slug: str) -> Path:
    """The one folder holding a customer's events."""
    return root / f"{CUSTOMER_PREFIX}{check_slug(slug)}"


def partition_dir(root: Path, slug: str, day: date) -> Path:
    return customer_dir(root, slug) / f"{DATE_PREFIX}{day.isoformat()}"


def partition_day(path: Path) -> date | None:
    """The day of a ``date=YYYY-MM-DD`` folder, None for anything else."""
    if not path.name.startswith(DATE_PREFIX):
        return None
    try:
        return date.fromisoformat(path.name.removeprefix(DATE_PREFIX))
    except ValueError:
        return None


def partitions(root: Path, slug: str) -> list[tuple[date, Path]]:
    """A customer's day folders, oldest first."""
    base = customer_dir(root, slug)
    if not base.is_dir():
        return []
    found = [(day, p) for p in base.iterdir() if p.is_dir() and (day := partition_day(p))]
    return sorted(found)


def stored_slugs(root: Path) -> list[str]:
    """Slugs that have a folder in the store (also customers deleted since)."""
    if not root.is_dir():
        return []
    return sorted(
        p.name.removeprefix(CUSTOMER_PREFIX)
        for p in root.iterdir()
        if p.is_dir()
        and p.name.startswith(CUSTOMER_PREFIX)
        and SLUG.fullmatch(p.name.removeprefix(CUSTOMER_PREFIX))
    )
