"""The audit trail is append-only and any tampering is detected."""

from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import Connection, delete, event, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from pro_app.cli import main
from pro_app.db.engine import make_engine
from pro_app.db.migrate import upgrade
from pro_app.db.models import AuditEvent
from pro_app.db.models.audit import AuditTrailIsAppendOnly
from pro_app.services.audit import GENESIS_HASH, _event_hash, record_event, verify_chain
from tests.conftest import scratch_postgres


def _three_events(session: Session) -> list[AuditEvent]:
    """Three appended events, as read back from the database."""
    seqs = [
        record_event(session, actor="staff:1", action="thing.create", entity_type="thing", entity_id=7,
                     after={"value": 1}),
        record_event(session, actor="staff:1", action="thing.update", entity_type="thing", entity_id=7,
                     before={"value": 1}, after={"value": 2}, reason="typo"),
        record_event(session, actor="participant:3", action="answer.save", entity_type="answer", entity_id="9"),
    ]
    return list(session.scalars(select(AuditEvent).where(AuditEvent.seq.in_(seqs)).order_by(AuditEvent.seq)))


def test_events_chain_to_their_predecessor(db_session: Session) -> None:
    first, second, third = _three_events(db_session)
    assert (first.seq, second.seq, third.seq) == (1, 2, 3)
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash and third.prev_hash == second.hash
    assert len({first.hash, second.hash, third.hash}) == 3
    assert json.loads(second.before or "") == {"value": 1} and second.reason == "typo"
    assert verify_chain(db_session) == (3, None)


def test_chain_survives_a_round_trip_through_the_database(db_session: Session) -> None:
    _three_events(db_session)
    db_session.commit()
    db_session.expunge_all()
    assert verify_chain(db_session) == (3, None)


def test_orm_refuses_to_change_or_delete_events(db_session: Session) -> None:
    event = _three_events(db_session)[0]
    event.actor = "someone else"
    with pytest.raises(AuditTrailIsAppendOnly):
        db_session.flush()
    db_session.rollback()
    event = db_session.scalars(select(AuditEvent)).first()
    if event is not None:  # the rollback above undid the unflushed events
        db_session.delete(event)
        with pytest.raises(AuditTrailIsAppendOnly):
            db_session.flush()


@pytest.mark.parametrize("statement", [update(AuditEvent).values(actor="x"), delete(AuditEvent)])
def test_database_refuses_bulk_changes(db_session: Session, statement) -> None:  # type: ignore[no-untyped-def]
    _three_events(db_session)
    with pytest.raises(Exception, match="append-only"):
        db_session.execute(statement)


@pytest.mark.parametrize(
    "statement",
    [
        update(AuditEvent).values(actor="x"),
        update(AuditEvent).where(AuditEvent.seq == 2).values(reason=None).execution_options(synchronize_session=False),
        delete(AuditEvent).where(AuditEvent.seq == 3),
        update(AuditEvent.__table__).values(actor="x"),  # Core statements through the session too
        delete(AuditEvent.__table__),
    ],
    ids=["orm-update", "orm-update-where", "orm-delete", "core-update", "core-delete"],
)
def test_orm_refuses_bulk_statements_before_they_reach_the_database(db_session: Session, statement) -> None:  # type: ignore[no-untyped-def]
    _three_events(db_session)
    with pytest.raises(AuditTrailIsAppendOnly, match="append-only"):
        db_session.execute(statement)
    assert verify_chain(db_session) == (3, None)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_events SET actor = 'x'",
        "UPDATE audit_events SET reason = 'rewritten' WHERE seq = 2",
        "DELETE FROM audit_events WHERE seq = 3",
        "DELETE FROM audit_events",
    ],
)
def test_database_triggers_refuse_raw_sql(db_session: Session, connection: Connection, sql: str) -> None:
    """Whoever bypasses the application (psql, a script) meets the triggers of migration 0001."""
    _three_events(db_session)
    db_session.commit()
    with pytest.raises(DBAPIError, match="append-only"), connection.begin_nested():
        connection.exec_driver_sql(sql)
    assert verify_chain(db_session) == (3, None)


def test_database_refuses_core_statements_on_the_connection(db_session: Session, connection: Connection) -> None:
    _three_events(db_session)
    db_session.commit()
    for statement in (update(AuditEvent.__table__).values(actor="x"), delete(AuditEvent.__table__)):
        with pytest.raises(DBAPIError, match="append-only"), connection.begin_nested():
            connection.execute(statement)
    assert verify_chain(db_session) == (3, None)


def test_postgresql_refuses_truncate(db_session: Session, connection: Connection) -> None:
    if connection.dialect.name != "postgresql":
        pytest.skip("SQLite has no TRUNCATE; its DELETE is refused row by row")
    _three_events(db_session)
    db_session.commit()
    with pytest.raises(DBAPIError, match="append-only"), connection.begin_nested():
        connection.exec_driver_sql("TRUNCATE audit_events")
    assert verify_chain(db_session) == (3, None)


