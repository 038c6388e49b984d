"""Properties the scoring rules guarantee for every possible questionnaire (hypothesis)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pro_app.domain.instruments import Instrument, InstrumentRegistry, default_registry
from pro_app.domain.scoring import score_answers, score_batch

C30 = default_registry().get("qlq_c30")
TINY = InstrumentRegistry.load(
    Path(__file__).resolve().parents[1] / "fixtures" / "instruments"
).get("tiny")

# Fast and reproducible: no example database on disk, no per-example deadline on slow CI.
FAST = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def answer_sets(instrument: Instrument) -> st.SearchStrategy[dict[str, int | None]]:
    return st.fixed_dictionaries(
        {
            item.id: st.none() | st.sampled_from(instrument.response_set(item.response_set).values)
            for item in instrument.items
        }
    )


def values(instrument: Instrument, answers: dict[str, int | None]) -> dict[str, float | None]:
    return {code: r.value for code, r in score_answers(instrument, answers).items()}


@FAST
@given(answer_sets(C30))
def test_scores_are_within_0_and_100_or_missing(answers: dict[str, int | None]) -> None:
    for value in values(C30, answers).values():
        assert value is None or 0.0 <= value <= 100.0


@FAST
@given(answer_sets(C30), st.data())
def test_a_higher_item_value_moves_every_scale_the_right_way(
    answers: dict[str, int | None], data: st.DataObject
) -> None:
    """Higher values mean more trouble on items 1-28 but better health on 29-30.

    So raising one answer never raises a functional score, never lowers a symptom score,
    and never lowers the global score (whose items are rated high = good).
    """
    item = data.draw(st.sampled_from(C30.items))
    top = C30.response_set(item.response_set).maximum
    current = answers[item.id]
    if current is None or current == top:
        return
    before = values(C30, answers)
    after = values(C30, dict(answers, **{item.id: current + 1}))
    for scale in C30.scales:
        if item.id not in scale.items or before[scale.code] is None:
            continue
        old, new = before[scale.code], after[scale.code]
        assert old is not None and new is not None
        if scale.kind == "functional":
            assert new <= old
        else:
            assert new >= old


@FAST
@given(answer_sets(C30), st.data())
def test_permuting_answers_within_a_scale_never_changes_it(
    answers: dict[str, int | None], data: st.DataObject
) -> None:
    scale = data.draw(st.sampled_from(C30.scales))
    permuted = data.draw(st.permutations([answers[i] for i in scale.items]))
    shuffled = dict(answers, **dict(zip(scale.items, permuted)))
    assert score_answers(C30, shuffled)[scale.code] == score_answers(C30, answers)[scale.code]


def assert_batch_equals_single(instrument: Instrument, matrix: np.ndarray) -> None:
    batch = score_batch(instrument, matrix)
    for row, row_scores in zip(matrix, batch):
        answers = {
            item_id: None if (v == 0 or v != v) else int(v)
            for item_id, v in zip(instrument.item_ids, row.tolist())
        }
        single = score_answers(instrument, answers)
        for got, result in zip(row_scores.tolist(), single.values()):
            if result.value is None:
                assert math.isnan(got), result.code
            else:
                # Bit-identical, not merely close.
                assert np.float64(got).tobytes() == np.float64(result.value).tobytes()


def random_matrix(instrument: Instrument, seed: int, rows: int, missing: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    high = np.array([instrument.response_set(i.response_set).maximum for i in instrument.items])
    matrix = rng.integers(1, high + 1, size=(rows, len(high)))
    matrix[rng.random(matrix.shape) < missing] = 0
    return matrix


@settings(max_examples=25, deadline=None, database=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 60),
    missing=st.sampled_from([0.0, 0.1, 0.4, 0.7, 1.0]),
)
def test_batch_equals_single_path_bit_for_bit(seed: int, rows: int, missing: float) -> None:
    matrix = random_matrix(C30, seed, rows, missing)
    assert_batch_equals_single(C30, matrix)
    as_float = np.where(matrix == 0, np.nan, matrix.astype(np.float64))
    np.testing.assert_array_equal(score_batch(C30, as_float), score_batch(C30, matrix))


@settings(max_examples=25, deadline=None, database=None)
@given(seed=st.integers(0, 2**32 - 1), missing=st.sampled_from([0.0, 0.3, 0.6]))
def test_batch_equals_single_path_for_a_summary_without_require_all(
    seed: int, missing: float
) -> None:
    assert_batch_equals_single(TINY, random_matrix(TINY, seed, 40, missing))
