"""Who the patient is on this request, and which questionnaire they may answer.

A patient is signed in by opening their personal link or typing their code; the browser
session then holds only the link's id (never the token). Every request re-checks that the
link is still valid, so revoking a link ends every session opened with it. In tablet mode the
session is limited to the one assessment the nurse started.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app, g, session
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from pro_app.db.models import AccessLink, Assessment, Participant
from pro_app.domain.instruments import Instrument, InstrumentText, default_registry
from pro_app.domain.states import AssessmentMode
from pro_app.db.types import utcnow
from pro_app.extensions import database
from pro_app.services.access import link_is_usable
from pro_app.services.questionnaire import accepts_answers, current_assessment
from pro_app.services.texts import text_for

SESSION_KEY = "patient"


@dataclass
class PatientContext:
    participant: Participant
    mode: AssessmentMode
    #: In tablet mode, the only assessment this browser may answer.
    assessment_id: int | None = None

    @property
    def actor(self) -> str:
        return f"participant:{self.participant.id}"


def grace_period() -> timedelta:
    return timedelta(minutes=current_app.config["PATIENT_GRACE_MINUTES"])


def sign_in_with_link(link: AccessLink) -> None:
    session.pop(SESSION_KEY, None)
    session[SESSION_KEY] = {"link": link.id, "mode": AssessmentMode.SELF.value}


def sign_in_tablet(participant_id: int, assessment_id: int, mode: AssessmentMode) -> None:
    session[SESSION_KEY] = {"participant": participant_id, "assessment": assessment_id, "mode": mode.value}


def sign_out_patient() -> None:
    session.pop(SESSION_KEY, None)


def load_patient(now: datetime) -> PatientContext | None:
    """The signed-in patient, or None when there is none or their link stopped being valid."""
    data = session.get(SESSION_KEY)
    if not isinstance(data, dict):
        return None
    db = database.session
    context: PatientContext | None = None
    if "link" in data:
        link = db.scalars(
            select(AccessLink)
            .options(joinedload(AccessLink.participant))
            .where(AccessLink.id == data["link"])
        ).one_or_none()
        if link is not None and link_is_usable(link, now):
            context = PatientContext(link.participant, AssessmentMode.SELF)
    elif "participant" in data:
        participant = db.get(Participant, data["participant"])
        if participant is not None:
            context = PatientContext(participant, AssessmentMode(data.get("mode", "tablet")), data.get("assessment"))
    if context is None:
        sign_out_patient()
        return None
    g.preferred_locale = context.participant.locale
    g.timezone = context.participant.timezone
    return context


def assessment_for(context: PatientContext, now: datetime) -> Assessment | None:
    """The questionnaire this patient may answer now (tablet mode: only the one started)."""
    if context.assessment_id is not None:
        assessment = database.session.get(Assessment, context.assessment_id)
        if assessment is None or assessment.participant_id != context.participant.id:
            return None
        return assessment if accepts_answers(assessment, now, grace_period()) else None
    return current_assessment(database.session, context.participant, now=now, grace=grace_period())


def assessment_for_tablet(participant: Participant, assessment_id: int | None) -> Assessment | None:
    """The participant's assessment a nurse may hand over now (it must be answerable)."""
    assessment = database.session.get(Assessment, assessment_id) if assessment_id else None
    if assessment is None or assessment.participant_id != participant.id:
        return None
    return assessment if accepts_answers(assessment, utcnow(), grace_period()) else None


def instrument_and_text(assessment: Assessment, locale: str) -> tuple[Instrument, InstrumentText]:
    """The instrument of the assessment and its wording in ``locale`` (else the study's).

    A site's licensed wording for the locale takes precedence over the demo wording.
    """
    instrument = default_registry().get(assessment.instrument_code, assessment.instrument_version)
    fallbacks = (locale, assessment.participant.study.default_locale, "en")
    return instrument, text_for(database.session, instrument, fallbacks)
