"""``pro-app backup``: an online, verified copy of the embedded SQLite database.

The application keeps running: the copy is one consistent snapshot taken with SQLite's
backup API, checked, and renamed into place only when complete (see
``pro_app.services.backup``). The backup is recorded in the audit trail of the live
database with the file's size and SHA-256. PostgreSQL is refused: it is backed up with
``pg_dump``, as docs/operations.md describes.
"""

from __future__ import annotations

from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy.exc import SQLAlchemyError

from pro_app.extensions import database
from pro_app.services.backup import (
    BackupError,
    BackupRefused,
    backup_sqlite,
    default_backup_name,
    record_backup,
    sqlite_database_path,
)

POSTGRES_ADVICE = (
    "pro-app backup copies the embedded SQLite database only; this installation uses {backend}. "
    "Back it up with pg_dump, for example: pg_dump --format=custom --file=pro-app.dump DATABASE "
    "(see 'Backups' in docs/operations.md for the schedule and the restore procedure)."
)


class InputError(click.ClickException):
    """Bad input or a database this command does not handle: exit status 2."""

    exit_code = 2


@click.command("backup")
@click.argument("path", type=click.Path(path_type=Path))
@with_appcontext
def backup_command(path: Path) -> None:
    """Copy the SQLite database to PATH while the application runs.

    PATH is a file (replaced atomically when the new copy is complete and verified) or an
    existing folder (a file named by the current UTC time is written in it). The copy is
    readable by its owner only: it holds health data.
    """
    try:
        source = sqlite_database_path(current_app.config["DATABASE_URL"])
    except BackupRefused as error:
        raise InputError(str(error)) from None
    if source is None:
        backend = database.engine.dialect.name
        raise InputError(POSTGRES_ADVICE.format(backend="PostgreSQL" if backend == "postgresql" else backend))
    target = path / default_backup_name() if path.is_dir() else path
    try:
        result = backup_sqlite(source, target, busy_timeout_ms=current_app.config["SQLITE_BUSY_TIMEOUT_MS"])
    except BackupRefused as error:
        raise InputError(str(error)) from None
    except BackupError as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(f"Could not write {target}: {error.strerror or error}") from None
    click.echo(
        f"Backup written to {result.path}: {result.size:,} bytes, {result.tables} tables, "
        f"{result.audit_events:,} audit events, integrity check ok, {result.seconds:.1f} s."
    )
    click.echo(f"SHA-256 {result.sha256}")
    session = database.session
    try:
        record_backup(session, result, actor="cli")
        session.commit()
    except SQLAlchemyError as error:
        session.rollback()
        raise click.ClickException(
            f"The backup is complete, but recording it in the audit trail failed ({type(error).__name__})."
        ) from None
