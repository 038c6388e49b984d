"""Assessments (one questionnaire at one timepoint), answers, scores, alerts and reminders."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Double, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pro_app.db.models.base import Base, one_of
from pro_app.db.models.participant import Participant
from pro_app.db.models.staff import StaffUser
from pro_app.db.models.study import Timepoint
from pro_app.db.types import UTCDateTime, utcnow
from pro_app.domain.states import AlertState, AssessmentMode, AssessmentStatus, Channel, ReminderStatus


class Assessment(Base):
    """One administration of an instrument to a participant at one timepoint.

    Records exactly what was shown (instrument version, locale, checksum of the text) so a
    result can always be traced back to the wording the patient saw.
    """

    __tablename__ = "assessments"
    __table_args__ = (
        one_of("status", AssessmentStatus),
        CheckConstraint("mode IS NULL OR mode IN ('self', 'tablet', 'interview')", name="mode_valid"),
        CheckConstraint("window_closes_at >= window_opens_at", name="window_ordered"),
        Index("ix_assessments_participant_planned", "participant_id", "planned_at"),
        Index("ix_assessments_status_opens", "status", "window_opens_at"),
        # window_opens_at too: "open now" (opens <= now < closes) is answered inside the index.
        Index("ix_assessments_status_closes", "status", "window_closes_at", "window_opens_at"),
        Index("ix_assessments_submitted", "submitted_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id", ondelete="RESTRICT"))
    timepoint_id: Mapped[int | None] = mapped_column(ForeignKey("timepoints.id", ondelete="SET NULL"))
    timepoint_code: Mapped[str] = mapped_column(String(40))
    timepoint_label: Mapped[str] = mapped_column(String(200))
    occurrence: Mapped[int] = mapped_column(Integer, default=0)
    instrument_code: Mapped[str] = mapped_column(String(40))
    instrument_version: Mapped[str] = mapped_column(String(16))
    locale: Mapped[str | None] = mapped_column(String(16))
    text_source: Mapped[str | None] = mapped_column(String(16))
    text_checksum: Mapped[str | None] = mapped_column(String(64))
    planned_at: Mapped[datetime] = mapped_column(UTCDateTime())
    window_opens_at: Mapped[datetime] = mapped_column(UTCDateTime())
    window_closes_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default=AssessmentStatus.SCHEDULED.value)
    mode: Mapped[str | None] = mapped_column(String(16))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    submission_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    participant: Mapped[Participant] = relationship()
    timepoint: Mapped[Timepoint | None] = relationship()
    answers: Mapped[list[Answer]] = relationship(back_populates="assessment", order_by="Answer.id")
    scores: Mapped[list[ScaleScore]] = relationship(back_populates="assessment", order_by="ScaleScore.id")


# Answer values are validated against the item's response set by the service; the database
# keeps a coarse bound as a last line of defence.
class Answer(Base):
    """The current answer to one item of one assessment (changes are kept in the audit trail)."""

    __tablename__ = "answers"
    __table_args__ = (
        UniqueConstraint("assessment_id", "item_id"),
        CheckConstraint("value >= 0 AND value <= 100", name="value_in_bounds"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    assessment_id: Mapped[int] = mapped_column(ForeignKey("assessments.id", ondelete="RESTRICT"))
    item_id: Mapped[str] = mapped_column(String(40))
    value: Mapped[int] = mapped_column(Integer)
    locale: Mapped[str | None] = mapped_column(String(16))
    answered_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    answered_by: Mapped[str] = mapped_column(String(64))

    assessment: Mapped[Assessment] = relationship(back_populates="answers")


class ScaleScore(Base):
    """A scale or summary score at full precision; ``value`` is NULL when not scorable."""

    __tablename__ = "scale_scores"
    __table_args__ = (
        UniqueConstraint("assessment_id", "scale_code"),
        CheckConstraint("value IS NULL OR (value >= 0 AND value <= 100)", name="value_in_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    assessment_id: Mapped[int] = mapped_column(ForeignKey("assessments.id", ondelete="RESTRICT"))
    scale_code: Mapped[str] = mapped_column(String(40))
    value: Mapped[float | None] = mapped_column(Double())
    items_answered: Mapped[int] = mapped_column(Integer)
    algorithm_version: Mapped[str] = mapped_column(String(64))
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    assessment: Mapped[Assessment] = relationship(back_populates="scores")


class Alert(Base):
    """A clinically important result that a nurse must review."""

    __tablename__ = "alerts"
    __table_args__ = (
        one_of("state", AlertState),
        UniqueConstraint("assessment_id", "rule_code", "scale_code"),
        Index("ix_alerts_state_created", "state", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    assessment_id: Mapped[int] = mapped_column(ForeignKey("assessments.id", ondelete="RESTRICT"))
    rule_code: Mapped[str] = mapped_column(String(64))
    scale_code: Mapped[str] = mapped_column(String(40))
    value: Mapped[float] = mapped_column(Double())
    threshold: Mapped[float | None] = mapped_column(Double())
    state: Mapped[str] = mapped_column(String(16), default=AlertState.OPEN.value)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    acknowledged_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id", ondelete="RESTRICT"))
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    note: Mapped[str | None] = mapped_column(Text)

    assessment: Mapped[Assessment] = relationship()
    acknowledged_by: Mapped[StaffUser | None] = relationship()


class Reminder(Base):
    """One reminder message to send; the attempt is recorded before sending (exactly once)."""

    __tablename__ = "reminders"
    __table_args__ = (
        one_of("channel", Channel),
        one_of("status", ReminderStatus),
        UniqueConstraint("assessment_id", "channel", "kind"),
        Index("ix_reminders_status_due", "status", "due_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    assessment_id: Mapped[int] = mapped_column(ForeignKey("assessments.id", ondelete="RESTRICT"))
    channel: Mapped[str] = mapped_column(String(8))
    kind: Mapped[str] = mapped_column(String(32))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default=ReminderStatus.PENDING.value)
    #: When a pending reminder may be tried (due_at, then later after a failed attempt).
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: When the current attempt was recorded (a 'sending' row left by a crash is recognised by it).
    attempted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(500))

    assessment: Mapped[Assessment] = relationship()
