"""Licensed instrument wording loaded by a site (the shipped wording is demo text on disk)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from pro_app.db.models.base import Base
from pro_app.db.types import UTCDateTime, utcnow


class InstrumentTextRecord(Base):
    """One loaded text file for one instrument version and locale.

    Earlier loads are kept (``active`` false) so the wording any past assessment showed can
    be found again by its checksum.
    """

    __tablename__ = "instrument_texts"
    __table_args__ = (
        Index(
            "uq_instrument_texts_active",
            "instrument_code",
            "instrument_version",
            "locale",
            unique=True,
            sqlite_where=text("active"),
            postgresql_where=text("active"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    instrument_code: Mapped[str] = mapped_column(String(40))
    instrument_version: Mapped[str] = mapped_column(String(16))
    locale: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    checksum: Mapped[str] = mapped_column(String(64), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    loaded_by: Mapped[str] = mapped_column(String(80))
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
