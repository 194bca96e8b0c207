"""Alembic environment: the URL comes from the config Otasuke builds, or the settings."""

from __future__ import annotations

from alembic import context

from otasuke.db.engine import make_engine
from otasuke.db.models import Base

config = context.config


def _url() -> str:
    given = config.get_main_option("sqlalchemy.url")
    if given:
        return given
    from otasuke.settings import get_settings

    return get_settings().effective_database_url


url = _url()


def run_offline() -> None:
    context.configure(
        url=url,
        target_metadata=Base.metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = make_engine(url)
    sqlite = url.startswith("sqlite")
    with engine.connect() as connection:
        if sqlite:
            # SQLite alters a table by copying it (batch mode); with foreign keys
            # enforced, dropping the old copy fails once other rows refer to it.
            # The pragma only works outside a transaction; it is restored below.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=url.startswith("sqlite"),
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        if sqlite:
            problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            if problems:
                raise RuntimeError(f"migration left broken foreign keys: {problems[:5]}")
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
