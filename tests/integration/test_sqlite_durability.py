"""A commit on SQLite returns only once it is on stable storage, and its sync is no longer part
of the write turn.

On a file database in WAL mode SQLite commits with ``synchronous=NORMAL`` (the log is written,
not synced) and the connection syncs the log itself right after releasing the write turn, for
every transaction that wrote. These tests watch the real ``fsync`` calls (recording which
file each one synced and whether the write turn was free at that moment) rather than pulling
the power: what they prove is the order -- commit, turn released, log synced, commit returns
-- and that no writing commit returns without a sync.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from pro_app.db.engine import QueuedWriterConnection, _LogFile, make_durable, make_engine, writer_engine
from tests.syncs import Syncs

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads which file was synced from /proc")


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "durable.sqlite3"
    engine = writer_engine(make_engine(f"sqlite:///{path}"))
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE saves (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)"))
    engine.dispose()
    yield path


@pytest.fixture
def engines(database: Path) -> Iterator[Callable[[], Engine]]:
    made: list[Engine] = []

    def make() -> Engine:
        engine = make_engine(f"sqlite:///{database}")
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.dispose()


@pytest.fixture
def syncs(database: Path, monkeypatch: pytest.MonkeyPatch) -> Syncs:
    watched = Syncs(database)
    watched.install(monkeypatch)
    return watched


def _stored(database: Path) -> list[int]:
    with sqlite3.connect(database) as plain:
        return [row[0] for row in plain.execute("SELECT value FROM saves ORDER BY id")]


def test_a_file_database_commits_in_wal_mode_and_leaves_the_sync_to_the_connection(
    engines: Callable[[], Engine],
) -> None:
    with engines().connect() as connection:
        assert isinstance(connection.connection.dbapi_connection, QueuedWriterConnection)
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_a_memory_database_keeps_sqlites_own_full_sync() -> None:
    engine = make_engine("sqlite://")
    try:
        with engine.connect() as connection:
            assert not isinstance(connection.connection.dbapi_connection, QueuedWriterConnection)
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    finally:
        engine.dispose()


def test_a_writing_commit_syncs_the_log_after_releasing_the_write_turn(
    engines: Callable[[], Engine], syncs: Syncs, database: Path
) -> None:
    with writer_engine(engines()).begin() as connection:
        connection.execute(text("INSERT INTO saves (value) VALUES (1)"))
        assert not syncs.turn_is_free()  # the probe sees a held turn
        assert syncs.calls == []  # nothing synced before the commit
    assert (f"{database}-wal", True) in syncs.calls  # the log, with the turn already free
    assert all(free for _path, free in syncs.calls)
    assert _stored(database) == [1]


def test_a_write_in_a_deferred_transaction_is_synced_too(
    engines: Callable[[], Engine], syncs: Syncs, database: Path
) -> None:
    with engines().begin() as connection:  # a plain BEGIN: no write turn taken
        connection.execute(text("INSERT INTO saves (value) VALUES (2)"))
    assert f"{database}-wal" in syncs.paths()


def test_a_commit_that_wrote_nothing_syncs_nothing_unless_it_held_the_write_turn(
    engines: Callable[[], Engine], syncs: Syncs, database: Path
) -> None:
    engine = engines()
    with engine.begin() as connection:
        connection.execute(text("SELECT count(*) FROM saves")).scalar()
    assert syncs.calls == []
    # A transaction that held the turn is synced even when it changed no row: it may have
    # changed the schema, which SQLite's count of changed rows leaves out.
    with writer_engine(engine).begin() as connection:
        connection.execute(text("UPDATE saves SET value = 9 WHERE id = -1"))
    assert syncs.paths().count(f"{database}-wal") == 1


def test_a_failed_sync_fails_the_commit_and_the_next_commit_syncs_again(
    engines: Callable[[], Engine], syncs: Syncs, database: Path
) -> None:
    engine = writer_engine(engines())
    syncs.fail_with = errno.EIO
    with pytest.raises(OperationalError, match="disk I/O error"):
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO saves (value) VALUES (3)"))
    syncs.fail_with = None
    syncs.calls.clear()
    with engine.begin() as connection:  # the same pooled connection: its log is opened again
        connection.execute(text("INSERT INTO saves (value) VALUES (4)"))
    assert f"{database}-wal" in syncs.paths()
    # The failed commit was committed, but never acknowledged: its caller saw the error.
    assert _stored(database) == [3, 4]


def test_make_durable_syncs_what_another_connection_committed(
    engines: Callable[[], Engine], syncs: Syncs, database: Path
) -> None:
    writer, reader = writer_engine(engines()), engines()
    with writer.begin() as connection:
        connection.execute(text("INSERT INTO saves (value) VALUES (5)"))
    syncs.calls.clear()
    with reader.connect() as connection:
        assert connection.execute(text("SELECT value FROM saves")).scalar() == 5
        make_durable(connection)
    assert syncs.paths()[-1] == f"{database}-wal"  # (after the folder: the reader's first sync)


def test_make_durable_on_a_database_that_syncs_itself_does_nothing(syncs: Syncs) -> None:
    engine = make_engine("sqlite://")
    try:
        with engine.connect() as connection:
            make_durable(connection)
    finally:
        engine.dispose()
    assert syncs.calls == []


def test_the_log_is_opened_again_when_its_file_was_replaced(tmp_path: Path, syncs: Syncs) -> None:
    path = tmp_path / "log-wal"
    path.write_bytes(b"first")
    log = _LogFile(str(path))
    log.sync()
    path.unlink()  # as SQLite deletes the log when the last connection closes
    path.write_bytes(b"second")
    syncs.calls.clear()
    log.sync()
    # The folder is synced with the new file's name, then the new file itself.
    assert syncs.paths() == [str(tmp_path), str(path)]
    log.close()


def test_without_a_log_the_database_file_itself_is_synced(tmp_path: Path, syncs: Syncs) -> None:
    """A database taken out of WAL mode by another program is written in place."""
    database = tmp_path / "plain.sqlite3"
    database.write_bytes(b"pages")
    log = _LogFile(f"{database}-wal")
    log.sync()
    assert syncs.paths() == [str(database)]
