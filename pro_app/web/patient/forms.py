"""Forms of the patient pages (all with CSRF protection)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from flask import request
from flask_babel import lazy_gettext as _l
from wtforms import BooleanField, HiddenField, IntegerField, StringField
from wtforms.validators import DataRequired, Length, Optional

from pro_app.web.forms import Form


@dataclass(frozen=True)
class QuestionPost:
    """One question's form, posted by the page without JavaScript (or by a page whose sign-in
    ended meanwhile). Read without a WTForms form, as the background save is: it is sent for
    every answer a patient without JavaScript gives. The CSRF token is checked for every post
    by CSRFProtect.

    ``assessment`` ties the answer to the questionnaire the page was shown for, so a stale
    page or a shared tablet can never put an answer into another questionnaire; ``value`` is
    the answer chosen (None: none was chosen, or it is not a whole number); ``go`` is the button
    pressed (next, back, review); ``request_id`` is a fresh UUID in every rendered page: the
    browser re-posting the same page sends the same id, so the answer is saved once (its
    format is checked by the request id protocol)."""

    assessment: int | None
    value: int | None
    value_given: bool
    go: str | None
    go_readable: bool
    request_id: object = None

    def is_valid(self, choices: Collection[int]) -> bool:
        """The questionnaire named (a whole number other than 0), an answer among ``choices``
        if one was given, and a button name of at most 10 characters."""
        return (
            bool(self.assessment)
            and (not self.value_given or self.value in choices)
            and self.go_readable
        )


def read_question_post() -> QuestionPost:
    data = _posted_fields() or {}
    raw_value = data.get("value")
    given = raw_value is not None and not (isinstance(raw_value, str) and not raw_value.strip())
    go = data.get("go")
    readable = go is None or (isinstance(go, str) and len(go) <= 10)
    return QuestionPost(
        assessment=_whole_number(data.get("assessment")),
        value=_whole_number(raw_value) if given else None,
        value_given=given,
        go=go if readable else None,
        go_readable=readable,
        request_id=data.get("request_id"),
    )


@dataclass(frozen=True)
class AnswerRequest:
    """The background save sent by the page script: a JSON object (a form post is read the
    same way), with the CSRF token in the ``X-CSRFToken`` header (checked for every post by
    CSRFProtect) and the request id in the ``Idempotency-Key`` header and/or ``request_id``.

    ``key`` is what page scripts sent before request ids: echoed back in the earlier reply
    format, never used to recognise a repetition.

    Read without a WTForms form: this is the request every patient sends for every answer,
    and its five fields need no form machinery.
    """

    assessment: int
    item: str
    value: int
    request_id: object = None
    key: str | None = None


def read_answer_request() -> AnswerRequest | None:
    """The save's fields, or None when the body does not hold a readable answer: the
    questionnaire and the answer as whole numbers (a number or its digits, never true/false or
    a fraction), the question as text of at most 40 characters, an old ``key`` of at most 64."""
    data = _posted_fields()
    if data is None:
        return None
    assessment = _whole_number(data.get("assessment"))
    value = _whole_number(data.get("value"))
    item = data.get("item")
    key = data.get("key")
    if assessment is None or assessment <= 0 or value is None:
        return None
    if not isinstance(item, str) or not item.strip() or len(item) > 40:
        return None
    if key is not None and (not isinstance(key, str) or len(key) > 64):
        return None
    return AnswerRequest(assessment, item, value, data.get("request_id"), key or None)


def _posted_fields() -> Mapping[str, Any] | None:
    """A post's fields: its JSON object when it says it is JSON, else its form fields; None
    when a JSON body is not an object."""
    data: object = request.get_json(silent=True) if request.is_json else request.form
    return data if isinstance(data, Mapping) else None


def _whole_number(raw: object) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.strip().lstrip("+-").isdigit() and len(raw) <= 20:
        return int(raw)
    return None


class StartForm(Form):
    assessment = IntegerField(validators=[DataRequired()])


class SubmitForm(Form):
    """The review page's submission. ``request_id`` is the submission key; ``key`` is its
    earlier name, rendered with the same value and still read from pages that only have it."""

    assessment = IntegerField(validators=[DataRequired()])
    request_id = HiddenField()
    key = HiddenField(validators=[Optional(), Length(min=8, max=64)])
    confirm_missing = BooleanField(_l("Yes, submit with the unanswered questions left blank"))


class CodeForm(Form):
    code = StringField(
        _l("Your personal code"),
        validators=[DataRequired(message=_l("Please type the code from your letter.")), Length(max=40)],
    )
