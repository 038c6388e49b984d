"""Staff accounts: creation and password handling."""

from __future__ import annotations

import re
from collections.abc import Sequence

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


def validate_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(
            N_("The password must be at least %(min)s characters long."), field="password", min=MIN_PASSWORD_LENGTH
        )


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
