"""Answering a questionnaire: finding the open assessment, saving answers, submitting.

The rules that protect the patient's answers live here, shared by the phone, the tablet and
the interview mode:

- an answer is saved the moment it is given; saving the same value again changes nothing;
- every write is done at most once per request id: its receipt (``RequestReceipt``) is
  inserted in the same transaction, under a primary key on the id, so a retried request
  returns the stored receipt instead of writing again -- even when it arrives after a newer
  change of the same answer, and even when two copies race in two transactions;
- the same request id with a different payload is a conflict and changes nothing;
- answers are accepted only while the assessment is open (or, once started, until the
  grace period after its window closes), never after it is submitted;
- a submission is idempotent: the same submission key always returns the same result, a
  different one after submission is a conflict.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy import (
    Column, ColumnElement, Connection, Row, Table, TextClause, and_, bindparam, insert, literal, select, text, update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session

from pro_app.db.direct import DirectRead, DirectWrite
from pro_app.db.models import (
    Answer, Assessment, AuditEvent, ReceiptKind, ReceiptOutcome, RequestReceipt,
)
from pro_app.db.models.base import table_of
from pro_app.db.types import utcnow
from pro_app.domain.errors import N_, Conflict, ValidationError
from pro_app.domain.instruments import Instrument, InstrumentText
from pro_app.domain.states import AssessmentMode, AssessmentStatus, ParticipantStatus
from pro_app.services.alerts import evaluate_submission
from pro_app.db.audit_guard import note_write
from pro_app.services.audit import (
    CHAIN_HEAD, CHAIN_HEAD_ID, EVENT_BIND_PARAMETERS, append_at_head_sql, event_parameters, note_appended, record_event,
)
from pro_app.services.scores import store_scores

#: Longest request id stored (UUIDs are 36 characters; older submission keys up to 64).
REQUEST_ID_MAX_LENGTH = 64
#: Longest text accepted where a UUID is expected ("urn:uuid:" plus 36 characters).
_UUID_TEXT_MAX_LENGTH = 45
INVALID_REQUEST_ID = N_(
    "Your answer could not be checked, so it was not saved. Please reload the page and try again."
)

ANSWERABLE = (AssessmentStatus.SCHEDULED.value, AssessmentStatus.OPEN.value, AssessmentStatus.IN_PROGRESS.value)


class AssessmentWindow(Protocol):
    """What decides whether an assessment takes answers: an :class:`Assessment` or its values."""

    @property
    def status(self) -> str: ...

    @property
    def window_opens_at(self) -> datetime: ...

    @property
    def window_closes_at(self) -> datetime: ...


def accepts_answers(assessment: AssessmentWindow, now: datetime, grace: timedelta) -> bool:
    """Open while its window is; a started assessment may be finished within the grace period."""
    if assessment.status not in ANSWERABLE or now < assessment.window_opens_at:
        return False
    closes = assessment.window_closes_at
    if assessment.status == AssessmentStatus.IN_PROGRESS.value:
        closes = closes + grace
    return now < closes


@dataclass(frozen=True)
class OpenAssessment:
    """An answerable assessment as a question page reads it: its values, not a mapped object
    (loading one was a large part of serving the page). Writes load the :class:`Assessment`."""

    id: int
    participant_id: int
    status: str
    instrument_code: str
    instrument_version: str
    window_opens_at: datetime
    window_closes_at: datetime
    #: The wording the questionnaire was started with (None until it is started).
    locale: str | None = None
    text_checksum: str | None = None


_WindowT = TypeVar("_WindowT", bound=AssessmentWindow)


def _preferred(candidates: Sequence[_WindowT], now: datetime, grace: timedelta) -> _WindowT | None:
    """One already started first, then the earliest open window (``candidates`` in window order)."""
    usable = [a for a in candidates if accepts_answers(a, now, grace)]
    started = [a for a in usable if a.status == AssessmentStatus.IN_PROGRESS.value]
    preferred = started or usable
    return preferred[0] if preferred else None


def _answerable(status: ColumnElement[str] | InstrumentedAttribute[str]) -> ColumnElement[bool]:
    """``status IN (...)`` of :data:`ANSWERABLE`, one bound parameter per status. (``in_`` of a
    list renders an "expanding" parameter, whose statement is rewritten on every execution: on
    the patient pages that cost more than the query.)"""
    return status.in_([literal(value) for value in ANSWERABLE])


# Read on every patient page: built once (SQLAlchemy caches its compiled form).
_ASSESSMENT_TABLE = table_of(Assessment)
_ANSWER_TABLE = table_of(Answer)
_OPEN_VALUES = (
    _ASSESSMENT_TABLE.c.id, _ASSESSMENT_TABLE.c.participant_id, _ASSESSMENT_TABLE.c.status,
    _ASSESSMENT_TABLE.c.instrument_code, _ASSESSMENT_TABLE.c.instrument_version,
    _ASSESSMENT_TABLE.c.window_opens_at, _ASSESSMENT_TABLE.c.window_closes_at,
    _ASSESSMENT_TABLE.c.locale, _ASSESSMENT_TABLE.c.text_checksum,
)
_ANSWERABLE_NOW = (
    select(Assessment)
    .where(
        Assessment.participant_id == bindparam("participant_id"),
        _answerable(Assessment.status),
        Assessment.window_opens_at <= bindparam("now"),
        Assessment.window_closes_at > bindparam("closed_after"),
    )
    .order_by(Assessment.window_opens_at, Assessment.id)
)


def answerable_now(participant_id: ColumnElement[int]) -> ColumnElement[bool]:
    """The assessments of ``participant_id`` that may take answers now, as SQL (parameters
    ``now`` and ``closed_after``, which is ``now`` minus the grace period): the rows to choose
    from with :func:`choose_open_assessment`. Columns: :data:`OPEN_ASSESSMENT_COLUMNS` of
    :data:`ASSESSMENTS`."""
    return and_(
        _ASSESSMENT_TABLE.c.participant_id == participant_id,
        _answerable(_ASSESSMENT_TABLE.c.status),
        _ASSESSMENT_TABLE.c.window_opens_at <= bindparam("now"),
        _ASSESSMENT_TABLE.c.window_closes_at > bindparam("closed_after"),
    )


ASSESSMENTS = _ASSESSMENT_TABLE
#: The columns an :class:`OpenAssessment` is made of, in its fields' order.
OPEN_ASSESSMENT_COLUMNS = _OPEN_VALUES
_ANSWERABLE_NOW_VALUES = (
    select(*_OPEN_VALUES)
    .where(answerable_now(bindparam("participant_id")))
    .order_by(_ASSESSMENT_TABLE.c.window_opens_at, _ASSESSMENT_TABLE.c.id)
)
_ASSESSMENT_VALUES = select(*_OPEN_VALUES).where(_ASSESSMENT_TABLE.c.id == bindparam("id"))


class ParticipantRef(Protocol):
    """A participant as the questionnaire services need it: a :class:`Participant`, or the
    signed-in patient's values read without loading one."""

    @property
    def id(self) -> int: ...

    @property
    def status(self) -> str: ...


