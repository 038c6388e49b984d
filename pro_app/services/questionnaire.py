"""Answering a questionnaire: finding the open assessment, saving answers, submitting.

The rules that protect the patient's answers live here, shared by the phone, the tablet and
the interview mode:

- an answer is saved the moment it is given; saving the same value again changes nothing,
  so retries are harmless;
- answers are accepted only while the assessment is open (or, once started, until the
  grace period after its window closes), never after it is submitted;
- a submission is idempotent: the same submission key always returns the same result, a
  different one after submission is a conflict.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from pro_app.db.models import Answer, Assessment, Participant
from pro_app.db.types import utcnow
from pro_app.domain.errors import N_, Conflict, ValidationError
from pro_app.domain.instruments import Instrument, InstrumentText
from pro_app.domain.states import AssessmentMode, AssessmentStatus, ParticipantStatus
from pro_app.services.alerts import evaluate_submission
from pro_app.services.audit import record_event
from pro_app.services.scores import store_scores

ANSWERABLE = (AssessmentStatus.SCHEDULED.value, AssessmentStatus.OPEN.value, AssessmentStatus.IN_PROGRESS.value)


def accepts_answers(assessment: Assessment, now: datetime, grace: timedelta) -> bool:
    """Open while its window is; a started assessment may be finished within the grace period."""
    if assessment.status not in ANSWERABLE or now < assessment.window_opens_at:
        return False
    closes = assessment.window_closes_at
    if assessment.status == AssessmentStatus.IN_PROGRESS.value:
        closes = closes + grace
    return now < closes


def current_assessment(
    session: Session, participant: Participant, *, now: datetime, grace: timedelta
) -> Assessment | None:
    """The assessment the participant should answer now: one already started first, then the
    earliest open window. The window times decide, not a possibly stale status."""
    if participant.status != ParticipantStatus.ACTIVE.value:
        return None
    candidates = session.scalars(
        select(Assessment)
        .where(
            Assessment.participant_id == participant.id,
            Assessment.status.in_(ANSWERABLE),
            Assessment.window_opens_at <= now,
            Assessment.window_closes_at > now - grace,
        )
        .order_by(Assessment.window_opens_at, Assessment.id)
    ).all()
    usable = [a for a in candidates if accepts_answers(a, now, grace)]
    started = [a for a in usable if a.status == AssessmentStatus.IN_PROGRESS.value]
    preferred = started or usable
    return preferred[0] if preferred else None


def next_assessment(session: Session, participant: Participant, *, now: datetime) -> Assessment | None:
    """The next assessment whose window has not opened yet."""
    if participant.status != ParticipantStatus.ACTIVE.value:
        return None
    return session.scalars(
        select(Assessment)
        .where(
            Assessment.participant_id == participant.id,
            Assessment.status.in_(ANSWERABLE),
            Assessment.window_opens_at > now,
        )
        .order_by(Assessment.window_opens_at)
        .limit(1)
    ).first()


def lock_assessment(session: Session, assessment_id: int) -> Assessment:
    """Reload the assessment holding a row lock (PostgreSQL) so concurrent saves and
    submissions of the same assessment run one after another."""
    return session.scalars(
        select(Assessment).where(Assessment.id == assessment_id).with_for_update().execution_options(
            populate_existing=True
        )
    ).one()


def start_assessment(
    session: Session,
    assessment: Assessment,
    *,
    mode: AssessmentMode,
    text: InstrumentText,
    actor: str,
    now: datetime | None = None,
) -> Assessment:
    """Mark the assessment in progress and record how and in which wording it is given."""
    now = now or utcnow()
    if assessment.status == AssessmentStatus.IN_PROGRESS.value:
        return assessment
    assessment.status = AssessmentStatus.IN_PROGRESS.value
    assessment.started_at = now
    assessment.mode = mode.value
    record_text_shown(assessment, text)
    session.flush()
    record_event(
        session,
        actor=actor,
        action="assessment.start",
        entity_type="assessment",
        entity_id=assessment.id,
        after={"mode": mode.value, "locale": text.locale, "text_source": text.source, "text_checksum": text.checksum},
    )
    return assessment


def hand_over(
    session: Session,
    assessment: Assessment,
    *,
    mode: AssessmentMode,
    text: InstrumentText,
    actor: str,
    now: datetime | None = None,
) -> Assessment:
    """A nurse gives the questionnaire to the patient on a clinic tablet, or reads it out
    (interview). The mode is recorded on the assessment and in the audit trail."""
    if assessment.status != AssessmentStatus.IN_PROGRESS.value:
        return start_assessment(session, assessment, mode=mode, text=text, actor=actor, now=now)
    before = assessment.mode
    if before != mode.value:
        assessment.mode = mode.value
        session.flush()
        record_event(
            session, actor=actor, action="assessment.mode", entity_type="assessment", entity_id=assessment.id,
            before={"mode": before}, after={"mode": mode.value},
        )
    return assessment


def record_text_shown(assessment: Assessment, text: InstrumentText) -> None:
    """Keep the locale and the checksum of the wording the patient is looking at."""
    assessment.locale = text.locale
    assessment.text_source = text.source
    assessment.text_checksum = text.checksum


@dataclass(frozen=True)
class SavedAnswer:
    item_id: str
    value: int
    changed: bool


def validate_answer(instrument: Instrument, item_id: str, value: object) -> int:
    """The answer as an integer in the item's response set, or a ValidationError."""
    try:
        item = instrument.item(item_id)
    except KeyError:
        raise ValidationError(N_("This question does not exist."), field="item") from None
    allowed = instrument.response_set(item.response_set).values
    if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
        raise ValidationError(N_("Please choose one of the answers shown."), field="value")
    return value


