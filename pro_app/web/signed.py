"""Signatures checked or made once per process: the session cookie and the CSRF token.

Every patient request carries the same signed session cookie as the one before it, and every
page it gets shows a CSRF token signed from the same session secret. Checking the cookie's
signature (and decoding it) and signing the token anew cost more than the question page's
database reads. What was verified or signed with the app's current keys is kept here, per app
and bounded, so the next request with the same cookie or secret does without:

- a session cookie verified once is taken by its exact value; its age is still checked on
  every request against the session lifetime, as the signature check would;
- the CSRF token signed for a session's secret is handed out again. Tokens have no time limit
  here (``WTF_CSRF_TIME_LIMIT`` is None, the session lifetime bounds them instead), so a token
  signed a minute ago is exactly as valid as a new one; with a time limit configured, tokens
  are signed on every request as Flask-WTF does;
- a form post or page script sending exactly that token for its session's secret is checked by
  comparing the two (in constant time) instead of verifying the signature again: a token equal
  to the one signed for the session's secret is what Flask-WTF's check accepts, and any other
  token goes through Flask-WTF's check unchanged (and is kept once it passed).

Nothing is kept that the client did not send or receive, nothing is kept across a change of
the secret keys, and a full memo is emptied rather than grown.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import hmac

from flask import Flask, current_app, g, request, session
from flask_wtf.csrf import CSRFProtect, generate_csrf, same_origin

_Value = TypeVar("_Value")


class SignedMemo(Generic[_Value]):
    """What was verified or signed with one set of the app's secret keys."""

    #: Entries kept per app (patients and staff using one worker at a time, with room).
    LIMIT = 4096

    def __init__(self, keys: tuple[object, ...]) -> None:
        self.keys = keys
        self._entries: dict[str, _Value] = {}

    @classmethod
    def of_app(cls, app: Flask, name: str) -> SignedMemo[_Value]:
        """The app's memo ``name`` for its current keys (a new one when they changed)."""
        keys = (app.secret_key, app.config.get("WTF_CSRF_SECRET_KEY"), tuple(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        memo: SignedMemo[_Value] | None = app.extensions.get(name)
        if memo is None or memo.keys != keys:
            memo = app.extensions[name] = cls(keys)
        return memo

    def get(self, key: str) -> _Value | None:
        return self._entries.get(key)

    def put(self, key: str, value: _Value) -> None:
        if len(self._entries) >= self.LIMIT:
            self._entries.clear()  # one statement: safe with threaded workers too
        self._entries[key] = value

    def drop(self, key: str) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


_CSRF_TOKENS = "pro_signed_csrf_tokens"


def csrf_token() -> str:
    """The request's signed CSRF token, as :func:`flask_wtf.csrf.generate_csrf` makes it, signed
    once per session secret in this process when tokens have no time limit."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    field = app.config["WTF_CSRF_FIELD_NAME"]
    signed: str | None = g.get(field)
    if signed:
        return signed
    secret = _kept_session_secret(app)
    if secret is None:
        return str(generate_csrf())
    memo: SignedMemo[str] = SignedMemo.of_app(app, _CSRF_TOKENS)
    signed = memo.get(secret)
    if signed is None:
        signed = str(generate_csrf())
        memo.put(secret, signed)
    else:
        setattr(g, field, signed)  # where Flask-WTF keeps it for the rest of the request
    return signed


#: Content types whose CSRF token Flask-WTF reads from the form fields; others send a header.
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _kept_session_secret(app: Flask) -> str | None:
    """The session's CSRF secret, when its signed token may be kept (tokens have no time limit)."""
    if app.config["WTF_CSRF_TIME_LIMIT"] is not None:
        return None
    secret = session.get(app.config["WTF_CSRF_FIELD_NAME"])
    return secret if isinstance(secret, str) else None


def _sent_token(app: Flask) -> str | None:
    """The token a request sends where Flask-WTF looks first: the form field of a form post, the
    first configured header otherwise (a prefixed form field is left to Flask-WTF)."""
    if request.mimetype in _FORM_TYPES:
        sent = request.form.get(app.config["WTF_CSRF_FIELD_NAME"])
    else:
        sent = next((request.headers.get(name) for name in app.config["WTF_CSRF_HEADERS"]), None)
    return sent or None


class KeptTokenCSRFProtect(CSRFProtect):
    """Flask-WTF's CSRF protection; a request sending the token kept for its session's secret
    passes without verifying that token's signature again."""

    def protect(self, apply_exemptions: bool = False) -> None:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        if request.method not in app.config["WTF_CSRF_METHODS"]:
            return
        secret = _kept_session_secret(app)
        sent = _sent_token(app) if secret is not None else None
        if secret is None or sent is None:
            super().protect(apply_exemptions=apply_exemptions)
            return
        memo: SignedMemo[str] = SignedMemo.of_app(app, _CSRF_TOKENS)
        kept = memo.get(secret)
        if kept is None or not hmac.compare_digest(sent.encode(), kept.encode()):
            super().protect(apply_exemptions=apply_exemptions)
            if g.get("csrf_valid"):
                # Signed by another worker, or before this process started: kept as the
                # session's token, so the next request compares instead.
                memo.put(secret, sent)
            return
        if request.is_secure and app.config["WTF_CSRF_SSL_STRICT"]:
            # As Flask-WTF checks it over HTTPS: the post comes from a page of this host.
            if not request.referrer:
                self._error_response("The referrer header is missing.")
            if not same_origin(request.referrer, f"https://{request.host}/"):
                self._error_response("The referrer does not match the host.")
        g.csrf_valid = True


def register(app: Flask) -> None:
    """Templates' ``csrf_token()`` hands out the kept token. Flask-WTF sets it as a global and
    in a context processor; this one runs after Flask-WTF's, and later processors win."""
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.context_processor(lambda: {"csrf_token": csrf_token})
