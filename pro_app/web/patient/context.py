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
from typing import Any

from flask import current_app, g, session
from sqlalchemy import bindparam, select

from pro_app.db.direct import DirectRead
from pro_app.db.models import AccessLink, Answer, Assessment, Participant, Study
from pro_app.db.models.base import table_of
from pro_app.domain.instruments import Instrument, InstrumentText, default_registry
from pro_app.domain.states import AssessmentMode
from pro_app.db.types import utcnow
from pro_app.extensions import database
from pro_app.services.access import link_is_usable
from pro_app.services.questionnaire import (
    ASSESSMENTS,
    OPEN_ASSESSMENT_COLUMNS,
    RECEIPT_COLUMNS,
    RECEIPTS,
    OpenAssessment,
    StoredReceipt,
    accepts_answers,
    answerable_now,
    choose_open_assessment,
    current_assessment,
    current_open_assessment,
    new_request_id,
    open_assessment,
)
from pro_app.services.texts import text_for, text_started_with

SESSION_KEY = "patient"
#: An answer posted after the sign-in ended, kept until the patient is identified again.
PENDING_KEY = "patient_pending"
#: A kept answer older than this is no longer offered (the patient may not remember it).
PENDING_MAX_AGE = timedelta(hours=24)


@dataclass(frozen=True)
class SignedInParticipant:
    """What every patient page needs of the signed-in participant, read in one statement.

    Plain values rather than the mapped :class:`Participant`: loading ORM objects was a large
    part of serving a question page. Code that needs more of the participant loads the row.
    """

    id: int
    status: str
    locale: str
    timezone: str
    #: The language of the participant's study, the wording's fallback.
    study_locale: str


@dataclass(frozen=True)
class StoredAnswer:
    """The stored answer (None: not answered) to one item of a questionnaire."""

    assessment_id: int
    item_id: str
    value: int | None


@dataclass
class PatientContext:
    participant: SignedInParticipant
    mode: AssessmentMode
    #: In tablet mode, the only assessment this browser may answer.
    assessment_id: int | None = None
    #: The questionnaire open at the sign-in's instant, read with the sign-in (link sign-ins).
    open_at_sign_in: tuple[datetime, OpenAssessment | None] | None = None
    #: The stored answer to the item asked for at the sign-in, of that questionnaire.
    answer_at_sign_in: StoredAnswer | None = None
    #: The request id asked for at the sign-in, and its stored receipt (None: it has none).
    receipt_at_sign_in: tuple[str, StoredReceipt | None] | None = None

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


# Every patient request starts here: the link's validity, its participant, their study's
# language and the questionnaires they may answer now, in one Core statement built once (one
# row per questionnaire, or one with none). The tablet sign-in reads the participant's columns.
_LINK = table_of(AccessLink)
_PARTICIPANT = table_of(Participant)
_STUDY = table_of(Study)
_PARTICIPANT_COLUMNS = (
    _PARTICIPANT.c.id, _PARTICIPANT.c.status, _PARTICIPANT.c.locale, _PARTICIPANT.c.timezone,
    _STUDY.c.default_locale,
)
_SIGNED_IN_LINK = (
    select(_LINK.c.expires_at, _LINK.c.revoked_at, *_PARTICIPANT_COLUMNS, *OPEN_ASSESSMENT_COLUMNS)
    .join_from(_LINK, _PARTICIPANT, _LINK.c.participant_id == _PARTICIPANT.c.id)
    .join(_STUDY, _PARTICIPANT.c.study_id == _STUDY.c.id)
    .outerjoin(ASSESSMENTS, answerable_now(_PARTICIPANT.c.id))
    .where(_LINK.c.id == bindparam("link_id"))
    .order_by(ASSESSMENTS.c.window_opens_at, ASSESSMENTS.c.id)
)
#: Where the questionnaire's columns start and end in a row of ``_SIGNED_IN_LINK``.
_OPEN_FROM = 2 + len(_PARTICIPANT_COLUMNS)
_OPEN_TO = _OPEN_FROM + len(OPEN_ASSESSMENT_COLUMNS)
# The question page's variant: each questionnaire's stored answer to one item, in the last
# column (on PostgreSQL one round trip instead of two for every question shown).
_ANSWER = table_of(Answer)
_STORED_VALUE = (
    select(_ANSWER.c.value)
    .where(_ANSWER.c.assessment_id == ASSESSMENTS.c.id, _ANSWER.c.item_id == bindparam("item_id"))
    .scalar_subquery()
    .label("stored_value")
)
_SIGNED_IN_LINK_WITH_ANSWER = _SIGNED_IN_LINK.add_columns(_STORED_VALUE)
# The answer save's variant: the receipt of the save's request id, in the columns after the
# questionnaire's (NULLs when there is none), so a repetition is known without a statement of
# its own. On PostgreSQL also the stored answer, last: the save in one statement checks it.
_SIGNED_IN_LINK_WITH_RECEIPT = _SIGNED_IN_LINK.add_columns(*RECEIPT_COLUMNS).outerjoin(
    RECEIPTS, RECEIPTS.c.request_id == bindparam("request_id")
)
_SIGNED_IN_LINK_WITH_RECEIPT_AND_ANSWER = _SIGNED_IN_LINK_WITH_RECEIPT.add_columns(_STORED_VALUE)
_SIGNED_IN_PARTICIPANT = (
    select(*_PARTICIPANT_COLUMNS)
    .join_from(_PARTICIPANT, _STUDY, _PARTICIPANT.c.study_id == _STUDY.c.id)
    .where(_PARTICIPANT.c.id == bindparam("participant_id"))
)

