"""``pro-app participants``."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import select

from pro_app.db.models import Participant, Study
from pro_app.domain.states import ParticipantStatus
from pro_app.extensions import database
from pro_app.services.access import issue_link


@click.group("participants")
def participants_group() -> None:
    """Participants."""


@participants_group.command("link")
@click.argument("subject_code")
@click.option("--study", "study_code", help="Study code (needed when the subject code exists in several studies).")
@with_appcontext
def link_command(subject_code: str, study_code: str | None) -> None:
    """Print a personal link (and code) for SUBJECT_CODE.

    Links are stored only as hashes, so an existing link cannot be shown again: this issues a
    new one, and any earlier link of the participant stops working.
    """
    session = database.session
    query = select(Participant).join(Study).where(Participant.subject_code == subject_code.strip().upper())
    if study_code:
        query = query.where(Study.code == study_code)
    matches = session.scalars(query).all()
    if not matches:
        raise click.ClickException(f"No participant {subject_code}" + (f" in study {study_code}." if study_code else "."))
    if len(matches) > 1:
        raise click.ClickException(f"{subject_code} exists in several studies; name one with --study.")
    participant = matches[0]
    if participant.status != ParticipantStatus.ACTIVE.value:
        raise click.ClickException(f"{participant.subject_code} is {participant.status}; no link is issued.")
    issued = issue_link(session, participant, actor="cli", valid_days=current_app.config["PATIENT_LINK_DAYS"])
    session.commit()
    base = current_app.config["BASE_URL"].rstrip("/")
    click.echo(f"{base}/p/{issued.token}")
    click.echo(f"Personal code: {issued.code} (valid until {issued.link.expires_at:%Y-%m-%d}; earlier links revoked)", err=True)
