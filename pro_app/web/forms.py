"""The base of every form: Flask-WTF's, with WTForms' own messages translated from a cache,
and the CSRF token signed once per session secret (:func:`pro_app.web.signed.csrf_token`).

Flask-WTF reads WTForms' message catalogue from disk again for every request that builds a
form (about a quarter of a millisecond, on every answer a patient saves). The catalogue of
each language is read once per process here instead; which language is still decided per
request, when a message is needed.
"""

from __future__ import annotations

from typing import Any

from babel import support
from flask_babel import get_locale
from flask_wtf import FlaskForm
from wtforms.i18n import messages_path

from pro_app.web.signed import csrf_token

_CATALOGUES: dict[str, support.Translations] = {}


def _catalogue() -> support.Translations:
    code = str(get_locale() or "en")
    catalogue = _CATALOGUES.get(code)
    if catalogue is None:
        catalogue = _CATALOGUES[code] = support.Translations.load(messages_path(), [code], domain="wtforms")
    return catalogue


class _WTFormsMessages:
    """WTForms' translations interface, answered in the request's language."""

    def gettext(self, string: str) -> str:
        return str(_catalogue().ugettext(string))

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return str(_catalogue().ungettext(singular, plural, n))


_MESSAGES = _WTFormsMessages()


class _KeptTokenCSRF(FlaskForm.Meta.csrf_class):  # type: ignore[name-defined,misc]
    """Flask-WTF's form CSRF, validating as before; the token it renders is the kept one."""

    def generate_csrf_token(self, csrf_token_field: Any) -> str:
        return csrf_token()


class Form(FlaskForm):
    """Use instead of ``FlaskForm`` (CSRF protection and all of Flask-WTF stay the same)."""

    class Meta:
        csrf_class = _KeptTokenCSRF

        def get_translations(self, form: Any) -> _WTFormsMessages:
            return _MESSAGES
