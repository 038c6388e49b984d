"""Reminding participants of their questionnaires by email and SMS.

Planning: each answerable assessment of an active participant gets one reminder row per
channel the participant has contact details for (email, SMS) and per kind the study's plan
asks for (``window_open``, ``before_close``), due outside the participant's local quiet
hours. The rows are unique per assessment, channel and kind, so planning again changes
nothing; a reminder cancelled because its window was moved is planned again for the new
window.

Sending is exactly-once across several workers and crashes:

1. a worker claims ONE due reminder with ``SELECT ... FOR UPDATE SKIP LOCKED`` (other
   workers skip it; on SQLite, whose writers are serialised, the session must begin its
   transactions with ``BEGIN IMMEDIATE`` like every CLI session does);
2. it records the attempt (status ``sending``) and issues the personal link the message
   carries, and COMMITS, before anything is sent;
3. it sends, then records ``sent`` and commits.

A crash between 2 and 3 leaves the row in ``sending``: after ``STALE_SENDING`` it is marked
failed ("interrupted; delivery unknown") and never sent again, because the patient may
already have the message. A sender error puts the reminder back to ``pending`` with
exponential back-off (2, 4, 8, ... minutes) until ``MAX_ATTEMPTS``.

Messages are neutral (no study name, no timepoint, nothing about health), in the
participant's language. Logs and stored errors never carry addresses, numbers, tokens or
message text.

Planning and ``cancel_reminders`` only flush, like every service. ``send_due_reminders`` is
the exception: it commits after each step of each reminder (and commits anything the
caller left pending first), because a message that went out must never be forgotten.
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from gettext import NullTranslations
from pathlib import Path
from typing import Any

from babel.support import Translations
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, selectinload

from pro_app.db.models import Assessment, Participant, Reminder, Study
from pro_app.db.types import utcnow
from pro_app.domain.errors import N_, ValidationError
from pro_app.domain.reminders import (
    BEFORE_CLOSE,
    WINDOW_OPEN,
    ReminderPlan,
    outside_quiet_hours,
    parse_hhmm,
    reminder_times,
)
from pro_app.domain.states import Channel, ParticipantStatus, ReminderStatus
from pro_app.services.access import issue_link
from pro_app.services.mailer import MailSender
from pro_app.services.questionnaire import ANSWERABLE, accepts_answers
from pro_app.services.sms import SmsError, SmsSender

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
#: A reminder still "sending" this long after its attempt was recorded belongs to a worker
#: that died mid-send (SMTP and gateway time-outs are far shorter).
STALE_SENDING = timedelta(minutes=10)
#: Reminders due up to this long ago are still planned (the tick runs every minute).
PLAN_TOLERANCE = timedelta(minutes=15)
INTERRUPTED = "interrupted; delivery unknown"
ACTOR = "system"
TRANSLATIONS_DIR = Path(__file__).resolve().parents[2] / "translations"
PATIENT_LINK_PATH = "/p/"
DEFAULT_QUIET_HOURS = (time(21, 0), time(8, 0))

# The words of the messages. Nothing here may hint at an illness, a treatment or a study.
SUBJECT = N_("Your questionnaire")
EMAIL_FOOTER = N_("This message was sent automatically. Please do not reply to it.")
TEXTS: dict[tuple[str, str], str] = {
    (Channel.EMAIL.value, WINDOW_OPEN): N_(
        "A short questionnaire is waiting for you. Please open your personal link: %(link)s"
    ),
    (Channel.EMAIL.value, BEFORE_CLOSE): N_(
        "Your questionnaire closes soon. If you have not answered it yet, please open your personal link: %(link)s"
    ),
    (Channel.SMS.value, WINDOW_OPEN): N_("A short questionnaire is waiting for you: %(link)s"),
    (Channel.SMS.value, BEFORE_CLOSE): N_("Your questionnaire closes soon. Your personal link: %(link)s"),
}


@dataclass(frozen=True)
class ReminderReport:
    sent: int
    retrying: int
    failed: int
    cancelled: int
    interrupted: int


@dataclass(frozen=True)
class ReminderMessage:
    subject: str
    body: str


# -- planning -------------------------------------------------------------------------------


def reminder_plan(study: Study) -> ReminderPlan:
    """The study's reminder settings. Quiet hours that cannot be read (the admin form
    validates them) fall back to the documented 21:00-08:00 rather than stopping every
    reminder or waking patients at night."""
    try:
        quiet_start, quiet_end = parse_hhmm(study.quiet_hours_start), parse_hhmm(study.quiet_hours_end)
    except ValidationError:
        logger.warning("study %s has unreadable quiet hours; using 21:00-08:00", study.id)
        quiet_start, quiet_end = DEFAULT_QUIET_HOURS
    return ReminderPlan(
        on_open=study.remind_on_open,
        hours_before_close=study.remind_hours_before_close,
        quiet_start=quiet_start,
        quiet_end=quiet_end,
    )


def channels_of(participant: Participant) -> list[str]:
    """The channels a participant can be reached on: email and/or SMS."""
    channels = []
    if participant.email:
        channels.append(Channel.EMAIL.value)
    if participant.phone:
        channels.append(Channel.SMS.value)
    return channels


def plan_reminders(session: Session, assessment: Assessment, *, now: datetime) -> int:
    """Create the missing reminders of one assessment; returns how many were planned."""
    existing = session.scalars(select(Reminder).where(Reminder.assessment_id == assessment.id)).all()
    return _plan(session, assessment, {(r.channel, r.kind): r for r in existing}, now)


def plan_upcoming_reminders(session: Session, *, now: datetime, horizon: timedelta = timedelta(days=2)) -> int:
    """Plan reminders for every answerable assessment whose window opens within ``horizon``
    and has not closed (for the background tick; cheap to repeat every minute)."""
    assessments = session.scalars(
        select(Assessment)
        .join(Assessment.participant)
        .where(
            Participant.status == ParticipantStatus.ACTIVE.value,
            or_(Participant.email.is_not(None), Participant.phone.is_not(None)),
            Assessment.status.in_(ANSWERABLE),
            Assessment.window_closes_at > now,
            Assessment.window_opens_at <= now + horizon,
        )
        .options(selectinload(Assessment.participant).selectinload(Participant.study))
        .order_by(Assessment.id)
    ).all()
    existing: dict[int, dict[tuple[str, str], Reminder]] = {}
    for chunk in _chunks([a.id for a in assessments], 500):
        for reminder in session.scalars(select(Reminder).where(Reminder.assessment_id.in_(chunk))):
            existing.setdefault(reminder.assessment_id, {})[(reminder.channel, reminder.kind)] = reminder
    return sum(_plan(session, a, existing.get(a.id, {}), now) for a in assessments)


def _chunks(values: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _plan(session: Session, assessment: Assessment, existing: dict[tuple[str, str], Reminder], now: datetime) -> int:
    participant = assessment.participant
    if (
        participant.status != ParticipantStatus.ACTIVE.value
        or assessment.status not in ANSWERABLE
        or assessment.window_closes_at <= now
    ):
        return 0
    channels = channels_of(participant)
    if not channels:
        return 0
    times = [
        (kind, due)
        for kind, due in reminder_times(
            assessment.window_opens_at, assessment.window_closes_at, reminder_plan(participant.study),
            participant.timezone,
        )
        if due >= now - PLAN_TOLERANCE
    ]
    planned = 0
    for channel in channels:
        for kind, due in times:
            row = existing.get((channel, kind))
            if row is None:
                planned += _insert_once(session, assessment_id=assessment.id, channel=channel, kind=kind, due=due)
            elif row.status == ReminderStatus.CANCELLED.value:
                planned += _plan_again(session, row, due)
    return planned


def _insert_once(session: Session, *, assessment_id: int, channel: str, kind: str, due: datetime) -> int:
    """Insert unless another planner already did (``ON CONFLICT DO NOTHING``)."""
    values: dict[str, Any] = {
        "assessment_id": assessment_id, "channel": channel, "kind": kind, "due_at": due, "next_attempt_at": due,
        "status": ReminderStatus.PENDING.value, "attempts": 0,
    }
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        statement: Any = pg_insert(Reminder).values(**values).on_conflict_do_nothing(
            index_elements=["assessment_id", "channel", "kind"]
        )
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        statement = sqlite_insert(Reminder).values(**values).on_conflict_do_nothing(
            index_elements=["assessment_id", "channel", "kind"]
        )
    else:  # pragma: no cover - the product runs on SQLite and PostgreSQL only
        session.add(Reminder(**values))
        session.flush()
        return 1
    # RETURNING tells reliably whether a row went in (rowcount is not reported by every driver).
    return 0 if session.execute(statement.returning(Reminder.id)).first() is None else 1


def _plan_again(session: Session, row: Reminder, due: datetime) -> int:
    """A cancelled reminder of a window that moved (or whose contact came back) is reused.

    The condition on the status makes this safe against a concurrent worker: a row that has
    meanwhile been sent is never turned back into a pending one.
    """
    result = session.execute(
        update(Reminder)
        .where(Reminder.id == row.id, Reminder.status == ReminderStatus.CANCELLED.value)
        .values(
            status=ReminderStatus.PENDING.value, due_at=due, next_attempt_at=due, attempts=0, attempted_at=None,
            sent_at=None, last_error=None,
        )
        .execution_options(synchronize_session="fetch")
    )
    return int(getattr(result, "rowcount", 0) or 0)


def cancel_reminders(session: Session, assessment_ids: Iterable[int], reason: str) -> int:
    """Cancel the pending reminders of these assessments; ``reason`` is kept in ``last_error``
    (write it without personal data). Returns how many were cancelled."""
    ids = list(assessment_ids)
    cancelled = 0
    for chunk in _chunks(ids, 500):
        result = session.execute(
            update(Reminder)
            .where(Reminder.assessment_id.in_(chunk), Reminder.status == ReminderStatus.PENDING.value)
            .values(status=ReminderStatus.CANCELLED.value, last_error=reason[:500])
            .execution_options(synchronize_session="fetch")
        )
        cancelled += int(getattr(result, "rowcount", 0) or 0)
    return cancelled


# -- messages -------------------------------------------------------------------------------


@lru_cache(maxsize=32)
def _translations(locale: str) -> NullTranslations:
    return Translations.load(str(TRANSLATIONS_DIR), [locale])


def _translate(locale: str, msgid: str, **params: str) -> str:
    translated = _translations(locale).gettext(msgid)
    try:
        return translated % params if params else translated
    except (KeyError, ValueError, TypeError):  # a broken translation must not stop reminders
        logger.warning("translation of a reminder text is broken for locale %s", locale)
        return msgid % params if params else msgid


def compose_message(*, channel: str, kind: str, locale: str, link: str) -> ReminderMessage:
    """The subject (email only) and text of a reminder, in the participant's language."""
    body = _translate(locale, TEXTS[(channel, kind)], link=link)
    if channel == Channel.EMAIL.value:
        body = f"{body}\n\n{_translate(locale, EMAIL_FOOTER)}\n"
    return ReminderMessage(subject=_translate(locale, SUBJECT), body=body)


