"""Studies, their sites, arms (dose groups) and schedule templates."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Double, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pro_app.db.models.base import Base, one_of
from pro_app.db.types import UTCDateTime, utcnow
from pro_app.domain.states import TimeUnit


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    default_locale: Mapped[str] = mapped_column(String(16), default="en")
    instrument_code: Mapped[str] = mapped_column(String(40), default="qlq_c30")
    instrument_version: Mapped[str] = mapped_column(String(16), default="3.0")
    #: Alert when a score worsens from the participant's baseline by at least this many points
    #: (functional and global scales falling, symptom scales rising); None switches it off.
    worsening_alert_points: Mapped[float | None] = mapped_column(Double(), default=10.0)
    #: Reminder plan: a message when a window opens, and/or this many hours before it closes.
    remind_on_open: Mapped[bool] = mapped_column(Boolean, default=True)
    remind_hours_before_close: Mapped[int | None] = mapped_column(Integer, default=24)
    #: Local quiet hours of the participant (HH:MM), during which nothing is sent.
    quiet_hours_start: Mapped[str] = mapped_column(String(5), default="21:00")
    quiet_hours_end: Mapped[str] = mapped_column(String(5), default="08:00")
    #: Administrators and analysts with access to this study must sign in with a second factor
    #: (they are sent to set one up before they can reach anything else).
    require_second_factor: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    sites: Mapped[list[Site]] = relationship(back_populates="study", order_by="Site.id")
    arms: Mapped[list[Arm]] = relationship(back_populates="study", order_by="Arm.id")
    templates: Mapped[list[ScheduleTemplate]] = relationship(back_populates="study")


class Site(Base):
    __tablename__ = "sites"
    __table_args__ = (UniqueConstraint("study_id", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="RESTRICT"), index=True)
    code: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))

    study: Mapped[Study] = relationship(back_populates="sites")


class Arm(Base):
    """A treatment arm; in dose-escalation studies, a dose group (low / medium / high)."""

    __tablename__ = "arms"
    __table_args__ = (UniqueConstraint("study_id", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="RESTRICT"), index=True)
    code: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))

    study: Mapped[Study] = relationship(back_populates="arms")


class ScheduleTemplate(Base):
    __tablename__ = "schedule_templates"
    __table_args__ = (UniqueConstraint("study_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    study: Mapped[Study] = relationship(back_populates="templates")
    timepoints: Mapped[list[Timepoint]] = relationship(
        back_populates="template", order_by="Timepoint.position", cascade="all, delete-orphan"
    )


class Timepoint(Base):
    """A planned assessment relative to an anchor event (Day 0 = the anchor day).

    ``offset`` counts ``offset_unit`` from the anchor; the window opens ``window_before`` and
    closes ``window_after`` ``window_unit`` around the planned instant. A recurring timepoint
    repeats every ``repeat_every`` offset units up to ``repeat_until``.
    """

    __tablename__ = "timepoints"
    __table_args__ = (
        UniqueConstraint("template_id", "code"),
        one_of("offset_unit", TimeUnit),
        one_of("window_unit", TimeUnit),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    template_id: Mapped[int] = mapped_column(
        ForeignKey("schedule_templates.id", ondelete="CASCADE"), index=True
    )
    code: Mapped[str] = mapped_column(String(40))
    label: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer)
    anchor_kind: Mapped[str] = mapped_column(String(40))
    offset: Mapped[int] = mapped_column(Integer)
    offset_unit: Mapped[str] = mapped_column(String(8), default=TimeUnit.DAYS.value)
    window_before: Mapped[int] = mapped_column(Integer, default=0)
    window_after: Mapped[int] = mapped_column(Integer, default=0)
    window_unit: Mapped[str] = mapped_column(String(8), default=TimeUnit.DAYS.value)
    repeat_every: Mapped[int | None] = mapped_column(Integer)
    repeat_until: Mapped[int | None] = mapped_column(Integer)
    instrument_code: Mapped[str] = mapped_column(String(40), default="qlq_c30")

    template: Mapped[ScheduleTemplate] = relationship(back_populates="timepoints")
