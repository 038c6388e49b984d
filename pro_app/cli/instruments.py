"""``pro-app instruments``: instrument wording (demo or licensed)."""

from __future__ import annotations

from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from pro_app.domain.errors import DomainError
from pro_app.extensions import database
from pro_app.services.texts import load_licensed_text, text_status


@click.group("instruments")
def instruments_group() -> None:
    """Instrument wording."""


@instruments_group.command("load-text")
@click.argument("instrument")
@click.argument("locale")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--by", "loaded_by", default="cli", help="Who is loading the text (kept in the audit trail).")
@with_appcontext
def load_text_command(instrument: str, locale: str, file: Path, loaded_by: str) -> None:
    """Load a site's licensed wording of INSTRUMENT for LOCALE from FILE (our JSON text format)."""
    session = database.session
    try:
        record = load_licensed_text(
            session, instrument_code=instrument, locale=locale, path=file,
            supported_locales=current_app.config["LOCALES"], actor=f"cli:{loaded_by}",
        )
        session.commit()
    except DomainError as error:
        session.rollback()
        raise click.ClickException(f"Text refused, nothing stored. {error}") from None
    click.echo(f"Loaded licensed {instrument} {record.instrument_version} text for {locale} (sha256 {record.checksum}).")


@instruments_group.command("text-status")
@with_appcontext
def text_status_command() -> None:
    """Per instrument and offered locale: is demo or licensed wording active?"""
    click.echo(f"{'instrument':<12}{'version':<9}{'locale':<9}{'source':<10}{'checksum':<18}loaded")
    for status in text_status(database.session, current_app.config["LOCALES"]):
        loaded = f"{status.loaded_at:%Y-%m-%d %H:%M} UTC by {status.loaded_by}" if status.loaded_at else ""
        click.echo(f"{status.instrument:<12}{status.version:<9}{status.locale:<9}{status.source:<10}{status.checksum[:16]:<18}{loaded}")
