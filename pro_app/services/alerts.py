"""Alerts on submitted assessments: clinically important scores and worsening from baseline.

Threshold rules default to the instrument's published preset (for the QLQ-C30: Giesinger
et al. 2020, J Clin Epidemiol 118:1-8); a study may switch each rule off or change its value.
Worsening compares each scale with the participant's baseline (their first completed
assessment). Nurses of the participant's site are told by email that an alert needs review;
the email carries no health data, only a link.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from pro_app.db.models import (
    Alert,
    Assessment,
    OutboxMessage,
    Participant,
    ScaleScore,
    StaffUser,
    Study,
    StudyAlertRule,
    staff_sites,
)
from pro_app.db.models.base import table_of
from pro_app.db.types import utcnow
from pro_app.domain.alerts import AlertFinding, evaluate_thresholds, evaluate_worsening
from pro_app.domain.errors import N_, Conflict, ValidationError
from pro_app.domain.instruments import AlertRule, Instrument
from pro_app.domain.states import AlertState, AssessmentStatus, Role
from pro_app.services.audit import record_event

MAX_NOTE = 2000


@dataclass(frozen=True)
class RuleSetting:
    scale: str
    op: str
    threshold: float
    enabled: bool
    source: str


# The reads of a submission's alert evaluation, built once: it runs under the write lock.
_RULES = table_of(StudyAlertRule)
_SAVED_RULES = select(
    _RULES.c.scale_code, _RULES.c.op, _RULES.c.threshold, _RULES.c.enabled, _RULES.c.source
).where(_RULES.c.study_id == bindparam("study_id"))
_PARTICIPANTS, _STUDIES, _ASSESSMENTS, _SCORES = (
    table_of(Participant), table_of(Study), table_of(Assessment), table_of(ScaleScore)
)
_STUDY_OF_PARTICIPANT = (
    select(_STUDIES.c.id.label("study_id"), _STUDIES.c.worsening_alert_points, _PARTICIPANTS.c.site_id)
    .join(_STUDIES, _STUDIES.c.id == _PARTICIPANTS.c.study_id)
    .where(_PARTICIPANTS.c.id == bindparam("participant_id"))
)
# The baseline: the participant's first completed assessment planned before this one.
_BASELINE_SCORES = select(_SCORES.c.scale_code, _SCORES.c.value).where(
    _SCORES.c.assessment_id == (
        select(_ASSESSMENTS.c.id)
        .where(
            _ASSESSMENTS.c.participant_id == bindparam("participant_id"),
            _ASSESSMENTS.c.status == AssessmentStatus.COMPLETED.value,
            _ASSESSMENTS.c.id != bindparam("assessment_id"),
            _ASSESSMENTS.c.planned_at < bindparam("planned_at", type_=_ASSESSMENTS.c.planned_at.type),
        )
        .order_by(_ASSESSMENTS.c.planned_at)
        .limit(1)
        .scalar_subquery()
    )
)
_SITE_NURSE_EMAILS = (
    select(StaffUser.email)
    .join(staff_sites, staff_sites.c.staff_user_id == StaffUser.id)
    .where(
        staff_sites.c.site_id == bindparam("site_id"),
        StaffUser.role == Role.NURSE.value,
        StaffUser.is_active.is_(True),
    )
)
_ADD_ALERTS = insert(table_of(Alert))


def rule_settings(session: Session, study: Study, instrument: Instrument) -> list[RuleSetting]:
    """The study's threshold rules: its own settings where saved, else the preset's."""
    return _rule_settings(session, study.id, instrument)


def _rule_settings(session: Session, study_id: int, instrument: Instrument) -> list[RuleSetting]:
    saved = {row.scale_code: row for row in session.execute(_SAVED_RULES, {"study_id": study_id})}
    settings = []
    for preset in instrument.alert_presets[:1]:
        for rule in preset.rules:
            row = saved.get(rule.scale)
            if row is None:
                settings.append(RuleSetting(rule.scale, rule.op, rule.threshold, True, preset.source))
            else:
                settings.append(RuleSetting(row.scale_code, row.op, row.threshold, row.enabled, row.source))
    return settings


def save_rule_settings(
    session: Session,
    study: Study,
    instrument: Instrument,
    changes: Mapping[str, tuple[bool, float]],
    *,
    worsening_points: float | None,
    actor: str,
) -> None:
    """Switch rules on or off and change thresholds (0-100); audited with before and after."""
    current = {s.scale: s for s in rule_settings(session, study, instrument)}
    for scale, (_enabled, threshold) in changes.items():
        if scale not in current:
            raise ValidationError(N_("Unknown scale %(scale)s."), field="rules", scale=scale)
        if not 0 <= threshold <= 100:
            raise ValidationError(N_("Thresholds are scores from 0 to 100."), field=scale)
    if worsening_points is not None and not 0 < worsening_points <= 100:
        raise ValidationError(N_("The worsening threshold must be between 1 and 100 points."), field="worsening")
    before = {s.scale: [s.enabled, s.threshold] for s in current.values()}
    rows = {r.scale_code: r for r in session.scalars(select(StudyAlertRule).where(StudyAlertRule.study_id == study.id))}
    for scale, (enabled, threshold) in changes.items():
        row = rows.get(scale)
        if row is None:
            setting = current[scale]
            row = StudyAlertRule(study_id=study.id, scale_code=scale, op=setting.op, source=setting.source)
            session.add(row)
        row.enabled = enabled
        row.threshold = threshold
    previous_points = study.worsening_alert_points
    study.worsening_alert_points = worsening_points
    session.flush()
    after = {s.scale: [s.enabled, s.threshold] for s in rule_settings(session, study, instrument)}
    record_event(
        session, actor=actor, action="study.alert_rules", entity_type="study", entity_id=study.id,
        before={"rules": before, "worsening_points": previous_points},
        after={"rules": after, "worsening_points": worsening_points},
    )


def _baseline_scores(session: Session, assessment: Assessment) -> dict[str, float | None]:
    """The scores of the participant's baseline; empty when there is none yet."""
    return dict(session.execute(_BASELINE_SCORES, {
        "participant_id": assessment.participant_id, "assessment_id": assessment.id,
        "planned_at": assessment.planned_at,
    }).tuples().all())


