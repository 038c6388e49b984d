"""Engine and session construction for SQLite (embedded) and PostgreSQL (scale-out).

No Flask here: the web layer, the CLI, migrations and tests all build sessions the same way.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import threading
import time
import weakref
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import Pool

try:
    import fcntl as _fcntl
except ImportError:  # not POSIX: writers wait in SQLite's busy handler alone
    _fcntl = None  # type: ignore[assignment]


#: Execution option marking connections of transactions that will write (see ``writer_engine``).
WRITE_OPTION = "pro_app_writes"
#: Execution option of SQLite connections that only read and need no snapshot across their
#: statements: no ``BEGIN`` is sent, so each statement runs as its own transaction (as
#: ``AUTOCOMMIT`` does on PostgreSQL). Reads only: a write there would be committed by SQLite
#: without the sync that :meth:`QueuedWriterConnection.commit` adds.
NO_TRANSACTION_OPTION = "pro_app_no_transaction"
#: ``Session.info`` key of a session that must not write (a page view, or the reading part of
#: a request that writes later: see :mod:`pro_app.web.database`).
READ_ONLY_INFO = "pro_app_read_only"


class ReadOnlyRequest(RuntimeError):
    """A request tried to write while it may only read: a page view marked ``reads_only``,
    or on SQLite a request marked ``reads_first`` before ``begin_writing`` (its reads run
    outside a transaction: a write there would not be atomic)."""


_STATEMENT_LOG = logging.getLogger("sqlalchemy.engine.Engine")


def statements_watched(connection: Connection) -> bool:
    """Whether something would miss a statement sent on the driver past SQLAlchemy: cursor
    event listeners (of the engine or the connection), or statement logging."""
    dispatch = connection.dispatch
    if dispatch.before_cursor_execute or dispatch.after_cursor_execute:
        return True
    return bool(connection.engine.echo) or _STATEMENT_LOG.isEnabledFor(logging.INFO)


def writer_engine(engine: Engine) -> Engine:
    """The same engine and pool, for transactions that write (``BEGIN IMMEDIATE`` on SQLite)."""
    return engine.execution_options(**{WRITE_OPTION: True})


def make_engine(
    url: str, *, sqlite_busy_timeout_ms: int = 15000, ping_idle_after_ms: int = 1000, **kwargs: Any
) -> Engine:
    """Create an engine with the connection settings each backend needs to protect data.

    SQLite: WAL journal (readers never block the writer), a busy timeout instead of
    immediate "database is locked" errors, foreign keys enforced, and every commit that wrote
    on stable storage before it returns, so an acknowledged answer survives a power cut: the
    log is synced by the connection itself just after the write turn is released
    (:class:`QueuedWriterConnection`), elsewhere by SQLite (synchronous=FULL). pysqlite's own
    transaction handling is switched off and ``BEGIN`` emitted explicitly, as SQLAlchemy
    documents, so that SAVEPOINTs (used by tests and nested service calls) behave.

    PostgreSQL: every connection's session works in UTC (:func:`_configure_postgresql`), and
    a pooled connection that sat idle for more than ``ping_idle_after_ms`` is checked before
    use (:func:`_ping_idle_connections`).
    """
    # Parameters and result rows carry answers, contact details and password hashes: never
    # in logs or error messages, whatever the log level (statements themselves still are).
    kwargs.setdefault("hide_parameters", True)
    _never_log_rows()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        connect_args = kwargs.setdefault("connect_args", {})
        connect_args.setdefault("check_same_thread", False)
        if _fcntl is not None and parsed.database not in (None, "", ":memory:"):
            connect_args.setdefault("factory", QueuedWriterConnection)
        engine = create_engine(url, **kwargs)
        _note_lost_connections(engine)
        _configure_sqlite(engine, sqlite_busy_timeout_ms)
        return engine
    engine = create_engine(url, **kwargs)
    _note_lost_connections(engine)
    if parsed.get_backend_name() == "postgresql":
        _configure_postgresql(engine)
    if not kwargs.get("pool_pre_ping"):
        _ping_idle_connections(engine, ping_idle_after_ms / 1000)
    return engine


#: ``Pool`` record info key: when the connection went back to the pool (monotonic seconds).
_CHECKED_IN_AT = "pro_app_checked_in_at"
#: When a connection of each pool was last found lost outside SQLAlchemy's own error handling
#: (monotonic seconds; see :func:`note_disconnect`).
_LOST_AT: weakref.WeakKeyDictionary[Pool, float] = weakref.WeakKeyDictionary()


def note_disconnect(engine: Engine) -> None:
    """A connection of ``engine`` was found lost by a statement run on the driver itself
    (:mod:`pro_app.db.direct`), which SQLAlchemy did not see: as SQLAlchemy does after a lost
    connection, every connection the pool holds now is suspect, so each is checked before it is
    used again (a dead one is replaced, see :func:`_ping_idle_connections`)."""
    _LOST_AT[engine.pool] = time.monotonic()


def _note_lost_connections(engine: Engine) -> None:
    """A connection SQLAlchemy invalidated after an error (a lost connection, mostly) makes
    every other connection suspect too, as :func:`note_disconnect` does for the driver's own
    statements: SQLAlchemy renews the pool's connections at their next checkout, and this
    tells those checked out at the time (a :class:`KeptConnection`) to check theirs."""

    @event.listens_for(engine, "invalidate")
    def _invalidated(_dbapi_connection: Any, _record: Any, exception: BaseException | None) -> None:
        if exception is not None:
            _LOST_AT[engine.pool] = time.monotonic()


def _ping_idle_connections(engine: Engine, idle_seconds: float) -> None:
    """Check a pooled connection with a ``SELECT 1`` before use when it sat idle in the pool
    for more than ``idle_seconds``; a dead one is replaced (the pool tries another).

    A database restart, a failover or ``pg_terminate_backend`` kills connections while they
    wait in the pool. SQLAlchemy's ``pool_pre_ping`` checks every checkout, a round trip on
    every request; here a connection handed back a moment ago is used at once. One killed in
    that moment fails its request (answered 503, "nothing was lost: please try again"), and the
    pool then replaces every connection it held before the failure (SQLAlchemy's handling of a
    lost connection) or, when a read on the driver itself found it lost (:func:`note_disconnect`),
    checks each of them before use.
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in_at = record.info.get(_CHECKED_IN_AT)
        if checked_in_at is None:
            return  # new
        if time.monotonic() - checked_in_at <= idle_seconds and checked_in_at > _LOST_AT.get(engine.pool, 0.0):
            return  # used a moment ago, and no connection was lost since
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            raise DisconnectionError("a pooled connection died while idle") from error
        if not alive:
            raise DisconnectionError("a pooled connection died while idle")


