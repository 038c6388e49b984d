"""Staff corrections of submitted answers, and the history pages read from the audit trail."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from babel.dates import format_datetime
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pro_app.db.models import Alert, Answer, Assessment, AuditEvent, OutboxMessage, Participant, ScaleScore, StaffUser, Study
from pro_app.domain.errors import Conflict, NotFound, ValidationError
from pro_app.domain.instruments import default_registry
from pro_app.domain.scoring import score_answers
from pro_app.domain.states import AssessmentMode
from pro_app.services.access import issue_link
from pro_app.services.alerts import acknowledge_alerts
from pro_app.services.audit import record_event
from pro_app.services.corrections import MAX_REASON, correct_answer
from pro_app.services.history import MASK, assessment_history, participant_history
from pro_app.services.participants import enrol_participant
from pro_app.services.questionnaire import record_answer, start_assessment, submit_assessment
from tests.factories import enrol, make_staff, make_study, now_utc, sign_in

QLQ = default_registry().get("qlq_c30")
TEXT = default_registry().text("qlq_c30", "en")
GRACE = timedelta(0)
Answers = Callable[[int], int]


def best(number: int) -> int:
    return 7 if number >= 29 else 1


def with_(base: Answers, **changes: int) -> Answers:
    """``base`` with some items changed, e.g. ``with_(best, q29=5)``."""
    return lambda number: changes.get(f"q{number}", base(number))


def complete(session: Session, assessment: Assessment, answers: Answers = best, *, at: datetime | None = None) -> Assessment:
    """The patient answers every question and submits, through the real services."""
    actor = f"participant:{assessment.participant_id}"
    start_assessment(session, assessment, mode=AssessmentMode.SELF, text=TEXT, actor=actor, now=at)
    for item in QLQ.items:
        record_answer(session, assessment, QLQ, item_id=item.id, value=answers(item.number), locale="en", actor=actor,
                      grace=GRACE, now=at)
    submit_assessment(session, assessment, QLQ, submission_key=f"key-{assessment.id}", actor=actor, grace=GRACE,
                      now=at + timedelta(minutes=10) if at else None)
    session.commit()
    return assessment


def first_assessment(session: Session, participant: Participant) -> Assessment:
    assessment = session.scalars(
        select(Assessment).where(Assessment.participant_id == participant.id).order_by(Assessment.planned_at)
    ).first()
    assert assessment is not None
    return assessment


def stored_answers(session: Session, assessment: Assessment) -> dict[str, int]:
    session.expire_all()
    return dict(session.execute(select(Answer.item_id, Answer.value).where(Answer.assessment_id == assessment.id))
                .tuples().all())


def stored_scores(session: Session, assessment: Assessment) -> dict[str, float | None]:
    return dict(session.execute(select(ScaleScore.scale_code, ScaleScore.value)
                                .where(ScaleScore.assessment_id == assessment.id)).tuples().all())


def corrections(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "answer.correct"))
               or 0)


@pytest.fixture
def study(db_session: Session) -> Study:
    study = make_study(db_session, "COR-1")
    db_session.commit()
    return study


@pytest.fixture
def staff(db_session: Session, study: Study) -> dict[str, StaffUser]:
    users = {
        "nurse": make_staff(db_session, "nurse", [study.sites[0]], "nurse@cor.example.org"),
        "admin": make_staff(db_session, "admin", [], "admin@cor.example.org"),
        "analyst": make_staff(db_session, "analyst", [study.sites[0]], "analyst@cor.example.org"),
        "other_nurse": make_staff(db_session, "nurse", [study.sites[1]], "nurse.b@cor.example.org"),
    }
    db_session.commit()
    return users


def client_for(app: Flask, user: StaffUser) -> FlaskClient:
    client = app.test_client()
    assert sign_in(client, user.email).status_code == 303
    return client


@pytest.fixture
def nurse_client(app: Flask, staff: dict[str, StaffUser]) -> FlaskClient:
    return client_for(app, staff["nurse"])


@pytest.fixture
def submitted(db_session: Session, study: Study) -> Assessment:
    participant = enrol(db_session, study, "COR-101")
    return complete(db_session, first_assessment(db_session, participant), with_(best, q3=2))


def url(assessment: Assessment, page: str = "correct") -> str:
    return f"/staff/participants/assessments/{assessment.id}/{page}"


# ---------------------------------------------------------------- corrections through the pages


def test_nurse_corrects_an_answer_with_a_reason(
    nurse_client: FlaskClient, staff: dict[str, StaffUser], submitted: Assessment, db_session: Session
) -> None:
    listing = nurse_client.get(url(submitted))
    assert listing.status_code == 200
    form = nurse_client.get(url(submitted) + "?item=q3").get_data(as_text=True)
    assert "Question 3" in form and "stored now" in form and "Reason for the correction" in form
    before = stored_scores(db_session, submitted)
    response = nurse_client.post(url(submitted), data={"item": "q3", "value": "4",
                                                       "reason": "Patient reported tapping the wrong box"})
    assert response.status_code == 303
    assert response.headers["Location"].startswith(url(submitted, "history"))
    answers = stored_answers(db_session, submitted)
    assert answers["q3"] == 4
    nurse = staff["nurse"]
    answer = db_session.scalars(select(Answer).where(Answer.assessment_id == submitted.id, Answer.item_id == "q3")).one()
    assert answer.answered_by == f"staff:{nurse.id}"
    # Re-scored with the real scoring code, at full precision.
    expected = {code: result.value for code, result in score_answers(QLQ, answers).items()}
    assert stored_scores(db_session, submitted) == expected
    assert before["PF2"] != expected["PF2"]
    event = db_session.scalars(select(AuditEvent).where(AuditEvent.action == "answer.correct")).one()
    assert (event.actor, event.reason) == (f"staff:{nurse.id}", "Patient reported tapping the wrong box")
    assert json.loads(event.before or "")["value"] == 2 and json.loads(event.after or "")["value"] == 4
    history = nurse_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "The correction was saved and the scores were recalculated." in history
    assert "Answer corrected" in history and "question 3" in history and "2 → 4" in history
    assert "Patient reported tapping the wrong box" in history and "nurse@cor.example.org (nurse)" in history


def test_admin_marks_an_answer_not_answered(
    app: Flask, staff: dict[str, StaffUser], submitted: Assessment, db_session: Session
) -> None:
    admin = client_for(app, staff["admin"])
    response = admin.post(url(submitted), data={"item": "q1", "value": "none", "reason": "Answered by a relative"})
    assert response.status_code == 303
    answers = stored_answers(db_session, submitted)
    assert "q1" not in answers and len(answers) == 29
    scores = stored_scores(db_session, submitted)
    assert scores == {code: result.value for code, result in score_answers(QLQ, answers).items()}
    assert scores["PF2"] is not None, "4 of 5 items still score the scale (half rule)"
    page = admin.get(url(submitted)).get_data(as_text=True)
    assert "not answered" in page


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        ({"item": "q99", "value": "2", "reason": "typo"}, 400, "This question does not exist."),
        ({"item": "q3", "value": "9", "reason": "typo"}, 400, "Please choose one of the answers shown."),
        ({"item": "q29", "value": "0", "reason": "typo"}, 400, "Please choose one of the answers shown."),
        ({"item": "q3", "value": "two", "reason": "typo"}, 400, "Please choose one of the answers shown."),
        ({"item": "q3", "value": "", "reason": "typo"}, 400, "Please choose the corrected answer."),
        ({"item": "q3", "value": "4", "reason": ""}, 400, "Please give the reason for the correction."),
        ({"item": "q3", "value": "4", "reason": "   "}, 400, "Please give the reason for the correction."),
        ({"item": "q3", "value": "4", "reason": "x" * (MAX_REASON + 1)}, 400, "The reason is too long"),
        ({"item": "q3", "value": "2", "reason": "typo"}, 400, "This is already the stored answer"),
        ({"value": "2", "reason": "typo"}, 400, "Please choose the question to correct."),
    ],
)
def test_bad_corrections_are_refused_and_change_nothing(
    nurse_client: FlaskClient, submitted: Assessment, db_session: Session, data: dict[str, str], status: int,
    message: str,
) -> None:
    answers, scores = stored_answers(db_session, submitted), stored_scores(db_session, submitted)
    response = nurse_client.post(url(submitted), data=data)
    assert response.status_code == status
    assert message in response.get_data(as_text=True)
    assert stored_answers(db_session, submitted) == answers and stored_scores(db_session, submitted) == scores
    assert corrections(db_session) == 0


def test_an_unknown_question_in_the_link_is_a_clear_400(nurse_client: FlaskClient, submitted: Assessment) -> None:
    response = nurse_client.get(url(submitted) + "?item=q0")
    assert response.status_code == 400
    assert "This question does not exist." in response.get_data(as_text=True)


def test_questionnaires_not_yet_submitted_cannot_be_corrected(
    nurse_client: FlaskClient, study: Study, db_session: Session, staff: dict[str, StaffUser]
) -> None:
    participant = enrol(db_session, study, "COR-102")
    assessment = first_assessment(db_session, participant)
    start_assessment(db_session, assessment, mode=AssessmentMode.SELF, text=TEXT, actor="participant:x")
    record_answer(db_session, assessment, QLQ, item_id="q1", value=2, locale="en", actor="participant:x", grace=GRACE)
    db_session.commit()
    page = nurse_client.get(url(assessment))
    assert page.status_code == 409 and "the patient may still be answering it" in page.get_data(as_text=True)
    response = nurse_client.post(url(assessment), data={"item": "q1", "value": "3", "reason": "typo"})
    assert response.status_code == 409 and "the patient may still be answering it" in response.get_data(as_text=True)
    assert stored_answers(db_session, assessment) == {"q1": 2} and corrections(db_session) == 0
    assessment.status = "missed"
    db_session.commit()
    missed = nurse_client.post(url(assessment), data={"item": "q1", "value": "3", "reason": "typo"})
    assert missed.status_code == 409 and "Only submitted questionnaires can be corrected." in missed.get_data(as_text=True)
    with pytest.raises(Conflict):
        correct_answer(db_session, assessment, item_id="q1", value=3, reason="typo", user=staff["nurse"])


def test_corrections_are_for_the_clinical_team_of_the_site(
    app: Flask, staff: dict[str, StaffUser], submitted: Assessment, db_session: Session
) -> None:
    data = {"item": "q3", "value": "4", "reason": "typo"}
    other_nurse = client_for(app, staff["other_nurse"])
    assert other_nurse.get(url(submitted)).status_code == 404
    assert other_nurse.post(url(submitted), data=data).status_code == 404
    analyst = client_for(app, staff["analyst"])
    assert analyst.get(url(submitted)).status_code == 403
    assert analyst.post(url(submitted), data=data).status_code == 403
    assert "Correct an answer" not in analyst.get(url(submitted, "history")).get_data(as_text=True)
    assert corrections(db_session) == 0
    # The service refuses too, whoever calls it.
    for user in (staff["analyst"], staff["other_nurse"]):
        with pytest.raises(NotFound):
            correct_answer(db_session, submitted, item_id="q3", value=4, reason="typo", user=user)
    with pytest.raises(ValidationError):
        correct_answer(db_session, submitted, item_id="q3", value=True, reason="typo", user=staff["nurse"])  # type: ignore[arg-type]


# ---------------------------------------------------------------- alerts after a correction


def test_a_correction_can_raise_an_alert_and_never_silently_clears_one(
    nurse_client: FlaskClient, staff: dict[str, StaffUser], submitted: Assessment, db_session: Session
) -> None:
    assert db_session.scalars(select(Alert).where(Alert.assessment_id == submitted.id)).all() == []
    response = nurse_client.post(url(submitted), data={"item": "q8", "value": "4", "reason": "Misread in interview"})
    assert response.status_code == 303 and "raised=1" in response.headers["Location"]
    alert = db_session.scalars(select(Alert).where(Alert.assessment_id == submitted.id)).one()
    assert (alert.scale_code, alert.state, alert.value) == ("DY", "open", 100.0)
    assert [m.recipient for m in db_session.scalars(select(OutboxMessage))] == [staff["nurse"].email]
    raised = db_session.scalars(select(AuditEvent).where(AuditEvent.action == "alert.raise")).one()
    assert raised.reason == "Misread in interview" and raised.actor == f"staff:{staff['nurse'].id}"
    assert "New alerts: 1" in nurse_client.get(response.headers["Location"]).get_data(as_text=True)

    # Corrected back: the alert is no longer met, but a nurse may already have acted on it.
    back = nurse_client.post(url(submitted), data={"item": "q8", "value": "1", "reason": "Checked with the patient"})
    assert back.status_code == 303 and "review=1" in back.headers["Location"]
    db_session.expire_all()
    alert = db_session.get(Alert, alert.id)
    assert alert is not None and alert.state == "open"
    recheck = db_session.scalars(select(AuditEvent).where(AuditEvent.action == "alert.recheck")).one()
    assert (recheck.entity_type, recheck.entity_id) == ("alert", str(alert.id))
    assert json.loads(recheck.after or "") == {"value": 0.0, "met": False, "state": "open"}
    notice = nurse_client.get(back.headers["Location"]).get_data(as_text=True)
    assert "no longer met: 1" in notice
    history = nurse_client.get(url(submitted, "history")).get_data(as_text=True)
    assert "Alert checked again after a correction" in history

    # Acknowledged alerts record what was reviewed: later corrections leave them alone.
    acknowledge_alerts(db_session, submitted, user=staff["nurse"], note="Called; entered in error.")
    db_session.commit()
    nurse_client.post(url(submitted), data={"item": "q8", "value": "3", "reason": "Patient changed their mind"})
    db_session.expire_all()
    alerts = db_session.scalars(select(Alert).where(Alert.assessment_id == submitted.id)).all()
    assert [(a.state, a.value, a.note) for a in alerts] == [("acknowledged", 100.0, "Called; entered in error.")]


def test_correcting_the_baseline_rechecks_worsening_of_later_questionnaires(
    nurse_client: FlaskClient, study: Study, db_session: Session, staff: dict[str, StaffUser]
) -> None:
    start = now_utc() - timedelta(days=43)
    participant = enrol_participant(db_session, study=study, site=study.sites[0], arm=study.arms[0],
                                    subject_code="COR-103", locale="en", actor="test", now=start)
    baseline, week6 = db_session.scalars(
        select(Assessment).where(Assessment.participant_id == participant.id).order_by(Assessment.planned_at).limit(2)
    ).all()
    complete(db_session, baseline, with_(best, q29=5, q30=5), at=start + timedelta(hours=1))
    complete(db_session, week6, with_(best, q29=5, q30=5), at=week6.planned_at)
    assert db_session.scalars(select(Alert)).all() == [], "no change from baseline, nothing to alert"
    response = nurse_client.post(url(baseline), data={"item": "q29", "value": "7", "reason": "Keyed 5 for 7"})
    assert response.status_code == 303
    alert = db_session.scalars(select(Alert)).one()
    assert (alert.assessment_id, alert.scale_code, alert.rule_code) == (week6.id, "QL2", "QL2:worsening:10")
    assert alert.threshold == pytest.approx(83.33333333333334), "the corrected baseline"
    raised = db_session.scalars(select(AuditEvent).where(AuditEvent.action == "alert.raise")).one()
    assert raised.entity_id == str(week6.id) and raised.reason == "Keyed 5 for 7"


# ---------------------------------------------------------------- history pages


@pytest.fixture
def story(db_session: Session, study: Study, staff: dict[str, StaffUser]) -> tuple[Participant, Assessment, str]:
    """A participant with contact details, a link, a submitted questionnaire, an alert and a correction."""
    participant = enrol_participant(
        db_session, study=study, site=study.sites[0], arm=study.arms[0], subject_code="HIS-1", locale="en",
        email="patient.his@example.org", phone="+4930765432", actor=f"staff:{staff['nurse'].id}",
    )
    token = issue_link(db_session, participant, actor=f"staff:{staff['nurse'].id}", valid_days=30).token
    assessment = complete(db_session, first_assessment(db_session, participant), with_(best, q8=4))
    acknowledge_alerts(db_session, assessment, user=staff["nurse"], note="Phoned, fine.")
    correct_answer(db_session, assessment, item_id="q5", value=2, reason="Patient misread question 5",
                   user=staff["nurse"])
    # An event that carries contact details (as a careless or older code path might): masked.
    record_event(db_session, actor=f"staff:{staff['admin'].id}", action="participant.contact",
                 entity_type="participant", entity_id=participant.id,
                 before={"email": "old.address@example.org"},
                 after={"email": "patient.his@example.org", "note": "reach via +4930765432 or patient.his@example.org"})
    db_session.commit()
    return participant, assessment, token


def test_participant_history_tells_the_whole_story_newest_first(
    nurse_client: FlaskClient, story: tuple[Participant, Assessment, str], db_session: Session
) -> None:
    participant, assessment, _token = story
    response = nurse_client.get(f"/staff/participants/{participant.id}/history")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    order = ["participant.contact", "Answer corrected", "Alert acknowledged", "Questionnaire submitted",
             "Alerts raised", "Answer saved", "Questionnaire started", "Personal link issued", "Enrolled"]
    positions = [page.index(label) for label in order]
    assert positions == sorted(positions), "newest first"
    assert "Patient misread question 5" in page and "Phoned, fine." in page
    assert "nurse@cor.example.org (nurse)" in page and "participant" in page and "system (automatic)" in page
    assert assessment.timepoint_label in page
    # Time in the site's zone and in UTC.
    event = db_session.scalars(select(AuditEvent).where(AuditEvent.action == "answer.correct")).one()
    assert "Europe/Berlin" in page
    assert format_datetime(event.occurred_at, "medium", tzinfo=ZoneInfo("Europe/Berlin"), locale="en") in page
    assert event.occurred_at.strftime("%Y-%m-%d %H:%M:%S") + " UTC" in page


def test_history_never_shows_tokens_emails_or_phone_numbers(
    app: Flask, nurse_client: FlaskClient, staff: dict[str, StaffUser], story: tuple[Participant, Assessment, str],
    db_session: Session,
) -> None:
    participant, assessment, token = story
    admin = client_for(app, staff["admin"])
    for client in (nurse_client, admin):
        for path in (f"/staff/participants/{participant.id}/history", url(assessment, "history")):
            page = client.get(path).get_data(as_text=True)
            for secret in (token, "patient.his@example.org", "old.address@example.org", "+4930765432", "4930765432"):
                assert secret not in page, (path, secret)
    page = admin.get(f"/staff/participants/{participant.id}/history").get_data(as_text=True)
    assert MASK in page
    entries = participant_history(db_session, participant)
    contact = next(e for e in entries if e.action == "participant.contact")
    assert {c.field: (c.before, c.after) for c in contact.changes} == {
        "email": (MASK, MASK), "note": (None, f"reach via {MASK} or {MASK}"),
    }
    enrolment = next(e for e in entries if e.action == "participant.enrol")
    assert {c.field: c.after for c in enrolment.changes}["contact"] == '{"email": true, "phone": true}'


def test_assessment_history_has_each_answer_its_corrections_scores_and_alerts(
    nurse_client: FlaskClient, story: tuple[Participant, Assessment, str], db_session: Session
) -> None:
    participant, assessment, _token = story
    entries = assessment_history(db_session, assessment)
    actions = [e.action for e in entries]
    assert actions[:2] == ["scores.store", "answer.correct"], "newest first: the correction and its re-scoring"
    assert actions.count("answer.save") == 30 and "participant.enrol" not in actions
    assert {"assessment.start", "assessment.submit", "scores.store", "alert.raise", "alert.acknowledge",
            "answer.correct"} <= set(actions)
    assert [e.seq for e in entries] == sorted((e.seq for e in entries), reverse=True)
    q5 = [e for e in entries if e.item == "q5"]
    assert [e.action for e in q5] == ["answer.correct", "answer.save"]
    assert q5[0].item_number == 5 and q5[0].reason == "Patient misread question 5"
    assert {c.field: (c.before, c.after) for c in q5[0].changes}["value"] == ("1", "2")
    page = nurse_client.get(url(assessment, "history")).get_data(as_text=True)
    assert "question 5" in page and "Whole history of this participant" in page
    assert "Correct an answer" in page


def test_history_is_scoped_to_the_sites_of_the_user(
    app: Flask, staff: dict[str, StaffUser], story: tuple[Participant, Assessment, str]
) -> None:
    participant, assessment, _token = story
    paths = (f"/staff/participants/{participant.id}/history", url(assessment, "history"))
    other_nurse = client_for(app, staff["other_nurse"])
    assert [other_nurse.get(path).status_code for path in paths] == [404, 404]
    analyst = client_for(app, staff["analyst"])
    assert [analyst.get(path).status_code for path in paths] == [200, 200]
    assert app.test_client().get(paths[0]).status_code == 302, "sign-in first"


def test_the_participant_page_links_to_the_history_and_corrections(
    app: Flask, nurse_client: FlaskClient, staff: dict[str, StaffUser], story: tuple[Participant, Assessment, str]
) -> None:
    participant, assessment, _token = story
    page = nurse_client.get(f"/staff/participants/{participant.id}").get_data(as_text=True)
    assert f"/staff/participants/{participant.id}/history" in page
    assert url(assessment, "history") in page and url(assessment) in page
    analyst_page = client_for(app, staff["analyst"]).get(f"/staff/participants/{participant.id}").get_data(as_text=True)
    assert url(assessment, "history") in analyst_page and url(assessment) not in analyst_page
