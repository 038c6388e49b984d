"""Study-level analysis by dose group and timepoint: completion, mean scores with confidence
intervals, and change from each participant's baseline.

What is counted (the same rules as the compliance report, so the two pages agree):

* **expected**: assessments whose window has opened by ``now``, except cancelled ones (a
  withdrawn participant owes nothing more); **completed**: those with status completed;
* **scores**: the stored scale scores (15 QLQ-C30 scales and C30SUM, full precision) of
  completed assessments; a scale that was not scorable (NULL) is missing and left out, so a
  cell's ``n`` may be below its number of completed questionnaires;
* **baseline**: per participant, the completed assessment of timepoint ``baseline`` if there is
  one, otherwise the earliest completed assessment (by planned time). Change = later score minus
  baseline score, per scale, only when both are present; assessments planned before the
  baseline (there are none unless a pre-baseline timepoint exists) are left out.

Timepoints are keyed by (code, occurrence) and ordered by their position in the schedule
template, then occurrence; their labels come from the assessments. Dose groups are the study's
arms in creation order, plus a column for participants without a dose group when there are any.

Only the sites in ``site_ids`` contribute (None = every site): an analyst scoped to some sites
never gets a number that includes another site's participants.

Two queries, whatever the size of the study: counts per cell aggregated by the database, and one
pass over the scores joined to assessments and participants; the statistics run in Python.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, case, func, select
from sqlalchemy.orm import Session

from pro_app.db.models import Arm, Assessment, Participant, ScaleScore, Study, Timepoint
from pro_app.domain.instruments import default_registry
from pro_app.domain.statistics import Summary, classify_change, higher_is_better, mean_ci
from pro_app.domain.states import AssessmentStatus

BASELINE_CODE = "baseline"
DEFAULT_THRESHOLD = 10.0
DEFAULT_LEVEL = 0.95

TimepointKey = tuple[str, int]
"""(timepoint code, occurrence): one column of the schedule."""

ArmKey = int | None
"""An arm's id; None for participants without a dose group."""

_EMPTY = Summary(0, None, None, None)


@dataclass(frozen=True)
class TimepointColumn:
    code: str
    occurrence: int
    label: str

    @property
    def key(self) -> TimepointKey:
        return (self.code, self.occurrence)


@dataclass(frozen=True)
class ArmColumn:
    """A dose group; ``id`` None stands for participants without one (``code``/``name`` empty,
    the page names it)."""

    id: ArmKey
    code: str
    name: str


@dataclass(frozen=True)
class ScaleInfo:
    """A score of the study's instrument; ``kind`` is functional, symptom, global or summary."""

    code: str
    name: str
    kind: str

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.kind)


@dataclass(frozen=True)
class Completion:
    expected: int = 0
    completed: int = 0

    @property
    def rate(self) -> float | None:
        return self.completed / self.expected if self.expected else None


@dataclass(frozen=True)
class ChangeSummary:
    """The mean change from baseline with its confidence interval, and how many participants
    improved, stayed stable or worsened by the threshold (direction per scale kind)."""

    change: Summary = _EMPTY
    improved: int = 0
    stable: int = 0
    worsened: int = 0


_NO_CHANGE = ChangeSummary()


@dataclass(frozen=True)
class ChangeFromBaseline:
    """Change from baseline per scale x timepoint x dose group.

    ``timepoints`` lists only timepoints with at least one change (the baseline itself has none).
    """

    timepoints: tuple[TimepointColumn, ...]
    arms: tuple[ArmColumn, ...]
    scales: tuple[ScaleInfo, ...]
    threshold: float
    level: float
    cells: Mapping[tuple[str, TimepointKey, ArmKey], ChangeSummary] = field(default_factory=dict)
    #: Some of the questionnaires behind these numbers showed pro-app's demonstration wording.
    demo_wording: bool = False

    def cell(self, scale: str, timepoint: TimepointKey, arm: ArmKey) -> ChangeSummary:
        return self.cells.get((scale, timepoint, arm), _NO_CHANGE)

    @property
    def has_data(self) -> bool:
        return bool(self.cells)

    def scale(self, code: str) -> ScaleInfo:
        return _scale(self.scales, code)


