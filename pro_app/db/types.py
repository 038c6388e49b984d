"""Column types shared by the models."""

from __future__ import annotations

from datetime import datetime, timezone
from collections.abc import Callable
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """An instant, stored in UTC and always returned time-zone aware.

    PostgreSQL keeps ``timestamptz``; SQLite has no time zones, so the value is stored as
    naive UTC and UTC is attached again when read. Naive datetimes are refused on the way in:
    an instant without a zone is a bug waiting to move an assessment window by hours.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime given for a UTC column; attach a time zone")
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], datetime | None] | None:
        if dialect.name == "sqlite":
            return _from_sqlite_text
        if dialect.name == "postgresql":
            return _in_utc  # psycopg gives aware instants: no processing of SQLAlchemy's around it
        return super().result_processor(dialect, coltype)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return _in_utc(value)


def _from_sqlite_text(value: Any) -> datetime | None:
    """The stored naive-UTC text as an aware instant. Parsed with ``fromisoformat`` and the
    offset appended, which yields ``timezone.utc`` directly: several times faster than the
    driver's regular expression followed by ``replace(tzinfo=...)``, and instants are read
    by the million in exports."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value + "+00:00")
        except ValueError:  # not the stored form (e.g. written with an offset by hand)
            instant = datetime.fromisoformat(value)
    else:
        instant = value
    return _in_utc(instant)


def _in_utc(value: Any) -> datetime | None:
    """An instant in ``timezone.utc`` (a naive one is taken as UTC). psycopg gives instants in
    the session's time zone: ``timezone.utc`` itself when that is UTC (the app's connections
    set it so, see :func:`pro_app.db.engine.make_engine`), and nothing is converted; in any
    other zone (``Etc/UTC`` included) each is converted, which was 17% of a wide export's time
    from PostgreSQL."""
    if value is None:
        return None
    instant: datetime = value
    if instant.tzinfo is timezone.utc:
        return instant
    if instant.tzinfo is None:
        return instant.replace(tzinfo=timezone.utc)
    return instant.astimezone(timezone.utc)


def utcnow() -> datetime:
    """The current instant, aware, in UTC (callable default for columns)."""
    return datetime.now(timezone.utc)
