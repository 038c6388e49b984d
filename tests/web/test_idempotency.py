"""Every answer save and every submission happens at most once per request id, and an
expired form or sign-in never loses what the patient entered.

Web tests run through the Flask test client inside the rolled-back test transaction, on
SQLite and PostgreSQL. The races run on a database of their own (a fresh SQLite file or a
PostgreSQL schema), because two transactions must really commit against each other.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from pro_app import create_app
from pro_app.db.engine import make_engine, make_session_factory, writer_engine
from pro_app.db.migrate import upgrade
from pro_app.db.models import Answer, Assessment, AuditEvent, Participant, RequestReceipt, ScaleScore, Study
from pro_app.db.models.base import table_of
from pro_app.db.types import utcnow
from pro_app.domain.errors import Conflict
from pro_app.domain.instruments import default_registry
from pro_app.domain.states import AssessmentMode
from pro_app.services import questionnaire
from pro_app.services.access import revoke_links
from pro_app.services.questionnaire import (
    OpenAssessment,
    ReusedRequestId,
    SavedAnswer,
    Submission,
    record_answer,
    start_assessment,
    submit_assessment,
)
from pro_app.web.patient import views
from tests.conftest import app_config, migrated_sqlite
from tests.factories import enrol, link_for, make_study, wait_until_blocked

QLQ = default_registry().get("qlq_c30")
EN = default_registry().text("qlq_c30", "en")
GRACE = timedelta(minutes=120)


# -- helpers ------------------------------------------------------------------------------------


@dataclass
class Patient:
    participant: Participant
    assessment: Assessment
    token: str
    code: str


def _baseline(session: Session, participant: Participant) -> Assessment:
    return session.scalars(
        select(Assessment).where(Assessment.participant_id == participant.id, Assessment.timepoint_code == "baseline")
    ).one()


def _new_patient(session: Session, study_code: str = "IDEM-1", subject: str = "P-001") -> Patient:
    study = session.scalars(select(Study).where(Study.code == study_code)).one_or_none() or make_study(session, study_code)
    participant = enrol(session, study, subject)
    issued = link_for(session, participant)
    session.commit()
    return Patient(participant, _baseline(session, participant), issued.token, issued.code)


@pytest.fixture
def patient(db_session: Session) -> Patient:
    return _new_patient(db_session)


def _start(client: FlaskClient, patient: Patient) -> None:
    assert client.get(f"/p/{patient.token}").status_code == 303
    assert client.post("/q/start", data={"assessment": patient.assessment.id}).status_code == 303


def _answers(session: Session, assessment: Assessment) -> dict[str, int]:
    session.expire_all()
    return dict(
        session.execute(select(Answer.item_id, Answer.value).where(Answer.assessment_id == assessment.id)).tuples().all()
    )


def _count(session: Session, model: Any, *where: Any) -> int:
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _saves(session: Session, assessment: Assessment) -> int:
    return _count(session, AuditEvent, AuditEvent.action == "answer.save", AuditEvent.entity_id == str(assessment.id))


def _field(page: str, name: str) -> str:
    match = re.search(rf'name="{name}" type="hidden" value="([^"]*)"', page)
    assert match, f"no hidden field {name!r} in the page"
    return match.group(1)


def _token(page: str) -> str:
    """The page's CSRF token ("" where the test runs without CSRF protection)."""
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]*)"', page)
    return match.group(1) if match else ""


def _checked(page: str) -> list[str]:
    return re.findall(r'value="(\d+)"\s+checked', page)


def _key() -> str:
    return str(uuid.uuid4())


# -- answers: retries, conflicts, stale retries, keys ------------------------------------------


@pytest.mark.parametrize("where", ["header", "field", "both"])
def test_json_retries_store_one_answer_and_return_the_same_receipt(
    client: FlaskClient, patient: Patient, db_session: Session, where: str
) -> None:
    _start(client, patient)
    key = _key()
    payload: dict[str, object] = {"assessment": patient.assessment.id, "item": "q4", "value": 3}
    headers: dict[str, str] = {}
    if where in ("field", "both"):
        payload["request_id"] = key if where == "field" else _key()  # the header wins over the field
    if where in ("header", "both"):
        headers["Idempotency-Key"] = key
    responses = [client.post("/q/answer", json=payload, headers=headers) for _ in range(5)]
    assert {r.status_code for r in responses} == {200}
    bodies = [r.get_json() for r in responses]
    assert all(body == bodies[0] for body in bodies), "every repetition gets the same receipt"
    assert bodies[0]["receipt"] == key and bodies[0]["item"] == "q4" and bodies[0]["value"] == 3
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", bodies[0]["saved_at"])
    assert "Idempotent-Replayed" not in responses[0].headers
    assert all(r.headers["Idempotent-Replayed"] == "true" for r in responses[1:])
    assert _answers(db_session, patient.assessment) == {"q4": 3}
    assert _saves(db_session, patient.assessment) == 1
    receipts = db_session.scalars(select(RequestReceipt).where(RequestReceipt.assessment_id == patient.assessment.id)).all()
    assert [(r.request_id, r.kind, r.item_id, r.value, r.outcome, r.participant_id) for r in receipts] == [
        (key, "answer", "q4", 3, "saved", patient.participant.id)
    ]
    event = db_session.scalars(select(AuditEvent).where(AuditEvent.action == "answer.save")).one()
    assert key in (event.after or ""), "the audit event names the request that made the change"


