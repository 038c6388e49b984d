"""The second factor of staff sign-in: a code from an authenticator app (TOTP, RFC 6238).

- **Who.** Administrators and analysts may switch it on: between them they reach every site
  (administrators) or export a study's data (analysts). Nurses sign in on shared ward
  computers and unlock tablets with their password, and are not offered it.
- **Required by a study.** A study can require it (``Study.require_second_factor``). It then
  applies to every administrator (they reach every study) and to every analyst who has at
  least one of the study's sites (``staff_sites``), i.e. everybody who can see or export its
  data. Such a user without a second factor is sent to enrolment at their next request and
  reaches nothing else until they have set it up, and cannot switch it off while required.
- **Enrolment.** A new random secret is stored at once (so reloading the page shows the same
  one) but only becomes active when the user types a valid code from their app: nobody is
  locked out by a secret that was never scanned. After that it is never shown again.
- **Storage.** The secret is sealed with AES-256-GCM under a key derived from the
  application's ``SECRET_KEY`` (HKDF-SHA256), with the account id as associated data, so a
  copy of the database alone (a backup, a read-only leak) does not reveal the secrets and a
  sealed secret cannot be moved to another account. The trade-off: changing ``SECRET_KEY``
  makes every stored secret unreadable; those users cannot sign in until an administrator
  resets their second factor (``pro-app reset-second-factor`` for the last administrator).
- **Codes** are accepted one step either side of the current 30-second step (clock drift), and
  each step only once per account (the last accepted step is stored with a conditional UPDATE,
  so two requests racing with the same code cannot both win).
"""

from __future__ import annotations

import base64
import functools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from pro_app.db.models import Site, StaffUser, Study
from pro_app.db.models.staff import staff_sites
from pro_app.db.types import utcnow
from pro_app.domain import totp
from pro_app.domain.errors import N_, Conflict, DomainError, ValidationError
from pro_app.domain.states import Role
from pro_app.services.audit import record_event
from pro_app.services.staff import end_all_sessions, password_matches

#: Roles that may (and, when a study requires it, must) use a second factor.
ELIGIBLE_ROLES = frozenset({Role.ADMIN.value, Role.ANALYST.value})
_SEALED_PREFIX = "v1:"
_HKDF_INFO = b"pro-app staff second factor secret v1"
_NONCE_BYTES = 12


class SecondFactorUnavailable(DomainError):
    """The stored secret cannot be read (the application's secret key has changed)."""


class CodeRejected(ValidationError):
    """A code that was wrong, malformed or already used."""


