"""Administration: staff accounts (with their second factor), each study's settings and alert
rules (administrators only)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy import select
from werkzeug.wrappers import Response

from pro_app.db.models import Site, StaffUser, Study
from pro_app.domain.errors import Conflict, DomainError
from pro_app.domain.instruments import default_registry
from pro_app.domain.schedule import BUILTIN_TEMPLATES, TimepointRule, plan_assessments
from pro_app.domain.states import Role, TimeUnit
from pro_app.extensions import database
from pro_app.services import second_factor
from pro_app.services.alerts import rule_settings, save_rule_settings
from pro_app.services.auth import reset_password, set_active
from pro_app.services.schedules import load_builtin_template, rules_of, save_template_rules, study_template
from pro_app.services.staff import create_staff_user
from pro_app.web.choices import options
from pro_app.web.staff.forms import (
    AlertRulesForm,
    ConfirmForm,
    ResetPasswordForm,
    ResetSecondFactorForm,
    ScheduleForm,
    StudySettingsForm,
    UserForm,
)
from pro_app.web.staff.guard import staff_required, staff_user
from pro_app.web.staff.pages import attach_error

bp = Blueprint("admin", __name__, url_prefix="/staff/admin")
Page = str | tuple[str, int] | Response


def _actor() -> str:
    return f"staff:{staff_user().id}"


def _user_form() -> UserForm:
    form = UserForm()
    form.sites.choices = options(
        (site.id, f"{site.name} ({site.study.code})")
        for site in database.session.scalars(select(Site).order_by(Site.name))
    )
    return form


@bp.route("/users", methods=["GET", "POST"])
@staff_required(Role.ADMIN.value)
def users() -> Page:
    form = _user_form()
    status = 200
    if form.validate_on_submit():
        try:
            create_staff_user(
                database.session, email=form.email.data, password=form.password.data, role=form.role.data,
                site_ids=form.sites.data or [], actor=_actor(),
            )
        except DomainError as error:
            database.session.rollback()
            attach_error(form, error)
            status = 409 if error.field == "email" and "exists" in error.message else 400
        else:
            database.session.commit()
            return redirect(url_for("admin.users"), code=303)
    elif form.is_submitted():
        status = 400
    accounts = database.session.scalars(select(StaffUser).order_by(StaffUser.email)).all()
    return render_template("staff/users.html", form=form, accounts=accounts, confirm_form=ConfirmForm(),
                           reset_form=ResetPasswordForm(formdata=None),
                           factor_form=ResetSecondFactorForm(formdata=None)), status


def _account(user_id: int) -> StaffUser:
    account = database.session.get(StaffUser, user_id)
    if account is None:
        abort(404)
    return account


@bp.post("/users/<int:user_id>/active")
@staff_required(Role.ADMIN.value)
def toggle_active(user_id: int) -> Response:
    account = _account(user_id)
    if not ConfirmForm().validate_on_submit() or account.id == staff_user().id:
        abort(400)  # nobody deactivates their own account by accident
    set_active(database.session, account, active=not account.is_active, actor=_actor())
    database.session.commit()
    return redirect(url_for("admin.users"), code=303)


@bp.post("/users/<int:user_id>/password")
@staff_required(Role.ADMIN.value)
def reset(user_id: int) -> Page:
    account = _account(user_id)
    form = ResetPasswordForm()
    if form.validate_on_submit():
        try:
            reset_password(database.session, account, new=form.password.data, actor=_actor())
        except DomainError as error:
            database.session.rollback()
            return render_template("staff/message.html", title=_("Password not changed"),
                                   message=_(error.message, **error.params)), 400
        database.session.commit()
        return redirect(url_for("admin.users"), code=303)
    return render_template("staff/message.html", title=_("Password not changed"),
                           message=_("Please type the new password.")), 400


@bp.post("/users/<int:user_id>/second-factor")
@staff_required(Role.ADMIN.value)
def reset_second_factor(user_id: int) -> Page:
    """Remove an account's second factor (a lost phone), with a reason for the audit trail."""
    account = _account(user_id)
    form = ResetSecondFactorForm()
    title = _("Second factor not reset")
    if account.id == staff_user().id:
        return render_template("staff/message.html", title=title,
                               message=_("Manage your own second factor on your account page.")), 400
    if not form.validate_on_submit():
        return render_template("staff/message.html", title=title, message=_("Please give a reason.")), 400
    try:
        second_factor.reset(database.session, account, actor=_actor(), reason=form.reason.data)
    except DomainError as error:
        database.session.rollback()
        return render_template("staff/message.html", title=title, message=_(error.message, **error.params)), (
            409 if isinstance(error, Conflict) else 400)
    database.session.commit()
    return redirect(url_for("admin.users"), code=303)


def _study(study_id: int) -> Study:
    study = database.session.get(Study, study_id)
    if study is None:
        abort(404)
    return study


@bp.route("/studies/<int:study_id>/settings", methods=["GET", "POST"])
@staff_required(Role.ADMIN.value)
def study_settings(study_id: int) -> Page:
    """Study-wide security settings: whether administrators and analysts need a second factor."""
    study = _study(study_id)
    form = StudySettingsForm()
    if form.validate_on_submit():
        second_factor.set_requirement(database.session, study, required=bool(form.require_second_factor.data),
                                      actor=_actor())
        database.session.commit()
        return redirect(url_for("admin.study_settings", study_id=study.id, saved=1), code=303)
    status = 400 if form.is_submitted() else 200
    if not form.is_submitted():
        form.require_second_factor.data = study.require_second_factor
    missing = second_factor.accounts_without(database.session, study)
    return render_template("staff/study_settings.html", study=study, form=form, missing=missing,
                           saved=request.args.get("saved") == "1"), status


