"""``pro-app create-user`` and ``pro-app reset-second-factor``."""

from __future__ import annotations

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from pro_app.db.models import Site, StaffUser
from pro_app.domain.errors import DomainError
from pro_app.extensions import database
from pro_app.services import second_factor
from pro_app.services.staff import create_staff_user, normalise_email


@click.command("create-user")
@click.argument("email")
@click.option("--role", type=click.Choice(["admin", "nurse", "analyst"]), required=True)
@click.option("--site", "sites", multiple=True, help="Site code (repeatable); admins see every site.")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              envvar="PRO_NEW_USER_PASSWORD", help="Prompted for when not given (or PRO_NEW_USER_PASSWORD).")
@with_appcontext
def create_user_command(email: str, role: str, sites: tuple[str, ...], password: str) -> None:
    """Create a staff account."""
    session = database.session
    site_ids = list(session.scalars(select(Site.id).where(Site.code.in_(sites)))) if sites else []
    if len(site_ids) != len(set(sites)):
        raise click.UsageError("Unknown site code in --site.")
    try:
        user = create_staff_user(session, email=email, password=password, role=role, site_ids=site_ids, actor="cli")
        session.commit()
    except DomainError as error:
        session.rollback()
        raise click.ClickException(str(error)) from None
    click.echo(f"Created {user.role} {user.email}.")


@click.command("reset-second-factor")
@click.argument("email")
@click.option("--reason", required=True, help="Why (kept in the audit trail), e.g. 'phone lost'.")
@with_appcontext
def reset_second_factor_command(email: str, reason: str) -> None:
    """Remove a staff account's second factor (e.g. the last administrator lost their phone)."""
    session = database.session
    user = session.scalars(select(StaffUser).where(StaffUser.email == normalise_email(email))).one_or_none()
    if user is None:
        raise click.ClickException(f"No staff account {email}.")
    try:
        second_factor.reset(session, user, actor="cli", reason=reason)
        session.commit()
    except DomainError as error:
        session.rollback()
        raise click.ClickException(str(error)) from None
    click.echo(f"Second factor of {user.email} removed; their sessions have ended.")
