"""``pro-app tick`` and ``pro-app worker``: the background work.

``tick`` is safe to run every minute from cron or a systemd timer, on several machines at
once with PostgreSQL: every step claims its rows with ``SELECT ... FOR UPDATE SKIP LOCKED``
and running it twice changes nothing more. ``worker`` simply calls it in a loop.
"""

from __future__ import annotations

import signal
import time
from datetime import timedelta
from types import FrameType

import click
from flask import current_app
from flask.cli import with_appcontext

from pro_app.db.types import utcnow
from pro_app.extensions import database
from pro_app.services.clock import advance_states
from pro_app.services.mailer import SmtpSender, SmtpSettings
from pro_app.services.outbox import deliver_outbox
from pro_app.services.reminders import plan_upcoming_reminders, send_due_reminders
from pro_app.services.sms import sms_sender_from_config


def smtp_sender() -> SmtpSender:
    config = current_app.config
    return SmtpSender(
        SmtpSettings(
            host=config["SMTP_HOST"], port=config["SMTP_PORT"], tls=config["SMTP_TLS"], user=config["SMTP_USER"],
            password=config["SMTP_PASSWORD"], sender=config["MAIL_FROM"],
        )
    )


def run_tick() -> list[str]:
    """One round of background work; returns one summary line per step."""
    session = database.session
    now = utcnow()
    grace = timedelta(minutes=current_app.config["PATIENT_GRACE_MINUTES"])
    config = current_app.config
    states = advance_states(session, now=now, grace=grace)
    planned = plan_upcoming_reminders(session, now=now)
    session.commit()
    email = smtp_sender()
    reminders = send_due_reminders(
        session, email=email, sms=sms_sender_from_config(config), now=now, base_url=config["BASE_URL"],
        link_days=config["PATIENT_LINK_DAYS"],
    )
    mail = deliver_outbox(session, email)
    return [
        f"Assessments: {states.opened} opened, {states.missed} missed.",
        f"Reminders: {planned} planned, {reminders.sent} sent, {reminders.retrying} to retry, "
        f"{reminders.failed} failed, {reminders.cancelled} cancelled, {reminders.interrupted} interrupted.",
        f"Notifications: {mail.sent} sent, {mail.failed} to retry, {mail.given_up} given up.",
    ]


@click.command("tick")
@with_appcontext
def tick_command() -> None:
    """Open and close windows, plan and send reminders, send staff notifications."""
    for line in run_tick():
        click.echo(line)


@click.command("worker")
@click.option("--interval", default=60, show_default=True, type=click.IntRange(5, 3600), help="Seconds between ticks.")
@with_appcontext
def worker_command(interval: int) -> None:
    """Run tick every INTERVAL seconds until stopped (SIGTERM or Ctrl-C finish the current tick)."""
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        started = time.monotonic()
        try:
            for line in run_tick():
                click.echo(line)
        except Exception as error:  # keep running: a database blip must not stop reminders for good
            database.session.rollback()
            current_app.logger.error("tick failed: %s", type(error).__name__)
        finally:
            database.session.close()
        while not stopping and time.monotonic() - started < interval:
            time.sleep(0.5)
