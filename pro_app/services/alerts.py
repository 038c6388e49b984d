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

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from pro_app.db.models import (
    Alert,
    Assessment,
    OutboxMessage,
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


def rule_settings(session: Session, study: Study, instrument: Instrument) -> list[RuleSetting]:
    """The study's threshold rules: its own settings where saved, else the preset's."""
    saved = {
        row.scale_code: row
        for row in session.scalars(select(StudyAlertRule).where(StudyAlertRule.study_id == study.id))
    }
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
    baseline = session.scalars(
        select(Assessment)
        .where(
            Assessment.participant_id == assessment.participant_id,
            Assessment.status == AssessmentStatus.COMPLETED.value,
            Assessment.id != assessment.id,
            Assessment.planned_at < assessment.planned_at,
        )
        .order_by(Assessment.planned_at)
        .limit(1)
    ).first()
    if baseline is None:
        return {}
    return dict(
        session.execute(
            select(ScaleScore.scale_code, ScaleScore.value).where(ScaleScore.assessment_id == baseline.id)
        ).tuples().all()
    )


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
    study = assessment.participant.study
    rules = [
        AlertRule(s.scale, s.op, s.threshold)  # type: ignore[arg-type]
        for s in rule_settings(session, study, instrument)
        if s.enabled
    ]
    findings: list[AlertFinding] = evaluate_thresholds(rules, scores)
    if study.worsening_alert_points is not None:
        scale_scores = {code: value for code, value in scores.items() if code in instrument.scale_kinds}
        findings += evaluate_worsening(
            scale_scores, _baseline_scores(session, assessment), instrument.scale_kinds,
            min_change=study.worsening_alert_points,
        )
    if findings:  # every row in one statement: a submission can raise a dozen
        session.execute(insert(table_of(Alert)), [
            {
                "assessment_id": assessment.id,
                "rule_code": finding.rule_code,
                "scale_code": finding.scale,
                "value": finding.value,
                "threshold": finding.threshold if finding.kind == "threshold" else finding.baseline,
                "state": AlertState.OPEN.value,
                "created_at": utcnow(),
            }
            for finding in findings
        ])
        record_event(
            session, actor="system", action="alert.raise", entity_type="assessment", entity_id=assessment.id,
            after={"alerts": [finding.rule_code for finding in findings]},
        )
        _notify_site_nurses(session, assessment, base_url=base_url)
    return findings


def _notify_site_nurses(session: Session, assessment: Assessment, *, base_url: str) -> None:
    nurses = session.scalars(
        select(StaffUser)
        .join(staff_sites, staff_sites.c.staff_user_id == StaffUser.id)
        .where(
            staff_sites.c.site_id == assessment.participant.site_id,
            StaffUser.role == Role.NURSE.value,
            StaffUser.is_active.is_(True),
        )
    ).all()
    link = f"{base_url.rstrip('/')}/staff/participants/{assessment.participant_id}"
    for nurse in nurses:
        session.add(
            OutboxMessage(
                recipient=nurse.email,
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


