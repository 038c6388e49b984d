"""Reminders by email and SMS, through a real SMTP server and a real HTTP SMS gateway.

Checks the clinical-trial promises: every due reminder reaches the patient exactly once
(even with two workers, failures and crashes), in the patient's language, outside their
local quiet hours, with a personal link that opens the questionnaire, and without any
health information, contact details or tokens in texts, logs or stored errors.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import re
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from flask.testing import FlaskClient
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from pro_app.db.engine import make_engine, make_session_factory, writer_engine
from pro_app.db.migrate import upgrade
from pro_app.db.models import AccessLink, Assessment, Participant, Reminder, Study
from pro_app.db.types import utcnow
from pro_app.domain.states import ParticipantStatus
from pro_app.services.access import find_link, link_is_usable
from pro_app.services.mailer import SmtpSender, SmtpSettings
from pro_app.services.participants import enrol_participant, withdraw_participant
from pro_app.services.reminders import (
    INTERRUPTED,
    MAX_ATTEMPTS,
    TEXTS,
    cancel_reminders,
    compose_message,
    plan_reminders,
    plan_upcoming_reminders,
    reminder_plan,
    send_due_reminders,
)
from pro_app.services.sms import (
    ConsoleSmsSender,
    DisabledSmsSender,
    HttpGatewaySmsSender,
    SmsError,
    sms_sender_from_config,
)
from tests.factories import link_for, make_study

BASE_URL = "https://pro.hospital.example"
LINK = re.compile(re.escape(BASE_URL) + r"/p/([A-Za-z0-9_-]+)")
BERLIN = ZoneInfo("Europe/Berlin")
STUDY_NAME = "CAR-T HER2 dose escalation"
TIMEPOINT_LABEL = "Day 7 after infusion"
HEALTH_WORDS = ("car-t", "her2", "infusion", "dose", "cancer", "tumour", "oncolog", "qlq", "eortc", "day 7", "pain")


# -- real servers -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]  # noqa: N802
        await asyncio.sleep(0.005)  # a little latency, so parallel workers really overlap
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        with self._lock:
            self.messages.append((list(envelope.rcpt_tos), parsed))
        return "250 Message accepted"

    def bodies(self) -> list[str]:
        return [str(message.get_content()) for _, message in self.messages]


Smtp = tuple[Inbox, SmtpSender]


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    inbox = Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, SmtpSender(SmtpSettings(host="127.0.0.1", port=port, sender="pro-app@hospital.example"))
    finally:
        controller.stop()


@dataclass
class Gateway:
    """A local SMS gateway: records every request; answers with queued statuses, else 200."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, times: int, status: int = 500) -> None:
        self.statuses.extend([status] * times)

    def delivered(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["status"] == 200]


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    state = Gateway()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                status = state.statuses.pop(0) if state.statuses else 200
                state.requests.append({
                    "path": self.path, "status": status, "authorization": self.headers.get("Authorization"),
                    "content_type": self.headers.get("Content-Type"), "json": json.loads(body.decode("utf-8")),
                })
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "/elsewhere")
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"ok": true}')

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/send"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


# -- data ---------------------------------------------------------------------------------------


def _study(session: Session, code: str = "REM-1", quiet: tuple[str, str] = ("00:00", "00:00")) -> Study:
    """Quiet hours are switched off unless a test is about them: sending tests use the real
    clock (the personal link must open the questionnaire now)."""
    study = make_study(session, code, template=None)
    study.name = STUDY_NAME
    study.quiet_hours_start, study.quiet_hours_end = quiet
    session.flush()
    return study


def _participant(
    session: Session,
    study: Study,
    code: str = "P-001",
    *,
    email: str | None = "patient.one@example.org",
    phone: str | None = "+4915112345678",
    locale: str = "en",
    timezone: str = "Europe/Berlin",
) -> Participant:
    return enrol_participant(
        session, study=study, site=study.sites[0], arm=study.arms[0], subject_code=code, locale=locale,
        timezone=timezone, email=email, phone=phone, actor="test",
    )


def _assessment(
    session: Session, participant: Participant, opens: datetime, closes: datetime, status: str = "open",
    occurrence: int = 0,
) -> Assessment:
    assessment = Assessment(
        participant=participant, timepoint_code="d7", timepoint_label=TIMEPOINT_LABEL, occurrence=occurrence,
        instrument_code="qlq_c30", instrument_version="3.0", planned_at=opens, window_opens_at=opens,
        window_closes_at=closes, status=status,
    )
    session.add(assessment)
    session.flush()
    return assessment


def _open_now(session: Session, participant: Participant, now: datetime) -> Assessment:
    return _assessment(session, participant, now - timedelta(minutes=5), now + timedelta(days=3))


