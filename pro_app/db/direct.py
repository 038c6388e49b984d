"""Hot statements run on the driver's cursor, without SQLAlchemy's per-execution work.

Every patient request starts with one read (who is signed in, the questionnaire open for
them and, for the question page or an answer save, the stored answer or the save's receipt),
and every answer saved makes a few more statements (the questionnaire under its lock, the
receipt, the answer, the audit event). Sent through ``Connection.execute`` or
``Session.execute``, SQLAlchemy sets up an execution context, processes the parameters and
builds a result object around the cursor each time: about a fifth of the question page's CPU
and more of the save's (docs/performance.md). A :class:`DirectRead` (a ``select``) or
:class:`DirectWrite` (an ``INSERT``, ``UPDATE`` or ``DELETE``) is the same Core statement,
compiled once per dialect, run on the DB-API cursor of the same connection with the columns'
own type conversions (SQLite's UTC datetimes, for one); a read's rows come back as named tuples.

A write stays in the session's transaction, and does what the session's hooks do for a
statement sent through it (see :class:`DirectWrite`). SQLAlchemy's usual path is taken
instead whenever the difference could be noticed:

- something listens to the connection's cursor events (a statement counter, a tracer), or the
  engine logs its statements (:func:`pro_app.db.engine.statements_watched`);
- a read on a connection in no transaction that would begin one (the reads outside a
  transaction of :mod:`pro_app.web.database`, ``pro_app_no_transaction`` on SQLite and
  ``AUTOCOMMIT`` on PostgreSQL, need none; a connection already in a transaction is read in it);
- a write of which SQLAlchemy computes a column in Python (an ``onupdate`` default).

A driver error is raised as SQLAlchemy's own exception class for it (``OperationalError`` and so
on, parameters hidden); a lost connection is invalidated, and the pool checks every connection
it holds before handing it out again (:func:`pro_app.db.engine.note_disconnect`), so callers
and the web layer's error handling see what they would see from ``Connection.execute``.
"""

from __future__ import annotations

import weakref
from collections import namedtuple
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Delete, Insert, Select, TextClause, Update
from sqlalchemy.engine import CursorResult, Dialect
from sqlalchemy.exc import DBAPIError, MultipleResultsFound, NoResultFound, StatementError
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, TableClause

from pro_app.db.audit_guard import note_write
from pro_app.db.engine import (
    NO_TRANSACTION_OPTION, READ_ONLY_INFO, ReadOnlyRequest, note_disconnect, statements_watched,
)


@dataclass(frozen=True)
class _Compiled:
    sql: str
    construct_params: Callable[..., MutableMapping[str, Any]]
    positions: Sequence[str] | None  # the parameters' order, for positional paramstyles (SQLite's "?")
    bind: Mapping[str, Callable[[Any], Any]]
    result: tuple[Callable[[Any], Any] | None, ...]
    #: Whether the statement returns rows (a read, or a write with ``RETURNING``, which
    #: PostgreSQL's inserts have for their primary key): known here, as asking the cursor
    #: (``cursor.description``) costs psycopg about a microsecond per column on every statement.
    returns_rows: bool
    #: Columns SQLAlchemy computes in Python for this statement (``onupdate=utcnow``, say):
    #: such a statement always goes through SQLAlchemy, which fills them in.
    needs_python_defaults: bool = False


def _compile(statement: ClauseElement, dialect: Dialect, column_keys: list[str] | None = None,
             result_types: Sequence[Any] = (), returns_rows: bool | None = None) -> _Compiled:
    done = cast(SQLCompiler, statement.compile(dialect=dialect, column_keys=column_keys))
    if returns_rows is None:  # a read, or a Core write: returning what its compiled form says
        returns_rows = isinstance(statement, Select) or bool(done.effective_returning)
    bind: dict[str, Callable[[Any], Any]] = {}
    for parameter, name in done.bind_names.items():
        process = parameter.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            bind[name] = process
    result = tuple(type_.dialect_impl(dialect).result_processor(dialect, None) for type_ in result_types)
    prefetch = bool(done.insert_prefetch or done.update_prefetch)
    return _Compiled(done.string, done.construct_params, done.positiontup, bind, result, returns_rows, prefetch)


def _run(connection: Connection, compiled: _Compiled, parameters: Mapping[str, Any]) -> tuple[list[Any], int]:
    """Send ``compiled`` on the connection's DB-API cursor: its rows (if any) and row count."""
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
        cursor = _cursor_of(connection, dbapi_connection)
        cursor.execute(compiled.sql, arguments)
        rows = list(cursor.fetchall()) if compiled.returns_rows else []
        return rows, cursor.rowcount
    except connection.dialect.loaded_dbapi.Error as error:
        lost = connection.dialect.is_disconnect(error, dbapi_connection, cursor)
        if lost:
            connection.invalidate(error)
            note_disconnect(connection.engine)
        raise DBAPIError.instance(
            compiled.sql, None, error, connection.dialect.loaded_dbapi.Error, hide_parameters=True,
            dialect=connection.dialect, connection_invalidated=lost,
        ) from error


#: Pool record info key: the driver's connection and the cursor direct statements run on.
_CURSOR = "pro_app_direct_cursor"


