"""Staff sign-in: passwords, throttling, lockout and ending sessions.

- A wrong password counts against the account: after ``MAX_FAILURES`` in a row the account
  is locked for ``LOCKOUT``; each client address is throttled too, so one machine cannot try
  many accounts.
- Every staff session carries the account's ``session_version``; logout everywhere, password
  changes and deactivation bump it, which ends every session at once on every server.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash

from pro_app.db.models import StaffUser
from pro_app.db.types import utcnow
from pro_app.domain.errors import N_, DomainError, ValidationError
from pro_app.services.audit import record_event
from pro_app.services.staff import hash_password, normalise_email, password_matches, validate_password
from pro_app.services.throttle import register_attempt

MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)
ATTEMPTS_PER_ADDRESS = 30
ADDRESS_WINDOW = timedelta(minutes=15)


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """Checked against when the account does not exist, so both paths cost one scrypt run
    (the response time does not reveal which emails have accounts)."""
    return hash_password("not-a-real-password-0000")


class LoginRefused(DomainError):
    """Sign-in failed; the message never says whether the email exists."""


@dataclass(frozen=True)
class SignedIn:
    user: StaffUser
    session_version: int


def authenticate(
    session: Session, *, email: str, password: str, client: str, now: datetime | None = None
) -> SignedIn:
    """Check the credentials; count failures; lock the account after too many.

    The caller commits in every case, so failures are recorded even though the sign-in fails.
    """
    now = now or utcnow()
    if not register_attempt(session, f"login:ip:{client}", limit=ATTEMPTS_PER_ADDRESS, window=ADDRESS_WINDOW, now=now):
        raise LoginRefused(N_("Too many sign-in attempts from this device. Please wait 15 minutes."))
    user = session.scalars(select(StaffUser).where(StaffUser.email == normalise_email(email))).one_or_none()
    if user is None:
        check_password_hash(_dummy_hash(), password)
        raise LoginRefused(N_("The email or password is not correct."))
    if user.locked_until is not None and user.locked_until > now:
        raise LoginRefused(N_("This account is locked after too many failed attempts. Please try again in 15 minutes."))
    if not password_matches(user, password):
        user.failed_logins += 1
        if user.failed_logins >= MAX_FAILURES:
            user.locked_until = now + LOCKOUT
            user.failed_logins = 0
            record_event(session, actor="system", action="staff_user.lock", entity_type="staff_user",
                         entity_id=user.id, after={"locked_until": user.locked_until.isoformat()})
        session.flush()
        raise LoginRefused(N_("The email or password is not correct."))
    if not user.is_active:
        raise LoginRefused(N_("This account has been deactivated. Please contact your administrator."))
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    session.flush()
    record_event(session, actor=f"staff:{user.id}", action="staff_user.login", entity_type="staff_user", entity_id=user.id)
    return SignedIn(user, user.session_version)


def end_all_sessions(session: Session, user: StaffUser, *, actor: str, reason: str = "logout") -> None:
    user.session_version += 1
    session.flush()
    record_event(session, actor=actor, action="staff_user.sessions_ended", entity_type="staff_user",
                 entity_id=user.id, after={"reason": reason})


def change_password(session: Session, user: StaffUser, *, current: str, new: str) -> None:
    if not password_matches(user, current):
        raise ValidationError(N_("The current password is not correct."), field="current")
    if new == current:
        raise ValidationError(N_("The new password must differ from the current one."), field="new")
    validate_password(new)
    user.password_hash = hash_password(new)
    end_all_sessions(session, user, actor=f"staff:{user.id}", reason="password changed")


def reset_password(session: Session, user: StaffUser, *, new: str, actor: str) -> None:
    validate_password(new)
    user.password_hash = hash_password(new)
    user.locked_until = None
    user.failed_logins = 0
    end_all_sessions(session, user, actor=actor, reason="password reset")


def set_active(session: Session, user: StaffUser, *, active: bool, actor: str) -> None:
    if user.is_active == active:
        return
    user.is_active = active
    session.flush()
    record_event(session, actor=actor, action="staff_user.activate" if active else "staff_user.deactivate",
                 entity_type="staff_user", entity_id=user.id, before={"active": not active}, after={"active": active})
    if not active:
        end_all_sessions(session, user, actor=actor, reason="deactivated")


def verify_password(user: StaffUser, password: str) -> bool:
    return user.is_active and password_matches(user, password)
