"""Participants (pseudonymous), their access links and protocol anchor events."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pro_app.db.models.base import Base, one_of
from pro_app.db.models.study import Arm, Site, Study
from pro_app.db.types import UTCDateTime, utcnow
from pro_app.domain.states import ParticipantStatus


class Participant(Base):
    """A trial participant, known to the application only by a subject code.

    Contact details are optional and used for reminders only.
    """

    __tablename__ = "participants"
    __table_args__ = (
        UniqueConstraint("study_id", "subject_code"),
        one_of("status", ParticipantStatus),
        Index("ix_participants_site_status", "site_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="RESTRICT"))
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"))
    arm_id: Mapped[int | None] = mapped_column(ForeignKey("arms.id", ondelete="RESTRICT"), index=True)
    subject_code: Mapped[str] = mapped_column(String(40))
    locale: Mapped[str] = mapped_column(String(16), default="en")
    timezone: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=ParticipantStatus.ACTIVE.value)
    email: Mapped[str | None] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(32))
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    study: Mapped[Study] = relationship()
    site: Mapped[Site] = relationship()
    arm: Mapped[Arm | None] = relationship()
    anchors: Mapped[list[AnchorEvent]] = relationship(
        back_populates="participant", order_by="AnchorEvent.occurred_at"
    )


class AccessLink(Base):
    """A participant's personal link (and short manual code).

    Only SHA-256 hashes are stored: the token is high-entropy, so a plain hash is enough to
    make a stolen database useless for opening questionnaires, and lookup stays indexed.
    """

    __tablename__ = "access_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    participant_id: Mapped[int] = mapped_column(
        ForeignKey("participants.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    code_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    participant: Mapped[Participant] = relationship()


class AnchorEvent(Base):
    """A protocol event that timepoints count from (lymphodepletion, infusion, enrolment)."""

    __tablename__ = "anchor_events"
    __table_args__ = (UniqueConstraint("participant_id", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(40))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())

    participant: Mapped[Participant] = relationship(back_populates="anchors")
