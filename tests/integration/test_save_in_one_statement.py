"""PostgreSQL's answer save in one statement of its own (``save_answer_at_once``).

The statement checks that the questionnaire and the stored answer are still what the caller
read outside any transaction, and writes the receipt, the answer and its audit event, or
nothing; whenever it writes nothing the caller takes the usual path. These tests run on a
PostgreSQL database of their own, whose rows are really committed, as the app's requests are.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.orm import Session

from pro_app import create_app
from pro_app.db import direct
from pro_app.db.engine import make_engine
from pro_app.db.migrate import upgrade
from pro_app.db.models import Answer, Assessment, AuditEvent, RequestReceipt
from pro_app.db.types import utcnow
from pro_app.domain.errors import ValidationError
from pro_app.domain.instruments import default_registry
from pro_app.domain.states import AssessmentMode, AssessmentStatus
from pro_app.services.audit import verify_chain
from pro_app.services.questionnaire import SavedAnswer, open_assessment, record_answer, save_answer_at_once
from tests.conftest import app_config, scratch_postgres
from tests.factories import (
    committed_started_patient, direct_statements_sent, json_save, stored_answers, wait_until_blocked,
)

QLQ = default_registry().get("qlq_c30")
GRACE = timedelta(minutes=120)
SELF = AssessmentMode.SELF.value


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with scratch_postgres("one_statement") as made:
        upgrade(made)
        yield made


@pytest.fixture(scope="module")
def engine(url: str) -> Iterator[Engine]:
    made = make_engine(url)
    yield made
    made.dispose()


@pytest.fixture
def alone(engine: Engine) -> Iterator[Connection]:
    """A connection in autocommit mode, as a request reads on before it writes."""
    with engine.connect() as connection:
        yield connection.execution_options(isolation_level="AUTOCOMMIT")


def _patient(url: str) -> tuple[str, int]:
    return committed_started_patient(url, f"ONE-{uuid.uuid4().hex[:8]}", "P-001")


def _save(connection: Connection, engine: Engine, assessment_id: int, item: str, value: object,
          stored: int | None, *, key: str | None = None, mode: str = SELF) -> SavedAnswer | None:
    with Session(engine) as session:
        assessment = open_assessment(session, assessment_id)
    assert assessment is not None
    return save_answer_at_once(
        connection, assessment, QLQ, item_id=item, value=value, stored_value=stored, mode=mode, locale="en",
        actor="participant:1", grace=GRACE, now=utcnow(), request_id=key or str(uuid.uuid4()),
    )


def _events(engine: Engine, assessment_id: int) -> list[AuditEvent]:
    with Session(engine) as session:
        return list(session.scalars(
            select(AuditEvent).where(AuditEvent.entity_type == "assessment", AuditEvent.entity_id == str(assessment_id),
                                     AuditEvent.action == "answer.save").order_by(AuditEvent.seq)))


def _receipts(engine: Engine, assessment_id: int) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(RequestReceipt)
                              .where(RequestReceipt.assessment_id == assessment_id)) or 0


def _chain_verifies(engine: Engine) -> None:
    with Session(engine) as session:
        checked, broken = verify_chain(session)
    assert broken is None and checked > 0


def test_a_new_and_a_changed_answer_are_saved_with_their_receipts_and_events(
    url: str, engine: Engine, alone: Connection
) -> None:
    _token, assessment_id = _patient(url)
    first = _save(alone, engine, assessment_id, "q1", 2, None, key="key-first")
    assert first is not None and (first.item_id, first.value, first.changed, first.replayed) == ("q1", 2, True, False)
    changed = _save(alone, engine, assessment_id, "q1", 4, 2)
    assert changed is not None and changed.value == 4
    assert stored_answers(url, assessment_id) == {"q1": 4}
    assert _receipts(engine, assessment_id) == 2
    events = _events(engine, assessment_id)
    # The events hold what the usual path's hold: before, and after with the questionnaire's mode.
    assert [json.loads(e.before) if e.before else None for e in events] == [None, {"value": 2}]
    assert json.loads(events[0].after or "") == {
        "item": "q1", "value": 2, "locale": "en", "mode": SELF, "request_id": "key-first"}
    assert events[1].seq == events[0].seq + 1 and events[1].prev_hash == events[0].hash
    _chain_verifies(engine)
    with Session(engine) as session:
        answer = session.scalars(select(Answer).where(Answer.assessment_id == assessment_id)).one()
        assert (answer.locale, answer.answered_by) == ("en", "participant:1")


@pytest.mark.parametrize("case", ["unchanged", "stale stored value", "answered meanwhile", "other mode"])
def test_a_save_whose_reading_no_longer_holds_writes_nothing(
    url: str, engine: Engine, alone: Connection, case: str
) -> None:
    """The caller then takes the usual path, which decides from what is stored now."""
    _token, assessment_id = _patient(url)
    assert _save(alone, engine, assessment_id, "q2", 3, None) is not None
    before = (stored_answers(url, assessment_id), _receipts(engine, assessment_id), len(_events(engine, assessment_id)))
    if case == "unchanged":
        result = _save(alone, engine, assessment_id, "q2", 3, 3)
    elif case == "stale stored value":  # read as 1 before the save of 3 committed
        result = _save(alone, engine, assessment_id, "q2", 4, 1)
    elif case == "answered meanwhile":  # read as unanswered: the answers' unique key refuses the insert
        result = _save(alone, engine, assessment_id, "q2", 4, None)
    else:
        result = _save(alone, engine, assessment_id, "q2", 4, 3, mode=AssessmentMode.TABLET.value)
    assert result is None
    assert (stored_answers(url, assessment_id), _receipts(engine, assessment_id),
            len(_events(engine, assessment_id))) == before
    assert not alone.in_transaction() or alone.get_execution_options().get("isolation_level") == "AUTOCOMMIT"


def test_a_repeated_request_fails_the_statement_and_writes_nothing(url: str, engine: Engine, alone: Connection) -> None:
    _token, assessment_id = _patient(url)
    assert _save(alone, engine, assessment_id, "q3", 2, None, key="key-repeated") is not None
    # Read again as if the first had not happened yet, then sent again: the receipt's primary
    # key fails the whole statement, the answer and the event with it.
    assert _save(alone, engine, assessment_id, "q3", 2, None, key="key-repeated") is None
    assert _save(alone, engine, assessment_id, "q3", 4, 2, key="key-repeated") is None
    assert stored_answers(url, assessment_id) == {"q3": 2}
    assert _receipts(engine, assessment_id) == 1 and len(_events(engine, assessment_id)) == 1
    # The usual path then answers the repetition from the stored receipt.
    with Session(engine) as session:
        assessment = session.get(Assessment, assessment_id)
        assert assessment is not None
        replay = record_answer(session, assessment, QLQ, item_id="q3", value=2, locale="en", actor="participant:1",
                               grace=GRACE, request_id="key-repeated")
        session.commit()
    assert replay.replayed and replay.value == 2
    _chain_verifies(engine)


@pytest.mark.parametrize("status", [AssessmentStatus.COMPLETED.value, AssessmentStatus.OPEN.value])
def test_a_questionnaire_not_in_progress_takes_no_save_in_one_statement(
    url: str, engine: Engine, alone: Connection, status: str
) -> None:
    _token, assessment_id = _patient(url)
    with Session(engine) as session:
        assessment = open_assessment(session, assessment_id)
        session.execute(update(Assessment).where(Assessment.id == assessment_id).values(status=status))
        session.commit()
    assert assessment is not None and assessment.status == AssessmentStatus.IN_PROGRESS.value
    # Read while in progress, saved after the change: the statement's check refuses it.
    result = save_answer_at_once(alone, assessment, QLQ, item_id="q1", value=2, stored_value=None, mode=SELF,
                                 locale="en", actor="participant:1", grace=GRACE, now=utcnow(), request_id="k-" + status)
    assert result is None and stored_answers(url, assessment_id) == {} and _receipts(engine, assessment_id) == 0


def test_a_closed_window_takes_no_save_in_one_statement(url: str, engine: Engine, alone: Connection) -> None:
    _token, assessment_id = _patient(url)
    with Session(engine) as session:
        assessment = open_assessment(session, assessment_id)
    assert assessment is not None
    late = assessment.window_closes_at + GRACE + timedelta(seconds=1)
    assert save_answer_at_once(alone, assessment, QLQ, item_id="q1", value=2, stored_value=None, mode=SELF,
                               locale="en", actor="participant:1", grace=GRACE, now=late) is None
    assert stored_answers(url, assessment_id) == {}


def test_a_refused_value_raises_before_anything_is_sent(
    url: str, engine: Engine, alone: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    _token, assessment_id = _patient(url)
    sent: list[str] = []
    monkeypatch.setattr(direct, "_run", lambda *args: sent.append("sent"))
    for item, value in (("q1", 5), ("q29", 0), ("q99", 1), ("q1", "two")):
        with pytest.raises(ValidationError):
            _save(alone, engine, assessment_id, item, value, None)
    assert sent == []


def _save_in_thread(connection: Connection, engine: Engine, assessment_id: int, item: str, value: int,
                    stored: int | None) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []
    with Session(engine) as session:
        assessment = open_assessment(session, assessment_id)
    assert assessment is not None

    def run() -> None:
        outcome.append(save_answer_at_once(
            connection, assessment, QLQ, item_id=item, value=value, stored_value=stored, mode=SELF, locale="en",
            actor="participant:1", grace=GRACE, now=utcnow(), request_id=str(uuid.uuid4())))

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("change", ["submitted", "answer changed", "none"])
def test_a_save_waiting_for_the_questionnaires_lock_checks_what_was_committed_meanwhile(
    url: str, engine: Engine, alone: Connection, change: str
) -> None:
    """The statement waits for a transaction holding the questionnaire (a submission, another
    save), then checks the newest rows: a questionnaire submitted, or an answer changed, in
    the meantime means nothing is written (the usual path then refuses, or saves); a lock
    released with nothing changed lets the save go ahead."""
    _token, assessment_id = _patient(url)
    assert _save(alone, engine, assessment_id, "q5", 1, None) is not None
    holder = Session(engine)
    try:
        holder.execute(select(Assessment.id).where(Assessment.id == assessment_id).with_for_update())
        if change == "submitted":
            holder.execute(update(Assessment).where(Assessment.id == assessment_id)
                           .values(status=AssessmentStatus.COMPLETED.value))
        elif change == "answer changed":
            holder.execute(update(Answer).where(Answer.assessment_id == assessment_id, Answer.item_id == "q5")
                           .values(value=3))
        thread, outcome = _save_in_thread(alone, engine, assessment_id, "q5", 2, 1)
        wait_until_blocked(engine)
        holder.commit()
        thread.join(timeout=20)
    finally:
        holder.close()
    if change == "none":
        assert len(outcome) == 1 and isinstance(outcome[0], SavedAnswer)
        assert stored_answers(url, assessment_id) == {"q5": 2}
        assert _receipts(engine, assessment_id) == 2 and len(_events(engine, assessment_id)) == 2
        _chain_verifies(engine)
    else:
        assert outcome == [None]
        assert stored_answers(url, assessment_id) == {"q5": 1 if change == "submitted" else 3}
        assert _receipts(engine, assessment_id) == 1 and len(_events(engine, assessment_id)) == 1


def test_the_app_saves_a_started_questionnaires_answers_in_one_statement(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wired as in production: the background save and the no-JavaScript form save send the
    sign-in and one statement; a repetition is answered from the receipt the sign-in read."""
    token, assessment_id = _patient(url)
    app = create_app(app_config(DATABASE_URL=url))
    sent = direct_statements_sent(monkeypatch)
    first_key, second_key = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        client = app.test_client()
        assert client.get(f"/p/{token}").status_code == 303
        sent.clear()
        status, _headers, body = json_save(client, assessment_id, "q7", 2, first_key)
        assert status == 200 and body["value"] == 2 and sent == ["SELECT", "WITH"]
        sent.clear()
        status, headers, body = json_save(client, assessment_id, "q7", 2, first_key)
        assert status == 200 and headers.get("Idempotent-Replayed") == "true" and sent == ["SELECT"]
        status, _headers, body = json_save(client, assessment_id, "q7", 3, second_key)
        assert status == 200 and body["value"] == 3
        page = client.get("/q/8")
        token_field = page.get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
        sent.clear()
        posted = client.post("/q/8", data={"csrf_token": token_field, "assessment": assessment_id, "go": "next",
                                           "value": 4, "request_id": str(uuid.uuid4())})
        assert posted.status_code == 303, posted.get_data(as_text=True)[:3000]
        assert sent == ["SELECT", "WITH"]
    finally:
        app.extensions["pro_db"].engine.dispose()
    assert stored_answers(url, assessment_id) == {"q7": 3, "q8": 4}
    engine = make_engine(url)
    try:
        assert len(_events(engine, assessment_id)) == 3 and _receipts(engine, assessment_id) == 3
        _chain_verifies(engine)
    finally:
        engine.dispose()


