"""Alembic migrations: they upgrade a populated database and match the models, on both engines."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from otasuke.db.engine import Database, alembic_config
from otasuke.db.models import Base
from otasuke.settings import Settings


def test_models_and_migrations_agree(any_db: Database) -> None:
    """The equivalent of `alembic check`: no difference left to autogenerate."""
    with any_db.engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    assert diff == []


def test_upgrade_keeps_rows_that_refer_to_altered_tables(settings: Settings) -> None:
    """SQLite alters by copying tables; rows referring to them must survive (foreign keys on)."""
    settings.data_dir.mkdir(parents=True)
    url = settings.effective_database_url
    command.upgrade(alembic_config(url), "0001")
    db = Database(url)
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO organizations (kind, slug, name, profile, created_at) "
                "VALUES ('customer', 'c1', 'C1', '{}', '2026-01-01 00:00:00')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO sensors (customer_id, kind, name, token_hash, token_prefix, timezone, "
                "silent_after_minutes, created_at, event_count) VALUES "
                "(1, 'fortigate', 's', 'h', 'p', 'Asia/Tokyo', 60, '2026-01-01 00:00:00', 0)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO events (customer_id, sensor_id, event_uid, source_format, observed_at, "
                "received_at, fields, raw, processed) VALUES "
                "(1, 1, 'e1', 'fortigate', '2026-01-01 00:00:00', '2026-01-01 00:00:00', '{}', '', 0)"
            )
        )
    db.migrate()
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM events WHERE sensor_id = 1")).scalar() == 1
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    db.dispose()
