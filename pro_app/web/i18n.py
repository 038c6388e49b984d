"""Choosing the language and time zone of each page.

Order of precedence for the language: an explicit choice (the language switcher, kept in
the session), the participant's preference (set by patient pages on ``g``), the browser's
Accept-Language, then the study default. Unknown codes fall back silently.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit

from flask import Blueprint, Flask, current_app, g, redirect, request, session
from babel import Locale
from flask_babel import get_locale, gettext
from werkzeug.wrappers import Response

from pro_app.domain.errors import N_

bp = Blueprint("i18n", __name__)

SESSION_KEY = "lang"


#: Names of assessment and participant states as staff read them.
STATE_LABELS = {
    "scheduled": N_("scheduled"), "open": N_("open"), "in_progress": N_("in progress"),
    "completed": N_("completed"), "missed": N_("missed"), "cancelled": N_("cancelled"),
    "active": N_("active"), "withdrawn": N_("withdrawn"),
}


def register(app: Flask) -> None:
    app.jinja_env.globals["get_locale"] = get_locale
    app.jinja_env.globals["language_choices"] = language_choices
    app.jinja_env.globals["state_label"] = state_label


def state_label(value: str) -> str:
    """A state's name in the page's language. Translated once per request: a dashboard shows
    hundreds of rows, and looking up the same eight names for each was most of its time."""
    labels: dict[str, str] | None = g.get("_state_labels")
    if labels is None:
        labels = {key: gettext(text) for key, text in STATE_LABELS.items()}
        g._state_labels = labels
    return labels.get(value, value)


def language_choices() -> list[tuple[str, str]]:
    """Each offered language named in itself (a patient must recognise their own)."""
    return list(_named_in_themselves(tuple(supported_locales())))


@lru_cache(maxsize=8)
def _named_in_themselves(codes: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return tuple((code, Locale.parse(code).get_display_name(code) or code) for code in codes)


def supported_locales() -> list[str]:
    return list(current_app.config["LOCALES"])


def normalise_locale(code: str | None) -> str | None:
    """Map a requested code (``zh-CN``, ``es_MX``, ``AR``) to a supported locale, or None."""
    if not code:
        return None
    wanted = code.replace("-", "_").strip()
    by_lower = {locale.lower(): locale for locale in supported_locales()}
    if wanted.lower() in by_lower:
        return by_lower[wanted.lower()]
    language = wanted.split("_", 1)[0].lower()
    for locale in supported_locales():
        if locale.split("_", 1)[0].lower() == language:
            return locale
    return None


def select_locale() -> str:
    explicit = normalise_locale(session.get(SESSION_KEY)) if SESSION_KEY in session else None
    if explicit:
        return explicit
    preferred = normalise_locale(g.get("preferred_locale"))
    if preferred:
        return preferred
    for code, _quality in request.accept_languages:
        match = normalise_locale(code)
        if match:
            return match
    return str(current_app.config["DEFAULT_LOCALE"])


def select_timezone() -> str:
    return str(g.get("timezone") or current_app.config["DEFAULT_TIMEZONE"])


def safe_next(target: str | None, default: str = "/") -> str:
    """Only same-site relative paths are followed after a language switch (no open redirect)."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    return target


@bp.post("/language")
def choose_language() -> Response:
    chosen = normalise_locale(request.form.get("lang"))
    if chosen:
        session[SESSION_KEY] = chosen
    return redirect(safe_next(request.form.get("next")), code=303)
