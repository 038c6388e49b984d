"""Staff sign-in and sign-out, password change, and unlocking a tablet after a patient."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from pro_app.db.models import StaffUser
from pro_app.domain.errors import DomainError
from pro_app.extensions import database
from pro_app.services.audit import record_event
from pro_app.services.auth import LoginRefused, authenticate, change_password, end_all_sessions, verify_password
from pro_app.web.i18n import safe_next
from pro_app.web.patient.context import sign_out_patient
from pro_app.web.staff.forms import LoginForm, PasswordChangeForm, UnlockForm
from pro_app.web.staff.guard import (
    TABLET_KEY,
    current_staff,
    sign_in,
    sign_out,
    staff_required,
    staff_user,
    tablet_locked,
)

bp = Blueprint("staff_auth", __name__, url_prefix="/staff")


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | tuple[str, int] | Response:
    form = LoginForm(next=request.args.get("next", ""))
    if not form.validate_on_submit():
        return render_template("staff/login.html", form=form), 400 if form.is_submitted() else 200
    db = database.session
    try:
        signed_in = authenticate(db, email=form.email.data, password=form.password.data, client=request.remote_addr or "")
    except LoginRefused as refused:
        db.commit()  # failed attempts count even though the sign-in fails
        form.password.errors.append(_(refused.message, **refused.params))
        return render_template("staff/login.html", form=form), 401
    db.commit()
    sign_in(signed_in.user)
    return redirect(safe_next(form.next.data, url_for("dashboard.home")), code=303)


@bp.post("/logout")
def logout() -> Response:
    """Signing out ends this user's sessions on every device (the cookie is dead server-side)."""
    if tablet_locked():
        return redirect(url_for("staff_auth.tablet_unlock"), code=303)
    user = current_staff()
    if user is not None:
        end_all_sessions(database.session, user, actor=f"staff:{user.id}")
        database.session.commit()
    sign_out()
    return redirect(url_for("staff_auth.login"), code=303)


@bp.route("/password", methods=["GET", "POST"])
@staff_required()
def password() -> str | tuple[str, int] | Response:
    form = PasswordChangeForm()
    user = staff_user()
    if form.validate_on_submit():
        try:
            change_password(database.session, user, current=form.current.data, new=form.new.data)
        except DomainError as error:
            database.session.rollback()
            field = form.current if error.field == "current" else form.new
            field.errors.append(_(error.message, **error.params))
            return render_template("staff/password.html", form=form), 400
        database.session.commit()
        sign_in(user)  # this device stays signed in with the new session version
        return render_template("staff/password.html", form=PasswordChangeForm(), changed=True)
    return render_template("staff/password.html", form=form), 400 if form.is_submitted() else 200


@bp.route("/tablet/unlock", methods=["GET", "POST"])
def tablet_unlock() -> str | tuple[str, int] | Response:
    """Hand-back: only the nurse who started tablet mode can unlock it, with their password."""
    lock = session.get(TABLET_KEY)
    if not isinstance(lock, dict):
        return redirect(url_for("dashboard.home"), code=303)
    form = UnlockForm()
    nurse = database.session.get(StaffUser, lock.get("staff"))
    if form.validate_on_submit():
        if nurse is not None and verify_password(nurse, form.password.data):
            participant_id = lock.get("participant")
            sign_out_patient()
            session.pop(TABLET_KEY, None)
            session.pop("lang", None)
            if lock.get("lang"):
                session["lang"] = lock["lang"]
            record_event(database.session, actor=f"staff:{nurse.id}", action="tablet.unlock",
                         entity_type="assessment", entity_id=lock.get("assessment"))
            database.session.commit()
            return redirect(url_for("participants.detail", participant_id=participant_id), code=303)
        form.password.errors.append(_("The password is not correct."))
        return render_template("staff/unlock.html", form=form), 401
    return render_template("staff/unlock.html", form=form), 400 if form.is_submitted() else 200
