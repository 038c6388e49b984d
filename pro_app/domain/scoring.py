"""Generic scale and summary scoring from an instrument's declared rules (exact, no rounding).

The rules (EORTC QLQ-C30 Scoring Manual, 3rd edition; summary score per Giesinger et al. 2016),
applied to whatever scales and summaries an :class:`~pro_app.domain.instruments.Instrument`
declares -- nothing here knows QLQ-C30 codes:

* raw score ``RS`` = mean of the *answered* items of the scale;
* functional scales: ``(1 - (RS - min) / range) * 100``; symptom and global scales:
  ``((RS - min) / range) * 100``, where ``min`` and ``range`` (max - min) come from the items'
  response set (``min`` is 1 for the QLQ-C30, so this is the manual's ``RS - 1``);
* a scale is scored only when at least ``min_answered`` items are answered (the half rule),
  otherwise it is missing (``None``);
* a summary is the mean of its scales, reversed scales entering as ``100 - x``; with
  ``require_all`` it is missing unless every component is present.

Values keep full float64 precision; rounding is for display only. Both paths -- one
questionnaire (:func:`score_answers`) and a numpy batch (:func:`score_batch`) -- perform the
same IEEE operations in the same order (item sum as an exact integer, ``sum / count``, then the
formula literally; summary terms added left to right in declared order, then divided by their
count), so they give bit-identical results and match the published worked examples exactly.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

from pro_app.domain.instruments import Instrument, ResponseSet, Scale, SummaryScore

ALGORITHM_VERSION = "eortc-scoring-manual-3ed+c30sum-2016/1"
"""Names the rules above: EORTC QLQ-C30 Scoring Manual 3rd ed. linear transformation with the
half rule, plus the Giesinger 2016 summary score; ``/1`` is our implementation revision, bumped
whenever any computed value could change. Stored with every score."""

_BATCH_CHUNK_ROWS = 16_384  # keeps every temporary array of a chunk inside the CPU caches
_CACHE_LIMIT = 4_096  # per-scale memo of results; bounded so long scales cannot grow it freely

Answer = int | None
FloatArray = npt.NDArray[np.float64]


class ScoringInputError(ValueError):
    """An answer that cannot belong to the instrument: unknown item or value out of range.

    Scoring refuses rather than skips it, because silently treating a bad value as missing
    would change a patient's score without anyone noticing. ``row`` is the 0-based matrix row
    for batch input.
    """

    def __init__(self, item_id: str, reason: str, *, row: int | None = None) -> None:
        self.item_id = item_id
        self.reason = reason
        self.row = row
        where = f"row {row}, item {item_id!r}" if row is not None else f"item {item_id!r}"
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, slots=True)
class ScaleResult:
    """One score of one questionnaire; ``value`` is None when the missing-data rule says so.

    For a summary, ``items_answered`` / ``items_total`` count its component scales.
    """

    code: str
    value: float | None
    items_answered: int
    items_total: int
    algorithm_version: str = ALGORITHM_VERSION


def scale_value(total: int, answered: int, *, minimum: int, range_: int, kind: str) -> float:
    """The linear transformation of the raw score ``total / answered`` to 0-100.

    Written literally as in the scoring manual; the batch path repeats these exact operations.
    """
    raw = total / answered
    if kind == "functional":
        return (1 - (raw - minimum) / range_) * 100
    return ((raw - minimum) / range_) * 100


def score_answers(instrument: Instrument, answers: Mapping[str, Answer]) -> dict[str, ScaleResult]:
    """Score one questionnaire: ``answers`` maps item id to value (None or absent = missing).

    Returns a ScaleResult per score code, in ``instrument.score_codes`` order. Raises
    :class:`ScoringInputError` for an unknown item id or a value outside the item's response
    set (booleans and floats are refused, not coerced).
    """
    plan = _plan_for(instrument)
    vector = plan.read(answers)
    results: dict[str, ScaleResult] = {}
    # The memo lookup is inlined: this loop is the hot path when scoring a whole study.
    for scale in plan.scales:
        key = scale.key_of(vector)
        result = scale.memo.get(key)
        results[scale.code] = result if result is not None else scale.result(key)
    for summary in plan.summaries:
        results[summary.code] = summary.result(results)
    return results


def result_values(results: Mapping[str, ScaleResult]) -> dict[str, float | None]:
    """Just the values, e.g. to feed :mod:`pro_app.domain.alerts`."""
    return {code: result.value for code, result in results.items()}


def score_batch(instrument: Instrument, matrix: npt.ArrayLike, *, missing: int = 0) -> FloatArray:
    """Score many questionnaires at once; bit-identical to :func:`score_answers` per row.

    ``matrix`` is 2-D, one row per questionnaire and one column per item in form order. In an
    integer array ``missing`` (default 0) marks an unanswered item; in a float array NaN does
    (an object array of ints and None is accepted too). Returns a float64 array of shape
    (rows, len(score_codes)) with NaN where a score is missing. Rows are processed in chunks,
    so temporary memory stays small however many rows there are.
    """
    plan = _plan_for(instrument)
    data = np.asarray(matrix)
    if data.ndim != 2 or data.shape[1] != len(plan.item_ids):
        raise ValueError(
            f"expected a 2-D array with {len(plan.item_ids)} item columns, got shape {data.shape}"
        )
    if data.dtype.kind not in "iufO":
        raise ValueError(f"item values must be integers or floats, got dtype {data.dtype}")
    if data.dtype.kind in "iu":
        plan.check_missing_marker(missing)
    out = np.empty((data.shape[0], len(plan.score_codes)), dtype=np.float64)
    for start in range(0, data.shape[0], _BATCH_CHUNK_ROWS):
        block = data[start : start + _BATCH_CHUNK_ROWS]
        values, answered = plan.prepare_block(block, missing, start)
        plan.score_block(values, answered, out[start : start + block.shape[0]])
    return out


# --------------------------------------------------------------------------- compiled plans


class _ScalePlan:
    """One scale with its structure resolved to item positions, ready to score fast."""

    def __init__(self, scale: Scale, positions: tuple[int, ...], response_set: ResponseSet):
        self.code = scale.code
        self.item_ids = scale.items
        self.allowed = frozenset(response_set.values)
        self.kind = scale.kind
        self.positions = positions
        self.min_answered = scale.min_answered
        self.items_total = len(positions)
        self.minimum = response_set.minimum
        self.range = response_set.range
        # itemgetter is C-speed; for one position it returns the bare value, not a tuple.
        self.key_of: Callable[[Sequence[Answer]], object] = operator.itemgetter(*positions)
        # Results depend only on the scale's answers, and ScaleResult is immutable, so equal
        # answer tuples can share one result object (this is what makes the single path fast).
        self.memo: dict[object, ScaleResult] = {}
        self._by_total: dict[tuple[int, int], ScaleResult] = {}

    def result(self, key: object) -> ScaleResult:
        """The result for ``key`` (this scale's answers, as returned by ``key_of``)."""
        answers = cast("tuple[Answer, ...]", key) if self.items_total > 1 else (cast(Answer, key),)
        total = answered = 0
        for item_id, value in zip(self.item_ids, answers):
            if value is not None:
                # Range is checked here, on a memo miss: a memo hit means these exact values
                # were validated before (Plan.read has already checked they are plain ints).
                if value not in self.allowed:
                    raise ScoringInputError(item_id, _out_of_range(value, self.allowed))
                total += value
                answered += 1
        result = self._by_total.get((total, answered))
        if result is None:
            result = ScaleResult(self.code, self.value(total, answered), answered, self.items_total)
            self._by_total[(total, answered)] = result
        if len(self.memo) < _CACHE_LIMIT:
            self.memo[key] = result
        return result

    def value(self, total: int, answered: int) -> float | None:
        if answered < self.min_answered:
            return None
        return scale_value(total, answered, minimum=self.minimum, range_=self.range, kind=self.kind)

    def batch(self, values: npt.NDArray[np.integer], answered: npt.NDArray[np.bool_]) -> FloatArray:
        """Vectorised :meth:`value` over item-major arrays; same operations, same order."""
        first = self.positions[0]
        total = values[first].astype(np.int64)
        count = answered[first].astype(np.int64)
        for position in self.positions[1:]:
            total += values[position]
            count += answered[position]
        with np.errstate(divide="ignore", invalid="ignore"):
            score: FloatArray = total / count
        score -= self.minimum
        score /= self.range
        if self.kind == "functional":
            np.subtract(1.0, score, out=score)
        score *= 100.0
        score[count < self.min_answered] = np.nan
        return score


class _SummaryPlan:
    """A summary: terms added left to right in declared order, then divided by their count."""

    def __init__(self, summary: SummaryScore):
        self.code = summary.code
        self.terms = tuple((code, code in summary.reversed) for code in summary.scales)
        self.flags = tuple(reversed_ for _, reversed_ in self.terms)
        self.components: Callable[[Mapping[str, ScaleResult]], tuple[ScaleResult, ...]] = (
            operator.itemgetter(*summary.scales)
            if len(summary.scales) > 1
            else lambda results: (results[summary.scales[0]],)
        )
        self.require_all = summary.require_all
        # Missing results only differ by how many components were present: share them.
        self._missing = tuple(
            ScaleResult(self.code, None, present, len(self.terms))
            for present in range(len(self.terms) + 1)
        )

    def result(self, results: Mapping[str, ScaleResult]) -> ScaleResult:
        total = 0.0
        present = 0
        for component, reversed_ in zip(self.components(results), self.flags):
            value = component.value
            if value is not None:
                total += 100.0 - value if reversed_ else value
                present += 1
        if present == 0 or (self.require_all and present != len(self.terms)):
            return self._missing[present]
        return ScaleResult(self.code, total / present, present, len(self.terms))

    def batch(self, scores: Mapping[str, FloatArray]) -> FloatArray:
        rows = next(iter(scores.values())).shape[0]
        total = np.zeros(rows, dtype=np.float64)
        present = np.zeros(rows, dtype=np.int64)
        for code, reversed_ in self.terms:
            term = 100.0 - scores[code] if reversed_ else scores[code]
            if self.require_all:
                total += term  # NaN propagates: any missing component makes the sum missing
            else:
                available = ~np.isnan(term)
                total += np.where(available, term, 0.0)  # x + 0.0 == x, so skipping is exact
                present += available
        if self.require_all:
            mean: FloatArray = total / len(self.terms)
            return mean
        with np.errstate(divide="ignore", invalid="ignore"):
            value = total / present
        value[present == 0] = np.nan
        return value


class _Plan:
    """An instrument's scoring structure resolved once into positions and lookup tables."""

    def __init__(self, instrument: Instrument):
        self.item_ids = instrument.item_ids
        self.index = {item_id: i for i, item_id in enumerate(self.item_ids)}
        self.all_items: Callable[[Mapping[str, Answer]], Sequence[Answer]] = (
            operator.itemgetter(*self.item_ids)
            if len(self.item_ids) > 1
            else lambda answers: (answers[self.item_ids[0]],)
        )
        sets = [instrument.response_set(item.response_set) for item in instrument.items]
        self.allowed = tuple(frozenset(rs.values) for rs in sets)
        self.scales = tuple(
            _ScalePlan(
                scale,
                tuple(self.index[item_id] for item_id in scale.items),
                instrument.scale_response_set(scale.code),
            )
            for scale in instrument.scales
        )
        self.summaries = tuple(_SummaryPlan(summary) for summary in instrument.summary_scores)
        scored = {position for scale in self.scales for position in scale.positions}
        self.unscored = tuple(i for i in range(len(self.item_ids)) if i not in scored)
        self.score_codes = instrument.score_codes
        # Batch validation: per-item bounds, plus an exact membership table for the rare
        # response set with gaps (e.g. 0, 1, 2, 4).
        self.low = np.array([rs.minimum for rs in sets], dtype=np.int64)[:, None]
        self.high = np.array([rs.maximum for rs in sets], dtype=np.int64)[:, None]
        self.gappy = tuple(
            (i, np.array(sorted(rs.values)))
            for i, rs in enumerate(sets)
            if len(rs.values) != rs.range + 1
        )
        self.all_values = frozenset(v for rs in sets for v in rs.values)

    def read(self, answers: Mapping[str, Answer]) -> Sequence[Answer]:
        """The answers in item order; ids and types checked, ranges checked by the scales.

        The common case (known ids, plain int or None values) is checked with C-level set
        and map operations; each value's range is then checked by the scale that scores it
        (:meth:`_ScalePlan.result`), once per distinct answer pattern, and here only for
        items that belong to no scale. Anything else takes the careful item-by-item path,
        which raises the precise error or converts numpy integers.
        """
        if len(answers) == len(self.item_ids):
            # Every item present (the usual shape of a submitted form): no unknown key is
            # possible, and itemgetter raises KeyError otherwise.
            try:
                vector = self.all_items(answers)
            except KeyError:
                return self._read_carefully(answers)
        elif answers.keys() <= self.index.keys():
            vector = tuple(map(answers.get, self.item_ids))
        else:
            return self._read_carefully(answers)
        if set(map(type, vector)) <= _PLAIN_ANSWER_TYPES and all(
            vector[i] is None or vector[i] in self.allowed[i] for i in self.unscored
        ):
            return vector
        return self._read_carefully(answers)

    def _read_carefully(self, answers: Mapping[str, Answer]) -> list[Answer]:
        vector: list[Answer] = [None] * len(self.item_ids)
        index = self.index
        allowed = self.allowed
        for item_id, value in answers.items():
            position = index.get(item_id)
            if position is None:
                raise ScoringInputError(str(item_id), "unknown item")
            if value is None:
                continue
            if value.__class__ is not int:
                value = _exact_int(item_id, value)
            if value not in allowed[position]:
                raise ScoringInputError(item_id, _out_of_range(value, allowed[position]))
            vector[position] = value
        return vector

    def check_missing_marker(self, missing: int) -> None:
        if missing in self.all_values:
            raise ValueError(
                f"the missing marker {missing} is a valid answer of this instrument; "
                "pass a float array with NaN for missing items instead"
            )

    def prepare_block(
        self, block: npt.NDArray[np.generic], missing: int, first_row: int
    ) -> tuple[npt.NDArray[np.integer], npt.NDArray[np.bool_]]:
        """Validate a chunk and return (values, answered) item-major, values 0 where missing."""
        if block.dtype.kind == "O":
            block = block.astype(np.float64)  # None -> NaN; anything non-numeric fails here
        items = np.ascontiguousarray(block.T)
        if items.dtype.kind == "f":
            answered = ~np.isnan(items)
            valid = (items >= self.low) & (items <= self.high) & (items == np.floor(items))
        else:
            answered = items != missing
            valid = (items >= self.low) & (items <= self.high)
        for position, members in self.gappy:
            valid[position] &= np.isin(items[position], members)
        valid |= ~answered
        if not valid.all():
            self._raise_first_invalid(block, valid, first_row)
        # Only now convert: every answered value is a valid small integer.
        if items.dtype.kind == "f":
            return np.where(answered, items, 0.0).astype(np.int64), answered
        return (items if missing == 0 else np.where(answered, items, 0)), answered

    def _raise_first_invalid(
        self, block: npt.NDArray[np.generic], valid: npt.NDArray[np.bool_], first_row: int
    ) -> None:
        # The first bad cell in row order, so the message points where a person would look.
        bad_row, bad_position = np.argwhere(~valid.T)[0]
        value = block[bad_row, bad_position].item()
        raise ScoringInputError(
            self.item_ids[bad_position],
            _out_of_range(value, self.allowed[bad_position]),
            row=first_row + int(bad_row),
        )

    def score_block(
        self,
        values: npt.NDArray[np.integer],
        answered: npt.NDArray[np.bool_],
        out: FloatArray,
    ) -> None:
        scores: dict[str, FloatArray] = {}
        column = 0
        for scale in self.scales:
            scores[scale.code] = out[:, column] = scale.batch(values, answered)
            column += 1
        for summary in self.summaries:
            out[:, column] = summary.batch(scores)
            column += 1


def _exact_int(item_id: str, value: object) -> int:
    """Accept any integral type (e.g. numpy integers) but refuse bool and float answers."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ScoringInputError(item_id, f"{value!r} is not an integer answer")
    return int(value)


def _out_of_range(value: object, allowed: frozenset[int]) -> str:
    values = ", ".join(str(v) for v in sorted(allowed))
    return f"{value!r} is not one of the item's response values ({values})"


_PLAIN_ANSWER_TYPES = frozenset({int, type(None)})

# Plans are keyed by object identity: hashing a whole Instrument on every call would cost more
# than scoring. The entry keeps the instrument alive, so its id cannot be reused meanwhile.
_PLANS: dict[int, tuple[Instrument, _Plan]] = {}
_PLANS_LIMIT = 64


def _plan_for(instrument: Instrument) -> _Plan:
    entry = _PLANS.get(id(instrument))
    if entry is not None and entry[0] is instrument:
        return entry[1]
    if len(_PLANS) >= _PLANS_LIMIT:
        _PLANS.clear()
    plan = _Plan(instrument)
    _PLANS[id(instrument)] = (instrument, plan)
    return plan