def test_key_is_normalised(client: FlaskClient, patient: Patient, db_session: Session) -> None:
    _start(client, patient)
    key = _key()
    payload = {"assessment": patient.assessment.id, "item": "q1", "value": 2}
    first = client.post("/q/answer", json=payload, headers={"Idempotency-Key": key.upper()})
    second = client.post("/q/answer", json=payload, headers={"Idempotency-Key": key.replace("-", "")})
    assert first.status_code == second.status_code == 200
    assert first.get_json() == second.get_json() and first.get_json()["receipt"] == key
    assert _saves(db_session, patient.assessment) == 1


def test_a_save_reads_its_receipt_with_the_sign_in(
    client: FlaskClient, patient: Patient, db_session: Session
) -> None:
    """No statement of its own looks for a save's receipt: the sign-in's statement reads it with
    the link and the questionnaire, on SQLite (so a repetition never waits for the write lock)
    as on PostgreSQL (so a repetition costs no write). A repetition sends nothing else."""
    _start(client, patient)
    statements: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")):
            statements.append(statement)

    engine = db_session.get_bind().engine
    payload = {"assessment": patient.assessment.id, "item": "q5", "value": 2}
    headers = {"Idempotency-Key": _key()}
    event.listen(engine, "before_cursor_execute", before)
    try:
        first = client.post("/q/answer", json=payload, headers=headers)
        by_the_first = list(statements)
        statements.clear()
        repeated = client.post("/q/answer", json=payload, headers=headers)
    finally:
        event.remove(engine, "before_cursor_execute", before)
    assert first.status_code == repeated.status_code == 200
    assert repeated.headers["Idempotent-Replayed"] == "true" and repeated.get_json() == first.get_json()
    reads_receipts = [s for s in by_the_first if s.lstrip().upper().startswith("SELECT") and "request_receipts" in s]
    assert len(reads_receipts) == 1 and "access_links" in reads_receipts[0]  # the sign-in
    assert len(statements) == 1 and statements[0] == reads_receipts[0]  # the repetition: the sign-in alone
    assert _saves(db_session, patient.assessment) == 1


def test_form_retries_save_once_and_redirect_the_same_way(
    client: FlaskClient, patient: Patient, db_session: Session
) -> None:
    _start(client, patient)
    page = client.get("/q/2").get_data(as_text=True)
    request_id = _field(page, "request_id")
    uuid.UUID(request_id)
    assert _field(client.get("/q/2").get_data(as_text=True), "request_id") != request_id, "fresh id per page"
    data = {"assessment": patient.assessment.id, "value": 4, "go": "next", "request_id": request_id}
    responses = [client.post("/q/2", data=data) for _ in range(4)]
    assert {(r.status_code, r.headers["Location"]) for r in responses} == {(303, "/q/3")}
    assert _answers(db_session, patient.assessment) == {"q2": 4}
    assert _saves(db_session, patient.assessment) == 1
    assert _count(db_session, RequestReceipt, RequestReceipt.request_id == request_id) == 1


def test_same_key_with_another_payload_is_a_conflict(
    app: Flask, client: FlaskClient, patient: Patient, db_session: Session
) -> None:
    _start(client, patient)
    key = _key()
    ok = client.post("/q/answer", json={"assessment": patient.assessment.id, "item": "q1", "value": 2},
                     headers={"Idempotency-Key": key})
    assert ok.status_code == 200
    for payload in (
        {"assessment": patient.assessment.id, "item": "q1", "value": 3},  # other value
        {"assessment": patient.assessment.id, "item": "q2", "value": 2},  # other item
        {"assessment": patient.assessment.id + 1000, "item": "q1", "value": 2},  # other assessment
    ):
        refused = client.post("/q/answer", json=payload, headers={"Idempotency-Key": key})
        assert refused.status_code == 409, payload
        body = refused.get_json()
        assert body["code"] == "conflict" and "page was out of date" in body["error"]
    # Another participant re-using the id.
    other = _new_patient(db_session, subject="P-002")
    intruder = app.test_client()
    _start(intruder, other)
    refused = intruder.post("/q/answer", json={"assessment": other.assessment.id, "item": "q1", "value": 2},
                            headers={"Idempotency-Key": key})
    assert refused.status_code == 409
    # The form path says so on the page, keeps the chosen answer and gives a new id.
    response = client.post("/q/1", data={"assessment": patient.assessment.id, "value": 4, "request_id": key})
    assert response.status_code == 409
    page = response.get_data(as_text=True)
    assert "page was out of date" in page and _checked(page) == ["4"] and _field(page, "request_id") != key
    assert _answers(db_session, patient.assessment) == {"q1": 2}
    assert _answers(db_session, other.assessment) == {}
    assert _saves(db_session, patient.assessment) == 1
    assert _count(db_session, RequestReceipt, RequestReceipt.request_id == key) == 1


def test_stale_retry_never_overwrites_a_newer_answer(client: FlaskClient, patient: Patient, db_session: Session) -> None:
    _start(client, patient)
    old, new = _key(), _key()
    first = client.post("/q/answer", json={"assessment": patient.assessment.id, "item": "q7", "value": 2},
                        headers={"Idempotency-Key": old})
    changed = client.post("/q/answer", json={"assessment": patient.assessment.id, "item": "q7", "value": 4},
                          headers={"Idempotency-Key": new})
    assert first.status_code == changed.status_code == 200
    late = client.post("/q/answer", json={"assessment": patient.assessment.id, "item": "q7", "value": 2},
                       headers={"Idempotency-Key": old})
    assert late.status_code == 200 and late.get_json() == first.get_json(), "the original receipt"
    assert _answers(db_session, patient.assessment) == {"q7": 4}
    assert _saves(db_session, patient.assessment) == 2
    # The same holds for a browser re-posting an old copy of a question page.
    page_id = _field(client.get("/q/8").get_data(as_text=True), "request_id")
    client.post("/q/8", data={"assessment": patient.assessment.id, "value": 1, "request_id": page_id})
    client.post("/q/answer", json={"assessment": patient.assessment.id, "item": "q8", "value": 3},
                headers={"Idempotency-Key": _key()})
    assert client.post("/q/8", data={"assessment": patient.assessment.id, "value": 1, "request_id": page_id}).status_code == 303
    assert _answers(db_session, patient.assessment) == {"q7": 4, "q8": 3}


