"""Descriptive statistics for the analysts' pages: means with t-based confidence intervals,
and counts of participants whose score changed by a clinically important amount.

Pure Python plus numpy, no scipy: the Student t quantile is computed here from the
regularised incomplete beta function (continued fraction, Numerical Recipes 6.4) inverted by
bisection, which is exact to about 1e-12 -- far below the one decimal scores are shown with.

Conventions (what a statistician reading the pages should expect):

* the confidence interval of a mean is ``mean +/- t(1 - alpha/2, n - 1) * sd / sqrt(n)`` with
  the sample standard deviation (``ddof=1``); with fewer than two values there is no interval;
* missing values (``None``) are left out, never imputed: ``n`` counts the values used;
* the direction of "better" depends on the kind of scale: functional and global scales and
  summary scores improve when they rise, symptom scales when they fall;
* a change of at least ``threshold`` points (10 by default, the usual "small but clinically
  important" difference for the QLQ-C30, Osoba et al. 1998) in the better direction is an
  improvement, in the worse direction a worsening, anything smaller is stable.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

#: Kinds of score whose higher values mean better quality of life (the summary score enters
#: symptom scales as 100 - x, so it too is "higher is better").
HIGHER_IS_BETTER = {"functional": True, "global": True, "summary": True, "symptom": False}

#: Scores are stored at full float64 precision, so a change of exactly 10 points can arrive as
#: 9.999999999999996; it must still count as 10.
_CHANGE_TOLERANCE = 1e-9

_CF_EPSILON = 1e-15
_CF_TINY = 1e-300
_CF_MAX_ITERATIONS = 10_000


@dataclass(frozen=True, slots=True)
class Summary:
    """The mean of ``n`` values with its confidence interval ``[low, high]``.

    ``mean`` is None without values; ``low``/``high`` (and ``sd``) are None with fewer than
    two, because one value says nothing about its own variability.
    """

    n: int
    mean: float | None
    low: float | None
    high: float | None
    sd: float | None = None

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None


class ChangeCounts(NamedTuple):
    """How many changes were improvements, stable and worsenings."""

    improved: int
    stable: int
    worsened: int


def mean_ci(values: Iterable[float | None], level: float = 0.95) -> Summary:
    """The mean of the non-missing ``values`` with its two-sided ``level`` t interval.

    Raises ValueError for a level outside (0, 1) or a value that is NaN or infinite (a
    stored score never is; such a value is a bug upstream, not a missing score).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be between 0 and 1, got {level!r}")
    data = np.asarray([float(v) for v in values if v is not None], dtype=np.float64)
    n = int(data.size)
    if n and not bool(np.all(np.isfinite(data))):
        raise ValueError("values must be finite numbers (use None for a missing value)")
    if n == 0:
        return Summary(0, None, None, None)
    mean = float(data.mean())
    if n < 2:
        return Summary(n, mean, None, None)
    sd = float(data.std(ddof=1))
    half = t_quantile((1.0 + level) / 2.0, n - 1) * sd / math.sqrt(n)
    return Summary(n, mean, mean - half, mean + half, sd)


def higher_is_better(kind: str) -> bool:
    """Whether a rising score of this kind (functional, global, symptom, summary) is good."""
    try:
        return HIGHER_IS_BETTER[kind]
    except KeyError:
        raise ValueError(f"unknown kind of scale {kind!r}") from None


def classify_change(change: float, threshold: float = 10.0, *, kind: str) -> int:
    """+1 improved, 0 stable, -1 worsened: ``change`` is later minus baseline, in points."""
    if threshold <= 0 or not math.isfinite(threshold):
        raise ValueError(f"the threshold must be a positive number of points, got {threshold!r}")
    signed = change if higher_is_better(kind) else -change
    if signed >= threshold - _CHANGE_TOLERANCE:
        return 1
    if signed <= -threshold + _CHANGE_TOLERANCE:
        return -1
    return 0


def change_categories(changes: Iterable[float | None], threshold: float = 10.0, *, kind: str) -> ChangeCounts:
    """Count improved / stable / worsened among ``changes`` (later minus baseline, points).

    ``kind`` gives the direction: for functional, global and summary scores a rise of at
    least ``threshold`` is an improvement; for symptom scales a fall of at least
    ``threshold`` is. Missing changes (None) are not counted.
    """
    counts = {1: 0, 0: 0, -1: 0}
    for change in changes:
        if change is not None:
            counts[classify_change(float(change), threshold, kind=kind)] += 1
    return ChangeCounts(improved=counts[1], stable=counts[0], worsened=counts[-1])


# --------------------------------------------------------------------------- Student t


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom (df > 0, may be fractional)."""
    _check_df(df)
    if math.isnan(t):
        raise ValueError("t must be a number")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * regularized_incomplete_beta(df / (df + t * t), df / 2.0, 0.5)
    return 1.0 - tail if t > 0 else tail


@functools.lru_cache(maxsize=1024)
def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (0 < p < 1).

    Cached: a page asks for the same few (level, n - 1) pairs hundreds of times. Solves ``I_x(df/2, 1/2) = 2 * (1 - p)`` for ``x = df / (df + t^2)`` by bisection: the
    incomplete beta function is increasing in ``x``, so bisection cannot miss, and it runs
    until the bracket cannot shrink any further in floating point.
    """
    _check_df(df)
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be between 0 and 1, got {p!r}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    target = 2.0 * (1.0 - p)
    low, high = 0.0, 1.0
    for _ in range(2_000):
        middle = (low + high) / 2.0
        if middle in (low, high):
            break
        if regularized_incomplete_beta(middle, df / 2.0, 0.5) < target:
            low = middle
        else:
            high = middle
    x = (low + high) / 2.0
    return math.sqrt(df * (1.0 - x) / x)


def regularized_incomplete_beta(x: float, a: float, b: float) -> float:
    """``I_x(a, b)``, the regularised incomplete beta function, for 0 <= x <= 1, a, b > 0."""
    if a <= 0 or b <= 0:
        raise ValueError("a and b must be positive")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be between 0 and 1, got {x!r}")
    if x == 0.0 or x == 1.0:
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    # The continued fraction converges fast only on this side of the mean; use the symmetry
    # I_x(a, b) = 1 - I_(1-x)(b, a) on the other.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(x, a, b) / a
    return 1.0 - front * _beta_fraction(1.0 - x, b, a) / b


def _beta_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz's method)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _CF_TINY else _CF_TINY)
    result = d
    for m in range(1, _CF_MAX_ITERATIONS + 1):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _CF_TINY else _CF_TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _CF_TINY else _CF_TINY
            step = d * c
            result *= step
        if abs(step - 1.0) < _CF_EPSILON:
            return result
    raise ArithmeticError(f"incomplete beta did not converge (x={x}, a={a}, b={b})")


def _check_df(df: float) -> None:
    if not (df > 0 and math.isfinite(df)):
        raise ValueError(f"degrees of freedom must be a positive number, got {df!r}")