def _reminders(session: Session, assessment: Assessment | None = None) -> list[Reminder]:
    session.expire_all()
    query = select(Reminder).order_by(Reminder.id)
    if assessment is not None:
        query = query.where(Reminder.assessment_id == assessment.id)
    return list(session.scalars(query))


def _send(session: Session, smtp_sender: Any, sms_sender: Any, now: datetime, **kwargs: Any) -> Any:
    return send_due_reminders(
        session, email=smtp_sender, sms=sms_sender, now=now, base_url=BASE_URL, link_days=30, **kwargs
    )


def _sms(gateway: Gateway) -> HttpGatewaySmsSender:
    return HttpGatewaySmsSender(gateway.url, timeout=5)


# -- planning -----------------------------------------------------------------------------------


def test_planning_creates_one_reminder_per_channel_and_kind(db_session: Session) -> None:
    study = _study(db_session)
    now = utcnow()
    both = _participant(db_session, study, "P-001")
    email_only = _participant(db_session, study, "P-002", email="two@example.org", phone=None)
    sms_only = _participant(db_session, study, "P-003", email=None, phone="+4915100000003")
    neither = _participant(db_session, study, "P-004", email=None, phone=None)
    opens, closes = now + timedelta(days=1), now + timedelta(days=4)

    def planned(participant: Participant) -> set[tuple[str, str]]:
        assessment = _assessment(db_session, participant, opens, closes, status="scheduled")
        plan_reminders(db_session, assessment, now=now)
        return {(r.channel, r.kind) for r in _reminders(db_session, assessment)}

    assert planned(both) == {("email", "window_open"), ("email", "before_close"), ("sms", "window_open"),
                             ("sms", "before_close")}
    assert planned(email_only) == {("email", "window_open"), ("email", "before_close")}
    assert planned(sms_only) == {("sms", "window_open"), ("sms", "before_close")}
    assert planned(neither) == set()
    for reminder in _reminders(db_session):
        assert reminder.status == "pending" and reminder.attempts == 0
        assert reminder.next_attempt_at == reminder.due_at
        expected = opens if reminder.kind == "window_open" else closes - timedelta(hours=24)
        assert reminder.due_at == expected


def test_planning_again_changes_nothing(db_session: Session) -> None:
    study = _study(db_session)
    now = utcnow()
    assessment = _assessment(db_session, _participant(db_session, study), now + timedelta(days=1),
                             now + timedelta(days=4), status="scheduled")
    assert plan_reminders(db_session, assessment, now=now) == 4
    first = [(r.id, r.due_at) for r in _reminders(db_session)]
    assert plan_reminders(db_session, assessment, now=now) == 0
    assert plan_upcoming_reminders(db_session, now=now) == 0
    assert [(r.id, r.due_at) for r in _reminders(db_session)] == first


def test_no_reminders_for_withdrawn_participants_or_closed_questionnaires(db_session: Session) -> None:
    study = _study(db_session)
    now = utcnow()
    window = (now + timedelta(days=1), now + timedelta(days=4))
    withdrawn = _participant(db_session, study, "P-001")
    withdrawn_assessment = _assessment(db_session, withdrawn, *window, status="scheduled")
    withdraw_participant(db_session, withdrawn, reason="Consent withdrawn", actor="test")
    assert plan_reminders(db_session, withdrawn_assessment, now=now) == 0

    active = _participant(db_session, study, "P-002")
    completed = _assessment(db_session, active, *window, status="completed", occurrence=1)
    missed = _assessment(db_session, active, now - timedelta(days=9), now - timedelta(days=6), status="missed",
                         occurrence=2)
    long_past = _assessment(db_session, active, now - timedelta(days=9), now - timedelta(days=6), status="open",
                            occurrence=3)
    for assessment in (completed, missed, long_past):
        assert plan_reminders(db_session, assessment, now=now) == 0
    assert _reminders(db_session) == []


def test_reminders_already_past_are_not_planned(db_session: Session) -> None:
    study = _study(db_session)
    now = utcnow()
    participant = _participant(db_session, study, phone=None)
    # Opened two days ago and closing in two days: the "open" reminder is history.
    assessment = _assessment(db_session, participant, now - timedelta(days=2), now + timedelta(days=2))
    assert plan_reminders(db_session, assessment, now=now) == 1
    assert [r.kind for r in _reminders(db_session)] == ["before_close"]
    # Opened a few minutes ago: still planned (the tick may run a little late).
    recent = _assessment(db_session, participant, now - timedelta(minutes=3), now + timedelta(days=2), occurrence=1)
    assert plan_reminders(db_session, recent, now=now) == 2