def test_retry_after_submission_gets_its_receipt_not_an_error(
    client: FlaskClient, patient: Patient, db_session: Session
) -> None:
    _start(client, patient)
    key = _key()
    payload = {"assessment": patient.assessment.id, "item": "q1", "value": 1}
    first = client.post("/q/answer", json=payload, headers={"Idempotency-Key": key})
    review = client.get("/q/review").get_data(as_text=True)
    done = client.post("/q/submit", data={"assessment": patient.assessment.id, "request_id": _field(review, "request_id"),
                                          "confirm_missing": "y"})
    assert done.status_code == 303
    late = client.post("/q/answer", json=payload, headers={"Idempotency-Key": key})
    assert late.status_code == 200 and late.get_json() == first.get_json()
    fresh = client.post("/q/answer", json={**payload, "value": 2}, headers={"Idempotency-Key": _key()})
    assert fresh.status_code == 409 and fresh.get_json()["code"] == "closed"
    assert _answers(db_session, patient.assessment) == {"q1": 1}


@pytest.mark.parametrize(
    "bad",
    ["not-a-uuid", "x" * 200, "00000000-0000-0000-0000-000000000000", "1234", str(uuid.uuid4()) + "0"],
)
def test_malformed_keys_are_refused(client: FlaskClient, patient: Patient, db_session: Session, bad: str) -> None:
    _start(client, patient)
    payload = {"assessment": patient.assessment.id, "item": "q1", "value": 2}
    by_header = client.post("/q/answer", json=payload, headers={"Idempotency-Key": bad})
    by_field = client.post("/q/answer", json={**payload, "request_id": bad})
    for response in (by_header, by_field):
        assert response.status_code == 400
        body = response.get_json()
        assert body["code"] == "invalid" and "could not be checked" in body["error"]
    form = client.post("/q/1", data={"assessment": patient.assessment.id, "value": 3, "request_id": bad})
    assert form.status_code == 400
    page = form.get_data(as_text=True)
    assert "could not be checked" in page and _checked(page) == ["3"], "the chosen answer is kept on the page"
    review = client.get("/q/review").get_data(as_text=True)
    submit = client.post("/q/submit", data={"assessment": patient.assessment.id, "request_id": bad,
                                            "key": _field(review, "key"), "confirm_missing": "y"})
    assert submit.status_code == 400 and "could not be checked" in submit.get_data(as_text=True)
    header_submit = client.post("/q/submit", data={"assessment": patient.assessment.id, "confirm_missing": "y"},
                                headers={"Idempotency-Key": bad})
    assert header_submit.status_code == 400
    assert _answers(db_session, patient.assessment) == {}
    assert _count(db_session, RequestReceipt, RequestReceipt.assessment_id == patient.assessment.id) == 0
    db_session.expire_all()
    assert db_session.get(Assessment, patient.assessment.id).status == "in_progress"  # type: ignore[union-attr]


def test_requests_without_a_key_are_accepted_as_unique(client: FlaskClient, patient: Patient, db_session: Session) -> None:
    _start(client, patient)
    payload = {"assessment": patient.assessment.id, "item": "q5", "value": 2}
    first = client.post("/q/answer", json=payload)
    second = client.post("/q/answer", json=payload)
    assert first.status_code == second.status_code == 200
    assert first.get_json()["receipt"] != second.get_json()["receipt"], "each gets a receipt of its own"
    assert _answers(db_session, patient.assessment) == {"q5": 2}
    assert _saves(db_session, patient.assessment) == 1, "the same value again changes nothing"
    outcomes = db_session.scalars(
        select(RequestReceipt.outcome).where(RequestReceipt.assessment_id == patient.assessment.id)
        .order_by(RequestReceipt.recorded_at)
    ).all()
    assert outcomes == ["saved", "unchanged"]
    assert client.post("/q/6", data={"assessment": patient.assessment.id, "value": 1}).status_code == 303
    assert _answers(db_session, patient.assessment) == {"q5": 2, "q6": 1}


# -- submission ---------------------------------------------------------------------------------


def test_submission_retries_and_a_second_tab_submit_once(
    client: FlaskClient, patient: Patient, db_session: Session
) -> None:
    _start(client, patient)
    client.post("/q/1", data={"assessment": patient.assessment.id, "value": 2})
    first_tab = client.get("/q/review").get_data(as_text=True)
    second_tab = client.get("/q/review").get_data(as_text=True)
    key = _field(first_tab, "request_id")
    assert _field(second_tab, "request_id") == key == _field(first_tab, "key"), "one submission key per questionnaire"
    data = {"assessment": patient.assessment.id, "request_id": key, "confirm_missing": "y"}
    responses = [client.post("/q/submit", data=data) for _ in range(3)]
    responses.append(client.post("/q/submit", data={**data}, headers={"Idempotency-Key": key}))
    assert {(r.status_code, r.headers["Location"]) for r in responses} == {(303, "/q/done")}
    assert "Thank you" in client.get("/q/done").get_data(as_text=True)
    submits = _count(db_session, AuditEvent, AuditEvent.action == "assessment.submit",
                     AuditEvent.entity_id == str(patient.assessment.id))
    assert submits == 1
    assert _count(db_session, ScaleScore, ScaleScore.assessment_id == patient.assessment.id) == len(QLQ.score_codes)
    receipt = db_session.get(RequestReceipt, key)
    assert receipt is not None and receipt.kind == "submit" and receipt.outcome == "submitted"
    assert receipt.item_id is None and receipt.value is None
    assessment = db_session.get(Assessment, patient.assessment.id)
    assert assessment is not None and assessment.submission_key == key and assessment.status == "completed"
    # Another request id after the submission is refused, and an answer's id cannot submit.
    assert client.post("/q/submit", data={**data, "request_id": _key()}).status_code == 409


