"""The demonstration study that ``make run`` shows on a fresh checkout.

Everything here is fictional: two sites, three dose groups, a quality-of-life schedule, a
few participants whose assessments are in different states, and one staff user per role.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from pro_app.db.models import Arm, Assessment, Participant, Site, StaffUser, Study
from pro_app.db.types import utcnow
from pro_app.domain.instruments import default_registry
from pro_app.domain.states import AssessmentMode
from pro_app.services.access import issue_link
from pro_app.services.audit import record_event
from pro_app.services.participants import enrol_participant
from pro_app.services.questionnaire import record_answer, start_assessment, submit_assessment
from pro_app.services.schedules import load_builtin_template
from pro_app.services.staff import create_staff_user

DEMO_STUDY = "DEMO-CART"
DEMO_PATIENT = "DEMO-001"
#: Demonstration accounts exist only where an operator ran ``seed-demo``; never in production.
DEMO_USERS = (
    ("admin", "admin@demo.invalid", "demo-admin-passphrase"),
    ("nurse", "nurse@demo.invalid", "demo-nurse-passphrase"),
    ("analyst", "analyst@demo.invalid", "demo-analyst-passphrase"),
)
# (subject code, site index, arm index, days since enrolment)
DEMO_PARTICIPANTS = (
    (DEMO_PATIENT, 0, 0, 0),
    ("DEMO-002", 0, 1, 45),
    ("DEMO-003", 1, 2, 90),
    ("DEMO-004", 1, 0, 3),
)


@dataclass
class DemoInfo:
    created: bool
    logins: list[tuple[str, str, str]] = field(default_factory=list)
    patient_token: str = ""
    patient_code: str = ""


def seed_demo(session: Session, *, actor: str = "cli", link_days: int = 400, now: datetime | None = None) -> DemoInfo:
    """Create the demo study once; on later calls only issue a fresh link for the demo patient."""
    now = now or utcnow()
    study = session.scalars(select(Study).where(Study.code == DEMO_STUDY)).one_or_none()
    created = study is None
    if study is None:
        study = _create_demo_study(session, actor=actor, now=now)
    patient = session.scalars(
        select(Participant).where(Participant.study_id == study.id, Participant.subject_code == DEMO_PATIENT)
    ).one()
    issued = issue_link(session, patient, actor=actor, valid_days=link_days, now=now)
    return DemoInfo(created=created, logins=list(DEMO_USERS), patient_token=issued.token, patient_code=issued.code)


def _create_demo_study(session: Session, *, actor: str, now: datetime) -> Study:
    study = Study(code=DEMO_STUDY, name="Demonstration CAR-T study (fictional)", timezone="Europe/Berlin")
    study.sites = [
        Site(code="RIV", name="Riverside University Hospital (demo)", timezone="Europe/Berlin"),
        Site(code="NGC", name="Northgate Cancer Centre (demo)", timezone="Asia/Shanghai"),
    ]
    study.arms = [
        Arm(code="low", name="Low dose"),
        Arm(code="medium", name="Medium dose"),
        Arm(code="high", name="High dose"),
    ]
    session.add(study)
    session.flush()
    record_event(
        session, actor=actor, action="study.create", entity_type="study", entity_id=study.id,
        after={"code": study.code, "sites": [s.code for s in study.sites], "arms": [a.code for a in study.arms]},
    )
    load_builtin_template(session, study, "qol_6_weekly", actor=actor)
    for role, email, password in DEMO_USERS:
        existing = session.scalars(select(StaffUser).where(StaffUser.email == email)).one_or_none()
        if existing is None:
            sites = [] if role == "admin" else [s.id for s in study.sites]
            create_staff_user(session, email=email, password=password, role=role, site_ids=sites, actor=actor)
    for code, site_index, arm_index, days_ago in DEMO_PARTICIPANTS:
        enrolled = now - timedelta(days=days_ago)
        participant = enrol_participant(
            session, study=study, site=study.sites[site_index], arm=study.arms[arm_index], subject_code=code,
            locale="en", anchors={"enrolment": enrolled}, actor=actor, now=now,
        )
        if code != DEMO_PATIENT:
            _complete_past_assessments(session, participant, actor=actor, now=now)
    return study


def _complete_past_assessments(session: Session, participant: Participant, *, actor: str, now: datetime) -> None:
    """Answer every past assessment as the patient would have, inside its window.

    Answers are drawn from a generator seeded with the subject code, so the demo looks the
    same on every machine; every third item-level answer is left out on the second visit to
    show how missing items are scored.
    """
    rng = random.Random(participant.subject_code)
    text = default_registry().text(participant.study.instrument_code, "en")
    past = session.scalars(
        select(Assessment)
        .where(Assessment.participant_id == participant.id, Assessment.window_closes_at <= now)
        .order_by(Assessment.window_opens_at)
    ).all()
    for visit, assessment in enumerate(past):
        instrument = default_registry().get(assessment.instrument_code, assessment.instrument_version)
        answered_at = assessment.window_opens_at + timedelta(hours=10)
        start_assessment(session, assessment, mode=AssessmentMode.SELF, text=text, actor=actor, now=answered_at)
        for index, item in enumerate(instrument.items):
            if visit == 1 and index % 3 == 2:
                continue
            values = instrument.response_set(item.response_set).values
            record_answer(
                session, assessment, instrument, item_id=item.id, value=rng.choice(values), locale="en",
                actor=actor, grace=timedelta(0), now=answered_at,
            )
        submit_assessment(
            session, assessment, instrument, submission_key=f"demo-{assessment.id}", actor=actor,
            grace=timedelta(0), now=answered_at + timedelta(minutes=12),
        )