def driver_idle(dbapi_connection: Any) -> bool:
    """Whether the driver's connection is open, usable and in no transaction (psycopg's
    ``info.transaction_status`` is IDLE; sqlite3's ``in_transaction`` is false)."""
    if getattr(dbapi_connection, "closed", False) or getattr(dbapi_connection, "broken", False):
        return False
    status = getattr(getattr(dbapi_connection, "info", None), "transaction_status", None)
    if status is not None:
        return bool(status.name == "IDLE")
    return not getattr(dbapi_connection, "in_transaction", True)


class KeptConnection:
    """One pooled connection outside a transaction, kept out of the pool between the requests
    that read that way, instead of being returned after each and checked out again.

    The patient's page views and the first part of their saves read outside a transaction
    (``AUTOCOMMIT`` on PostgreSQL, no ``BEGIN`` on SQLite). Checking a connection out of
    SQLAlchemy's pool, giving it those execution options, and handing it back (which resets its
    isolation level and rolls back) was a tenth of the CPU of a question page on PostgreSQL
    (docs/performance.md). A sync worker serves one request after another, so the connection
    the last one released is handed to the next as it is.

    At most one connection is kept (any thread may take it), and only one exactly as
    :meth:`connect` handed it out: still open and valid, with the same execution options (a
    request that began writing on it, or changed its options, returns it to the pool), and in
    no transaction on the driver's side (SQLAlchemy's record of one, which sends no ``BEGIN``
    with these options, is rolled back as the pool would on return). A connection kept longer than
    ``idle_seconds``, or kept before a connection of the pool was found lost, is checked with a
    ping before use, as the pool checks a connection idle that long (``_ping_idle_connections``);
    a dead one is dropped and the pool's connections are checked in turn. ``idle_seconds <= 0``
    keeps nothing. A kept connection is closed by ``Engine.dispose()`` and by :meth:`close`, and
    never used by a process forked after it was kept.
    """

    def __init__(self, engine: Engine, options: dict[str, Any], *, idle_seconds: float) -> None:
        self._engine = engine
        self._options = dict(options)
        #: Its execution options as handed out (a change of the engine's own makes none match).
        self._handed_out = engine.get_execution_options().union(self._options)
        self._idle_seconds = idle_seconds
        self._lock = threading.Lock()
        #: The connection, when it was kept (monotonic seconds) and by which process.
        self._kept: tuple[Connection, float, int] | None = None
        event.listen(engine, "engine_disposed", self._on_dispose)

    def connect(self) -> Connection:
        """The kept connection when it may be used as it is, else one checked out of the pool."""
        connection = self._take()
        if connection is None:
            connection = self._engine.connect().execution_options(**self._options)
        return connection

    def release(self, connection: Connection) -> None:
        """The end of a request's use of ``connection`` (from :meth:`connect`): kept for the next
        request when it is as it was handed out and none is kept, else returned to the pool."""
        if self._idle_seconds > 0 and self._reusable(connection):
            with self._lock:
                if self._kept is None:
                    self._kept = (connection, time.monotonic(), os.getpid())
                    return
        connection.close()

    def close(self) -> None:
        """Return the kept connection (if any, and this process's) to the pool."""
        with self._lock:
            kept, self._kept = self._kept, None
        if kept is not None and kept[2] == os.getpid():
            kept[0].close()

    def _on_dispose(self, _engine: Engine) -> None:
        self.close()

    def _take(self) -> Connection | None:
        with self._lock:
            kept, self._kept = self._kept, None
        if kept is None:
            return None
        connection, kept_at, pid = kept
        if pid != os.getpid():
            return None  # the parent process's socket: neither used nor closed here
        if connection.closed or connection.invalidated:
            connection.close()
            return None
        stale = time.monotonic() - kept_at > self._idle_seconds or kept_at <= _LOST_AT.get(self._engine.pool, 0.0)
        if stale and not self._alive(connection):
            connection.invalidate()
            connection.close()
            note_disconnect(self._engine)
            return None
        return connection

    def _alive(self, connection: Connection) -> bool:
        dialect = self._engine.dialect
        dbapi_connection = connection.connection.dbapi_connection
        assert dbapi_connection is not None  # checked out and not invalidated
        try:
            return bool(dialect.do_ping(dbapi_connection))
        except (dialect.loaded_dbapi.Error, DBAPIError):  # the driver's, or SQLAlchemy's wrapping it
            return False

    def _reusable(self, connection: Connection) -> bool:
        if connection.closed or connection.invalidated:
            return False
        if connection.get_execution_options() != self._handed_out:
            return False
        if connection.in_transaction():
            # SQLAlchemy's own record of statements run through it (no BEGIN was sent with
            # these options): ended as the pool would end it on return.
            connection.rollback()
        return driver_idle(connection.connection.dbapi_connection)


