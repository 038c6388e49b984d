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
  are signed on every request as Flask-WTF does.

Nothing is kept that the client did not send or receive, nothing is kept across a change of
the secret keys, and a full memo is emptied rather than grown.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from flask import Flask, current_app, g, session
from flask_wtf.csrf import generate_csrf

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
    secret = session.get(field)
    if app.config["WTF_CSRF_TIME_LIMIT"] is not None or not isinstance(secret, str):
        return str(generate_csrf())
    memo: SignedMemo[str] = SignedMemo.of_app(app, _CSRF_TOKENS)
    signed = memo.get(secret)
    if signed is None:
        signed = str(generate_csrf())
        memo.put(secret, signed)
    else:
        setattr(g, field, signed)  # where Flask-WTF keeps it for the rest of the request
    return signed


def register(app: Flask) -> None:
    """Templates' ``csrf_token()`` hands out the kept token. Flask-WTF sets it as a global and
    in a context processor; this one runs after Flask-WTF's, and later processors win."""
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.context_processor(lambda: {"csrf_token": csrf_token})
