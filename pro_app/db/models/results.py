"""The result of a scored assessment as one row: the answers the scores were computed from,
and the scores, each as one line of comma-separated values.

A derived copy of ``answers`` and ``scale_scores`` kept for reading whole assessments fast:
an export of 200,000 questionnaires reads 200,000 of these rows instead of aggregating 6
million answers and 3.2 million scores. It is written only by ``services.scores.store_scores``
in the same transaction as the score rows, from the same answers, so it always holds exactly
what the scores were computed from; the normalised tables stay the record of truth (items-long
exports, answer times and corrections read them).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from pro_app.db.models.base import Base
from pro_app.db.types import UTCDateTime, utcnow


class AssessmentResult(Base):
    """``answers``: the values in the instrument's form order (``"2,3,,1,..."``; empty = not
    answered). ``scores``: the values in the instrument's score order, each written as the
    shortest text that reads back as exactly the stored double (empty = not scorable). The
    positions are those of the assessment's instrument version, which never changes."""

    __tablename__ = "assessment_results"

    assessment_id: Mapped[int] = mapped_column(ForeignKey("assessments.id", ondelete="RESTRICT"), primary_key=True)
    answers: Mapped[str] = mapped_column(Text)
    scores: Mapped[str] = mapped_column(Text)
    algorithm_version: Mapped[str] = mapped_column(String(64))
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
