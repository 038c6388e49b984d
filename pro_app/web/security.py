"""Security headers on every response, and URL ids the database cannot hold.

Patient links carry their token in the URL, so no page sends a Referer; pages with health
data are never cached (only static assets are); scripts and styles only come from our own
static files (no inline code). HSTS is sent when the request came over HTTPS, and also when
the configured public address is HTTPS: behind a TLS-terminating proxy that the WSGI server
was not told to trust, requests arrive as plain HTTP although browsers use HTTPS (and
browsers ignore HSTS received over plain HTTP, so sending it there is harmless).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, abort, current_app, request
from werkzeug.wrappers import Response

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
STRICT_TRANSPORT_SECURITY = "max-age=31536000; includeSubDomains"
STATIC_CACHE = "public, max-age=86400"

#: Ids are 32-bit INTEGER columns on PostgreSQL (and at most 64-bit on SQLite); a larger
#: number in a URL names no row, and the drivers refuse to even send it.
LARGEST_ID = 2**31 - 1


def register(app: Flask) -> None:
    # First of all hooks: CSRF protection and every form read the body as JSON when it says so.
    app.before_request_funcs.setdefault(None, []).insert(0, _refuse_unusable_json)
    app.url_value_preprocessor(_refuse_impossible_ids)
    app.after_request(_add_headers)


def _refuse_unusable_json() -> None:
    """A JSON body must be an object of plain values (what our forms read, as field: value).

    Forms read a JSON body as their form data; an array, a bare string or nested values
    there would otherwise crash the form code (a 500) instead of being refused (a 400).
    """
    if not request.is_json or not request.get_data(cache=True):
        return
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict) or any(isinstance(value, (dict, list)) for value in payload.values()):
        abort(400)


def _refuse_impossible_ids(_endpoint: str | None, values: dict[str, Any] | None) -> None:
    """``/staff/participants/99999999999`` is a page that does not exist (404), not a crash."""
    for value in (values or {}).values():
        if isinstance(value, int) and not isinstance(value, bool) and value > LARGEST_ID:
            abort(404)


#: Sent with every response that does not set its own (name in lower case, name, value).
_EVERY_RESPONSE = tuple(
    (name.lower(), name, value)
    for name, value in (
        ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("X-Frame-Options", "DENY"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
    )
)


def _add_headers(response: Response) -> Response:
    headers = response.headers
    present = {name.lower() for name in headers.keys()}
    headers.extend([(name, value) for lower, name, value in _EVERY_RESPONSE if lower not in present])
    if request.is_secure or str(current_app.config.get("BASE_URL", "")).startswith("https://"):
        headers.setdefault("Strict-Transport-Security", STRICT_TRANSPORT_SECURITY)
    if request.endpoint == "static" and response.status_code in (200, 304):
        headers["Cache-Control"] = STATIC_CACHE
    else:
        # Not even a static file's 404: a file added by the next release must not stay missing.
        headers["Cache-Control"] = "no-store"
    return response
