"""Planned assessments from a schedule template and a participant's anchor events.

Pure and time-zone aware. The clinical rules (see ``docs/scheduling.md``):

- Day 0 is the anchor day. An offset in **days** counts local calendar days in the
  participant's time zone and keeps the anchor's local wall-clock time (Day 7 of an infusion
  at 10:00 is at 10:00 local, whether or not daylight saving time changed in between). An
  offset in **hours** is elapsed time (24 h after infusion is exactly 86,400 s later).
- A window in **days** covers whole local calendar days: it opens at local 00:00 of
  (planned local date - before) and closes at local 00:00 of (planned local date + after + 1),
  so it spans before + after + 1 local days, each 23, 24 or 25 hours long. A window in
  **hours** is elapsed time around the planned instant.
- A window is the half-open interval [opens, closes): open at ``opens``, missed at ``closes``.
- Local times that do not exist or happen twice (DST gap or fold) are resolved with
  zoneinfo's ``fold=0`` rule: an ambiguous time means its first occurrence (the offset in force
  before the clocks went back), a skipped time is read with the offset in force before the
  clocks went forward, so it lands as many minutes after the gap as it was inside it (02:30 on
  a spring-forward night becomes 03:30). Local midnight read this way is always the first
  instant of the local day, also in zones whose clocks jump at midnight.

Every instant returned is time-zone aware, in UTC.
"""

from __future__ import annotations

import re
import string
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

from pro_app.domain.errors import N_
from pro_app.domain.states import AssessmentStatus, TimeUnit

#: The protocol events a timepoint can be anchored on (the ``AnchorEvent.kind`` values).
ANCHOR_KINDS: tuple[str, ...] = ("lymphodepletion", "infusion", "enrolment")

#: Placeholders a recurring timepoint's label may use: ``{day}`` and ``{hour}`` since the
#: anchor, ``{week}`` (whole weeks, rounded down) and ``{n}`` (1 for the first occurrence).
LABEL_PLACEHOLDERS: tuple[str, ...] = ("day", "week", "hour", "n")

CODE_MAX_LENGTH = 40
LABEL_MAX_LENGTH = 200
#: Offsets (and the last repetition) lie within 5 years of the anchor: 1826 days (5 x 365.25,
#: rounded down) or as many hours.
OFFSET_MAX_YEARS = 5
OFFSET_MAX: Mapping[TimeUnit, int] = {TimeUnit.DAYS: 1826, TimeUnit.HOURS: 1826 * 24}
#: Each side of a window is at most one year.
WINDOW_MAX: Mapping[TimeUnit, int] = {TimeUnit.DAYS: 365, TimeUnit.HOURS: 365 * 24}
MAX_OCCURRENCES = 200

_CODE = re.compile(r"[a-z0-9_]{1,%d}" % CODE_MAX_LENGTH)


@dataclass(frozen=True)
class TimepointRule:
    """One line of a schedule template (see the ``Timepoint`` model for the meaning).

    A recurring rule (``repeat_every`` and ``repeat_until`` set, in ``offset_unit``) plans an
    occurrence at ``offset``, ``offset + repeat_every``, ... up to and including
    ``repeat_until``; its label may name each one (``"Week {week}"``).
    """

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
    """One assessment to create: ``(code, occurrence)`` identifies it within a participant."""

    code: str
    label: str
    occurrence: int
    instrument_code: str
    planned_at: datetime
    window_opens_at: datetime
    window_closes_at: datetime


@dataclass(frozen=True)
class RuleProblem:
    """Why a timepoint rule cannot be saved, for the template editor.

    ``index`` is the rule's position in the list validated, ``field`` the ``TimepointRule``
    attribute at fault, ``message`` an untranslated msgid with named placeholders filled from
    ``params`` after translation: ``_(problem.message, **problem.params)``.
    """

    index: int
    field: str
    message: str
    params: Mapping[str, str | int] = dataclass_field(default_factory=dict)

    def __str__(self) -> str:
        return self.message % dict(self.params) if self.params else self.message


# -- planning -----------------------------------------------------------------------------


