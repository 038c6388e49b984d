"""Exact scoring of the QLQ-C30 (and a tiny second instrument) against published rules.

Expected values are compared with ``==``: the engine promises bit-exact agreement with the
reference implementations, not closeness.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from pro_app.domain.instruments import Instrument, InstrumentRegistry, default_registry
from pro_app.domain.scoring import (
    ALGORITHM_VERSION,
    ScaleResult,
    ScoringInputError,
    result_values,
    score_answers,
    score_batch,
)

TESTS = Path(__file__).resolve().parents[1]
REFERENCE = TESTS / "fixtures" / "reference" / "qlq_c30_v3_worked_examples.csv"
SHARED_REFERENCE = TESTS.parent.parent / "shared" / "reference" / REFERENCE.name
C30SUM_SCALES = ("PF2", "RF2", "EF", "CF", "SF", "FA", "NV", "PA", "DY", "SL", "AP", "CO", "DI")


@pytest.fixture(scope="module")
def c30() -> Instrument:
    return default_registry().get("qlq_c30")


@pytest.fixture(scope="module")
def tiny() -> Instrument:
    return InstrumentRegistry.load(TESTS / "fixtures" / "instruments").get("tiny")


def reference_rows() -> list[dict[str, str]]:
    with REFERENCE.open(newline="") as handle:
        return list(csv.DictReader(handle))


def answers_of(row: dict[str, str]) -> dict[str, int | None]:
    return {f"q{n}": int(row[f"q{n}"]) if row[f"q{n}"] else None for n in range(1, 31)}


def expected_of(row: dict[str, str], code: str) -> float | None:
    return float(row[code]) if row[code] else None


MIXED = answers_of(next(r for r in reference_rows() if r["id"] == "mixed"))


# --------------------------------------------------------------------------- reference data


def test_reference_copy_matches_shared_original() -> None:
    if not SHARED_REFERENCE.exists():
        pytest.skip("shared reference folder not present (e.g. a CI clone)")
    assert REFERENCE.read_bytes() == SHARED_REFERENCE.read_bytes()


@pytest.mark.parametrize("row", reference_rows(), ids=lambda row: row["id"])
def test_reference_rows_score_exactly(c30: Instrument, row: dict[str, str]) -> None:
    results = score_answers(c30, answers_of(row))
    assert list(results) == list(c30.score_codes)
    for code in c30.score_codes:
        assert results[code].value == expected_of(row, code), code


def test_reference_rows_batch_path_scores_exactly(c30: Instrument) -> None:
    rows = reference_rows()
    matrix = np.array([[v or 0 for v in answers_of(row).values()] for row in rows])
    scores = score_batch(c30, matrix)
    for row, row_scores in zip(rows, scores):
        for code, got in zip(c30.score_codes, row_scores):
            expected = expected_of(row, code)
            if expected is None:
                assert math.isnan(got), (row["id"], code)
            else:
                assert got == expected, (row["id"], code)


# --------------------------------------------------------------------------- hand-checked vectors


def test_all_best_answers(c30: Instrument) -> None:
    answers = {f"q{n}": 1 for n in range(1, 29)} | {"q29": 7, "q30": 7}
    values = result_values(score_answers(c30, answers))
    for scale in c30.scales:
        assert values[scale.code] == (0.0 if scale.kind == "symptom" else 100.0)
    assert values["C30SUM"] == 100.0


def test_all_worst_answers(c30: Instrument) -> None:
    answers = {f"q{n}": 4 for n in range(1, 29)} | {"q29": 1, "q30": 1}
    values = result_values(score_answers(c30, answers))
    for scale in c30.scales:
        assert values[scale.code] == (100.0 if scale.kind == "symptom" else 0.0)
    assert values["C30SUM"] == 0.0


def test_mixed_row_by_hand(c30: Instrument) -> None:
    values = result_values(score_answers(c30, MIXED))
    # QL2: items 4, 5 -> RS 4.5 -> (3.5 / 6) * 100
    assert values["QL2"] == 58.333333333333336
    # PF2: 2, 3, 1, 1, 1 -> RS 1.6 -> (1 - 0.6 / 3) * 100
    assert values["PF2"] == 80.0
    # FA: 2, 3, 3 -> RS 8/3 -> ((8/3 - 1) / 3) * 100
    assert values["FA"] == 55.55555555555555
    assert values["SL"] == 100.0
    # C30SUM: the 13 values (symptoms as 100 - x) added in order, divided by 13
    assert values["C30SUM"] == 71.11111111111111


def test_results_carry_counts_and_algorithm_version(c30: Instrument) -> None:
    answers = dict(MIXED, q2=None)
    results = score_answers(c30, answers)
    assert results["PF2"] == ScaleResult("PF2", results["PF2"].value, 4, 5, ALGORITHM_VERSION)
    assert results["C30SUM"].items_answered == 13
    assert results["C30SUM"].items_total == 13
    assert results["DY"].items_total == 1


def literal_value(instrument: Instrument, code: str, answered: list[int]) -> float:
    """The manual's formula written out independently, as an oracle for the half rule."""
    scale = instrument.scale(code)
    raw = sum(answered) / len(answered)
    range_ = instrument.scale_range(code)
    if scale.kind == "functional":
        return (1 - (raw - 1) / range_) * 100
    return ((raw - 1) / range_) * 100


