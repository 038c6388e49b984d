"""Forms of the staff pages (all with CSRF protection and translated messages)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from wtforms import (
    BooleanField,
    DateField,
    DateTimeLocalField,
    DecimalField,
    EmailField,
    FieldList,
    FormField,
    HiddenField,
    IntegerField,
    PasswordField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, NumberRange, Optional, Regexp

from pro_app.web.choices import options
from pro_app.web.forms import Form

_REQUIRED = _l("This field is required.")
# The same rule as the staff service applies (no extra dependency for address parsing).
_EMAIL = Regexp(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", message=_l("Enter a valid email address."))


class LoginForm(Form):
    email = EmailField(_l("Email"), validators=[DataRequired(_REQUIRED), Length(max=254)])
    password = PasswordField(_l("Password"), validators=[DataRequired(_REQUIRED), Length(max=200)])
    next = HiddenField()


class PasswordChangeForm(Form):
    current = PasswordField(_l("Current password"), validators=[DataRequired(_REQUIRED), Length(max=200)])
    new = PasswordField(_l("New password"), validators=[DataRequired(_REQUIRED), Length(max=200)])


class EnrolForm(Form):
    subject_code = StringField(
        _l("Subject code"),
        validators=[
            DataRequired(_REQUIRED),
            Regexp(r"^[A-Za-z0-9][A-Za-z0-9-]{1,38}[A-Za-z0-9]$",
                   message=_l("Use 3 to 40 letters, digits or dashes.")),
        ],
    )
    site = SelectField(_l("Site"), coerce=int, validators=[DataRequired(_REQUIRED)])
    arm = SelectField(_l("Dose group"), coerce=int, validators=[DataRequired(_REQUIRED)])
    locale = SelectField(_l("Preferred language"), validators=[DataRequired(_REQUIRED)])
    timezone = StringField(_l("Time zone"), validators=[Optional(), Length(max=64)],
                           description=_l("Leave empty to use the site's time zone."))
    email = EmailField(_l("Email for reminders"), validators=[Optional(), _EMAIL, Length(max=254)])
    phone = StringField(
        _l("Mobile number for reminders"),
        validators=[Optional(), Regexp(r"^\+[1-9][0-9]{6,14}$", message=_l("Use the international format, e.g. +4930123456."))],
    )
    lymphodepletion = DateTimeLocalField(_l("Lymphodepletion start"), validators=[Optional()], format="%Y-%m-%dT%H:%M")
    infusion = DateTimeLocalField(_l("Infusion"), validators=[Optional()], format="%Y-%m-%dT%H:%M")


class ReasonForm(Form):
    reason = TextAreaField(_l("Reason"), validators=[DataRequired(_REQUIRED), Length(max=1000)])


class ConfirmForm(Form):
    """A button that changes something (CSRF only)."""


class TabletStartForm(Form):
    assessment = IntegerField(validators=[DataRequired()])
    mode = SelectField(choices=options([("tablet", "tablet"), ("interview", "interview")]), validators=[DataRequired()])


class UnlockForm(Form):
    password = PasswordField(_l("Your password"), validators=[DataRequired(_REQUIRED), Length(max=200)])


class AcknowledgeForm(Form):
    note = TextAreaField(_l("What was done"), validators=[DataRequired(_REQUIRED), Length(max=2000)])


class UserForm(Form):
    email = EmailField(_l("Email"), validators=[DataRequired(_REQUIRED), _EMAIL, Length(max=254)])
    role = SelectField(_l("Role"), choices=options([("nurse", _l("Nurse")), ("analyst", _l("Analyst")), ("admin", _l("Administrator"))]))
    sites = SelectMultipleField(_l("Sites"), coerce=int)
    password = PasswordField(_l("Initial password"), validators=[DataRequired(_REQUIRED), Length(max=200)])


class ResetPasswordForm(Form):
    password = PasswordField(_l("New password"), validators=[DataRequired(_REQUIRED), Length(max=200)])


class SecondFactorCodeForm(Form):
    """A 6-digit code from the authenticator app (spaces allowed, checked by the service)."""

    code = StringField(_l("Code from your authenticator app"), validators=[DataRequired(_REQUIRED), Length(max=20)])


class RemoveSecondFactorForm(Form):
    password = PasswordField(_l("Your password"), validators=[DataRequired(_REQUIRED), Length(max=200)])


class ResetSecondFactorForm(Form):
    reason = StringField(_l("Reason"), validators=[DataRequired(_REQUIRED), Length(max=1000)])


class StudySettingsForm(Form):
    require_second_factor = BooleanField(_l("Require a second factor for administrator and analyst accounts"))


class AlertRuleEntry(Form):
    class Meta:
        csrf = False  # part of AlertRulesForm, which carries the token

    scale = HiddenField()
    enabled = BooleanField()
    threshold = DecimalField(places=None, validators=[DataRequired(_REQUIRED), NumberRange(0, 100, _l("Use a score from 0 to 100."))])


class AlertRulesForm(Form):
    rules = FieldList(FormField(AlertRuleEntry))
    worsening_enabled = BooleanField(_l("Alert on worsening from baseline"))
    worsening_points = IntegerField(_l("Points of worsening"), validators=[Optional(), NumberRange(1, 100, _l("Use 1 to 100 points."))])


class AnchorForm(Form):
    kind = SelectField(
        _l("Protocol event"),
        choices=options([("lymphodepletion", _l("Lymphodepletion start")), ("infusion", _l("Infusion")),
                 ("enrolment", _l("Enrolment"))]),
    )
    occurred_at = DateTimeLocalField(_l("New date and time (participant's local time)"), format="%Y-%m-%dT%H:%M",
                                     validators=[DataRequired(_REQUIRED)])
    reason = TextAreaField(_l("Reason"), validators=[DataRequired(_REQUIRED), Length(max=1000)])


class TimepointEntry(Form):
    class Meta:
        csrf = False  # part of ScheduleForm, which carries the token

    code = StringField(_l("Code"), validators=[Optional(), Length(max=40)])
    label = StringField(_l("Label"), validators=[Optional(), Length(max=200)])
    anchor_kind = SelectField(_l("Counted from"), choices=options([
        ("enrolment", _l("Enrolment")), ("lymphodepletion", _l("Lymphodepletion start")), ("infusion", _l("Infusion"))]))
    offset = IntegerField(_l("Offset"), validators=[Optional()])
    offset_unit = SelectField(_l("Unit"), choices=options([("days", _l("days")), ("hours", _l("hours"))]))
    window_before = IntegerField(_l("Window before"), validators=[Optional(), NumberRange(min=0)])
    window_after = IntegerField(_l("Window after"), validators=[Optional(), NumberRange(min=0)])
    window_unit = SelectField(_l("Window unit"), choices=options([("days", _l("days")), ("hours", _l("hours"))]))
    repeat_every = IntegerField(_l("Repeat every"), validators=[Optional(), NumberRange(min=1)])
    repeat_until = IntegerField(_l("Repeat until"), validators=[Optional()])
    remove = BooleanField(_l("Remove"))


class ScheduleForm(Form):
    rows = FieldList(FormField(TimepointEntry))


class ExportForm(Form):
    format = SelectField(_l("Format"), validators=[DataRequired(_REQUIRED)])
    sites = SelectMultipleField(_l("Sites"), coerce=str, validators=[Optional()])
    arms = SelectMultipleField(_l("Dose groups"), coerce=str, validators=[Optional()])
    timepoints = SelectMultipleField(_l("Timepoints"), coerce=str, validators=[Optional()])
    date_from = DateField(_l("Planned from"), validators=[Optional()])
    date_to = DateField(_l("Planned until"), validators=[Optional()])
    include_incomplete = BooleanField(_l("Include questionnaires that were not completed"))