def test_upcoming_planning_covers_the_next_windows_only(db_session: Session) -> None:
    study = _study(db_session)
    now = utcnow()
    participant = _participant(db_session, study, phone=None)
    soon = _assessment(db_session, participant, now + timedelta(hours=12), now + timedelta(days=3), "scheduled")
    later = _assessment(db_session, participant, now + timedelta(days=30), now + timedelta(days=33), "scheduled", 1)
    assert plan_upcoming_reminders(db_session, now=now) == 2
    assert {r.assessment_id for r in _reminders(db_session)} == {soon.id}
    assert plan_upcoming_reminders(db_session, now=now + timedelta(days=29)) == 2
    assert {r.assessment_id for r in _reminders(db_session)} == {soon.id, later.id}


def test_quiet_hours_are_respected_by_due_times(db_session: Session) -> None:
    study = _study(db_session, quiet=("21:00", "08:00"))
    berlin = _participant(db_session, study, "P-001")
    shanghai = _participant(db_session, study, "P-002", timezone="Asia/Shanghai", email="p2@example.org")
    now = datetime(2031, 6, 1, 12, 0, tzinfo=timezone.utc)
    for participant in (berlin, shanghai):
        zone = ZoneInfo(participant.timezone)
        # A three-day window from local midnight to local midnight, as day windows are.
        opens = datetime(2031, 6, 10, tzinfo=zone).astimezone(timezone.utc)
        closes = datetime(2031, 6, 13, tzinfo=zone).astimezone(timezone.utc)
        assessment = _assessment(db_session, participant, opens, closes, status="scheduled")
        assert plan_reminders(db_session, assessment, now=now) == 4
        for reminder in _reminders(db_session, assessment):
            due_local = reminder.due_at.astimezone(zone)
            expected_day = 10 if reminder.kind == "window_open" else 12
            assert (due_local.day, due_local.hour, due_local.minute) == (expected_day, 8, 0)


def test_sending_waits_for_the_end_of_quiet_hours(db_session: Session, smtp: Smtp, gateway: Gateway) -> None:
    inbox, smtp_sender = smtp
    study = _study(db_session, quiet=("21:00", "08:00"))
    participant = _participant(db_session, study)
    # Due at 20:00 in Berlin, but the worker only gets to it at 23:00 (after an outage).
    due = datetime(2031, 6, 10, 20, 0, tzinfo=BERLIN).astimezone(timezone.utc)
    assessment = _assessment(db_session, participant, due, due + timedelta(days=3))
    assert plan_reminders(db_session, assessment, now=due) == 4
    late = datetime(2031, 6, 10, 23, 0, tzinfo=BERLIN).astimezone(timezone.utc)
    report = _send(db_session, smtp_sender, _sms(gateway), late)
    assert report.sent == 0 and inbox.messages == [] and gateway.requests == []
    morning = datetime(2031, 6, 11, 8, 0, tzinfo=BERLIN).astimezone(timezone.utc)
    due_now = [r for r in _reminders(db_session) if r.kind == "window_open"]
    assert {r.next_attempt_at for r in due_now} == {morning} and {r.status for r in due_now} == {"pending"}
    report = _send(db_session, smtp_sender, _sms(gateway), morning)
    assert report.sent == 2 and len(inbox.messages) == 1 and len(gateway.requests) == 1


# -- sending ----------------------------------------------------------------------------------


def test_email_and_sms_carry_a_personal_link_that_opens_the_questionnaire(
    db_session: Session, client: FlaskClient, smtp: Smtp, gateway: Gateway
) -> None:
    inbox, smtp_sender = smtp
    study = _study(db_session)
    participant = _participant(db_session, study)
    printed = link_for(db_session, participant)  # the letter handed out at enrolment
    now = utcnow()
    assessment = _open_now(db_session, participant, now)
    plan_reminders(db_session, assessment, now=now)
    db_session.commit()

    report = _send(db_session, smtp_sender, _sms(gateway), now)
    assert (report.sent, report.retrying, report.failed, report.cancelled, report.interrupted) == (2, 0, 0, 0, 0)

    assert len(inbox.messages) == 1
    recipients, message = inbox.messages[0]
    assert recipients == ["patient.one@example.org"]
    assert message["Subject"] == "Your questionnaire"
    email_body = inbox.bodies()[0]
    assert email_body.startswith("A short questionnaire is waiting for you. Please open your personal link: ")
    assert len(gateway.requests) == 1
    sms = gateway.requests[0]
    assert sms["json"]["to"] == "+4915112345678"
    assert sms["json"]["text"].startswith("A short questionnaire is waiting for you: ")
    assert sms["content_type"].startswith("application/json") and sms["authorization"] is None

    matches = [LINK.search(email_body), LINK.search(sms["json"]["text"])]
    tokens = [match.group(1) for match in matches if match is not None]
    assert len(tokens) == 2 and tokens[0] != tokens[1], "each message has a link of its own"
    for token in tokens:
        link = find_link(db_session, token=token)
        assert link is not None and link.participant_id == participant.id
        assert link_is_usable(link) and link.expires_at == assessment.window_closes_at

    # The patient's own printed link keeps working: reminders add links, never replace them.
    links = db_session.scalars(select(AccessLink).where(AccessLink.participant_id == participant.id)).all()
    assert len(links) == 3 and all(link.revoked_at is None for link in links)
    printed_link = find_link(db_session, token=printed.token)
    assert printed_link is not None and link_is_usable(printed_link)

    opened = client.get(f"/p/{tokens[0]}")
    assert opened.status_code == 303
    page = client.get(opened.headers["Location"])
    assert page.status_code == 200 and 'action="/q/start"' in page.get_data(as_text=True)

    for reminder in _reminders(db_session):
        expected = "sent" if reminder.kind == "window_open" else "pending"
        assert reminder.status == expected
        if expected == "sent":
            assert reminder.attempts == 1 and reminder.sent_at == now and reminder.last_error is None


