"""The session cookie's attributes.

- ``HttpOnly``: scripts never read it.
- ``SameSite=Lax``: not sent with cross-site form posts or sub-requests (a second line
  behind the CSRF tokens), but still sent when a person follows a link from an email (an alert
  notification's "sign in" link), which ``Strict`` would break by making them look signed out.
- ``Secure``: sent only over HTTPS when ``PRO_BASE_URL`` is an https:// address, or the
  request itself arrived over HTTPS (TLS served directly, or by a proxy whose
  ``X-Forwarded-Proto`` the WSGI server trusts), or ``PRO_COOKIE_SECURE=always``.

A cookie whose signature was verified once is not verified again by this process
(:mod:`pro_app.web.signed`); its age still is, on every request.
"""

from __future__ import annotations

import time

from flask import Flask, Request, has_request_context, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from itsdangerous import BadSignature

from pro_app.web.signed import SignedMemo

_VERIFIED = "pro_verified_session_cookies"


class SessionCookieInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with ``Secure`` decided per request as well as by
    configuration (one deployment may be reached over HTTPS and, on a health port, HTTP)."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """As Flask's, with cookies verified before taken by value: (signed at, contents as JSON)."""
        if not app.secret_key:
            return None
        value = request.cookies.get(self.get_cookie_name(app))
        if not value:
            return self.session_class()
        max_age = int(app.permanent_session_lifetime.total_seconds())
        verified: SignedMemo[tuple[int, str]] = SignedMemo.of_app(app, _VERIFIED)
        known = verified.get(value)
        if known is not None:
            signed_at, contents = known
            if 0 <= int(time.time()) - signed_at <= max_age:  # itsdangerous's check of the age
                return self.session_class(self.serializer.loads(contents))
            verified.drop(value)
            return self.session_class()
        serializer = self.get_signing_serializer(app)
        assert serializer is not None  # there is a secret key
        try:
            data, signed = serializer.loads(value, max_age=max_age, return_timestamp=True)
        except BadSignature:
            return self.session_class()
        verified.put(value, (int(signed.timestamp()), self.serializer.dumps(data)))
        return self.session_class(data)

    def get_cookie_secure(self, app: Flask) -> bool:
        if app.config["SESSION_COOKIE_SECURE"]:
            return True
        return has_request_context() and request.is_secure


def configure(app: Flask) -> None:
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_SECURE"] = (
        app.config.get("COOKIE_SECURE") == "always" or str(app.config["BASE_URL"]).startswith("https://")
    )
    app.session_interface = SessionCookieInterface()
