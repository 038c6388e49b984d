"""Receipts of patient requests that wrote clinical data (answer saves and submissions).

A phone on a poor connection retries: the same answer may reach the server two, five or
twenty times, late and out of order. Each such request carries a client-generated id (or
gets one from the server), and its receipt is inserted in the same transaction as the write
it describes. The primary key on ``request_id`` is what makes a retry harmless: a request id
can describe exactly one write, so a repeated request returns the stored receipt instead of
writing again, and a different payload under a used id is recognised as a conflict.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from pro_app.db.models.base import Base, one_of
from pro_app.db.types import UTCDateTime, utcnow


class ReceiptKind(StrEnum):
    ANSWER = "answer"
    SUBMIT = "submit"


class ReceiptOutcome(StrEnum):
    #: The answer was stored (new or changed).
    SAVED = "saved"
    #: The answer already had this value; nothing had to change.
    UNCHANGED = "unchanged"
    #: The assessment was submitted, scored and locked.
    SUBMITTED = "submitted"


class RequestReceipt(Base):
    """What one request did, kept so that repeating it returns the same result.

    An answer receipt names the item and value it stored; a submission receipt names neither.
    Receipts are part of the assessment's record (like its answers) and are kept with it.
    """

    __tablename__ = "request_receipts"
    __table_args__ = (
        one_of("kind", ReceiptKind),
        one_of("outcome", ReceiptOutcome),
        CheckConstraint(
            "(kind = 'answer' AND item_id IS NOT NULL AND value IS NOT NULL AND outcome IN ('saved', 'unchanged'))"
            " OR (kind = 'submit' AND item_id IS NULL AND value IS NULL AND outcome = 'submitted')",
            name="payload_matches_kind",
        ),
        Index("ix_request_receipts_assessment", "assessment_id", "kind"),
        Index("ix_request_receipts_participant", "participant_id"),
    )

    #: The client's UUID (canonical, lower case), or a server-made one for a request without.
    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id", ondelete="RESTRICT"))
    assessment_id: Mapped[int] = mapped_column(ForeignKey("assessments.id", ondelete="RESTRICT"))
    item_id: Mapped[str | None] = mapped_column(String(40))
    value: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    #: When the write happened: the ``saved_at`` every repetition of the request reports.
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
