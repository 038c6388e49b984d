"""The session cookie's attributes.

- ``HttpOnly``: scripts never read it.
- ``SameSite=Lax``: not sent with cross-site form posts or sub-requests (a second line
  behind the CSRF tokens), but still sent when a person follows a link from an email (an alert
  notification's "sign in" link), which ``Strict`` would break by making them look signed out.
- ``Secure``: sent only over HTTPS when ``PRO_BASE_URL`` is an https:// address, or the
  request itself arrived over HTTPS (TLS served directly, or by a proxy whose
  ``X-Forwarded-Proto`` the WSGI server trusts), or ``PRO_COOKIE_SECURE=always``.
"""

from __future__ import annotations

from flask import Flask, has_request_context, request
from flask.sessions import SecureCookieSessionInterface


class SessionCookieInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with ``Secure`` decided per request as well as by
    configuration (one deployment may be reached over HTTPS and, on a health port, HTTP)."""

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