@dataclass(frozen=True)
class Overview:
    """Completion and mean scores per timepoint x dose group, plus change from baseline."""

    study_code: str
    timepoints: tuple[TimepointColumn, ...]
    arms: tuple[ArmColumn, ...]
    scales: tuple[ScaleInfo, ...]
    level: float
    completion: Mapping[tuple[TimepointKey, ArmKey], Completion]
    scores: Mapping[tuple[str, TimepointKey, ArmKey], Summary]
    change: ChangeFromBaseline
    #: Some of the questionnaires behind these numbers showed pro-app's demonstration wording.
    demo_wording: bool = False

    @property
    def score_timepoints(self) -> tuple[TimepointColumn, ...]:
        """The timepoints with at least one score (the x axis of the charts)."""
        scored = {key[1] for key in self.scores}
        return tuple(tp for tp in self.timepoints if tp.key in scored)

    def completion_for(self, timepoint: TimepointKey, arm: ArmKey) -> Completion:
        return self.completion.get((timepoint, arm), Completion())

    def completion_total(self, timepoint: TimepointKey) -> Completion:
        cells = [self.completion_for(timepoint, arm.id) for arm in self.arms]
        return Completion(sum(c.expected for c in cells), sum(c.completed for c in cells))

    def summary(self, scale: str, timepoint: TimepointKey, arm: ArmKey) -> Summary:
        return self.scores.get((scale, timepoint, arm), _EMPTY)

    @property
    def has_expected(self) -> bool:
        return any(c.expected for c in self.completion.values())

    @property
    def has_scores(self) -> bool:
        return bool(self.scores)

    def scale(self, code: str) -> ScaleInfo:
        return _scale(self.scales, code)


def study_scales(study: Study) -> tuple[ScaleInfo, ...]:
    """The study instrument's scales in declared order, then its summary scores."""
    instrument = default_registry().get(study.instrument_code, study.instrument_version)
    return tuple(ScaleInfo(s.code, s.name, s.kind) for s in instrument.scales) + tuple(
        ScaleInfo(s.code, s.name, "summary") for s in instrument.summary_scores
    )


def study_overview(
    session: Session,
    study: Study,
    *,
    site_ids: Sequence[int] | None,
    now: datetime,
    level: float = DEFAULT_LEVEL,
    threshold: float = DEFAULT_THRESHOLD,
) -> Overview:
    """Completion by timepoint x dose group, and per scale the mean score with its ``level``
    confidence interval per timepoint x dose group (plus change from baseline)."""
    scales = study_scales(study)
    columns = _Columns()
    completion: dict[tuple[TimepointKey, ArmKey], Completion] = {}
    for arm_id, code, occurrence, label, position, expected, completed in session.execute(
        _completion_query(study, site_ids, now)
    ):
        key = (code, occurrence)
        columns.see(key, label, position, arm_id)
        before = completion.get((key, arm_id), Completion())
        completion[(key, arm_id)] = Completion(before.expected + expected, before.completed + int(completed or 0))
    rows = _score_rows(session, study, scales, site_ids)
    for row in rows:
        columns.see(row.timepoint, row.label, row.position, row.arm_id)
    values: dict[tuple[str, TimepointKey, ArmKey], list[float]] = defaultdict(list)
    for row in rows:
        if row.value is not None:
            values[(row.scale, row.timepoint, row.arm_id)].append(row.value)
    arms = _arm_columns(session, study, columns.arms)
    timepoints = columns.timepoints()
    return Overview(
        study_code=study.code,
        timepoints=timepoints,
        arms=arms,
        scales=scales,
        level=level,
        completion=completion,
        scores={key: mean_ci(cell, level) for key, cell in values.items()},
        change=_change(rows, scales, timepoints, arms, threshold=threshold, level=level),
        demo_wording=any(row.text_source == "demo" for row in rows),
    )