MULTI_ITEM_SCALES = [s.code for s in default_registry().get("qlq_c30").scales if len(s.items) > 1]


@pytest.mark.parametrize("code", MULTI_ITEM_SCALES)
def test_half_rule_scores_with_at_least_half_answered(c30: Instrument, code: str) -> None:
    scale = c30.scale(code)
    most_missing = len(scale.items) - scale.min_answered
    assert scale.min_answered == math.ceil(len(scale.items) / 2)
    answers = dict(MIXED)
    for item_id in scale.items[:most_missing]:
        answers[item_id] = None
    answered = [v for i in scale.items if (v := answers[i]) is not None]
    result = score_answers(c30, answers)[code]
    assert result.items_answered == scale.min_answered
    assert result.value == literal_value(c30, code, answered)


@pytest.mark.parametrize("code", MULTI_ITEM_SCALES)
def test_half_rule_missing_with_fewer_than_half_answered(c30: Instrument, code: str) -> None:
    scale = c30.scale(code)
    answers = dict(MIXED)
    for item_id in scale.items[: len(scale.items) - scale.min_answered + 1]:
        answers[item_id] = None
    results = score_answers(c30, answers)
    assert results[code].value is None
    assert results[code].items_answered == scale.min_answered - 1
    others = {c: r.value for c, r in score_answers(c30, MIXED).items() if c not in (code, "C30SUM")}
    assert {c: results[c].value for c in others} == others


@pytest.mark.parametrize("code", ["DY", "SL", "AP", "CO", "DI", "FI"])
def test_single_item_scale_missing_when_its_item_is(c30: Instrument, code: str) -> None:
    (item_id,) = c30.scale(code).items
    result = score_answers(c30, dict(MIXED, **{item_id: None}))[code]
    assert (result.value, result.items_answered, result.items_total) == (None, 0, 1)


def test_ql2_scored_from_one_item(c30: Instrument) -> None:
    assert score_answers(c30, dict(MIXED, q30=None))["QL2"].value == 50.0  # q29 = 4: 3/6
    assert score_answers(c30, dict(MIXED, q29=None))["QL2"].value == 66.66666666666666  # q30 = 5
    assert score_answers(c30, dict(MIXED, q29=None, q30=None))["QL2"].value is None


def test_empty_questionnaire_scores_nothing(c30: Instrument) -> None:
    assert all(r.value is None for r in score_answers(c30, {}).values())


@pytest.mark.parametrize("code", C30SUM_SCALES)
def test_c30sum_missing_when_any_component_is(c30: Instrument, code: str) -> None:
    answers = dict(MIXED, **{item_id: None for item_id in c30.scale(code).items})
    summary = score_answers(c30, answers)["C30SUM"]
    assert summary.value is None
    assert summary.items_answered == 12


def test_c30sum_ignores_ql2_and_fi(c30: Instrument) -> None:
    baseline = score_answers(c30, MIXED)["C30SUM"].value
    for change in ({"q28": 4}, {"q29": 1, "q30": 7}, {"q28": None, "q29": None, "q30": None}):
        assert score_answers(c30, dict(MIXED, **change))["C30SUM"].value == baseline


def test_c30sum_definition_matches_giesinger_2016(c30: Instrument) -> None:
    summary = c30.summary("C30SUM")
    assert summary.scales == C30SUM_SCALES
    assert summary.reversed == C30SUM_SCALES[5:]
    assert summary.require_all


# --------------------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    ("answers", "item_id", "reason"),
    [
        ({"q31": 1}, "q31", "unknown item"),
        ({"Q1": 1}, "Q1", "unknown item"),
        ({"q1": 5}, "q1", "not one of the item's response values (1, 2, 3, 4)"),
        ({"q1": 0}, "q1", "not one of"),
        ({"q29": 8}, "q29", "not one of"),
        ({"q3": 2.0}, "q3", "not an integer answer"),
        ({"q3": True}, "q3", "not an integer answer"),
        ({"q3": "2"}, "q3", "not an integer answer"),
    ],
)
def test_bad_answers_are_refused(
    c30: Instrument, answers: dict[str, object], item_id: str, reason: str
) -> None:
    with pytest.raises(ScoringInputError) as caught:
        score_answers(c30, answers)  # type: ignore[arg-type]
    assert caught.value.item_id == item_id
    assert reason in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_numpy_integer_answers_are_accepted(c30: Instrument) -> None:
    answers = {key: (np.int64(v) if v is not None else None) for key, v in MIXED.items()}
    assert score_answers(c30, answers) == score_answers(c30, MIXED)  # type: ignore[arg-type]


