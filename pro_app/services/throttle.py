"""Throttling: a fixed window of attempts per key, shared by all app instances."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from pro_app.db.models import RateLimitBucket
from pro_app.db.types import utcnow


def register_attempt(
    session: Session, key: str, *, limit: int, window: timedelta, now: datetime | None = None
) -> bool:
    """Count one attempt for ``key``; False when the limit for the current window is exceeded.

    The caller commits even when the attempt then fails, so failed guesses are counted.
    """
    now = now or utcnow()
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(RateLimitBucket)
        .values(key=key, window_started_at=now, count=0)
        .on_conflict_do_nothing(index_elements=["key"])
    )
    bucket = session.scalars(
        select(RateLimitBucket)
        .where(RateLimitBucket.key == key)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    if now - bucket.window_started_at >= window:
        bucket.window_started_at = now
        bucket.count = 0
    bucket.count += 1
    session.flush()
    return bucket.count <= limit


def reset(session: Session, key: str) -> None:
    bucket = session.get(RateLimitBucket, key)
    if bucket is not None:
        session.delete(bucket)
        session.flush()