def test_the_app_refuses_a_bad_answer_before_its_one_statement(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A value outside the item's scale, or an item the questionnaire lacks: the same refusal as
    on the usual path (its translated message), a 4xx, and nothing written."""
    token, assessment_id = _patient(url)
    app = create_app(app_config(DATABASE_URL=url))
    try:
        client = app.test_client()
        assert client.get(f"/p/{token}").status_code == 303
        assert json_save(client, assessment_id, "q1", 2, str(uuid.uuid4()))[0] == 200
        sent = direct_statements_sent(monkeypatch)
        for item, value in (("q1", 9), ("q29", 0), ("q99", 1)):
            sent.clear()
            status, _headers, body = json_save(client, assessment_id, item, value, str(uuid.uuid4()))
            assert sent == ["SELECT"]  # the sign-in only: refused before any write was sent
            assert 400 <= status < 500 and body["code"] == "invalid" and body["error"], (item, value, body)
            assert "Traceback" not in str(body["error"])
    finally:
        app.extensions["pro_db"].engine.dispose()
    assert stored_answers(url, assessment_id) == {"q1": 2}
    engine = make_engine(url)
    try:
        assert len(_events(engine, assessment_id)) == 1 and _receipts(engine, assessment_id) == 1
    finally:
        engine.dispose()
