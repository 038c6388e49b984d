"""Who the staff user is on this request, and what they may do.

Checked on every request: the account is active, the session's version equals the
account's (logout, password change and deactivation bump it, ending copied cookies too), the
session has not been idle longer than ``STAFF_SESSION_MINUTES``, the role is allowed, a
tablet handed to a patient is not unlocked, and an administrator or analyst whom a study
requires to use a second factor has set one up (until then only the enrolment page and
signing out are reachable).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import abort, current_app, g, redirect, request, session, url_for

from pro_app.db.models import Participant, StaffUser
from pro_app.extensions import database
from pro_app.services.second_factor import enrolment_required
from pro_app.services.staff import can_see_site

SESSION_KEY = "staff"
TABLET_KEY = "tablet"

F = TypeVar("F", bound=Callable[..., Any])


def sign_in(user: StaffUser) -> None:
    language = session.get("lang")
    session.clear()  # a new session for a new sign-in (no fixation)
    if language:
        session["lang"] = language
    session[SESSION_KEY] = {"id": user.id, "v": user.session_version, "seen": int(time.time())}


def sign_out() -> None:
    language = session.get("lang")
    session.clear()
    if language:
        session["lang"] = language


def current_staff() -> StaffUser | None:
    """The signed-in staff user, or None (and the stale session is dropped)."""
    if "staff_user" in g:
        return g.staff_user  # type: ignore[no-any-return]
    data = session.get(SESSION_KEY)
    user = None
    if isinstance(data, dict):
        candidate = database.session.get(StaffUser, data.get("id"))
        idle_limit = current_app.config["STAFF_SESSION_MINUTES"] * 60
        fresh = time.time() - float(data.get("seen", 0)) <= idle_limit
        if candidate is not None and candidate.is_active and candidate.session_version == data.get("v") and fresh:
            user = candidate
            data["seen"] = int(time.time())
            session.modified = True
        else:
            session.pop(SESSION_KEY, None)
    g.staff_user = user
    if user is not None and user.locale:
        g.preferred_locale = user.locale
    return user


def tablet_locked() -> bool:
    return TABLET_KEY in session


def second_factor_due(user: StaffUser) -> bool:
    """True while a study requires this user to set up a second factor (once per request)."""
    if "second_factor_due" not in g:
        g.second_factor_due = enrolment_required(database.session, user)
    return bool(g.second_factor_due)


def staff_required(*roles: str, before_second_factor: bool = False) -> Callable[[F], F]:
    """Only signed-in staff of ``roles`` (any role when none given), never while the tablet
    is in a patient's hands, and only once a second factor required of them is set up
    (``before_second_factor`` marks the enrolment pages themselves)."""

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if tablet_locked():
                return redirect(url_for("staff_auth.tablet_unlock"))
            user = current_staff()
            if user is None:
                return redirect(url_for("staff_auth.login", next=request.full_path.rstrip("?")))
            if roles and user.role not in roles:
                abort(403)
            if not before_second_factor and second_factor_due(user):
                return redirect(url_for("staff_auth.second_factor"))
            return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorator


def staff_user() -> StaffUser:
    user = current_staff()
    assert user is not None, "use inside a @staff_required view"
    return user


def participant_or_404(participant_id: int) -> Participant:
    """A participant the signed-in user may see; others do not exist for them."""
    participant = database.session.get(Participant, participant_id)
    if participant is None or not can_see_site(staff_user(), participant.site_id):
        abort(404)
    return participant
