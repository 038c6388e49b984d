"""Staff accounts (admin, nurse, analyst), scoped to sites."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Column, ForeignKey, Integer, String, Table
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pro_app.db.models.base import Base, one_of
from pro_app.db.models.study import Site
from pro_app.db.types import UTCDateTime, utcnow
from pro_app.domain.states import Role

staff_sites = Table(
    "staff_sites",
    Base.metadata,
    Column("staff_user_id", ForeignKey("staff_users.id", ondelete="CASCADE"), primary_key=True),
    Column("site_id", ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class StaffUser(Base):
    """A member of staff. ``session_version`` is bumped to end every session at once
    (logout everywhere, password change, deactivation, second factor switched on or off).

    The second factor (TOTP) secret is stored sealed (encrypted and bound to the account, see
    ``pro_app.services.second_factor``); it is active only once ``second_factor_enabled_at`` is
    set, i.e. after the user typed a valid code. ``second_factor_last_step`` is the last time
    step whose code was accepted, so a code cannot be used twice.
    """

    __tablename__ = "staff_users"
    __table_args__ = (one_of("role", Role),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    locale: Mapped[str | None] = mapped_column(String(16))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    second_factor_secret: Mapped[str | None] = mapped_column(String(255))
    second_factor_enabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    second_factor_last_step: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    sites: Mapped[list[Site]] = relationship(secondary=staff_sites, order_by="Site.id")

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN.value

    @property
    def has_second_factor(self) -> bool:
        """A confirmed second factor is asked for at every sign-in."""
        return self.second_factor_enabled_at is not None and self.second_factor_secret is not None
