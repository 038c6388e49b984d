"""Shared fixtures.

Database tests run once per configured database: always an SQLite file, and PostgreSQL
when ``PRO_TEST_DATABASE_URL`` is set. The schema is created by the real migrations once per
database; each test then runs inside a transaction that is rolled back at its end (the
application's sessions join it through SAVEPOINTs), so tests never see each other's rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from pro_app import create_app
from pro_app.db.audit_guard import session_info
from pro_app.db.engine import make_engine, make_session_factory
from pro_app.db.migrate import upgrade

POSTGRES_URL = os.environ.get("PRO_TEST_DATABASE_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])
#: Every commit of the application (requests, CLI commands) fails in the tests if it changed
#: audited data without an audit event. ``db_session`` is the tests' own direct database
#: access (setting up and time-travelling rows) and is not guarded.
AUDIT_GUARD = session_info("raise")


@contextmanager
def scratch_postgres(suffix: str) -> Iterator[str]:
    """``<test database>_<suffix>``, created empty beside the test database and dropped at the
    end: for tests whose data must really be committed (or dumped and restored). Skips the
    test when no PostgreSQL server is configured."""
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL: PRO_TEST_DATABASE_URL is not set")
    parsed = make_url(POSTGRES_URL)
    name = f"{parsed.database}_{suffix}"
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield parsed.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def migrated_sqlite(folder: Path, name: str) -> str:
    """The URL of a new SQLite file ``folder/name.sqlite3``, migrated to head: for tests whose
    data must really be committed, on a database of their own."""
    url = f"sqlite:///{folder / f'{name}.sqlite3'}"
    upgrade(url)
    return url


def reset_postgres(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database migrated from empty to head by the real migrations."""
    if request.param == "postgresql":
        assert POSTGRES_URL is not None
        url = POSTGRES_URL
        reset_postgres(url)
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            yield connection
        finally:
            transaction.rollback()


@pytest.fixture
def db_session(connection: Connection) -> Iterator[Session]:
    session = make_session_factory(connection, join_transaction_mode="create_savepoint")()
    try:
        yield session
    finally:
        session.close()


@pytest.fixture
def guarded_session(connection: Connection) -> Iterator[Session]:
    """A session of the application's kind, guarded: an unaudited commit raises."""
    session = make_session_factory(connection, join_transaction_mode="create_savepoint", info=AUDIT_GUARD)()
    try:
        yield session
    finally:
        session.close()


def app_config(**overrides: object) -> dict[str, object]:
    config: dict[str, object] = {
        "ENV": "testing",
        "TESTING": True,
        "SECRET_KEY": "test-secret-key-not-for-production",
        "BASE_URL": "http://localhost",
        "SERVER_NAME": "localhost",
        # Forms are tested without tokens; dedicated tests switch CSRF protection back on.
        "WTF_CSRF_ENABLED": False,
        "AUDIT_GUARD": "raise",
    }
    config.update(overrides)
    return config


@pytest.fixture
def app(database_url: str, connection: Connection) -> Flask:
    app = create_app(app_config(DATABASE_URL=database_url))
    app.extensions["pro_db"].use_session_factory(
        make_session_factory(connection, join_transaction_mode="create_savepoint", info=AUDIT_GUARD)
    )
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
