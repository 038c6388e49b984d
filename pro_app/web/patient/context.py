"""Who the patient is on this request, and which questionnaire they may answer.

A patient is signed in by opening their personal link or typing their code; the browser
session then holds only the link's id (never the token). Every request re-checks that the
link is still valid, so revoking a link ends every session opened with it. In tablet mode the
session is limited to the one assessment the nurse started.

The session also carries, apart from the sign-in, the answer of a question page posted after
the sign-in had ended (see :func:`keep_pending_answer`), and the submission key of the review
page (one per questionnaire, so two tabs or a retried submission submit exactly once).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from flask import current_app, g, session
from sqlalchemy import bindparam, select

from pro_app.db.models import AccessLink, Assessment, Participant, Study
from pro_app.domain.instruments import Instrument, InstrumentText, default_registry
from pro_app.domain.states import AssessmentMode
from pro_app.db.types import utcnow
from pro_app.extensions import database
from pro_app.services.access import link_is_usable
from pro_app.services.questionnaire import accepts_answers, current_assessment, new_request_id
from pro_app.services.texts import text_for

SESSION_KEY = "patient"
#: An answer posted after the sign-in ended, kept until the patient is identified again.
PENDING_KEY = "patient_pending"
#: A kept answer older than this is no longer offered (the patient may not remember it).
PENDING_MAX_AGE = timedelta(hours=24)


@dataclass
class PatientContext:
    participant: Participant
    mode: AssessmentMode
    #: In tablet mode, the only assessment this browser may answer.
    assessment_id: int | None = None
    #: The participant's study, when read with the sign-in: held for the request so that
    #: ``participant.study`` finds it in the session (which holds objects only weakly).
    study: Study | None = None

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


def submission_key_for(assessment_id: int) -> str:
    """The review page's submission key for this questionnaire in this browser session.

    The same key on every rendering (a reload, a second tab), so whichever copy of the page
    submits first wins and every other copy gets the same thank-you page instead of a
    conflict. A new questionnaire (or a new sign-in) gets a new key.
    """
    data = session.get(SESSION_KEY)
    if not isinstance(data, dict):
        return new_request_id()
    kept = data.get("submit")
    if isinstance(kept, dict) and kept.get("assessment") == assessment_id and isinstance(kept.get("key"), str):
        return str(kept["key"])
    key = new_request_id()
    data["submit"] = {"assessment": assessment_id, "key": key}
    session.modified = True
    return key


@dataclass(frozen=True)
class PendingAnswer:
    """An answer the patient chose while signed out, not stored anywhere but their session.

    It is never saved on its own: nobody was identified when it was posted. Once the patient
    has opened their link or typed their code again, the question is shown with it selected
    and they confirm it by moving on, which saves it like any answer.
    """

    assessment_id: int
    number: int
    value: int


def keep_pending_answer(assessment_id: int, number: int, value: int, now: datetime) -> None:
    """Hold the answer in the signed session cookie (item number and value only)."""
    session[PENDING_KEY] = {"assessment": assessment_id, "number": number, "value": value, "at": int(now.timestamp())}


def pending_answer(now: datetime) -> PendingAnswer | None:
    data = session.get(PENDING_KEY)
    if data is None:
        return None
    try:
        kept_at = datetime.fromtimestamp(int(data["at"]), tz=timezone.utc)
        pending = PendingAnswer(int(data["assessment"]), int(data["number"]), int(data["value"]))
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        drop_pending_answer()
        return None
    if now - kept_at > PENDING_MAX_AGE:
        drop_pending_answer()
        return None
    return pending


def drop_pending_answer() -> None:
    if PENDING_KEY in session:  # popping a missing key would still rewrite the cookie
        session.pop(PENDING_KEY)


# Every patient request starts here: the link, its participant and their study (whose default
# language every page reads) in one statement, built once.
_SIGNED_IN_LINK = (
    select(AccessLink, Participant, Study)
    .join(AccessLink.participant)
    .join(Participant.study)
    .where(AccessLink.id == bindparam("link_id"))
)


def load_patient(now: datetime) -> PatientContext | None:
    """The signed-in patient, or None when there is none or their link stopped being valid."""
    data = session.get(SESSION_KEY)
    if not isinstance(data, dict):
        return None
    db = database.session
    context: PatientContext | None = None
    if "link" in data:
        row = db.execute(_SIGNED_IN_LINK, {"link_id": data["link"]}).first()
        # The participant and study are in the session now: reaching the study from the
        # participant (participant.study) issues no further statement.
        if row is not None and link_is_usable(row.AccessLink, now):
            context = PatientContext(row.Participant, AssessmentMode.SELF, study=row.Study)
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
