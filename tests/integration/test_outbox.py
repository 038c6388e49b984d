"""Staff notifications go out through a real SMTP server, exactly once, with retries."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes

import pytest
from aiosmtpd.controller import Controller
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from pro_app.cli import main
from pro_app.db.models import OutboxMessage
from pro_app.db.types import utcnow
from pro_app.services.mailer import SmtpSender, SmtpSettings
from pro_app.services.outbox import MAX_ATTEMPTS, deliver_outbox


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]  # noqa: N802
        self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def _queue(session: Session, n: int = 2) -> None:
    for index in range(n):
        session.add(OutboxMessage(recipient=f"nurse{index}@example.org", subject="pro-app: an alert needs review",
                                  body="A questionnaire result needs review. https://pro.example/staff/participants/1"))
    session.commit()


def test_tick_sends_each_message_once(app: Flask, runner: FlaskCliRunner, db_session: Session, smtp) -> None:  # type: ignore[no-untyped-def]
    inbox, port = smtp
    app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=port, MAIL_FROM="pro-app@hospital.example")
    _queue(db_session)
    result = runner.invoke(main, ["tick"])
    assert result.exit_code == 0, result.output
    assert "Notifications: 2 sent" in result.output
    assert sorted(r for rcpts, _ in inbox.messages for r in rcpts) == ["nurse0@example.org", "nurse1@example.org"]
    parsed = message_from_bytes(inbox.messages[0][1])
    assert parsed["From"] == "pro-app@hospital.example" and parsed["Subject"] == "pro-app: an alert needs review"
    again = runner.invoke(main, ["tick"])
    assert "Notifications: 0 sent" in again.output and len(inbox.messages) == 2
    db_session.expire_all()
    assert {m.status for m in db_session.scalars(select(OutboxMessage))} == {"sent"}


def test_unreachable_server_is_retried_then_given_up(db_session: Session) -> None:
    _queue(db_session, 1)
    sender = SmtpSender(SmtpSettings(host="127.0.0.1", port=_free_port(), timeout=2))
    now = utcnow()
    report = deliver_outbox(db_session, sender, now=now)
    assert (report.sent, report.failed) == (0, 1)
    message = db_session.scalars(select(OutboxMessage)).one()
    assert message.status == "pending" and message.attempts == 1 and message.next_attempt_at > now
    assert deliver_outbox(db_session, sender, now=now).failed == 0, "not retried before its time"
    for attempt in range(2, MAX_ATTEMPTS + 1):
        deliver_outbox(db_session, sender, now=now + timedelta(days=attempt))
    db_session.expire_all()
    message = db_session.scalars(select(OutboxMessage)).one()
    assert message.status == "failed" and message.attempts == MAX_ATTEMPTS and message.last_error
