"""``pro-app backup`` and the documented restore procedures, end to end.

The backups are taken while another connection keeps writing (answers changed, participants
enrolled, each in its own transaction), the database is then lost, restored as
docs/operations.md says, and every table of the restored database must hold exactly the rows
of one moment at which the live database stood during the backup: the writer records the
full contents of the database inside each of its transactions, so every committed state is
known.

SQLite always; PostgreSQL (pg_dump / pg_restore) in databases of its own derived from
``PRO_TEST_DATABASE_URL``, because the test session owns that one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Connection, create_engine, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from pro_app import create_app
from pro_app.cli import main
from pro_app.db.engine import make_engine, make_session_factory, writer_engine
from pro_app.db.migrate import upgrade
from pro_app.db.models import Assessment, AuditEvent, Participant
from pro_app.domain.instruments import default_registry
from pro_app.domain.states import AssessmentMode
from pro_app.services.audit import verify_chain
from pro_app.services.backup import BackupError, BackupRefused, backup_sqlite
from pro_app.services.questionnaire import record_answer, start_assessment, submit_assessment
from tests.conftest import app_config, scratch_postgres
from tests.factories import enrol, link_for, make_study

INSTRUMENT = default_registry().get("qlq_c30", "3.0")
TEXT = default_registry().text("qlq_c30", "en")
GRACE = timedelta(hours=2)

State = dict[str, list[tuple[Any, ...]]]


# --- data, states and a concurrent writer ---------------------------------------------------

def dump(connection: Connection, tables: list[str]) -> State:
    """Every row of every table, in a stable order (the comparison is of whole states)."""
    return {
        name: sorted((tuple(row) for row in connection.execute(text(f'SELECT * FROM "{name}"'))), key=repr)
        for name in tables
    }


def table_names(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return sorted(inspect(connection).get_table_names())
    finally:
        engine.dispose()


def baseline(session: Session, participant: Participant) -> Assessment:
    return session.scalars(
        select(Assessment).where(Assessment.participant_id == participant.id).order_by(Assessment.planned_at)
    ).first()  # type: ignore[return-value]


def populate(url: str) -> int:
    """A study with participants, links, one submitted questionnaire (answers, 16 scores,
    audit events) and one half answered; returns the half-answered assessment's id."""
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            study = make_study(session, code="BACKUP-1")
            people = [enrol(session, study, f"B-{number:03d}", site_index=number % 2) for number in range(3)]
            for person in people:
                link_for(session, person)
            done, half = baseline(session, people[0]), baseline(session, people[1])
            for assessment, count in ((done, len(INSTRUMENT.items)), (half, 15)):
                start_assessment(session, assessment, mode=AssessmentMode.SELF, text=TEXT, actor="test")
                for index, item in enumerate(INSTRUMENT.items[:count]):
                    values = INSTRUMENT.response_set(item.response_set).values
                    record_answer(
                        session, assessment, INSTRUMENT, item_id=item.id, value=values[index % len(values)],
                        locale="en", actor="test", grace=GRACE,
                    )
            submit_assessment(session, done, INSTRUMENT, submission_key="backup-test-1", actor="test", grace=GRACE)
            session.commit()
            assert len(done.scores) == 16
            return half.id
    finally:
        engine.dispose()


