"""Scale scores of completed assessments: computed from the stored answers, stored at full
precision with the scoring algorithm's version, and recomputable at any time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from pro_app.db.models import Answer, Assessment, AssessmentResult, Participant, ScaleScore, Study
from pro_app.db.models.base import table_of
from pro_app.db.types import utcnow
from pro_app.domain.instruments import Instrument, default_registry
from pro_app.domain.scoring import ALGORITHM_VERSION, score_answers
from pro_app.domain.states import AssessmentStatus
from pro_app.services.audit import record_event


# Built once: a submission runs them under the write lock.
_SCORES_OF = select(ScaleScore).where(ScaleScore.assessment_id == bindparam("assessment_id"))
_ADD_SCORES = insert(table_of(ScaleScore))
_ADD_RESULT = insert(table_of(AssessmentResult))


def instrument_of(assessment: Assessment) -> Instrument:
    return default_registry().get(assessment.instrument_code, assessment.instrument_version)


def store_scores(
    session: Session,
    assessment: Assessment,
    instrument: Instrument | None = None,
    *,
    actor: str = "system",
    reason: str | None = None,
    answers: Mapping[str, int] | None = None,
    first: bool = False,
) -> dict[str, float | None]:
    """(Re)compute the assessment's scores from its answers and upsert one row per score.

    ``answers``: the assessment's stored answers, when the caller has just read them in this
    transaction (a submission); otherwise they are read here. ``first``: the assessment has no
    stored scores nor result row, which is so of every assessment being submitted (only a
    completed assessment has scores, and a completed one is never reopened): they are inserted
    without being looked for.

    Returns the values by score code (None = not scorable). Unchanged rows are left alone,
    so re-scoring an unchanged assessment writes nothing. The assessment's result row (the
    answers and scores together, see :class:`AssessmentResult`) is kept equal to them here.
    Scores that were stored or changed are audited (``scores.store`` on the assessment, values
    before and after), so a score's history can be followed like an answer's.
    """
    instrument = instrument or instrument_of(assessment)
    if answers is None:
        answers = dict(
            session.execute(
                select(Answer.item_id, Answer.value).where(Answer.assessment_id == assessment.id)
            ).tuples().all()
        )
    results = score_answers(instrument, answers)
    existing = {} if first else {
        row.scale_code: row for row in session.scalars(_SCORES_OF, {"assessment_id": assessment.id})
    }
    now = utcnow()
    before: dict[str, float | None] = {}
    after: dict[str, float | None] = {}
    if results and not existing:  # a first scoring (every submission): all rows in one statement
        session.execute(_ADD_SCORES, [
            {"assessment_id": assessment.id, "scale_code": code, "value": result.value,
             "items_answered": result.items_answered, "algorithm_version": result.algorithm_version,
             "computed_at": now}
            for code, result in results.items()
        ])
        after = {code: result.value for code, result in results.items()}
    else:
        for code, result in results.items():
            row = existing.get(code)
            if row is None:
                after[code] = result.value
                session.add(
                    ScaleScore(
                        assessment_id=assessment.id,
                        scale_code=code,
                        value=result.value,
                        items_answered=result.items_answered,
                        algorithm_version=result.algorithm_version,
                        computed_at=now,
                    )
                )
            elif (row.value, row.items_answered, row.algorithm_version) != (
                result.value,
                result.items_answered,
                result.algorithm_version,
            ):
                before[code], after[code] = row.value, result.value
                row.value = result.value
                row.items_answered = result.items_answered
                row.algorithm_version = result.algorithm_version
                row.computed_at = now
    values = {code: result.value for code, result in results.items()}
    _store_result(session, assessment.id, instrument, answers, values, now, first=first)
    session.flush()
    if after:
        record_event(
            session, actor=actor, action="scores.store", entity_type="assessment", entity_id=assessment.id,
            before={"scores": before} if before else None,
            after={"scores": after, "algorithm_version": ALGORITHM_VERSION}, reason=reason,
        )
    return values


def encode_answers(instrument: Instrument, answers: Mapping[str, int]) -> str:
    """The answers as comma-separated values in form order; an unanswered item is empty."""
    return ",".join(str(answers[item]) if item in answers else "" for item in instrument.item_ids)


def encode_scores(instrument: Instrument, values: Mapping[str, float | None]) -> str:
    """The scores as comma-separated values in the instrument's score order, each the ``repr``
    of the float (the shortest text that reads back as exactly the same double); a score the
    missing-data rule leaves out is empty."""
    return ",".join(
        "" if values.get(code) is None else repr(float(values[code]))  # type: ignore[arg-type]
        for code in instrument.score_codes
    )


def _store_result(
    session: Session,
    assessment_id: int,
    instrument: Instrument,
    answers: Mapping[str, int],
    values: Mapping[str, float | None],
    now: datetime,
    *,
    first: bool,
) -> None:
    """Keep the assessment's result row (see :class:`AssessmentResult`) equal to the answers
    just scored and their scores: derived data, written only here, with the score rows.
    ``first``: the assessment has no result row yet (see :func:`store_scores`)."""
    encoded_answers = encode_answers(instrument, answers)
    encoded_scores = encode_scores(instrument, values)
    if first:
        session.execute(_ADD_RESULT, {
            "assessment_id": assessment_id, "answers": encoded_answers, "scores": encoded_scores,
            "algorithm_version": ALGORITHM_VERSION, "computed_at": now,
        })
        return
    result = session.get(AssessmentResult, assessment_id)
    if result is None:
        session.add(AssessmentResult(
            assessment_id=assessment_id, answers=encoded_answers, scores=encoded_scores,
            algorithm_version=ALGORITHM_VERSION, computed_at=now,
        ))
    elif (result.answers, result.scores, result.algorithm_version) != (encoded_answers, encoded_scores, ALGORITHM_VERSION):
        result.answers = encoded_answers
        result.scores = encoded_scores
        result.algorithm_version = ALGORITHM_VERSION
        result.computed_at = now


@dataclass(frozen=True)
class RescoreSummary:
    assessments: int
    changed: int


def rescore(session: Session, *, study_code: str | None = None, actor: str) -> RescoreSummary:
    """Recompute the scores of every completed assessment (of one study, or all).

    Idempotent: a second run changes nothing. One audit event records the counts.
    """
    query = select(Assessment).where(Assessment.status == AssessmentStatus.COMPLETED.value)
    if study_code:
        query = query.join(Participant).join(Study).where(Study.code == study_code)
    total = changed = 0
    for assessment in session.scalars(query.order_by(Assessment.id)):
        before = _stored_values(session, assessment.id)
        after = store_scores(session, assessment, actor=actor)
        total += 1
        changed += before != after
    record_event(
        session,
        actor=actor,
        action="scores.rescore",
        entity_type="study" if study_code else "all_studies",
        entity_id=study_code,
        after={"assessments": total, "changed": changed, "algorithm_version": ALGORITHM_VERSION},
    )
    return RescoreSummary(assessments=total, changed=changed)


def _stored_values(session: Session, assessment_id: int) -> dict[str, float | None]:
    return dict(
        session.execute(
            select(ScaleScore.scale_code, ScaleScore.value).where(ScaleScore.assessment_id == assessment_id)
        ).tuples().all()
    )
