"""``pro-app tick``: background work, safe to run every minute from cron on several machines."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from pro_app.extensions import database
from pro_app.services.mailer import SmtpSender, SmtpSettings
from pro_app.services.outbox import deliver_outbox


def smtp_sender() -> SmtpSender:
    config = current_app.config
    return SmtpSender(
        SmtpSettings(
            host=config["SMTP_HOST"], port=config["SMTP_PORT"], tls=config["SMTP_TLS"], user=config["SMTP_USER"],
            password=config["SMTP_PASSWORD"], sender=config["MAIL_FROM"],
        )
    )


@click.command("tick")
@with_appcontext
def tick_command() -> None:
    """Send queued staff notifications (more background work joins here)."""
    report = deliver_outbox(database.session, smtp_sender())
    click.echo(f"Notifications: {report.sent} sent, {report.failed} to retry, {report.given_up} given up.")
