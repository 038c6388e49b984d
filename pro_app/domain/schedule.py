"""Planned assessments from a schedule template and a participant's anchor events.

Pure and time-zone aware: a window given in days means local calendar days in the
participant's time zone, so daylight-saving changes never shift a window by an hour.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from pro_app.domain.states import AssessmentStatus, TimeUnit


@dataclass(frozen=True)
class TimepointRule:
    """One line of a schedule template (see the ``Timepoint`` model for the meaning)."""

    code: str
    label: str
    anchor_kind: str
    offset: int
    offset_unit: TimeUnit = TimeUnit.DAYS
    window_before: int = 0
    window_after: int = 0
    window_unit: TimeUnit = TimeUnit.DAYS
    repeat_every: int | None = None
    repeat_until: int | None = None
    instrument_code: str = "qlq_c30"


@dataclass(frozen=True)
class PlannedAssessment:
    code: str
    label: str
    occurrence: int
    instrument_code: str
    planned_at: datetime
    window_opens_at: datetime
    window_closes_at: datetime


def _offsets(rule: TimepointRule) -> list[int]:
    if not rule.repeat_every:
        return [rule.offset]
    until = rule.repeat_until if rule.repeat_until is not None else rule.offset
    return list(range(rule.offset, until + 1, rule.repeat_every))


def _shift(anchor_local: datetime, amount: int, unit: TimeUnit) -> datetime:
    """Add days as local calendar days (wall-clock), hours as elapsed time."""
    if unit is TimeUnit.DAYS:
        wall = anchor_local.replace(tzinfo=None) + timedelta(days=amount)
        return wall.replace(tzinfo=anchor_local.tzinfo)
    return (anchor_local.astimezone(ZoneInfo("UTC")) + timedelta(hours=amount)).astimezone(anchor_local.tzinfo)


def _window(planned_local: datetime, rule: TimepointRule) -> tuple[datetime, datetime]:
    if rule.window_unit is TimeUnit.DAYS:
        # Whole local days: from the start of the first day to the end of the last day.
        tz = planned_local.tzinfo
        first = planned_local.date() - timedelta(days=rule.window_before)
        last = planned_local.date() + timedelta(days=rule.window_after + 1)
        return datetime.combine(first, time(0), tz), datetime.combine(last, time(0), tz)
    return (
        _shift(planned_local, -rule.window_before, TimeUnit.HOURS),
        _shift(planned_local, rule.window_after, TimeUnit.HOURS),
    )


def _label(rule: TimepointRule, offset: int, occurrence: int) -> str:
    """Recurring timepoints name each occurrence: ``"Week {week}"`` becomes ``"Week 12"``."""
    if not rule.repeat_every:
        return rule.label
    days = offset if rule.offset_unit is TimeUnit.DAYS else offset // 24
    return rule.label.format(day=days, week=days // 7, n=occurrence + 1)


def plan_assessments(
    rules: Iterable[TimepointRule], anchors: Mapping[str, datetime], timezone: str
) -> list[PlannedAssessment]:
    """Every assessment the template asks for, for the anchors that are known.

    Timepoints whose anchor event has not happened (or is not yet dated) are left out;
    they are planned when the anchor is recorded. Results are in UTC, ordered by date.
    """
    tz = ZoneInfo(timezone)
    utc = ZoneInfo("UTC")
    planned: list[PlannedAssessment] = []
    for rule in rules:
        anchor = anchors.get(rule.anchor_kind)
        if anchor is None:
            continue
        anchor_local = anchor.astimezone(tz)
        for occurrence, offset in enumerate(_offsets(rule)):
            at_local = _shift(anchor_local, offset, TimeUnit(rule.offset_unit))
            opens, closes = _window(at_local, rule)
            planned.append(
                PlannedAssessment(
                    code=rule.code,
                    label=_label(rule, offset, occurrence),
                    occurrence=occurrence,
                    instrument_code=rule.instrument_code,
                    planned_at=at_local.astimezone(utc),
                    window_opens_at=opens.astimezone(utc),
                    window_closes_at=closes.astimezone(utc),
                )
            )
    planned.sort(key=lambda p: (p.planned_at, p.code, p.occurrence))
    return planned


def _day(code: str, label: str, day: int, window: int) -> TimepointRule:
    return TimepointRule(code, label, "infusion", day, TimeUnit.DAYS, window, window, TimeUnit.DAYS)


#: Built-in templates for the protocols pro-app serves. Windows are sensible defaults that a
#: study adjusts to its protocol; Day 0 is the anchor day.
BUILTIN_TEMPLATES: dict[str, tuple[str, tuple[TimepointRule, ...]]] = {
    "car_t_early": (
        "CAR-T dense early schedule",
        (
            TimepointRule("pre_ld", "Before lymphodepletion", "lymphodepletion", 0, TimeUnit.HOURS, 72, 0, TimeUnit.HOURS),
            TimepointRule("pre_inf", "Before infusion", "infusion", 0, TimeUnit.HOURS, 24, 0, TimeUnit.HOURS),
            TimepointRule("post_1h", "1 h after infusion", "infusion", 1, TimeUnit.HOURS, 0, 2, TimeUnit.HOURS),
            TimepointRule("post_24h", "24 h after infusion", "infusion", 24, TimeUnit.HOURS, 4, 4, TimeUnit.HOURS),
            _day("d4", "Day 4", 4, 1),
            _day("d7", "Day 7", 7, 1),
            _day("d10", "Day 10", 10, 1),
            _day("d14", "Day 14", 14, 2),
            _day("d28", "Day 28", 28, 3),
            _day("d60", "Day 60", 60, 7),
            _day("d90", "Day 90", 90, 7),
            _day("d180", "Day 180", 180, 14),
            _day("d270", "Day 270", 270, 14),
            _day("d360", "Day 360", 360, 14),
        ),
    ),
    "qol_6_weekly": (
        "Quality of life every 6 weeks to week 144",
        (
            TimepointRule("baseline", "Baseline", "enrolment", 0, TimeUnit.DAYS, 0, 7, TimeUnit.DAYS),
            TimepointRule(
                "w6", "Week {week}", "enrolment", 42, TimeUnit.DAYS, 7, 7, TimeUnit.DAYS,
                repeat_every=42, repeat_until=1008,
            ),
        ),
    ),
}


def status_at(window_opens_at: datetime, window_closes_at: datetime, now: datetime) -> str:
    """The state of a not-yet-started assessment at ``now`` (window is [opens, closes))."""
    if now < window_opens_at:
        return AssessmentStatus.SCHEDULED.value
    if now < window_closes_at:
        return AssessmentStatus.OPEN.value
    return AssessmentStatus.MISSED.value