@dataclass(frozen=True)
class StudyRules:
    """What the submission rules of a participant's study need: the study, its worsening
    threshold (None: off), and the participant's site (whose nurses are told)."""

    study_id: int
    worsening_alert_points: float | None
    site_id: int


def study_rules(session: Session, participant_id: int) -> StudyRules:
    return StudyRules(*session.execute(_STUDY_OF_PARTICIPANT, {"participant_id": participant_id}).one())


def submission_findings(
    session: Session,
    assessment: Assessment,
    instrument: Instrument,
    scores: Mapping[str, float | None],
    study: StudyRules,
    *,
    worsening_only: bool = False,
) -> list[AlertFinding]:
    """What the submission rules find in ``scores`` of ``assessment`` now: the study's
    threshold rules (unless ``worsening_only``) and worsening from the participant's baseline."""
    findings: list[AlertFinding] = []
    if not worsening_only:
        rules = [
            AlertRule(s.scale, s.op, s.threshold)  # type: ignore[arg-type]
            for s in _rule_settings(session, study.study_id, instrument)
            if s.enabled
        ]
        findings += evaluate_thresholds(rules, scores)
    if study.worsening_alert_points is not None:
        scale_scores = {code: value for code, value in scores.items() if code in instrument.scale_kinds}
        findings += evaluate_worsening(
            scale_scores, _baseline_scores(session, assessment), instrument.scale_kinds,
            min_change=study.worsening_alert_points,
        )
    return findings


def evaluate_submission(
    session: Session,
    assessment: Assessment,
    instrument: Instrument,
    scores: Mapping[str, float | None],
    *,
    base_url: str,
) -> list[AlertFinding]:
    """Create the alerts a submitted assessment raises and queue the nurses' notification;
    returns what raised them."""
    study = study_rules(session, assessment.participant_id)
    findings = submission_findings(session, assessment, instrument, scores, study)
    if findings:  # every row in one statement: a submission can raise a dozen
        created_at = utcnow()
        session.execute(_ADD_ALERTS, [
            {
                "assessment_id": assessment.id,
                "rule_code": finding.rule_code,
                "scale_code": finding.scale,
                "value": finding.value,
                "threshold": finding.threshold if finding.kind == "threshold" else finding.baseline,
                "state": AlertState.OPEN.value,
                "created_at": created_at,
            }
            for finding in findings
        ])
        record_event(
            session, actor="system", action="alert.raise", entity_type="assessment", entity_id=assessment.id,
            after={"alerts": [finding.rule_code for finding in findings]},
        )
        notify_site_nurses(session, assessment, site_id=study.site_id, base_url=base_url)
    return findings


def notify_site_nurses(session: Session, assessment: Assessment, *, site_id: int, base_url: str) -> None:
    """Queue an email to each active nurse of the site that an alert of this participant needs review."""
    emails = session.scalars(_SITE_NURSE_EMAILS, {"site_id": site_id}).all()
    link = f"{base_url.rstrip('/')}/staff/participants/{assessment.participant_id}"
    for email in emails:
        session.add(
            OutboxMessage(
                recipient=email,
                subject="pro-app: an alert needs review",
                body=(
                    "A questionnaire result needs review by the study team.\n\n"
                    f"Open it here (sign-in required): {link}\n\n"
                    "This message contains no health information."
                ),
            )
        )
    session.flush()


def acknowledge_alerts(
    session: Session, assessment: Assessment, *, user: StaffUser, note: str, now: datetime | None = None
) -> int:
    """Acknowledge every open alert of one assessment with one note (one review, one note).

    Returns how many alerts were acknowledged; each is audited.
    """
    note = note.strip()
    if not note:
        raise ValidationError(N_("Please write a short note on what was done."), field="note")
    if len(note) > MAX_NOTE:
        raise ValidationError(N_("The note is too long (at most %(max)s characters)."), field="note", max=MAX_NOTE)
    alerts = session.scalars(
        select(Alert)
        .where(Alert.assessment_id == assessment.id, Alert.state == AlertState.OPEN.value)
        .with_for_update()
    ).all()
    if not alerts:
        raise Conflict(N_("These alerts have already been acknowledged."))
    now = now or utcnow()
    for alert in alerts:
        alert.state = AlertState.ACKNOWLEDGED.value
        alert.acknowledged_by_id = user.id
        alert.acknowledged_at = now
        alert.note = note
        session.flush()
        record_event(
            session, actor=f"staff:{user.id}", action="alert.acknowledge", entity_type="alert", entity_id=alert.id,
            before={"state": AlertState.OPEN.value}, after={"state": alert.state, "note": note},
        )
    return len(alerts)


