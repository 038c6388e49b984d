"""The reading connection kept between requests (``KeptConnection``): handed to the next
request as it is when it is exactly as it was handed out, returned to the pool otherwise,
checked before use when it was kept long enough to have died, and never leaked."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, select, text

from pro_app import create_app
from pro_app.db.engine import (
    NO_TRANSACTION_OPTION, WRITE_OPTION, KeptConnection, driver_idle, make_engine, note_disconnect,
)
from tests.conftest import app_config, migrated_sqlite
from tests.factories import committed_started_patient


@pytest.fixture
def own_engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def _outside_transaction(engine: Engine) -> dict[str, object]:
    return {NO_TRANSACTION_OPTION: True} if engine.dialect.name == "sqlite" else {"isolation_level": "AUTOCOMMIT"}


def _kept(engine: Engine, idle_seconds: float = 60.0) -> KeptConnection:
    return KeptConnection(engine, _outside_transaction(engine), idle_seconds=idle_seconds)


def _pings(engine: Engine) -> list[object]:
    seen: list[object] = []
    ping = engine.dialect.do_ping

    def counting(dbapi_connection: object) -> bool:
        seen.append(dbapi_connection)
        return bool(ping(dbapi_connection))

    engine.dialect.do_ping = counting  # type: ignore[method-assign]
    return seen


def _driver(connection: Connection) -> object:
    return connection.connection.dbapi_connection


def test_a_released_connection_is_handed_to_the_next_user_as_it_is(own_engine: Engine) -> None:
    kept = _kept(own_engine)
    pings = _pings(own_engine)
    first = kept.connect()
    assert first.scalar(select(1)) == 1
    kept.release(first)
    assert not first.closed and own_engine.pool.checkedout() == 1  # kept out of the pool
    second = kept.connect()
    assert second is first and second.scalar(select(2)) == 2
    assert pings == []  # used a moment ago: not checked
    kept.release(second)
    kept.close()
    assert first.closed and own_engine.pool.checkedout() == 0


def test_only_a_connection_as_it_was_handed_out_is_kept(own_engine: Engine) -> None:
    kept = _kept(own_engine)
    writing = kept.connect().execution_options(**{WRITE_OPTION: True})  # a request that began writing
    kept.release(writing)
    assert writing.closed and own_engine.pool.checkedout() == 0
    in_transaction = kept.connect()
    _driver(in_transaction).execute("BEGIN")  # type: ignore[attr-defined]  # one only the driver knows of
    kept.release(in_transaction)
    assert in_transaction.closed and own_engine.pool.checkedout() == 0
    statements = kept.connect()
    statements.execute(select(1))  # SQLAlchemy records a transaction; none was begun
    assert statements.in_transaction()
    kept.release(statements)
    assert not statements.closed and not statements.in_transaction() and own_engine.pool.checkedout() == 1
    assert kept.connect() is statements
    statements.close()
    one, other = kept.connect(), kept.connect()
    kept.release(one)
    kept.release(other)  # one is kept already: this one goes back to the pool
    assert not one.closed and other.closed and own_engine.pool.checkedout() == 1
    kept.close()
    assert own_engine.pool.checkedout() == 0


def test_nothing_is_kept_when_every_use_must_be_checked(own_engine: Engine) -> None:
    kept = _kept(own_engine, idle_seconds=0)
    connection = kept.connect()
    kept.release(connection)
    assert connection.closed and own_engine.pool.checkedout() == 0


def test_disposing_of_the_engine_returns_the_kept_connection(own_engine: Engine) -> None:
    kept = _kept(own_engine)
    connection = kept.connect()
    kept.release(connection)
    own_engine.dispose()
    assert connection.closed and own_engine.pool.checkedout() == 0
    assert kept.connect() is not connection


def test_a_connection_kept_before_a_fork_is_not_used_by_the_child(own_engine: Engine) -> None:
    kept = _kept(own_engine)
    parents = kept.connect()
    kept.release(parents)
    connection, kept_at, _pid = kept._kept  # type: ignore[misc]
    kept._kept = (connection, kept_at, os.getpid() + 1)  # as a child process sees it
    childs = kept.connect()
    assert childs is not parents
    assert not parents.closed  # the parent's socket is left alone
    childs.close()
    parents.close()


def test_a_connection_kept_a_while_or_before_a_loss_is_checked_before_use(own_engine: Engine) -> None:
    kept = _kept(own_engine, idle_seconds=0.05)
    pings = _pings(own_engine)
    connection = kept.connect()
    kept.release(connection)
    time.sleep(0.1)
    assert kept.connect() is connection and len(pings) == 1  # alive: checked, then used
    kept.release(connection)
    note_disconnect(own_engine)  # another connection was found lost
    assert kept.connect() is connection and len(pings) == 2
    kept.release(connection)
    kept.close()


def test_a_dead_kept_connection_is_replaced(database_url: str, own_engine: Engine) -> None:
    if own_engine.dialect.name != "postgresql":
        pytest.skip("SQLite connections do not die while idle")
    kept = _kept(own_engine, idle_seconds=0.05)
    connection = kept.connect()
    backend = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    kept.release(connection)
    admin = make_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
    finally:
        admin.dispose()
    time.sleep(0.1)
    replacement = kept.connect()
    assert replacement is not connection and connection.closed
    assert replacement.scalar(select(1)) == 1
    kept.release(replacement)
    kept.close()


def test_the_driver_knows_whether_a_connection_is_idle(own_engine: Engine) -> None:
    with own_engine.connect() as connection:
        connection.scalar(select(1))  # a transaction began (SQLAlchemy's default)
        assert not driver_idle(_driver(connection))
        connection.rollback()
        assert driver_idle(_driver(connection))


def test_question_pages_in_a_row_read_on_one_connection_and_a_write_returns_it(tmp_path: Path) -> None:
    url = migrated_sqlite(tmp_path, "kept")
    token, assessment_id = committed_started_patient(url, "KEPT-1", "P-001")
    app = create_app(app_config(DATABASE_URL=url))
    engine = app.extensions["pro_db"].engine
    reading = app.extensions["pro_db"].reading
    try:
        client = app.test_client()
        assert client.get(f"/p/{token}").status_code == 303
        assert client.get("/q/1").status_code == 200
        kept = reading._kept[0]
        assert client.get("/q/2").status_code == 200
        assert reading._kept[0] is kept and engine.pool.checkedout() == 1
        # A form post reads on it, then writes on it: it goes back to the pool.
        saved = client.post("/q/2", data={"assessment": assessment_id, "value": "2", "go": "next",
                                          "request_id": "6f1c1c52-5a8e-4c53-9a53-0a4f1d2b3c4d"})
        assert saved.status_code == 303
        assert reading._kept is None and engine.pool.checkedout() == 0
        assert client.get("/q/3").status_code == 200
        assert reading._kept is not None
    finally:
        engine.dispose()
    assert engine.pool.checkedout() == 0


def test_a_request_that_failed_leaves_no_transaction_to_the_next(tmp_path: Path) -> None:
    """A failure after a read inside a transaction the driver began: the error page is sent, and
    the connection is not handed to the next request in that transaction."""
    from pro_app.extensions import database
    from pro_app.web.database import reads_only

    app = create_app(app_config(DATABASE_URL=migrated_sqlite(tmp_path, "failed")))

    @app.get("/read-then-fail")
    @reads_only
    def read_then_fail() -> str:
        connection = database.connection
        _driver(connection).execute("BEGIN")  # type: ignore[attr-defined]
        connection.execute(select(1))
        raise RuntimeError("a failure after reading")

    @app.get("/read")
    @reads_only
    def read() -> str:
        connection = database.connection
        assert driver_idle(_driver(connection))
        return str(connection.scalar(select(1)))

    engine = app.extensions["pro_db"].engine
    try:
        client = app.test_client()
        assert client.get("/read-then-fail").status_code == 500
        assert client.get("/read").status_code == 200  # on a connection in no transaction
    finally:
        engine.dispose()
