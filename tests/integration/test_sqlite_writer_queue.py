"""SQLite writers take turns on an operating-system lock beside the database file, so a
waiting writer starts as soon as the one before it ends (rather than when SQLite's busy
handler next wakes it), and never waits longer than the busy timeout. In the main thread the
waiter blocks on the lock with an alarm as its deadline; in other threads, or where the
program uses SIGALRM itself, it polls. Both ways are tested.

These tests use SQLite files of their own: they hold the write lock across connections.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from pro_app.db import engine as engine_module
from pro_app.db.engine import QueuedWriterConnection, make_engine, writer_engine

# pytest-timeout's own deadline would hold SIGALRM (its default method): a thread keeps the
# time instead, so SIGALRM is free for the blocking wait, as in gunicorn's workers.
pytestmark = pytest.mark.timeout(300, method="thread")


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'queue.sqlite3'}"
    engine = make_engine(url)
    with writer_engine(engine).begin() as connection:
        connection.execute(text("CREATE TABLE saves (id INTEGER PRIMARY KEY, who TEXT NOT NULL)"))
    engine.dispose()
    yield url


def _writer(url: str, timeout_ms: int = 15000) -> Engine:
    return writer_engine(make_engine(url, sqlite_busy_timeout_ms=timeout_ms))


def test_file_databases_queue_their_writers_and_memory_databases_do_not(sqlite_file: str) -> None:
    with _writer(sqlite_file).connect() as connection:
        assert isinstance(connection.connection.dbapi_connection, QueuedWriterConnection)
        connection.execute(text("SELECT 1"))
    assert Path(f"{sqlite_file.removeprefix('sqlite:///')}-writers.lock").exists()
    with writer_engine(make_engine("sqlite://")).connect() as connection:
        assert not isinstance(connection.connection.dbapi_connection, QueuedWriterConnection)


def _in(where: str, action: Callable[[], Any]) -> Any:
    """Run ``action`` in the main thread or in a thread of its own; its result or exception."""
    if where == "main thread":
        return action()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = action()
        except BaseException as error:  # handed to the caller
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


def _alarm_untouched() -> None:
    """No deadline of a finished wait is left behind."""
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


WHERE = ["main thread", "other thread"]
#: How a writer waits, by where it runs.
WAITS = {"main thread": "blocking", "other thread": "polling"}


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ways writers waited for their turn, in order."""
    seen: list[str] = []
    for way in ("blocking", "polling"):
        original = getattr(QueuedWriterConnection, f"_wait_{way}")

        def recorded(self: QueuedWriterConnection, seconds: float, *, _way: str = way,
                     _original: Callable[..., bool] = original) -> bool:
            seen.append(_way)
            return _original(self, seconds)

        monkeypatch.setattr(QueuedWriterConnection, f"_wait_{way}", recorded)
    return seen


@pytest.mark.parametrize("where", WHERE)
def test_a_waiting_writer_starts_when_the_first_commits(sqlite_file: str, where: str, waits: list[str]) -> None:
    first, second = _writer(sqlite_file), _writer(sqlite_file)
    events: list[tuple[str, float]] = []
    holding = threading.Event()

    def hold_then_commit() -> None:
        with first.begin() as connection:
            connection.execute(text("INSERT INTO saves (who) VALUES ('first')"))
            holding.set()
            time.sleep(0.3)
            events.append(("first commits", time.monotonic()))

    thread = threading.Thread(target=hold_then_commit)
    thread.start()
    assert holding.wait(5)
    asked = time.monotonic()

    def write_second() -> None:
        with second.begin() as connection:  # waits for its turn, then writes
            events.append(("second begins", time.monotonic()))
            connection.execute(text("INSERT INTO saves (who) VALUES ('second')"))

    _in(where, write_second)
    thread.join()
    assert waits == [WAITS[where]]
    _alarm_untouched()
    assert [name for name, _ in events] == ["first commits", "second begins"]
    waited = events[1][1] - asked
    assert 0.2 < waited < 5, waited
    with first.connect() as connection:
        assert connection.execute(text("SELECT who FROM saves ORDER BY id")).scalars().all() == ["first", "second"]
    first.dispose()
    second.dispose()


@pytest.mark.parametrize("ending", ["rollback", "close"])
def test_the_turn_ends_with_a_rollback_or_a_closed_connection(sqlite_file: str, ending: str) -> None:
    engine = _writer(sqlite_file, timeout_ms=2000)
    connection = engine.connect()
    transaction = connection.begin()
    connection.execute(text("INSERT INTO saves (who) VALUES ('rolled back')"))
    dbapi_connection = connection.connection.dbapi_connection
    if ending == "rollback":
        transaction.rollback()
        connection.close()
    else:
        connection.invalidate()  # the pool closes the DBAPI connection
    assert dbapi_connection is not None
    other = _writer(sqlite_file, timeout_ms=2000)
    with other.begin() as second:  # would wait 2 s and fail if the turn were still held
        second.execute(text("INSERT INTO saves (who) VALUES ('next')"))
        assert second.execute(text("SELECT who FROM saves")).scalars().all() == ["next"]
    engine.dispose()
    other.dispose()


