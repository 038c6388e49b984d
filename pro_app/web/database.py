"""Flask glue for the database: one session per request (or CLI command), closed at teardown.

Views and commands call ``database.session`` and commit once at the end; anything left
uncommitted when the request ends is rolled back.

Requests that may write take SQLite's write lock with their first statement, so everything
they do waits for and then holds off every other writer. The patient's saves and submission
are frequent and mostly reading (who is signed in, which questionnaire, is this a retry), so
their views are marked :func:`reads_first`: they read without the lock and call
:meth:`Database.begin_writing` just before writing, so that writers queue only for the
writing itself. Those reads run outside a transaction, as a page view's do (what the write
depends on is read again under the lock), so the write's ``BEGIN`` (SQLite's ``BEGIN
IMMEDIATE``) is the request's only ``BEGIN`` and its commit the only ``COMMIT``. On
PostgreSQL a write that fits in one statement may instead be sent before that, as a
transaction of its own (:meth:`Database.connection_alone`).

Pages that only show something are marked :func:`reads_only`: their GET requests run their
statements outside a transaction (each statement is its own), which saves the BEGIN and
ROLLBACK of every page view (round trips on PostgreSQL), and any write they attempt is refused.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from flask import Flask, current_app, g, has_request_context, request
from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction, sessionmaker

from pro_app.db import audit_guard
from pro_app.db.engine import (
    NO_TRANSACTION_OPTION, KeptConnection, READ_ONLY_INFO, WRITE_OPTION, ReadOnlyRequest, make_durable, make_engine,
    make_session_factory, writer_engine,
)

_G_KEY = "_pro_db_session"
_G_CONNECTION_KEY = "_pro_db_connection"
_READS_FIRST = "pro_app_reads_first"
_READS_ONLY = "pro_app_reads_only"
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

View = TypeVar("View", bound=Callable[..., Any])


def reads_first(view: View) -> View:
    """Mark a view that writes only after reading: its session starts without the write lock,
    and the view must call :meth:`Database.begin_writing` before its first write."""
    setattr(view, _READS_FIRST, True)
    return view


def reads_only(view: View) -> View:
    """Mark a view whose GET and HEAD requests only read.

    Those requests run their statements without a transaction (``AUTOCOMMIT`` on PostgreSQL,
    no ``BEGIN`` on SQLite): each statement sees what was committed when it started, and the
    page view costs no BEGIN and no ROLLBACK. A page whose reads must agree with each other
    (one snapshot) must not carry the mark. A write in such a request raises
    :class:`ReadOnlyRequest`, so a page that starts writing must drop the mark.
    """
    setattr(view, _READS_ONLY, True)
    return view


def _view_marked(mark: str) -> bool:
    view = current_app.view_functions.get(request.endpoint or "")
    return bool(getattr(view, mark, False))


def _reads_only() -> bool:
    return has_request_context() and request.method in ("GET", "HEAD") and _view_marked(_READS_ONLY)


def _reads_first() -> bool:
    return has_request_context() and request.method not in _SAFE_METHODS and _view_marked(_READS_FIRST)


def _reads_only_at_first() -> bool:
    if not has_request_context():
        return False
    if request.method in _SAFE_METHODS:
        return True
    return _view_marked(_READS_FIRST)


@event.listens_for(Session, "before_flush")
def _refuse_flush(session: Session, _context: UOWTransaction, _instances: object) -> None:
    if session.info.get(READ_ONLY_INFO) and (session.new or session.dirty or session.deleted):
        raise ReadOnlyRequest("a request changed data while only reading (reads_only, or reads_first before begin_writing)")


@event.listens_for(Session, "do_orm_execute")
def _refuse_statement(execute_state: ORMExecuteState) -> None:
    if execute_state.session.info.get(READ_ONLY_INFO) and (
        execute_state.is_insert or execute_state.is_update or execute_state.is_delete
    ):
        raise ReadOnlyRequest("a request sent a write statement while only reading (reads_only, or reads_first before begin_writing)")


class Database:
    """Holds the engine and session factory of one app (``app.extensions['pro_db']``)."""

    def init_app(self, app: Flask) -> None:
        # Creating an engine opens no connection; the first query does.
        engine = make_engine(
            app.config["DATABASE_URL"], sqlite_busy_timeout_ms=app.config["SQLITE_BUSY_TIMEOUT_MS"],
            ping_idle_after_ms=app.config["DATABASE_PING_IDLE_MS"],
        )
        # Every commit is checked for changes made without an audit event (pro_app.db.audit_guard).
        guard = audit_guard.session_info(app.config.get("AUDIT_GUARD", "log"))
        app.extensions["pro_db"] = _AppDatabase(
            engine, reader=make_session_factory(engine, info=guard),
            writer=make_session_factory(writer_engine(engine), info=guard),
            keep_idle_seconds=app.config["DATABASE_PING_IDLE_MS"] / 1000,
        )
        app.teardown_appcontext(self._close_session)

    @staticmethod
    def state(app: Flask | None = None) -> _AppDatabase:
        return (app or current_app).extensions["pro_db"]  # type: ignore[no-any-return]

    @property
    def engine(self) -> Engine:
        return self.state().engine

    @property
    def session(self) -> Session:
        """The session of the current request or command, created on first use.

        Requests that may write (anything but GET, HEAD, OPTIONS) and CLI commands get a
        session whose transactions take the write lock up front on SQLite.
        """
        session: Session | None = g.get(_G_KEY)
        if session is None:
            state = self.state()
            reading = g.get(_G_CONNECTION_KEY) or self._reading_connection(state)
            if reading is not None:  # reading outside a transaction: the session shares the connection
                session = state.reader(bind=reading)
            else:
                session = (state.reader if _reads_only_at_first() else state.writer)()
            if _reads_only() or reading is not None:  # a page view, or a reads_first request's reads
                session.info[READ_ONLY_INFO] = True
            setattr(g, _G_KEY, session)
        return session

    @staticmethod
    def _reading_connection(state: _AppDatabase) -> Connection | None:
        """A pooled connection outside a transaction, kept for the request, when the request
        reads that way: a page view marked :func:`reads_only`, or the reading part of a request
        marked :func:`reads_first`. None for anything else. It is the one the previous such
        request released, when that one left it as it got it (:class:`KeptConnection`)."""
        if not state.sessions_on_engine or not (_reads_only() or _reads_first()):
            return None
        connection = state.reading.connect()
        setattr(g, _G_CONNECTION_KEY, connection)
        return connection

    @property
    def connection(self) -> Connection:
        """The connection of the current request or command, for Core statements.

        A page view marked :func:`reads_only`, and a request marked :func:`reads_first` until it
        begins writing, gets a pooled connection outside a transaction without an ORM session,
        which would cost more than such a request's statements; a session asked for later in
        the request is bound to it. Anywhere else this is the session's connection.
        """
        connection: Connection | None = g.get(_G_CONNECTION_KEY)
        if connection is not None:
            return connection
        if g.get(_G_KEY) is None:
            connection = self._reading_connection(self.state())
            if connection is not None:
                return connection
        return self.session.connection()

    def connection_alone(self) -> Connection | None:
        """On PostgreSQL, the request's connection while it still reads outside a transaction
        (a request marked :func:`reads_first` before :meth:`begin_writing`): each statement sent
        on it is a transaction of its own, committed durably before it returns, for a write
        that fits in one statement (``DirectWrite.execute_alone``). None anywhere else, and on
        SQLite, whose writes take the write turn (:meth:`begin_writing`)."""
        state = self.state()
        if state.locks_to_write or not _reads_first():
            return None
        connection: Connection | None = g.get(_G_CONNECTION_KEY)
        if connection is None and g.get(_G_KEY) is None:
            connection = self._reading_connection(state)
        if connection is None or connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            return None
        return connection

    def make_durable(self) -> None:
        """Before a reply that acknowledges a write this request read rather than made (a
        repeated request's stored receipt): wait until what it read is on stable storage; on
        SQLite another worker may have committed it a moment ago and still be syncing it (see
        :func:`pro_app.db.engine.make_durable`)."""
        make_durable(self.connection)

    @property
    def locks_to_write(self) -> bool:
        """Whether a writing transaction takes the whole database's write lock (SQLite)."""
        return bool(self.state().locks_to_write)

    def begin_writing(self) -> Session:
        """End the request's reading (it wrote nothing) and begin the writing transaction.

        On SQLite the reads ran outside a transaction on the request's connection; the writing
        transaction begins on that connection and takes the write lock at once (``BEGIN
        IMMEDIATE``). Objects read before stay loaded and may be stale by now: what a write
        depends on is read again inside it (the services lock and re-read the rows they
        change). Calling it again while writing changes nothing. On PostgreSQL, which locks
        rows rather than the database, the connection leaves autocommit mode and the writing
        transaction begins with its next statement; a request that read inside a transaction
        (no reading connection: a CLI command, a staff form, the tests' sessions) simply goes
        on writing in it.
        """
        state = self.state()
        reading: Connection | None = g.get(_G_CONNECTION_KEY)
        session: Session | None = g.get(_G_KEY)
        if not state.locks_to_write and reading is None:
            return self.session
        if reading is None:  # a request that did not read first (a CLI command, a staff form)
            session = self.session
            if session.in_transaction():
                if session.connection().get_execution_options().get(WRITE_OPTION, False):
                    return session
                session.commit()  # a reading transaction (nothing was written)
            session.connection(execution_options={WRITE_OPTION: True})
            return session
        if session is not None and session.in_transaction():
            if reading.get_execution_options().get(WRITE_OPTION, False):
                return session
            session.commit()  # the session's reads: no BEGIN was sent, nothing was written
        if session is not None:
            session.info.pop(READ_ONLY_INFO, None)
        if reading.in_transaction():
            reading.commit()  # the Core statements' reads, likewise
        if state.locks_to_write:
            reading.execution_options(**{NO_TRANSACTION_OPTION: False, WRITE_OPTION: True})
        else:
            reading.execution_options(isolation_level=reading.default_isolation_level, **{WRITE_OPTION: True})
        if session is None:  # only Core statements read: the session starts here, writing
            session = state.writer(bind=reading)
            setattr(g, _G_KEY, session)
        session.connection()  # BEGIN IMMEDIATE on SQLite; PostgreSQL's BEGIN comes with the next statement
        return session

    @staticmethod
    def _close_session(exc: BaseException | None) -> None:
        session: Session | None = g.pop(_G_KEY, None)
        reading: Connection | None = g.pop(_G_CONNECTION_KEY, None)
        if session is not None:  # the session first: it may hold the reading connection's transaction
            _closed_as_done(session.close)
        if reading is not None:
            # Kept for the next request when it is as it was handed out (KeptConnection checks);
            # returned to the pool after an exception no error handler took.
            _closed_as_done(reading.close if exc is not None else partial(Database.state().reading.release, reading))


def _closed_as_done(close: Callable[[], None]) -> None:
    try:
        close()
    except DBAPIError as error:
        # The connection died after the response was made (database restarted, or its
        # connections terminated): the transaction ended with it and the pool drops
        # the connection; the finished response must not become an error page.
        if not error.connection_invalidated:
            raise


class _AppDatabase:
    def __init__(
        self, engine: Engine, *, reader: sessionmaker[Session], writer: sessionmaker[Session], keep_idle_seconds: float
    ) -> None:
        self.engine = engine
        self.reader: Any = reader
        self.writer: Any = writer
        #: False while tests bind every session to their own (rolled-back) transaction.
        self.sessions_on_engine = True
        #: How reads_only pages run their statements outside a transaction: no BEGIN, no ROLLBACK.
        self.outside_transaction: dict[str, Any] = (
            {NO_TRANSACTION_OPTION: True} if engine.dialect.name == "sqlite" else {"isolation_level": "AUTOCOMMIT"}
        )
        #: SQLite: a writing transaction takes the database's write lock up front.
        self.locks_to_write = engine.dialect.name == "sqlite"
        #: Where requests that read outside a transaction get their connection: the one the
        #: request before released, while it was used less than ``keep_idle_seconds`` ago (the
        #: pool's own idle check, ``PRO_DATABASE_PING_IDLE_MS``), else one from the pool.
        self.reading = KeptConnection(engine, self.outside_transaction, idle_seconds=keep_idle_seconds)
        # An app dropped without its engine being disposed (tests make many) returns it too.
        weakref.finalize(self, self.reading.close)

    def use_session_factory(self, factory: Any) -> None:
        """Serve every session from ``factory`` (tests bind it to a rolled-back transaction)."""
        self.reader = self.writer = factory
        self.sessions_on_engine = False
        self.reading.close()