def _head(connection: Connection) -> tuple[int, str]:
    row = connection.execute(text("SELECT last_seq, last_hash FROM audit_chain_head WHERE id = 1")).one()
    return row.last_seq, row.last_hash


_RAW_APPEND = (
    "INSERT INTO audit_events (seq, occurred_at, actor, action, entity_type, prev_hash, hash) "
    "VALUES (:seq, CURRENT_TIMESTAMP, 'psql', 'forged', 'test', :prev, :hash)"
)


def test_each_event_moves_the_head_in_the_database(db_session: Session, connection: Connection) -> None:
    """The head moves with the insert (migration 0009's trigger), not by a statement of the
    application: whoever appends, the head names the last event."""
    events = _three_events(db_session)
    assert _head(connection) == (events[-1].seq, events[-1].hash)
    seq = record_event(db_session, actor="cli", action="probe", entity_type="test")
    appended = db_session.scalars(select(AuditEvent).where(AuditEvent.seq == seq)).one()
    assert _head(connection) == (seq, appended.hash)
    assert verify_chain(db_session) == (4, None)


@pytest.mark.parametrize("wrong", ["seq", "prev_hash"])
def test_the_database_refuses_an_event_that_does_not_extend_the_head(
    db_session: Session, connection: Connection, wrong: str
) -> None:
    """A raw insert past the application (psql, a script) must follow the head: the next
    number, and the head's hash as its previous hash; a fork or a gap is refused."""
    events = _three_events(db_session)
    db_session.commit()
    last = events[-1]
    values = {"seq": last.seq + 1, "prev": last.hash, "hash": "f" * 64}
    values["seq" if wrong == "seq" else "prev"] = last.seq + 2 if wrong == "seq" else GENESIS_HASH
    with pytest.raises(DBAPIError, match="extend the chain head"), connection.begin_nested():
        connection.execute(text(_RAW_APPEND), values)
    assert _head(connection) == (last.seq, last.hash)
    assert verify_chain(db_session) == (3, None)


