"""Per-study alert settings and the outbox of staff notifications."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Double, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pro_app.db.models.base import Base
from pro_app.db.models.study import Study
from pro_app.db.types import UTCDateTime, utcnow


class StudyAlertRule(Base):
    """A threshold rule a study applies to each submitted assessment (on or off, editable)."""

    __tablename__ = "study_alert_rules"
    __table_args__ = (UniqueConstraint("study_id", "scale_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    scale_code: Mapped[str] = mapped_column(String(40))
    op: Mapped[str] = mapped_column(String(4))
    threshold: Mapped[float] = mapped_column(Double())
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    source: Mapped[str] = mapped_column(String(300))

    study: Mapped[Study] = relationship()


class OutboxMessage(Base):
    """A message to staff waiting to be sent by ``pro-app tick`` (never sent inside a request).

    Messages carry no health data: only that something needs review, and a link.
    """

    __tablename__ = "outbox_messages"
    __table_args__ = (Index("ix_outbox_messages_status_created", "status", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(8), default="email")
    recipient: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(500))
