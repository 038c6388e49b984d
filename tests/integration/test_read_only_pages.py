"""Pages marked ``reads_only``: their page views run without a transaction (no BEGIN and
ROLLBACK: round trips on PostgreSQL, statements on SQLite), and a write from them is refused.

Each database here is the app's own (committed data, the app's own engine), as in
production: the tests' usual rolled-back outer transaction would hide the difference.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, func, select, update

from pro_app import create_app
from pro_app.db.engine import make_engine, make_session_factory
from pro_app.db.migrate import upgrade
from pro_app.db.models import Answer, Assessment, AssessmentResult, Participant, ScaleScore
from pro_app.domain.instruments import default_registry
from pro_app.extensions import database
from pro_app.services.audit import record_event, verify_chain
from pro_app.web.database import ReadOnlyRequest, reads_first, reads_only
from pro_app.web.patient import context, views
from pro_app.web.patient.context import item_id_at
from tests.conftest import BACKENDS, app_config, migrated_sqlite, scratch_postgres
from tests.factories import committed_started_patient, hidden_fields


@pytest.fixture(params=BACKENDS)
def own_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database of its own: a SQLite file, or ``<test database>_readonly``."""
    if request.param == "sqlite":
        yield migrated_sqlite(tmp_path, "read_only")
        return
    with scratch_postgres("readonly") as url:
        upgrade(url)
        yield url


@pytest.fixture
def started(own_database: str) -> tuple[str, int]:
    """A patient's link token and their started baseline questionnaire, committed."""
    return committed_started_patient(own_database, "READ-1", "R-001")


@pytest.fixture
def app(own_database: str) -> Iterator[Flask]:
    app = create_app(app_config(DATABASE_URL=own_database))
    yield app
    app.extensions["pro_db"].engine.dispose()


def _in_transaction(dbapi_connection: Any) -> bool:
    """Whether the driver runs the statement inside a transaction it began."""
    if hasattr(dbapi_connection, "autocommit") and not hasattr(dbapi_connection, "in_transaction"):
        return not dbapi_connection.autocommit  # psycopg: autocommit off opens a transaction
    return bool(dbapi_connection.in_transaction)  # sqlite3: whether our BEGIN ran before the SELECT


def _selects_in_transaction(app: Flask, send: Any) -> list[bool]:
    return [in_transaction for kind, in_transaction in _statements_in_transaction(app, send) if kind == "SELECT"]


