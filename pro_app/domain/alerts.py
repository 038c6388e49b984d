"""Alert rules evaluated on scores: fixed thresholds and worsening from baseline.

An alert asks a nurse to look at a result; it never changes a score. Two kinds:

* **threshold** -- a published cut-off for clinical importance (e.g. the Giesinger 2020 preset
  in the QLQ-C30 definition): ``lt`` flags a score below the threshold (functional scales,
  where low is bad), ``ge`` a score at or above it (symptom scales, where high is bad);
* **worsening** -- a change from the participant's own baseline of at least ``min_change``
  points in the bad direction: a functional or global score that drops, a symptom score that
  rises.

A missing score (None) never alerts: absence of data is followed up as a missed assessment,
not as a clinical signal.

Comparisons allow ``TOLERANCE`` of floating-point slack, so a score or change that equals the
cut-off in exact arithmetic (say 50 computed as 49.99999999999999) is treated as equal to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from pro_app.domain.instruments import AlertRule

TOLERANCE = 1e-9  # far below any clinically meaningful difference on a 0-100 scale

AlertKind = Literal["threshold", "worsening"]


@dataclass(frozen=True, slots=True)
class AlertFinding:
    """One rule that fired for one score.

    ``threshold`` is the cut-off (threshold alerts) or the minimum change (worsening alerts);
    ``baseline`` is the baseline score for worsening alerts, None otherwise.
    """

    rule_code: str
    scale: str
    value: float
    threshold: float
    kind: AlertKind
    baseline: float | None = None


def evaluate_thresholds(
    rules: Iterable[AlertRule], scores: Mapping[str, float | None]
) -> list[AlertFinding]:
    """Findings for every rule whose score is present and beyond its threshold, in rule order.

    A rule whose scale is absent from ``scores`` is treated like a missing score.
    """
    findings: list[AlertFinding] = []
    for rule in rules:
        value = scores.get(rule.scale)
        if value is not None and _beyond(rule, value):
            findings.append(
                AlertFinding(rule.code, rule.scale, value, rule.threshold, "threshold")
            )
    return findings


def _beyond(rule: AlertRule, value: float) -> bool:
    if rule.op == "lt":
        return value < rule.threshold - TOLERANCE
    if rule.op == "ge":
        return value >= rule.threshold - TOLERANCE
    raise ValueError(f"unknown alert operator {rule.op!r}")


def evaluate_worsening(
    scores: Mapping[str, float | None],
    baseline_scores: Mapping[str, float | None],
    scale_kinds: Mapping[str, str],
    min_change: float = 10.0,
) -> list[AlertFinding]:
    """Findings for scales that worsened by at least ``min_change`` points since baseline.

    ``scale_kinds`` (e.g. ``instrument.scale_kinds``) says which direction is bad for each
    scale and which scales to look at; findings follow its order. Scales missing now or at
    baseline are skipped.
    """
    if min_change <= 0:
        raise ValueError("min_change must be positive: a zero change is not a worsening")
    findings: list[AlertFinding] = []
    for scale, kind in scale_kinds.items():
        value = scores.get(scale)
        baseline = baseline_scores.get(scale)
        if value is None or baseline is None:
            continue
        if _worsening(kind, value - baseline) >= min_change - TOLERANCE:
            findings.append(
                AlertFinding(
                    f"{scale}:worsening:{min_change:g}",
                    scale,
                    value,
                    min_change,
                    "worsening",
                    baseline,
                )
            )
    return findings


def _worsening(kind: str, change: float) -> float:
    """How many points worse: high is good on functional/global scales, bad on symptoms."""
    if kind in ("functional", "global"):
        return -change
    if kind == "symptom":
        return change
    raise ValueError(f"unknown scale kind {kind!r}")
