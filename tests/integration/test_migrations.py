"""The migrations build the schema on every database, and agree with the models."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from pro_app.db.engine import make_engine
from pro_app.db.migrate import alembic_config, upgrade
from pro_app.db.models import Base
from pro_app.services.audit import record_event


def _head() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def test_database_is_at_head(connection: Connection) -> None:
    assert MigrationContext.configure(connection).get_current_revision() == _head()


def test_models_and_migrations_agree(connection: Connection) -> None:
    context = MigrationContext.configure(connection, opts={"compare_type": True, "render_as_batch": True})
    assert compare_metadata(context, Base.metadata) == []


def test_every_model_table_exists(connection: Connection) -> None:
    assert set(Base.metadata.tables) <= set(inspect(connection).get_table_names())


def test_downgrade_to_empty_and_back(connection: Connection) -> None:
    """Runs inside the test's transaction (DDL is transactional on both databases)."""
    config = alembic_config(connection=connection)
    from alembic import command

    command.downgrade(config, "base")
    assert set(inspect(connection).get_table_names()) <= {"alembic_version"}
    command.upgrade(config, "head")
    assert set(Base.metadata.tables) <= set(inspect(connection).get_table_names())


def test_fresh_sqlite_file_is_created_and_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'fresh.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    with engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == _head()
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()


def test_audit_triggers_are_created_by_the_migration(connection: Connection, db_session) -> None:  # type: ignore[no-untyped-def]
    record_event(db_session, actor="test", action="probe", entity_type="test")
    db_session.flush()
    savepoint = connection.begin_nested()
    try:
        connection.execute(text("UPDATE audit_events SET actor = 'someone else'"))
    except Exception as error:  # the database itself refuses
        assert "append-only" in str(error)
        savepoint.rollback()
    else:  # pragma: no cover - the failure branch
        savepoint.rollback()
        raise AssertionError("the database allowed an UPDATE of audit_events")


def _at_revision_0008(tmp_path: Path, name: str) -> str:
    url = f"sqlite:///{tmp_path / name}"
    upgrade(url, "0008")
    return url


def _head_row(url: str) -> tuple[int, str] | None:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            row = connection.execute(text("SELECT last_seq, last_hash FROM audit_chain_head WHERE id = 1")).first()
            return None if row is None else (row.last_seq, row.last_hash)
    finally:
        engine.dispose()


def test_0009_makes_the_head_row_the_trigger_moves(tmp_path: Path) -> None:
    """Before 0009 the application made the head with the first event: an empty trail had
    none. 0009 makes it (the genesis, or the last event of a trail that lost its head row),
    and keeps a head that is there."""
    empty = _at_revision_0008(tmp_path, "empty.sqlite3")
    assert _head_row(empty) is None
    upgrade(empty)
    assert _head_row(empty) == (0, "0" * 64)

    headless = _at_revision_0008(tmp_path, "headless.sqlite3")
    engine = make_engine(headless)
    with engine.begin() as connection:
        for seq, prev, digest in ((1, "0" * 64, "a" * 64), (2, "a" * 64, "b" * 64)):
            connection.execute(text(
                "INSERT INTO audit_events (seq, occurred_at, actor, action, entity_type, prev_hash, hash) "
                "VALUES (:seq, CURRENT_TIMESTAMP, 'cli', 'probe', 'test', :prev, :hash)"
            ), {"seq": seq, "prev": prev, "hash": digest})
    engine.dispose()
    upgrade(headless)
    assert _head_row(headless) == (2, "b" * 64)

    kept = _at_revision_0008(tmp_path, "kept.sqlite3")
    engine = make_engine(kept)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO audit_chain_head (id, last_seq, last_hash) VALUES (1, 7, :h)"),
                           {"h": "c" * 64})
    engine.dispose()
    upgrade(kept)
    assert _head_row(kept) == (7, "c" * 64)