def personal_link(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}{PATIENT_LINK_PATH}{token}"


# -- sending --------------------------------------------------------------------------------


def send_due_reminders(
    session: Session,
    *,
    email: MailSender,
    sms: SmsSender,
    now: datetime | None = None,
    base_url: str,
    link_days: int,
    batch: int = 100,
) -> ReminderReport:
    """Send the reminders that are due, at most ``batch`` of them; commits after each one."""
    now = now or utcnow()
    interrupted = _fail_interrupted(session, now, batch)
    counts = {"sent": 0, "retrying": 0, "failed": 0, "cancelled": 0, "postponed": 0}
    handled = 0
    while handled < batch:
        reminder = _claim_next(session, now)
        if reminder is None:
            break
        outcome = _process(session, reminder, email=email, sms=sms, now=now, base_url=base_url, link_days=link_days)
        counts[outcome] += 1
        handled += 1
    session.rollback()  # end the last (read-only) transaction
    report = ReminderReport(
        sent=counts["sent"], retrying=counts["retrying"], failed=counts["failed"], cancelled=counts["cancelled"],
        interrupted=interrupted,
    )
    if handled or interrupted:
        logger.info(
            "reminders: %s sent, %s to retry, %s failed, %s cancelled, %s postponed, %s interrupted",
            report.sent, report.retrying, report.failed, report.cancelled, counts["postponed"], interrupted,
        )
    return report


