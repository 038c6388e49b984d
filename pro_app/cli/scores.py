"""``pro-app rescore``: recompute stored scale scores."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from pro_app.extensions import database
from pro_app.services.scores import rescore


@click.command("rescore")
@click.option("--study", "study_code", help="Only this study (code); default: every study.")
@with_appcontext
def rescore_command(study_code: str | None) -> None:
    """Recompute the scores of every completed assessment from its stored answers."""
    session = database.session
    try:
        summary = rescore(session, study_code=study_code, actor="cli")
        session.commit()
    except Exception:
        session.rollback()
        raise
    click.echo(f"Re-scored {summary.assessments} assessments; {summary.changed} had changed scores.")