def current_assessment(
    session: Session, participant: ParticipantRef, *, now: datetime, grace: timedelta
) -> Assessment | None:
    """The assessment the participant should answer now: one already started first, then the
    earliest open window. The window times decide, not a possibly stale status."""
    if participant.status != ParticipantStatus.ACTIVE.value:
        return None
    candidates = session.scalars(
        _ANSWERABLE_NOW, {"participant_id": participant.id, "now": now, "closed_after": now - grace}
    ).all()
    return _preferred(candidates, now, grace)


def current_open_assessment(
    session: Session, participant: ParticipantRef, *, now: datetime, grace: timedelta
) -> OpenAssessment | None:
    """:func:`current_assessment`, chosen the same way, read as values in one Core statement."""
    if participant.status != ParticipantStatus.ACTIVE.value:
        return None
    rows = session.connection().execute(
        _ANSWERABLE_NOW_VALUES, {"participant_id": participant.id, "now": now, "closed_after": now - grace}
    ).all()
    return choose_open_assessment(participant, rows, now=now, grace=grace)


def choose_open_assessment(
    participant: ParticipantRef, candidates: Sequence[Sequence[Any]], *, now: datetime, grace: timedelta
) -> OpenAssessment | None:
    """The assessment to answer now among ``candidates``: rows of :data:`OPEN_ASSESSMENT_COLUMNS`
    selected by :func:`answerable_now`, in window order (another statement may read them)."""
    if participant.status != ParticipantStatus.ACTIVE.value:
        return None
    return _preferred([OpenAssessment(*row) for row in candidates], now, grace)


def open_assessment(session: Session, assessment_id: int) -> OpenAssessment | None:
    """The assessment's values (whether or not it takes answers), or None if there is none."""
    row = session.connection().execute(_ASSESSMENT_VALUES, {"id": assessment_id}).first()
    return None if row is None else OpenAssessment(*row)


def next_assessment(session: Session, participant: ParticipantRef, *, now: datetime) -> Assessment | None:
    """The next assessment whose window has not opened yet."""
    if participant.status != ParticipantStatus.ACTIVE.value:
        return None
    return session.scalars(
        select(Assessment)
        .where(
            Assessment.participant_id == participant.id,
            _answerable(Assessment.status),
            Assessment.window_opens_at > now,
        )
        .order_by(Assessment.window_opens_at)
        .limit(1)
    ).first()


