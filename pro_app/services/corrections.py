"""Staff corrections of answers after submission.

A submitted questionnaire is locked for the patient. When the study team learns that an
answer was recorded wrongly (the patient says they tapped the wrong box, an interview answer
was mis-keyed), a nurse or an administrator corrects it here; analysts only read. The rules:

- only a submitted (completed) questionnaire is corrected: while it is still open the patient
  may be answering it, and their own answer must win;
- a reason is required; the value before and after, who corrected it and why go into the
  audit trail, and the answer itself records that staff gave it (``answered_by``);
- "not answered" is a valid correction (the item is then missing, as if skipped);
- the assessment is re-scored with the same scoring code as at submission, and the changed
  scores are audited;
- alerts are re-evaluated with the same rules as at submission, because a nurse relies on
  them: a finding that is met after the correction raises an alert and notifies the site's
  nurses, exactly as a submission would. A correction never deletes, closes or acknowledges
  an alert: an open alert whose condition is no longer met stays open (marked so in the audit
  trail) until a nurse has looked at it and acknowledged it with a note, since it may already
  have prompted a call. When the corrected questionnaire is the participant's baseline, later
  questionnaires are re-checked for worsening from that baseline too;
- everything happens in the caller's one transaction: all of it is stored, or nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from pro_app.db.models import Alert, Answer, Assessment, ScaleScore, StaffUser
from pro_app.db.types import utcnow
from pro_app.domain.alerts import AlertFinding
from pro_app.domain.errors import N_, Conflict, NotFound, ValidationError
from pro_app.domain.instruments import Instrument
from pro_app.domain.states import AlertState, AssessmentStatus, Role
from pro_app.services.alerts import notify_site_nurses, study_rules, submission_findings
from pro_app.services.audit import record_event
from pro_app.services.questionnaire import ANSWERABLE, lock_assessment, validate_answer
from pro_app.services.scores import instrument_of, store_scores
from pro_app.services.staff import can_see_site

#: Who may correct answers: the clinical team. Analysts read, they never change data.
CORRECTING_ROLES = frozenset({Role.ADMIN.value, Role.NURSE.value})
MAX_REASON = 1000


@dataclass(frozen=True)
class RaisedAlert:
    assessment_id: int
    rule_code: str


@dataclass(frozen=True)
class AnswerCorrection:
    """What one correction changed."""

    assessment_id: int
    item_id: str
    before: int | None
    after: int | None
    #: Score code -> (before, after), for the scores whose value changed.
    changed_scores: Mapping[str, tuple[float | None, float | None]]
    #: Alerts raised because of the correction (on this or, for a baseline, later questionnaires).
    raised: tuple[RaisedAlert, ...]
    #: Open alerts whose condition is no longer met; they stay open for a nurse to review.
    no_longer_met: tuple[int, ...]


def may_correct(user: StaffUser, assessment: Assessment) -> bool:
    return user.role in CORRECTING_ROLES and can_see_site(user, assessment.participant.site_id)


def check_correctable(assessment: Assessment) -> None:
    """Refuse questionnaires that are not submitted (with the reason a nurse needs)."""
    if assessment.status == AssessmentStatus.COMPLETED.value:
        return
    if assessment.status in ANSWERABLE:
        raise Conflict(N_(
            "This questionnaire has not been submitted: the patient may still be answering it. "
            "Answers can be corrected once it has been submitted."
        ))
    raise Conflict(N_("Only submitted questionnaires can be corrected."))


def check_reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise ValidationError(N_("Please give the reason for the correction."), field="reason")
    if len(reason) > MAX_REASON:
        raise ValidationError(
            N_("The reason is too long (at most %(max)s characters)."), field="reason", max=MAX_REASON
        )
    return reason


def correct_answer(
    session: Session,
    assessment: Assessment,
    *,
    item_id: str,
    value: int | None,
    reason: str,
    user: StaffUser,
    base_url: str = "",
    now: datetime | None = None,
) -> AnswerCorrection:
    """Change (or clear, ``value=None``) one answer of a submitted assessment, re-score it and
    re-evaluate its alerts; everything audited with the reason. Nothing changes on error."""
    now = now or utcnow()
    if not may_correct(user, assessment):
        raise NotFound(N_("This questionnaire was not found."))
    assessment = lock_assessment(session, assessment.id)
    check_correctable(assessment)
    instrument = instrument_of(assessment)
    validate_answer_item(instrument, item_id)
    checked = None if value is None else validate_answer(instrument, item_id, value)
    reason = check_reason(reason)
    answer = session.scalars(
        select(Answer).where(Answer.assessment_id == assessment.id, Answer.item_id == item_id)
    ).one_or_none()
    previous = None if answer is None else answer.value
    if previous == checked:
        raise ValidationError(N_("This is already the stored answer; nothing was changed."), field="value")
    actor = f"staff:{user.id}"
    before = {"item": item_id, "value": previous, "answered_by": None if answer is None else answer.answered_by}
    if checked is None:
        session.delete(answer)
    elif answer is None:
        session.add(Answer(assessment_id=assessment.id, item_id=item_id, value=checked, locale=assessment.locale,
                           answered_at=now, answered_by=actor))
    else:
        answer.value, answer.answered_at, answer.answered_by = checked, now, actor
    session.flush()
    record_event(
        session, actor=actor, action="answer.correct", entity_type="assessment", entity_id=assessment.id,
        before=before, after={"item": item_id, "value": checked, "answered_by": actor}, reason=reason,
    )
    old_scores = _stored_scores(session, assessment.id)
    new_scores = store_scores(session, assessment, instrument, actor=actor, reason=reason)
    changed = {
        code: (old_scores.get(code), new)
        for code, new in new_scores.items()
        if old_scores.get(code) != new
    }
    raised, stale = _recheck_alerts(session, assessment, instrument, new_scores, actor=actor, reason=reason,
                                    base_url=base_url)
    return AnswerCorrection(
        assessment_id=assessment.id, item_id=item_id, before=previous, after=checked, changed_scores=changed,
        raised=tuple(raised), no_longer_met=tuple(stale),
    )


def validate_answer_item(instrument: Instrument, item_id: str) -> None:
    try:
        instrument.item(item_id)
    except KeyError:
        raise ValidationError(N_("This question does not exist."), field="item") from None


def _stored_scores(session: Session, assessment_id: int) -> dict[str, float | None]:
    return dict(
        session.execute(
            select(ScaleScore.scale_code, ScaleScore.value).where(ScaleScore.assessment_id == assessment_id)
        ).tuples().all()
    )


def _recheck_alerts(
    session: Session,
    assessment: Assessment,
    instrument: Instrument,
    scores: Mapping[str, float | None],
    *,
    actor: str,
    reason: str,
    base_url: str,
) -> tuple[list[RaisedAlert], list[int]]:
    """Apply the submission rules (services.alerts.evaluate_submission) to the corrected scores
    now; a corrected baseline also re-checks worsening in the participant's later questionnaires."""
    study = study_rules(session, assessment.participant_id)
    findings = submission_findings(session, assessment, instrument, scores, study)
    raised, stale = _apply_findings(session, assessment, findings, scores, actor=actor, reason=reason)
    if study.worsening_alert_points is not None and _is_baseline(session, assessment):
        for later in _later_completed(session, assessment):
            later_scores = _stored_scores(session, later.id)
            later_findings = submission_findings(
                session, later, instrument_of(later), later_scores, study, worsening_only=True
            )
            more_raised, more_stale = _apply_findings(
                session, later, later_findings, later_scores, actor=actor, reason=reason, worsening_only=True,
            )
            raised += more_raised
            stale += more_stale
    if raised:
        notify_site_nurses(session, assessment, site_id=study.site_id, base_url=base_url)
    return raised, stale


