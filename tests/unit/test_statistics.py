"""Means, t-based confidence intervals and change categories, checked against published
t-table values and intervals worked out by hand."""

from __future__ import annotations

import math

import pytest

from pro_app.domain.statistics import (
    ChangeCounts,
    Summary,
    change_categories,
    classify_change,
    higher_is_better,
    mean_ci,
    regularized_incomplete_beta,
    t_cdf,
    t_quantile,
)

# t(0.975, df) from any statistics table (three decimals), and to ten places (as R's qt() gives them;
# checked independently by integrating the t density numerically).
T_TABLE = [
    (1, 12.706, 12.7062047362),
    (2, 4.303, 4.3026527297),
    (5, 2.571, 2.5705818356),
    (10, 2.228, 2.2281388520),
    (30, 2.042, 2.0422724563),
    (100, 1.984, 1.9839715185),
]


@pytest.mark.parametrize(("df", "table", "precise"), T_TABLE)
def test_t_quantile_matches_the_t_table(df: int, table: float, precise: float) -> None:
    value = t_quantile(0.975, df)
    assert round(value, 3) == table
    assert value == pytest.approx(precise, abs=1e-8)


@pytest.mark.parametrize(("p", "df", "expected"), [
    (0.95, 4, 2.1318467863),  # one-sided 95 %
    (0.995, 3, 5.8409093097),  # 99 % two-sided, df 3
    (0.9, 1, 3.0776835372),
    (0.75, 7, 0.7111417781),
])
def test_other_quantiles(p: float, df: int, expected: float) -> None:
    assert t_quantile(p, df) == pytest.approx(expected, abs=1e-8)


def test_t_is_symmetric_and_the_cdf_inverts_the_quantile() -> None:
    for df in (1, 2.5, 7, 60):
        assert t_quantile(0.5, df) == 0.0
        assert t_quantile(0.025, df) == pytest.approx(-t_quantile(0.975, df), rel=1e-12)
        for p in (0.6, 0.9, 0.975, 0.999):
            assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-12)
    # Large df approach the normal quantile 1.959964.
    assert t_quantile(0.975, 100_000) == pytest.approx(1.959964, abs=1e-4)


def test_incomplete_beta_known_values() -> None:
    assert regularized_incomplete_beta(0.5, 2, 2) == pytest.approx(0.5)
    assert regularized_incomplete_beta(0.3, 1, 1) == pytest.approx(0.3)  # uniform
    assert regularized_incomplete_beta(0.2, 2, 3) == pytest.approx(0.1808)  # 1 - (1-x)^3 (1 + 3x)
    assert regularized_incomplete_beta(0.0, 2, 3) == 0.0 and regularized_incomplete_beta(1.0, 2, 3) == 1.0


@pytest.mark.parametrize("bad", [(0.0, 5), (1.0, 5), (0.975, 0), (0.975, -1), (0.975, math.inf)])
def test_t_quantile_refuses_nonsense(bad: tuple[float, float]) -> None:
    with pytest.raises(ValueError):
        t_quantile(*bad)


def test_mean_ci_by_hand() -> None:
    # 50, 60, 70: mean 60, sd 10, se 10/sqrt(3); t(0.975, 2) = 4.302653 -> half width 24.841377.
    summary = mean_ci([50.0, 60.0, 70.0])
    assert summary.n == 3 and summary.mean == pytest.approx(60.0) and summary.sd == pytest.approx(10.0)
    assert summary.low == pytest.approx(35.158623, abs=1e-6)
    assert summary.high == pytest.approx(84.841377, abs=1e-6)
    # 0, 100: mean 50, sd 70.710678, se 50; t(0.975, 1) = 12.706205 -> 50 -/+ 635.310237.
    wide = mean_ci([0.0, 100.0])
    assert (wide.low, wide.high) == (pytest.approx(-585.310237, abs=1e-5), pytest.approx(685.310237, abs=1e-5))
    # 90% level, four values 10, 20, 30, 40: mean 25, sd 12.909944, se 6.454972; t(0.95, 3) = 2.353363
    # -> half width 15.190896.
    ninety = mean_ci([10, 20, 30, 40], level=0.90)
    assert ninety.low == pytest.approx(25 - 15.190896, abs=1e-5)
    assert ninety.high == pytest.approx(25 + 15.190896, abs=1e-5)


def test_mean_ci_small_and_missing() -> None:
    assert mean_ci([]) == Summary(0, None, None, None)
    assert mean_ci([None, None]) == Summary(0, None, None, None)
    one = mean_ci([42.5, None])
    assert one == Summary(1, 42.5, None, None) and not one.has_interval
    same = mean_ci([33.3, 33.3, 33.3])
    assert (same.low, same.high) == (pytest.approx(33.3), pytest.approx(33.3))
    assert mean_ci([10.0, None, 20.0]).n == 2


@pytest.mark.parametrize("bad", [[1.0, math.nan], [math.inf, 2.0]])
def test_mean_ci_refuses_non_finite(bad: list[float]) -> None:
    with pytest.raises(ValueError):
        mean_ci(bad)


@pytest.mark.parametrize("level", [0.0, 1.0, 95, -0.5])
def test_mean_ci_refuses_a_bad_level(level: float) -> None:
    with pytest.raises(ValueError):
        mean_ci([1.0, 2.0], level=level)


CHANGES = [25.0, 10.0, 9.9, 0.0, -9.9, -10.0, -33.3, None]


def test_change_categories_higher_is_better() -> None:
    for kind in ("functional", "global", "summary"):
        assert change_categories(CHANGES, kind=kind) == ChangeCounts(improved=2, stable=3, worsened=2)


def test_change_categories_for_symptoms_lower_is_better() -> None:
    counts = change_categories([30.0, 10.0, 5.0, -12.0], kind="symptom")
    assert counts == (1, 1, 2)  # a falling symptom score is the improvement
    assert counts.improved == 1 and counts.worsened == 2


def test_change_threshold_and_float_noise() -> None:
    # Two real stored scores (16.67 and 6.67, as the scoring engine computes them) differ by 10
    # points, but not exactly in binary; the change must still count as 10.
    change = 16.666666666666664 - 6.666666666666677
    assert change == pytest.approx(10.0) and change < 10.0
    assert classify_change(change, kind="functional") == 1
    assert classify_change(-change, kind="symptom") == 1
    assert change_categories([15.0, 19.9, 20.0], threshold=20, kind="global") == (1, 2, 0)
    with pytest.raises(ValueError):
        change_categories([1.0], threshold=0, kind="global")
    with pytest.raises(ValueError):
        change_categories([1.0], kind="unknown")


def test_direction_by_kind() -> None:
    assert higher_is_better("functional") and higher_is_better("global") and higher_is_better("summary")
    assert not higher_is_better("symptom")
