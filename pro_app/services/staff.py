"""Staff accounts: creation, password rules and ending sessions.

A staff password must have at least ``MIN_PASSWORD_LENGTH`` characters and must not be one of
the 20,000 most common passwords (``pro_app/data/common-passwords.txt.gz``, see the README
beside it): attackers try those first, on every account, and length alone does not keep them
out ("qwerty123456" is long enough). Every path that sets a password goes through
:func:`validate_password`.
"""

from __future__ import annotations

import functools
import gzip
import re
from collections.abc import Sequence
from importlib.resources import files

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from pro_app.db.models import Site, StaffUser
from pro_app.domain.errors import N_, Conflict, ValidationError
from pro_app.domain.states import Role
from pro_app.services.audit import record_event

MIN_PASSWORD_LENGTH = 12
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# scrypt is memory-hard: guessing a leaked hash costs memory as well as time.
_HASH_METHOD = "scrypt:32768:8:1"


def hash_password(password: str) -> str:
    return generate_password_hash(password, method=_HASH_METHOD)


def password_matches(user: StaffUser, password: str) -> bool:
    return check_password_hash(user.password_hash, password)


def normalise_email(email: str) -> str:
    return email.strip().lower()


@functools.cache
def common_passwords() -> frozenset[str]:
    """The list of common passwords, read once per process on first use (not at import, so
    commands that never set a password do not pay for it)."""
    data = files("pro_app").joinpath("data", "common-passwords.txt.gz").read_bytes()
    return frozenset(line.strip() for line in gzip.decompress(data).decode("utf-8").splitlines() if line.strip())


def is_common_password(password: str) -> bool:
    """Compared as the list is stored: lower case, without spaces at either end. No other
    variants (such as trailing digits removed) are tried, so the rule is easy to explain."""
    return password.strip().lower() in common_passwords()


def validate_password(password: str) -> None:
    """The password rules; the caller stores nothing when this raises."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(
            N_("The password must be at least %(min)s characters long."), field="password", min=MIN_PASSWORD_LENGTH
        )
    if is_common_password(password):
        raise ValidationError(
            N_("This password is one of the most commonly used passwords and is easy to guess. Please choose another."),
            field="password",
        )


def end_all_sessions(session: Session, user: StaffUser, *, actor: str, reason: str = "logout") -> None:
    """Increase the account's session version, which ends every session of it on every server."""
    user.session_version += 1
    session.flush()
    record_event(session, actor=actor, action="staff_user.sessions_ended", entity_type="staff_user",
                 entity_id=user.id, after={"reason": reason})


def create_staff_user(
    session: Session,
    *,
    email: str,
    password: str,
    role: str,
    site_ids: Sequence[int] = (),
    locale: str | None = None,
    actor: str,
) -> StaffUser:
    """Create a staff account; admins see every site, other roles only the sites given."""
    email = normalise_email(email)
    if not _EMAIL.match(email):
        raise ValidationError(N_("Enter a valid email address."), field="email")
    if role not in {r.value for r in Role}:
        raise ValidationError(N_("Unknown role %(role)s."), field="role", role=role)
    validate_password(password)
    if session.scalar(select(func.count()).select_from(StaffUser).where(StaffUser.email == email)):
        raise Conflict(N_("A user with the email %(email)s already exists."), field="email", email=email)
    sites = list(session.scalars(select(Site).where(Site.id.in_(site_ids)))) if site_ids else []
    if len(sites) != len(set(site_ids)):
        raise ValidationError(N_("Unknown site."), field="sites")
    user = StaffUser(email=email, password_hash=hash_password(password), role=role, locale=locale, sites=sites)
    session.add(user)
    session.flush()
    record_event(
        session,
        actor=actor,
        action="staff_user.create",
        entity_type="staff_user",
        entity_id=user.id,
        after={"email": email, "role": role, "sites": sorted(s.id for s in sites), "locale": locale},
    )
    return user


def visible_site_ids(user: StaffUser) -> list[int] | None:
    """The sites a staff user may see: None means every site (administrators)."""
    if user.role == Role.ADMIN.value:
        return None
    return [site.id for site in user.sites]


def can_see_site(user: StaffUser, site_id: int) -> bool:
    sites = visible_site_ids(user)
    return sites is None or site_id in sites
