"""Sending text messages (SMS) for patient reminders.

Hospitals use very different SMS gateways, almost all of which accept an HTTP POST with a
small JSON body. :class:`HttpGatewaySmsSender` sends one, shaped by a JSON template in which
the string values ``"{to}"`` and ``"{text}"`` are replaced by the number and the message.

Settings (see ``pro_app.config``): ``SMS_BACKEND`` (``console``, ``http`` or ``none``),
``SMS_GATEWAY_URL``, ``SMS_GATEWAY_USER``, ``SMS_GATEWAY_PASSWORD``, ``SMS_PAYLOAD_TEMPLATE``
and ``SMS_GATEWAY_TIMEOUT``.

Error messages never contain the number, the text or the gateway URL (which may carry an
API key): they end up in the database and in logs.
"""

from __future__ import annotations

import base64
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from http.client import HTTPMessage
from typing import IO, Any, Protocol, TextIO
from urllib.parse import urlsplit

DEFAULT_PAYLOAD_TEMPLATE = '{"to": "{to}", "text": "{text}"}'
_TO = "{to}"
_TEXT = "{text}"


class SmsError(Exception):
    """A message could not be handed to the gateway; safe to store and log."""


class SmsSender(Protocol):
    def send(self, *, to: str, text: str) -> None:
        """Hand one message over, or raise :class:`SmsError`."""


class ConsoleSmsSender:
    """Development only: prints each message instead of sending it.

    The output holds numbers and personal links, so it must never be used where the
    output is collected into logs (``sms_sender_from_config`` only picks it by default in
    development and testing).
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def send(self, *, to: str, text: str) -> None:
        print(f"SMS to {to}: {text}", file=self.stream or sys.stdout, flush=True)


class DisabledSmsSender:
    """No gateway configured: every message fails visibly (the reminder ends as failed)."""

    def send(self, *, to: str, text: str) -> None:
        raise SmsError("SMS sending is not configured (SMS_BACKEND=none)")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirected POST would be replayed as a GET without its body: report it instead."""

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: HTTPMessage, newurl: str
    ) -> urllib.request.Request | None:
        return None


def _fill(template: Any, to: str, text: str) -> Any:
    if isinstance(template, str):
        return to if template == _TO else text if template == _TEXT else template
    if isinstance(template, list):
        return [_fill(value, to, text) for value in template]
    if isinstance(template, dict):
        return {key: _fill(value, to, text) for key, value in template.items()}
    return template


def _placeholders(template: Any) -> set[str]:
    if isinstance(template, str):
        return {template} & {_TO, _TEXT}
    values = template.values() if isinstance(template, dict) else template if isinstance(template, list) else []
    found: set[str] = set()
    for value in values:
        found |= _placeholders(value)
    return found


class HttpGatewaySmsSender:
    """POSTs one JSON document per message to an SMS gateway.

    The template is parsed as JSON once; values are substituted into the parsed document,
    so quotes, backslashes or newlines in a message can never break or extend the JSON.
    Any answer other than 2xx, and any network error, is an :class:`SmsError`.
    """

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        payload_template: str = DEFAULT_PAYLOAD_TEMPLATE,
        timeout: float = 10,
    ) -> None:
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError("SMS_GATEWAY_URL must be an http:// or https:// address")
        try:
            template = json.loads(payload_template)
        except json.JSONDecodeError as error:
            raise ValueError(f"SMS_PAYLOAD_TEMPLATE is not valid JSON: {error.msg}") from None
        missing = {_TO, _TEXT} - _placeholders(template)
        if missing:
            raise ValueError(
                f"SMS_PAYLOAD_TEMPLATE needs the string values {', '.join(sorted(missing))} (as whole JSON strings)"
            )
        self.url = url
        self.template = template
        self.timeout = timeout
        self._authorization: str | None = None
        if username:
            credentials = f"{username}:{password or ''}".encode()
            self._authorization = "Basic " + base64.b64encode(credentials).decode("ascii")
        self._opener = urllib.request.build_opener(_NoRedirects)

    def payload(self, *, to: str, text: str) -> bytes:
        """The request body for one message."""
        return json.dumps(_fill(self.template, to, text), ensure_ascii=False).encode("utf-8")

    def send(self, *, to: str, text: str) -> None:
        request = urllib.request.Request(
            self.url,
            data=self.payload(to=to, text=text),
            method="POST",
            headers={"Content-Type": "application/json; charset=utf-8", "Accept": "application/json, */*"},
        )
        if self._authorization:
            request.add_header("Authorization", self._authorization)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                status = int(response.status)
                response.read(64 * 1024)
        except urllib.error.HTTPError as error:
            error.close()
            raise SmsError(f"the SMS gateway answered HTTP {error.code}") from None
        except urllib.error.URLError as error:
            raise SmsError(f"the SMS gateway could not be reached ({type(error.reason).__name__})") from None
        except (OSError, ValueError) as error:  # timeouts, resets, malformed answers
            raise SmsError(f"the SMS gateway could not be reached ({type(error).__name__})") from None
        if not 200 <= status < 300:
            raise SmsError(f"the SMS gateway answered HTTP {status}")


def sms_sender_from_config(config: Mapping[str, Any]) -> SmsSender:
    """The sender the configuration asks for.

    Without ``SMS_BACKEND``, development and testing print messages to the console and any
    other environment refuses to send (so numbers and links never land in a server log).
    """
    backend = config.get("SMS_BACKEND") or (
        "console" if config.get("ENV") in ("development", "testing") else "none"
    )
    if backend == "console":
        return ConsoleSmsSender()
    if backend == "none":
        return DisabledSmsSender()
    if backend == "http":
        url = config.get("SMS_GATEWAY_URL")
        if not url:
            raise ValueError("SMS_BACKEND=http needs SMS_GATEWAY_URL")
        return HttpGatewaySmsSender(
            str(url),
            username=config.get("SMS_GATEWAY_USER") or None,
            password=config.get("SMS_GATEWAY_PASSWORD") or None,
            payload_template=config.get("SMS_PAYLOAD_TEMPLATE") or DEFAULT_PAYLOAD_TEMPLATE,
            timeout=float(config.get("SMS_GATEWAY_TIMEOUT") or 10),
        )
    raise ValueError(f"SMS_BACKEND must be console, http or none, not {backend!r}")
