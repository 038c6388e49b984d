"""Delivering queued staff messages (alert notifications) outside of requests.

Messages are claimed with ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several
workers can run at once without sending a message twice; on SQLite writers are serialised.
A failed attempt is retried with exponential back-off and given up after ``MAX_ATTEMPTS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from pro_app.db.models import OutboxMessage
from pro_app.db.types import utcnow
from pro_app.services.mailer import MailSender

MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class DeliveryReport:
    sent: int
    failed: int
    given_up: int


def deliver_outbox(
    session: Session, sender: MailSender, *, now: datetime | None = None, batch: int = 50
) -> DeliveryReport:
    """Send due messages; commits after each one, so a crash never re-sends a sent message."""
    now = now or utcnow()
    sent = failed = given_up = 0
    while True:
        message = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= now)
            .order_by(OutboxMessage.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if message is None or sent + failed + given_up >= batch:
            session.rollback()
            return DeliveryReport(sent, failed, given_up)
        message.attempts += 1
        try:
            sender.send(recipient=message.recipient, subject=message.subject, body=message.body)
        except (OSError, ValueError) as error:  # smtplib errors are OSErrors
            message.last_error = f"{type(error).__name__}: {error}"[:500]
            if message.attempts >= MAX_ATTEMPTS:
                message.status = "failed"
                given_up += 1
            else:
                message.next_attempt_at = now + timedelta(minutes=2 ** message.attempts)
                failed += 1
        else:
            message.status = "sent"
            message.sent_at = utcnow()
            sent += 1
        session.commit()