def test_message_is_in_the_participants_language(db_session: Session, smtp: Smtp, gateway: Gateway) -> None:
    inbox, smtp_sender = smtp
    study = _study(db_session)
    now = utcnow()
    spanish = _participant(db_session, study, "P-001", locale="es", email="uno@example.org", phone="+34600000001")
    plan_reminders(db_session, _open_now(db_session, spanish, now), now=now)
    _send(db_session, smtp_sender, _sms(gateway), now)

    english = compose_message(channel="email", kind="window_open", locale="en", link="LINK")
    english_sms = compose_message(channel="sms", kind="window_open", locale="en", link="LINK")
    email_body = inbox.bodies()[0]
    sms_text = gateway.requests[0]["json"]["text"]
    assert LINK.search(email_body) and LINK.search(sms_text)
    assert english.body.split("LINK")[0].strip() not in email_body, "the Spanish email is in English"
    assert english_sms.body.split("LINK")[0].strip() not in sms_text, "the Spanish SMS is in English"
    assert inbox.messages[0][1]["Subject"] != english.subject


@pytest.mark.parametrize("locale", ["en", "es", "zh_Hans", "ar"])
def test_no_health_information_in_any_message(locale: str) -> None:
    for channel, kind in TEXTS:
        message = compose_message(channel=channel, kind=kind, locale=locale, link=f"{BASE_URL}/p/TOKEN")
        assert f"{BASE_URL}/p/TOKEN" in message.body
        combined = f"{message.subject}\n{message.body}".lower()
        for word in HEALTH_WORDS + (STUDY_NAME.lower(), TIMEPOINT_LABEL.lower()):
            assert word not in combined, (locale, channel, kind, word)
    assert len(compose_message(channel="sms", kind="before_close", locale=locale, link="x" * 70).body) <= 160


def test_sent_messages_hold_no_study_or_timepoint(db_session: Session, smtp: Smtp, gateway: Gateway) -> None:
    inbox, smtp_sender = smtp
    study = _study(db_session)
    now = utcnow()
    participant = _participant(db_session, study)
    plan_reminders(db_session, _open_now(db_session, participant, now), now=now)
    _send(db_session, smtp_sender, _sms(gateway), now)
    texts = inbox.bodies() + [str(inbox.messages[0][1]["Subject"])] + [r["json"]["text"] for r in gateway.requests]
    for content in texts:
        for word in HEALTH_WORDS + (STUDY_NAME.lower(), TIMEPOINT_LABEL.lower(), participant.subject_code.lower()):
            assert word not in content.lower()


def test_before_close_message_says_it_closes_soon(db_session: Session, smtp: Smtp, gateway: Gateway) -> None:
    inbox, smtp_sender = smtp
    study = _study(db_session)
    now = utcnow()
    participant = _participant(db_session, study)
    # Opened two days ago, closing in a day: only "closes soon" (24 hours before) is left to send.
    assessment = _assessment(db_session, participant, now - timedelta(days=2), now + timedelta(hours=23, minutes=55))
    assert plan_reminders(db_session, assessment, now=now) == 2
    assert _send(db_session, smtp_sender, _sms(gateway), now).sent == 2
    assert inbox.bodies()[0].startswith("Your questionnaire closes soon.")
    assert gateway.requests[0]["json"]["text"].startswith("Your questionnaire closes soon.")