# Statements of the answer save, which every patient sends for every question: built once
# (their compiled form is cached by SQLAlchemy), and the writes as Core statements on the
# tables rather than through the unit of work.
_LOCK_ASSESSMENT = (
    select(Assessment).where(Assessment.id == bindparam("id")).with_for_update()
    .execution_options(populate_existing=True)
)
# The answer save reads the questionnaire under the lock as values, with the stored answer
# to the item (one statement; NULLs when there is none): it changes only the questionnaire's
# status (on the first answer), with a Core UPDATE.
_LOCK_ASSESSMENT_VALUES = (
    select(
        *_OPEN_VALUES, _ASSESSMENT_TABLE.c.mode, _ASSESSMENT_TABLE.c.started_at,
        _ANSWER_TABLE.c.id.label("stored_answer_id"), _ANSWER_TABLE.c.value.label("stored_value"),
    )
    .select_from(_ASSESSMENT_TABLE.outerjoin(_ANSWER_TABLE, and_(
        _ANSWER_TABLE.c.assessment_id == _ASSESSMENT_TABLE.c.id, _ANSWER_TABLE.c.item_id == bindparam("item_id"),
    )))
    .where(_ASSESSMENT_TABLE.c.id == bindparam("id"))
    .with_for_update(of=_ASSESSMENT_TABLE)
)
# SQLite's variant, which also reads the audit chain's head: its writer holds the whole
# database from BEGIN IMMEDIATE on, so the head read first is still the head when the event is
# appended (PostgreSQL locks the head's row only then, to hold it as briefly as it can).
_LOCK_ASSESSMENT_VALUES_AND_HEAD = (
    _LOCK_ASSESSMENT_VALUES.add_columns(CHAIN_HEAD.c.last_seq, CHAIN_HEAD.c.last_hash)
    .join(CHAIN_HEAD, CHAIN_HEAD.c.id == CHAIN_HEAD_ID)
)
#: The save's read under the lock, on every answer saved: run on the driver's cursor.
_LOCK_VALUES = DirectRead(_LOCK_ASSESSMENT_VALUES)
_LOCK_VALUES_AND_HEAD = DirectRead(_LOCK_ASSESSMENT_VALUES_AND_HEAD)
_MARK_STARTED = (
    update(_ASSESSMENT_TABLE)
    .where(_ASSESSMENT_TABLE.c.id == bindparam("assessment_id"))
    .values(status=AssessmentStatus.IN_PROGRESS.value, started_at=bindparam("new_started_at"))
)
_RECEIPTS = table_of(RequestReceipt)
RECEIPTS = _RECEIPTS
#: The columns of a :class:`StoredReceipt`, in its order.
RECEIPT_COLUMNS = (
    _RECEIPTS.c.request_id, _RECEIPTS.c.kind, _RECEIPTS.c.participant_id, _RECEIPTS.c.assessment_id,
    _RECEIPTS.c.item_id, _RECEIPTS.c.value, _RECEIPTS.c.outcome, _RECEIPTS.c.recorded_at,
)
_FIND_RECEIPT = select(*RECEIPT_COLUMNS).where(_RECEIPTS.c.request_id == bindparam("request_id"))


def _insert_unless_present(table: Table, key: Column[Any]) -> TextClause:
    """``INSERT ... ON CONFLICT (key) DO NOTHING RETURNING key`` of every column of ``table``.

    Written as text because it is the same SQL on SQLite (3.35 and later) and PostgreSQL, and
    because SQLAlchemy does not cache the compiled form of its dialects' ``ON CONFLICT``
    inserts (it would compile one on every answer save). The columns' types still convert
    the parameters."""
    names = [column.name for column in table.columns]
    return text(
        f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join(f':{name}' for name in names)}) "
        f"ON CONFLICT ({key.name}) DO NOTHING RETURNING {key.name}"
    ).bindparams(*(bindparam(column.name, type_=column.type) for column in table.columns))


#: The receipt of a request, unless the request id has one: a duplicate is no error, so the
#: save and the submission need no savepoint. The save's writes, on every answer saved, run on
#: the driver's cursor in the session's transaction (:class:`~pro_app.db.direct.DirectWrite`).
_ADD_RECEIPT_ONCE = DirectWrite(
    _insert_unless_present(_RECEIPTS, _RECEIPTS.c.request_id), table=_RECEIPTS.name, insert=True, returns_rows=True
)
_ADD_ANSWER = DirectWrite(insert(_ANSWER_TABLE))
_CHANGE_ANSWER = DirectWrite(
    update(_ANSWER_TABLE)
    .where(_ANSWER_TABLE.c.id == bindparam("answer_id"))
    .values(value=bindparam("new_value"), locale=bindparam("new_locale"), answered_at=bindparam("new_at"),
            answered_by=bindparam("new_by"))
)
_ANSWERS_OF = select(Answer.item_id, Answer.value).where(Answer.assessment_id == bindparam("assessment_id"))
_ANSWER_WRITTEN = ("value", "locale", "answered_at", "answered_by")
_RECEIPT_NAMES = [column.name for column in _RECEIPTS.columns]