def _offsets(rule: TimepointRule) -> list[int]:
    if rule.repeat_every is None or rule.repeat_every <= 0:
        return [rule.offset]
    until = rule.repeat_until if rule.repeat_until is not None else rule.offset
    return list(range(rule.offset, until + 1, rule.repeat_every))


def _wall_to_local(wall: datetime, zone: tzinfo) -> datetime:
    """A naive local wall-clock time in ``zone``, resolved by the ``fold=0`` rule.

    The result shows the wall-clock time the zone really has at that instant, so a time
    inside a gap comes back moved on (02:30 -> 03:30) and its ``date()`` is the real local date.
    """
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC).astimezone(zone)


def _shift(start_local: datetime, amount: int, unit: TimeUnit, zone: tzinfo) -> datetime:
    """Add days as local calendar days (same wall-clock time), hours as elapsed time."""
    if unit is TimeUnit.HOURS:
        return (start_local.astimezone(UTC) + timedelta(hours=amount)).astimezone(zone)
    if amount == 0:
        # Day 0 is the anchor itself, even when the anchor fell in the repeated hour (fold=1).
        return start_local
    wall = start_local.replace(tzinfo=None, fold=0) + timedelta(days=amount)
    return _wall_to_local(wall, zone)


def _local_midnight(day: date, zone: tzinfo) -> datetime:
    """The first instant of a local calendar day (00:00 with ``fold=0``).

    Where the clocks jump forward at midnight, 00:00 does not exist; ``fold=0`` reads it with
    the offset before the jump, which is exactly the instant the day begins.
    """
    return datetime.combine(day, time(0), zone)


def _window(planned_local: datetime, rule: TimepointRule, zone: tzinfo) -> tuple[datetime, datetime]:
    if TimeUnit(rule.window_unit) is TimeUnit.DAYS:
        day = planned_local.date()
        return (
            _local_midnight(day - timedelta(days=rule.window_before), zone),
            _local_midnight(day + timedelta(days=rule.window_after + 1), zone),
        )
    return (
        _shift(planned_local, -rule.window_before, TimeUnit.HOURS, zone),
        _shift(planned_local, rule.window_after, TimeUnit.HOURS, zone),
    )