@pytest.mark.parametrize("where", WHERE)
def test_a_writer_gives_up_after_the_busy_timeout_with_sqlites_own_error(
    sqlite_file: str, where: str, waits: list[str]
) -> None:
    holder, waiter = _writer(sqlite_file), _writer(sqlite_file, timeout_ms=300)
    with holder.begin() as connection:
        connection.execute(text("INSERT INTO saves (who) VALUES ('holder')"))
        started = time.monotonic()

        def write_blocked() -> None:
            with waiter.begin() as blocked:
                blocked.execute(text("INSERT INTO saves (who) VALUES ('never')"))

        with pytest.raises(OperationalError, match="database is locked"):
            _in(where, write_blocked)
        assert 0.25 < time.monotonic() - started < 5
        assert waits == [WAITS[where]]
        _alarm_untouched()
    with waiter.begin() as connection:  # the holder is done: the waiter's turn now comes at once
        connection.execute(text("INSERT INTO saves (who) VALUES ('later')"))
        assert connection.execute(text("SELECT who FROM saves ORDER BY id")).scalars().all() == ["holder", "later"]
    holder.dispose()
    waiter.dispose()


def test_readers_do_not_queue(sqlite_file: str) -> None:
    holder = _writer(sqlite_file)
    reader = make_engine(sqlite_file, sqlite_busy_timeout_ms=300)
    with holder.begin() as connection:
        connection.execute(text("INSERT INTO saves (who) VALUES ('uncommitted')"))
        with reader.connect() as reading:  # WAL: reads the last committed state, no wait
            assert reading.execute(text("SELECT count(*) FROM saves")).scalar() == 0
    holder.dispose()
    reader.dispose()


def test_a_writer_outside_the_queue_is_waited_for_then_refused_with_sqlites_error(sqlite_file: str) -> None:
    """A program that writes without taking its turn on the lock file (a migration, the
    sqlite3 shell) holds the write lock: ``BEGIN IMMEDIATE`` waits in SQLite's busy handler, then
    fails with SQLite's own error as SQLAlchemy raises it, and leaves the turn to the next."""
    outsider = sqlite3.connect(sqlite_file.removeprefix("sqlite:///"), isolation_level=None)
    waiter = _writer(sqlite_file, timeout_ms=300)
    try:
        outsider.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked") as raised:
            with waiter.begin() as blocked:
                blocked.execute(text("INSERT INTO saves (who) VALUES ('never')"))
        assert 0.25 < time.monotonic() - started < 5
        assert raised.value.statement == "BEGIN IMMEDIATE"
        outsider.execute("ROLLBACK")
        with waiter.begin() as connection:  # the turn was given back: the next write goes ahead
            connection.execute(text("INSERT INTO saves (who) VALUES ('later')"))
            assert connection.execute(text("SELECT who FROM saves")).scalars().all() == ["later"]
    finally:
        outsider.close()
        waiter.dispose()


def test_a_program_using_sigalrm_keeps_its_handler_and_timer(sqlite_file: str, waits: list[str]) -> None:
    """The blocking wait borrows SIGALRM only when nothing else uses it: with a handler and a
    timer of the program's own, the waiter polls, and both are as they were afterwards."""
    rang: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, _frame: rang.append(signum))
    signal.setitimer(signal.ITIMER_REAL, 30)
    holder, waiter = _writer(sqlite_file), _writer(sqlite_file, timeout_ms=300)
    try:
        with holder.begin() as connection:
            connection.execute(text("INSERT INTO saves (who) VALUES ('holder')"))
            with pytest.raises(OperationalError, match="database is locked"):
                with waiter.begin() as blocked:
                    blocked.execute(text("INSERT INTO saves (who) VALUES ('never')"))
        assert waits == ["polling"]
        remaining, _interval = signal.getitimer(signal.ITIMER_REAL)
        assert 25 < remaining <= 30
        assert signal.getsignal(signal.SIGALRM) is not signal.SIG_DFL
        assert not rang
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        holder.dispose()
        waiter.dispose()


def test_a_deadline_that_comes_as_the_turn_is_taken_leaves_the_turn_taken(
    sqlite_file: str, monkeypatch: pytest.MonkeyPatch, waits: list[str]
) -> None:
    """The alarm may ring just after ``flock`` returned with the turn: the writer still has it
    (and writes), and gives it back at its commit, rather than failing while holding it."""
    real = engine_module._fcntl

    class AlarmAfterTheTurn:
        LOCK_EX, LOCK_NB, LOCK_UN = real.LOCK_EX, real.LOCK_NB, real.LOCK_UN

        @staticmethod
        def flock(fd: int, operation: int) -> None:
            real.flock(fd, operation)
            if operation == real.LOCK_EX:  # the blocking wait: the turn is taken, then the alarm
                raise engine_module._TurnDeadline

    holder, waiter = _writer(sqlite_file), _writer(sqlite_file)
    holding, released = threading.Event(), threading.Event()

    def hold_briefly() -> None:
        with holder.begin() as connection:
            connection.execute(text("INSERT INTO saves (who) VALUES ('holder')"))
            holding.set()
            released.wait(5)
            time.sleep(0.3)  # still holding when the waiter asks: it has to wait

    thread = threading.Thread(target=hold_briefly)
    thread.start()
    assert holding.wait(5)
    monkeypatch.setattr(engine_module, "_fcntl", AlarmAfterTheTurn)
    released.set()
    with waiter.begin() as connection:  # waits (blocking), meets the alarm, keeps the turn
        connection.execute(text("INSERT INTO saves (who) VALUES ('waiter')"))
    monkeypatch.setattr(engine_module, "_fcntl", real)
    thread.join()
    assert waits == ["blocking"]
    _alarm_untouched()
    with _writer(sqlite_file, timeout_ms=300).begin() as connection:  # the turn was given back
        assert connection.execute(text("SELECT who FROM saves ORDER BY id")).scalars().all() == ["holder", "waiter"]
    holder.dispose()
    waiter.dispose()