def _saved_in_one_statement(answer_write: str, checked: str | None = None) -> DirectWrite:
    """PostgreSQL's save of a changed answer in one statement: the receipt, the answer
    (``answer_write``: an ``INSERT`` or ``UPDATE`` of ``answers`` for each row of ``receipt``)
    and the audit event (:func:`~pro_app.services.audit.append_at_head_sql`, for each answer
    written). Each step writes only when the one before it did. It gives one row: how many
    receipts it inserted, and the event's ``seq`` and ``hash`` (NULL when none).

    Without ``checked`` it is a statement of the save's transaction, after the questionnaire
    was read under its lock (:func:`_write_answer`): a repeated request's receipt meets the
    primary key and nothing is written. With ``checked`` (a ``SELECT ... FOR UPDATE`` giving
    the questionnaire's row when it still is what the caller read, see
    :func:`save_answer_at_once`) the statement is its own transaction: the receipt is inserted
    for each row of ``checked``, without ``ON CONFLICT``, so that a repeated request fails the
    whole statement instead of leaving a receipt alone.

    These are the writes :func:`_write_answer` makes one statement at a time on SQLite (which
    has no writing ``WITH``) and for the first answer (which also starts the questionnaire):
    on PostgreSQL every statement is a round trip, and the last of them holds the audit chain's
    lock, which every save of every patient waits for, until the commit."""
    if checked is None:
        receipt = _insert_unless_present(_RECEIPTS, _RECEIPTS.c.request_id).text
        steps = f"receipt AS ({receipt})"
    else:
        receipt = (f"INSERT INTO {_RECEIPTS.name} ({', '.join(_RECEIPT_NAMES)}) "
                   f"SELECT {', '.join(':' + name for name in _RECEIPT_NAMES)} FROM checked RETURNING request_id")
        steps = f"checked AS ({checked}), receipt AS ({receipt})"
    sql = (
        f"WITH {steps}, answer AS ({answer_write}), event AS ({append_at_head_sql('answer')}) "
        "SELECT (SELECT count(*) FROM receipt) AS receipts, event.seq, event.hash FROM (SELECT 1) AS one "
        "LEFT JOIN event ON true"
    )
    named = set(re.findall(r"(?<!:):(\w+)", sql))
    typed = {parameter.key: parameter for parameter in (
        *(bindparam(column.name, type_=column.type) for column in _RECEIPTS.columns),
        *(bindparam(name, type_=_ANSWER_TABLE.c[name].type) for name in _ANSWER_WRITTEN),
        *(bindparam(column.name, type_=column.type) for column in _ASSESSMENT_TABLE.columns),
        bindparam("stored_value", type_=_ANSWER_TABLE.c.value.type),
        bindparam("now", type_=_ASSESSMENT_TABLE.c.window_opens_at.type),
        bindparam("closed_after", type_=_ASSESSMENT_TABLE.c.window_closes_at.type),
        *EVENT_BIND_PARAMETERS,
    ) if parameter.key in named}
    return DirectWrite(text(sql).bindparams(*typed.values()), table=_RECEIPTS.name, insert=True, returns_rows=True)


_NEW_ANSWER = (
    f"INSERT INTO {_ANSWER_TABLE.name} (assessment_id, item_id, {', '.join(_ANSWER_WRITTEN)}) "
    f"SELECT :assessment_id, :item_id, {', '.join(':' + name for name in _ANSWER_WRITTEN)} FROM receipt RETURNING id"
)
_CHANGED_ANSWER = (
    f"UPDATE {_ANSWER_TABLE.name} SET {', '.join(f'{name} = :{name}' for name in _ANSWER_WRITTEN)} FROM receipt "
    f"WHERE {_ANSWER_TABLE.name}.assessment_id = :assessment_id AND {_ANSWER_TABLE.name}.item_id = :item_id "
    f"RETURNING {_ANSWER_TABLE.name}.id"
)
_SAVE_NEW_ANSWER_AT_ONCE = _saved_in_one_statement(_NEW_ANSWER)
_SAVE_CHANGED_ANSWER_AT_ONCE = _saved_in_one_statement(_CHANGED_ANSWER)
# The questionnaire as the single-statement save found it when it read it (in progress, open
# now or within the grace period, in the mode read), locked for the statement, with the stored
# answer the save read: that answer's row locked too, or none at all. PostgreSQL checks a
# locked row's conditions again on its newest version when it had to wait for the lock.
_STILL_AS_READ = (
    f"SELECT questionnaire.id FROM {_ASSESSMENT_TABLE.name} AS questionnaire {{answer_join}}"
    "WHERE questionnaire.id = :assessment_id AND questionnaire.participant_id = :participant_id "
    f"AND questionnaire.status = '{AssessmentStatus.IN_PROGRESS.value}' AND questionnaire.mode = :mode "
    "AND questionnaire.window_opens_at <= :now AND questionnaire.window_closes_at > :closed_after {answer_check}"
)
_SAVE_NEW_ANSWER_ALONE = _saved_in_one_statement(_NEW_ANSWER, _STILL_AS_READ.format(
    answer_join="",
    answer_check=(f"AND NOT EXISTS (SELECT 1 FROM {_ANSWER_TABLE.name} AS stored WHERE stored.assessment_id = "
                  "questionnaire.id AND stored.item_id = :item_id) FOR UPDATE OF questionnaire"),
))
_SAVE_CHANGED_ANSWER_ALONE = _saved_in_one_statement(_CHANGED_ANSWER, _STILL_AS_READ.format(
    answer_join=(f"JOIN {_ANSWER_TABLE.name} AS stored ON stored.assessment_id = questionnaire.id "
                 "AND stored.item_id = :item_id "),
    answer_check="AND stored.value = :stored_value FOR UPDATE OF questionnaire, stored",
))


def lock_assessment(session: Session, assessment_id: int) -> Assessment:
    """Reload the assessment holding a row lock (PostgreSQL) so concurrent saves and
    submissions of the same assessment run one after another."""
    return session.scalars(_LOCK_ASSESSMENT, {"id": assessment_id}).one()


def start_assessment(
    session: Session,
    assessment: Assessment,
    *,
    mode: AssessmentMode,
    text: InstrumentText,
    actor: str,
    now: datetime | None = None,
) -> Assessment:
    """Mark the assessment in progress and record how and in which wording it is given.

    The assessment is locked and read again first (``assessment`` is refreshed): one started
    in the meantime is left as it is, and one submitted in the meantime is never set back to
    in progress (it is returned unchanged; the patient's pages then find it closed). Whether a
    questionnaire may still be answered is the caller's to check (the demo study starts past
    ones to fill in their history).
    """
    now = now or utcnow()
    assessment = lock_assessment(session, assessment.id)
    if assessment.status in (AssessmentStatus.IN_PROGRESS.value, AssessmentStatus.COMPLETED.value):
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