def _fail_interrupted(session: Session, now: datetime, batch: int) -> int:
    """Reminders left in 'sending' by a crashed worker: failed, never sent again."""
    stale = session.scalars(
        select(Reminder)
        .where(
            Reminder.status == ReminderStatus.SENDING.value,
            or_(Reminder.attempted_at.is_(None), Reminder.attempted_at < now - STALE_SENDING),
        )
        .order_by(Reminder.id)
        .limit(batch)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    ).all()
    for reminder in stale:
        reminder.status = ReminderStatus.FAILED.value
        reminder.last_error = INTERRUPTED
        logger.warning("reminder %s was interrupted while sending; it is not sent again", reminder.id)
    session.commit()
    return len(stale)


def _claim_next(session: Session, now: datetime) -> Reminder | None:
    return session.scalars(
        select(Reminder)
        .where(
            Reminder.status == ReminderStatus.PENDING.value,
            or_(
                Reminder.next_attempt_at <= now,
                and_(Reminder.next_attempt_at.is_(None), Reminder.due_at <= now),
            ),
        )
        .order_by(Reminder.next_attempt_at, Reminder.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    ).first()


def _cancel_reason(reminder: Reminder, assessment: Assessment, participant: Participant, now: datetime) -> str | None:
    if participant.status != ParticipantStatus.ACTIVE.value:
        return "participant not active"
    if assessment.status not in ANSWERABLE:
        return f"questionnaire {assessment.status}"
    if now >= assessment.window_opens_at and not accepts_answers(assessment, now, timedelta(0)):
        return "window closed"
    if reminder.channel not in channels_of(participant):
        return f"no contact details for {reminder.channel}"
    return None


def _process(
    session: Session,
    reminder: Reminder,
    *,
    email: MailSender,
    sms: SmsSender,
    now: datetime,
    base_url: str,
    link_days: int,
) -> str:
    assessment = reminder.assessment
    participant = assessment.participant
    reason = _cancel_reason(reminder, assessment, participant, now)
    if reason is not None:
        reminder.status = ReminderStatus.CANCELLED.value
        reminder.last_error = reason
        session.commit()
        return "cancelled"
    plan = reminder_plan(participant.study)
    # Not yet: the window was moved later, or the worker is catching up during quiet hours.
    allowed = outside_quiet_hours(max(now, assessment.window_opens_at), participant.timezone, plan.quiet_start,
                                  plan.quiet_end)
    if allowed > now:
        reminder.next_attempt_at = allowed
        session.commit()
        return "postponed"

    # Record the attempt and create the link BEFORE sending, and commit both.
    reminder.status = ReminderStatus.SENDING.value
    reminder.attempts += 1
    reminder.attempted_at = now
    attempts, reminder_id, channel = reminder.attempts, reminder.id, reminder.channel
    issued = issue_link(
        session, participant, actor=ACTOR, valid_days=link_days, now=now, replace_existing=False,
        expires_at=min(assessment.window_closes_at, now + timedelta(days=link_days)),
    )
    message = compose_message(
        channel=channel, kind=reminder.kind, locale=participant.locale, link=personal_link(base_url, issued.token)
    )
    recipient = (participant.email if channel == Channel.EMAIL.value else participant.phone) or ""
    session.commit()

    try:
        if channel == Channel.EMAIL.value:
            email.send(recipient=recipient, subject=message.subject, body=message.body)
        else:
            sms.send(to=recipient, text=message.body)
    except Exception as error:  # any failure of the sender: the message was not handed over
        description = describe_error(error)
        reminder.last_error = description
        if attempts >= MAX_ATTEMPTS:
            reminder.status = ReminderStatus.FAILED.value
            outcome = "failed"
        else:
            reminder.status = ReminderStatus.PENDING.value
            reminder.next_attempt_at = now + timedelta(minutes=2 ** attempts)
            outcome = "retrying"
        session.commit()
        logger.warning("reminder %s attempt %s failed (%s): %s", reminder_id, attempts, outcome, description)
        return outcome
    reminder.status = ReminderStatus.SENT.value
    reminder.sent_at = now
    session.commit()
    return "sent"


def describe_error(error: BaseException) -> str:
    """What went wrong, without the recipient (SMTP refusals quote the address) or the text."""
    name = type(error).__name__
    if isinstance(error, SmsError):
        return f"{name}: {error}"[:500]
    if isinstance(error, smtplib.SMTPResponseException):
        return f"{name}: SMTP {error.smtp_code}"
    if isinstance(error, smtplib.SMTPException):
        return name
    if isinstance(error, OSError) and error.strerror:
        return f"{name}: {error.strerror}"[:500]
    return name