def test_retry_with_backoff_then_success(
    db_session: Session, smtp: Smtp, gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _, smtp_sender = smtp
    study = _study(db_session)
    participant = _participant(db_session, study, email=None, phone="+4915199999999")
    now = utcnow()
    assessment = _open_now(db_session, participant, now)
    plan_reminders(db_session, assessment, now=now)
    gateway.fail_next(2)

    first = _send(db_session, smtp_sender, _sms(gateway), now)
    assert (first.sent, first.retrying) == (0, 1)
    reminder = [r for r in _reminders(db_session) if r.kind == "window_open"][0]
    assert (reminder.status, reminder.attempts, reminder.next_attempt_at) == ("pending", 1, now + timedelta(minutes=2))
    assert reminder.last_error == "SmsError: the SMS gateway answered HTTP 500"

    early = _send(db_session, smtp_sender, _sms(gateway), now + timedelta(minutes=1))
    assert early.retrying == 0 and len(gateway.requests) == 1, "not retried before its time"
    second = _send(db_session, smtp_sender, _sms(gateway), now + timedelta(minutes=2))
    assert second.retrying == 1
    reminder = [r for r in _reminders(db_session) if r.kind == "window_open"][0]
    assert (reminder.attempts, reminder.next_attempt_at) == (2, now + timedelta(minutes=2 + 4))

    third = _send(db_session, smtp_sender, _sms(gateway), now + timedelta(minutes=6))
    assert third.sent == 1
    reminder = [r for r in _reminders(db_session) if r.kind == "window_open"][0]
    assert (reminder.status, reminder.attempts) == ("sent", 3)
    assert len(gateway.requests) == 3 and len(gateway.delivered()) == 1

    stored = " ".join(str(r.last_error) for r in _reminders(db_session))
    for secret in ["+4915199999999", gateway.requests[0]["json"]["text"], gateway.url]:
        assert secret not in stored
    for request in gateway.requests:
        token = LINK.search(request["json"]["text"])
        assert token is not None
        assert token.group(1) not in caplog.text and request["json"]["text"] not in caplog.text
    assert "+4915199999999" not in caplog.text and "attempt 1 failed" in caplog.text


def test_gives_up_after_five_attempts(db_session: Session, gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    study = _study(db_session)
    participant = _participant(db_session, study, email="nobody.listens@example.org", phone=None)
    now = utcnow()
    assessment = _open_now(db_session, participant, now)
    plan_reminders(db_session, assessment, now=now)
    unreachable = SmtpSender(SmtpSettings(host="127.0.0.1", port=_free_port(), timeout=2))
    reports = [_send(db_session, unreachable, _sms(gateway), now + timedelta(hours=attempt))
               for attempt in range(MAX_ATTEMPTS + 2)]
    assert [r.retrying for r in reports] == [1, 1, 1, 1, 0, 0, 0]
    assert [r.failed for r in reports] == [0, 0, 0, 0, 1, 0, 0]
    reminder = [r for r in _reminders(db_session) if r.kind == "window_open"][0]
    assert (reminder.status, reminder.attempts) == ("failed", MAX_ATTEMPTS)
    assert reminder.last_error is not None and reminder.last_error.startswith("ConnectionRefusedError")
    assert "nobody.listens" not in reminder.last_error and "nobody.listens" not in caplog.text


def test_cancelled_when_the_questionnaire_was_completed_meanwhile(
    db_session: Session, smtp: Smtp, gateway: Gateway
) -> None:
    inbox, smtp_sender = smtp
    study = _study(db_session)
    now = utcnow()
    completed = _open_now(db_session, _participant(db_session, study, "P-001"), now)
    withdrawn_participant = _participant(db_session, study, "P-002", email="p2@example.org", phone=None)
    withdrawn = _open_now(db_session, withdrawn_participant, now)
    closed_participant = _participant(db_session, study, "P-003", email="p3@example.org", phone=None)
    closed = _assessment(db_session, closed_participant, now - timedelta(minutes=10), now + timedelta(hours=1))
    for assessment in (completed, withdrawn, closed):
        plan_reminders(db_session, assessment, now=now - timedelta(minutes=1))

    completed.status = "completed"
    withdrawn_participant.status = ParticipantStatus.WITHDRAWN.value  # e.g. withdrawn on another server
    closed.window_closes_at = now - timedelta(minutes=1)  # the window closed before the tick ran
    db_session.commit()

    report = _send(db_session, smtp_sender, _sms(gateway), now)
    assert report.sent == 0 and report.cancelled == 4  # two channels for the first, one each after
    assert inbox.messages == [] and gateway.requests == []
    due = [r for r in _reminders(db_session) if r.due_at <= now]
    assert {r.status for r in due} == {"cancelled"} and all(r.attempts == 0 for r in due)
    assert {r.last_error for r in due} == {"questionnaire completed", "participant not active", "window closed"}
    assert db_session.scalar(select(AccessLink.id).where(AccessLink.participant_id == closed_participant.id)) is None


def test_cancel_helper_and_replanning_after_a_window_moved(db_session: Session) -> None:
    study = _study(db_session)
    now = utcnow()
    assessment = _assessment(db_session, _participant(db_session, study), now + timedelta(days=1),
                             now + timedelta(days=4), status="scheduled")
    plan_reminders(db_session, assessment, now=now)
    assert cancel_reminders(db_session, [assessment.id], "window moved") == 4
    assert {(r.status, r.last_error) for r in _reminders(db_session)} == {("cancelled", "window moved")}
    assert cancel_reminders(db_session, [assessment.id], "again") == 0
    # The infusion was postponed by a week: the next planning uses the new window.
    assessment.window_opens_at += timedelta(days=7)
    assessment.window_closes_at += timedelta(days=7)
    assert plan_reminders(db_session, assessment, now=now) == 4
    reminders = _reminders(db_session)
    assert {r.status for r in reminders} == {"pending"} and len(reminders) == 4
    assert {r.due_at for r in reminders if r.kind == "window_open"} == {assessment.window_opens_at}


def test_removed_contact_details_and_moved_windows_are_not_sent_to(
    db_session: Session, smtp: Smtp, gateway: Gateway
) -> None:
    inbox, smtp_sender = smtp
    study = _study(db_session)
    now = utcnow()
    participant = _participant(db_session, study)
    assessment = _open_now(db_session, participant, now)
    plan_reminders(db_session, assessment, now=now)
    participant.phone = None  # the patient asked not to get text messages any more
    db_session.commit()
    report = _send(db_session, smtp_sender, _sms(gateway), now)
    assert (report.sent, report.cancelled) == (1, 1) and gateway.requests == [] and len(inbox.messages) == 1
    sms = [r for r in _reminders(db_session) if r.channel == "sms" and r.kind == "window_open"][0]
    assert (sms.status, sms.last_error) == ("cancelled", "no contact details for sms")

    # A window moved later after its reminder was planned: the reminder waits for it.
    other = _participant(db_session, study, "P-002", email="p2@example.org", phone=None)
    moved = _open_now(db_session, other, now)
    plan_reminders(db_session, moved, now=now)
    moved.window_opens_at, moved.window_closes_at = now + timedelta(days=2), now + timedelta(days=5)
    db_session.commit()
    assert _send(db_session, smtp_sender, _sms(gateway), now).sent == 0
    waiting = [r for r in _reminders(db_session, moved) if r.kind == "window_open"][0]
    assert (waiting.status, waiting.attempts, waiting.next_attempt_at) == ("pending", 0, moved.window_opens_at)


def test_unreadable_quiet_hours_fall_back_to_the_night(db_session: Session) -> None:
    study = _study(db_session)
    study.quiet_hours_start = "25:00"
    plan = reminder_plan(study)
    assert (plan.quiet_start, plan.quiet_end) == (time(21, 0), time(8, 0))


def test_a_send_interrupted_by_a_crash_is_never_repeated(db_session: Session, smtp: Smtp, gateway: Gateway) -> None:
    inbox, smtp_sender = smtp
    study = _study(db_session)
    now = utcnow()
    assessment = _open_now(db_session, _participant(db_session, study), now)
    # One worker died 11 minutes ago after recording its attempt; another is sending right now.
    due = now - timedelta(minutes=20)
    crashed = Reminder(assessment_id=assessment.id, channel="email", kind="window_open", due_at=due,
                       next_attempt_at=due, status="sending", attempts=1, attempted_at=now - timedelta(minutes=11))
    busy = Reminder(assessment_id=assessment.id, channel="sms", kind="window_open", due_at=due,
                    next_attempt_at=due, status="sending", attempts=1, attempted_at=now - timedelta(minutes=1))
    db_session.add_all([crashed, busy])
    db_session.commit()

    report = _send(db_session, smtp_sender, _sms(gateway), now)
    assert (report.interrupted, report.sent, report.failed) == (1, 0, 0)
    by_channel = {r.channel: r for r in _reminders(db_session)}
    assert (by_channel["email"].status, by_channel["email"].last_error, by_channel["email"].attempts) == (
        "failed", INTERRUPTED, 1)
    assert by_channel["sms"].status == "sending", "a recent attempt is left to its worker"

    # The other worker never came back either: an hour later its attempt counts as lost too.
    again = _send(db_session, smtp_sender, _sms(gateway), now + timedelta(hours=1))
    assert (again.interrupted, again.sent) == (1, 0)
    assert _send(db_session, smtp_sender, _sms(gateway), now + timedelta(hours=2)).interrupted == 0
    assert inbox.messages == [] and gateway.requests == []
    by_channel = {r.channel: r for r in _reminders(db_session)}
    assert (by_channel["sms"].status, by_channel["sms"].last_error) == ("failed", INTERRUPTED)
    # Planning adds the window's other reminders but never brings an interrupted one back.
    assert plan_reminders(db_session, assessment, now=now) == 2
    assert {(r.kind, r.status) for r in _reminders(db_session)} == {("window_open", "failed"),
                                                                     ("before_close", "pending")}


def test_running_twice_sends_once(db_session: Session, smtp: Smtp, gateway: Gateway) -> None:
    inbox, smtp_sender = smtp
    study = _study(db_session)
    now = utcnow()
    participant = _participant(db_session, study)
    assessment = _open_now(db_session, participant, now)
    plan_reminders(db_session, assessment, now=now)
    plan_upcoming_reminders(db_session, now=now)
    assert _send(db_session, smtp_sender, _sms(gateway), now).sent == 2
    assert plan_reminders(db_session, assessment, now=now) == 0
    second = _send(db_session, smtp_sender, _sms(gateway), now + timedelta(minutes=5))
    assert (second.sent, second.retrying, second.cancelled, second.interrupted) == (0, 0, 0, 0)
    assert len(inbox.messages) == 1 and len(gateway.requests) == 1


def test_batch_limits_one_run(db_session: Session, smtp: Smtp, gateway: Gateway) -> None:
    inbox, smtp_sender = smtp
    study = _study(db_session)
    now = utcnow()
    for index in range(3):
        participant = _participant(db_session, study, f"P-00{index}", email=f"p{index}@example.org", phone=None)
        plan_reminders(db_session, _open_now(db_session, participant, now), now=now)
    assert _send(db_session, smtp_sender, _sms(gateway), now, batch=2).sent == 2
    assert _send(db_session, smtp_sender, _sms(gateway), now, batch=2).sent == 1
    assert len(inbox.messages) == 3


# -- two workers in parallel -------------------------------------------------------------------


@pytest.fixture
def parallel_database_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A database of its own for a test that must really commit.

    Everything else runs in a rolled-back transaction; this test's rows are committed, and
    the audit trail it writes cannot be deleted (it is append-only, enforced by triggers).
    So it gets a fresh database of the same kind, migrated to head and thrown away after:
    a new SQLite file, or a schema of its own in the PostgreSQL test database.
    """
    if make_url(database_url).get_backend_name() == "sqlite":
        url = f"sqlite:///{tmp_path / 'parallel.sqlite3'}"
        upgrade(url)
        yield url
        return
    schema = f"test_reminders_{uuid.uuid4().hex[:12]}"
    admin = make_engine(database_url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(database_url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )
    try:
        upgrade(url)
        yield url
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_two_workers_in_parallel_deliver_each_reminder_exactly_once(
    parallel_database_url: str, smtp: Smtp, gateway: Gateway
) -> None:
    inbox, smtp_sender = smtp
    now = utcnow()
    setup_engine = make_engine(parallel_database_url)
    with make_session_factory(writer_engine(setup_engine))() as session:
        study = _study(session, "PAR-1")
        for index in range(20):
            participant = _participant(session, study, f"P-{index:03d}", email=f"p{index}@example.org",
                                       phone=f"+49151000{index:05d}")
            assessment = _open_now(session, participant, now)
            for channel in ("email", "sms"):
                session.add(Reminder(assessment_id=assessment.id, channel=channel, kind="window_open",
                                     due_at=now - timedelta(minutes=1), next_attempt_at=now - timedelta(minutes=1)))
        session.commit()
    setup_engine.dispose()

    start = threading.Barrier(2)
    reports: list[Any] = []
    errors: list[BaseException] = []

    def worker() -> None:
        engine = make_engine(parallel_database_url)
        try:
            with make_session_factory(writer_engine(engine))() as session:
                start.wait()
                reports.append(_send(session, smtp_sender, _sms(gateway), now))
        except BaseException as error:  # reported below, in the test's own thread
            errors.append(error)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert len(reports) == 2

    assert sum(r.sent for r in reports) == 40
    assert all(r.sent > 0 for r in reports), "both workers took part"
    assert sum(r.retrying + r.failed + r.cancelled + r.interrupted for r in reports) == 0
    emails = Counter(rcpt for rcpts, _ in inbox.messages for rcpt in rcpts)
    texts = Counter(r["json"]["to"] for r in gateway.requests)
    assert len(emails) == 20 and set(emails.values()) == {1}
    assert len(texts) == 20 and set(texts.values()) == {1}

    check_engine = make_engine(parallel_database_url)
    with make_session_factory(check_engine)() as session:
        reminders = session.scalars(select(Reminder)).all()
        assert len(reminders) == 40
        assert {(r.status, r.attempts) for r in reminders} == {("sent", 1)}
        assert session.scalar(select(AccessLink.id).where(AccessLink.expires_at < now)) is None
        assert len(session.scalars(select(AccessLink)).all()) == 40
    check_engine.dispose()


# -- the SMS senders ----------------------------------------------------------------------------


def test_gateway_payload_is_json_escaped(gateway: Gateway) -> None:
    sender = HttpGatewaySmsSender(gateway.url)
    tricky = 'Say "hi"\\ ", "to": "+1" {text} {to}\nnew line ünïcødé 问卷 استبيان'
    sender.send(to="+4915100000001", text=tricky)
    assert gateway.requests[0]["json"] == {"to": "+4915100000001", "text": tricky}


def test_gateway_template_shapes_the_payload_and_basic_auth_is_sent(gateway: Gateway) -> None:
    template = '{"messages": [{"destination": "{to}", "content": "{text}", "channel": "sms"}], "from": "{from}"}'
    sender = HttpGatewaySmsSender(gateway.url, username="hospital", password="s3cret:pw", payload_template=template)
    sender.send(to="+4915100000002", text="Hello")
    request = gateway.requests[0]
    assert request["json"] == {"messages": [{"destination": "+4915100000002", "content": "Hello", "channel": "sms"}],
                               "from": "{from}"}
    assert request["authorization"] == "Basic " + base64.b64encode(b"hospital:s3cret:pw").decode()


@pytest.mark.parametrize("status", [500, 404, 401, 302])
def test_gateway_errors_become_sms_errors_without_personal_data(gateway: Gateway, status: int) -> None:
    gateway.fail_next(1, status)
    sender = HttpGatewaySmsSender(gateway.url + "?apikey=SECRETKEY")
    with pytest.raises(SmsError) as raised:
        sender.send(to="+4915100000003", text="Private text")
    message = str(raised.value)
    assert str(status) in message
    for secret in ("+4915100000003", "Private text", "SECRETKEY", "127.0.0.1"):
        assert secret not in message
    assert len(gateway.requests) == 1, "a redirect is not followed"


def test_unreachable_gateway_is_an_sms_error() -> None:
    sender = HttpGatewaySmsSender(f"http://127.0.0.1:{_free_port()}/send", timeout=2)
    with pytest.raises(SmsError, match="could not be reached"):
        sender.send(to="+4915100000004", text="x")


@pytest.mark.parametrize(
    ("url", "template"),
    [
        ("ftp://gateway.example/send", '{"to": "{to}", "text": "{text}"}'),
        ("file:///etc/passwd", '{"to": "{to}", "text": "{text}"}'),
        ("https://gateway.example/send", '{"to": "{to}", "text": {text}}'),
        ("https://gateway.example/send", '{"to": "{to}"}'),
        ("https://gateway.example/send", '{"to": "{to}", "text": "Message: {text}"}'),
    ],
)
def test_bad_gateway_settings_are_refused_at_start(url: str, template: str) -> None:
    with pytest.raises(ValueError):
        HttpGatewaySmsSender(url, payload_template=template)


def test_console_sender_prints_for_development() -> None:
    stream = io.StringIO()
    ConsoleSmsSender(stream).send(to="+4915100000005", text="Hello there")
    assert stream.getvalue() == "SMS to +4915100000005: Hello there\n"


def test_sender_from_config(gateway: Gateway) -> None:
    assert isinstance(sms_sender_from_config({"ENV": "development"}), ConsoleSmsSender)
    assert isinstance(sms_sender_from_config({"SMS_BACKEND": "console", "ENV": "production"}), ConsoleSmsSender)
    disabled = sms_sender_from_config({"ENV": "production"})
    assert isinstance(disabled, DisabledSmsSender)
    with pytest.raises(SmsError):
        disabled.send(to="+1", text="x")
    http = sms_sender_from_config({
        "SMS_BACKEND": "http", "SMS_GATEWAY_URL": gateway.url, "SMS_GATEWAY_USER": "u", "SMS_GATEWAY_PASSWORD": "p",
        "SMS_PAYLOAD_TEMPLATE": '{"number": "{to}", "message": "{text}"}',
    })
    assert isinstance(http, HttpGatewaySmsSender)
    http.send(to="+4915100000006", text="Hi")
    assert gateway.requests[0]["json"] == {"number": "+4915100000006", "message": "Hi"}
    assert gateway.requests[0]["authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    with pytest.raises(ValueError, match="SMS_GATEWAY_URL"):
        sms_sender_from_config({"SMS_BACKEND": "http"})
    with pytest.raises(ValueError, match="SMS_BACKEND"):
        sms_sender_from_config({"SMS_BACKEND": "pigeon"})