class ReusedRequestId(Conflict):
    """A request id already describes another write; the new request changed nothing."""


def new_request_id() -> str:
    """A fresh request id, for a form the server renders or a request that came without one."""
    return str(uuid.uuid4())


def parse_request_id(raw: str) -> str:
    """The client's request id as canonical UUID text (lower case, with hyphens).

    Clients send a UUID (``crypto.randomUUID()`` or a server-rendered one). Anything else is
    refused rather than stored: a key that is not unique by construction cannot protect a
    write, and a client sending one has a bug that should surface at once.
    """
    text = raw.strip()
    try:
        if len(text) > _UUID_TEXT_MAX_LENGTH:
            raise ValueError(text)
        parsed = uuid.UUID(text)
    except ValueError:
        raise ValidationError(INVALID_REQUEST_ID, field="request_id") from None
    if parsed.int == 0:
        raise ValidationError(INVALID_REQUEST_ID, field="request_id")
    return str(parsed)


@dataclass(frozen=True)
class StoredReceipt:
    """A request's receipt as stored (the values of its :class:`RequestReceipt` row)."""

    request_id: str
    kind: str
    participant_id: int
    assessment_id: int
    item_id: str | None
    value: int | None
    outcome: str
    recorded_at: datetime


def find_receipt(session: Session, request_id: str) -> StoredReceipt | None:
    """The stored receipt of ``request_id``, read from the database (not a cached copy)."""
    row = session.connection().execute(_FIND_RECEIPT, {"request_id": request_id}).first()
    return None if row is None else StoredReceipt(*row)


@dataclass(frozen=True)
class SavedAnswer:
    """The receipt of one answer save: what is returned to the request and to its retries."""

    item_id: str
    value: int
    changed: bool
    request_id: str
    saved_at: datetime
    #: True when the request had been handled before and its stored receipt is returned.
    replayed: bool = False


def _checked_request_id(request_id: str | None) -> str:
    if request_id is None or request_id == "":
        return new_request_id()
    if len(request_id) > REQUEST_ID_MAX_LENGTH:
        raise ValidationError(INVALID_REQUEST_ID, field="request_id")
    return request_id


def _answer_from_receipt(
    receipt: StoredReceipt, *, participant_id: int, assessment_id: int, item_id: str, value: int
) -> SavedAnswer:
    """A repeated answer request: the original receipt when the payload is the same.

    The stored value is returned even if the answer was changed since: a late retry of an
    old request must never overwrite a newer answer.
    """
    same = (
        receipt.kind == ReceiptKind.ANSWER.value
        and receipt.participant_id == participant_id
        and receipt.assessment_id == assessment_id
        and receipt.item_id == item_id
        and receipt.value == value
    )
    if not same or receipt.item_id is None or receipt.value is None:
        raise ReusedRequestId(
            N_("This answer was not saved because the page was out of date. Please choose your answer again.")
        )
    return SavedAnswer(
        receipt.item_id,
        receipt.value,
        changed=receipt.outcome == ReceiptOutcome.SAVED.value,
        request_id=receipt.request_id,
        saved_at=receipt.recorded_at,
        replayed=True,
    )


def replayed_answer(
    session: Session, request_id: str, *, participant_id: int, assessment_id: int | None, item_id: str, value: object
) -> SavedAnswer | None:
    """The stored receipt when this answer request was handled before, else None.

    Checked before anything else, so a retry gets its original result even if the
    questionnaire was submitted or closed in between. A different payload is a conflict.
    """
    receipt = find_receipt(session, request_id)
    if receipt is None:
        return None
    return answer_replay(
        receipt, participant_id=participant_id, assessment_id=assessment_id, item_id=item_id, value=value
    )


def answer_replay(
    receipt: StoredReceipt, *, participant_id: int, assessment_id: int | None, item_id: str, value: object
) -> SavedAnswer:
    """The result of an answer request handled before, from its stored receipt (read by the
    caller); a conflict when the request differs from the one the receipt is for."""
    if assessment_id is None or isinstance(value, bool) or not isinstance(value, int):
        raise ReusedRequestId(
            N_("This answer was not saved because the page was out of date. Please choose your answer again.")
        )
    return _answer_from_receipt(
        receipt, participant_id=participant_id, assessment_id=assessment_id, item_id=item_id, value=value
    )


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


class AssessmentRef(Protocol):
    """The questionnaire an answer is for: an :class:`Assessment` or its values."""

    @property
    def id(self) -> int: ...

    @property
    def participant_id(self) -> int: ...


