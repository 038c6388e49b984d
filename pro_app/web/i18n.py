"""Choosing the language and time zone of each page.

Order of precedence for the language: an explicit choice (the language switcher, kept in
the session), the participant's preference (set by patient pages on ``g``), the browser's
Accept-Language, then the study default. Unknown codes fall back silently.
"""

from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache
from urllib.parse import urlsplit

from flask import Blueprint, Flask, current_app, g, redirect, request, session
import flask_babel
from babel import Locale, dates
from flask_babel import get_locale, get_timezone, gettext
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
    app.jinja_env.filters["datetimeformat"] = datetimeformat


_STANDARD_FORMATS = ("full", "long", "medium", "short")


def datetimeformat(value: object, format: str = "medium") -> str:
    """Flask-Babel's ``datetimeformat`` filter (in the page's language and time zone), with
    each date and each time of day formatted once per request.

    A nurse's dashboard shows hundreds of instants; Babel formatting each one was 40% of the
    page. Babel builds a standard date-time format from a date part and a time part, so the
    same is done here from parts remembered for the request: the result is the same text
    (``tests/web/test_languages.py`` compares them).
    """
    if not isinstance(value, datetime) or format not in _STANDARD_FORMATS:
        return str(flask_babel.format_datetime(value, format))
    parts: dict[tuple[object, ...], str] | None = g.get("_datetime_parts")
    if parts is None:
        parts = g._datetime_parts = {}
    locale, zone = get_locale(), get_timezone()
    local = (value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)).astimezone(zone)
    date_key = ("date", format, local.date())
    time_key = ("time", format, local.replace(microsecond=0))
    date_part = parts.get(date_key)
    if date_part is None:
        date_part = parts[date_key] = dates.format_date(local, format, locale=locale)
    time_part = parts.get(time_key)
    if time_part is None:
        time_part = parts[time_key] = dates.format_time(local, format, tzinfo=None, locale=locale)
    pattern = dates.get_datetime_format(format, locale=locale).replace("'", "")
    return str(pattern.replace("{0}", time_part).replace("{1}", date_part))


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


#: Longer than any language tag a browser sends: passed over (and never kept in a cache).
_LONGEST_CODE = 64


def normalise_locale(code: str | None) -> str | None:
    """Map a requested code (``zh-CN``, ``es_MX``, ``AR``) to a supported locale, or None."""
    if not code or not isinstance(code, str) or len(code) > _LONGEST_CODE:
        return None
    return _supported_match(code, tuple(supported_locales()))


@lru_cache(maxsize=256)
def _supported_match(code: str, supported: tuple[str, ...]) -> str | None:
    wanted = code.replace("-", "_").strip()
    by_lower = {locale.lower(): locale for locale in supported}
    if wanted.lower() in by_lower:
        return by_lower[wanted.lower()]
    language = wanted.split("_", 1)[0].lower()
    for locale in supported:
        if locale.split("_", 1)[0].lower() == language:
            return locale
    return None


@lru_cache(maxsize=32)
def _parsed(code: str) -> Locale:
    """The Babel locale of a supported code, parsed once (every page asks for it)."""
    return Locale.parse(code)


def select_locale() -> Locale:
    """The page's language as a Babel locale (Flask-Babel takes it as it is; a code it
    would parse again on every request)."""
    return _parsed(_chosen_code())


def _chosen_code() -> str:
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
