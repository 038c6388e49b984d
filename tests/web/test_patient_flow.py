"""The patient's questionnaire through the Flask test client (no JavaScript)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pro_app.db.models import AccessLink, Answer, Assessment, AuditEvent, Participant, ScaleScore
from pro_app.domain.instruments import default_registry
from pro_app.services.access import revoke_links
from tests.factories import enrol, link_for, make_study, now_utc

QLQ = default_registry().get("qlq_c30")


@pytest.fixture
def patient(db_session: Session) -> tuple[Participant, str, str]:
    study = make_study(db_session)
    participant = enrol(db_session, study)
    issued = link_for(db_session, participant)
    db_session.commit()
    return participant, issued.token, issued.code


def _open_assessment(session: Session, participant: Participant) -> Assessment:
    return session.scalars(
        select(Assessment).where(Assessment.participant_id == participant.id, Assessment.timepoint_code == "baseline")
    ).one()


def _answers(session: Session, assessment: Assessment) -> dict[str, int]:
    session.expire_all()
    return dict(
        session.execute(select(Answer.item_id, Answer.value).where(Answer.assessment_id == assessment.id)).tuples().all()
    )


def _sign_in_and_start(client: FlaskClient, token: str, assessment: Assessment) -> None:
    response = client.get(f"/p/{token}")
    assert response.status_code == 303 and response.headers["Location"].endswith("/q/")
    response = client.post("/q/start", data={"assessment": assessment.id})
    assert response.status_code == 303


def _answer(client: FlaskClient, assessment: Assessment, number: int, value: int | None, go: str = "next"):  # type: ignore[no-untyped-def]
    data: dict[str, object] = {"assessment": assessment.id, "go": go}
    if value is not None:
        data["value"] = value
    return client.post(f"/q/{number}", data=data)


def _review_key(client: FlaskClient) -> str:
    page = client.get("/q/review").get_data(as_text=True)
    match = re.search(r'name="key" type="hidden" value="([^"]+)"', page) or re.search(
        r'id="key" name="key" type="hidden" value="([^"]+)"', page
    )
    assert match, page
    return match.group(1)


def test_link_signs_in_and_start_page_explains(client: FlaskClient, patient, db_session: Session) -> None:  # type: ignore[no-untyped-def]
    participant, token, _code = patient
    response = client.get(f"/p/{token}")
    assert response.status_code == 303
    assert token not in response.headers["Location"], "the token leaves the address bar"
    page = client.get("/q/").get_data(as_text=True)
    assert "about 10 minutes" in page and "saved as soon as you choose it" in page
    assert "Demonstration wording" in page
    assert 'name="lang"' in page, "language choice on the start page"
    assert participant.subject_code not in page


def test_question_page_structure(client: FlaskClient, patient, db_session: Session) -> None:  # type: ignore[no-untyped-def]
    participant, token, _ = patient
    assessment = _open_assessment(db_session, participant)
    _sign_in_and_start(client, token, assessment)
    first = client.get("/q/1").get_data(as_text=True)
    assert "Question 1 of 30" in first
    assert "<fieldset>" in first and "<legend>" in first
    assert first.count('type="radio"') == 4
    en = default_registry().text("qlq_c30", "en")
    assert en.items["q1"] in first
    assert en.recall["past_week"] not in first, "items 1-5 have no recall period"
    sixth = client.get("/q/6").get_data(as_text=True)
    assert en.recall["past_week"] in sixth
    last = client.get("/q/30").get_data(as_text=True)
    assert last.count('type="radio"') == 7
    labels = en.response_labels["seven_point"]
    assert labels[1] in last and labels[7] in last
    assert "Review answers" in last
    assert client.get("/q/31").status_code == 404
    assert client.get("/q/0").status_code == 404


def test_full_run_without_javascript(client: FlaskClient, patient, db_session: Session) -> None:  # type: ignore[no-untyped-def]
    participant, token, _ = patient
    assessment = _open_assessment(db_session, participant)
    _sign_in_and_start(client, token, assessment)
    for number in range(1, 31):
        value = 7 if number >= 29 else (number % 4) + 1
        response = _answer(client, assessment, number, value)
        assert response.status_code == 303
        expected = "/q/review" if number == 30 else f"/q/{number + 1}"
        assert response.headers["Location"].endswith(expected)
    assert len(_answers(db_session, assessment)) == 30
    key = _review_key(client)
    response = client.post("/q/submit", data={"assessment": assessment.id, "key": key})
    assert response.status_code == 303 and response.headers["Location"].endswith("/q/done")
    done = client.get("/q/done").get_data(as_text=True)
    assert "Thank you" in done
    assert "QL2" not in done and "PF2" not in done, "no scores are shown to the patient"
    db_session.expire_all()
    assessment = db_session.get(Assessment, assessment.id)
    assert assessment is not None
    assert assessment.status == "completed" and assessment.mode == "self" and assessment.locale == "en"
    assert assessment.text_source == "demo" and len(assessment.text_checksum or "") == 64
    scores = {s.scale_code: s for s in db_session.scalars(select(ScaleScore).where(ScaleScore.assessment_id == assessment.id).order_by(ScaleScore.id))}
    assert list(scores) == list(QLQ.score_codes)
    assert scores["QL2"].value == 100.0 and scores["QL2"].items_answered == 2
    actions = list(db_session.scalars(select(AuditEvent.action).where(AuditEvent.entity_id == str(assessment.id))))
    assert actions.count("answer.save") == 30 and actions.count("assessment.submit") == 1
    actors = set(db_session.scalars(select(AuditEvent.actor).where(AuditEvent.action == "answer.save")))
    assert actors == {f"participant:{participant.id}"}
    # Locked for the patient afterwards.
    response = _answer(client, assessment, 1, 4)
    assert response.status_code == 409
    assert _answers(db_session, assessment)["q1"] == 2


def test_answers_can_be_changed_and_back_keeps_them(client: FlaskClient, patient, db_session: Session) -> None:  # type: ignore[no-untyped-def]
    participant, token, _ = patient
    assessment = _open_assessment(db_session, participant)
    _sign_in_and_start(client, token, assessment)
    _answer(client, assessment, 1, 2)
    response = _answer(client, assessment, 2, None, go="back")
    assert response.headers["Location"].endswith("/q/1")
    page = client.get("/q/1").get_data(as_text=True)
    assert re.search(r'value="2"\s+checked', page)
    _answer(client, assessment, 1, 3)
    assert _answers(db_session, assessment) == {"q1": 3}
    saves = db_session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "answer.save"))
    assert saves == 2
    # Saving the same value again is a no-op (a retried request).
    _answer(client, assessment, 1, 3)
    assert db_session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "answer.save")) == 2


def test_resume_on_another_device(app: Flask, client: FlaskClient, patient, db_session: Session) -> None:  # type: ignore[no-untyped-def]
    participant, token, _ = patient
    assessment = _open_assessment(db_session, participant)
    _sign_in_and_start(client, token, assessment)
    for number in range(1, 6):
        _answer(client, assessment, number, 1)
    other_device = app.test_client()
    other_device.get(f"/p/{token}")
    start = other_device.get("/q/").get_data(as_text=True)
    assert "You have answered 5 questions of 30" in start and "Continue" in start
    response = other_device.post("/q/start", data={"assessment": assessment.id})
    assert response.headers["Location"].endswith("/q/6")
    assert len(_answers(db_session, assessment)) == 5


def test_review_lists_unanswered_and_confirmation_is_required(client: FlaskClient, patient, db_session: Session) -> None:  # type: ignore[no-untyped-def]
    participant, token, _ = patient
    assessment = _open_assessment(db_session, participant)
    _sign_in_and_start(client, token, assessment)
    for number in range(1, 29):
        _answer(client, assessment, number, 2)
    page = client.get("/q/review").get_data(as_text=True)
    assert "2 questions are not answered" in page
    assert 'href="/q/29"' in page and 'href="/q/30"' in page
    key = _review_key(client)
    refused = client.post("/q/submit", data={"assessment": assessment.id, "key": key})
    assert refused.status_code == 400
    assert "Please confirm" in refused.get_data(as_text=True)
    db_session.expire_all()
    assert db_session.get(Assessment, assessment.id).status == "in_progress"  # type: ignore[union-attr]
    accepted = client.post("/q/submit", data={"assessment": assessment.id, "key": key, "confirm_missing": "y"})
    assert accepted.status_code == 303
    db_session.expire_all()
    scores = dict(db_session.execute(select(ScaleScore.scale_code, ScaleScore.value).where(ScaleScore.assessment_id == assessment.id)).tuples().all())
    assert scores["QL2"] is None and scores["C30SUM"] is not None


def test_double_submit_creates_one_submission(client: FlaskClient, patient, db_session: Session) -> None:  # type: ignore[no-untyped-def]
    participant, token, _ = patient
    assessment = _open_assessment(db_session, participant)
    _sign_in_and_start(client, token, assessment)
    _answer(client, assessment, 1, 1)
    key = _review_key(client)
    data = {"assessment": assessment.id, "key": key, "confirm_missing": "y"}
    first = client.post("/q/submit", data=data)
    second = client.post("/q/submit", data=data)
    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"]
    submits = db_session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "assessment.submit"))
    assert submits == 1
    assert db_session.scalar(select(func.count()).select_from(ScaleScore).where(ScaleScore.assessment_id == assessment.id)) == 16
    replay_other_key = client.post("/q/submit", data={**data, "key": "another-key-123"})
    assert replay_other_key.status_code == 409


def test_background_save_api(client: FlaskClient, patient, db_session: Session) -> None:  # type: ignore[no-untyped-def]
    participant, token, _ = patient
    assessment = _open_assessment(db_session, participant)
    assert client.post("/q/answer", json={"assessment": assessment.id, "item": "q1", "value": 1}).status_code == 401
    client.get(f"/p/{token}")
    ok = client.post("/q/answer", json={"assessment": assessment.id, "item": "q1", "value": 3, "key": "k1"})
    assert ok.status_code == 200 and ok.get_json() == {"saved": True, "item": "q1", "value": 3, "key": "k1"}
    assert _answers(db_session, assessment) == {"q1": 3}
    db_session.expire_all()
    started = db_session.get(Assessment, assessment.id)
    assert started is not None and started.status == "in_progress" and started.mode == "self"
    bad = [
        ({"assessment": assessment.id, "item": "q99", "value": 1}, 400),
        ({"assessment": assessment.id, "item": "q1", "value": 5}, 400),
        ({"assessment": assessment.id, "item": "q29", "value": 8}, 400),
        ({"assessment": assessment.id, "item": "q1", "value": "x"}, 400),
        ({"assessment": assessment.id + 1000, "item": "q1", "value": 1}, 409),
        ({"item": "q1", "value": 1}, 400),
    ]
    for payload, status in bad:
        response = client.post("/q/answer", json=payload)
        assert response.status_code == status, payload
        assert response.get_json()["error"]
    assert _answers(db_session, assessment) == {"q1": 3}


def test_tampered_form_values_are_refused(client: FlaskClient, patient, db_session: Session) -> None:  # type: ignore[no-untyped-def]
    participant, token, _ = patient
    assessment = _open_assessment(db_session, participant)
    _sign_in_and_start(client, token, assessment)
    assert _answer(client, assessment, 1, 9).status_code == 400
    assert client.post("/q/1", data={"assessment": assessment.id, "value": "abc"}).status_code == 400
    assert client.post("/q/1", data={"assessment": "", "value": 1}).status_code == 400
    assert client.post("/q/1", data={"assessment": assessment.id + 77, "value": 1}).status_code == 409
    assert client.post("/q/1", data={"assessment": "0", "value": 1}).status_code == 409
    assert client.post("/q/1", data={"assessment": assessment.id, "value": "-1"}).status_code == 400
    assert client.post("/q/1", data={"assessment": assessment.id, "value": "2.0"}).status_code == 400
    assert client.post("/q/1", data={"assessment": assessment.id, "value": 1, "go": "x" * 11}).status_code == 400
    assert client.post("/q/1", json={"assessment": assessment.id, "value": [1]}).status_code == 400
    assert client.post("/q/1", json={"assessment": assessment.id, "value": 1, "go": 7}).status_code == 400
    assert _answers(db_session, assessment) == {}
    # No answer chosen: the patient moves on, nothing is saved.
    moved_on = client.post("/q/1", data={"assessment": assessment.id, "value": " ", "go": "next"})
    assert moved_on.status_code == 303 and moved_on.headers["Location"].endswith("/q/2")
    assert _answers(db_session, assessment) == {}


def test_invalid_revoked_and_expired_links(client: FlaskClient, patient, db_session: Session) -> None:  # type: ignore[no-untyped-def]
    participant, token, _ = patient
    unknown = client.get("/p/not-a-real-token")
    assert unknown.status_code == 404 and "This link cannot be used" in unknown.get_data(as_text=True)
    assert client.get("/p/" + "x" * 500).status_code == 404
    client.get(f"/p/{token}")
    assert client.get("/q/").status_code == 200
    revoke_links(db_session, participant, actor="test")
    db_session.commit()
    assert client.get("/q/").status_code == 401, "revoking ends sessions opened with the link"
    revoked = client.get(f"/p/{token}")
    assert revoked.status_code == 410
    assert participant.subject_code not in revoked.get_data(as_text=True)
    fresh = link_for(db_session, participant)
    link = db_session.get(AccessLink, fresh.link.id)
    assert link is not None
    link.expires_at = now_utc() - timedelta(seconds=1)
    db_session.commit()
    assert client.get(f"/p/{fresh.token}").status_code == 410


def test_one_participant_never_reaches_another(app: Flask, client: FlaskClient, patient, db_session: Session) -> None:  # type: ignore[no-untyped-def]
    participant, token, _ = patient
    assessment = _open_assessment(db_session, participant)
    _sign_in_and_start(client, token, assessment)
    _answer(client, assessment, 1, 4)
    other = enrol(db_session, participant.study, "P-002")
    other_link = link_for(db_session, other)
    db_session.commit()
    intruder = app.test_client()
    intruder.get(f"/p/{other_link.token}")
    intruder.post("/q/start", data={"assessment": _open_assessment(db_session, other).id})
    page = intruder.get("/q/1").get_data(as_text=True)
    assert not re.search(r'value="4"\s+checked', page)
    response = intruder.post("/q/answer", json={"assessment": assessment.id, "item": "q2", "value": 1})
    assert response.status_code == 409
    response = intruder.post("/q/2", data={"assessment": assessment.id, "value": 1})
    assert response.status_code == 409
    assert _answers(db_session, assessment) == {"q1": 4}


def test_csrf_is_required(app: Flask, patient, db_session: Session) -> None:  # type: ignore[no-untyped-def]
    participant, token, _ = patient
    app.config["WTF_CSRF_ENABLED"] = True
    client = app.test_client()
    assessment = _open_assessment(db_session, participant)
    client.get(f"/p/{token}")
    response = client.post("/q/start", data={"assessment": assessment.id})
    assert response.status_code == 400
    response = client.post("/q/answer", json={"assessment": assessment.id, "item": "q1", "value": 1})
    assert response.status_code == 400
    assert _answers(db_session, assessment) == {}
    # With the token from the page it works.
    start = client.get("/q/").get_data(as_text=True)
    token_value = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', start)
    assert token_value
    response = client.post("/q/start", data={"assessment": assessment.id, "csrf_token": token_value.group(1)})
    assert response.status_code == 303


def test_oversized_body_is_refused(client: FlaskClient, patient, db_session: Session) -> None:  # type: ignore[no-untyped-def]
    participant, token, _ = patient
    assessment = _open_assessment(db_session, participant)
    _sign_in_and_start(client, token, assessment)
    response = client.post("/q/1", data={"assessment": assessment.id, "value": 1, "pad": "x" * 100_000})
    assert response.status_code == 413
    assert _answers(db_session, assessment) == {}


def test_manual_code_and_throttling(app: Flask, patient, db_session: Session) -> None:  # type: ignore[no-untyped-def]
    participant, _token, code = patient
    client = app.test_client()
    assert "personal code" in client.get("/start").get_data(as_text=True)
    typed = f" {code[:5].lower()}-{code[5:]} "
    response = client.post("/start", data={"code": typed})
    assert response.status_code == 303 and response.headers["Location"].endswith("/q/")
    assert client.get("/q/").status_code == 200
    guesser = app.test_client()
    assert guesser.post("/start", data={"code": ""}).status_code == 400
    statuses = [guesser.post("/start", data={"code": f"WRONG{n:05d}"}).status_code for n in range(10)]
    assert statuses[:9] == [400] * 9 and statuses[9] == 429
    # Even the right code is refused while throttled.
    assert guesser.post("/start", data={"code": code}).status_code == 429


def test_nothing_due_shows_the_next_opening(client: FlaskClient, patient, db_session: Session) -> None:  # type: ignore[no-untyped-def]
    participant, token, _ = patient
    baseline = _open_assessment(db_session, participant)
    baseline.status = "missed"
    db_session.commit()
    client.get(f"/p/{token}")
    page = client.get("/q/").get_data(as_text=True)
    assert "No questionnaire to fill in right now" in page
    assert "The next questionnaire opens on" in page


def test_closed_window_refuses_answers_but_grace_lets_a_started_one_finish(
    client: FlaskClient, patient, db_session: Session
) -> None:  # type: ignore[no-untyped-def]
    participant, token, _ = patient
    assessment = _open_assessment(db_session, participant)
    _sign_in_and_start(client, token, assessment)
    _answer(client, assessment, 1, 1)
    assessment.window_opens_at = now_utc() - timedelta(days=2)
    assessment.window_closes_at = now_utc() - timedelta(minutes=30)  # inside the 120-minute grace
    db_session.commit()
    assert _answer(client, assessment, 2, 2).status_code == 303
    assessment.window_closes_at = now_utc() - timedelta(hours=3)
    db_session.commit()
    assert _answer(client, assessment, 3, 2).status_code == 409
    assert _answers(db_session, assessment) == {"q1": 1, "q2": 2}