def _apply_findings(
    session: Session,
    assessment: Assessment,
    findings: Sequence[AlertFinding],
    scores: Mapping[str, float | None],
    *,
    actor: str,
    reason: str,
    worsening_only: bool = False,
) -> tuple[list[RaisedAlert], list[int]]:
    """Raise the alerts newly met; mark (never close) open alerts no longer met; keep the
    value of open alerts current. Acknowledged alerts record what was reviewed: untouched."""
    existing = {
        (alert.rule_code, alert.scale_code): alert
        for alert in session.scalars(select(Alert).where(Alert.assessment_id == assessment.id))
        if not worsening_only or ":worsening:" in alert.rule_code
    }
    met = {(f.rule_code, f.scale): f for f in findings}
    new_alerts = [
        Alert(
            assessment_id=assessment.id, rule_code=f.rule_code, scale_code=f.scale, value=f.value,
            threshold=f.threshold if f.kind == "threshold" else f.baseline,
        )
        for key, f in met.items()
        if key not in existing
    ]
    session.add_all(new_alerts)
    session.flush()
    if new_alerts:
        record_event(
            session, actor=actor, action="alert.raise", entity_type="assessment", entity_id=assessment.id,
            after={"alerts": [a.rule_code for a in new_alerts], "after_correction": True}, reason=reason,
        )
    stale: list[int] = []
    for key, alert in existing.items():
        if alert.state != AlertState.OPEN.value:
            continue
        finding = met.get(key)
        previous = alert.value
        if finding is None:
            value = scores.get(alert.scale_code)
            stale.append(alert.id)
        else:
            value = finding.value
            threshold = finding.threshold if finding.kind == "threshold" else finding.baseline
            if (value, threshold) == (alert.value, alert.threshold):
                continue
            alert.value, alert.threshold = value, threshold
            session.flush()
        record_event(
            session, actor=actor, action="alert.recheck", entity_type="alert", entity_id=alert.id,
            before={"value": previous}, after={"value": value, "met": finding is not None, "state": alert.state},
            reason=reason,
        )
    return [RaisedAlert(assessment.id, a.rule_code) for a in new_alerts], stale


def _is_baseline(session: Session, assessment: Assessment) -> bool:
    """The participant's first completed questionnaire is the baseline of all later ones."""
    earlier = session.scalars(
        select(Assessment.id).where(
            Assessment.participant_id == assessment.participant_id,
            Assessment.status == AssessmentStatus.COMPLETED.value,
            Assessment.id != assessment.id,
            Assessment.planned_at < assessment.planned_at,
        ).limit(1)
    ).first()
    return earlier is None


def _later_completed(session: Session, assessment: Assessment) -> list[Assessment]:
    return list(
        session.scalars(
            select(Assessment)
            .where(
                Assessment.participant_id == assessment.participant_id,
                Assessment.status == AssessmentStatus.COMPLETED.value,
                Assessment.id != assessment.id,
                Assessment.planned_at > assessment.planned_at,
            )
            .order_by(Assessment.planned_at)
        )
    )
