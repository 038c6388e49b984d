"""Engine and session construction for SQLite (embedded) and PostgreSQL (scale-out).

No Flask here: the web layer, the CLI, migrations and tests all build sessions the same way.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


#: Execution option marking connections of transactions that will write (see ``writer_engine``).
WRITE_OPTION = "pro_app_writes"


def writer_engine(engine: Engine) -> Engine:
    """The same engine and pool, for transactions that write (``BEGIN IMMEDIATE`` on SQLite)."""
    return engine.execution_options(**{WRITE_OPTION: True})


def make_engine(url: str, *, sqlite_busy_timeout_ms: int = 15000, **kwargs: Any) -> Engine:
    """Create an engine with the connection settings each backend needs to protect data.

    SQLite: WAL journal (readers never block the writer), a busy timeout instead of
    immediate "database is locked" errors, foreign keys enforced, and synchronous=FULL so an
    acknowledged answer survives a power cut. pysqlite's own transaction handling is
    switched off and ``BEGIN`` emitted explicitly, as SQLAlchemy documents, so that
    SAVEPOINTs (used by tests and nested service calls) behave.
    """
    # Parameters and result rows carry answers, contact details and password hashes: never
    # in logs or error messages, whatever the log level (statements themselves still are).
    kwargs.setdefault("hide_parameters", True)
    _never_log_rows()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        kwargs.setdefault("connect_args", {}).setdefault("check_same_thread", False)
        engine = create_engine(url, **kwargs)
        _configure_sqlite(engine, sqlite_busy_timeout_ms)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


class _NoResultRows(logging.Filter):
    """Drops the "Row ..." and "Col ..." records SQLAlchemy writes at DEBUG level."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(("Row ", "Col ")))


def _never_log_rows() -> None:
    logger = logging.getLogger("sqlalchemy.engine.Engine")
    if not any(isinstance(f, _NoResultRows) for f in logger.filters):
        logger.addFilter(_NoResultRows())


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    in_memory = engine.url.database in (None, "", ":memory:")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if not in_memory:
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A transaction that will write takes the write lock at once: a deferred one that
        # read first could fail with "database is locked" instead of waiting its turn.
        immediate = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_session_factory(bind: Any, **kwargs: Any) -> sessionmaker[Session]:
    """Sessions never expire loaded objects on commit: a request commits once, at its end."""
    kwargs.setdefault("expire_on_commit", False)
    return sessionmaker(bind=bind, **kwargs)