def change_from_baseline(
    session: Session,
    study: Study,
    *,
    site_ids: Sequence[int] | None,
    threshold: float = DEFAULT_THRESHOLD,
    level: float = DEFAULT_LEVEL,
) -> ChangeFromBaseline:
    """Per scale, timepoint and dose group: the mean change from each participant's baseline
    with its ``level`` confidence interval, and the numbers improved / stable / worsened by at
    least ``threshold`` points (see the module docstring for the baseline rule)."""
    scales = study_scales(study)
    rows = _score_rows(session, study, scales, site_ids)
    columns = _Columns()
    for row in rows:
        columns.see(row.timepoint, row.label, row.position, row.arm_id)
    arms = _arm_columns(session, study, columns.arms)
    return _change(rows, scales, columns.timepoints(), arms, threshold=threshold, level=level)


# --------------------------------------------------------------------------- internals


@dataclass(frozen=True, slots=True)
class _ScoreRow:
    participant_id: int
    arm_id: ArmKey
    assessment_id: int
    timepoint: TimepointKey
    label: str
    position: int | None
    planned_at: datetime
    scale: str
    value: float | None
    text_source: str | None


class _Columns:
    """Collects the timepoints and arms seen in the data, with their order and labels."""

    def __init__(self) -> None:
        self._labels: dict[TimepointKey, Counter[str]] = defaultdict(Counter)
        self._positions: dict[TimepointKey, int | None] = {}
        self.arms: set[ArmKey] = set()

    def see(self, key: TimepointKey, label: str, position: int | None, arm_id: ArmKey) -> None:
        self._labels[key][label] += 1
        if self._positions.get(key) is None:
            self._positions[key] = position
        self.arms.add(arm_id)

    def timepoints(self) -> tuple[TimepointColumn, ...]:
        def order(key: TimepointKey) -> tuple[bool, int, int, str]:
            position = self._positions.get(key)
            # A timepoint removed from the template (position unknown) goes last.
            return (position is None, position or 0, key[1], key[0])

        return tuple(
            TimepointColumn(code, occurrence, _common_label(self._labels[(code, occurrence)]))
            for code, occurrence in sorted(self._labels, key=order)
        )


def _common_label(labels: Counter[str]) -> str:
    """The label most assessments carry (a template edit may have renamed a timepoint)."""
    return min(labels.items(), key=lambda item: (-item[1], item[0]))[0]


def _completion_query(
    study: Study, site_ids: Sequence[int] | None, now: datetime
) -> Select[Any]:
    """Expected and completed assessments per timepoint x dose group, counted by the database.

    Rows: arm id, timepoint code, occurrence, label, template position (None for a timepoint
    removed from the template: it is outer-joined), expected, completed.
    """
    completed = func.sum(case((Assessment.status == AssessmentStatus.COMPLETED.value, 1), else_=0))
    query = (
        select(
            Participant.arm_id, Assessment.timepoint_code, Assessment.occurrence, Assessment.timepoint_label,
            Timepoint.position, func.count(Assessment.id), completed,
        )
        .join(Participant, Assessment.participant_id == Participant.id)
        .outerjoin(Timepoint, Assessment.timepoint_id == Timepoint.id)
        .where(
            Participant.study_id == study.id,
            Assessment.window_opens_at <= now,
            Assessment.status != AssessmentStatus.CANCELLED.value,
        )
        .group_by(
            Participant.arm_id, Assessment.timepoint_code, Assessment.occurrence, Assessment.timepoint_label,
            Timepoint.position,
        )
    )
    if site_ids is not None:
        query = query.where(Participant.site_id.in_(list(site_ids)))
    return query