def test_partial_answer_mapping_equals_none_values(c30: Instrument) -> None:
    sparse = {k: v for k, v in MIXED.items() if k not in ("q2", "q17")}
    assert score_answers(c30, sparse) == score_answers(c30, dict(MIXED, q2=None, q17=None))


# --------------------------------------------------------------------------- batch path


def test_batch_accepts_nan_floats_and_object_arrays(c30: Instrument) -> None:
    rows = [answers_of(row) for row in reference_rows()]
    ints = np.array([[v or 0 for v in row.values()] for row in rows], dtype=np.int8)
    floats = np.array([[np.nan if v is None else v for v in row.values()] for row in rows])
    objects = np.array([list(row.values()) for row in rows], dtype=object)
    expected = score_batch(c30, ints)
    np.testing.assert_array_equal(score_batch(c30, floats), expected)
    np.testing.assert_array_equal(score_batch(c30, objects), expected)
    np.testing.assert_array_equal(score_batch(c30, ints.astype(np.int64)), expected)


def test_batch_larger_than_one_chunk(c30: Instrument) -> None:
    rng = np.random.default_rng(7)
    high = np.array([4] * 28 + [7] * 2)
    matrix = rng.integers(1, high + 1, size=(40_000, 30))
    matrix[rng.random(matrix.shape) < 0.3] = 0
    scores = score_batch(c30, matrix)
    assert scores.shape == (40_000, 16)
    for index in (0, 16_383, 16_384, 39_999):
        single = score_answers(c30, dict(zip(c30.item_ids, (int(v) or None for v in matrix[index]))))
        got = [None if math.isnan(x) else x for x in scores[index]]
        assert got == [r.value for r in single.values()]


def test_batch_of_zero_rows(c30: Instrument) -> None:
    assert score_batch(c30, np.zeros((0, 30), dtype=np.int8)).shape == (0, 16)


@pytest.mark.parametrize(
    ("value", "reason"),
    [(5, "5.0 is not one of"), (-1, "-1.0 is not one of"), (2.5, "2.5 is not"), (np.inf, "inf")],
)
def test_batch_refuses_out_of_range_values_naming_row_and_item(
    c30: Instrument, value: float, reason: str
) -> None:
    matrix = np.ones((3, 30), dtype=np.float64)
    matrix[2, 6] = value
    with pytest.raises(ScoringInputError) as caught:
        score_batch(c30, matrix)
    assert (caught.value.row, caught.value.item_id) == (2, "q7")
    assert reason in str(caught.value)


def test_batch_reports_first_bad_cell_in_row_order(c30: Instrument) -> None:
    matrix = np.ones((4, 30), dtype=np.int64)
    matrix[3, 0] = 9
    matrix[1, 20] = 9
    with pytest.raises(ScoringInputError) as caught:
        score_batch(c30, matrix)
    assert (caught.value.row, caught.value.item_id) == (1, "q21")


def test_batch_rejects_wrong_shape_and_ambiguous_missing_marker(c30: Instrument) -> None:
    with pytest.raises(ValueError, match="30 item columns"):
        score_batch(c30, np.ones((2, 29), dtype=np.int8))
    with pytest.raises(ValueError, match="missing marker 1"):
        score_batch(c30, np.ones((2, 30), dtype=np.int8), missing=1)


def test_batch_custom_missing_marker(c30: Instrument) -> None:
    matrix = np.ones((1, 30), dtype=np.int16)
    matrix[0, :5] = -9
    scores = score_batch(c30, matrix, missing=-9)
    assert math.isnan(scores[0, c30.score_codes.index("PF2")])


# --------------------------------------------------------------------------- genericity


def test_tiny_instrument_scored_by_the_same_engine(tiny: Instrument) -> None:
    results = result_values(score_answers(tiny, {"t1": 2, "t2": None, "t3": 5, "t4": 4}))
    # ABL functional, range 4: RS 2 -> (1 - 1/4) * 100; BOT symptom: RS 4.5 -> (3.5/4) * 100
    assert results == {"ABL": 75.0, "BOT": 87.5, "TOT": (75.0 + (100 - 87.5)) / 2}


def test_tiny_summary_without_require_all_uses_present_scales(tiny: Instrument) -> None:
    results = score_answers(tiny, {"t1": 5, "t2": 5, "t3": 5, "t4": None})
    assert results["BOT"].value is None  # min_answered 2 of 2
    assert (results["TOT"].value, results["TOT"].items_answered) == (0.0, 1)
    assert score_answers(tiny, {"t3": 1})["TOT"].value is None


def test_tiny_batch_matches_single(tiny: Instrument) -> None:
    matrix = np.array([[2, 0, 5, 4], [5, 5, 5, 0], [0, 0, 1, 0], [1, 1, 1, 1]])
    scores = score_batch(tiny, matrix)
    for row, row_scores in zip(matrix, scores):
        single = score_answers(tiny, {f"t{i + 1}": int(v) or None for i, v in enumerate(row)})
        assert [None if math.isnan(x) else x for x in row_scores] == [
            r.value for r in single.values()
        ]
