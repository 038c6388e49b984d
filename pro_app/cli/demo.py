"""``pro-app seed-demo``: the demonstration study."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from pro_app.db.migrate import upgrade
from pro_app.extensions import database
from pro_app.services.demo import seed_demo


@click.command("seed-demo")
@click.option("--migrate", is_flag=True,
              help="First migrate the database to the latest revision (as 'pro-app db upgrade').")
@with_appcontext
def seed_demo_command(migrate: bool) -> None:
    """Create the demo study (once) and print the demo logins and a patient link.

    ``make run`` passes ``--migrate``: one process instead of two (each start of the app costs
    a second or two of imports).
    """
    if migrate:
        upgrade(current_app.config["DATABASE_URL"])
    session = database.session
    try:
        info = seed_demo(session, link_days=current_app.config["PATIENT_LINK_DAYS"])
        session.commit()
    except Exception:
        session.rollback()
        raise
    base = current_app.config["BASE_URL"].rstrip("/")
    click.echo("Demo study created." if info.created else "Demo study already present; issued a fresh patient link.")
    click.echo("Staff logins (demonstration only):")
    for role, email, password in info.logins:
        click.echo(f"  {role:<8} {email:<24} {password}")
    click.echo(f"Patient link:  {base}/p/{info.patient_token}")
    click.echo(f"Patient code:  {info.patient_code}  (type it at {base}/start)")