def record_answer(
    session: Session,
    assessment: Assessment,
    instrument: Instrument,
    *,
    item_id: str,
    value: object,
    locale: str,
    actor: str,
    grace: timedelta,
    now: datetime | None = None,
) -> SavedAnswer:
    """Save (or change) one answer. Saving the value already stored is a no-op."""
    now = now or utcnow()
    checked = validate_answer(instrument, item_id, value)
    assessment = lock_assessment(session, assessment.id)
    if assessment.status == AssessmentStatus.COMPLETED.value:
        raise Conflict(N_("This questionnaire has already been submitted; answers can no longer be changed."))
    if not accepts_answers(assessment, now, grace):
        raise Conflict(N_("This questionnaire is closed; answers can no longer be saved."))
    answer = session.scalars(
        select(Answer).where(Answer.assessment_id == assessment.id, Answer.item_id == item_id)
    ).one_or_none()
    if answer is not None and answer.value == checked:
        return SavedAnswer(item_id, checked, changed=False)
    before = None if answer is None else {"value": answer.value}
    if answer is None:
        answer = Answer(assessment_id=assessment.id, item_id=item_id, value=checked)
        session.add(answer)
    answer.value = checked
    answer.locale = locale
    answer.answered_at = now
    answer.answered_by = actor
    if assessment.status != AssessmentStatus.IN_PROGRESS.value:
        assessment.status = AssessmentStatus.IN_PROGRESS.value
        assessment.started_at = assessment.started_at or now
    session.flush()
    record_event(
        session,
        actor=actor,
        action="answer.save",
        entity_type="assessment",
        entity_id=assessment.id,
        before=before,
        after={"item": item_id, "value": checked, "locale": locale, "mode": assessment.mode},
    )
    return SavedAnswer(item_id, checked, changed=True)


def answers_of(session: Session, assessment: Assessment) -> dict[str, int]:
    return dict(
        session.execute(
            select(Answer.item_id, Answer.value).where(Answer.assessment_id == assessment.id)
        ).tuples().all()
    )


@dataclass(frozen=True)
class Submission:
    assessment: Assessment
    replayed: bool
    scores: dict[str, float | None]


def submit_assessment(
    session: Session,
    assessment: Assessment,
    instrument: Instrument,
    *,
    submission_key: str,
    actor: str,
    grace: timedelta,
    base_url: str = "",
    now: datetime | None = None,
) -> Submission:
    """Submit, score and lock the assessment. The same key submitted again returns the same
    result without changing anything; missing items are allowed (the scoring rules handle them)."""
    now = now or utcnow()
    if not submission_key or len(submission_key) > 64:
        raise ValidationError(N_("The submission could not be verified. Please reload the page."), field="key")
    assessment = lock_assessment(session, assessment.id)
    if assessment.status == AssessmentStatus.COMPLETED.value:
        if assessment.submission_key == submission_key:
            return Submission(assessment, replayed=True, scores={})
        raise Conflict(N_("This questionnaire has already been submitted."))
    if not accepts_answers(assessment, now, grace):
        raise Conflict(N_("This questionnaire is closed and can no longer be submitted."))
    answered = len(answers_of(session, assessment))
    assessment.status = AssessmentStatus.COMPLETED.value
    assessment.submitted_at = now
    assessment.submission_key = submission_key
    assessment.started_at = assessment.started_at or now
    session.flush()
    scores = store_scores(session, assessment, instrument)
    evaluate_submission(session, assessment, instrument, scores, base_url=base_url)
    record_event(
        session,
        actor=actor,
        action="assessment.submit",
        entity_type="assessment",
        entity_id=assessment.id,
        after={
            "items_answered": answered,
            "items_total": len(instrument.items),
            "mode": assessment.mode,
            "locale": assessment.locale,
        },
    )
    return Submission(assessment, replayed=False, scores=scores)