def _statements_in_transaction(app: Flask, send: Any) -> list[tuple[str, bool]]:
    """(first word, in a transaction) of each statement but BEGIN and COMMIT that ``send`` causes."""
    seen: list[tuple[str, bool]] = []

    def before(conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        kind = statement.lstrip().split(None, 1)[0].upper()
        if kind not in ("BEGIN", "COMMIT", "ROLLBACK"):
            seen.append((kind, _in_transaction(cursor.connection)))

    engine = app.extensions["pro_db"].engine
    event.listen(engine, "before_cursor_execute", before)
    try:
        send()
    finally:
        event.remove(engine, "before_cursor_execute", before)
    assert seen, "the request read nothing"
    return seen


def test_page_views_run_outside_a_transaction(app: Flask, started: tuple[str, int]) -> None:
    token, assessment_id = started
    client = app.test_client()
    assert client.get(f"/p/{token}").status_code == 303
    for path in ("/q/", "/q/3", "/q/review"):
        def show(path: str = path) -> None:
            assert client.get(path).status_code == 200
        assert set(_selects_in_transaction(app, show)) == {False}, path

    def save() -> None:
        response = client.post("/q/answer", json={"assessment": assessment_id, "item": "q3", "value": 2},
                               headers={"Idempotency-Key": str(uuid.uuid4())})
        assert response.status_code == 200
    seen = _statements_in_transaction(app, save)
    if app.extensions["pro_db"].locks_to_write:
        writing = seen.index(("SELECT", True))  # the questionnaire read again under the lock
        assert all(in_transaction for _, in_transaction in seen[writing:])  # the write: one transaction
        assert "INSERT" in {kind for kind, _ in seen[writing:]}
        # SQLite: who is signed in was read before the write lock was taken, outside a transaction.
        assert seen[:writing] and seen[:writing] == [("SELECT", False)] * writing
    else:
        assert seen == _SIGN_IN_AND_SAVE_ALONE
    page = client.get("/q/3")
    assert page.status_code == 200 and b'name="value" value="2" checked>' in page.data  # the saved answer shows


def test_a_page_marked_reads_only_cannot_write(
    app: Flask, started: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    def rename_by_flush() -> str:
        participant = database.session.scalars(select(Participant)).first()
        assert participant is not None
        participant.locale = "es"
        database.session.flush()
        return "changed"

    def rename_by_statement() -> str:
        database.session.execute(update(Participant).values(locale="es"))
        return "changed"

    app.add_url_rule("/test/flush", view_func=reads_only(rename_by_flush), methods=["GET", "POST"])
    app.add_url_rule("/test/statement", view_func=reads_only(rename_by_statement))
    client = app.test_client()
    for path in ("/test/flush", "/test/statement"):
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert client.get(path).status_code == 500
        errors = [record.exc_info[0] for record in caplog.records if record.exc_info]
        assert errors == [ReadOnlyRequest], path
    assert client.post("/test/flush").data == b"changed"  # not a page view: its session may write
    with make_engine(app.config["DATABASE_URL"]).connect() as connection:
        assert connection.scalar(select(Participant.locale)) == "en"  # the POST did not commit


def test_a_page_view_reads_with_core_and_the_session_on_one_connection(
    app: Flask, started: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    """Core statements of a page view run on a connection taken without a session; a session
    asked for afterwards shares it, still outside a transaction and still refusing writes."""
    def core_then_session() -> str:
        connection = database.connection
        locale = connection.scalar(select(Participant.locale))
        session = database.session
        assert session.connection() is connection
        assert session.scalars(select(Participant.locale)).first() == locale
        session.execute(update(Participant).values(locale="es"))
        return "changed"

    app.add_url_rule("/test/core-then-session", view_func=reads_only(core_then_session))
    statuses: list[int] = []
    with caplog.at_level(logging.ERROR):
        seen = _selects_in_transaction(
            app, lambda: statuses.append(app.test_client().get("/test/core-then-session").status_code)
        )
    assert seen == [False, False] and statuses == [500]
    assert [record.exc_info[0] for record in caplog.records if record.exc_info] == [ReadOnlyRequest]
    with make_engine(app.config["DATABASE_URL"]).connect() as connection:
        assert connection.scalar(select(Participant.locale)) == "en"



def test_a_question_page_reads_its_stored_answer_with_the_sign_in(
    app: Flask, started: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One statement per question page (the sign-in, the open questionnaire and the answer);
    where the item's id cannot be known before the questionnaire is, a second one reads it."""
    token, assessment_id = started
    client = app.test_client()
    assert client.get(f"/p/{token}").status_code == 303
    response = client.post("/q/answer", json={"assessment": assessment_id, "item": "q3", "value": 2},
                           headers={"Idempotency-Key": str(uuid.uuid4())})
    assert response.status_code == 200
    pages: dict[str, bytes] = {}

    def show(path: str) -> None:
        page = client.get(path)
        assert page.status_code == 200
        pages[path] = page.data

    assert len(_selects_in_transaction(app, lambda: show("/q/3"))) == 1
    assert b'name="value" value="2" checked>' in pages["/q/3"]
    assert len(_selects_in_transaction(app, lambda: show("/q/4"))) == 1
    assert b"checked" not in pages["/q/4"]

    # An instrument whose question 3 had another id: the guess misses, the answer is read apart.
    monkeypatch.setattr(views, "item_id_at", lambda number: "q1")
    assert len(_selects_in_transaction(app, lambda: show("/q/3"))) == 2
    assert b'name="value" value="2" checked>' in pages["/q/3"]
    monkeypatch.setattr(views, "item_id_at", lambda number: None)
    assert len(_selects_in_transaction(app, lambda: show("/q/3"))) == 2
    assert b'name="value" value="2" checked>' in pages["/q/3"]


def test_the_id_of_a_question_is_known_when_every_instrument_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    qlq = default_registry().get("qlq_c30")
    assert item_id_at(3) == qlq.items[2].id
    assert item_id_at(0) is None and item_id_at(len(qlq.items) + 1) is None
    other = SimpleNamespace(items=tuple(SimpleNamespace(id=f"x{item.number}") for item in qlq.items))
    monkeypatch.setattr(context, "default_registry", lambda: [qlq, other])
    assert item_id_at(3) is None


#: PostgreSQL's save of an answer to a started questionnaire: the sign-in, then one statement
#: that checks and writes (``save_answer_at_once``), each a transaction of its own.
_SIGN_IN_AND_SAVE_ALONE = [("SELECT", False), ("WITH", False)]


def _writes_in_one_transaction(app: Flask, seen: list[tuple[str, bool]]) -> int:
    """Where the write begins in ``seen``; everything from there is in one transaction and
    what came before only read, outside a transaction."""
    writing = next(index for index, (_, in_transaction) in enumerate(seen) if in_transaction)
    assert all(in_transaction for _, in_transaction in seen[writing:])
    assert {kind for kind, _ in seen[writing:]} & {"INSERT", "UPDATE"}
    assert writing > 0 and {kind for kind, _ in seen[:writing]} == {"SELECT"}
    return writing


def _saved(app: Flask, seen: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """The statements of an answer save from its write on: on SQLite a transaction begun after
    the reads (:func:`_writes_in_one_transaction`); on PostgreSQL the one statement after the
    sign-in."""
    if app.extensions["pro_db"].locks_to_write:
        return seen[_writes_in_one_transaction(app, seen):]
    assert seen == _SIGN_IN_AND_SAVE_ALONE
    return seen[1:]


def _signed_in_with_answers(app: Flask, token: str, assessment_id: int, numbers: range, *, value: int) -> FlaskClient:
    """A patient's client, signed in by their link, having saved ``value`` to each question of ``numbers``."""
    client = app.test_client()
    assert client.get(f"/p/{token}").status_code == 303
    for number in numbers:
        response = client.post("/q/answer", json={"assessment": assessment_id, "item": f"q{number}", "value": value},
                               headers={"Idempotency-Key": str(uuid.uuid4())})
        assert response.status_code == 200
    return client


def test_a_form_post_and_a_submission_read_first_then_write_in_one_transaction(
    app: Flask, started: tuple[str, int]
) -> None:
    """The no-script answer post reads with Core statements only, the submission with the ORM
    session as well: either way the write is one transaction begun after the reads (on
    PostgreSQL the answer's is one statement, a transaction of its own)."""
    token, assessment_id = started
    client = _signed_in_with_answers(app, token, assessment_id, range(1, 30), value=1)

    def post_the_last_answer() -> None:
        response = client.post("/q/30", data={"assessment": assessment_id, "value": "5", "go": "review",
                                              "request_id": str(uuid.uuid4())})
        assert response.status_code == 303 and response.headers["Location"].endswith("/q/review")
    _saved(app, _statements_in_transaction(app, post_the_last_answer))

    review = client.get("/q/review").get_data(as_text=True)
    fields = hidden_fields(review, "/q/submit")

    def submit() -> None:
        response = client.post("/q/submit", data=fields)
        assert response.status_code == 303 and response.headers["Location"].endswith("/q/done")
    _writes_in_one_transaction(app, _statements_in_transaction(app, submit))
    with make_engine(app.config["DATABASE_URL"]).connect() as connection:
        assert connection.scalar(select(Assessment.status).where(Assessment.id == assessment_id)) == "completed"
        assert connection.scalar(select(func.count()).select_from(Answer).where(Answer.assessment_id == assessment_id)) == 30


def test_a_first_submission_inserts_its_scores_result_and_receipt_without_looking_for_them(
    app: Flask, started: tuple[str, int]
) -> None:
    """Only a completed questionnaire has scores, a result row and a submission receipt, so
    the submission of an open one looks for none of them (a repetition meets the receipt's
    insert); the one read of scale scores is the baseline's, for the worsening rule."""
    token, assessment_id = started
    client = _signed_in_with_answers(app, token, assessment_id, range(1, 31), value=2)
    fields = hidden_fields(client.get("/q/review").get_data(as_text=True), "/q/submit")
    selects: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(" ".join(statement.split()))

    engine = app.extensions["pro_db"].engine
    event.listen(engine, "before_cursor_execute", before)
    try:
        response = client.post("/q/submit", data=fields)
    finally:
        event.remove(engine, "before_cursor_execute", before)
    assert response.status_code == 303 and response.headers["Location"].endswith("/q/done")
    assert not [s for s in selects if " FROM request_receipts" in s or " FROM assessment_results" in s]
    score_reads = [s for s in selects if " FROM scale_scores" in s]
    assert len(score_reads) == 1 and "planned_at <" in score_reads[0]
    with make_engine(app.config["DATABASE_URL"]).connect() as connection:
        assert connection.scalar(select(func.count()).select_from(ScaleScore).where(
            ScaleScore.assessment_id == assessment_id)) == len(default_registry().get("qlq_c30").score_codes)
        assert connection.scalar(select(AssessmentResult.answers).where(
            AssessmentResult.assessment_id == assessment_id)) == ",".join(["2"] * 30)


def test_a_save_reads_its_receipt_with_the_sign_in(app: Flask, started: tuple[str, int]) -> None:
    """A save's one statement before writing is the sign-in, which also finds the request's
    receipt: a repetition, or the same request id sent with another answer, is answered from it
    alone, with nothing written."""
    token, assessment_id = started
    client = app.test_client()
    assert client.get(f"/p/{token}").status_code == 303
    key = str(uuid.uuid4())
    replies: list[Any] = []

    def save(value: int) -> None:
        replies.append(client.post("/q/answer", json={"assessment": assessment_id, "item": "q5", "value": value},
                                   headers={"Idempotency-Key": key}))

    seen = _statements_in_transaction(app, lambda: save(2))
    _saved(app, seen)
    assert seen[0] == ("SELECT", False)  # the sign-in, with the receipt
    assert [kind for kind, _ in _statements_in_transaction(app, lambda: save(2))] == ["SELECT"]
    first, again = replies
    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true" and again.get_json() == first.get_json()
    assert [kind for kind, _ in _statements_in_transaction(app, lambda: save(3))] == ["SELECT"]
    assert replies[-1].status_code == 409 and replies[-1].get_json()["code"] == "conflict"
    with make_engine(app.config["DATABASE_URL"]).connect() as connection:
        stored = connection.scalar(select(Answer.value).where(Answer.assessment_id == assessment_id,
                                                              Answer.item_id == "q5"))
    assert stored == 2


def test_a_save_writes_with_few_statements_and_the_trail_verifies(app: Flask, started: tuple[str, int]) -> None:
    """The write of a first answer: on SQLite the questionnaire read under the lock with the
    stored answer and the audit chain's head (the whole database being locked), the receipt,
    the answer and the event; on PostgreSQL one statement that checks the questionnaire and the
    answer the sign-in read, and writes all three. The head moves with the event (a trigger)."""
    token, assessment_id = started
    client = app.test_client()
    assert client.get(f"/p/{token}").status_code == 303

    def save() -> None:
        response = client.post("/q/answer", json={"assessment": assessment_id, "item": "q7", "value": 3},
                               headers={"Idempotency-Key": str(uuid.uuid4())})
        assert response.status_code == 200
    kinds = [kind for kind, _ in _saved(app, _statements_in_transaction(app, save))]
    if app.extensions["pro_db"].locks_to_write:
        assert kinds == ["SELECT", "INSERT", "INSERT", "INSERT"]
    else:
        assert kinds == ["WITH"]
    engine = make_engine(app.config["DATABASE_URL"])
    try:
        with make_session_factory(engine)() as session:
            checked, broken = verify_chain(session)
            assert broken is None and checked >= 2  # the start and this answer, at least
    finally:
        engine.dispose()


def test_a_reads_first_request_writes_only_after_begin_writing(
    app: Flask, started: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    """A reads_first request reads outside a transaction, where a write would not be atomic:
    one before ``begin_writing`` is refused, on both databases."""
    def rename(write_first: bool) -> str:
        participant = database.session.scalars(select(Participant)).first()
        assert participant is not None
        if write_first:
            database.begin_writing()
        participant.locale = "fr" if write_first else "es"
        record_event(database.session, actor="test", action="participant.update", entity_type="participant",
                     entity_id=participant.id)
        database.session.commit()
        return "changed"

    app.add_url_rule("/test/early", view_func=reads_first(lambda: rename(False)), endpoint="early", methods=["POST"])
    app.add_url_rule("/test/in-turn", view_func=reads_first(lambda: rename(True)), endpoint="in_turn", methods=["POST"])
    client = app.test_client()
    with caplog.at_level(logging.ERROR):
        assert client.post("/test/early").status_code == 500
    assert [record.exc_info[0] for record in caplog.records if record.exc_info] == [ReadOnlyRequest]
    with make_engine(app.config["DATABASE_URL"]).connect() as connection:
        assert connection.scalar(select(Participant.locale)) == "en"
    assert client.post("/test/in-turn").data == b"changed"
    with make_engine(app.config["DATABASE_URL"]).connect() as connection:
        assert connection.scalar(select(Participant.locale)) == "fr"
