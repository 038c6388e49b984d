"""``pro-app db``: schema migrations (Alembic)."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from pro_app.db.migrate import upgrade


@click.group("db")
def db_group() -> None:
    """Database schema management."""


@db_group.command("upgrade")
@click.argument("revision", default="head")
@with_appcontext
def upgrade_command(revision: str) -> None:
    """Migrate the database to REVISION (default: the latest)."""
    upgrade(current_app.config["DATABASE_URL"], revision)
    click.echo(f"Database is at revision {revision}.")