def test_submission_with_an_answer_key_is_a_conflict(client: FlaskClient, patient: Patient, db_session: Session) -> None:
    _start(client, patient)
    key = _key()
    client.post("/q/answer", json={"assessment": patient.assessment.id, "item": "q1", "value": 2},
                headers={"Idempotency-Key": key})
    response = client.post("/q/submit", data={"assessment": patient.assessment.id, "request_id": key, "confirm_missing": "y"})
    assert response.status_code == 409 and "page was out of date" in response.get_data(as_text=True)
    db_session.expire_all()
    assert db_session.get(Assessment, patient.assessment.id).status == "in_progress"  # type: ignore[union-attr]


def test_a_submission_key_taken_by_another_write_writes_nothing(
    client: FlaskClient, patient: Patient, db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The submission of an open questionnaire looks for no receipt before inserting its own:
    the insert writes nothing when the key has one (committed before, or by a request racing
    this one), no savepoint is needed, and the stored receipt, read then, decides -- here one
    of an answer save, so a conflict, with nothing submitted."""
    _start(client, patient)
    key = _key()
    client.post("/q/answer", json={"assessment": patient.assessment.id, "item": "q1", "value": 2},
                headers={"Idempotency-Key": key})
    looked_up: list[str] = []
    original = questionnaire.find_receipt

    def counted_lookup(session: Session, request_id: str) -> Any:
        looked_up.append(request_id)
        return original(session, request_id)

    monkeypatch.setattr(questionnaire, "find_receipt", counted_lookup)
    response = client.post("/q/submit", data={"assessment": patient.assessment.id, "request_id": key, "confirm_missing": "y"})
    assert response.status_code == 409 and "page was out of date" in response.get_data(as_text=True)
    assert looked_up == [key]  # only after the insert met the stored receipt
    db_session.expire_all()
    assessment = db_session.get(Assessment, patient.assessment.id)
    assert assessment is not None and assessment.status == "in_progress" and assessment.submission_key is None
    assert db_session.scalar(select(func.count()).select_from(ScaleScore).where(
        ScaleScore.assessment_id == patient.assessment.id)) == 0


def test_submission_without_a_key_still_submits_once(client: FlaskClient, patient: Patient, db_session: Session) -> None:
    _start(client, patient)
    client.post("/q/1", data={"assessment": patient.assessment.id, "value": 2})
    data = {"assessment": patient.assessment.id, "confirm_missing": "y"}
    assert client.post("/q/submit", data=data).status_code == 303
    assert client.post("/q/submit", data=data).status_code == 409, "a second, unnamed submission is refused"
    assert _count(db_session, ScaleScore, ScaleScore.assessment_id == patient.assessment.id) == len(QLQ.score_codes)


# -- an expired CSRF token ----------------------------------------------------------------------


def test_expired_csrf_token_on_a_question_shows_it_again_with_the_answer(
    app: Flask, patient: Patient, db_session: Session
) -> None:
    app.config["WTF_CSRF_ENABLED"] = True
    client = app.test_client()
    client.get(f"/p/{patient.token}")
    start = client.get("/q/").get_data(as_text=True)
    client.post("/q/start", data={"assessment": patient.assessment.id, "csrf_token": _field(start, "csrf_token")})
    page = client.get("/q/3").get_data(as_text=True)
    stale_id = _field(page, "request_id")
    for token in ("", "expired-or-forged-token"):
        response = client.post("/q/3", data={"assessment": patient.assessment.id, "value": 2, "go": "next",
                                             "request_id": stale_id, "csrf_token": token})
        assert response.status_code == 400
        shown = response.get_data(as_text=True)
        assert "Question 3 of 30" in shown and _checked(shown) == ["2"], "the posted answer is selected"
        assert "has not been saved yet" in shown and "press the button again" in shown
        assert _field(shown, "csrf_token") and _field(shown, "request_id") != stale_id
    assert _answers(db_session, patient.assessment) == {}
    # Confirming with the renewed page saves it.
    confirmed = client.post("/q/3", data={"assessment": patient.assessment.id, "value": 2, "go": "next",
                                          "request_id": _field(shown, "request_id"),
                                          "csrf_token": _field(shown, "csrf_token")})
    assert confirmed.status_code == 303 and confirmed.headers["Location"] == "/q/4"
    assert _answers(db_session, patient.assessment) == {"q3": 2}


def test_expired_csrf_token_in_the_background_save_gives_a_fresh_one(
    app: Flask, patient: Patient, db_session: Session
) -> None:
    app.config["WTF_CSRF_ENABLED"] = True
    client = app.test_client()
    client.get(f"/p/{patient.token}")
    page = client.get("/q/").get_data(as_text=True)
    client.post("/q/start", data={"assessment": patient.assessment.id, "csrf_token": _field(page, "csrf_token")})
    key = _key()
    payload = {"assessment": patient.assessment.id, "item": "q2", "value": 3}
    refused = client.post("/q/answer", json=payload, headers={"Idempotency-Key": key, "X-CSRFToken": "stale"})
    assert refused.status_code == 400
    body = refused.get_json()
    assert body["code"] == "csrf" and body["csrf_token"] and body["error"]
    assert _answers(db_session, patient.assessment) == {}
    retried = client.post("/q/answer", json=payload, headers={"Idempotency-Key": key, "X-CSRFToken": body["csrf_token"]})
    assert retried.status_code == 200 and retried.get_json()["receipt"] == key
    assert _answers(db_session, patient.assessment) == {"q2": 3}


def test_expired_csrf_token_on_the_review_page_keeps_the_submission_key(
    app: Flask, patient: Patient, db_session: Session
) -> None:
    app.config["WTF_CSRF_ENABLED"] = True
    client = app.test_client()
    client.get(f"/p/{patient.token}")
    page = client.get("/q/").get_data(as_text=True)
    client.post("/q/start", data={"assessment": patient.assessment.id, "csrf_token": _field(page, "csrf_token")})
    review = client.get("/q/review").get_data(as_text=True)
    key = _field(review, "request_id")
    refused = client.post("/q/submit", data={"assessment": patient.assessment.id, "request_id": key,
                                             "confirm_missing": "y", "csrf_token": "stale"})
    assert refused.status_code == 400
    shown = refused.get_data(as_text=True)
    assert "Check your answers" in shown and "not been submitted yet" in shown
    assert _field(shown, "request_id") == key
    done = client.post("/q/submit", data={"assessment": patient.assessment.id, "request_id": key,
                                          "confirm_missing": "y", "csrf_token": _field(shown, "csrf_token")})
    assert done.status_code == 303 and done.headers["Location"] == "/q/done"


def test_other_pages_keep_the_generic_expired_form_answer(app: Flask, patient: Patient) -> None:
    app.config["WTF_CSRF_ENABLED"] = True
    client = app.test_client()
    client.get(f"/p/{patient.token}")
    response = client.post("/q/start", data={"assessment": patient.assessment.id})
    assert response.status_code == 400 and "The form had expired" in response.get_data(as_text=True)


# -- an expired sign-in -------------------------------------------------------------------------


def _end_session(client: FlaskClient, *, everything: bool) -> None:
    """The sign-in ends: its part of the session cookie goes (or the whole cookie)."""
    with client.session_transaction() as state:
        if everything:
            state.clear()
        else:
            state.pop("patient", None)


@pytest.mark.parametrize("csrf", [False, True], ids=["session-gone", "cookie-gone-and-token-with-it"])
def test_expired_sign_in_keeps_the_answer_until_the_patient_confirms_it(
    app: Flask, patient: Patient, db_session: Session, csrf: bool
) -> None:
    app.config["WTF_CSRF_ENABLED"] = csrf
    client = app.test_client()
    client.get(f"/p/{patient.token}")
    token = _token(client.get("/q/").get_data(as_text=True))
    client.post("/q/start", data={"assessment": patient.assessment.id, "csrf_token": token})
    page = client.get("/q/5").get_data(as_text=True)
    _end_session(client, everything=csrf)
    response = client.post("/q/5", data={"assessment": patient.assessment.id, "value": 3, "go": "next",
                                         "request_id": _field(page, "request_id"), "csrf_token": token})
    assert response.status_code == 401
    ended = response.get_data(as_text=True)
    assert "Please sign in again" in ended and "question 5 has not been saved yet" in ended
    assert 'href="/start"' in ended
    assert _answers(db_session, patient.assessment) == {}, "never stored while nobody is identified"
    assert client.get("/q/").status_code == 401
    # Back through the personal code: the question comes back with the answer selected.
    code_page = client.get("/start").get_data(as_text=True)
    back = client.post("/start", data={"code": patient.code, "csrf_token": _token(code_page)})
    assert back.status_code == 303
    home = client.get("/q/")
    assert home.status_code == 303 and home.headers["Location"] == "/q/5"
    shown = client.get("/q/5").get_data(as_text=True)
    assert _checked(shown) == ["3"] and "please check it, then continue to save it" in shown
    assert _answers(db_session, patient.assessment) == {}, "shown, not yet saved"
    confirmed = client.post("/q/5", data={"assessment": patient.assessment.id, "value": 3, "go": "next",
                                          "request_id": _field(shown, "request_id"),
                                          "csrf_token": _token(shown)})
    assert confirmed.status_code == 303 and confirmed.headers["Location"] == "/q/6"
    assert _answers(db_session, patient.assessment) == {"q5": 3}
    again = client.get("/q/5").get_data(as_text=True)
    assert "please check it" not in again and _checked(again) == ["3"]
    assert client.get("/q/").status_code == 200, "no more redirect once it is saved"


def test_expired_link_keeps_the_answer_for_the_new_link(app: Flask, patient: Patient, db_session: Session) -> None:
    client = app.test_client()
    _start(client, patient)
    revoke_links(db_session, patient.participant, actor="test")
    db_session.commit()
    response = client.post("/q/9", data={"assessment": patient.assessment.id, "value": 4})
    assert response.status_code == 401
    fresh = link_for(db_session, patient.participant)
    db_session.commit()
    client.get(f"/p/{fresh.token}")
    assert client.get("/q/").headers["Location"] == "/q/9"
    assert _checked(client.get("/q/9").get_data(as_text=True)) == ["4"]


def test_a_kept_answer_never_reaches_another_participant(app: Flask, patient: Patient, db_session: Session) -> None:
    client = app.test_client()
    _start(client, patient)
    _end_session(client, everything=False)
    assert client.post("/q/2", data={"assessment": patient.assessment.id, "value": 4}).status_code == 401
    other = _new_patient(db_session, subject="P-002")
    _start(client, other)  # someone else signs in on the same phone
    home = client.get("/q/")
    assert home.status_code == 200, "not sent to the other person's question"
    page = client.get("/q/2").get_data(as_text=True)
    assert _checked(page) == [] and "please check it" not in page
    assert _answers(db_session, other.assessment) == {} and _answers(db_session, patient.assessment) == {}
    client.post("/q/2", data={"assessment": other.assessment.id, "value": 1})
    assert _answers(db_session, other.assessment) == {"q2": 1}
    # And it is gone for good: the first patient signing in again is not offered it either.
    client.get(f"/p/{patient.token}")
    assert client.get("/q/").status_code == 200


def test_an_answer_posted_from_another_site_is_not_kept(app: Flask, patient: Patient, db_session: Session) -> None:
    client = app.test_client()
    _start(client, patient)
    _end_session(client, everything=False)
    response = client.post("/q/2", data={"assessment": patient.assessment.id, "value": 4},
                           headers={"Origin": "https://elsewhere.example", "Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 401 and "has not been saved yet" not in response.get_data(as_text=True)
    client.get(f"/p/{patient.token}")
    assert client.get("/q/").status_code == 200


def test_background_save_after_the_sign_in_ended_says_so(client: FlaskClient, patient: Patient, db_session: Session) -> None:
    _start(client, patient)
    _end_session(client, everything=False)
    response = client.post("/q/answer", json={"assessment": patient.assessment.id, "item": "q1", "value": 1},
                           headers={"Idempotency-Key": _key()})
    assert response.status_code == 401
    body = response.get_json()
    assert body["code"] == "session_ended" and "kept on this device" in body["error"]
    assert _answers(db_session, patient.assessment) == {}


# -- races: two transactions with the same request id ------------------------------------------


@pytest.fixture(scope="module")
def race_database_url(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of its own for tests whose transactions really commit (the audit trail they
    write cannot be deleted afterwards): a new SQLite file, or a schema of its own."""
    if make_url(database_url).get_backend_name() == "sqlite":
        yield migrated_sqlite(tmp_path_factory.mktemp("race"), "race")
        return
    schema = f"test_idempotency_{uuid.uuid4().hex[:12]}"
    admin = make_engine(database_url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(database_url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )
    try:
        upgrade(url)
        yield url
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@dataclass
class Committed:
    participant_id: int
    assessment_id: int


def _committed_patient(url: str, subject: str, *, started: bool = True) -> Committed:
    engine = make_engine(url)
    try:
        with make_session_factory(writer_engine(engine))() as session:
            patient = _new_patient(session, "RACE-1", subject)
            if started:
                start_assessment(session, patient.assessment, mode=AssessmentMode.SELF, text=EN, actor="test")
                session.commit()
            return Committed(patient.participant.id, patient.assessment.id)
    finally:
        engine.dispose()


def _in_threads(url: str, count: int, work: Any) -> list[Any]:
    """Run ``work(session)`` in ``count`` threads at once, each with its own connection pool,
    committing on success; returns each result or the exception it raised."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        engine = make_engine(url)
        try:
            with make_session_factory(writer_engine(engine))() as session:
                barrier.wait()
                try:
                    results[index] = work(session)
                    session.commit()
                except Exception as error:  # reported to the test
                    session.rollback()
                    results[index] = error
        finally:
            engine.dispose()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def _check_session(url: str) -> Session:
    return make_session_factory(make_engine(url))()


def _answer_in(session: Session, assessment_id: int, key: str, item: str = "q3", value: int = 2) -> SavedAnswer:
    assessment = session.get(Assessment, assessment_id)
    assert assessment is not None
    return record_answer(session, assessment, QLQ, item_id=item, value=value, locale="en",
                         actor=f"participant:{assessment.participant_id}", grace=GRACE, request_id=key)


def test_concurrent_duplicate_answers_write_once(race_database_url: str) -> None:
    patient = _committed_patient(race_database_url, "R-001")
    key = _key()
    results = _in_threads(race_database_url, 4, lambda session: _answer_in(session, patient.assessment_id, key))
    assert all(isinstance(r, SavedAnswer) for r in results), results
    assert {(r.request_id, r.item_id, r.value, r.saved_at) for r in results} == {(key, "q3", 2, results[0].saved_at)}
    assert sorted(r.replayed for r in results) == [False, True, True, True]
    with _check_session(race_database_url) as session:
        assert session.execute(select(Answer.item_id, Answer.value).where(Answer.assessment_id == patient.assessment_id)).all() == [("q3", 2)]
        assert _count(session, RequestReceipt, RequestReceipt.assessment_id == patient.assessment_id) == 1
        assert _count(session, AuditEvent, AuditEvent.action == "answer.save",
                      AuditEvent.entity_id == str(patient.assessment_id)) == 1


def test_concurrent_duplicate_submissions_submit_once(race_database_url: str) -> None:
    patient = _committed_patient(race_database_url, "R-002")
    engine = make_engine(race_database_url)
    with make_session_factory(writer_engine(engine))() as session:
        _answer_in(session, patient.assessment_id, _key(), "q29", 6)
        session.commit()
    engine.dispose()
    key = _key()

    def submit(session: Session) -> Submission:
        assessment = session.get(Assessment, patient.assessment_id)
        assert assessment is not None
        return submit_assessment(session, assessment, QLQ, submission_key=key, actor="test", grace=GRACE)

    results = _in_threads(race_database_url, 3, submit)
    assert all(isinstance(r, Submission) for r in results), results
    assert sorted(r.replayed for r in results) == [False, True, True]
    with _check_session(race_database_url) as session:
        assert _count(session, AuditEvent, AuditEvent.action == "assessment.submit",
                      AuditEvent.entity_id == str(patient.assessment_id)) == 1
        assert _count(session, ScaleScore, ScaleScore.assessment_id == patient.assessment_id) == len(QLQ.score_codes)
        assert _count(session, RequestReceipt, RequestReceipt.request_id == key) == 1


@pytest.mark.parametrize("same_payload", [True, False], ids=["duplicate", "conflicting"])
def test_a_duplicate_racing_an_open_transaction_returns_the_stored_receipt(
    race_database_url: str, same_payload: bool
) -> None:
    """The first transaction has written but not committed when the second one looks for the
    request id: the second finds nothing, then its receipt insert meets the primary key once
    the first commits, inserts nothing, and the stored receipt decides (PostgreSQL takes
    exactly that path; SQLite's write lock makes the second wait before it looks, with the
    same result)."""
    first_patient = _committed_patient(race_database_url, f"R-1{int(same_payload)}")
    second_patient = first_patient if same_payload else _committed_patient(race_database_url, f"R-2{int(same_payload)}")
    key = _key()
    engine = make_engine(race_database_url)
    # The second transaction's statements on receipts, in order: ("insert", rows written) for
    # a receipt insert of its own ("insert", None when the insert is part of a statement that
    # also writes the answer and its event, whose row count is its one result row), ("lookup",)
    # for a search by request id.
    receipt_statements: list[tuple[Any, ...]] = []
    second_engine = make_engine(race_database_url)

    def after(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        words = " ".join(statement.split()).upper()
        if words.startswith("INSERT INTO REQUEST_RECEIPTS"):
            receipt_statements.append(("insert", cursor.rowcount))
        elif words.startswith("WITH RECEIPT AS (INSERT INTO REQUEST_RECEIPTS"):
            receipt_statements.append(("insert", None))
        elif "FROM REQUEST_RECEIPTS" in words and "REQUEST_RECEIPTS.REQUEST_ID =" in words:
            receipt_statements.append(("lookup",))

    event.listen(second_engine, "after_cursor_execute", after)
    outcome: list[Any] = []
    try:
        with make_session_factory(writer_engine(engine))() as first:
            original = _answer_in(first, first_patient.assessment_id, key)

            def second() -> None:
                with make_session_factory(writer_engine(second_engine))() as session:
                    try:
                        outcome.append(_answer_in(session, second_patient.assessment_id, key))
                        session.commit()
                    except Exception as error:
                        session.rollback()
                        outcome.append(error)

            thread = threading.Thread(target=second)
            thread.start()
            # Same questionnaire: the second waits for its row lock; another questionnaire:
            # it waits on the primary key itself.
            wait_until_blocked(engine)
            first.commit()
            thread.join(timeout=60)
    finally:
        engine.dispose()
        second_engine.dispose()
    assert len(outcome) == 1
    if same_payload:
        result = outcome[0]
        assert isinstance(result, SavedAnswer) and result.replayed
        assert (result.request_id, result.value, result.saved_at) == (key, original.value, original.saved_at)
    else:
        assert isinstance(outcome[0], ReusedRequestId) and isinstance(outcome[0], Conflict)
    if make_url(race_database_url).get_backend_name() == "postgresql":
        # The primary key decided, not a lookup: the insert came first and wrote nothing (the
        # one receipt stored is the first transaction's, as the outcome above shows).
        assert receipt_statements[0][0] == "insert", receipt_statements
        assert [kind for kind, *_ in receipt_statements].count("insert") == 1
        assert receipt_statements[0][1] in (0, None)
    with _check_session(race_database_url) as session:
        assert _count(session, RequestReceipt, RequestReceipt.request_id == key) == 1
        for patient in {first_patient.assessment_id, second_patient.assessment_id}:
            expected = 1 if patient == first_patient.assessment_id else 0
            assert _count(session, Answer, Answer.assessment_id == patient) == expected
            assert _count(session, AuditEvent, AuditEvent.action == "answer.save", AuditEvent.entity_id == str(patient)) == expected



def test_starting_a_questionnaire_submitted_meanwhile_leaves_it_submitted(
    db_session: Session, patient: Patient
) -> None:
    """The start page or the nurse's tablet read the questionnaire as open; another device
    submitted it before they started it. Starting it reads it again and changes nothing."""
    stale = patient.assessment
    assert stale.status != "completed"
    db_session.execute(  # behind the session's back, as another process's commit would be
        update(table_of(Assessment)).where(table_of(Assessment).c.id == stale.id)
        .values(status="completed", submitted_at=utcnow())
    )
    assert stale.status != "completed"  # the object in hand is out of date
    started = start_assessment(db_session, stale, mode=AssessmentMode.TABLET, text=EN, actor="staff:1")
    assert started is stale and stale.status == "completed" and stale.mode != "tablet"
    assert _count(db_session, AuditEvent, AuditEvent.action == "assessment.start",
                  AuditEvent.entity_id == str(stale.id)) == 0


def test_a_first_answer_for_a_questionnaire_submitted_meanwhile_leaves_it_submitted(
    client: FlaskClient, db_session: Session, patient: Patient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The save read the questionnaire as not started; before it locked it, another device
    started, answered and submitted it. The answer is refused and the submission stands."""
    assert client.get(f"/p/{patient.token}").status_code == 303
    baseline = patient.assessment
    seen_before = OpenAssessment(baseline.id, baseline.participant_id, baseline.status, baseline.instrument_code,
                                 baseline.instrument_version, baseline.window_opens_at, baseline.window_closes_at)
    assert seen_before.status != "in_progress"
    actor = f"participant:{patient.participant.id}"
    start_assessment(db_session, patient.assessment, mode=AssessmentMode.SELF, text=EN, actor=actor)
    for item in QLQ.items:
        record_answer(db_session, patient.assessment, QLQ, item_id=item.id, value=1, locale="en", actor=actor,
                      grace=GRACE)
    submit_assessment(db_session, patient.assessment, QLQ, submission_key=_key(), actor=actor, grace=GRACE)
    db_session.commit()
    monkeypatch.setattr(views, "open_assessment_for", lambda context, now: seen_before)
    response = client.post("/q/answer", json={"assessment": patient.assessment.id, "item": "q1", "value": 4},
                           headers={"Idempotency-Key": _key()})
    assert response.status_code == 409 and response.get_json()["code"] == "conflict"
    db_session.expire_all()
    assert db_session.get(Assessment, patient.assessment.id).status == "completed"  # type: ignore[union-attr]
    assert _answers(db_session, patient.assessment)["q1"] == 1
    assert _count(db_session, AuditEvent, AuditEvent.action == "assessment.start",
                  AuditEvent.entity_id == str(patient.assessment.id)) == 1


@dataclass
class TwoTabs:
    """One phone's sign-in, shared by two test clients that send requests at the same moment."""

    app: Flask
    first: FlaskClient
    second: FlaskClient
    assessment_id: int

    def at_once(self, send: Callable[[FlaskClient, int], Any]) -> list[Any]:
        """``send(client, index)`` from both tabs in two threads released together."""
        barrier = threading.Barrier(2)
        results: list[Any] = [None, None]

        def run(index: int, client: FlaskClient) -> None:
            barrier.wait()
            results[index] = send(client, index)

        threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate((self.first, self.second))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        return results


@pytest.fixture
def two_tabs(race_database_url: str) -> Iterator[TwoTabs]:
    app = create_app(app_config(DATABASE_URL=race_database_url))
    engine = make_engine(race_database_url)
    with make_session_factory(writer_engine(engine))() as session:
        patient = _new_patient(session, "RACE-1", f"R-{uuid.uuid4().hex[:8]}")
        assessment_id = patient.assessment.id
        token = patient.token
    engine.dispose()
    first = app.test_client()
    assert first.get(f"/p/{token}").status_code == 303
    second = app.test_client()
    cookie = first.get_cookie("session", domain="localhost")
    assert cookie is not None
    second.set_cookie("session", cookie.value, domain="localhost")
    yield TwoTabs(app, first, second, assessment_id)
    app.extensions["pro_db"].engine.dispose()


def test_two_first_answers_at_once_start_the_questionnaire_once(race_database_url: str, two_tabs: TwoTabs) -> None:
    """A phone's first two background saves leave at the same moment (two questions answered
    quickly, or two tabs): the questionnaire is started once, both answers are kept."""
    assessment_id = two_tabs.assessment_id
    statuses = two_tabs.at_once(lambda client, index: client.post(
        "/q/answer", json={"assessment": assessment_id, "item": f"q{index + 1}", "value": 3},
        headers={"Idempotency-Key": _key()}).status_code)
    assert statuses == [200, 200]
    with _check_session(race_database_url) as session:
        assert _count(session, Answer, Answer.assessment_id == assessment_id) == 2
        assert _count(session, AuditEvent, AuditEvent.action == "assessment.start",
                      AuditEvent.entity_id == str(assessment_id)) == 1
        stored = session.get(Assessment, assessment_id)
        assert stored is not None and stored.status == "in_progress" and stored.started_at is not None


def test_double_taps_through_the_web_save_and_submit_once(race_database_url: str, two_tabs: TwoTabs) -> None:
    """Two copies of each post leave at the same moment from one phone (same cookie, same
    form): both get the same redirect, the database one write each."""
    first, assessment_id = two_tabs.first, two_tabs.assessment_id
    assert first.post("/q/start", data={"assessment": assessment_id}).status_code == 303

    def together(path: str, data: dict[str, object]) -> list[Any]:
        return two_tabs.at_once(lambda client, _index: client.post(path, data=data))

    for number in range(1, 6):
        page = first.get(f"/q/{number}").get_data(as_text=True)
        data = {"assessment": assessment_id, "value": 2, "go": "next", "request_id": _field(page, "request_id")}
        responses = together(f"/q/{number}", data)
        assert [(r.status_code, r.headers.get("Location")) for r in responses] == [(303, f"/q/{number + 1}")] * 2
    review = first.get("/q/review").get_data(as_text=True)
    responses = together("/q/submit", {"assessment": assessment_id, "request_id": _field(review, "request_id"),
                                       "confirm_missing": "y"})
    assert [(r.status_code, r.headers.get("Location")) for r in responses] == [(303, "/q/done")] * 2
    with _check_session(race_database_url) as session:
        assert _count(session, Answer, Answer.assessment_id == assessment_id) == 5
        assert _count(session, AuditEvent, AuditEvent.action == "answer.save", AuditEvent.entity_id == str(assessment_id)) == 5
        assert _count(session, AuditEvent, AuditEvent.action == "assessment.submit",
                      AuditEvent.entity_id == str(assessment_id)) == 1
        assert _count(session, ScaleScore, ScaleScore.assessment_id == assessment_id) == len(QLQ.score_codes)
        assert _count(session, RequestReceipt, RequestReceipt.assessment_id == assessment_id) == 6
