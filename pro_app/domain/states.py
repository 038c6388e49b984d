"""Named states and kinds used across the product (the vocabulary of the data model)."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    NURSE = "nurse"
    ANALYST = "analyst"


class ParticipantStatus(StrEnum):
    ACTIVE = "active"
    WITHDRAWN = "withdrawn"
    COMPLETED = "completed"


class AssessmentStatus(StrEnum):
    """Lifecycle: scheduled -> open -> in_progress -> completed; missed when the window closes
    unanswered; cancelled when the participant withdraws."""

    SCHEDULED = "scheduled"
    OPEN = "open"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    MISSED = "missed"
    CANCELLED = "cancelled"


class AssessmentMode(StrEnum):
    SELF = "self"
    TABLET = "tablet"
    INTERVIEW = "interview"


class AlertState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"


class ReminderStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"


class TimeUnit(StrEnum):
    HOURS = "hours"
    DAYS = "days"
