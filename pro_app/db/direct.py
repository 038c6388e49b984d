"""Hot read statements run on the driver's cursor, without SQLAlchemy's per-execution work.

Every patient request starts with one read: who is signed in, the questionnaire open for them
and, for the question page or an answer save, the stored answer or the save's receipt. Sent
through :meth:`Connection.execute`, SQLAlchemy sets up an execution context, processes the
parameters and builds a result object around the cursor each time: about a fifth of the
question page's CPU (docs/performance.md). A :class:`DirectRead` is the same Core ``select``,
compiled once per dialect, run on the DB-API cursor of the same connection with the columns'
own type conversions (SQLite's UTC datetimes, for one), its rows returned as named tuples.

It is a read only: nothing here writes, so the audit guard and the sessions' bookkeeping have
nothing to miss. SQLAlchemy's usual path is taken instead whenever the difference could be
noticed:

- something listens to the connection's cursor events (a statement counter, a tracer), or the
  engine logs its statements;
- the connection is in no transaction and would begin one (the reads outside a transaction of
  :mod:`pro_app.web.database`, ``pro_app_no_transaction`` on SQLite and ``AUTOCOMMIT`` on
  PostgreSQL, need none; a connection already in a transaction is read in it).

A driver error is raised as SQLAlchemy's own exception class for it (``OperationalError`` and so
on, parameters hidden); a lost connection is invalidated, and the pool checks every connection
it holds before handing it out again (:func:`pro_app.db.engine.note_disconnect`), so callers
and the web layer's error handling see what they would see from ``Connection.execute``.
"""

from __future__ import annotations

import logging
import weakref
from collections import namedtuple
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, MultipleResultsFound, NoResultFound, StatementError

from pro_app.db.engine import NO_TRANSACTION_OPTION, note_disconnect

_STATEMENT_LOG = logging.getLogger("sqlalchemy.engine.Engine")


@dataclass(frozen=True)
class _Compiled:
    sql: str
    construct_params: Callable[..., MutableMapping[str, Any]]
    positions: Sequence[str] | None  # the parameters' order, for positional paramstyles (SQLite's "?")
    bind: Mapping[str, Callable[[Any], Any]]
    result: tuple[Callable[[Any], Any] | None, ...]


class DirectRead:
    """A ``select`` run on the driver's cursor (see the module's description)."""

    def __init__(self, statement: Select[Any]) -> None:
        names = list(statement.selected_columns.keys())
        unnamed = [name for name in names if not name.isidentifier() or name.startswith("_")]
        if unnamed:  # a row's attributes are the columns' names, as SQLAlchemy's rows have them
            raise ValueError(f"label every selected expression of a direct read (unnamed: {', '.join(unnamed)})")
        self.statement = statement
        self._row = namedtuple("Row", names)  # type: ignore[misc]
        self._compiled: weakref.WeakKeyDictionary[Dialect, _Compiled] = weakref.WeakKeyDictionary()

    def all(self, connection: Connection, parameters: Mapping[str, Any]) -> list[Any]:
        """Every row, as ``connection.execute(statement, parameters).all()`` returns them."""
        if not self._can_go_direct(connection):
            return list(connection.execute(self.statement, dict(parameters)).all())
        compiled = self._compile(connection.dialect)
        try:
            values = compiled.construct_params(parameters)
            for name, process in compiled.bind.items():
                values[name] = process(values[name])
        except Exception as error:  # as SQLAlchemy reports a parameter it cannot convert
            raise StatementError(f"({type(error).__name__}) {error}", compiled.sql, None, error) from error
        arguments = [values[name] for name in compiled.positions] if compiled.positions is not None else values
        dbapi_connection = connection.connection.dbapi_connection
        assert dbapi_connection is not None  # a checked-out, valid connection
        cursor = None
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute(compiled.sql, arguments)
            rows = cursor.fetchall()
        except connection.dialect.loaded_dbapi.Error as error:
            lost = connection.dialect.is_disconnect(error, dbapi_connection, cursor)
            if lost:
                connection.invalidate(error)
                note_disconnect(connection.engine)
            raise DBAPIError.instance(
                compiled.sql, None, error, connection.dialect.loaded_dbapi.Error, hide_parameters=True,
                dialect=connection.dialect, connection_invalidated=lost,
            ) from error
        finally:
            if cursor is not None and not connection.invalidated:
                cursor.close()
        convert = compiled.result
        make = self._row
        return [make(*[value if process is None else process(value) for process, value in zip(convert, row)])
                for row in rows]

    def first(self, connection: Connection, parameters: Mapping[str, Any]) -> Any | None:
        rows = self.all(connection, parameters)
        return rows[0] if rows else None

    def one(self, connection: Connection, parameters: Mapping[str, Any]) -> Any:
        """The one row, as ``Result.one()`` gives it (and with its errors when there is not one)."""
        rows = self.all(connection, parameters)
        if not rows:
            raise NoResultFound("No row was found when one was required")
        if len(rows) > 1:
            raise MultipleResultsFound("Multiple rows were found when exactly one was required")
        return rows[0]

    @staticmethod
    def _can_go_direct(connection: Connection) -> bool:
        dispatch = connection.dispatch
        if dispatch.before_cursor_execute or dispatch.after_cursor_execute:
            return False
        if connection.engine.echo or _STATEMENT_LOG.isEnabledFor(logging.INFO):
            return False
        if connection.in_transaction():
            return True
        options = connection.get_execution_options()
        return bool(options.get(NO_TRANSACTION_OPTION)) or options.get("isolation_level") == "AUTOCOMMIT"

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled = self._compiled.get(dialect)
        if compiled is None:
            done = self.statement.compile(dialect=dialect)
            bind: dict[str, Callable[[Any], Any]] = {}
            for parameter, name in done.bind_names.items():
                process = parameter.type.dialect_impl(dialect).bind_processor(dialect)
                if process is not None:
                    bind[name] = process
            result = tuple(column.type.dialect_impl(dialect).result_processor(dialect, None)
                           for column in self.statement.selected_columns)
            compiled = _Compiled(done.string, done.construct_params, done.positiontup, bind, result)
            self._compiled[dialect] = compiled
        return compiled
