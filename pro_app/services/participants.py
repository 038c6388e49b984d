"""Enrolling participants and creating their planned assessments."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pro_app.db.models import AnchorEvent, Arm, Assessment, Participant, Reminder, Site, Study
from pro_app.db.types import utcnow
from pro_app.domain.errors import N_, Conflict, ValidationError
from pro_app.domain.schedule import plan_assessments, status_at
from pro_app.domain.states import AssessmentStatus, ParticipantStatus, ReminderStatus
from pro_app.services.access import revoke_links
from pro_app.services.audit import record_event
from pro_app.services.schedules import rules_of, study_template

SUBJECT_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{1,38}[A-Za-z0-9]$")


def validate_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(N_("Unknown time zone %(zone)s."), field="timezone", zone=name) from None
    return name


def enrol_participant(
    session: Session,
    *,
    study: Study,
    site: Site,
    arm: Arm | None,
    subject_code: str,
    locale: str,
    timezone: str | None = None,
    email: str | None = None,
    phone: str | None = None,
    anchors: Mapping[str, datetime] | None = None,
    actor: str,
    now: datetime | None = None,
) -> Participant:
    """Enrol a participant and plan their assessments from the study's schedule template."""
    now = now or utcnow()
    subject_code = subject_code.strip().upper()
    if not SUBJECT_CODE.match(subject_code):
        raise ValidationError(
            N_("The subject code must be 3 to 40 letters, digits or dashes."), field="subject_code"
        )
    if site.study_id != study.id or (arm is not None and arm.study_id != study.id):
        raise ValidationError(N_("The site or arm does not belong to this study."), field="site")
    exists = session.scalar(
        select(func.count()).select_from(Participant).where(
            Participant.study_id == study.id, Participant.subject_code == subject_code
        )
    )
    if exists:
        raise Conflict(
            N_("Subject code %(code)s is already enrolled in this study."), field="subject_code", code=subject_code
        )
    participant = Participant(
        study=study, site=site, arm=arm, subject_code=subject_code, locale=locale,
        timezone=validate_timezone(timezone or site.timezone), email=email or None, phone=phone or None,
        enrolled_at=now,
    )
    session.add(participant)
    all_anchors = {"enrolment": now, **(anchors or {})}
    for kind, at in all_anchors.items():
        participant.anchors.append(AnchorEvent(kind=kind, occurred_at=at))
    session.flush()
    created = plan_participant_assessments(session, participant, now=now)
    record_event(
        session, actor=actor, action="participant.enrol", entity_type="participant", entity_id=participant.id,
        after={
            "study": study.code, "site": site.code, "arm": arm.code if arm else None, "subject_code": subject_code,
            "locale": locale, "timezone": participant.timezone,
            "anchors": {k: v.isoformat() for k, v in all_anchors.items()}, "assessments": created,
            # Whether reminders can reach the participant; the address and number themselves stay
            # out of the append-only trail (they must remain erasable).
            "contact": {"email": participant.email is not None, "phone": participant.phone is not None},
        },
    )
    return participant


def plan_participant_assessments(session: Session, participant: Participant, *, now: datetime) -> int:
    """Create the assessments the template asks for that do not exist yet; return how many."""
    template = study_template(session, participant.study)
    if template is None:
        return 0
    anchors = {a.kind: a.occurred_at for a in participant.anchors}
    existing = set(
        session.execute(
            select(Assessment.timepoint_code, Assessment.occurrence).where(Assessment.participant_id == participant.id)
        ).tuples().all()
    )
    by_code = {tp.code: tp for tp in template.timepoints}
    created = 0
    for plan in plan_assessments(rules_of(template), anchors, participant.timezone):
        if (plan.code, plan.occurrence) in existing:
            continue
        session.add(
            Assessment(
                participant=participant,
                timepoint=by_code[plan.code],
                timepoint_code=plan.code,
                timepoint_label=plan.label,
                occurrence=plan.occurrence,
                instrument_code=plan.instrument_code,
                instrument_version=participant.study.instrument_version,
                planned_at=plan.planned_at,
                window_opens_at=plan.window_opens_at,
                window_closes_at=plan.window_closes_at,
                status=status_at(plan.window_opens_at, plan.window_closes_at, now),
            )
        )
        created += 1
    session.flush()
    return created


