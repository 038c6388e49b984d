"""Personal access links and short manual codes for participants.

A link token carries 256 bits of randomness; the manual code 10 characters from an
alphabet without look-alike characters (no 0/O, 1/I/L) for patients typing from paper.
Only SHA-256 hashes are stored, so the database alone never opens a questionnaire.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from pro_app.db.models import AccessLink, Participant
from pro_app.db.types import utcnow
from pro_app.services.audit import record_event

CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 10


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def normalise_code(code: str) -> str:
    """Codes are typed by hand: ignore case, spaces and dashes."""
    return "".join(ch for ch in code.upper() if ch.isalnum())


@dataclass(frozen=True)
class IssuedLink:
    """The secrets are only ever available here, at the moment of issue."""

    link: AccessLink
    token: str
    code: str


def issue_link(
    session: Session,
    participant: Participant,
    *,
    actor: str,
    valid_days: int,
    now: datetime | None = None,
    expires_at: datetime | None = None,
    replace_existing: bool = True,
) -> IssuedLink:
    """Issue a new link and code.

    By default earlier links stop working (a re-issued letter replaces the old one). A
    reminder message instead carries an extra link of its own (``replace_existing=False``)
    that expires with the questionnaire's window (``expires_at``), so the patient's printed
    link and QR code keep working.
    """
    now = now or utcnow()
    if replace_existing:
        revoke_links(session, participant, actor=actor, now=now, audit=False)
    token = secrets.token_urlsafe(32)
    code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    link = AccessLink(
        participant_id=participant.id,
        token_hash=digest(token),
        code_hash=digest(normalise_code(code)),
        created_at=now,
        expires_at=expires_at or now + timedelta(days=valid_days),
    )
    session.add(link)
    session.flush()
    record_event(
        session,
        actor=actor,
        action="access_link.issue",
        entity_type="participant",
        entity_id=participant.id,
        after={"link_id": link.id, "expires_at": link.expires_at.isoformat(), "replaces_earlier": replace_existing},
    )
    return IssuedLink(link=link, token=token, code=code)


def revoke_links(
    session: Session, participant: Participant, *, actor: str, now: datetime | None = None, audit: bool = True
) -> int:
    now = now or utcnow()
    result = session.execute(
        update(AccessLink)
        .where(AccessLink.participant_id == participant.id, AccessLink.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session="fetch")
    )
    count = int(getattr(result, "rowcount", 0) or 0)
    if audit and count:
        record_event(
            session, actor=actor, action="access_link.revoke", entity_type="participant",
            entity_id=participant.id, after={"revoked": count},
        )
    return count


def find_link(session: Session, *, token: str | None = None, code: str | None = None) -> AccessLink | None:
    """The link for a token or manual code, whatever its state (callers check validity)."""
    if token:
        condition = AccessLink.token_hash == digest(token)
    elif code:
        condition = AccessLink.code_hash == digest(normalise_code(code))
    else:
        return None
    return session.scalars(select(AccessLink).where(condition)).one_or_none()


class LinkValidity(Protocol):
    """What decides whether a link is usable: an :class:`AccessLink` or a row of its columns."""

    @property
    def expires_at(self) -> datetime: ...

    @property
    def revoked_at(self) -> datetime | None: ...


def link_is_usable(link: LinkValidity, now: datetime | None = None) -> bool:
    now = now or utcnow()
    return link.revoked_at is None and link.expires_at > now