# Every patient request begins with one of these reads: run on the driver's cursor.
_SIGN_IN = DirectRead(_SIGNED_IN_LINK)
_SIGN_IN_WITH_ANSWER = DirectRead(_SIGNED_IN_LINK_WITH_ANSWER)
_SIGN_IN_WITH_RECEIPT = DirectRead(_SIGNED_IN_LINK_WITH_RECEIPT)
_SIGN_IN_WITH_RECEIPT_AND_ANSWER = DirectRead(_SIGNED_IN_LINK_WITH_RECEIPT_AND_ANSWER)
_SIGN_IN_PARTICIPANT = DirectRead(_SIGNED_IN_PARTICIPANT)


def _participant_of(row: Any) -> SignedInParticipant:
    return SignedInParticipant(row.id, row.status, row.locale, row.timezone, row.default_locale)


def item_id_at(number: int) -> str | None:
    """The id of question ``number`` when every instrument that has one calls it the same (so
    its stored answer can be read before the questionnaire, and so its instrument, is known)."""
    ids = {instrument.items[number - 1].id for instrument in default_registry() if 0 < number <= len(instrument.items)}
    return ids.pop() if len(ids) == 1 else None


def load_patient(now: datetime, *, item_id: str | None = None, request_id: str | None = None) -> PatientContext | None:
    """The signed-in patient, or None when there is none or their link stopped being valid.

    With ``item_id``, a link sign-in also reads the stored answer to that item of the
    questionnaire it finds open (``answer_at_sign_in``); with ``request_id``, the receipt of
    that request (``receipt_at_sign_in``)."""
    data = session.get(SESSION_KEY)
    if not isinstance(data, dict):
        return None
    connection = database.connection
    context: PatientContext | None = None
    if "link" in data:
        grace = grace_period()
        parameters = {"link_id": data["link"], "now": now, "closed_after": now - grace}
        if item_id is not None and request_id is not None:
            rows = _SIGN_IN_WITH_RECEIPT_AND_ANSWER.all(
                connection, {**parameters, "item_id": item_id, "request_id": request_id})
        elif item_id is not None:
            rows = _SIGN_IN_WITH_ANSWER.all(connection, {**parameters, "item_id": item_id})
        elif request_id is not None:
            rows = _SIGN_IN_WITH_RECEIPT.all(connection, {**parameters, "request_id": request_id})
        else:
            rows = _SIGN_IN.all(connection, parameters)
        if rows and link_is_usable(rows[0], now):
            participant = _participant_of(rows[0])
            candidates = [row[_OPEN_FROM:_OPEN_TO] for row in rows if row[_OPEN_FROM] is not None]
            chosen = choose_open_assessment(participant, candidates, now=now, grace=grace)
            context = PatientContext(participant, AssessmentMode.SELF, open_at_sign_in=(now, chosen))
            if item_id is not None and chosen is not None:  # the stored value is the last column
                value = next(row[-1] for row in rows if row[_OPEN_FROM] == chosen.id)
                context.answer_at_sign_in = StoredAnswer(chosen.id, item_id, value)
            if request_id is not None:
                found = rows[0][_OPEN_TO:_OPEN_TO + len(RECEIPT_COLUMNS)]
                context.receipt_at_sign_in = (request_id, None if found[0] is None else StoredReceipt(*found))
    elif "participant" in data:
        row = _SIGN_IN_PARTICIPANT.first(connection, {"participant_id": data["participant"]})
        if row is not None:
            mode = AssessmentMode(data.get("mode", "tablet"))
            context = PatientContext(_participant_of(row), mode, data.get("assessment"))
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


def open_assessment_for(context: PatientContext, now: datetime) -> OpenAssessment | None:
    """:func:`assessment_for` read as values, for pages that only show the questionnaire (or
    save an answer). Taken from the sign-in's statement when it was read at ``now``."""
    if context.open_at_sign_in is not None and context.open_at_sign_in[0] == now:
        return context.open_at_sign_in[1]
    if context.assessment_id is not None:
        assessment = open_assessment(database.session, context.assessment_id)
        if assessment is None or assessment.participant_id != context.participant.id:
            return None
        return assessment if accepts_answers(assessment, now, grace_period()) else None
    return current_open_assessment(database.session, context.participant, now=now, grace=grace_period())


def assessment_for_tablet(participant: Participant, assessment_id: int | None) -> Assessment | None:
    """The participant's assessment a nurse may hand over now (it must be answerable)."""
    assessment = database.session.get(Assessment, assessment_id) if assessment_id else None
    if assessment is None or assessment.participant_id != participant.id:
        return None
    return assessment if accepts_answers(assessment, utcnow(), grace_period()) else None


def instrument_and_text(
    assessment: Assessment | OpenAssessment, locale: str, study_locale: str
) -> tuple[Instrument, InstrumentText]:
    """The instrument of the assessment and its wording in ``locale``, else in the study's
    language ``study_locale``, else in English.

    A site's licensed wording for the locale takes precedence over the demo wording. A
    questionnaire started in ``locale`` keeps the wording it was started with, even when a
    licensed text was loaded meanwhile: all its answers were given to the one wording whose
    checksum it records.
    """
    instrument = default_registry().get(assessment.instrument_code, assessment.instrument_version)
    if assessment.text_checksum is not None and assessment.locale == locale:
        started = text_started_with(database.connection, instrument, locale, assessment.text_checksum)
        if started is not None:
            return instrument, started
    return instrument, text_for(database.session, instrument, (locale, study_locale, "en"))