def record_answer(
    session: Session,
    assessment: AssessmentRef,
    instrument: Instrument,
    *,
    item_id: str,
    value: object,
    locale: str,
    actor: str,
    grace: timedelta,
    now: datetime | None = None,
    request_id: str | None = None,
) -> SavedAnswer:
    """Save (or change) one answer, at most once per ``request_id``.

    Saving the value already stored changes nothing (but still gives the request its
    receipt). Without a request id the request is taken as unique and gets a new one.

    A repetition of a request gets the original request's result, even when the questionnaire
    was submitted or closed since; a request id used for another answer is a conflict
    (:class:`ReusedRequestId`). The receipt is inserted first, with ``ON CONFLICT DO NOTHING``:
    a repetition, or the second of two copies racing in two transactions (on PostgreSQL it
    waits for the first transaction to end), meets the first one's primary key, writes nothing
    more, and the stored receipt is returned, so exactly one write is kept. The receipt is read
    only then, or when the questionnaire no longer takes answers: a first request costs no
    lookup.

    The questionnaire is re-read under the lock as values, and written with Core
    statements; a mapped :class:`Assessment` of it in the session is expired when its status
    changes, so it is read again when next used.
    """
    now = now or utcnow()
    checked = validate_answer(instrument, item_id, value)
    given = bool(request_id)
    request_id = _checked_request_id(request_id)
    participant_id, assessment_id = assessment.participant_id, assessment.id

    def replayed() -> SavedAnswer | None:
        stored = find_receipt(session, request_id)
        if stored is None:
            return None
        return _answer_from_receipt(
            stored, participant_id=participant_id, assessment_id=assessment_id, item_id=item_id, value=checked
        )

    session.flush()  # what the caller changed in the session is written before the re-read
    connection = session.connection()
    lock = _LOCK_VALUES_AND_HEAD if connection.dialect.name == "sqlite" else _LOCK_VALUES
    locked = lock.one(connection, {"id": assessment_id, "item_id": item_id})
    if not accepts_answers(locked, now, grace):  # submitted, closed, or not open yet
        replay = replayed() if given else None
        if replay is not None:
            return replay
        if locked.status == AssessmentStatus.COMPLETED.value:
            raise Conflict(N_("This questionnaire has already been submitted; answers can no longer be changed."))
        raise Conflict(N_("This questionnaire is closed; answers can no longer be saved."))
    head = (locked.last_seq, locked.last_hash) if lock is _LOCK_VALUES_AND_HEAD else None
    saved = _write_answer(
        session, locked, item_id=item_id, value=checked, locale=locale, actor=actor, now=now, request_id=request_id,
        head=head, connection=connection,
    )
    if saved is not None:
        return saved
    replay = replayed()  # the receipt of an earlier copy of this request
    assert replay is not None, "a receipt insert conflicted with no receipt"
    return replay


def _write_answer(
    session: Session,
    assessment: Row[Any],
    *,
    item_id: str,
    value: int,
    locale: str,
    actor: str,
    now: datetime,
    request_id: str,
    head: tuple[int, str] | None,
    connection: Connection,
) -> SavedAnswer | None:
    """The writes of one answer save; ``assessment`` is the questionnaire's row read under the
    lock, with the stored answer to ``item_id`` (and on SQLite the audit chain's ``head``). None,
    with nothing written, when the request id has a receipt already."""
    stored_id, stored_value = assessment.stored_answer_id, assessment.stored_value
    changed = stored_id is None or stored_value != value
    receipt = {
        "request_id": request_id,
        "kind": ReceiptKind.ANSWER.value,
        "participant_id": assessment.participant_id,
        "assessment_id": assessment.id,
        "item_id": item_id,
        "value": value,
        "outcome": (ReceiptOutcome.SAVED if changed else ReceiptOutcome.UNCHANGED).value,
        "recorded_at": now,
    }
    event: dict[str, Any] = {
        "actor": actor,
        "action": "answer.save",
        "entity_type": "assessment",
        "entity_id": assessment.id,
        "before": None if stored_id is None else {"value": stored_value},
        "after": {"item": item_id, "value": value, "locale": locale, "mode": assessment.mode, "request_id": request_id},
    }
    started = assessment.status == AssessmentStatus.IN_PROGRESS.value
    if changed and started and connection.dialect.name == "postgresql":
        return _write_answer_at_once(session, connection, receipt, event, stored_id=stored_id, locale=locale,
                                     actor=actor, now=now)
    # The receipt first: a duplicate request stops here, before it has changed anything.
    # Writes go through the session, whose audit guard notes the tables they change.
    added = _ADD_RECEIPT_ONCE.execute(session, receipt, connection=connection).first()
    if added is None:
        return None
    if not changed:
        return SavedAnswer(item_id, value, changed=False, request_id=request_id, saved_at=now)
    if stored_id is None:
        _ADD_ANSWER.execute(session, {
            "assessment_id": assessment.id, "item_id": item_id, "value": value, "locale": locale,
            "answered_at": now, "answered_by": actor,
        }, connection=connection)
    else:
        _CHANGE_ANSWER.execute(session, {
            "answer_id": stored_id, "new_value": value, "new_locale": locale, "new_at": now, "new_by": actor,
        }, connection=connection)
        _expire_loaded(session, Answer, stored_id)
    if not started:
        started_at = assessment.started_at or now
        session.execute(_MARK_STARTED, {"assessment_id": assessment.id, "new_started_at": started_at})
        _expire_loaded(session, Assessment, assessment.id)
    record_event(session, **event, head=head)
    return SavedAnswer(item_id, value, changed=True, request_id=request_id, saved_at=now)


