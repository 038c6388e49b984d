"""The clock moves assessments along; changing a protocol date re-plans only what may move."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from flask.testing import FlaskCliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from pro_app.cli import main
from pro_app.db.models import Answer, Assessment, AuditEvent, Participant, Reminder
from pro_app.domain.errors import Conflict, ValidationError
from pro_app.services.clock import advance_states
from pro_app.services.participants import enrol_participant, reanchor_participant, withdraw_participant
from tests.factories import make_study

UTC = timezone.utc
GRACE = timedelta(hours=2)


def _assessment(session: Session, participant: Participant, code: str, opens: datetime, closes: datetime,
                status: str = "scheduled") -> Assessment:
    assessment = Assessment(
        participant=participant, timepoint_code=code, timepoint_label=code, instrument_code="qlq_c30",
        instrument_version="3.0", planned_at=opens, window_opens_at=opens, window_closes_at=closes, status=status,
    )
    session.add(assessment)
    session.flush()
    return assessment


@pytest.fixture
def participant(db_session: Session) -> Participant:
    study = make_study(db_session, "CLK", template=None)
    participant = Participant(study=study, site=study.sites[0], subject_code="CLK-1", timezone="Europe/Berlin")
    db_session.add(participant)
    db_session.flush()
    return participant


def test_windows_open_and_close_on_time(db_session: Session, participant: Participant) -> None:
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    second = timedelta(seconds=1)
    opening = _assessment(db_session, participant, "opening", now, now + timedelta(days=1))
    not_yet = _assessment(db_session, participant, "not_yet", now + second, now + timedelta(days=1))
    closing = _assessment(db_session, participant, "closing", now - timedelta(days=1), now)
    still_open = _assessment(db_session, participant, "still", now - timedelta(days=1), now + second, "open")
    started = _assessment(db_session, participant, "started", now - timedelta(days=1), now - GRACE + second, "in_progress")
    started_late = _assessment(db_session, participant, "late", now - timedelta(days=1), now - GRACE, "in_progress")
    db_session.add(Answer(assessment=started_late, item_id="q1", value=2, answered_by="participant"))
    done = _assessment(db_session, participant, "done", now - timedelta(days=2), now - timedelta(days=1), "completed")
    db_session.commit()

    report = advance_states(db_session, now=now, grace=GRACE)
    states = {a.timepoint_code: a.status for a in (opening, not_yet, closing, still_open, started, started_late, done)}
    assert states == {"opening": "open", "not_yet": "scheduled", "closing": "missed", "still": "open",
                      "started": "in_progress", "late": "missed", "done": "completed"}
    assert (report.opened, report.missed) == (1, 2)
    assert db_session.scalars(select(Answer).where(Answer.assessment_id == started_late.id)).one().value == 2
    again = advance_states(db_session, now=now, grace=GRACE)
    assert (again.opened, again.missed) == (0, 0), "idempotent"
    assert db_session.scalars(select(AuditEvent.action).where(AuditEvent.actor == "system").order_by(AuditEvent.seq)).all() == [
        "assessment.missed", "assessment.open"
    ]


def test_tick_command_runs_the_clock(runner: FlaskCliRunner, db_session: Session, participant: Participant) -> None:
    now = datetime.now(UTC)
    _assessment(db_session, participant, "due", now - timedelta(hours=1), now + timedelta(days=1))
    db_session.commit()
    result = runner.invoke(main, ["tick"])
    assert result.exit_code == 0, result.output
    assert "Assessments: 1 opened, 0 missed." in result.output
    assert "Assessments: 0 opened, 0 missed." in runner.invoke(main, ["tick"]).output


@pytest.fixture
def car_t(db_session: Session) -> Participant:
    study = make_study(db_session, "CART-RA", template="car_t_early")
    now = datetime.now(UTC)
    participant = enrol_participant(
        db_session, study=study, site=study.sites[0], arm=study.arms[0], subject_code="RA-1", locale="en",
        anchors={"lymphodepletion": now + timedelta(hours=24), "infusion": now + timedelta(days=6)}, actor="test",
        now=now,
    )
    db_session.commit()
    return participant


def _by_code(session: Session, participant: Participant) -> dict[str, Assessment]:
    session.expire_all()
    return {a.timepoint_code: a for a in session.scalars(select(Assessment).where(Assessment.participant_id == participant.id))}


def test_reanchoring_moves_only_what_nobody_started(db_session: Session, car_t: Participant) -> None:
    before = _by_code(db_session, car_t)
    assert before["pre_ld"].status == "open", "within 72 h before lymphodepletion"
    before["pre_ld"].status = "in_progress"
    before["pre_ld"].started_at = datetime.now(UTC)
    db_session.add(Reminder(assessment_id=before["d7"].id, channel="email", kind="window_open",
                            due_at=before["d7"].window_opens_at))
    db_session.commit()
    original = {code: (a.window_opens_at, a.window_closes_at) for code, a in before.items()}
    new_infusion = datetime.now(UTC) + timedelta(days=13)  # postponed by a week
    moved = reanchor_participant(db_session, car_t, kind="infusion", occurred_at=new_infusion,
                                 reason="Cell product delayed", actor="staff:1")
    db_session.commit()
    after = _by_code(db_session, car_t)
    infusion_codes = {"pre_inf", "post_1h", "post_24h", "d4", "d7", "d10", "d14", "d28", "d60", "d90", "d180", "d270", "d360"}
    codes_by_id = {a.id: code for code, a in after.items()}
    assert {codes_by_id[m.assessment_id] for m in moved} == infusion_codes
    for code in infusion_codes:
        shift = after[code].window_opens_at - original[code][0]
        assert timedelta(days=6, hours=23) <= shift <= timedelta(days=7, hours=1), code
    assert (after["pre_ld"].window_opens_at, after["pre_ld"].window_closes_at) == original["pre_ld"], "started: never moved"
    reminder = db_session.scalars(select(Reminder)).one()
    assert reminder.status == "cancelled"
    event = db_session.scalars(select(AuditEvent).where(AuditEvent.action == "participant.reanchor")).one()
    assert event.reason == "Cell product delayed" and '"d7"' in (event.after or "")


def test_reanchoring_never_touches_completed_or_missed(db_session: Session, car_t: Participant) -> None:
    assessments = _by_code(db_session, car_t)
    assessments["pre_inf"].status = "completed"
    assessments["post_1h"].status = "missed"
    db_session.commit()
    kept = {c: (assessments[c].window_opens_at, assessments[c].status) for c in ("pre_inf", "post_1h")}
    reanchor_participant(db_session, car_t, kind="infusion", occurred_at=datetime.now(UTC) + timedelta(days=9),
                         reason="Rescheduled", actor="staff:1")
    after = _by_code(db_session, car_t)
    assert {c: (after[c].window_opens_at, after[c].status) for c in kept} == kept
    assert len(after) == 14, "nothing deleted, nothing duplicated"


def test_reanchoring_needs_a_reason_and_an_active_participant(db_session: Session, car_t: Participant) -> None:
    with pytest.raises(ValidationError):
        reanchor_participant(db_session, car_t, kind="infusion", occurred_at=datetime.now(UTC), reason=" ", actor="t")
    withdraw_participant(db_session, car_t, reason="consent withdrawn", actor="t")
    with pytest.raises(Conflict):
        reanchor_participant(db_session, car_t, kind="infusion", occurred_at=datetime.now(UTC), reason="x", actor="t")
