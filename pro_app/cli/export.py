"""``pro-app export``: write an analysis file (CSV, Excel, SDTM, FHIR, REDCap) for a study.

The file appears only when it is complete: it is written to a temporary file next to the
output and renamed into place, and an error leaves nothing behind. The records are read in a
read-only session, so a long export never holds the database's write lock (on SQLite) or the
audit chain's lock (everywhere) while patients are saving answers; the audit event naming
the format and filters is committed before the file is published.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import BinaryIO

import click
from flask.cli import with_appcontext
from sqlalchemy.orm import Session

from pro_app.domain.errors import DomainError
from pro_app.domain.records import ExportFilters
from pro_app.exports.formats import FORMATS
from pro_app.extensions import database
from pro_app.services.export_run import begin_snapshot, build_filters, check_format, write_export
from pro_app.services.exports import audit_export

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class InputError(click.ClickException):
    """Bad input: one line on stderr and exit status 2 (as for a usage error)."""

    exit_code = 2


def _day(option: str, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        if not _ISO_DATE.fullmatch(value.strip()):
            raise ValueError(value)
        return date.fromisoformat(value.strip())
    except ValueError:
        raise InputError(f"{option}: {value!r} is not a date; use YYYY-MM-DD.") from None


def _destination(output: str) -> Path | None:
    """The output path (``None`` for standard output), refused unless it can be written."""
    if output == "-":
        return None
    path = Path(output).expanduser()
    if path.is_dir():
        raise InputError(f"--output: {output} is a folder; name a file.")
    if not path.parent.is_dir():
        raise InputError(f"--output: the folder {path.parent} does not exist.")
    return path


def _reader() -> Session:
    """A session that only reads, one snapshot: no write lock is held while records stream out."""
    session: Session = database.state().reader()
    begin_snapshot(session)
    return session


def _audit(filters: ExportFilters, export_format: str, actor: str) -> None:
    session = database.session
    try:
        audit_export(session, filters, export_format=export_format, actor=actor)
        session.commit()
    except Exception:
        session.rollback()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _export_to_file(path: Path, filters: ExportFilters, export_format: str, actor: str) -> int:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            reader = _reader()
            try:
                count = write_export(reader, filters, export_format, out)
            finally:
                reader.close()
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # as an ordinary new file, not mkstemp's 0600
        _audit(filters, export_format, actor)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return count


def _export_to_stdout(filters: ExportFilters, export_format: str, actor: str) -> int:
    _audit(filters, export_format, actor)  # a stream cannot be held back: audit first
    sys.stdout.flush()
    out: BinaryIO = sys.stdout.buffer
    reader = _reader()
    try:
        count = write_export(reader, filters, export_format, out)
    finally:
        reader.close()
    out.flush()
    return count


@click.command("export")
@click.option("--format", "export_format", required=True, metavar="FORMAT",
              help="One of: " + ", ".join(FORMATS) + ".")
@click.option("--study", "study_code", required=True, metavar="CODE", help="Study code.")
@click.option("--output", required=True, metavar="PATH", help="File to write, or - for standard output.")
@click.option("--site", "sites", multiple=True, metavar="CODE", help="Only this site (repeatable).")
@click.option("--arm", "arms", multiple=True, metavar="CODE", help="Only this arm / dose group (repeatable).")
@click.option("--timepoint", "timepoints", multiple=True, metavar="CODE", help="Only this timepoint (repeatable).")
@click.option("--from", "date_from", metavar="YYYY-MM-DD", help="Planned on or after this day (study time zone).")
@click.option("--to", "date_to", metavar="YYYY-MM-DD", help="Planned on or before this day (study time zone).")
@click.option("--include-incomplete", is_flag=True,
              help="Also open, in-progress, missed and cancelled assessments (default: completed only).")
@click.option("--by", "exported_by", default=None, metavar="NAME", help="Who is exporting (kept in the audit trail).")
@with_appcontext
def export_command(
    export_format: str,
    study_code: str,
    output: str,
    sites: tuple[str, ...],
    arms: tuple[str, ...],
    timepoints: tuple[str, ...],
    date_from: str | None,
    date_to: str | None,
    include_incomplete: bool,
    exported_by: str | None,
) -> None:
    """Export a study's questionnaires and scores for analysis.

    The file is complete or absent: it is written next to PATH and renamed into place. Every
    export is recorded in the audit trail with its format and filters.
    """
    actor = f"cli:{exported_by}" if exported_by else "cli"
    try:
        check_format(export_format)
        path = _destination(output)
        first, last = _day("--from", date_from), _day("--to", date_to)
        reader = _reader()
        try:
            filters = build_filters(
                reader, study=study_code, site_codes=sites or None, arm_codes=arms or None,
                timepoint_codes=timepoints or None, date_from=first, date_to=last,
                include_incomplete=include_incomplete,
            )
        finally:
            reader.close()
        if path is None:
            count = _export_to_stdout(filters, export_format, actor)
        else:
            count = _export_to_file(path, filters, export_format, actor)
    except DomainError as error:
        raise InputError(str(error)) from None
    except OSError as error:
        raise click.ClickException(f"Could not write {output}: {error.strerror or error}") from None
    where = "standard output" if path is None else str(path)
    click.echo(f"Exported {count} {'record' if count == 1 else 'records'} ({export_format}) to {where}.", err=True)
