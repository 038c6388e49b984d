"""Alert rules: published thresholds and worsening from baseline; missing never alerts."""

from __future__ import annotations

import pytest

from pro_app.domain.alerts import AlertFinding, evaluate_thresholds, evaluate_worsening
from pro_app.domain.instruments import AlertRule, default_registry
from pro_app.domain.scoring import result_values, score_answers

C30 = default_registry().get("qlq_c30")
GIESINGER = C30.alert_preset("giesinger_2020_thresholds").rules


@pytest.mark.parametrize(
    ("rule", "value", "fires"),
    [
        (AlertRule("PF2", "lt", 83), 82.9, True),
        (AlertRule("PF2", "lt", 83), 83.0, False),
        (AlertRule("FA", "ge", 39), 39.0, True),
        (AlertRule("FA", "ge", 39), 38.9, False),
        # 50 computed with binary rounding error still counts as reaching 50
        (AlertRule("SL", "ge", 50), 49.99999999999999, True),
        (AlertRule("SL", "lt", 50), 49.99999999999999, False),
    ],
)
def test_threshold_boundaries(rule: AlertRule, value: float, fires: bool) -> None:
    findings = evaluate_thresholds([rule], {rule.scale: value})
    assert bool(findings) is fires
    if fires:
        assert findings == [
            AlertFinding(rule.code, rule.scale, value, float(rule.threshold), "threshold", None)
        ]


def test_missing_scores_never_alert() -> None:
    assert evaluate_thresholds(GIESINGER, {code: None for code in C30.score_codes}) == []
    assert evaluate_thresholds(GIESINGER, {}) == []


def test_worst_questionnaire_fires_every_giesinger_rule_in_order() -> None:
    worst = {f"q{n}": 4 for n in range(1, 29)} | {"q29": 1, "q30": 1}
    findings = evaluate_thresholds(GIESINGER, result_values(score_answers(C30, worst)))
    assert [f.scale for f in findings] == [rule.scale for rule in GIESINGER]
    assert findings[0].rule_code == "PF2:lt:83"


def test_best_questionnaire_fires_nothing() -> None:
    best = {f"q{n}": 1 for n in range(1, 29)} | {"q29": 7, "q30": 7}
    assert evaluate_thresholds(GIESINGER, result_values(score_answers(C30, best))) == []


KINDS = {"QL2": "global", "PF2": "functional", "FA": "symptom"}


@pytest.mark.parametrize(
    ("scale", "baseline", "now", "fires"),
    [
        ("PF2", 80.0, 70.0, True),  # functional drop of exactly 10
        ("PF2", 80.0, 70.1, False),
        ("PF2", 70.0, 90.0, False),  # improvement
        ("QL2", 66.66666666666667, 50.0, True),
        ("QL2", 50.0, 58.333333333333336, False),
        ("FA", 33.33333333333333, 44.44444444444444, True),  # symptom rise of 11.1
        ("FA", 44.44444444444444, 33.33333333333333, False),
        ("FA", 60.0, 69.99999999999999, True),  # 10 in exact arithmetic
    ],
)
def test_worsening(scale: str, baseline: float, now: float, fires: bool) -> None:
    findings = evaluate_worsening({scale: now}, {scale: baseline}, KINDS)
    assert bool(findings) is fires
    if fires:
        assert findings == [
            AlertFinding(f"{scale}:worsening:10", scale, now, 10.0, "worsening", baseline)
        ]


def test_worsening_skips_missing_values_and_respects_min_change() -> None:
    now = {"QL2": None, "PF2": 60.0, "FA": 100.0}
    baseline = {"QL2": 100.0, "PF2": 80.0, "FA": None}
    assert [f.scale for f in evaluate_worsening(now, baseline, KINDS)] == ["PF2"]
    assert evaluate_worsening(now, baseline, KINDS, min_change=25.0) == []
    assert evaluate_worsening({"PF2": 60.0}, {}, KINDS) == []


def test_worsening_uses_instrument_scale_kinds() -> None:
    baseline = result_values(score_answers(C30, {f"q{n}": 2 for n in range(1, 31)}))
    now = result_values(score_answers(C30, {f"q{n}": 3 for n in range(1, 31)}))
    scales = [f.scale for f in evaluate_worsening(now, baseline, C30.scale_kinds)]
    # Every 1-4 item got worse (functional down, symptom up); QL2 improved (higher = better).
    assert scales == [code for code in C30.scale_kinds if code != "QL2"]


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="unknown scale kind"):
        evaluate_worsening({"X": 1.0}, {"X": 50.0}, {"X": "mood"})
    with pytest.raises(ValueError, match="min_change must be positive"):
        evaluate_worsening({}, {}, KINDS, min_change=0)
