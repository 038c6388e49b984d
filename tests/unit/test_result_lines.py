"""Reading an assessment's result row for export: a line is used only if it fits the instrument.

A result row's two lines (answers, scores) are copied into the wide CSV as they are, so the
decoder must refuse anything but digits and commas (answers) and what ``repr`` writes for a
float (scores), with exactly one field per item or score. A refused row is read from the
answers and score tables instead (see tests/integration/test_assessment_results.py).
"""

from __future__ import annotations

import pytest

from pro_app.domain.instruments import default_registry
from pro_app.domain.records import PackedValues
from pro_app.services.exports import _ResultDecoder

QLQ = default_registry().get("qlq_c30")
ANSWERS = ",".join(["2"] * 28 + ["5", "6"])
SCORES = ",".join(["66.66666666666667"] * 14 + ["1e-05", "50.72649572649573"])


def decode(answers: str, scores: str) -> tuple[PackedValues[int], PackedValues[float | None]] | None:
    return _ResultDecoder()("qlq_c30", "3.0", answers, scores)


def test_a_well_formed_row_is_used_as_it_is() -> None:
    decoded = decode(ANSWERS, SCORES)
    assert decoded is not None
    answers, scores = decoded
    assert answers.text == ANSWERS and scores.text == SCORES
    assert dict(answers) == dict(zip(QLQ.item_ids, [2] * 28 + [5, 6], strict=True))
    assert scores["C30SUM"] == 50.72649572649573 and scores["FI"] == 1e-05 and list(scores) == list(QLQ.score_codes)


def test_missing_answers_and_unscorable_scales_are_empty_fields() -> None:
    answers = "," + ANSWERS.split(",", 1)[1]
    scores = "," + SCORES.split(",", 1)[1]
    decoded = decode(answers, scores)
    assert decoded is not None
    assert QLQ.item_ids[0] not in decoded[0] and len(decoded[0]) == 29
    assert decoded[1][QLQ.score_codes[0]] is None


@pytest.mark.parametrize(
    "answers",
    [
        ANSWERS.replace("2", "\u0662", 1),  # an Arabic-Indic digit
        ANSWERS.replace("2", "\uff12", 1),  # a full-width digit
        ANSWERS.replace("2", "x", 1),
        ANSWERS.replace("2", " 2", 1),
        ANSWERS.replace("2", "-2", 1),
        ANSWERS.replace("2", "2.0", 1),
        ANSWERS.replace("2", '"2"', 1),
        ANSWERS.replace("2", "2\r\n", 1),
        ANSWERS + ",1",  # one field too many
        ANSWERS.rsplit(",", 1)[0],  # one too few
    ],
)
def test_an_answers_line_that_does_not_fit_is_refused(answers: str) -> None:
    assert decode(answers, SCORES) is None


@pytest.mark.parametrize(
    "scores",
    [
        SCORES.replace("66", "=1+1", 1),  # a spreadsheet formula
        SCORES.replace("66", "+66", 1),
        SCORES.replace("66", "@66", 1),
        SCORES.replace("66", '"66"', 1),
        SCORES.replace("66", "6\n6", 1),
        SCORES.replace("66", "\u0666\u0666", 1),  # Arabic-Indic digits
        SCORES.replace("66.66666666666667", "nan", 1),
        SCORES.replace("66.66666666666667", "inf", 1),
        SCORES.replace("66.66666666666667", "66,6", 1),  # one field too many
        SCORES + ",",
    ],
)
def test_a_scores_line_that_does_not_fit_is_refused(scores: str) -> None:
    assert decode(ANSWERS, scores) is None


def test_an_unknown_instrument_is_read_from_the_tables() -> None:
    assert _ResultDecoder()("no_such_instrument", "1.0", ANSWERS, SCORES) is None
