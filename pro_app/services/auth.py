"""Staff sign-in: passwords, throttling, lockout and ending sessions.

- A wrong password counts against the account: after ``MAX_FAILURES`` in a row the account
  is locked for ``LOCKOUT``; each client address is throttled too, so one machine cannot try
  many accounts.
- Every staff session carries the account's ``session_version``; logout everywhere, password
  changes and deactivation bump it, which ends every session at once on every server.
- An account with a second factor is signed in only after its code: the right password alone
  neither signs in nor clears the failure count, and a wrong code counts like a wrong
  password (towards the account's lockout and the address's throttle), so knowing the
  password does not buy unlimited guesses at the code.
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
from pro_app.services import second_factor
from pro_app.services.audit import record_event
from pro_app.services.staff import (
    end_all_sessions,
    hash_password,
    normalise_email,
    password_matches,
    validate_password,
)
from pro_app.services.throttle import register_attempt

__all__ = [
    "CodeRequired", "LoginRefused", "SignInExpired", "SignedIn", "authenticate", "change_password",
    "complete_second_factor", "end_all_sessions", "reset_password", "set_active", "verify_password",
]

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


class SignInExpired(LoginRefused):
    """The half-finished sign-in (password accepted, code pending) is over: start again."""


@dataclass(frozen=True)
class SignedIn:
    user: StaffUser
    session_version: int


@dataclass(frozen=True)
class CodeRequired:
    """The password was right; the account's second factor must follow before signing in."""

    user: StaffUser
    session_version: int


_WRONG = N_("The email or password is not correct.")
_LOCKED = N_("This account is locked after too many failed attempts. Please try again in 15 minutes.")


def _throttle(session: Session, client: str, now: datetime) -> None:
    if not register_attempt(session, f"login:ip:{client}", limit=ATTEMPTS_PER_ADDRESS, window=ADDRESS_WINDOW, now=now):
        raise LoginRefused(N_("Too many sign-in attempts from this device. Please wait 15 minutes."))


def _count_failure(session: Session, user: StaffUser, now: datetime) -> bool:
    """One more failure (password or code); True when it locked the account."""
    user.failed_logins += 1
    locked = user.failed_logins >= MAX_FAILURES
    if locked:
        user.locked_until = now + LOCKOUT
        user.failed_logins = 0
        record_event(session, actor="system", action="staff_user.lock", entity_type="staff_user",
                     entity_id=user.id, after={"locked_until": user.locked_until.isoformat()})
    session.flush()
    return locked


def _signed_in(session: Session, user: StaffUser, now: datetime, *, with_code: bool) -> SignedIn:
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    session.flush()
    record_event(session, actor=f"staff:{user.id}", action="staff_user.login", entity_type="staff_user",
                 entity_id=user.id, after={"second_factor": "totp"} if with_code else None)
    return SignedIn(user, user.session_version)


def authenticate(
    session: Session, *, email: str, password: str, client: str, now: datetime | None = None
) -> SignedIn | CodeRequired:
    """Check the credentials; count failures; lock the account after too many.

    Returns :class:`CodeRequired` instead of signing in when the account has a second factor.
    The caller commits in every case, so failures are recorded even though the sign-in fails.
    """
    now = now or utcnow()
    _throttle(session, client, now)
    user = session.scalars(select(StaffUser).where(StaffUser.email == normalise_email(email))).one_or_none()
    if user is None:
        check_password_hash(_dummy_hash(), password)
        raise LoginRefused(_WRONG)
    if user.locked_until is not None and user.locked_until > now:
        raise LoginRefused(_LOCKED)
    if not password_matches(user, password):
        _count_failure(session, user, now)
        raise LoginRefused(_WRONG)
    if not user.is_active:
        raise LoginRefused(N_("This account has been deactivated. Please contact your administrator."))
    if user.has_second_factor:
        return CodeRequired(user, user.session_version)
    return _signed_in(session, user, now, with_code=False)


def complete_second_factor(
    session: Session,
    *,
    user_id: int,
    session_version: int,
    code: str,
    client: str,
    key: bytes,
    now: datetime | None = None,
) -> SignedIn:
    """The second step: the code of the account whose password was just accepted.

    The caller commits in every case. Raises :class:`SignInExpired` when the pending sign-in
    can no longer finish (account changed or deactivated meanwhile, or locked by this very
    failure), else :class:`LoginRefused` for a wrong, malformed or reused code.
    """
    now = now or utcnow()
    _throttle(session, client, now)
    user = session.get(StaffUser, user_id)
    if user is None or not user.is_active or user.session_version != session_version or not user.has_second_factor:
        raise SignInExpired(N_("Please sign in again."))
    if user.locked_until is not None and user.locked_until > now:
        raise SignInExpired(_LOCKED)
    try:
        second_factor.check_code(session, user, code, key=key, now=now)
    except second_factor.SecondFactorUnavailable as error:
        raise SignInExpired(error.message) from None
    except second_factor.CodeRejected as error:
        if _count_failure(session, user, now):
            raise SignInExpired(_LOCKED) from None
        raise LoginRefused(error.message) from None
    return _signed_in(session, user, now, with_code=True)


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