def withdraw_participant(
    session: Session, participant: Participant, *, reason: str, actor: str, now: datetime | None = None
) -> int:
    """Withdraw: no further assessments or reminders, links revoked, every answer kept.

    Returns how many assessments were cancelled (completed ones are never touched).
    """
    now = now or utcnow()
    reason = reason.strip()
    if not reason:
        raise ValidationError(N_("Please give a reason."), field="reason")
    if participant.status == ParticipantStatus.WITHDRAWN.value:
        raise Conflict(N_("This participant has already been withdrawn."))
    cancellable = (AssessmentStatus.SCHEDULED.value, AssessmentStatus.OPEN.value, AssessmentStatus.IN_PROGRESS.value)
    cancelled = session.scalars(
        select(Assessment).where(Assessment.participant_id == participant.id, Assessment.status.in_(cancellable))
    ).all()
    for assessment in cancelled:
        assessment.status = AssessmentStatus.CANCELLED.value
    for reminder in session.scalars(
        select(Reminder).where(
            Reminder.assessment_id.in_([a.id for a in cancelled]), Reminder.status == ReminderStatus.PENDING.value
        )
    ):
        reminder.status = ReminderStatus.CANCELLED.value
    participant.status = ParticipantStatus.WITHDRAWN.value
    participant.withdrawn_at = now
    revoke_links(session, participant, actor=actor, now=now)
    session.flush()
    record_event(
        session, actor=actor, action="participant.withdraw", entity_type="participant", entity_id=participant.id,
        before={"status": ParticipantStatus.ACTIVE.value},
        after={"status": participant.status, "cancelled_assessments": [a.id for a in cancelled]}, reason=reason,
    )
    return len(cancelled)


@dataclass(frozen=True)
class MovedAssessment:
    assessment_id: int
    code: str
    label: str
    before: tuple[datetime, datetime]
    after: tuple[datetime, datetime]


def reanchor_participant(
    session: Session,
    participant: Participant,
    *,
    kind: str,
    occurred_at: datetime,
    reason: str,
    actor: str,
    now: datetime | None = None,
) -> list[MovedAssessment]:
    """Change a protocol date (e.g. the infusion was postponed) and re-plan what follows.

    Only assessments nobody has started are moved (scheduled or open ones). Completed,
    in-progress, missed and cancelled assessments are never moved or deleted. The change
    and every moved assessment are audited with the nurse's reason; pending reminders of
    moved assessments are cancelled (the next tick plans new ones).
    """
    now = now or utcnow()
    reason = reason.strip()
    if not reason:
        raise ValidationError(N_("Please give a reason."), field="reason")
    if participant.status != ParticipantStatus.ACTIVE.value:
        raise Conflict(N_("Protocol dates of a withdrawn participant cannot be changed."))
    anchor = next((a for a in participant.anchors if a.kind == kind), None)
    previous = anchor.occurred_at if anchor else None
    if anchor is None:
        anchor = AnchorEvent(kind=kind, occurred_at=occurred_at)
        participant.anchors.append(anchor)
    anchor.occurred_at = occurred_at
    session.flush()
    template = study_template(session, participant.study)
    plans = {}
    if template is not None:
        anchors = {a.kind: a.occurred_at for a in participant.anchors}
        plans = {(p.code, p.occurrence): p for p in plan_assessments(rules_of(template), anchors, participant.timezone)}
    movable = (AssessmentStatus.SCHEDULED.value, AssessmentStatus.OPEN.value)
    moved: list[MovedAssessment] = []
    for assessment in session.scalars(select(Assessment).where(Assessment.participant_id == participant.id)):
        plan = plans.get((assessment.timepoint_code, assessment.occurrence))
        if plan is None or assessment.status not in movable or assessment.started_at is not None:
            continue
        if (plan.window_opens_at, plan.window_closes_at, plan.planned_at) == (
            assessment.window_opens_at, assessment.window_closes_at, assessment.planned_at,
        ):
            continue
        before = (assessment.window_opens_at, assessment.window_closes_at)
        assessment.planned_at = plan.planned_at
        assessment.window_opens_at = plan.window_opens_at
        assessment.window_closes_at = plan.window_closes_at
        assessment.status = status_at(plan.window_opens_at, plan.window_closes_at, now)
        moved.append(MovedAssessment(assessment.id, assessment.timepoint_code, assessment.timepoint_label, before,
                                     (plan.window_opens_at, plan.window_closes_at)))
    for reminder in session.scalars(
        select(Reminder).where(
            Reminder.assessment_id.in_([m.assessment_id for m in moved]),
            Reminder.status == ReminderStatus.PENDING.value,
        )
    ):
        reminder.status = ReminderStatus.CANCELLED.value
    session.flush()
    created = plan_participant_assessments(session, participant, now=now)
    record_event(
        session, actor=actor, action="participant.reanchor", entity_type="participant", entity_id=participant.id,
        before={"anchor": kind, "at": previous.isoformat() if previous else None},
        after={
            "anchor": kind, "at": occurred_at.isoformat(), "created": created,
            "moved": [
                {"assessment": m.assessment_id, "code": m.code, "label": m.label,
                 "from": [m.before[0].isoformat(), m.before[1].isoformat()],
                 "to": [m.after[0].isoformat(), m.after[1].isoformat()]}
                for m in moved
            ],
        },
        reason=reason,
    )
    return moved
