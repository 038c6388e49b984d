"""Planned assessments: hand-computed dates across time zones and DST, windows, validation.

Every expected instant below was worked out by hand from the zone rules (Europe/Berlin
changes on the last Sundays of March and October at 01:00 UTC, America/New_York on the
second Sunday of March and first Sunday of November at 02:00 local, Asia/Shanghai is UTC+8
all year) and written literally, never computed with the code under test.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pro_app.domain.schedule import (
    ANCHOR_KINDS,
    BUILTIN_TEMPLATES,
    LABEL_PLACEHOLDERS,
    PlannedAssessment,
    RuleProblem,
    TimepointRule,
    local_to_utc,
    plan_assessments,
    status_at,
    validate_rules,
)
from pro_app.domain.states import TimeUnit

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
SHANGHAI = ZoneInfo("Asia/Shanghai")
CAR_T = BUILTIN_TEMPLATES["car_t_early"][1]
QOL = BUILTIN_TEMPLATES["qol_6_weekly"][1]

DAYS, HOURS = TimeUnit.DAYS, TimeUnit.HOURS


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def table(plans: list[PlannedAssessment]) -> list[tuple[str, datetime, datetime, datetime]]:
    return [(p.code, p.planned_at, p.window_opens_at, p.window_closes_at) for p in plans]


def by_code(plans: list[PlannedAssessment]) -> dict[str, tuple[datetime, datetime, datetime]]:
    return {p.code: (p.planned_at, p.window_opens_at, p.window_closes_at) for p in plans}


def day_rule(day: int, before: int = 0, after: int = 0, code: str = "d") -> TimepointRule:
    return TimepointRule(code, f"Day {day}", "infusion", day, DAYS, before, after, DAYS)


# -- built-in templates, Europe/Berlin across the 2026-03-29 spring-forward -----------------


def test_car_t_early_in_berlin_across_the_change_to_summer_time() -> None:
    # Infusion 2026-03-25 10:00 CET (09:00 UTC); lymphodepletion 2026-03-20 09:00 CET.
    # From 2026-03-29 (clocks 02:00 -> 03:00) Berlin is UTC+2 until 2026-10-25, then UTC+1.
    anchors = {
        "lymphodepletion": datetime(2026, 3, 20, 9, 0, tzinfo=BERLIN),
        "infusion": datetime(2026, 3, 25, 10, 0, tzinfo=BERLIN),
    }
    plans = plan_assessments(CAR_T, anchors, "Europe/Berlin")
    assert table(plans) == [
        # hours: elapsed time; the "before" timepoints close at the event itself
        ("pre_ld", utc(2026, 3, 20, 8), utc(2026, 3, 17, 8), utc(2026, 3, 20, 8)),
        ("pre_inf", utc(2026, 3, 25, 9), utc(2026, 3, 24, 9), utc(2026, 3, 25, 9)),
        ("post_1h", utc(2026, 3, 25, 10), utc(2026, 3, 25, 10), utc(2026, 3, 25, 12)),
        ("post_24h", utc(2026, 3, 26, 9), utc(2026, 3, 26, 5), utc(2026, 3, 26, 13)),
        # Day 4 = Sun 29 March 10:00 CEST; window local 28-30 March (28th still CET)
        ("d4", utc(2026, 3, 29, 8), utc(2026, 3, 27, 23), utc(2026, 3, 30, 22)),
        # Day 7 = 1 April 10:00 CEST = 08:00 UTC; window local 31 March - 2 April
        ("d7", utc(2026, 4, 1, 8), utc(2026, 3, 30, 22), utc(2026, 4, 2, 22)),
        ("d10", utc(2026, 4, 4, 8), utc(2026, 4, 2, 22), utc(2026, 4, 5, 22)),
        ("d14", utc(2026, 4, 8, 8), utc(2026, 4, 5, 22), utc(2026, 4, 10, 22)),
        ("d28", utc(2026, 4, 22, 8), utc(2026, 4, 18, 22), utc(2026, 4, 25, 22)),
        ("d60", utc(2026, 5, 24, 8), utc(2026, 5, 16, 22), utc(2026, 5, 31, 22)),
        ("d90", utc(2026, 6, 23, 8), utc(2026, 6, 15, 22), utc(2026, 6, 30, 22)),
        ("d180", utc(2026, 9, 21, 8), utc(2026, 9, 6, 22), utc(2026, 10, 5, 22)),
        # Day 270 = 20 December, winter time again: 10:00 CET = 09:00 UTC
        ("d270", utc(2026, 12, 20, 9), utc(2026, 12, 5, 23), utc(2027, 1, 3, 23)),
        # Day 360 = 20 March 2027 (CET); its window closes on 4 April 2027, after the
        # 28 March 2027 change, at 00:00 CEST
        ("d360", utc(2027, 3, 20, 9), utc(2027, 3, 5, 23), utc(2027, 4, 3, 22)),
    ]
    assert [p.label for p in plans][:5] == [
        "Before lymphodepletion", "Before infusion", "1 h after infusion", "24 h after infusion", "Day 4",
    ]
    assert all(p.occurrence == 0 and p.instrument_code == "qlq_c30" for p in plans)
    # The window around the 23-hour day of 29 March is 71 hours long, not 72.
    d4 = by_code(plans)["d4"]
    assert d4[2] - d4[1] == timedelta(hours=71)


def test_qol_6_weekly_in_berlin_up_to_week_144() -> None:
    # Enrolment Tuesday 2026-03-10 14:30 CET (13:30 UTC).
    plans = plan_assessments(QOL, {"enrolment": datetime(2026, 3, 10, 14, 30, tzinfo=BERLIN)}, "Europe/Berlin")
    assert len(plans) == 1 + 24
    assert [p.label for p in plans] == ["Baseline"] + [f"Week {week}" for week in range(6, 145, 6)]
    assert [(p.code, p.occurrence) for p in plans] == [("baseline", 0)] + [("w6", n) for n in range(24)]
    baseline, week6, week144 = plans[0], plans[1], plans[-1]
    # Baseline: local days 10-17 March (enrolment day + 7)
    assert (baseline.planned_at, baseline.window_opens_at, baseline.window_closes_at) == (
        utc(2026, 3, 10, 13, 30), utc(2026, 3, 9, 23), utc(2026, 3, 17, 23),
    )
    # Week 6 = day 42 = Tue 21 April 14:30 CEST; window local 14-28 April
    assert (week6.planned_at, week6.window_opens_at, week6.window_closes_at) == (
        utc(2026, 4, 21, 12, 30), utc(2026, 4, 13, 22), utc(2026, 4, 28, 22),
    )
    # Week 144 = day 1008 = Tue 12 December 2028 14:30 CET; window local 5-19 December
    assert (week144.label, week144.occurrence) == ("Week 144", 23)
    assert (week144.planned_at, week144.window_opens_at, week144.window_closes_at) == (
        utc(2028, 12, 12, 13, 30), utc(2028, 12, 4, 23), utc(2028, 12, 19, 23),
    )


def test_results_are_utc_and_ordered_by_planned_time() -> None:
    anchors = {
        "enrolment": datetime(2026, 3, 1, 12, 0, tzinfo=BERLIN),
        "lymphodepletion": datetime(2026, 3, 20, 9, 0, tzinfo=BERLIN),
        "infusion": datetime(2026, 3, 25, 10, 0, tzinfo=BERLIN),
    }
    # Rules given out of order, from two templates: the result is still in time order.
    plans = plan_assessments(tuple(reversed(CAR_T)) + QOL, anchors, "Europe/Berlin")
    assert len(plans) == 14 + 25
    planned = [p.planned_at for p in plans]
    assert planned == sorted(planned)
    for p in plans:
        for instant in (p.planned_at, p.window_opens_at, p.window_closes_at):
            assert instant.tzinfo is not None and instant.utcoffset() == timedelta(0)


def test_day_offsets_keep_the_local_time_and_hour_offsets_are_elapsed() -> None:
    rules = (day_rule(4, code="day4"), TimepointRule("h96", "96 h", "infusion", 96, HOURS, 1, 1, HOURS))
    plans = by_code(plan_assessments(rules, {"infusion": datetime(2026, 3, 25, 10, 0, tzinfo=BERLIN)}, "Europe/Berlin"))
    assert plans["day4"][0] == utc(2026, 3, 29, 8)  # 10:00 CEST
    assert plans["h96"] == (utc(2026, 3, 29, 9), utc(2026, 3, 29, 8), utc(2026, 3, 29, 10))  # 11:00 CEST


# -- America/New_York ----------------------------------------------------------------------


def test_new_york_across_the_fall_back_on_2026_11_01() -> None:
    # Infusion Wed 2026-10-28 09:00 EDT (13:00 UTC); on 1 November 02:00 EDT -> 01:00 EST.
    rules = CAR_T + (TimepointRule("h96", "96 h", "infusion", 96, HOURS, 0, 1, HOURS),)
    plans = by_code(plan_assessments(rules, {"infusion": datetime(2026, 10, 28, 9, 0, tzinfo=NEW_YORK)},
                                     "America/New_York"))
    assert "pre_ld" not in plans
    assert plans["post_24h"] == (utc(2026, 10, 29, 13), utc(2026, 10, 29, 9), utc(2026, 10, 29, 17))
    # Day 4 = Sun 1 November 09:00 EST = 14:00 UTC; window local 31 Oct (EDT) - 2 Nov (EST)
    assert plans["d4"] == (utc(2026, 11, 1, 14), utc(2026, 10, 31, 4), utc(2026, 11, 3, 5))
    assert plans["d4"][2] - plans["d4"][1] == timedelta(hours=73)  # 1 November has 25 hours
    # Day 7 = 4 November 09:00 EST; window local 3-5 November
    assert plans["d7"] == (utc(2026, 11, 4, 14), utc(2026, 11, 3, 5), utc(2026, 11, 6, 5))
    # 96 elapsed hours land at 08:00 EST, not at the infusion's 09:00
    assert plans["h96"] == (utc(2026, 11, 1, 13), utc(2026, 11, 1, 13), utc(2026, 11, 1, 14))


def test_new_york_across_the_spring_forward_on_2026_03_08() -> None:
    # Infusion Wed 2026-03-04 09:00 EST (14:00 UTC); on 8 March 02:00 EST -> 03:00 EDT.
    plans = by_code(plan_assessments(CAR_T, {"infusion": datetime(2026, 3, 4, 9, 0, tzinfo=NEW_YORK)},
                                     "America/New_York"))
    assert plans["pre_inf"] == (utc(2026, 3, 4, 14), utc(2026, 3, 3, 14), utc(2026, 3, 4, 14))
    # Day 4 = Sun 8 March 09:00 EDT = 13:00 UTC; window local 7-9 March
    assert plans["d4"] == (utc(2026, 3, 8, 13), utc(2026, 3, 7, 5), utc(2026, 3, 10, 4))
    assert plans["d4"][2] - plans["d4"][1] == timedelta(hours=71)
    # Day 7 = 11 March 09:00 EDT; window local 10-12 March
    assert plans["d7"] == (utc(2026, 3, 11, 13), utc(2026, 3, 10, 4), utc(2026, 3, 13, 4))


# -- Asia/Shanghai -------------------------------------------------------------------------


def test_shanghai_windows_follow_local_dates_not_utc_dates() -> None:
    # Infusion 2026-03-25 07:00 CST is 24 March 23:00 UTC: the local date is a day ahead.
    anchors = {
        "lymphodepletion": datetime(2026, 3, 20, 9, 0, tzinfo=SHANGHAI),
        "infusion": datetime(2026, 3, 25, 7, 0, tzinfo=SHANGHAI),
    }
    plans = by_code(plan_assessments(CAR_T, anchors, "Asia/Shanghai"))
    assert plans["pre_ld"] == (utc(2026, 3, 20, 1), utc(2026, 3, 17, 1), utc(2026, 3, 20, 1))
    assert plans["post_1h"] == (utc(2026, 3, 25, 0), utc(2026, 3, 25, 0), utc(2026, 3, 25, 2))
    # Day 4 = 29 March 07:00 CST; window local 28-30 March, each day 00:00 CST = 16:00 UTC
    assert plans["d4"] == (utc(2026, 3, 28, 23), utc(2026, 3, 27, 16), utc(2026, 3, 30, 16))
    assert plans["d7"] == (utc(2026, 3, 31, 23), utc(2026, 3, 30, 16), utc(2026, 4, 2, 16))
    assert plans["d360"] == (utc(2027, 3, 19, 23), utc(2027, 3, 5, 16), utc(2027, 4, 3, 16))
    # No daylight saving time: every day window is a whole number of 24-hour days.
    for code in ("d4", "d7", "d10", "d14", "d28", "d60", "d90", "d180", "d270", "d360"):
        assert (plans[code][2] - plans[code][1]) % timedelta(hours=24) == timedelta(0)


# -- local times that do not exist or happen twice -----------------------------------------


def test_day_offset_into_a_spring_forward_gap_moves_on_by_the_gap() -> None:
    # 02:30 on 29 March 2026 does not exist in Berlin; read with the offset before the change
    # (fold=0, UTC+1) it is 01:30 UTC = 03:30 CEST.
    rules = (day_rule(7),)
    plans = plan_assessments(rules, {"infusion": datetime(2026, 3, 22, 2, 30, tzinfo=BERLIN)}, "Europe/Berlin")
    assert table(plans) == [("d", utc(2026, 3, 29, 1, 30), utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))]
    # New York: 02:30 on 8 March 2026 -> 07:30 UTC = 03:30 EDT
    plans = plan_assessments(rules, {"infusion": datetime(2026, 3, 1, 2, 30, tzinfo=NEW_YORK)}, "America/New_York")
    assert table(plans) == [("d", utc(2026, 3, 8, 7, 30), utc(2026, 3, 8, 5), utc(2026, 3, 9, 4))]


def test_day_offset_onto_an_ambiguous_time_takes_the_first_occurrence() -> None:
    # 01:30 on 1 November 2026 happens twice in New York; fold=0 is the first, 01:30 EDT.
    rules = (day_rule(7),)
    plans = plan_assessments(rules, {"infusion": datetime(2026, 10, 25, 1, 30, tzinfo=NEW_YORK)},
                             "America/New_York")
    assert plans[0].planned_at == utc(2026, 11, 1, 5, 30)
    # Berlin: 02:30 on 25 October 2026 happens twice; the first is 02:30 CEST = 00:30 UTC.
    plans = plan_assessments(rules, {"infusion": datetime(2026, 10, 18, 2, 30, tzinfo=BERLIN)}, "Europe/Berlin")
    assert plans[0].planned_at == utc(2026, 10, 25, 0, 30)
    assert (plans[0].window_opens_at, plans[0].window_closes_at) == (utc(2026, 10, 24, 22), utc(2026, 10, 25, 23))


def test_an_anchor_in_the_repeated_hour_is_day_0_itself() -> None:
    rules = (day_rule(0, code="d0"), day_rule(1, code="d1"))
    first = {"infusion": utc(2026, 11, 1, 5, 30)}  # 01:30 EDT
    second = {"infusion": utc(2026, 11, 1, 6, 30)}  # 01:30 EST, the same wall-clock time again
    assert by_code(plan_assessments(rules, first, "America/New_York"))["d0"][0] == utc(2026, 11, 1, 5, 30)
    assert by_code(plan_assessments(rules, second, "America/New_York"))["d0"][0] == utc(2026, 11, 1, 6, 30)
    # Day 1 is 2 November 01:30 EST for both.
    assert by_code(plan_assessments(rules, first, "America/New_York"))["d1"][0] == utc(2026, 11, 2, 6, 30)
    assert by_code(plan_assessments(rules, second, "America/New_York"))["d1"][0] == utc(2026, 11, 2, 6, 30)


def test_a_day_whose_midnight_is_skipped_opens_at_its_first_instant() -> None:
    # America/Santiago moves from UTC-4 to UTC-3 at 24:00 on Saturday 5 September 2026, so
    # 6 September begins at 01:00 -03 (04:00 UTC); 7 September begins at 00:00 -03.
    rules = (day_rule(1),)
    plans = plan_assessments(rules, {"infusion": utc(2026, 9, 5, 16)}, "America/Santiago")  # 12:00 -04
    assert table(plans) == [("d", utc(2026, 9, 6, 15), utc(2026, 9, 6, 4), utc(2026, 9, 7, 3))]


def test_local_to_utc_uses_the_same_rule() -> None:
    assert local_to_utc(datetime(2026, 3, 25, 10, 0), "Europe/Berlin") == utc(2026, 3, 25, 9)
    assert local_to_utc(datetime(2026, 3, 29, 2, 30), "Europe/Berlin") == utc(2026, 3, 29, 1, 30)
    assert local_to_utc(datetime(2026, 11, 1, 1, 30), "America/New_York") == utc(2026, 11, 1, 5, 30)
    assert local_to_utc(datetime(2026, 11, 1, 1, 30, fold=1), "America/New_York") == utc(2026, 11, 1, 5, 30)
    assert local_to_utc(datetime(2026, 3, 25, 10, 0, tzinfo=SHANGHAI), "Europe/Berlin") == utc(2026, 3, 25, 2)


# -- windows, anchors, labels --------------------------------------------------------------


def test_window_boundaries() -> None:
    # Berlin Day 7 window: [2026-03-30 22:00 UTC, 2026-04-02 22:00 UTC)
    opens, closes = utc(2026, 3, 30, 22), utc(2026, 4, 2, 22)
    second = timedelta(seconds=1)
    assert status_at(opens, closes, opens - second) == "scheduled"
    assert status_at(opens, closes, opens) == "open"
    assert status_at(opens, closes, closes - second) == "open"
    assert status_at(opens, closes, closes) == "missed"


def test_timepoints_of_a_missing_anchor_are_left_out() -> None:
    only_infusion = plan_assessments(CAR_T, {"infusion": utc(2026, 3, 25, 9)}, "Europe/Berlin")
    assert [p.code for p in only_infusion] == [rule.code for rule in CAR_T[1:]]
    assert plan_assessments(CAR_T, {"enrolment": utc(2026, 3, 1, 9)}, "Europe/Berlin") == []
    assert plan_assessments(CAR_T, {}, "Europe/Berlin") == []
    surgery = TimepointRule("post_op", "After surgery", "surgery", 1)
    assert plan_assessments((surgery,), {"infusion": utc(2026, 3, 25, 9)}, "UTC") == []


def test_a_naive_anchor_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        plan_assessments(CAR_T, {"infusion": datetime(2026, 3, 25, 10, 0)}, "Europe/Berlin")


def test_recurring_labels_and_hour_recurrences() -> None:
    rule = TimepointRule("q12h", "Check {n} at hour {hour} (day {day})", "infusion", 0, HOURS, 1, 1, HOURS,
                         repeat_every=12, repeat_until=36)
    plans = plan_assessments((rule,), {"infusion": utc(2026, 3, 25, 9)}, "UTC")
    assert [p.label for p in plans] == [
        "Check 1 at hour 0 (day 0)", "Check 2 at hour 12 (day 0)", "Check 3 at hour 24 (day 1)",
        "Check 4 at hour 36 (day 1)",
    ]
    assert [p.planned_at for p in plans] == [utc(2026, 3, 25, 9), utc(2026, 3, 25, 21), utc(2026, 3, 26, 9),
                                             utc(2026, 3, 26, 21)]
    # A broken pattern saved before validation existed is shown as it stands, not a crash.
    broken = replace(rule, label="Week {month")
    assert {p.label for p in plan_assessments((broken,), {"infusion": utc(2026, 3, 25, 9)}, "UTC")} == {"Week {month"}


# -- validation ----------------------------------------------------------------------------

GOOD = TimepointRule("d7", "Day 7", "infusion", 7, DAYS, 1, 1, DAYS)
RECURRING = TimepointRule("w6", "Week {week}", "enrolment", 42, DAYS, 7, 7, DAYS, repeat_every=42, repeat_until=1008)


def problems_of(*rules: TimepointRule, **kwargs: object) -> list[tuple[int, str, str, dict[str, object]]]:
    return [(p.index, p.field, p.message, dict(p.params)) for p in validate_rules(rules, **kwargs)]  # type: ignore[arg-type]


def test_built_in_templates_validate_cleanly() -> None:
    for _name, rules in BUILTIN_TEMPLATES.values():
        assert validate_rules(rules, instruments={"qlq_c30"}) == []
    assert set(ANCHOR_KINDS) == {"lymphodepletion", "infusion", "enrolment"}


CODE_MSG = "Use 1 to %(max)s lowercase letters, digits or underscores."


@pytest.mark.parametrize("code", ["", "Day7", "day 7", "d-7", "x" * 41, "d7\n", "tag\u00e9"])
def test_code_format(code: str) -> None:
    assert problems_of(replace(GOOD, code=code)) == [(0, "code", CODE_MSG, {"max": 40})]


def test_code_of_40_characters_is_fine() -> None:
    assert problems_of(replace(GOOD, code="a_" * 20)) == []


def test_code_unique() -> None:
    rules = (GOOD, replace(GOOD, code="d10", offset=10), replace(GOOD, label="Day seven"))
    assert problems_of(*rules) == [
        (2, "code", "The code %(code)s is already used by timepoint %(other)s.", {"code": "d7", "other": 1}),
    ]


@pytest.mark.parametrize("label", ["", "   "])
def test_label_required(label: str) -> None:
    assert problems_of(replace(GOOD, label=label)) == [(0, "label", "This field is required.", {})]


def test_label_length() -> None:
    assert problems_of(replace(GOOD, label="x" * 200)) == []
    assert problems_of(replace(GOOD, label="x" * 201)) == [
        (0, "label", "The label can be at most %(max)s characters long.", {"max": 200}),
    ]


def test_anchor_kind_known() -> None:
    assert problems_of(replace(GOOD, anchor_kind="surgery")) == [
        (0, "anchor_kind", "Unknown anchor event %(kind)s.", {"kind": "surgery"}),
    ]


def test_units_known() -> None:
    rule = replace(GOOD, offset_unit="weeks", window_unit="minutes")  # type: ignore[arg-type]
    assert problems_of(rule) == [
        (0, "offset_unit", "Unknown unit %(unit)s.", {"unit": "weeks"}),
        (0, "window_unit", "Unknown unit %(unit)s.", {"unit": "minutes"}),
    ]
    # Plain strings are accepted as well as the enum (a form hands over strings).
    assert problems_of(replace(GOOD, offset_unit="hours", window_unit="days")) == []  # type: ignore[arg-type]


def test_numbers_whole() -> None:
    rule = replace(GOOD, offset=7.5, window_before=True, repeat_until="12")  # type: ignore[arg-type]
    assert problems_of(rule) == [
        (0, "offset", "Enter a whole number.", {}),
        (0, "window_before", "Enter a whole number.", {}),
        (0, "repeat_until", "Enter a whole number.", {}),
    ]


@pytest.mark.parametrize(
    ("offset", "unit", "ok"),
    [(1826, DAYS, True), (-1826, DAYS, True), (1827, DAYS, False), (-1827, DAYS, False),
     (43824, HOURS, True), (43825, HOURS, False), (-43825, HOURS, False)],
)
def test_offset_within_five_years(offset: int, unit: TimeUnit, ok: bool) -> None:
    expected = [] if ok else [
        (0, "offset", "A timepoint can be at most %(years)s years before or after its anchor event.", {"years": 5}),
    ]
    assert problems_of(replace(GOOD, offset=offset, offset_unit=unit)) == expected


WINDOW_MSG = "Each side of the window must be from 0 to %(days)s days (%(hours)s hours)."


@pytest.mark.parametrize(
    ("before", "after", "unit", "bad"),
    [(365, 365, DAYS, []), (8760, 0, HOURS, []), (-1, 0, DAYS, ["window_before"]), (0, 366, DAYS, ["window_after"]),
     (8761, 8761, HOURS, ["window_before", "window_after"]), (366, 0, HOURS, [])],
)
def test_window_sides(before: int, after: int, unit: TimeUnit, bad: list[str]) -> None:
    rule = replace(GOOD, window_before=before, window_after=after, window_unit=unit)
    assert problems_of(rule) == [(0, name, WINDOW_MSG, {"days": 365, "hours": 8760}) for name in bad]


def test_window_in_hours_not_empty() -> None:
    assert problems_of(replace(GOOD, window_before=0, window_after=0, window_unit=HOURS)) == [
        (0, "window_after", "The window must be at least one hour long.", {}),
    ]
    # A day window of 0/0 is the planned day itself.
    assert problems_of(replace(GOOD, window_before=0, window_after=0)) == []
    assert problems_of(replace(GOOD, window_before=1, window_after=0, window_unit=HOURS)) == []


@pytest.mark.parametrize("every", [0, -42])
def test_repeat_every_positive(every: int) -> None:
    assert problems_of(replace(RECURRING, repeat_every=every)) == [
        (0, "repeat_every", "The repeat interval must be greater than zero.", {}),
    ]


def test_repeat_needs_interval_and_end() -> None:
    both = "A recurring timepoint needs both a repeat interval and a last repetition."
    assert problems_of(replace(RECURRING, repeat_until=None)) == [(0, "repeat_until", both, {})]
    assert problems_of(replace(RECURRING, repeat_every=None)) == [(0, "repeat_every", both, {})]


def test_repeat_until_not_before_offset() -> None:
    assert problems_of(replace(RECURRING, repeat_until=42)) == []  # a single occurrence
    assert problems_of(replace(RECURRING, repeat_until=41)) == [
        (0, "repeat_until", "The last repetition cannot come before the first (%(first)s).", {"first": 42}),
    ]


def test_repeat_until_within_five_years() -> None:
    assert problems_of(replace(RECURRING, repeat_until=1827 + 42)) == [
        (0, "repeat_until", "A timepoint can be at most %(years)s years before or after its anchor event.",
         {"years": 5}),
    ]


def test_at_most_200_occurrences() -> None:
    rule = TimepointRule("daily", "Day {day}", "infusion", 1, DAYS, 0, 0, DAYS, repeat_every=1, repeat_until=200)
    assert problems_of(rule) == []
    assert len(plan_assessments((rule,), {"infusion": utc(2026, 1, 1)}, "UTC")) == 200
    assert problems_of(replace(rule, repeat_until=201)) == [
        (0, "repeat_every", "A timepoint can repeat at most %(max)s times (here: %(count)s).",
         {"max": 200, "count": 201}),
    ]


PLACEHOLDER_MSG = "The label can only use the placeholders %(allowed)s."


@pytest.mark.parametrize("label", ["Week {week}", "Day {day}", "Visit {n}", "Hour {hour}", "Follow-up",
                                   "Week {week:03d} {{x}}"])
def test_recurring_label_placeholders_valid(label: str) -> None:
    assert problems_of(replace(RECURRING, label=label)) == []


@pytest.mark.parametrize("label", ["Month {month}", "Week {week", "Week }", "Week {}", "Week {0}",
                                   "Week {week.real}", "Week {week:q}", "Week {week!z}"])
def test_recurring_label_placeholders_invalid(label: str) -> None:
    assert problems_of(replace(RECURRING, label=label)) == [
        (0, "label", PLACEHOLDER_MSG, {"allowed": "{day}, {week}, {hour}, {n}"}),
    ]


def test_placeholder_in_a_one_off_label() -> None:
    assert problems_of(replace(GOOD, label="Week {week}")) == [
        (0, "label", "Placeholders such as %(example)s only work in a recurring timepoint.",
         {"example": "{week}"}),
    ]
    # Braces that are not one of our placeholders are just text there.
    assert problems_of(replace(GOOD, label="Day 7 {post-op}")) == []


def test_instrument_code() -> None:
    assert problems_of(replace(GOOD, instrument_code="QLQ C30")) == [(0, "instrument_code", CODE_MSG, {"max": 40})]
    assert problems_of(replace(GOOD, instrument_code="eq5d"), instruments={"qlq_c30"}) == [
        (0, "instrument_code", "Unknown instrument %(code)s.", {"code": "eq5d"}),
    ]
    assert problems_of(replace(GOOD, instrument_code="eq5d")) == []


def test_problems_come_in_rule_order_with_indexes() -> None:
    rules = (GOOD, replace(GOOD, code="x", label=""), replace(GOOD, code="y", anchor_kind="nope"))
    assert [(p.index, p.field) for p in validate_rules(rules)] == [(1, "label"), (2, "anchor_kind")]


def test_messages_are_msgids_with_named_placeholders() -> None:
    broken = (
        TimepointRule("Bad", "", "x", 9999, "weeks", -1, 9999, HOURS, 0, -5, "Q"),  # type: ignore[arg-type]
        TimepointRule("w", "{month}", "enrolment", 0, DAYS, 0, 0, HOURS, 1, 9999),
        TimepointRule("w", "{week}", "enrolment", 0, DAYS, 0, 0, HOURS),
    )
    problems = validate_rules(broken)
    assert len({p.message for p in problems}) >= 9
    for problem in problems:
        assert isinstance(problem, RuleProblem)
        named = set(re.findall(r"%\((\w+)\)s", problem.message))
        assert named == set(problem.params), problem
        assert "%" not in re.sub(r"%\(\w+\)s", "", problem.message)  # no positional %s or %d
        assert str(problem) == problem.message % dict(problem.params)
    assert LABEL_PLACEHOLDERS == ("day", "week", "hour", "n")


# -- properties ----------------------------------------------------------------------------

ZONES = ["Europe/Berlin", "America/New_York", "Asia/Shanghai", "Australia/Sydney", "UTC"]
FAST = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def local_anchors(draw: st.DrawFn) -> tuple[str, datetime]:
    zone = draw(st.sampled_from(ZONES))
    # Any real instant in 2025-2028, including both readings of a repeated hour (fold 0 and 1).
    at = draw(st.datetimes(datetime(2025, 1, 1), datetime(2028, 12, 31, 23, 59),
                           timezones=st.just(ZoneInfo(zone)), allow_imaginary=False))
    return zone, at


@FAST
@given(local_anchors(), st.integers(-400, 1100), st.integers(0, 60), st.integers(0, 60))
def test_day_windows_are_whole_local_days_around_the_planned_time(
    anchor: tuple[str, datetime], offset: int, before: int, after: int
) -> None:
    zone_name, at = anchor
    zone = ZoneInfo(zone_name)
    rule = TimepointRule("t", "T", "infusion", offset, DAYS, before, after, DAYS)
    (plan,) = plan_assessments((rule,), {"infusion": at}, zone_name)
    assert plan.window_opens_at <= plan.planned_at < plan.window_closes_at
    opens, closes, planned = (x.astimezone(zone) for x in (plan.window_opens_at, plan.window_closes_at,
                                                            plan.planned_at))
    assert opens.time() == time(0) and closes.time() == time(0)
    assert (closes.date() - opens.date()).days == before + after + 1
    assert opens.date() == planned.date() - timedelta(days=before)
    # Same wall-clock time as the anchor, Day N local calendar days later, when that time exists.
    wall = at.replace(tzinfo=None) + timedelta(days=offset)
    exists = wall.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall
    # (Compared in UTC: Python never finds an ambiguous local time equal to another zone's.)
    if offset == 0:
        assert plan.planned_at == at.astimezone(UTC)
    elif exists:
        assert planned.replace(tzinfo=None) == wall
        assert plan.planned_at == wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    else:  # inside a spring-forward gap: moved on, the same day
        assert planned.date() == wall.date() and planned.replace(tzinfo=None) > wall


@FAST
@given(local_anchors(), st.integers(-2000, 2000), st.integers(0, 200), st.integers(0, 200))
def test_hour_offsets_and_windows_are_elapsed_time(
    anchor: tuple[str, datetime], offset: int, before: int, after: int
) -> None:
    zone_name, at = anchor
    rule = TimepointRule("t", "T", "infusion", offset, HOURS, before, after + 1, HOURS)
    (plan,) = plan_assessments((rule,), {"infusion": at}, zone_name)
    assert plan.planned_at - at == timedelta(hours=offset)
    assert plan.planned_at - plan.window_opens_at == timedelta(hours=before)
    assert plan.window_closes_at - plan.planned_at == timedelta(hours=after + 1)
