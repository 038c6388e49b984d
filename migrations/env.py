"""Alembic environment: needs no Flask app, only a database URL or a connection.

The URL comes from (in order) a connection handed over by the caller, the ``sqlalchemy.url``
option, ``PRO_DATABASE_URL``, or the embedded SQLite default. ``render_as_batch`` makes the
same migrations work on SQLite, which cannot ALTER most things in place.
"""

from __future__ import annotations

import os

from alembic import context

from pro_app.config import DEFAULT_INSTANCE_PATH
from pro_app.db.engine import make_engine
from pro_app.db.models import Base
from pro_app.db.types import UTCDateTime

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return (
        config.get_main_option("sqlalchemy.url")
        or os.environ.get("PRO_DATABASE_URL")
        or f"sqlite:///{DEFAULT_INSTANCE_PATH / 'pro-app.sqlite3'}"
    )


def render_item(type_: str, obj: object, _autogen_context: object) -> str | bool:
    """Render our column types as plain SQLAlchemy ones: migrations must not import app code."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(connection: object) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
        render_item=render_item,
    )


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, render_as_batch=True, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = _url()
    if url.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(os.path.abspath(url.removeprefix("sqlite:///"))), exist_ok=True)
    engine = make_engine(url)
    with engine.connect() as connection:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