def _cursor_of(connection: Connection, dbapi_connection: Any) -> Any:
    """The one driver cursor of ``dbapi_connection`` for direct statements, made on first use
    and kept with the pool's record of the connection (a new driver connection gets a new one).

    A cursor keeps what it learnt of earlier statements: psycopg's loader for each column type
    of a result, found again for every result of a new cursor, was a twentieth of the
    question page's CPU on PostgreSQL. Each statement's rows are all fetched before the next,
    so a cursor holds no open result between statements."""
    info = connection.connection.info
    kept = info.get(_CURSOR)
    if kept is not None and kept[0] is dbapi_connection and not getattr(kept[1], "closed", False):
        return kept[1]
    cursor = dbapi_connection.cursor()
    info[_CURSOR] = (dbapi_connection, cursor)
    return cursor


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
        compiled = self._compiled.get(connection.dialect)
        if compiled is None:
            compiled = _compile(self.statement, connection.dialect,
                                result_types=[column.type for column in self.statement.selected_columns])
            self._compiled[connection.dialect] = compiled
        rows, _count = _run(connection, compiled, parameters)
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
        if statements_watched(connection):
            return False
        if connection.in_transaction():
            return True
        options = connection.get_execution_options()
        return bool(options.get(NO_TRANSACTION_OPTION)) or options.get("isolation_level") == "AUTOCOMMIT"


@dataclass(frozen=True)
class Written:
    """What a :class:`DirectWrite` did: the rows of its ``RETURNING`` (as tuples), and how many
    rows an ``UPDATE`` or ``DELETE`` matched (as SQLAlchemy documents ``rowcount``: for an
    ``INSERT`` it means nothing reliable)."""

    rows: list[Any]
    rowcount: int

    def first(self) -> Any | None:
        return self.rows[0] if self.rows else None


class DirectWrite:
    """An ``INSERT``, ``UPDATE`` or ``DELETE`` of a session's transaction, run on the driver's
    cursor of the session's connection.

    The transaction stays the session's (begun, committed and rolled back by it); only the
    statement is sent past SQLAlchemy's execution. What the session's hooks do for a statement
    sent through it is done here: a session that may not write refuses it
    (:class:`~pro_app.db.engine.ReadOnlyRequest`), and the audit guard notes the table written
    (:func:`pro_app.db.audit_guard.note_write`). A textual statement names the table it writes,
    whether it inserts and whether it returns rows (``table``, ``insert``, ``returns_rows``: its
    ``RETURNING``); a Core statement's own form tells. The statement goes through
    ``Session.execute`` instead when its statements are watched or logged (see the module), and
    when SQLAlchemy computes a column of it in Python (an ``onupdate`` default).
    """

    def __init__(self, statement: Insert | Update | Delete | TextClause, *, table: str | None = None,
                 insert: bool | None = None, returns_rows: bool | None = None) -> None:
        if isinstance(statement, TextClause):
            if table is None or insert is None or returns_rows is None:
                raise ValueError("a textual direct write names its table, whether it inserts and whether it returns rows")
        else:
            table = statement.table.name if isinstance(statement.table, TableClause) else None
            if table is None:
                raise ValueError("a direct write's statement must write one table")
            insert = isinstance(statement, Insert)
        self.statement = statement
        self.table: str = table
        self.insert: bool = bool(insert)
        self._returns_rows = returns_rows if isinstance(statement, TextClause) else None
        # By dialect, then by the parameters' names (an INSERT's columns are the ones given).
        self._compiled: weakref.WeakKeyDictionary[Dialect, dict[tuple[str, ...], _Compiled]] = (
            weakref.WeakKeyDictionary())

    def execute(self, session: Session, parameters: Mapping[str, Any], *,
                connection: Connection | None = None) -> Written:
        """Run the statement in the session's transaction. ``connection``: the session's, as
        ``session.connection()`` gave it in this transaction, when the caller has it at hand
        (asking the session again costs about as much as the statement itself)."""
        if session.info.get(READ_ONLY_INFO):
            raise ReadOnlyRequest("a request sent a write statement while only reading")
        if connection is None:
            connection = session.connection()
        compiled = None if statements_watched(connection) else self._compile(connection.dialect, parameters)
        if compiled is None or compiled.needs_python_defaults:
            result = cast(CursorResult[Any], session.execute(self.statement, dict(parameters)))
            if result.returns_rows:
                rows = [tuple(row) for row in result.all()]
                written = Written(rows, len(rows))
            else:
                written = Written([], result.rowcount)
            if isinstance(self.statement, TextClause):  # the session's hooks note Core statements, not text
                note_write(session, self.table, insert=self.insert, rows=written.rowcount)
            return written
        rows, count = _run(connection, compiled, parameters)
        note_write(session, self.table, insert=self.insert, rows=count)
        return Written([tuple(row) for row in rows], count)

    def execute_alone(self, connection: Connection, parameters: Mapping[str, Any]) -> Written:
        """Run the statement as a transaction of its own, on a ``connection`` in autocommit
        mode (PostgreSQL; :meth:`pro_app.web.database.Database.connection_alone`): it is committed
        when this returns, or rolled back whole when it fails. No session sees it, so no audit
        guard either: such a statement must append its own audit event."""
        if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            raise ValueError("a statement run alone needs a connection in autocommit mode")
        compiled = None if statements_watched(connection) else self._compile(connection.dialect, parameters)
        if compiled is None or compiled.needs_python_defaults:
            result = connection.execute(self.statement, dict(parameters))
            if result.returns_rows:
                rows = [tuple(row) for row in result.all()]
                return Written(rows, len(rows))
            return Written([], result.rowcount)
        rows, count = _run(connection, compiled, parameters)
        return Written([tuple(row) for row in rows], count)

    def _compile(self, dialect: Dialect, parameters: Mapping[str, Any]) -> _Compiled:
        by_keys = self._compiled.get(dialect)
        if by_keys is None:
            by_keys = self._compiled[dialect] = {}
        keys = tuple(sorted(parameters))
        compiled = by_keys.get(keys)
        if compiled is None:
            column_keys = None if isinstance(self.statement, TextClause) else list(keys)
            compiled = by_keys[keys] = _compile(self.statement, dialect, column_keys, returns_rows=self._returns_rows)
        return compiled
