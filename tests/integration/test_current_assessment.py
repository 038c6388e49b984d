"""The questionnaire a patient may answer now: the values the question page reads agree with
the mapped assessment every other patient page loads."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask, session
from sqlalchemy import select
from sqlalchemy.orm import Session

from pro_app.db.models import Assessment, Participant
from pro_app.domain.states import AssessmentStatus, ParticipantStatus
from pro_app.services.questionnaire import (
    OpenAssessment,
    current_assessment,
    current_open_assessment,
    open_assessment,
)
from pro_app.web.patient.context import SESSION_KEY, grace_period, load_patient, open_assessment_for
from tests.factories import enrol, link_for, make_study

GRACE = timedelta(hours=2)


def _schedule(session: Session, participant: Participant) -> list[Assessment]:
    return list(session.scalars(
        select(Assessment).where(Assessment.participant_id == participant.id).order_by(Assessment.window_opens_at)
    ))


def _overlap(schedule: list[Assessment]) -> None:
    """Each window opens half a day before the previous one closes, so two questionnaires are
    open at once and the choice between them (started first, then earliest) matters."""
    for previous, following in zip(schedule, schedule[1:4]):
        following.window_opens_at = min(following.window_opens_at, previous.window_closes_at - timedelta(hours=12))


def _values(assessment: Assessment) -> OpenAssessment:
    return OpenAssessment(
        assessment.id, assessment.participant_id, assessment.status, assessment.instrument_code,
        assessment.instrument_version, assessment.window_opens_at, assessment.window_closes_at,
    )


@pytest.mark.parametrize("started", [None, 0, 1])
def test_the_question_page_and_the_other_pages_pick_the_same_questionnaire(
    db_session: Session, started: int | None
) -> None:
    study = make_study(db_session)
    participant = enrol(db_session, study, days_ago=50)
    schedule = _schedule(db_session, participant)
    assert len(schedule) >= 3
    _overlap(schedule)
    if started is not None:  # one questionnaire begun, so it is preferred while it may be finished
        schedule[started].status = AssessmentStatus.IN_PROGRESS.value
    db_session.flush()
    # Every window edge, a moment either side, and the grace period after each close.
    instants = sorted(
        moment + shift
        for assessment in schedule[:4]
        for moment in (assessment.window_opens_at, assessment.window_closes_at, assessment.window_closes_at + GRACE)
        for shift in (-timedelta(seconds=1), timedelta(0), timedelta(seconds=1))
    )
    chosen = set()
    for now in instants:
        mapped = current_assessment(db_session, participant, now=now, grace=GRACE)
        values = current_open_assessment(db_session, participant, now=now, grace=GRACE)
        assert values == (None if mapped is None else _values(mapped)), now
        chosen.add(None if values is None else values.id)
    assert None in chosen and len(chosen) >= 3  # closed moments and several questionnaires were seen


@pytest.mark.parametrize("started", [None, 0, 1])
def test_the_sign_in_reads_the_same_questionnaire(app: Flask, db_session: Session, started: int | None) -> None:
    """The patient's pages take the open questionnaire from the sign-in's own statement."""
    study = make_study(db_session)
    participant = enrol(db_session, study, days_ago=50)
    link = link_for(db_session, participant, valid_days=1000)
    schedule = _schedule(db_session, participant)
    _overlap(schedule)
    if started is not None:
        schedule[started].status = AssessmentStatus.IN_PROGRESS.value
    db_session.flush()
    instants = sorted(
        moment + shift
        for assessment in schedule[:4]
        for moment in (assessment.window_opens_at, assessment.window_closes_at)
        for shift in (-timedelta(seconds=1), timedelta(0), timedelta(hours=1))
    )
    with app.test_request_context():
        session[SESSION_KEY] = {"link": link.link.id, "mode": "self"}
        grace = grace_period()
        seen = set()
        for now in instants:
            context = load_patient(now)
            assert context is not None and context.open_at_sign_in is not None
            mapped = current_assessment(db_session, participant, now=now, grace=grace)
            expected = None if mapped is None else _values(mapped)
            assert open_assessment_for(context, now) == expected, now
            seen.add(None if expected is None else expected.id)
            # At another instant the page reads the questionnaire itself, with the same result.
            later = now + timedelta(microseconds=1)
            mapped_later = current_assessment(db_session, participant, now=later, grace=grace)
            assert open_assessment_for(context, later) == (None if mapped_later is None else _values(mapped_later))
    assert None in seen and len(seen) >= 3


def test_nothing_is_open_for_a_participant_who_is_not_active(db_session: Session) -> None:
    study = make_study(db_session)
    participant = enrol(db_session, study)
    now = _schedule(db_session, participant)[0].window_opens_at + timedelta(minutes=1)
    assert current_open_assessment(db_session, participant, now=now, grace=GRACE) is not None
    participant.status = ParticipantStatus.WITHDRAWN.value
    db_session.flush()
    assert current_open_assessment(db_session, participant, now=now, grace=GRACE) is None
    assert current_assessment(db_session, participant, now=now, grace=GRACE) is None


def test_one_assessment_read_as_values(db_session: Session) -> None:
    study = make_study(db_session)
    participant = enrol(db_session, study)
    assessment = _schedule(db_session, participant)[0]
    assert open_assessment(db_session, assessment.id) == _values(assessment)
    assert open_assessment(db_session, assessment.id + 10_000) is None