def _write_answer_at_once(
    session: Session,
    connection: Connection,
    receipt: dict[str, Any],
    event: dict[str, Any],
    *,
    stored_id: int | None,
    locale: str,
    actor: str,
    now: datetime,
) -> SavedAnswer | None:
    """:func:`_write_answer`'s writes of a changed answer as one statement (PostgreSQL; see
    :func:`_saved_in_one_statement`). None, with nothing written, when the request id has a
    receipt."""
    statement = _SAVE_NEW_ANSWER_AT_ONCE if stored_id is None else _SAVE_CHANGED_ANSWER_AT_ONCE
    parameters = {**receipt, **event_parameters(**event), "locale": locale, "answered_at": now, "answered_by": actor}
    receipts, seq, digest = statement.execute(session, parameters, connection=connection).rows[0]
    if not receipts:
        return None
    if seq is None:  # the questionnaire's lock keeps the answer read under it: never expected
        raise RuntimeError(f"the answer {stored_id} to change was not found; nothing was saved")
    note_write(session, _ANSWER_TABLE.name, insert=stored_id is None)
    note_write(session, AuditEvent.__tablename__, insert=True)
    note_appended(session, seq, digest)
    if stored_id is not None:
        _expire_loaded(session, Answer, stored_id)
    return SavedAnswer(receipt["item_id"], receipt["value"], changed=True, request_id=receipt["request_id"],
                       saved_at=now)


def save_answer_at_once(
    connection: Connection,
    assessment: OpenAssessment,
    instrument: Instrument,
    *,
    item_id: str,
    value: object,
    stored_value: int | None,
    mode: str,
    locale: str,
    actor: str,
    grace: timedelta,
    now: datetime,
    request_id: str | None = None,
) -> SavedAnswer | None:
    """PostgreSQL: save a changed answer with one statement that is its own transaction, on a
    ``connection`` in autocommit mode, when the questionnaire and the stored answer are still
    what the caller read before (outside any transaction): in progress and taking answers at
    ``now``, in ``mode``, the item's stored answer ``stored_value`` (None: unanswered).

    The statement (:func:`_saved_in_one_statement` with :data:`_STILL_AS_READ`) locks the
    questionnaire and the stored answer, checks them, and writes the receipt, the answer and
    its audit event, or nothing. Against the save's usual path (``BEGIN``, the questionnaire
    under its lock, the writes, ``COMMIT``) it spares three round trips, and the audit chain's
    lock is held for one statement and its commit.

    None, with nothing written, whenever the usual path must decide: a value that is not a
    change, a questionnaire not started or changed since it was read, an answer changed since,
    a request id that has a receipt (its insert fails the statement), or an answer inserted
    meanwhile by another request (likewise). The caller then saves with :func:`record_answer`,
    which gives each case its answer. A refused value raises as there."""
    checked = validate_answer(instrument, item_id, value)
    if (stored_value == checked or assessment.status != AssessmentStatus.IN_PROGRESS.value
            or not accepts_answers(assessment, now, grace)):
        return None
    request_id = _checked_request_id(request_id)
    parameters: dict[str, Any] = {
        "request_id": request_id,
        "kind": ReceiptKind.ANSWER.value,
        "participant_id": assessment.participant_id,
        "assessment_id": assessment.id,
        "item_id": item_id,
        "value": checked,
        "outcome": ReceiptOutcome.SAVED.value,
        "recorded_at": now,
        "locale": locale,
        "answered_at": now,
        "answered_by": actor,
        "mode": mode,
        "now": now,
        "closed_after": now - grace,
        **event_parameters(
            actor=actor, action="answer.save", entity_type="assessment", entity_id=assessment.id,
            before=None if stored_value is None else {"value": stored_value},
            after={"item": item_id, "value": checked, "locale": locale, "mode": mode, "request_id": request_id},
        ),
    }
    if stored_value is None:
        statement = _SAVE_NEW_ANSWER_ALONE
    else:
        statement = _SAVE_CHANGED_ANSWER_ALONE
        parameters["stored_value"] = stored_value
    try:
        receipts, seq, _digest = statement.execute_alone(connection, parameters).rows[0]
    except IntegrityError:  # a receipt or an answer of another request came first: nothing was written
        return None
    if not receipts:
        return None
    if seq is None:  # the answer's row was locked and checked with the questionnaire: never expected
        raise RuntimeError(f"a receipt was written without the answer to {item_id}")
    return SavedAnswer(item_id, checked, changed=True, request_id=request_id, saved_at=now)


def _expire_loaded(session: Session, model: type[Answer] | type[Assessment], row_id: int) -> None:
    """A mapped object of a row just changed by a Core statement is read again when next used."""
    loaded = session.identity_map.get(session.identity_key(model, row_id))
    if loaded is not None:
        session.expire(loaded)


def answers_of(session: Session, assessment: Assessment) -> dict[str, int]:
    return dict(session.execute(_ANSWERS_OF, {"assessment_id": assessment.id}).tuples().all())


_ANSWER_VALUE = select(_ANSWER_TABLE.c.value).where(
    _ANSWER_TABLE.c.assessment_id == bindparam("assessment_id"), _ANSWER_TABLE.c.item_id == bindparam("item_id")
)


