"""The result row of a scored assessment holds exactly the answers and scores in the
normalised tables, is kept equal by every path that writes scores, and is backfilled by its
migration for assessments scored before it existed."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Connection, delete, select, update
from sqlalchemy.orm import Session

from pro_app.db.migrate import alembic_config
from pro_app.db.models import Answer, Assessment, AssessmentResult, ScaleScore
from pro_app.domain.scoring import ALGORITHM_VERSION
from pro_app.services.scores import rescore, store_scores
from tests.integration.test_scores_in_the_app import MIXED, QLQ, _completed


def _normalised(session: Session, assessment: Assessment) -> tuple[dict[str, int], dict[str, float | None]]:
    answers = dict(session.execute(
        select(Answer.item_id, Answer.value).where(Answer.assessment_id == assessment.id)).tuples().all())
    scores = dict(session.execute(
        select(ScaleScore.scale_code, ScaleScore.value).where(ScaleScore.assessment_id == assessment.id)).tuples().all())
    return answers, scores


def _result(session: Session, assessment: Assessment) -> tuple[dict[str, int], dict[str, float | None], str]:
    """The result row read back by hand: values in form order and score order, empty = none."""
    row = session.get(AssessmentResult, assessment.id, populate_existing=True)
    assert row is not None
    answers = {item: int(value) for item, value in zip(QLQ.item_ids, row.answers.split(","), strict=True) if value}
    scores = {code: float(value) if value else None
              for code, value in zip(QLQ.score_codes, row.scores.split(","), strict=True)}
    return answers, scores, row.algorithm_version


def test_submission_writes_the_result_row_equal_to_the_tables(db_session: Session) -> None:
    assessment = _completed(db_session)
    db_session.commit()
    answers, scores, version = _result(db_session, assessment)
    assert (answers, scores) == _normalised(db_session, assessment)
    assert list(answers.values()) == MIXED
    row = db_session.get(AssessmentResult, assessment.id)
    assert row is not None and row.answers == ",".join(map(str, MIXED))
    assert scores["QL2"] == 58.333333333333336 and scores["C30SUM"] == 71.11111111111111  # exact doubles
    assert version == ALGORITHM_VERSION


def test_rescoring_after_an_answer_changes_updates_the_result_row(db_session: Session) -> None:
    assessment = _completed(db_session)
    db_session.execute(update(Answer).where(Answer.assessment_id == assessment.id, Answer.item_id == "q29").values(value=7))
    db_session.execute(delete(Answer).where(Answer.assessment_id == assessment.id, Answer.item_id == "q30"))
    store_scores(db_session, assessment)
    answers, scores, _version = _result(db_session, assessment)
    assert (answers, scores) == _normalised(db_session, assessment)
    assert answers["q29"] == 7 and "q30" not in answers
    row = db_session.get(AssessmentResult, assessment.id)
    assert row is not None and row.answers.endswith(",7,")  # q30 unanswered: an empty last field
    assert scores["QL2"] == 100.0  # one of two items answered: the half rule scores it


def test_rescore_repairs_a_result_row_that_differs(db_session: Session) -> None:
    assessment = _completed(db_session)
    db_session.execute(update(AssessmentResult).where(AssessmentResult.assessment_id == assessment.id)
                       .values(scores=",".join(["1.0"] * 16), answers=",".join(["1"] * 30)))
    summary = rescore(db_session, actor="test")
    assert summary.assessments == 1
    answers, scores, _version = _result(db_session, assessment)
    assert (answers, scores) == _normalised(db_session, assessment)


def test_the_migration_backfills_result_rows(connection: Connection, db_session: Session) -> None:
    assessment = _completed(db_session)
    db_session.flush()
    expected = _result(db_session, assessment)
    config = alembic_config(connection=connection)
    command.downgrade(config, "0007")
    command.upgrade(config, "head")
    db_session.expire_all()
    assert _result(db_session, assessment) == expected


def test_exports_read_result_rows_and_fall_back_on_malformed_ones(db_session: Session) -> None:
    """A result row that does not fit its instrument is never copied into an export: that
    assessment is read from the answers and score rows instead."""
    from pro_app.domain.records import ExportFilters, PackedValues
    from pro_app.services.exports import iter_records

    good = _completed(db_session, "P-001", "SC-1")
    bad = _completed(db_session, "P-002", "SC-2")
    db_session.execute(update(AssessmentResult).where(AssessmentResult.assessment_id == bad.id)
                       .values(scores="1.0,\"=cmd()\"" + ",1.0" * 14))
    records = {r.assessment_id: r for code in ("SC-1", "SC-2")
               for r in iter_records(db_session, ExportFilters(code), answer_times=False)}
    assert isinstance(records[good.id].scores, PackedValues) and isinstance(records[good.id].answers, PackedValues)
    assert not isinstance(records[bad.id].scores, PackedValues)
    for assessment in (good, bad):
        answers, scores = _normalised(db_session, assessment)
        assert dict(records[assessment.id].answers) == answers
        assert dict(records[assessment.id].scores) == scores
