"""When reminders are due: local quiet hours (also across midnight and daylight-saving
changes) and the rules that drop a reminder instead of sending it too late."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from pro_app.domain.errors import ValidationError
from pro_app.domain.reminders import (
    BEFORE_CLOSE,
    WINDOW_OPEN,
    ReminderPlan,
    outside_quiet_hours,
    parse_hhmm,
    reminder_times,
)

BERLIN = "Europe/Berlin"
NIGHT = (time(21, 0), time(8, 0))


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=timezone.utc)


def local(zone: str, year: int, month: int, day: int, hour: int, minute: int, second: int = 0, *,
          fold: int = 0) -> datetime:
    """An instant given as the wall-clock time of ``zone``, returned in UTC."""
    return datetime(year, month, day, hour, minute, second, tzinfo=ZoneInfo(zone), fold=fold).astimezone(timezone.utc)


def plan(on_open: bool = True, hours_before_close: int | None = 24, quiet: tuple[time, time] = NIGHT) -> ReminderPlan:
    return ReminderPlan(on_open=on_open, hours_before_close=hours_before_close, quiet_start=quiet[0],
                        quiet_end=quiet[1])


# -- parse_hhmm -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [("21:00", time(21)), ("08:30", time(8, 30)), (" 00:00 ", time(0)),
                                                 ("23:59", time(23, 59))])
def test_parse_hhmm(text: str, expected: time) -> None:
    assert parse_hhmm(text) == expected


@pytest.mark.parametrize("text", ["24:00", "8:00", "08:60", "0800", "", "08:00:00", "ab:cd", "21:00pm"])
def test_parse_hhmm_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_hhmm(text)


# -- outside_quiet_hours ----------------------------------------------------------------------


def test_daytime_instant_is_kept() -> None:
    noon = local(BERLIN, 2031, 6, 10, 12, 0)
    assert outside_quiet_hours(noon, BERLIN, *NIGHT) == noon


def test_late_evening_waits_for_the_next_morning_across_midnight() -> None:
    evening = local(BERLIN, 2031, 6, 10, 22, 30)
    assert outside_quiet_hours(evening, BERLIN, *NIGHT) == local(BERLIN, 2031, 6, 11, 8, 0)


def test_early_morning_waits_until_the_end_of_the_same_night() -> None:
    early = local(BERLIN, 2031, 6, 11, 3, 15)
    assert outside_quiet_hours(early, BERLIN, *NIGHT) == local(BERLIN, 2031, 6, 11, 8, 0)


def test_quiet_hours_start_inclusive_end_exclusive() -> None:
    assert outside_quiet_hours(local(BERLIN, 2031, 6, 10, 21, 0), BERLIN, *NIGHT) == local(BERLIN, 2031, 6, 11, 8, 0)
    just_before = local(BERLIN, 2031, 6, 10, 20, 59, 59)
    assert outside_quiet_hours(just_before, BERLIN, *NIGHT) == just_before
    end = local(BERLIN, 2031, 6, 11, 8, 0)
    assert outside_quiet_hours(end, BERLIN, *NIGHT) == end


def test_quiet_hours_within_one_day() -> None:
    lunch = (time(12, 0), time(14, 0))
    assert outside_quiet_hours(local(BERLIN, 2031, 6, 10, 13, 0), BERLIN, *lunch) == local(BERLIN, 2031, 6, 10, 14, 0)
    assert outside_quiet_hours(local(BERLIN, 2031, 6, 10, 23, 0), BERLIN, *lunch) == local(BERLIN, 2031, 6, 10, 23, 0)


def test_start_equal_to_end_means_no_quiet_hours() -> None:
    for hour in range(24):
        instant = local(BERLIN, 2031, 6, 10, hour, 30)
        assert outside_quiet_hours(instant, BERLIN, time(22, 0), time(22, 0)) == instant


def test_quiet_hours_are_those_of_the_participants_own_time_zone() -> None:
    # 14:00 UTC is 16:00 in Berlin (fine) but 22:00 in Shanghai (quiet until 08:00 there).
    instant = utc(2031, 6, 10, 14, 0)
    assert outside_quiet_hours(instant, BERLIN, *NIGHT) == instant
    assert outside_quiet_hours(instant, "Asia/Shanghai", *NIGHT) == local("Asia/Shanghai", 2031, 6, 11, 8, 0)


def test_result_is_utc() -> None:
    result = outside_quiet_hours(local(BERLIN, 2031, 6, 10, 23, 0), BERLIN, *NIGHT)
    assert result.utcoffset() == timedelta(0)


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError):
        outside_quiet_hours(datetime(2031, 6, 10, 12, 0), BERLIN, *NIGHT)


def test_spring_forward_night_ends_at_eight_local_not_eight_winter_time() -> None:
    # 2031-03-30: Berlin changes from CET (UTC+1) to CEST (UTC+2) at 02:00 local.
    evening = local(BERLIN, 2031, 3, 29, 22, 0)
    result = outside_quiet_hours(evening, BERLIN, *NIGHT)
    assert result == utc(2031, 3, 30, 6, 0)
    assert result.astimezone(ZoneInfo(BERLIN)).hour == 8
    assert result - evening == timedelta(hours=9)  # the night is one hour shorter


def test_fall_back_night_ends_at_eight_local() -> None:
    # 2031-10-26: Berlin goes back from CEST to CET at 03:00 local.
    evening = local(BERLIN, 2031, 10, 25, 22, 0)
    result = outside_quiet_hours(evening, BERLIN, *NIGHT)
    assert result == utc(2031, 10, 26, 7, 0)
    assert result - evening == timedelta(hours=11)  # the night is one hour longer


def test_quiet_hours_ending_in_the_skipped_hour_end_when_the_clocks_jump() -> None:
    # 02:30 does not exist on 2031-03-30 in Berlin: the clock jumps from 02:00 to 03:00.
    inside = local(BERLIN, 2031, 3, 30, 1, 15)
    result = outside_quiet_hours(inside, BERLIN, time(1, 0), time(2, 30))
    assert result == utc(2031, 3, 30, 1, 0)
    assert result.astimezone(ZoneInfo(BERLIN)).replace(tzinfo=None) == datetime(2031, 3, 30, 3, 0)


def test_quiet_hours_ending_in_the_repeated_hour() -> None:
    quiet = (time(1, 0), time(2, 30))
    first = local(BERLIN, 2031, 10, 26, 2, 15, fold=0)  # 02:15 summer time
    assert outside_quiet_hours(first, BERLIN, *quiet) == local(BERLIN, 2031, 10, 26, 2, 30, fold=0)
    second = local(BERLIN, 2031, 10, 26, 2, 15, fold=1)  # 02:15 again, winter time
    assert outside_quiet_hours(second, BERLIN, *quiet) == local(BERLIN, 2031, 10, 26, 2, 30, fold=1)


# -- reminder_times ---------------------------------------------------------------------------


def test_multi_day_window_gets_both_reminders_after_the_night() -> None:
    # Day windows open and close at local midnight.
    opens, closes = local(BERLIN, 2031, 6, 10, 0, 0), local(BERLIN, 2031, 6, 13, 0, 0)
    assert reminder_times(opens, closes, plan(), BERLIN) == [
        (WINDOW_OPEN, local(BERLIN, 2031, 6, 10, 8, 0)),
        (BEFORE_CLOSE, local(BERLIN, 2031, 6, 12, 8, 0)),
    ]


def test_one_day_window_gets_one_message_not_two_at_the_same_time() -> None:
    opens, closes = local(BERLIN, 2031, 6, 10, 0, 0), local(BERLIN, 2031, 6, 11, 0, 0)
    assert reminder_times(opens, closes, plan(), BERLIN) == [(WINDOW_OPEN, local(BERLIN, 2031, 6, 10, 8, 0))]
    only_before_close = reminder_times(opens, closes, plan(on_open=False), BERLIN)
    assert only_before_close == [(BEFORE_CLOSE, local(BERLIN, 2031, 6, 10, 8, 0))]


def test_before_close_that_would_fall_before_the_window_opens_is_dropped() -> None:
    opens, closes = local(BERLIN, 2031, 6, 10, 9, 0), local(BERLIN, 2031, 6, 10, 17, 0)  # an 8-hour window
    assert reminder_times(opens, closes, plan(hours_before_close=24), BERLIN) == [
        (WINDOW_OPEN, local(BERLIN, 2031, 6, 10, 9, 0))
    ]
    assert reminder_times(opens, closes, plan(hours_before_close=4), BERLIN) == [
        (WINDOW_OPEN, local(BERLIN, 2031, 6, 10, 9, 0)),
        (BEFORE_CLOSE, local(BERLIN, 2031, 6, 10, 13, 0)),
    ]


def test_reminders_pushed_past_the_close_by_quiet_hours_are_dropped() -> None:
    # A window from 22:00 to 23:30 lies wholly in the quiet hours: nothing can be sent.
    opens, closes = local(BERLIN, 2031, 6, 10, 22, 0), local(BERLIN, 2031, 6, 10, 23, 30)
    assert reminder_times(opens, closes, plan(hours_before_close=1), BERLIN) == []
    # Closing at 23:00, "2 hours before" is 21:00 (quiet until 08:00, after the close).
    opens, closes = local(BERLIN, 2031, 6, 10, 9, 0), local(BERLIN, 2031, 6, 10, 23, 0)
    assert reminder_times(opens, closes, plan(hours_before_close=2), BERLIN) == [
        (WINDOW_OPEN, local(BERLIN, 2031, 6, 10, 9, 0))
    ]


def test_reminder_exactly_at_the_close_is_dropped() -> None:
    opens, closes = local(BERLIN, 2031, 6, 10, 9, 0), local(BERLIN, 2031, 6, 10, 12, 0)
    assert reminder_times(opens, closes, plan(on_open=False, hours_before_close=0), BERLIN) == []


def test_plan_switches() -> None:
    opens, closes = local(BERLIN, 2031, 6, 10, 0, 0), local(BERLIN, 2031, 6, 17, 0, 0)
    assert [kind for kind, _ in reminder_times(opens, closes, plan(on_open=False), BERLIN)] == [BEFORE_CLOSE]
    assert [kind for kind, _ in reminder_times(opens, closes, plan(hours_before_close=None), BERLIN)] == [WINDOW_OPEN]
    assert reminder_times(opens, closes, plan(on_open=False, hours_before_close=None), BERLIN) == []


def test_without_quiet_hours_nothing_moves() -> None:
    opens, closes = local(BERLIN, 2031, 6, 10, 0, 0), local(BERLIN, 2031, 6, 13, 0, 0)
    assert reminder_times(opens, closes, plan(quiet=(time(0), time(0))), BERLIN) == [
        (WINDOW_OPEN, opens),
        (BEFORE_CLOSE, closes - timedelta(hours=24)),
    ]


def test_hours_before_close_are_elapsed_hours_across_a_dst_change() -> None:
    # Closing at 12:00 CEST on 2031-03-30; 24 hours earlier is 11:00 CET on the 29th.
    opens, closes = local(BERLIN, 2031, 3, 27, 0, 0), local(BERLIN, 2031, 3, 30, 12, 0)
    times = dict(reminder_times(opens, closes, plan(), BERLIN))
    assert times[BEFORE_CLOSE] == closes - timedelta(hours=24) == local(BERLIN, 2031, 3, 29, 11, 0)


def test_every_reminder_lies_in_its_window_and_outside_quiet_hours() -> None:
    zone = ZoneInfo(BERLIN)
    for start in (local(BERLIN, 2031, 3, 25, 0, 0), local(BERLIN, 2031, 10, 21, 0, 0)):
        for step in range(0, 24 * 10, 5):  # windows starting at all hours around both DST changes
            for length in (1, 3, 8, 24, 49, 24 * 7):
                opens = start + timedelta(hours=step)
                closes = opens + timedelta(hours=length)
                for kind, due in reminder_times(opens, closes, plan(hours_before_close=6), BERLIN):
                    assert opens <= due < closes, (kind, opens, closes, due)
                    wall = due.astimezone(zone).time()
                    assert not (wall >= time(21) or wall < time(8)), (kind, opens, closes, due)
