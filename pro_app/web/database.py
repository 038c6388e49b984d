"""Flask glue for the database: one session per request (or CLI command), closed at teardown.

Views and commands call ``database.session`` and commit once at the end; anything left
uncommitted when the request ends is rolled back.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, g, has_request_context, request
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from pro_app.db import audit_guard
from pro_app.db.engine import make_engine, make_session_factory, writer_engine

_G_KEY = "_pro_db_session"


class Database:
    """Holds the engine and session factory of one app (``app.extensions['pro_db']``)."""

    def init_app(self, app: Flask) -> None:
        # Creating an engine opens no connection; the first query does.
        engine = make_engine(
            app.config["DATABASE_URL"], sqlite_busy_timeout_ms=app.config["SQLITE_BUSY_TIMEOUT_MS"]
        )
        # Every commit is checked for changes made without an audit event (pro_app.db.audit_guard).
        guard = audit_guard.session_info(app.config.get("AUDIT_GUARD", "log"))
        app.extensions["pro_db"] = _AppDatabase(
            engine, reader=make_session_factory(engine, info=guard),
            writer=make_session_factory(writer_engine(engine), info=guard),
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
            reads_only = has_request_context() and request.method in ("GET", "HEAD", "OPTIONS")
            session = (state.reader if reads_only else state.writer)()
            setattr(g, _G_KEY, session)
        return session

    @staticmethod
    def _close_session(_exc: BaseException | None) -> None:
        session: Session | None = g.pop(_G_KEY, None)
        if session is not None:
            try:
                session.close()
            except DBAPIError as error:
                # The connection died after the response was made (database restarted, or its
                # connections terminated): the transaction ended with it and the pool drops
                # the connection; the finished response must not become an error page.
                if not error.connection_invalidated:
                    raise


class _AppDatabase:
    def __init__(self, engine: Engine, *, reader: sessionmaker[Session], writer: sessionmaker[Session]) -> None:
        self.engine = engine
        self.reader: Any = reader
        self.writer: Any = writer

    def use_session_factory(self, factory: Any) -> None:
        """Serve every session from ``factory`` (tests bind it to a rolled-back transaction)."""
        self.reader = self.writer = factory
