"""Staff sign-in (password, then the second factor when the account has one) and sign-out,
password change, the second factor's set-up, and unlocking a tablet after a patient.

Between the accepted password and the code, the session holds only a short-lived "pending"
marker (account id, session version, time): it is not signed in, so every staff page still
sends the browser to the sign-in page.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from pro_app.db.models import StaffUser
from pro_app.domain.errors import Conflict, DomainError
from pro_app.extensions import database
from pro_app.services import second_factor
from pro_app.services.audit import record_event
from pro_app.services.auth import (
    CodeRequired,
    LoginRefused,
    SignInExpired,
    authenticate,
    change_password,
    complete_second_factor,
    end_all_sessions,
    verify_password,
)
from pro_app.web.i18n import safe_next
from pro_app.web.patient.context import sign_out_patient
from pro_app.web.staff.forms import (
    LoginForm,
    PasswordChangeForm,
    RemoveSecondFactorForm,
    SecondFactorCodeForm,
    UnlockForm,
)
from pro_app.web.staff.guard import (
    TABLET_KEY,
    current_staff,
    second_factor_due,
    sign_in,
    sign_out,
    staff_required,
    staff_user,
    tablet_locked,
)
from pro_app.web.staff.pages import qr_svg

bp = Blueprint("staff_auth", __name__, url_prefix="/staff")
Page = str | tuple[str, int] | Response
PENDING_KEY = "staff_pending"
SECOND_FACTOR_ROLES = tuple(sorted(second_factor.ELIGIBLE_ROLES))


def _sealing_key() -> bytes:
    return second_factor.sealing_key(current_app.config["SECRET_KEY"])


def _client() -> str:
    return request.remote_addr or ""


@bp.route("/login", methods=["GET", "POST"])
def login() -> Page:
    form = LoginForm(next=request.args.get("next", ""))
    if not form.validate_on_submit():
        return render_template("staff/login.html", form=form), 400 if form.is_submitted() else 200
    db = database.session
    try:
        result = authenticate(db, email=form.email.data, password=form.password.data, client=_client())
    except LoginRefused as refused:
        db.commit()  # failed attempts count even though the sign-in fails
        form.password.errors.append(_(refused.message, **refused.params))
        return render_template("staff/login.html", form=form), 401
    db.commit()
    if isinstance(result, CodeRequired):
        sign_out()  # nothing of an earlier session survives into the new one
        session[PENDING_KEY] = {"id": result.user.id, "v": result.session_version, "at": int(time.time()),
                                "next": form.next.data or ""}
        return redirect(url_for("staff_auth.login_code"), code=303)
    sign_in(result.user)
    return redirect(safe_next(form.next.data, url_for("dashboard.home")), code=303)


def _pending() -> dict[str, Any] | None:
    """The half-finished sign-in of this browser, while it is recent enough."""
    pending = session.get(PENDING_KEY)
    if not isinstance(pending, dict):
        return None
    limit = current_app.config["SECOND_FACTOR_PENDING_MINUTES"] * 60
    if time.time() - float(pending.get("at", 0)) > limit:
        session.pop(PENDING_KEY, None)
        return None
    return pending


@bp.route("/login/code", methods=["GET", "POST"])
def login_code() -> Page:
    """The second step of signing in: the code from the authenticator app."""
    pending = _pending()
    if pending is None:
        if request.method == "POST":
            return render_template("staff/login.html", form=LoginForm(formdata=None),
                                   message=_("Please sign in again.")), 401
        return redirect(url_for("staff_auth.login"), code=303)
    form = SecondFactorCodeForm()
    if not form.validate_on_submit():
        return render_template("staff/second_factor_code.html", form=form), 400 if form.is_submitted() else 200
    db = database.session
    try:
        signed_in = complete_second_factor(db, user_id=int(pending["id"]), session_version=int(pending["v"]),
                                           code=form.code.data, client=_client(), key=_sealing_key())
    except SignInExpired as expired:
        db.commit()  # the failure (and a lock) is recorded
        session.pop(PENDING_KEY, None)
        return render_template("staff/login.html", form=LoginForm(formdata=None, next=pending.get("next", "")),
                               message=_(expired.message, **expired.params)), 401
    except LoginRefused as refused:
        db.commit()
        form.code.errors.append(_(refused.message, **refused.params))
        return render_template("staff/second_factor_code.html", form=form), 401
    db.commit()
    sign_in(signed_in.user)  # also drops the pending marker
    return redirect(safe_next(pending.get("next"), url_for("dashboard.home")), code=303)


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


@bp.route("/second-factor", methods=["GET", "POST"], endpoint="second_factor")
@staff_required(*SECOND_FACTOR_ROLES, before_second_factor=True)
def second_factor_page() -> Page:
    """Set up the second factor (scan, then confirm with a code), or see that it is on."""
    user = staff_user()
    db = database.session
    required = second_factor.requiring_studies(db, user)
    if user.has_second_factor:
        status = 409 if request.method == "POST" else 200
        return render_template("staff/second_factor.html", user=user, required=required,
                               remove_form=RemoveSecondFactorForm(formdata=None),
                               done=request.args.get("done") == "1"), status
    issuer = current_app.config["SECOND_FACTOR_ISSUER"]
    if request.method == "GET":
        enrolment = second_factor.begin_enrolment(db, user, key=_sealing_key(), issuer=issuer)
        db.commit()
    else:  # a refused confirmation must change nothing: only a stored set-up can be confirmed
        pending = second_factor.pending_enrolment(user, key=_sealing_key(), issuer=issuer)
        if pending is None:
            return redirect(url_for("staff_auth.second_factor"), code=303)
        enrolment = pending
    form = SecondFactorCodeForm()
    status = 200
    if form.validate_on_submit():
        try:
            second_factor.confirm_enrolment(db, user, code=form.code.data, key=_sealing_key())
        except DomainError as error:
            db.rollback()
            form.code.errors.append(_(error.message, **error.params))
            status = 409 if isinstance(error, Conflict) else 400
        else:
            db.commit()
            sign_in(user)  # other sessions ended; this one goes on with the new version
            return redirect(url_for("staff_auth.second_factor", done=1), code=303)
    elif form.is_submitted():
        status = 400
    return render_template("staff/second_factor_setup.html", form=form, enrolment=enrolment, required=required,
                           due=second_factor_due(user), qr=qr_svg(enrolment.uri)), status


@bp.post("/second-factor/remove")
@staff_required(*SECOND_FACTOR_ROLES)
def remove_second_factor() -> Page:
    """Switch one's own second factor off (password asked again); refused while a study
    requires it."""
    user = staff_user()
    db = database.session
    if not user.has_second_factor:
        return render_template("staff/message.html", title=_("Second factor"),
                               message=_("Your second factor is not switched on.")), 409
    form = RemoveSecondFactorForm()
    status = 400
    if form.validate_on_submit():
        try:
            second_factor.remove_own(db, user, password=form.password.data)
        except DomainError as error:
            db.rollback()
            form.password.errors.append(_(error.message, **error.params))
            status = 409 if isinstance(error, Conflict) else 400
        else:
            db.commit()
            sign_in(user)  # other sessions ended; this one goes on with the new version
            return redirect(url_for("staff_auth.second_factor"), code=303)
    required = second_factor.requiring_studies(db, user)
    return render_template("staff/second_factor.html", user=user, required=required, remove_form=form), status


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