def test_a_transaction_reads_the_head_once_and_again_after_a_rollback(
    db_session: Session, connection: Connection
) -> None:
    """The head's row stays the transaction's once read (locked, or the whole database on
    SQLite): later events of the transaction use the head the last one made. A rolled-back
    savepoint undoes its events, so the head is read again after it."""
    reads: list[str] = []

    def before(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "FROM audit_chain_head" in statement:
            reads.append(statement)

    event.listen(connection, "before_cursor_execute", before)
    try:
        _three_events(db_session)
        assert len(reads) == 1
        nested = db_session.begin_nested()
        record_event(db_session, actor="cli", action="undone", entity_type="test")
        nested.rollback()
        assert record_event(db_session, actor="cli", action="probe", entity_type="test") == 4
        assert len(reads) == 2
    finally:
        event.remove(connection, "before_cursor_execute", before)
    assert verify_chain(db_session) == (4, None)
    db_session.commit()
    assert record_event(db_session, actor="cli", action="next", entity_type="test") == 5  # read anew
    assert verify_chain(db_session) == (5, None)


def test_an_event_given_a_stale_head_is_refused(db_session: Session) -> None:
    """A caller that read the head itself (the answer save on SQLite) and passes an outdated
    one gets an error from the database, not a forked chain."""
    events = _three_events(db_session)
    db_session.commit()
    stale = (events[-2].seq, events[-2].hash)  # its next number is taken: refused as a duplicate
    with pytest.raises(DBAPIError, match="(?i)unique|duplicate key"):
        record_event(db_session, actor="cli", action="probe", entity_type="test", head=stale)
    db_session.rollback()
    forked = (events[-1].seq, events[-2].hash)  # the next number, but not after the last event
    with pytest.raises(DBAPIError, match="extend the chain head"):
        record_event(db_session, actor="cli", action="probe", entity_type="test", head=forked)
    db_session.rollback()
    current = (events[-1].seq, events[-1].hash)
    assert record_event(db_session, actor="cli", action="probe", entity_type="test", head=current) == 4
    assert verify_chain(db_session) == (4, None)


def _disable_triggers(connection: Connection) -> None:
    """Simulate someone with direct database access (inside the rolled-back test transaction)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"))
    else:
        connection.execute(text("DROP TRIGGER audit_events_no_update"))
        connection.execute(text("DROP TRIGGER audit_events_no_delete"))


def test_verify_command_passes_on_an_intact_trail(app, runner, db_session: Session) -> None:  # type: ignore[no-untyped-def]
    _three_events(db_session)
    db_session.commit()
    result = runner.invoke(main, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert "3 events verified" in result.output


@pytest.mark.parametrize(
    ("tamper", "broken_seq", "reason"),
    [
        ("UPDATE audit_events SET after = '{\"value\":99}' WHERE seq = 1", 1, "content does not match"),
        ("DELETE FROM audit_events WHERE seq = 2", 2, "missing"),
        ("UPDATE audit_events SET reason = NULL WHERE seq = 2", 2, "content does not match"),
        ("DELETE FROM audit_events WHERE seq = 3", 3, "chain head"),
    ],
)
def test_verify_command_names_the_tampered_event(  # type: ignore[no-untyped-def]
    app, runner, db_session: Session, connection: Connection, tamper: str, broken_seq: int, reason: str
) -> None:
    _three_events(db_session)
    db_session.commit()
    _disable_triggers(connection)
    connection.exec_driver_sql(tamper)
    result = runner.invoke(main, ["audit", "verify"])
    assert result.exit_code == 1
    assert f"BROKEN at event {broken_seq}" in result.output
    assert reason in result.output


#: Text an event may carry, in the shapes JSON escapes or leaves alone: every script the
#: questionnaire ships in, quotes, backslashes, control characters, empty and missing values.
_AWKWARD_CONTENT = [
    {"wording": "Müdigkeit – 疲劳 – التعب – 😴", "value": 3, "ratio": 0.5, "kept": True},
    {"quote": 'said "no"', "path": "a\\b/c", "lines": "one\ntwo\tthree\r", "control": "\x01\x1f\x7f"},
    {"empty": "", "nothing": None, "list": [1, "two", None], "nested": {"ü": {"ß": []}}},
]


def test_an_event_hashed_by_the_database_verifies(db_session: Session) -> None:
    """On PostgreSQL a transaction's first event is numbered and hashed by the database, in
    its insert (``sha256`` in SQL over the same text); SQLite's are hashed in Python. Either
    way the hash is the one the chain's verification computes, whatever the event holds."""
    seqs = []
    for number, content in enumerate(_AWKWARD_CONTENT):
        seqs.append(record_event(
            db_session, actor=f"staff:{number}", action="thing.update", entity_type="thing",
            entity_id=content.get("wording", number), before=content, after={"again": content},
            reason=content.get("lines") or content.get("empty"),
        ))
        db_session.commit()  # the next event is its transaction's first
    events = db_session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
    assert [event.seq for event in events] == seqs == [1, 2, 3]
    for stored in events:
        assert stored.hash == _event_hash(
            seq=stored.seq, occurred_at=stored.occurred_at, actor=stored.actor, action=stored.action,
            entity_type=stored.entity_type, entity_id=stored.entity_id, before=stored.before, after=stored.after,
            reason=stored.reason, prev_hash=stored.prev_hash,
        )
    assert json.loads(events[1].before or "") == _AWKWARD_CONTENT[1]
    assert verify_chain(db_session) == (3, None)


def test_a_transactions_first_event_reads_the_head_in_its_insert_on_postgresql(
    db_session: Session, connection: Connection
) -> None:
    """PostgreSQL appends with one statement, which locks and reads the head itself; SQLite,
    whose writer holds the whole database, reads the head and then inserts."""
    sent: list[str] = []

    def before(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        sent.append(" ".join(statement.split()).upper())

    db_session.connection()  # the transaction (a savepoint of the test's) is begun
    event.listen(connection, "before_cursor_execute", before)
    try:
        record_event(db_session, actor="cli", action="probe", entity_type="test")
    finally:
        event.remove(connection, "before_cursor_execute", before)
    if connection.dialect.name == "postgresql":
        assert len(sent) == 1
        assert sent[0].startswith("INSERT INTO AUDIT_EVENTS") and "FROM AUDIT_CHAIN_HEAD AS HEAD" in sent[0]
        assert "FOR UPDATE" in sent[0]
    else:
        assert [statement.split()[0] for statement in sent] == ["SELECT", "INSERT"]
    assert verify_chain(db_session) == (1, None)


def test_two_sessions_appending_at_once_extend_one_chain() -> None:
    """The second of two transactions appending at once waits for the first one's lock on the
    head, then reads the head the first one left, so the chain does not fork (PostgreSQL reads
    the locked row again once the lock is free, within the same statement)."""
    with scratch_postgres("audit_race") as url:
        upgrade(url)
        engine = make_engine(url)
        try:
            first, second = Session(engine), Session(engine)
            record_event(first, actor="staff:1", action="first", entity_type="test")
            appended: list[int] = []
            waiting = threading.Thread(target=lambda: appended.append(
                record_event(second, actor="staff:2", action="second", entity_type="test")))
            waiting.start()
            waiting.join(timeout=0.5)
            assert waiting.is_alive(), "the second append did not wait for the first one's lock"
            first.commit()
            waiting.join(timeout=10)
            assert appended == [2]
            second.commit()
            with Session(engine) as reader:
                assert verify_chain(reader) == (2, None)
                assert [e.action for e in reader.scalars(select(AuditEvent).order_by(AuditEvent.seq))] == [
                    "first", "second"]
            first.close()
            second.close()
        finally:
            engine.dispose()
