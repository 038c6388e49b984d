"""``pro-app audit``: the audit trail."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from pro_app.extensions import database
from pro_app.services.audit import verify_chain


@click.group("audit")
def audit_group() -> None:
    """Audit trail tools."""


@audit_group.command("verify")
@with_appcontext
def verify_command() -> None:
    """Recompute the hash chain; exit 1 naming the first event that does not verify."""
    checked, broken = verify_chain(database.session)
    if broken is not None:
        click.echo(f"Audit trail BROKEN at event {broken.seq}: {broken.reason} ({checked} events verified before it).", err=True)
        raise SystemExit(1)
    click.echo(f"Audit trail intact: {checked} events verified.")
