"""Online backups of the embedded SQLite database.

A copy made with SQLite's online backup API in a single step is one consistent snapshot of
the database, taken while patients keep saving answers: in WAL mode the copy reads a
snapshot and never blocks a writer, and a writer never disturbs the copy. The copy is written
to a temporary file beside the destination, turned into a single self-contained file (no
``-wal`` beside it), checked with ``PRAGMA integrity_check``, flushed to disk and only then
renamed over the destination. The destination therefore always holds a complete, verified
backup -- the previous one or the new one -- never half a file, even if the machine stops
in the middle.

PostgreSQL is backed up with its own tools (``pg_dump``); see docs/operations.md.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from pro_app.db.types import utcnow
from pro_app.services.audit import record_event

#: SQLite's own files beside a database in WAL mode: never a backup destination.
_COMPANIONS = ("-wal", "-shm", "-journal")


class BackupError(Exception):
    """The backup cannot be made; the message says why and what to do."""


class BackupRefused(BackupError):
    """The request itself cannot be carried out (no such database, unusable destination)."""


@dataclass(frozen=True)
class BackupResult:
    """What was written: enough to recognise the file later (size, checksum, audit length)."""

    source: Path
    path: Path
    size: int
    pages: int
    tables: int
    audit_events: int
    sha256: str
    seconds: float


def sqlite_database_path(url: str) -> Path | None:
    """The database file of an SQLite URL, or None for any other database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if parsed.database in (None, "", ":memory:") or str(parsed.database).startswith("file::memory:"):
        raise BackupRefused("The database is in memory; there is no file to back up.")
    return Path(str(parsed.database)).expanduser().resolve()


def default_backup_name(now: datetime | None = None) -> str:
    """A file name that sorts by time, for a destination that is a folder."""
    return f"pro-app-{(now or utcnow()).strftime('%Y%m%dT%H%M%SZ')}.sqlite3"


def backup_sqlite(source: Path, destination: Path, *, busy_timeout_ms: int = 15000) -> BackupResult:
    """Copy the SQLite database ``source`` to ``destination`` (replaced atomically)."""
    started = time.monotonic()
    source = source.resolve()
    destination = destination.expanduser().resolve()
    if not source.is_file():
        raise BackupRefused(f"There is no database file at {source}.")
    if destination in {source} | {source.with_name(source.name + suffix) for suffix in _COMPANIONS}:
        raise BackupRefused(
            f"{destination} is the database or one of its own files; choose another file for the backup."
        )
    if not destination.parent.is_dir():
        raise BackupRefused(f"The folder {destination.parent} does not exist.")
    if destination.is_dir():
        raise BackupRefused(f"{destination} is a folder; name a file.")
    try:
        handle, temporary_name = tempfile.mkstemp(
            prefix=f".{destination.name}.", suffix=".partial", dir=destination.parent
        )
    except OSError as error:
        raise BackupRefused(f"Cannot write in {destination.parent}: {error.strerror}.") from None
    os.close(handle)
    temporary = Path(temporary_name)
    try:
        pages, tables, audit_events = _copy_and_check(source, temporary, busy_timeout_ms)
        _fsync(temporary)
        checksum = _sha256(temporary)
        size = temporary.stat().st_size
        os.replace(temporary, destination)
        _fsync_folder(destination.parent)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return BackupResult(
        source=source, path=destination, size=size, pages=pages, tables=tables, audit_events=audit_events,
        sha256=checksum, seconds=time.monotonic() - started,
    )


def _copy_and_check(source: Path, target: Path, busy_timeout_ms: int) -> tuple[int, int, int]:
    # mode=rw: a missing file is an error, never a new empty database.
    reader = sqlite3.connect(f"{source.as_uri()}?mode=rw", uri=True, timeout=busy_timeout_ms / 1000,
                             isolation_level=None)
    try:
        writer = sqlite3.connect(str(target), isolation_level=None)
        try:
            try:
                # pages=-1: everything in one step, so the copy is one snapshot; copying in
                # steps would restart whenever another connection commits.
                reader.backup(writer, pages=-1)
            except sqlite3.Error as error:
                raise BackupError(f"The database could not be read: {error}.") from None
            try:
                # The copy inherits WAL mode; a backup is one file that opens anywhere.
                writer.execute("PRAGMA journal_mode = DELETE")
                problems = [row[0] for row in writer.execute("PRAGMA integrity_check")]
            except sqlite3.DatabaseError as error:  # damaged beyond what the check can list
                problems = [str(error)]
            if problems != ["ok"]:
                raise BackupError(
                    "The copy failed its integrity check, so the database itself is damaged: "
                    + "; ".join(problems[:5]) + ". Keep the previous backups; see docs/operations.md."
                )
            pages = int(writer.execute("PRAGMA page_count").fetchone()[0])
            names = {row[0] for row in writer.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )}
            events = 0
            if "audit_events" in names:
                events = int(writer.execute("SELECT count(*) FROM audit_events").fetchone()[0])
            return pages, len(names), events
        finally:
            writer.close()
    finally:
        reader.close()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    with path.open("rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (where the platform allows opening a folder)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def record_backup(session: Session, result: BackupResult, *, actor: str) -> None:
    """Audit the backup in the live database: where it went and how to recognise the file."""
    record_event(
        session,
        actor=actor,
        action="database.backup",
        entity_type="database",
        after={
            "file": str(result.path),
            "bytes": result.size,
            "sha256": result.sha256,
            "audit_events": result.audit_events,
        },
    )