def answer_value(connection: Connection, assessment_id: int, item_id: str) -> int | None:
    """The stored answer to one item, read as a plain Core statement (the question page's
    read: it flushes nothing, so call it where no session holds an unsaved answer)."""
    value: int | None = connection.execute(
        _ANSWER_VALUE, {"assessment_id": assessment_id, "item_id": item_id}
    ).scalar_one_or_none()
    return value


@dataclass(frozen=True)
class Submission:
    assessment: Assessment
    replayed: bool
    scores: dict[str, float | None]


def _check_submission_receipt(receipt: StoredReceipt, *, participant_id: int, assessment_id: int | None) -> None:
    same = (
        receipt.kind == ReceiptKind.SUBMIT.value
        and receipt.participant_id == participant_id
        and receipt.assessment_id == assessment_id
    )
    if not same:
        raise ReusedRequestId(
            N_("Nothing was submitted because the page was out of date. Please reload the page and submit again.")
        )


def replayed_submission(
    session: Session, request_id: str, *, participant_id: int, assessment_id: int | None
) -> Assessment | None:
    """The assessment this submission request submitted before, else None.

    Checked first, so a retry (a double tap, a second tab, a re-posted form) gets the same
    result although the questionnaire no longer accepts anything. A request id that belongs
    to another write is a conflict.
    """
    receipt = find_receipt(session, request_id)
    if receipt is not None:
        _check_submission_receipt(receipt, participant_id=participant_id, assessment_id=assessment_id)
        return session.get(Assessment, receipt.assessment_id)
    # Submissions made before receipts were kept: the key is on the assessment.
    return session.scalars(
        select(Assessment).where(
            Assessment.participant_id == participant_id,
            Assessment.id == assessment_id,
            Assessment.submission_key == request_id,
        )
    ).one_or_none()


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
    """Submit, score and lock the assessment, at most once per submission key.

    The same key submitted again returns the same result without changing anything; a
    different key after submission is a conflict. Missing items are allowed (the scoring
    rules handle them). The key is recorded twice: on the assessment and as the request's
    receipt, both unique, in the same transaction as the scores.
    """
    now = now or utcnow()
    if not submission_key or len(submission_key) > REQUEST_ID_MAX_LENGTH:
        raise ValidationError(N_("The submission could not be verified. Please reload the page."), field="key")
    participant_id, assessment_id = assessment.participant_id, assessment.id
    assessment = lock_assessment(session, assessment_id)
    if assessment.status == AssessmentStatus.COMPLETED.value or not accepts_answers(assessment, now, grace):
        # Submitted, closed or not open yet: this may be a repetition of a request that
        # submitted it (or one whose key belongs to another write), told by its receipt.
        stored = find_receipt(session, submission_key)
        if stored is not None:
            _check_submission_receipt(stored, participant_id=participant_id, assessment_id=assessment_id)
            return Submission(assessment, replayed=True, scores={})
        if assessment.status != AssessmentStatus.COMPLETED.value:
            raise Conflict(N_("This questionnaire is closed and can no longer be submitted."))
        if assessment.submission_key == submission_key:  # submitted before receipts were kept
            return Submission(assessment, replayed=True, scores={})
        raise Conflict(N_("This questionnaire has already been submitted."))
    # A first submission of its key, unless a copy of this request (or another write using its
    # key) was committed since the page's check: the receipt's insert tells.
    submission = _write_submission(
        session, assessment, instrument, submission_key=submission_key, actor=actor, base_url=base_url, now=now
    )
    if submission is not None:
        return submission
    # A copy of this request committed its receipt meanwhile (on PostgreSQL the insert waited
    # for it): nothing was written here, and its result is this one's.
    stored = find_receipt(session, submission_key)
    assert stored is not None, "a receipt insert conflicted with no receipt"
    _check_submission_receipt(stored, participant_id=participant_id, assessment_id=assessment_id)
    return Submission(lock_assessment(session, assessment_id), replayed=True, scores={})


def _write_submission(
    session: Session,
    assessment: Assessment,
    instrument: Instrument,
    *,
    submission_key: str,
    actor: str,
    base_url: str,
    now: datetime,
) -> Submission | None:
    """The writes of a submission, the receipt first: None, with nothing written, when the
    submission key has a receipt already (no savepoint needed, as for an answer save)."""
    added = _ADD_RECEIPT_ONCE.execute(session, {
        "request_id": submission_key,
        "kind": ReceiptKind.SUBMIT.value,
        "participant_id": assessment.participant_id,
        "assessment_id": assessment.id,
        "item_id": None,
        "value": None,
        "outcome": ReceiptOutcome.SUBMITTED.value,
        "recorded_at": now,
    }).first()
    if added is None:
        return None
    answers = answers_of(session, assessment)
    assessment.status = AssessmentStatus.COMPLETED.value
    assessment.submitted_at = now
    assessment.submission_key = submission_key
    assessment.started_at = assessment.started_at or now
    session.flush()
    scores = store_scores(session, assessment, instrument, answers=answers, first=True)
    evaluate_submission(session, assessment, instrument, scores, base_url=base_url)
    record_event(
        session,
        actor=actor,
        action="assessment.submit",
        entity_type="assessment",
        entity_id=assessment.id,
        after={
            "items_answered": len(answers),
            "items_total": len(instrument.items),
            "mode": assessment.mode,
            "locale": assessment.locale,
        },
    )
    return Submission(assessment, replayed=False, scores=scores)