class _NoResultRows(logging.Filter):
    """Drops the "Row ..." and "Col ..." records SQLAlchemy writes at DEBUG level."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(("Row ", "Col ")))


def _never_log_rows() -> None:
    logger = logging.getLogger("sqlalchemy.engine.Engine")
    if not any(isinstance(f, _NoResultRows) for f in logger.filters):
        logger.addFilter(_NoResultRows())


def _configure_postgresql(engine: Engine) -> None:
    """Each new connection's session time zone is UTC, whatever the server's ``TimeZone``.

    Instants are stored as ``timestamptz`` and the app only ever wants them in UTC. psycopg
    returns them in the session's zone, and only a zone named ``UTC`` gives ``timezone.utc``
    directly: in any other (``Etc/UTC``, Debian's default, included) psycopg converts every
    instant read, and :class:`~pro_app.db.types.UTCDateTime` then converts it back to UTC.
    Set once per connection (not as a startup option, which connection poolers such as
    PgBouncer refuse by default)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        try:
            dbapi_connection.execute("SET TIME ZONE 'UTC'")
        finally:
            dbapi_connection.autocommit = autocommit


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    in_memory = engine.url.database in (None, "", ":memory:")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        if isinstance(dbapi_connection, QueuedWriterConnection):
            dbapi_connection.queue_on(f"{engine.url.database}-writers.lock", busy_timeout_ms / 1000)
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        journal = "memory" if in_memory else str(cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        if journal == "wal" and isinstance(dbapi_connection, QueuedWriterConnection):
            # The connection syncs the log after each commit that wrote, outside the write turn.
            dbapi_connection.sync_log_after_commit(f"{engine.url.database}-wal")
            cursor.execute("PRAGMA synchronous = NORMAL")
        else:
            cursor.execute("PRAGMA synchronous = FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A transaction that will write takes the write lock at once: a deferred one that
        # read first could fail with "database is locked" instead of waiting its turn.
        options = connection.get_execution_options()
        if options.get(NO_TRANSACTION_OPTION, False):
            return
        immediate = options.get(WRITE_OPTION, False)
        statement = "BEGIN IMMEDIATE" if immediate else "BEGIN"
        dbapi_connection = connection.connection.dbapi_connection
        if isinstance(dbapi_connection, QueuedWriterConnection):
            dbapi_connection.note_begin()
            if immediate:
                try:
                    dbapi_connection.wait_for_write_turn()
                except sqlite3.OperationalError as error:  # as SQLAlchemy reports the driver's errors
                    raise OperationalError(statement, None, error) from None
        if statements_watched(connection):
            connection.exec_driver_sql(statement)
            return
        try:  # on the driver itself, as pro_app.db.direct sends the patients' statements
            dbapi_connection.execute(statement)
        except sqlite3.Error as error:
            raise DBAPIError.instance(statement, None, error, sqlite3.Error, hide_parameters=True,
                                      dialect=connection.dialect) from None


# Waiting for the write turn: a writer holds it for a millisecond or two (its statements and
# the commit's fsync). In the main thread (gunicorn's synchronous workers serve requests
# there) the waiter blocks in ``flock`` with an alarm as its deadline, and the kernel wakes it
# the moment the turn is free. Elsewhere (a thread, or a program that has its own use for
# SIGALRM) it polls: finely at first -- each pause overshoots by the kernel's timer slack, and
# a coarse pause would leave the database idle after every turn -- and backs off only when the
# queue is long.
_FIRST_PAUSE = 0.0001
_FINE_POLLING = 0.005
_LONGEST_PAUSE = 0.001


class _TurnDeadline(Exception):
    """Raised by the alarm that ends a blocking wait for the write turn."""


def _end_blocking_wait(_signum: int, _frame: object) -> None:
    raise _TurnDeadline


def _alarm_is_free() -> bool:
    """Whether SIGALRM may bound a wait here: the main thread, no handler and no timer of
    anyone else's."""
    return (
        hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN)
        and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    )


def make_durable(connection: Connection) -> None:
    """Wait until every commit this connection can see is on stable storage.

    For a reply that acknowledges a write it did not commit itself -- the stored receipt of a
    repeated request, say -- which may have been committed by another worker a moment ago and
    not be synced yet (see :class:`QueuedWriterConnection`). PostgreSQL makes a commit visible
    only once it is durable (``synchronous_commit`` on), and so does SQLite elsewhere: nothing
    to wait for there."""
    dbapi_connection = connection.connection.dbapi_connection
    if isinstance(dbapi_connection, QueuedWriterConnection):
        dbapi_connection.sync_log()


class _LogFile:
    """The write-ahead log of a connection's database, opened by us to sync it.

    Held open, so that a failed write-back of the log is reported to our ``fsync`` (Linux
    reports it to the descriptors open when it happens). Opened again when the file was
    deleted meanwhile (SQLite deletes it when the last connection closes); the folder is synced
    when the log is opened, as SQLite syncs it when it creates the log, so that the log's name
    survives a power cut too."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def sync(self) -> None:
        if self._fd is not None and os.fstat(self._fd).st_nlink == 0:
            self.close()
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                # No log: the database left WAL mode (another program changed its journal),
                # and a commit wrote into the database file itself.
                database = os.open(self.path.removesuffix("-wal"), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(database)
                finally:
                    os.close(database)
                return
            folder = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


class QueuedWriterConnection(sqlite3.Connection):
    """A pysqlite connection whose write transactions take turns on an operating-system lock,
    and whose commits are synced to disk after the turn is released.

    SQLite lets one transaction write at a time. A writer that finds the database locked
    polls: its busy handler sleeps 1, 2, 5, 10 ... up to 100 ms between tries, so under
    concurrent saves a waiting request can sleep long after the lock was freed (hundreds of
    milliseconds at the 99th percentile). Writers here first queue on an exclusive
    ``flock`` on a file beside the database, taken just before ``BEGIN IMMEDIATE`` and
    released right after the commit or rollback, so each writer starts as soon as the one
    before it has finished. SQLite's own locking still guarantees correctness (a writer
    that does not queue, such as a migration or another program, is simply waited for as
    before); the queue only decides who goes next, and quickly.

    In the main thread a waiting writer blocks in ``flock``, woken by the kernel when the
    turn is free, with a one-shot ``SIGALRM`` as its deadline; in another thread, or when
    something else uses SIGALRM, it polls (see ``_FIRST_PAUSE``). Either way the wait is
    bounded by the busy timeout; past it the transaction fails with SQLite's own "database
    is locked" error, answered 503 by the web layer.

    Durability (with :meth:`sync_log_after_commit`, on a database in WAL mode): SQLite commits
    with ``synchronous=NORMAL`` -- the transaction's pages are written to the log, not synced --
    and :meth:`commit` then releases the write turn and syncs the log itself before it
    returns, for every transaction that wrote. A commit still returns only once it is on
    stable storage, as with ``synchronous=FULL``; but the next writer no longer waits for this
    one's ``fsync``, and one ``fsync`` covers every commit written to the log before it. A
    commit is visible to other connections from the moment SQLite has made it, a moment before
    it is synced: a reply that acknowledges a write it did not make (a repeated request's
    receipt) calls :func:`make_durable` first. A failed sync raises SQLite's "disk I/O error"
    from the commit: the transaction is committed but perhaps not on disk, and is not
    acknowledged as saved.
    """

    _lock_path: str | None = None
    _lock_fd: int | None = None
    _holding: bool = False
    _timeout: float = 15.0
    _log: _LogFile | None = None
    _changes_at_begin: int = 0

    def sync_log_after_commit(self, log_path: str) -> None:
        """Sync the log at ``log_path`` after each commit that wrote (the database must be in
        WAL mode, with ``synchronous=NORMAL``)."""
        self._log = _LogFile(log_path)

    def note_begin(self) -> None:
        """A transaction begins: its commit syncs the log if it changed rows or held the turn."""
        self._changes_at_begin = self.total_changes

    def sync_log(self) -> None:
        """Sync the log: every commit written to it so far is then on stable storage."""
        if self._log is None:
            return
        try:
            self._log.sync()
        except OSError as error:
            self._log.close()
            raise sqlite3.OperationalError(
                f"disk I/O error: the write-ahead log could not be synced ({error.strerror})"
            ) from error

    def queue_on(self, lock_path: str, timeout: float) -> None:
        self._lock_path = lock_path
        self._timeout = timeout

    def wait_for_write_turn(self) -> None:
        if self._holding or self._lock_path is None or _fcntl is None:
            return
        if self._lock_fd is None:
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if self._try_turn():
            return
        if self._timeout <= 0:
            taken = False
        elif _alarm_is_free():
            taken = self._wait_blocking(self._timeout)
        else:
            taken = self._wait_polling(self._timeout)
        if not taken:
            raise sqlite3.OperationalError("database is locked")

    def _try_turn(self) -> bool:
        assert self._lock_fd is not None and _fcntl is not None
        try:
            _fcntl.flock(self._lock_fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._holding = True
        return True

    def _wait_blocking(self, seconds: float) -> bool:
        """Wait in ``flock`` until the turn is free, or for ``seconds`` (an alarm interrupts
        the wait). True when the turn was taken."""
        assert self._lock_fd is not None and _fcntl is not None
        previous = signal.signal(signal.SIGALRM, _end_blocking_wait)
        try:
            try:
                signal.setitimer(signal.ITIMER_REAL, seconds)
                _fcntl.flock(self._lock_fd, _fcntl.LOCK_EX)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _TurnDeadline:
            pass  # the deadline, or an alarm just after the turn was taken: asked again below
        finally:
            signal.signal(signal.SIGALRM, previous)
        # Holding the turn already, this succeeds as well (the same open file's lock).
        return self._try_turn()

    def _wait_polling(self, seconds: float) -> bool:
        started = time.monotonic()
        deadline = started + seconds
        pause = _FIRST_PAUSE
        while True:
            now = time.monotonic()
            if now >= deadline:
                return False
            time.sleep(pause)
            if self._try_turn():
                return True
            if now - started >= _FINE_POLLING:
                pause = min(pause * 2, _LONGEST_PAUSE)

    def _end_write_turn(self) -> None:
        if self._holding and self._lock_fd is not None and _fcntl is not None:
            self._holding = False
            _fcntl.flock(self._lock_fd, _fcntl.LOCK_UN)

    def commit(self) -> None:
        wrote = self._holding or self.total_changes != self._changes_at_begin
        try:
            super().commit()
        finally:
            self._end_write_turn()
        if wrote:
            self.sync_log()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._end_write_turn()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._end_write_turn()
            if self._log is not None:
                self._log.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None


def make_session_factory(bind: Any, **kwargs: Any) -> sessionmaker[Session]:
    """Sessions never expire loaded objects on commit: a request commits once, at its end."""
    kwargs.setdefault("expire_on_commit", False)
    return sessionmaker(bind=bind, **kwargs)