class Writer(threading.Thread):
    """Keeps writing through the services, one short transaction after another.

    Inside each transaction it records the database's contents before and after its own
    changes. No other connection writes during the test except the backup command's audit
    event (which lands between two transactions and is seen by the next "before"), so every
    state the database ever committed is in ``states``.
    """

    def __init__(self, url: str, tables: list[str], assessment_id: int) -> None:
        super().__init__(daemon=True)
        self.engine = make_engine(url)
        self.factory = make_session_factory(writer_engine(self.engine))
        self.tables = tables
        self.assessment_id = assessment_id
        self.states: list[State] = []
        self.commits = 0
        self.error: BaseException | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            number = 0
            while not self.stopping.is_set():
                with self.factory() as session:
                    connection = session.connection()  # SQLite: BEGIN IMMEDIATE, the write lock
                    self.states.append(dump(connection, self.tables))
                    self.write(session, number)
                    session.flush()
                    self.states.append(dump(connection, self.tables))
                    session.commit()
                self.commits += 1
                number += 1
                time.sleep(0.005)
        except BaseException as error:  # reported by the test
            self.error = error
        finally:
            self.engine.dispose()

    def write(self, session: Session, number: int) -> None:
        if number % 4 == 3:
            study = session.scalars(select(Participant)).first().study  # type: ignore[union-attr]
            link_for(session, enrol(session, study, f"W-{number:04d}"))
            return
        assessment = session.get(Assessment, self.assessment_id)
        assert assessment is not None
        item = INSTRUMENT.items[number % 15]
        values = INSTRUMENT.response_set(item.response_set).values
        record_answer(
            session, assessment, INSTRUMENT, item_id=item.id, value=values[(number // 15 + 1) % len(values)],
            locale="en", actor="test:writer", grace=GRACE,
        )

    def wait_for_commits(self, count: int, seconds: float = 60.0) -> None:
        deadline = time.monotonic() + seconds
        while self.commits < count and self.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.error is None, self.error
        assert self.commits >= count, f"the writer committed {self.commits} times, expected {count}"

    def finish(self) -> None:
        self.stopping.set()
        self.join(timeout=60)
        assert self.error is None, self.error


@pytest.fixture
def writer_factory() -> Iterator[list[Writer]]:
    writers: list[Writer] = []
    yield writers
    for writer in writers:
        writer.stopping.set()
        writer.join(timeout=60)


def cli_app(url: str) -> Flask:
    return create_app(app_config(DATABASE_URL=url))


def matching_state(restored: State, writer: Writer) -> int:
    """Index of the writer's state the restored database equals (fails when none does)."""
    for index, state in enumerate(writer.states):
        if state == restored:
            return index
    differing = {
        name for name in restored if all(state.get(name) != restored[name] for state in writer.states)
    }
    pytest.fail(f"the restored database matches no state of the live database; tables never seen so: {differing}")


def audit_actions(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.scalars(select(AuditEvent.action).order_by(AuditEvent.seq)))
    finally:
        engine.dispose()


def write_after_restore(url: str) -> None:
    """The restored database takes new data (keys and sequences continue) and its audit
    chain, extended, still verifies."""
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            study = session.scalars(select(Participant)).first().study  # type: ignore[union-attr]
            link_for(session, enrol(session, study, "AFTER-RESTORE"))
            session.commit()
            checked, broken = verify_chain(session)
            assert broken is None and checked > 0
    finally:
        engine.dispose()


# --- SQLite -----------------------------------------------------------------------------------

def sqlite_database(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "live" / "pro-app.sqlite3"
    path.parent.mkdir()
    url = f"sqlite:///{path}"
    upgrade(url)
    return path, url


def test_backup_while_writing_then_restore_gives_back_the_state_at_backup_time(
    tmp_path: Path, writer_factory: list[Writer]
) -> None:
    path, url = sqlite_database(tmp_path)
    half = populate(url)
    tables = table_names(url)
    writer = Writer(url, tables, half)
    writer_factory.append(writer)
    writer.start()
    writer.wait_for_commits(3)

    target = tmp_path / "backups" / "nightly.sqlite3"
    target.parent.mkdir()
    app = cli_app(url)
    result = app.test_cli_runner().invoke(main, ["backup", str(target)])
    assert result.exit_code == 0, result.output
    assert f"Backup written to {target}" in result.output and "integrity check ok" in result.output
    during = writer.commits
    writer.wait_for_commits(during + 3)  # the live database moves on after the backup
    writer.finish()
    app.extensions["pro_db"].engine.dispose()

    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    assert f"SHA-256 {digest}" in result.output
    assert oct(target.stat().st_mode & 0o777) == "0o600", "a backup holds health data: owner only"
    assert sorted(p.name for p in target.parent.iterdir()) == ["nightly.sqlite3"], "no temporary file left"
    assert not Path(f"{target}-wal").exists()
    with sqlite3.connect(target) as copy:
        assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete", "one self-contained file"
    live_actions = audit_actions(url)
    assert live_actions.count("database.backup") == 1

    # The disaster: the application dies with changes in its WAL, then the database is lost.
    # Its stale -wal/-shm stay behind, as after a crash.
    crashed = sqlite3.connect(path, isolation_level=None)
    crashed.execute("PRAGMA wal_autocheckpoint = 0")
    crashed.execute("UPDATE answers SET value = 1")
    stale = tmp_path / "stale"
    stale.mkdir()
    for suffix in ("-wal", "-shm"):
        shutil.copy(f"{path}{suffix}", stale / suffix)
    crashed.close()
    path.unlink()
    for suffix in ("-wal", "-shm"):
        shutil.copy(stale / suffix, f"{path}{suffix}")

    # The documented restore: copy the backup over the database file, remove -wal and -shm,
    # migrate, verify the audit trail.
    shutil.copyfile(target, path)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    runner = cli_app(url).test_cli_runner()
    upgraded = runner.invoke(main, ["db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    verified = runner.invoke(main, ["audit", "verify"])
    assert verified.exit_code == 0 and "Audit trail intact" in verified.output, verified.output

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            restored = dump(connection, tables)
    finally:
        engine.dispose()
    index = matching_state(restored, writer)
    assert 0 < index < len(writer.states) - 1, "taken while the writer was active, not before or after it"
    assert "database.backup" not in audit_actions(url), "the copy is the state before its own audit event"
    assert len(restored["scale_scores"]) == 16 and restored["answers"] and restored["access_links"]
    write_after_restore(url)


def test_a_backup_never_waits_for_nor_contains_an_open_write(tmp_path: Path) -> None:
    path, url = sqlite_database(tmp_path)
    populate(url)
    engine = make_engine(url)
    try:
        with make_session_factory(writer_engine(engine))() as session:
            study = session.scalars(select(Participant)).first().study  # type: ignore[union-attr]
            enrol(session, study, "HELD-001")
            session.flush()  # holds SQLite's write lock, uncommitted
            result = backup_sqlite(path, tmp_path / "copy.sqlite3", busy_timeout_ms=200)
            session.commit()
        with sqlite3.connect(result.path) as copy:
            codes = {row[0] for row in copy.execute("SELECT subject_code FROM participants")}
        assert "HELD-001" not in codes and {"B-000", "B-001", "B-002"} <= codes
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT count(*) FROM participants WHERE subject_code = 'HELD-001'")) == 1
    finally:
        engine.dispose()
    assert result.tables >= 20 and result.audit_events > 0 and result.size == result.path.stat().st_size


def test_backup_into_a_folder_is_named_by_time_and_audited(tmp_path: Path) -> None:
    _path, url = sqlite_database(tmp_path)
    populate(url)
    folder = tmp_path / "backups"
    folder.mkdir()
    result = cli_app(url).test_cli_runner().invoke(main, ["backup", str(folder)])
    assert result.exit_code == 0, result.output
    (written,) = folder.iterdir()
    assert written.name.startswith("pro-app-") and written.name.endswith("Z.sqlite3")
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            event = session.scalars(select(AuditEvent).where(AuditEvent.action == "database.backup")).one()
            assert event.actor == "cli" and event.after is not None
            assert hashlib.sha256(written.read_bytes()).hexdigest() in event.after
            assert verify_chain(session)[1] is None
    finally:
        engine.dispose()


def test_a_damaged_database_gives_no_backup_and_keeps_the_previous_one(tmp_path: Path) -> None:
    path = tmp_path / "damaged.sqlite3"
    with sqlite3.connect(path) as database:
        database.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)")
        database.execute("CREATE INDEX ix_t_x ON t (x)")
        database.executemany("INSERT INTO t (x) VALUES (?)", [(f"row {n:06d}" * 3,) for n in range(3000)])
        page_size = database.execute("PRAGMA page_size").fetchone()[0]
        pages = database.execute("PRAGMA page_count").fetchone()[0]
    data = bytearray(path.read_bytes())
    start = (pages - 3) * page_size  # a leaf page of the index: claim far more cells than fit
    data[start + 3:start + 5] = b"\x7f\xff"
    path.write_bytes(bytes(data))
    target = tmp_path / "backup.sqlite3"
    target.write_bytes(b"the previous backup")

    with pytest.raises(BackupError, match="integrity check"):
        backup_sqlite(path, target)
    assert target.read_bytes() == b"the previous backup"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup.sqlite3", "damaged.sqlite3"]

    result = cli_app(f"sqlite:///{path}").test_cli_runner().invoke(main, ["backup", str(target)])
    assert result.exit_code == 1 and "integrity check" in result.output


def test_bad_destinations_and_missing_databases_are_refused(tmp_path: Path) -> None:
    path, url = sqlite_database(tmp_path)
    runner = cli_app(url).test_cli_runner()
    for destination, message in (
        (tmp_path / "missing" / "b.sqlite3", "does not exist"),
        (path, "the database or one of its own files"),
        (Path(f"{path}-wal"), "the database or one of its own files"),
    ):
        result = runner.invoke(main, ["backup", str(destination)])
        assert result.exit_code == 2 and message in result.output, result.output
    with pytest.raises(BackupRefused, match="no database file"):
        backup_sqlite(tmp_path / "nothing.sqlite3", tmp_path / "b.sqlite3")
    assert not (tmp_path / "nothing.sqlite3").exists(), "a missing database is never created"
    result = cli_app(f"sqlite:///{tmp_path / 'nothing.sqlite3'}").test_cli_runner().invoke(
        main, ["backup", str(tmp_path / "b.sqlite3")]
    )
    assert result.exit_code == 2 and "no database file" in result.output


def test_postgresql_is_refused_with_the_pg_dump_procedure() -> None:
    # No connection is needed to refuse: the URL says which database it is.
    app = cli_app("postgresql+psycopg://pro@127.0.0.1:1/pro_app")
    result = app.test_cli_runner().invoke(main, ["backup", "/tmp/never-written.sqlite3"])
    assert result.exit_code == 2
    assert "PostgreSQL" in result.output and "pg_dump" in result.output and "docs/operations.md" in result.output
    assert not Path("/tmp/never-written.sqlite3").exists()


# --- PostgreSQL -------------------------------------------------------------------------------

def _libpq(url: str) -> str:
    """The SQLAlchemy URL as pg_dump / pg_restore take it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def postgres_backup_database() -> Iterator[str]:
    """A database of its own next to the test database, dropped at the end."""
    missing = [tool for tool in ("pg_dump", "pg_restore") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"PostgreSQL client tools not installed: {', '.join(missing)}")
    with scratch_postgres("backup") as url:
        yield url


def test_postgresql_pg_dump_while_writing_then_pg_restore(
    postgres_backup_database: str, tmp_path: Path, writer_factory: list[Writer]
) -> None:
    url = postgres_backup_database
    upgrade(url)
    half = populate(url)
    tables = table_names(url)
    writer = Writer(url, tables, half)
    writer_factory.append(writer)
    writer.start()
    writer.wait_for_commits(3)

    dump_file = tmp_path / "pro-app.dump"
    dumped = subprocess.run(
        ["pg_dump", "--format=custom", f"--file={dump_file}", f"--dbname={_libpq(url)}"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )
    assert dumped.returncode == 0, dumped.stderr
    during = writer.commits
    writer.wait_for_commits(during + 3)
    writer.finish()

    # The database is lost; restore into an empty database of the same name, as documented.
    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{parsed.database}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    finally:
        admin.dispose()
    restored_run = subprocess.run(
        ["pg_restore", "--no-owner", "--exit-on-error", f"--dbname={_libpq(url)}", str(dump_file)],
        capture_output=True, text=True, timeout=120,
    )
    assert restored_run.returncode == 0, restored_run.stderr
    runner = cli_app(url).test_cli_runner()
    upgraded = runner.invoke(main, ["db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    verified = runner.invoke(main, ["audit", "verify"])
    assert verified.exit_code == 0 and "Audit trail intact" in verified.output, verified.output

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            restored = dump(connection, tables)
    finally:
        engine.dispose()
    index = matching_state(restored, writer)
    assert 0 < index < len(writer.states) - 1, "taken while the writer was active, not before or after it"
    assert len(restored["scale_scores"]) == 16
    write_after_restore(url)