def _label_values(rule: TimepointRule, offset: int, occurrence: int) -> dict[str, int]:
    if TimeUnit(rule.offset_unit) is TimeUnit.DAYS:
        days, hours = offset, offset * 24
    else:
        days, hours = offset // 24, offset
    return {"day": days, "week": days // 7, "hour": hours, "n": occurrence + 1}


def _placeholders(label: str) -> list[str] | None:
    """The placeholder names in a label, or None when its braces do not pair up."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(label) if name is not None]
    except ValueError:
        return None


def _format_label(label: str, values: Mapping[str, int]) -> str | None:
    """The label with its placeholders filled in, or None when it is not a valid pattern."""
    names = _placeholders(label)
    if names is None or any(name not in LABEL_PLACEHOLDERS for name in names):
        return None
    try:
        return label.format(**values)
    except (ValueError, TypeError):  # a bad format spec such as {week:x.}
        return None


def _label(rule: TimepointRule, offset: int, occurrence: int) -> str:
    """Recurring timepoints name each occurrence: ``"Week {week}"`` becomes ``"Week 12"``.

    A label that is not a valid pattern (templates saved before validation existed) is used
    as it stands rather than failing an enrolment.
    """
    if not rule.repeat_every:
        return rule.label
    formatted = _format_label(rule.label, _label_values(rule, offset, occurrence))
    return rule.label if formatted is None else formatted


def plan_assessments(
    rules: Iterable[TimepointRule], anchors: Mapping[str, datetime], timezone: str
) -> list[PlannedAssessment]:
    """Every assessment the template asks for, for the anchors that are known.

    Timepoints whose anchor event has not happened (or is not yet dated) are left out;
    they are planned when the anchor is recorded. ``timezone`` is the participant's IANA zone;
    anchors must be time-zone aware. Results are in UTC, ordered by planned time.
    """
    zone = ZoneInfo(timezone)
    planned: list[PlannedAssessment] = []
    for rule in rules:
        anchor = anchors.get(rule.anchor_kind)
        if anchor is None:
            continue
        if anchor.tzinfo is None or anchor.utcoffset() is None:
            raise ValueError(f"anchor {rule.anchor_kind!r} is a naive datetime; attach a time zone")
        anchor_local = anchor.astimezone(zone)
        for occurrence, offset in enumerate(_offsets(rule)):
            at_local = _shift(anchor_local, offset, TimeUnit(rule.offset_unit), zone)
            opens, closes = _window(at_local, rule, zone)
            planned.append(
                PlannedAssessment(
                    code=rule.code,
                    label=_label(rule, offset, occurrence),
                    occurrence=occurrence,
                    instrument_code=rule.instrument_code,
                    planned_at=at_local.astimezone(UTC),
                    window_opens_at=opens.astimezone(UTC),
                    window_closes_at=closes.astimezone(UTC),
                )
            )
    planned.sort(key=lambda p: (p.planned_at, p.window_opens_at, p.code, p.occurrence))
    return planned


def local_to_utc(wall: datetime, timezone: str) -> datetime:
    """A date and time as read on a clock in ``timezone`` (e.g. typed by a nurse), in UTC.

    Uses the same rule as the planner: an ambiguous time is its first occurrence, a time
    inside a spring-forward gap moves on by the length of the gap. An aware ``wall`` is
    simply converted.
    """
    if wall.tzinfo is not None and wall.utcoffset() is not None:
        return wall.astimezone(UTC)
    return _wall_to_local(wall, ZoneInfo(timezone)).astimezone(UTC)


def status_at(window_opens_at: datetime, window_closes_at: datetime, now: datetime) -> str:
    """The state of a not-yet-started assessment at ``now`` (window is [opens, closes))."""
    if now < window_opens_at:
        return AssessmentStatus.SCHEDULED.value
    if now < window_closes_at:
        return AssessmentStatus.OPEN.value
    return AssessmentStatus.MISSED.value


# -- validation ---------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _unit(value: object) -> TimeUnit | None:
    if not isinstance(value, str):
        return None
    try:
        return TimeUnit(value)
    except ValueError:
        return None


def _rule_problems(index: int, rule: TimepointRule, instruments: Collection[str] | None) -> list[RuleProblem]:
    problems: list[RuleProblem] = []

    def problem(field_name: str, message: str, **params: str | int) -> None:
        problems.append(RuleProblem(index, field_name, message, params))

    if not isinstance(rule.code, str) or not _CODE.fullmatch(rule.code):
        problem("code", N_("Use 1 to %(max)s lowercase letters, digits or underscores."), max=CODE_MAX_LENGTH)

    label = rule.label if isinstance(rule.label, str) else ""
    if not label.strip():
        problem("label", N_("This field is required."))
    elif len(label) > LABEL_MAX_LENGTH:
        problem("label", N_("The label can be at most %(max)s characters long."), max=LABEL_MAX_LENGTH)

    if rule.anchor_kind not in ANCHOR_KINDS:
        problem("anchor_kind", N_("Unknown anchor event %(kind)s."), kind=str(rule.anchor_kind))

    offset_unit, window_unit = _unit(rule.offset_unit), _unit(rule.window_unit)
    if offset_unit is None:
        problem("offset_unit", N_("Unknown unit %(unit)s."), unit=str(rule.offset_unit))
    if window_unit is None:
        problem("window_unit", N_("Unknown unit %(unit)s."), unit=str(rule.window_unit))

    if not isinstance(rule.instrument_code, str) or not _CODE.fullmatch(rule.instrument_code):
        problem("instrument_code", N_("Use 1 to %(max)s lowercase letters, digits or underscores."),
                max=CODE_MAX_LENGTH)
    elif instruments is not None and rule.instrument_code not in instruments:
        problem("instrument_code", N_("Unknown instrument %(code)s."), code=rule.instrument_code)

    whole = [name for name in ("offset", "window_before", "window_after") if not _is_int(getattr(rule, name))]
    whole += [name for name in ("repeat_every", "repeat_until")
              if getattr(rule, name) is not None and not _is_int(getattr(rule, name))]
    for name in whole:
        problem(name, N_("Enter a whole number."))
    if whole:
        return problems

    too_far = N_("A timepoint can be at most %(years)s years before or after its anchor event.")
    if offset_unit is not None and abs(rule.offset) > OFFSET_MAX[offset_unit]:
        problem("offset", too_far, years=OFFSET_MAX_YEARS)

    if window_unit is not None:
        for name in ("window_before", "window_after"):
            if not 0 <= getattr(rule, name) <= WINDOW_MAX[window_unit]:
                problem(
                    name, N_("Each side of the window must be from 0 to %(days)s days (%(hours)s hours)."),
                    days=WINDOW_MAX[TimeUnit.DAYS], hours=WINDOW_MAX[TimeUnit.HOURS],
                )
        if window_unit is TimeUnit.HOURS and rule.window_before == 0 and rule.window_after == 0:
            # A window in days always spans at least the planned day; one in hours could be
            # empty, and an empty window turns "scheduled" straight into "missed".
            problem("window_after", N_("The window must be at least one hour long."))

    every, until = rule.repeat_every, rule.repeat_until
    both = N_("A recurring timepoint needs both a repeat interval and a last repetition.")
    if every is not None and every <= 0:
        problem("repeat_every", N_("The repeat interval must be greater than zero."))
    if every is None and until is not None:
        problem("repeat_every", both)
    if until is None and every is not None:
        problem("repeat_until", both)
    if until is not None:
        if until < rule.offset:
            problem("repeat_until", N_("The last repetition cannot come before the first (%(first)s)."),
                    first=rule.offset)
        elif offset_unit is not None and abs(until) > OFFSET_MAX[offset_unit]:
            problem("repeat_until", too_far, years=OFFSET_MAX_YEARS)
        elif every is not None and every > 0:
            count = (until - rule.offset) // every + 1
            if count > MAX_OCCURRENCES:
                problem("repeat_every", N_("A timepoint can repeat at most %(max)s times (here: %(count)s)."),
                        max=MAX_OCCURRENCES, count=count)

    if label.strip():
        names = _placeholders(label)
        if every is not None or until is not None:
            if _format_label(label, {"day": 0, "week": 0, "hour": 0, "n": 1}) is None:
                problem("label", N_("The label can only use the placeholders %(allowed)s."),
                        allowed=", ".join("{%s}" % name for name in LABEL_PLACEHOLDERS))
        elif names and any(name in LABEL_PLACEHOLDERS for name in names):
            # A one-off timepoint's label is shown as it stands, braces and all.
            problem("label", N_("Placeholders such as %(example)s only work in a recurring timepoint."),
                    example="{week}")
    return problems


def validate_rules(
    rules: Sequence[TimepointRule], *, instruments: Collection[str] | None = None
) -> list[RuleProblem]:
    """Every reason the rules cannot be saved as a schedule template; empty when they can.

    Never raises, whatever the rules hold. ``instruments``, when given, lists the instrument
    codes a timepoint may ask for. Problems come in rule order, then field order.
    """
    problems: list[RuleProblem] = []
    first_use: dict[str, int] = {}
    for index, rule in enumerate(rules):
        problems.extend(_rule_problems(index, rule, instruments))
        code = rule.code if isinstance(rule.code, str) else None
        if code is None:
            continue
        if code in first_use:
            problems.append(RuleProblem(
                index, "code", N_("The code %(code)s is already used by timepoint %(other)s."),
                {"code": code, "other": first_use[code] + 1},
            ))
        else:
            first_use[code] = index
    return problems


# -- built-in templates -------------------------------------------------------------------


def _day(code: str, label: str, day: int, window: int) -> TimepointRule:
    return TimepointRule(code, label, "infusion", day, TimeUnit.DAYS, window, window, TimeUnit.DAYS)


#: Built-in templates for the protocols pro-app serves. Windows are sensible defaults that a
#: study adjusts to its protocol; Day 0 is the anchor day. The "before" timepoints are planned
#: at the event itself, which is also where their window closes: the questionnaire must be
#: answered before lymphodepletion or infusion starts. The day windows of ``car_t_early`` never
#: overlap (Day 4: local days 3-5, Day 7: 6-8, Day 10: 9-11, Day 14: 12-16, ...).
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
