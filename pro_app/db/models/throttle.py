"""Counters for throttling guessable endpoints (manual codes, staff login).

Kept in the database so every app instance behind a load balancer sees the same counts.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from pro_app.db.models.base import Base
from pro_app.db.types import UTCDateTime


class RateLimitBucket(Base):
    """Attempts counted for ``key`` (e.g. ``code:ip:203.0.113.9``) since ``window_started_at``."""

    __tablename__ = "rate_limit_buckets"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    count: Mapped[int] = mapped_column(Integer, default=0)
