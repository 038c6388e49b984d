"""Forms of the patient pages (all with CSRF protection)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, HiddenField, IntegerField, RadioField, StringField
from wtforms.validators import DataRequired, Length, Optional


class AnswerForm(FlaskForm):
    """One question. ``go`` is the button pressed (next, back, review); ``assessment`` ties
    the answer to the questionnaire the page was shown for, so a stale page or a shared
    tablet can never put an answer into another questionnaire. ``request_id`` is a fresh
    UUID in every rendered page: the browser re-posting the same page sends the same id,
    so the answer is saved once (its format is checked by the request id protocol)."""

    value = RadioField(coerce=int, validators=[Optional()], validate_choice=True)
    assessment = IntegerField(validators=[DataRequired()])
    go = StringField(validators=[Optional(), Length(max=10)])
    request_id = HiddenField()


class AnswerApiForm(FlaskForm):
    """The background save used by the page script (JSON body, CSRF token in a header,
    request id in the ``Idempotency-Key`` header and/or the ``request_id`` field).

    ``key`` is what page scripts sent before request ids: echoed back in the earlier reply
    format, never used to recognise a repetition."""

    assessment = IntegerField(validators=[DataRequired()])
    item = StringField(validators=[DataRequired(), Length(max=40)])
    value = IntegerField(validators=[DataRequired()])
    request_id = StringField()
    key = StringField(validators=[Optional(), Length(max=64)])


class StartForm(FlaskForm):
    assessment = IntegerField(validators=[DataRequired()])


class SubmitForm(FlaskForm):
    """The review page's submission. ``request_id`` is the submission key; ``key`` is its
    earlier name, rendered with the same value and still read from pages that only have it."""

    assessment = IntegerField(validators=[DataRequired()])
    request_id = HiddenField()
    key = HiddenField(validators=[Optional(), Length(min=8, max=64)])
    confirm_missing = BooleanField(_l("Yes, submit with the unanswered questions left blank"))


class CodeForm(FlaskForm):
    code = StringField(
        _l("Your personal code"),
        validators=[DataRequired(message=_l("Please type the code from your letter.")), Length(max=40)],
    )