@functools.lru_cache(maxsize=4)
def sealing_key(secret_key: str) -> bytes:
    """The 256-bit key that seals second-factor secrets, derived from the app's secret key
    (a separate key for a separate purpose: it never signs cookies)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(secret_key.encode("utf-8"))


def _associated_data(user_id: int) -> bytes:
    return f"staff_user:{user_id}".encode("ascii")


def seal(key: bytes, user_id: int, secret: bytes) -> str:
    nonce = secrets.token_bytes(_NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, secret, _associated_data(user_id))
    return _SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def unseal(key: bytes, user_id: int, sealed: str) -> bytes:
    if not sealed.startswith(_SEALED_PREFIX):
        raise SecondFactorUnavailable(N_("The second factor of this account cannot be checked. Please ask an administrator to reset it."))
    try:
        raw = base64.urlsafe_b64decode(sealed[len(_SEALED_PREFIX):].encode("ascii"))
        return AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _associated_data(user_id))
    except (InvalidTag, ValueError):
        raise SecondFactorUnavailable(
            N_("The second factor of this account cannot be checked. Please ask an administrator to reset it.")
        ) from None


def may_use(user: StaffUser) -> bool:
    return user.role in ELIGIBLE_ROLES


def requiring_studies(session: Session, user: StaffUser) -> Sequence[Study]:
    """The studies this user has access to that require a second factor of them.

    Access to a study: administrators have access to every study; analysts to each study
    with at least one of their sites. Nurses are never required to use one.
    """
    if not may_use(user):
        return []
    query = select(Study).where(Study.require_second_factor.is_(True)).order_by(Study.code)
    if user.role != Role.ADMIN.value:
        own_studies = (
            select(Site.study_id)
            .join(staff_sites, staff_sites.c.site_id == Site.id)
            .where(staff_sites.c.staff_user_id == user.id)
        )
        query = query.where(Study.id.in_(own_studies))
    return session.scalars(query).all()


def enrolment_required(session: Session, user: StaffUser) -> bool:
    """True while the user must set up a second factor before doing anything else."""
    return may_use(user) and not user.has_second_factor and bool(requiring_studies(session, user))


@dataclass(frozen=True)
class Enrolment:
    """What the enrolment page shows: the secret for typing and the URI for the QR code."""

    secret: str
    uri: str


def _enrolment(user: StaffUser, secret: bytes, issuer: str) -> Enrolment:
    return Enrolment(
        secret=totp.grouped(totp.to_base32(secret)),
        uri=totp.provisioning_uri(secret, account=user.email, issuer=issuer),
    )


def pending_enrolment(user: StaffUser, *, key: bytes, issuer: str) -> Enrolment | None:
    """The set-up in progress (secret stored, not yet confirmed), read without writing."""
    if user.has_second_factor or user.second_factor_secret is None:
        return None
    try:
        return _enrolment(user, unseal(key, user.id, user.second_factor_secret), issuer)
    except SecondFactorUnavailable:
        return None  # sealed under an old key: begin_enrolment starts afresh


def begin_enrolment(session: Session, user: StaffUser, *, key: bytes, issuer: str) -> Enrolment:
    """The secret to scan; a new one unless a not yet confirmed one is stored already."""
    if not may_use(user):
        raise ValidationError(N_("A second factor is available to administrators and analysts."))
    if user.has_second_factor:
        raise Conflict(N_("Your second factor is already switched on."))
    pending = pending_enrolment(user, key=key, issuer=issuer)
    if pending is None:
        secret = totp.new_secret()
        user.second_factor_secret = seal(key, user.id, secret)
        user.second_factor_last_step = None
        session.flush()
        record_event(session, actor=f"staff:{user.id}", action="staff_user.second_factor_setup_started",
                     entity_type="staff_user", entity_id=user.id, after={"method": "totp", "enabled": False})
        pending = _enrolment(user, secret, issuer)
    return pending


def check_code(session: Session, user: StaffUser, code: str, *, key: bytes, now: datetime | None = None) -> int:
    """Accept ``code`` for ``user`` once: returns the time step it belonged to.

    Raises :class:`CodeRejected` for a malformed, wrong or already used code.
    """
    now = now or utcnow()
    digits = totp.normalise_code(code)
    if digits is None:
        raise CodeRejected(N_("Enter the 6-digit code shown in your authenticator app."), field="code")
    if user.second_factor_secret is None:
        raise CodeRejected(N_("The code is not correct."), field="code")
    secret = unseal(key, user.id, user.second_factor_secret)
    moment = now.timestamp()
    step = totp.matching_step(secret, digits, moment, after_step=user.second_factor_last_step)
    if step is None:
        if totp.was_replayed(secret, digits, moment, after_step=user.second_factor_last_step):
            raise CodeRejected(N_("This code has already been used. Please wait for the next code in your app."),
                               field="code")
        raise CodeRejected(N_("The code is not correct."), field="code")
    claimed = session.execute(
        update(StaffUser)
        .where(
            StaffUser.id == user.id,
            or_(StaffUser.second_factor_last_step.is_(None), StaffUser.second_factor_last_step < step),
        )
        .values(second_factor_last_step=step)
        .returning(StaffUser.id)
    ).scalar_one_or_none()
    if claimed is None:  # another request used this code a moment ago
        raise CodeRejected(N_("This code has already been used. Please wait for the next code in your app."),
                           field="code")
    return step


def confirm_enrolment(session: Session, user: StaffUser, *, code: str, key: bytes, now: datetime | None = None) -> None:
    """Switch the second factor on once the user proved their app shows the right codes.

    Every other session of the account ends: they were signed in without it.
    """
    now = now or utcnow()
    if user.has_second_factor:
        raise Conflict(N_("Your second factor is already switched on."))
    if user.second_factor_secret is None:
        raise Conflict(N_("Please start the set-up again."))
    check_code(session, user, code, key=key, now=now)
    user.second_factor_enabled_at = now
    session.flush()
    record_event(session, actor=f"staff:{user.id}", action="staff_user.second_factor_enable",
                 entity_type="staff_user", entity_id=user.id, after={"method": "totp"})
    end_all_sessions(session, user, actor=f"staff:{user.id}", reason="second factor switched on")


def _clear(user: StaffUser) -> None:
    user.second_factor_secret = None
    user.second_factor_enabled_at = None
    user.second_factor_last_step = None


def remove_own(session: Session, user: StaffUser, *, password: str) -> None:
    """The user switches their own second factor off (password asked again), unless a study
    requires it of them."""
    if not user.has_second_factor:
        raise Conflict(N_("Your second factor is not switched on."))
    if not password_matches(user, password):
        raise ValidationError(N_("The password is not correct."), field="password")
    studies = requiring_studies(session, user)
    if studies:
        raise Conflict(N_("The study %(studies)s requires a second factor for your account."),
                       studies=", ".join(study.code for study in studies))
    _clear(user)
    session.flush()
    record_event(session, actor=f"staff:{user.id}", action="staff_user.second_factor_remove",
                 entity_type="staff_user", entity_id=user.id, before={"method": "totp"})
    end_all_sessions(session, user, actor=f"staff:{user.id}", reason="second factor switched off")


def reset(session: Session, user: StaffUser, *, actor: str, reason: str) -> None:
    """An administrator (or ``pro-app reset-second-factor``) removes a user's second factor,
    e.g. after a lost phone. The user's sessions end; a study that requires one sends them to
    enrolment at their next sign-in."""
    reason = reason.strip()
    if not reason:
        raise ValidationError(N_("Please give a reason."), field="reason")
    if user.second_factor_secret is None:
        raise Conflict(N_("%(email)s has no second factor."), field="reason", email=user.email)
    before = {"enabled": user.has_second_factor}
    _clear(user)
    session.flush()
    record_event(session, actor=actor, action="staff_user.second_factor_reset", entity_type="staff_user",
                 entity_id=user.id, before=before, after={"enabled": False}, reason=reason)
    end_all_sessions(session, user, actor=actor, reason="second factor reset")


def set_requirement(session: Session, study: Study, *, required: bool, actor: str) -> None:
    """Switch a study's requirement on or off (audited; no event when nothing changes)."""
    if study.require_second_factor == required:
        return
    before = {"require_second_factor": study.require_second_factor}
    study.require_second_factor = required
    session.flush()
    record_event(session, actor=actor, action="study.settings", entity_type="study", entity_id=study.id,
                 before=before, after={"require_second_factor": required})


def accounts_without(session: Session, study: Study) -> Sequence[StaffUser]:
    """Active administrators and analysts with access to ``study`` who have no second factor yet
    (shown before an administrator switches the requirement on)."""
    analysts_of_study = (
        select(staff_sites.c.staff_user_id)
        .join(Site, Site.id == staff_sites.c.site_id)
        .where(Site.study_id == study.id)
    )
    return session.scalars(
        select(StaffUser)
        .where(
            StaffUser.is_active.is_(True),
            StaffUser.second_factor_enabled_at.is_(None),
            or_(
                StaffUser.role == Role.ADMIN.value,
                (StaffUser.role == Role.ANALYST.value) & StaffUser.id.in_(analysts_of_study),
            ),
        )
        .order_by(StaffUser.email)
    ).all()
