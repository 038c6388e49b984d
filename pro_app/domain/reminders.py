"""When reminders for a questionnaire window are sent.

A study's reminder plan asks for a message when a window opens and/or a number of hours
before it closes. Nothing is sent during the participant's LOCAL quiet hours (for example
21:00-08:00): a reminder that would fall inside them waits until they end. A reminder that
would then arrive when the questionnaire can no longer be answered is not sent at all.

All instants are aware datetimes in UTC; quiet hours are wall-clock times in the
participant's time zone, so a daylight-saving change never moves them by an hour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone as dt_timezone
from zoneinfo import ZoneInfo

from pro_app.domain.errors import N_, ValidationError

WINDOW_OPEN = "window_open"
BEFORE_CLOSE = "before_close"
KINDS = (WINDOW_OPEN, BEFORE_CLOSE)

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class ReminderPlan:
    """A study's reminder settings. ``quiet_start == quiet_end`` means no quiet hours."""

    on_open: bool
    hours_before_close: int | None
    quiet_start: time
    quiet_end: time


def parse_hhmm(value: str) -> time:
    """``"21:00"`` -> ``time(21, 0)``; anything else is refused (the form shows why)."""
    match = _HHMM.match(value.strip())
    if match is None:
        raise ValidationError(N_("Please give the time as HH:MM, for example 21:00."))
    return time(int(match.group(1)), int(match.group(2)))


def _in_quiet_hours(wall: time, start: time, end: time) -> bool:
    if start == end:
        return False
    if start < end:
        return start <= wall < end
    return wall >= start or wall < end  # wraps midnight, e.g. 21:00-08:00


def _aware_utc(instant: datetime) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError("naive datetime given; reminder times are aware instants")
    return instant.astimezone(dt_timezone.utc)


def _first_instant_at_wall_time(wall: datetime, zone: ZoneInfo, not_before: datetime) -> datetime:
    """The first instant after ``not_before`` at which the local clock shows ``wall`` or later.

    Two daylight-saving cases need care: a wall time that occurs twice (clocks go back) is
    taken at its first occurrence after ``not_before``; a wall time that does not exist
    (clocks go forward) is reached at the moment the clocks jump past it.
    """
    occurrences: list[datetime] = []
    for fold in (0, 1):
        instant = wall.replace(tzinfo=zone, fold=fold).astimezone(dt_timezone.utc)
        if instant.astimezone(zone).replace(tzinfo=None) == wall:
            occurrences.append(instant)
    if occurrences:
        later = [instant for instant in occurrences if instant > not_before]
        return min(later) if later else not_before
    # In a gap: fold=1 maps to just before the jump, fold=0 to just after it. The first
    # instant at or past the wall time is the jump itself (time-zone data counts whole seconds).
    low = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    high = int(wall.replace(tzinfo=zone, fold=0).timestamp())
    new_offset = datetime.fromtimestamp(high, zone).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == new_offset:
            high = middle
        else:
            low = middle
    return max(datetime.fromtimestamp(high, dt_timezone.utc), not_before)


def outside_quiet_hours(instant_utc: datetime, timezone: str, start: time, end: time) -> datetime:
    """The first instant at or after ``instant_utc`` that is not in the local quiet hours.

    Quiet hours run from ``start`` (inclusive) to ``end`` (exclusive) on the participant's
    wall clock and may wrap midnight; ``start == end`` means there are none.
    """
    instant = _aware_utc(instant_utc)
    if start == end:
        return instant
    zone = ZoneInfo(timezone)
    local = instant.astimezone(zone)
    wall = local.time()
    if not _in_quiet_hours(wall, start, end):
        return instant
    ends_on = local.date()
    if start > end and wall >= start:  # late evening: quiet hours end tomorrow morning
        ends_on += timedelta(days=1)
    return _first_instant_at_wall_time(datetime.combine(ends_on, end), zone, instant)


def reminder_times(
    window_opens_at: datetime, window_closes_at: datetime, plan: ReminderPlan, timezone: str
) -> list[tuple[str, datetime]]:
    """The reminders of one questionnaire window as ``(kind, due instant in UTC)``.

    - ``window_open``: when the window opens, after quiet hours.
    - ``before_close``: ``hours_before_close`` hours before it closes, after quiet hours;
      dropped when that is before the window opens, and dropped when it would not come
      later than the opening reminder (a one-day window opening at midnight would otherwise
      send both messages at the end of the quiet hours).
    Any reminder that would only be due when the window has closed is dropped.
    """
    opens = _aware_utc(window_opens_at)
    closes = _aware_utc(window_closes_at)
    times: list[tuple[str, datetime]] = []
    open_due: datetime | None = None
    if plan.on_open:
        due = outside_quiet_hours(opens, timezone, plan.quiet_start, plan.quiet_end)
        if due < closes:
            times.append((WINDOW_OPEN, due))
            open_due = due
    if plan.hours_before_close is not None:
        wanted = closes - timedelta(hours=plan.hours_before_close)
        if wanted >= opens:
            due = outside_quiet_hours(wanted, timezone, plan.quiet_start, plan.quiet_end)
            if due < closes and (open_due is None or due > open_due):
                times.append((BEFORE_CLOSE, due))
    return times
