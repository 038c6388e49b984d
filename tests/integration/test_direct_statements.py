"""Statements run on the driver's cursor (pro_app.db.direct).

Reads: the same rows and types as SQLAlchemy gives, no transaction begun where SQLAlchemy
would begin none. Writes: in the session's transaction, seen by the audit guard, refused by a
session that may not write, through the session when SQLAlchemy computes a column. Both:
SQLAlchemy's own path whenever something watches the statements, and SQLAlchemy's errors, a lost
connection included."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import (
    Connection, Engine, bindparam, column, event, func, insert, literal_column, select, table, text, update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, MultipleResultsFound, NoResultFound, StatementError
from sqlalchemy.orm import Session

from pro_app import create_app
from pro_app.db import direct
from pro_app.db.audit_guard import UnauditedWrite
from pro_app.db.direct import DirectRead, DirectWrite
from pro_app.db.engine import NO_TRANSACTION_OPTION, READ_ONLY_INFO, ReadOnlyRequest, make_engine
from pro_app.db.migrate import upgrade
from pro_app.db.models import Answer, Assessment
from pro_app.domain.instruments import default_registry
from pro_app.domain.states import AssessmentMode
from pro_app.services.questionnaire import current_assessment, record_answer, start_assessment
from pro_app.services.texts import text_for
from pro_app.web.patient import context
from tests.conftest import app_config, migrated_sqlite, scratch_postgres
from tests.factories import committed_started_patient, direct_statements_sent, enrol, link_for, make_study, now_utc

GRACE = timedelta(hours=2)


def _signed_in_patient(session: Session) -> dict[str, Any]:
    """A patient with a link and a started questionnaire holding one answer (saved with a
    request id): the parameters of the sign-in reads."""
    study = make_study(session, "DIRECT")
    participant = enrol(session, study)
    issued = link_for(session, participant)
    now = now_utc()
    assessment = current_assessment(session, participant, now=now, grace=GRACE)
    assert assessment is not None
    instrument = default_registry().get("qlq_c30")
    start_assessment(session, assessment, mode=AssessmentMode.SELF, text=text_for(session, instrument, ("en",)),
                     actor="test", now=now)
    record_answer(session, assessment, instrument, item_id="q3", value=2, locale="en", actor="test", grace=GRACE,
                  now=now, request_id="8f7a3c2e-1b4d-4e5f-9a6b-0c1d2e3f4a5b")
    session.flush()
    return {"link_id": issued.link.id, "now": now, "closed_after": now - GRACE, "participant_id": participant.id}


def _outside_a_transaction(engine: Engine) -> Connection:
    options = ({NO_TRANSACTION_OPTION: True} if engine.dialect.name == "sqlite"
               else {"isolation_level": "AUTOCOMMIT"})
    return engine.connect().execution_options(**options)


@pytest.mark.parametrize("read, extra", [
    (context._SIGN_IN, {}),
    (context._SIGN_IN_WITH_ANSWER, {"item_id": "q3"}),
    (context._SIGN_IN_WITH_RECEIPT, {"request_id": "8f7a3c2e-1b4d-4e5f-9a6b-0c1d2e3f4a5b"}),
    (context._SIGN_IN_PARTICIPANT, {}),
])
def test_a_direct_read_gives_the_rows_and_types_sqlalchemy_gives(
    connection: Connection, db_session: Session, read: DirectRead, extra: dict[str, Any]
) -> None:
    parameters = {**_signed_in_patient(db_session), **extra}
    wanted = {name: value for name, value in parameters.items() if name in read.statement.compile().params}
    assert DirectRead._can_go_direct(connection)  # the test's connection is in a transaction
    direct = read.all(connection, wanted)
    usual = connection.execute(read.statement, wanted).all()
    assert direct and [tuple(row) for row in direct] == [tuple(row) for row in usual]
    for got, expected in zip(direct, usual):
        assert [type(value) for value in got] == [type(value) for value in expected]
        for name in read.statement.selected_columns.keys():
            assert getattr(got, name) == getattr(expected, name)
    datetimes = [value for row in direct for value in row if hasattr(value, "tzinfo")]
    assert all(value.utcoffset() == timedelta(0) for value in datetimes)  # UTC, the zone attached
    assert datetimes or read is context._SIGN_IN_PARTICIPANT  # the links' and questionnaires' instants
    assert read.first(connection, wanted) == direct[0]


def test_a_direct_read_of_another_link_finds_nothing(connection: Connection, db_session: Session) -> None:
    parameters = _signed_in_patient(db_session)
    del parameters["participant_id"]
    assert context._SIGN_IN.all(connection, {**parameters, "link_id": parameters["link_id"] + 1000}) == []
    assert context._SIGN_IN.first(connection, {**parameters, "link_id": parameters["link_id"] + 1000}) is None


def test_a_direct_read_needs_every_column_named() -> None:
    with pytest.raises(ValueError, match="label every selected expression"):
        DirectRead(select(literal_column("1")))


def test_outside_a_transaction_a_direct_read_begins_none(engine: Engine) -> None:
    read = DirectRead(select(literal_column("1").label("one")))
    with _outside_a_transaction(engine) as reading:
        assert read.all(reading, {}) == [(1,)] and read.all(reading, {})[0].one == 1
        assert not reading.in_transaction()  # SQLAlchemy's execute would have begun one
    with engine.connect() as plain:  # in no transaction, and it would begin one: SQLAlchemy's path
        assert not DirectRead._can_go_direct(plain)
        assert read.all(plain, {}) == [(1,)]
        assert plain.in_transaction()


def test_direct_statements_of_a_connection_share_one_driver_cursor(engine: Engine) -> None:
    """One cursor per driver connection, kept across checkouts; a failed statement leaves it
    usable; a new driver connection (after invalidation) gets its own."""
    read = DirectRead(select(literal_column("1").label("one")))
    with _outside_a_transaction(engine) as reading:
        assert read.all(reading, {}) == [(1,)]
        driver, cursor = reading.connection.info[direct._CURSOR]
        assert driver is reading.connection.dbapi_connection
        assert read.all(reading, {}) == [(1,)]
        assert reading.connection.info[direct._CURSOR][1] is cursor
        if engine.dialect.name == "postgresql":  # SQLite divides by zero without an error
            with pytest.raises(DBAPIError):
                DirectRead(select((literal_column("1") / literal_column("0")).label("nothing"))).all(reading, {})
            assert read.all(reading, {}) == [(1,)] and reading.connection.info[direct._CURSOR][1] is cursor
        reading.invalidate()
        assert read.all(reading, {}) == [(1,)]  # on a new driver connection
        renewed = reading.connection.info[direct._CURSOR]
        assert renewed[0] is reading.connection.dbapi_connection and renewed[1] is not cursor


def test_statements_watched_or_logged_go_through_sqlalchemy(connection: Connection) -> None:
    read = DirectRead(select(literal_column("1").label("one")))
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(connection, "before_cursor_execute", count)
    try:
        assert read.all(connection, {}) == [(1,)]
    finally:
        event.remove(connection, "before_cursor_execute", count)
    assert len(seen) == 1 and "1" in seen[0]
    assert DirectRead._can_go_direct(connection)
    logger = logging.getLogger("sqlalchemy.engine.Engine")
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        assert not DirectRead._can_go_direct(connection)
    finally:
        logger.setLevel(level)


def test_a_driver_error_is_raised_as_sqlalchemys_and_hides_the_parameters(engine: Engine) -> None:
    read = DirectRead(select(column("x")).select_from(table("no_such_table")).where(column("x") == "secret-value"))
    with _outside_a_transaction(engine) as reading:
        with pytest.raises(DBAPIError) as raised:
            read.all(reading, {})
        assert not raised.value.connection_invalidated and not reading.invalidated
        assert "no_such_table" in str(raised.value) and "secret-value" not in str(raised.value)
        assert DirectRead(select(literal_column("2").label("two"))).all(reading, {}) == [(2,)]  # still usable


def test_a_parameter_that_cannot_be_converted_is_a_statement_error(connection: Connection, db_session: Session) -> None:
    parameters = _signed_in_patient(db_session)
    naive = parameters["now"].replace(tzinfo=None)  # refused by the UTC column type
    with pytest.raises(StatementError) as raised:
        context._SIGN_IN.all(connection, {**parameters, "now": naive})
    assert "naive datetime" in str(raised.value)


@pytest.fixture()
def own_postgres() -> Iterator[str]:
    with scratch_postgres("direct") as url:
        yield url


def test_a_connection_lost_under_a_direct_read_fails_that_read_only(own_postgres: str) -> None:
    """As after SQLAlchemy's own handling of a lost connection: the read fails with the
    connection invalidated (the web layer answers 503), and the pool checks the connections
    it still holds before handing them out, so the next read gets a live one."""
    engine = make_engine(own_postgres, ping_idle_after_ms=60_000)  # no check for being idle
    read = DirectRead(select(literal_column("1").label("one")))
    try:
        first, second = _outside_a_transaction(engine), _outside_a_transaction(engine)
        assert read.all(first, {}) == read.all(second, {}) == [(1,)]
        first.close()
        second.close()  # two connections in the pool, both used a moment ago
        admin = make_engine(own_postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as killer:
            killed = killer.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar_one()
        admin.dispose()
        assert killed == 2
        with _outside_a_transaction(engine) as reading:
            with pytest.raises(DBAPIError) as raised:
                read.all(reading, {})
            assert raised.value.connection_invalidated and reading.invalidated
        with _outside_a_transaction(engine) as reading:  # the other killed one: checked and replaced
            assert read.all(reading, {}) == [(1,)]
    finally:
        engine.dispose()


def test_one_gives_the_row_or_the_errors_result_one_gives(engine: Engine) -> None:
    numbers = select(literal_column("1").label("n")).union_all(select(literal_column("2").label("n"))).subquery()
    some = DirectRead(select(numbers.c.n).where(numbers.c.n <= bindparam("most")).order_by(numbers.c.n))
    with _outside_a_transaction(engine) as reading:
        assert some.one(reading, {"most": 1}).n == 1
        with pytest.raises(NoResultFound):
            some.one(reading, {"most": 0})
        with pytest.raises(MultipleResultsFound):
            some.one(reading, {"most": 2})


# --- writes ------------------------------------------------------------------------------------

_ANSWER_ADDED = DirectWrite(insert(Answer.__table__))
_ANSWER_CHANGED = DirectWrite(
    update(Answer.__table__).where(Answer.__table__.c.id == bindparam("answer_id")).values(value=bindparam("new_value"))
)


@pytest.fixture
def guarded(guarded_session: Session) -> Session:
    return guarded_session


def _open_assessment(session: Session) -> Assessment:
    study = make_study(session, "WRITE")
    participant = enrol(session, study)
    assessment = current_assessment(session, participant, now=now_utc(), grace=GRACE)
    assert assessment is not None
    return assessment


def _answer(assessment: Assessment, item: str = "q1", value: int = 2) -> dict[str, Any]:
    return {"assessment_id": assessment.id, "item_id": item, "value": value, "locale": "en",
            "answered_at": now_utc(), "answered_by": "test"}


def test_a_direct_write_writes_in_the_sessions_transaction(guarded: Session) -> None:
    assessment = _open_assessment(guarded)
    guarded.commit()
    _ANSWER_ADDED.execute(guarded, _answer(assessment))
    stored = guarded.execute(select(Answer.id, Answer.value).where(Answer.assessment_id == assessment.id)).one()
    assert stored.value == 2
    changed = _ANSWER_CHANGED.execute(guarded, {"answer_id": stored.id, "new_value": 4})
    assert changed.rowcount == 1
    assert _ANSWER_CHANGED.execute(guarded, {"answer_id": stored.id + 1000, "new_value": 4}).rowcount == 0
    assert guarded.scalar(select(Answer.value).where(Answer.id == stored.id)) == 4
    guarded.rollback()  # the session's transaction: its rollback takes the writes with it
    assert guarded.scalar(select(func.count()).select_from(Answer)) == 0


def test_the_audit_guard_sees_a_direct_write(guarded: Session) -> None:
    assessment = _open_assessment(guarded)
    guarded.commit()
    _ANSWER_ADDED.execute(guarded, _answer(assessment))
    with pytest.raises(UnauditedWrite, match="answers"):
        guarded.commit()
    guarded.rollback()
    changes_nothing = _ANSWER_CHANGED.execute(guarded, {"answer_id": 0, "new_value": 1})
    assert changes_nothing.rowcount == 0
    guarded.commit()  # an UPDATE that matched no row changed nothing: no event needed


def test_a_session_that_may_not_write_refuses_a_direct_write(guarded: Session) -> None:
    assessment = _open_assessment(guarded)
    guarded.commit()
    guarded.info[READ_ONLY_INFO] = True
    with pytest.raises(ReadOnlyRequest):
        _ANSWER_ADDED.execute(guarded, _answer(assessment))
    guarded.info.pop(READ_ONLY_INFO)
    assert guarded.scalar(select(func.count()).select_from(Answer)) == 0


def test_a_column_sqlalchemy_computes_sends_the_write_through_the_session(guarded: Session) -> None:
    """``assessments.updated_at`` has ``onupdate=utcnow``: SQLAlchemy fills it in."""
    assessment = _open_assessment(guarded)
    guarded.commit()
    before = guarded.scalar(select(Assessment.updated_at).where(Assessment.id == assessment.id))
    touch = DirectWrite(update(Assessment.__table__).where(Assessment.__table__.c.id == bindparam("assessment_id"))
                        .values(occurrence=bindparam("new_occurrence")))
    assert touch.execute(guarded, {"assessment_id": assessment.id, "new_occurrence": 7}).rowcount == 1
    after = guarded.execute(select(Assessment.updated_at, Assessment.occurrence)
                            .where(Assessment.id == assessment.id)).one()
    assert after.occurrence == 7 and after.updated_at > before


def test_a_watched_write_goes_through_the_session_and_is_seen(guarded: Session, connection: Connection) -> None:
    assessment = _open_assessment(guarded)
    guarded.commit()
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(connection, "before_cursor_execute", count)
    try:
        _ANSWER_ADDED.execute(guarded, _answer(assessment))
    finally:
        event.remove(connection, "before_cursor_execute", count)
    assert [statement for statement in seen if "answers" in statement] == [
        statement for statement in seen if statement.startswith("INSERT INTO answers")] != []
    assert guarded.scalar(select(func.count()).select_from(Answer).where(Answer.assessment_id == assessment.id)) == 1


def test_a_direct_write_error_is_sqlalchemys(guarded: Session) -> None:
    assessment = _open_assessment(guarded)
    guarded.commit()
    _ANSWER_ADDED.execute(guarded, _answer(assessment, "q1", 2))
    with pytest.raises(IntegrityError) as raised:  # one answer per item
        _ANSWER_ADDED.execute(guarded, _answer(assessment, "q1", 3))
    assert "answered_by" in str(raised.value) or "answers" in str(raised.value)
    assert "'test'" not in str(raised.value)  # the parameters are not shown
    guarded.rollback()


def test_a_textual_direct_write_names_its_table_and_whether_it_returns_rows() -> None:
    with pytest.raises(ValueError, match="names its table"):
        DirectWrite(text("DELETE FROM answers"))
    with pytest.raises(ValueError, match="whether it returns rows"):
        DirectWrite(text("DELETE FROM answers"), table="answers", insert=False)
    assert DirectWrite(text("DELETE FROM answers"), table="answers", insert=False, returns_rows=False).table == "answers"


def test_a_direct_write_gives_the_rows_of_its_returning_and_a_count_without(guarded: Session) -> None:
    """Whether a statement returns rows is known from its form, not asked of the cursor: a
    Core insert (PostgreSQL adds ``RETURNING id``), a Core update with and without
    ``RETURNING``, and textual writes that say whether they return rows."""
    assessment = _open_assessment(guarded)
    guarded.commit()
    added = _ANSWER_ADDED.execute(guarded, _answer(assessment, "q1", 2))
    stored_id = guarded.scalar(select(Answer.id).where(Answer.assessment_id == assessment.id))
    assert added.rows == ([(stored_id,)] if guarded.bind.dialect.name == "postgresql" else [])
    answers = Answer.__table__
    returning = DirectWrite(update(answers).where(answers.c.id == bindparam("answer_id"))
                            .values(value=bindparam("new_value")).returning(answers.c.id, answers.c.value))
    assert returning.execute(guarded, {"answer_id": stored_id, "new_value": 3}).rows == [(stored_id, 3)]
    assert returning.execute(guarded, {"answer_id": stored_id + 1000, "new_value": 3}).rows == []
    assert _ANSWER_CHANGED.execute(guarded, {"answer_id": stored_id, "new_value": 4}) == direct.Written([], 1)
    renamed = DirectWrite(text("UPDATE answers SET item_id = :new_item WHERE id = :answer_id RETURNING item_id"),
                          table="answers", insert=False, returns_rows=True)
    assert renamed.execute(guarded, {"answer_id": stored_id, "new_item": "q2"}).rows == [("q2",)]
    emptied = DirectWrite(text("DELETE FROM answers WHERE id = :answer_id"), table="answers", insert=False,
                          returns_rows=False)
    assert emptied.execute(guarded, {"answer_id": stored_id}) == direct.Written([], 1)
    guarded.rollback()


# --- the patient's requests, wired as in production ---------------------------------------------

@pytest.fixture
def own_database(database_url: str, tmp_path: Any) -> Iterator[str]:
    """A database of the test's backend that the app's requests really commit to."""
    if make_url(database_url).get_backend_name() == "sqlite":
        yield migrated_sqlite(tmp_path, "direct-web")
        return
    with scratch_postgres("direct_web") as url:
        upgrade(url)
        yield url


def test_a_question_page_and_an_answer_save_send_their_statements_on_the_drivers_cursor(
    own_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing in the app's own wiring watches its statements, so the patient's hot path takes
    the direct one: were a listener or statement logging added, these requests would go back
    to SQLAlchemy's execution (and to the CPU it costs), and this test would say so."""
    token, assessment_id = committed_started_patient(own_database, "DIRECT-WEB", "P-001")
    app = create_app(app_config(DATABASE_URL=own_database))
    sent = direct_statements_sent(monkeypatch)
    try:
        client = app.test_client()
        assert client.get(f"/p/{token}").status_code == 303
        sent.clear()
        page = client.get("/q/2")
        assert page.status_code == 200 and b'name="value"' in page.data
        assert sent == ["SELECT"]  # the sign-in, with the stored answer
        sent.clear()
        saved = client.post("/q/answer", json={"assessment": assessment_id, "item": "q2", "value": 3},
                            headers={"Idempotency-Key": str(uuid.uuid4())})
        assert saved.status_code == 200 and saved.get_json()["value"] == 3
        # On SQLite the sign-in, the questionnaire under its lock, the receipt, the answer and
        # the event; on PostgreSQL the sign-in (with the stored answer), then the checks and
        # all three writes in one statement, a transaction of its own (WITH ... INSERT).
        expected = ["SELECT"] + (
            ["SELECT", "INSERT", "INSERT", "INSERT"] if own_database.startswith("sqlite") else ["WITH"])
        assert sent == expected
    finally:
        app.extensions["pro_db"].engine.dispose()
    engine = make_engine(own_database)
    try:
        with engine.connect() as connection:
            stored = connection.execute(select(Answer.value).where(
                Answer.assessment_id == assessment_id, Answer.item_id == "q2")).scalar_one()
            assert stored == 3
    finally:
        engine.dispose()
