"""Sending email through SMTP (the only way pro-app sends email).

Settings: ``PRO_SMTP_HOST``, ``PRO_SMTP_PORT``, ``PRO_SMTP_TLS`` (``starttls``, ``ssl`` or
``none``), ``PRO_SMTP_USER``, ``PRO_SMTP_PASSWORD``, ``PRO_MAIL_FROM``.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol


class MailSender(Protocol):
    def send(self, *, recipient: str, subject: str, body: str) -> None: ...


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int = 25
    tls: str = "none"
    user: str | None = None
    password: str | None = None
    sender: str = "pro-app@localhost"
    timeout: float = 15.0


class SmtpSender:
    """One SMTP connection per call: simple, and safe for a worker that runs every minute."""

    def __init__(self, settings: SmtpSettings) -> None:
        if settings.tls not in ("none", "starttls", "ssl"):
            raise ValueError(f"PRO_SMTP_TLS must be none, starttls or ssl, not {settings.tls!r}")
        self.settings = settings

    def send(self, *, recipient: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self.settings.sender
        message["To"] = recipient
        message["Subject"] = subject
        message.set_content(body)
        s = self.settings
        client: smtplib.SMTP
        if s.tls == "ssl":
            client = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
        with client:
            if s.tls == "starttls":
                client.starttls(context=ssl.create_default_context())
            if s.user:
                client.login(s.user, s.password or "")
            client.send_message(message)
