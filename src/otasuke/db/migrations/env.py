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
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=url.startswith("sqlite"),
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