@bp.route("/studies/<int:study_id>/alerts", methods=["GET", "POST"])
@staff_required(Role.ADMIN.value)
def alert_rules(study_id: int) -> Page:
    study = database.session.get(Study, study_id)
    if study is None:
        abort(404)
    instrument = default_registry().get(study.instrument_code, study.instrument_version)
    settings = rule_settings(database.session, study, instrument)
    form = AlertRulesForm()
    if not form.is_submitted():
        for setting in settings:
            form.rules.append_entry({"scale": setting.scale, "enabled": setting.enabled, "threshold": setting.threshold})
        form.worsening_enabled.data = study.worsening_alert_points is not None
        form.worsening_points.data = int(study.worsening_alert_points or 10)
    elif form.validate():
        changes = {entry.scale.data: (bool(entry.enabled.data), float(entry.threshold.data)) for entry in form.rules}
        points = float(form.worsening_points.data or 10) if form.worsening_enabled.data else None
        try:
            save_rule_settings(database.session, study, instrument, changes, worsening_points=points, actor=_actor())
        except DomainError as error:
            database.session.rollback()
            return render_template("staff/alert_rules.html", study=study, form=form, settings=settings,
                                   message=_(error.message, **error.params)), 400
        database.session.commit()
        return redirect(url_for("admin.alert_rules", study_id=study.id, saved=1), code=303)
    else:
        return render_template("staff/alert_rules.html", study=study, form=form, settings=settings), 400
    return render_template("staff/alert_rules.html", study=study, form=form, settings=settings)


BLANK_ROWS = 3
#: The schedule a study without one is offered (and given when an administrator first saves).
DEFAULT_TEMPLATE = "qol_6_weekly"


def _rules_from(form: ScheduleForm) -> list[TimepointRule]:
    rules = []
    for entry in form.rows:
        row = entry.form
        if row.remove.data or not (row.code.data or "").strip():
            continue
        rules.append(TimepointRule(
            code=row.code.data.strip(), label=(row.label.data or "").strip(), anchor_kind=row.anchor_kind.data,
            offset=row.offset.data or 0, offset_unit=TimeUnit(row.offset_unit.data),
            window_before=row.window_before.data or 0, window_after=row.window_after.data or 0,
            window_unit=TimeUnit(row.window_unit.data), repeat_every=row.repeat_every.data,
            repeat_until=row.repeat_until.data,
        ))
    return rules


def _example_anchors(study: Study) -> tuple[dict[str, datetime], str]:
    """Anchors for the preview: from the query string, else a week from today at 09:00."""
    zone = study.timezone
    start = datetime.now(ZoneInfo(zone)).replace(hour=9, minute=0, second=0, microsecond=0) + timedelta(days=7)
    anchors = {"enrolment": start - timedelta(days=7), "lymphodepletion": start, "infusion": start + timedelta(days=5)}
    for kind in anchors:
        typed = request.args.get(kind)
        if typed:
            try:
                anchors[kind] = datetime.strptime(typed, "%Y-%m-%dT%H:%M").replace(tzinfo=ZoneInfo(zone))
            except ValueError:
                abort(400)
    return anchors, zone


@bp.route("/studies/<int:study_id>/schedule", methods=["GET", "POST"])
@staff_required(Role.ADMIN.value)
def schedules(study_id: int) -> Page:
    study = database.session.get(Study, study_id)
    if study is None:
        abort(404)
    anchors, zone = _example_anchors(study)  # refuses a malformed preview date before anything else
    template = study_template(database.session, study)
    # A study without a schedule is shown the default one; it is stored only when saved.
    current = rules_of(template) if template is not None else list(BUILTIN_TEMPLATES[DEFAULT_TEMPLATE][1])
    form = ScheduleForm()
    status, message = 200, None
    if form.is_submitted():
        if form.validate():
            try:
                if template is None:
                    template = load_builtin_template(database.session, study, DEFAULT_TEMPLATE, actor=_actor())
                save_template_rules(database.session, template, _rules_from(form), actor=_actor())
            except DomainError as error:
                database.session.rollback()
                status, message = (409 if isinstance(error, Conflict) else 400), _(error.message, **error.params)
            else:
                database.session.commit()
                return redirect(url_for("admin.schedules", study_id=study.id, saved=1), code=303)
        else:
            status, message = 400, _("Please correct the marked fields.")
    else:
        for rule in current:
            form.rows.append_entry({
                "code": rule.code, "label": rule.label, "anchor_kind": rule.anchor_kind, "offset": rule.offset,
                "offset_unit": rule.offset_unit.value, "window_before": rule.window_before,
                "window_after": rule.window_after, "window_unit": rule.window_unit.value,
                "repeat_every": rule.repeat_every, "repeat_until": rule.repeat_until,
            })
        for _blank in range(BLANK_ROWS):
            form.rows.append_entry()
    g.timezone = zone
    preview = plan_assessments(current, anchors, zone)
    return render_template("staff/schedule.html", study=study, template=template, form=form, message=message,
                           preview=preview, anchors=anchors), status