def _score_rows(
    session: Session, study: Study, scales: Sequence[ScaleInfo], site_ids: Sequence[int] | None
) -> list[_ScoreRow]:
    """Every stored score of the completed assessments of the study's visible participants."""
    query = (
        select(
            Assessment.participant_id, Participant.arm_id, Assessment.id, Assessment.timepoint_code,
            Assessment.occurrence, Assessment.timepoint_label, Timepoint.position, Assessment.planned_at,
            ScaleScore.scale_code, ScaleScore.value, Assessment.text_source,
        )
        .join(Assessment, ScaleScore.assessment_id == Assessment.id)
        .join(Participant, Assessment.participant_id == Participant.id)
        .outerjoin(Timepoint, Assessment.timepoint_id == Timepoint.id)
        .where(
            Participant.study_id == study.id,
            Assessment.status == AssessmentStatus.COMPLETED.value,
            Assessment.instrument_code == study.instrument_code,
            ScaleScore.scale_code.in_([scale.code for scale in scales]),
        )
    )
    if site_ids is not None:
        query = query.where(Participant.site_id.in_(list(site_ids)))
    return [
        _ScoreRow(participant, arm, assessment, (code, occurrence), label, position, planned, scale,
                  None if value is None else float(value), source)
        for participant, arm, assessment, code, occurrence, label, position, planned, scale, value, source
        in session.execute(query.execution_options(yield_per=5000))
    ]


def _arm_columns(session: Session, study: Study, seen: Iterable[ArmKey]) -> tuple[ArmColumn, ...]:
    """Every arm of the study (so colours and columns stay put between pages), then the
    "no dose group" column when some participant has none."""
    arms = [
        ArmColumn(arm_id, code, name)
        for arm_id, code, name in session.execute(
            select(Arm.id, Arm.code, Arm.name).where(Arm.study_id == study.id).order_by(Arm.id)
        )
    ]
    if None in set(seen):
        arms.append(ArmColumn(None, "", ""))
    return tuple(arms)


def _change(
    rows: Sequence[_ScoreRow],
    scales: Sequence[ScaleInfo],
    timepoints: Sequence[TimepointColumn],
    arms: Sequence[ArmColumn],
    *,
    threshold: float,
    level: float,
) -> ChangeFromBaseline:
    by_participant: dict[int, dict[int, list[_ScoreRow]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_participant[row.participant_id][row.assessment_id].append(row)
    kinds = {scale.code: scale.kind for scale in scales}
    changes: dict[tuple[str, TimepointKey, ArmKey], list[float]] = defaultdict(list)
    for assessments in by_participant.values():
        baseline_id = _baseline(assessments)
        baseline_rows = assessments[baseline_id]
        baseline_at = baseline_rows[0].planned_at
        baseline = {row.scale: row.value for row in baseline_rows}
        for assessment_id, later in assessments.items():
            if assessment_id == baseline_id or later[0].planned_at < baseline_at:
                continue
            for row in later:
                start = baseline.get(row.scale)
                if row.value is not None and start is not None:
                    changes[(row.scale, row.timepoint, row.arm_id)].append(row.value - start)
    cells: dict[tuple[str, TimepointKey, ArmKey], ChangeSummary] = {}
    for key, values in changes.items():
        kind = kinds[key[0]]
        verdicts = Counter(classify_change(value, threshold, kind=kind) for value in values)
        cells[key] = ChangeSummary(mean_ci(values, level), verdicts[1], verdicts[0], verdicts[-1])
    with_change = {key[1] for key in cells}
    return ChangeFromBaseline(
        timepoints=tuple(tp for tp in timepoints if tp.key in with_change),
        arms=tuple(arms),
        scales=tuple(scales),
        threshold=threshold,
        level=level,
        cells=cells,
        demo_wording=any(row.text_source == "demo" for row in rows),
    )


def _baseline(assessments: Mapping[int, Sequence[_ScoreRow]]) -> int:
    """The participant's baseline assessment: timepoint ``baseline`` if completed, else the
    earliest completed one."""
    def order(assessment_id: int) -> tuple[bool, datetime, int]:
        first = assessments[assessment_id][0]
        return (first.timepoint[0] != BASELINE_CODE, first.planned_at, assessment_id)

    return min(assessments, key=order)


def _scale(scales: Sequence[ScaleInfo], code: str) -> ScaleInfo:
    for scale in scales:
        if scale.code == code:
            return scale
    raise KeyError(code)
