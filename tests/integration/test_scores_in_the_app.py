"""Scores stored on submission, and `pro-app rescore`."""

from __future__ import annotations

from datetime import timedelta

from flask.testing import FlaskCliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from pro_app.cli import main
from pro_app.db.models import Assessment, AuditEvent, ScaleScore
from pro_app.domain.instruments import default_registry
from pro_app.domain.scoring import ALGORITHM_VERSION, score_answers
from pro_app.domain.states import AssessmentMode
from pro_app.services.questionnaire import record_answer, start_assessment, submit_assessment
from tests.factories import enrol, make_study

QLQ = default_registry().get("qlq_c30")
TEXT = default_registry().text("qlq_c30", "en")
MIXED = [2, 3, 1, 1, 1, 2, 2, 1, 3, 2, 4, 3, 1, 1, 1, 2, 1, 3, 2, 2, 3, 3, 2, 2, 1, 2, 1, 1, 4, 5]


def _completed(session: Session, subject: str = "P-001", study_code: str = "SC-1") -> Assessment:
    study = make_study(session, study_code)
    participant = enrol(session, study, subject)
    assessment = session.scalars(select(Assessment).where(Assessment.participant_id == participant.id).order_by(Assessment.planned_at)).first()
    assert assessment is not None
    start_assessment(session, assessment, mode=AssessmentMode.SELF, text=TEXT, actor="test")
    for item, value in zip(QLQ.items, MIXED):
        record_answer(session, assessment, QLQ, item_id=item.id, value=value, locale="en", actor="test",
                      grace=timedelta(0))
    submit_assessment(session, assessment, QLQ, submission_key=f"key-{subject}", actor="test", grace=timedelta(0))
    return assessment


def _stored(session: Session, assessment: Assessment) -> dict[str, ScaleScore]:
    return {s.scale_code: s for s in session.scalars(select(ScaleScore).where(ScaleScore.assessment_id == assessment.id))}


def test_submission_stores_exact_scores_with_the_algorithm_version(db_session: Session) -> None:
    assessment = _completed(db_session)
    db_session.commit()
    db_session.expire_all()
    stored = _stored(db_session, assessment)
    expected = score_answers(QLQ, {item.id: v for item, v in zip(QLQ.items, MIXED)})
    assert {code: row.value for code, row in stored.items()} == {code: r.value for code, r in expected.items()}
    # Full precision survives the database round trip (the reference value for this row).
    assert stored["QL2"].value == 58.333333333333336
    assert stored["C30SUM"].value == 71.11111111111111
    assert {row.algorithm_version for row in stored.values()} == {ALGORITHM_VERSION}
    assert stored["PF2"].items_answered == 5 and stored["C30SUM"].items_answered == 13


def test_rescore_repairs_and_is_idempotent(runner: FlaskCliRunner, db_session: Session) -> None:
    assessment = _completed(db_session)
    other = _completed(db_session, "P-002", "SC-2")
    row = _stored(db_session, assessment)["PF2"]
    row.value = 12.5
    db_session.commit()
    result = runner.invoke(main, ["rescore", "--study", "SC-1"])
    assert result.exit_code == 0, result.output
    assert "Re-scored 1 assessments; 1 had changed scores." in result.output
    db_session.expire_all()
    assert _stored(db_session, assessment)["PF2"].value == 80.0
    again = runner.invoke(main, ["rescore"])
    assert "Re-scored 2 assessments; 0 had changed scores." in again.output
    assert _stored(db_session, other)["PF2"].value == 80.0
    events = db_session.scalars(select(AuditEvent).where(AuditEvent.action == "scores.rescore").order_by(AuditEvent.seq)).all()
    assert len(events) == 2 and '"changed":1' in (events[0].after or "")
