"""Every kind of change is audited: proven by the audit guard and by the events themselves.

Each operation runs through its service in a session guarded in ``raise`` mode and is then
committed: the commit fails if the operation changed audited data without an audit event.
The test then reads the events the operation appended and checks actor, action, entity and
before/after. (The whole test suite runs the application's own sessions in ``raise`` mode
too, see tests/conftest.py.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Connection, func, select, update
from sqlalchemy.orm import Session

from pro_app import create_app
from pro_app.db import audit_guard
from pro_app.db.audit_guard import (
    AUDITED_TABLES, EXEMPT_COLUMNS, EXEMPT_TABLES, UnauditedWrite, note_write, session_info,
)
from pro_app.db.engine import make_session_factory
from pro_app.db.models import (
    Alert,
    Answer,
    Assessment,
    AuditEvent,
    Base,
    OutboxMessage,
    Participant,
    ScaleScore,
    StaffUser,
    Study,
)
from pro_app.domain.instruments import default_registry
from pro_app.domain.records import ExportFilters
from pro_app.domain.states import AssessmentMode
from pro_app.services import questionnaire
from pro_app.services.access import issue_link, revoke_links
from pro_app.services.alerts import acknowledge_alerts, rule_settings, save_rule_settings
from pro_app.services.audit import record_event
from pro_app.services.auth import LoginRefused, authenticate, change_password, reset_password, set_active
from pro_app.services.clock import advance_states
from pro_app.services.corrections import correct_answer
from pro_app.services.exports import audit_export
from pro_app.services.participants import enrol_participant, reanchor_participant, withdraw_participant
from pro_app.services.questionnaire import hand_over, record_answer, start_assessment, submit_assessment
from pro_app.services.schedules import load_builtin_template, rules_of, save_template_rules, study_template
from pro_app.services.scores import rescore
from pro_app.services.staff import create_staff_user
from pro_app.services.texts import load_licensed_text
from pro_app.services.throttle import register_attempt
from tests.conftest import app_config
from tests.factories import STAFF_PASSWORD, make_study, now_utc

QLQ = default_registry().get("qlq_c30")
TEXT = default_registry().text("qlq_c30", "en")
GRACE = timedelta(0)
EN_TEXT = Path(__file__).resolve().parents[2] / "pro_app" / "instruments" / "qlq_c30" / "text" / "en.json"


@pytest.fixture
def session(guarded_session: Session) -> Session:
    return guarded_session


def _last_seq(session: Session) -> int:
    return int(session.scalar(select(func.max(AuditEvent.seq))) or 0)


def committed(session: Session, operation: Callable[[], Any]) -> list[AuditEvent]:
    """Run one operation, commit it (the guard checks it) and return the events it appended."""
    mark = _last_seq(session)
    operation()
    session.commit()
    return list(session.scalars(select(AuditEvent).where(AuditEvent.seq > mark).order_by(AuditEvent.seq)))


def data(raw: str | None) -> Any:
    return None if raw is None else json.loads(raw)


def only(events: list[AuditEvent], action: str) -> AuditEvent:
    matching = [e for e in events if e.action == action]
    assert len(matching) == 1, [e.action for e in events]
    return matching[0]


@pytest.fixture
def study(session: Session) -> Study:
    study = make_study(session, "COV")
    session.commit()
    return study


@pytest.fixture
def nurse(session: Session, study: Study) -> StaffUser:
    user = create_staff_user(session, email="nurse@cov.example.org", password=STAFF_PASSWORD, role="nurse",
                             site_ids=[study.sites[0].id], actor="staff:0")
    session.commit()
    return user


@pytest.fixture
def participant(session: Session, study: Study) -> Participant:
    participant = enrol_participant(session, study=study, site=study.sites[0], arm=study.arms[0], subject_code="COV-1",
                                    locale="en", actor="staff:0")
    session.commit()
    return participant


def _first_assessment(session: Session, participant: Participant) -> Assessment:
    assessment = session.scalars(
        select(Assessment).where(Assessment.participant_id == participant.id).order_by(Assessment.planned_at)
    ).first()
    assert assessment is not None
    return assessment


def _worst(item_number: int) -> int:
    return 1 if item_number >= 29 else 4


def _submitted(session: Session, participant: Participant, *, worst: bool = True) -> Assessment:
    assessment = _first_assessment(session, participant)
    start_assessment(session, assessment, mode=AssessmentMode.SELF, text=TEXT, actor=f"participant:{participant.id}")
    for item in QLQ.items:
        record_answer(session, assessment, QLQ, item_id=item.id, value=_worst(item.number) if worst else 2,
                      locale="en", actor=f"participant:{participant.id}", grace=GRACE)
    submit_assessment(session, assessment, QLQ, submission_key=f"key-{assessment.id}", actor=f"participant:{participant.id}",
                      grace=GRACE)
    session.commit()
    return assessment


# ---------------------------------------------------------------- the guard itself


def test_every_table_is_classified_once_with_a_reason() -> None:
    tables = set(Base.metadata.tables)
    assert not set(AUDITED_TABLES) & set(EXEMPT_TABLES)
    unclassified = tables - set(AUDITED_TABLES) - set(EXEMPT_TABLES)
    assert not unclassified, f"classify these tables in pro_app/db/audit_guard.py: {sorted(unclassified)}"
    assert all(reason.strip() for reason in [*AUDITED_TABLES.values(), *EXEMPT_TABLES.values()])
    for table, columns in EXEMPT_COLUMNS.items():
        assert table in AUDITED_TABLES
        assert set(columns) <= set(Base.metadata.tables[table].columns.keys())
        assert all(reason.strip() for reason in columns.values())


def test_an_unaudited_change_cannot_be_committed(session: Session, participant: Participant) -> None:
    participant.locale = "es"
    with pytest.raises(UnauditedWrite, match="participants"):
        session.commit()
    session.rollback()
    assert session.get(Participant, participant.id).locale == "en"  # type: ignore[union-attr]


def test_an_unaudited_bulk_statement_cannot_be_committed(session: Session, participant: Participant) -> None:
    session.execute(update(Participant).where(Participant.id == participant.id).values(phone="+4930999999"))
    with pytest.raises(UnauditedWrite, match="participants"):
        session.commit()
    session.rollback()
    assert session.get(Participant, participant.id).phone is None  # type: ignore[union-attr]


def test_an_unaudited_insert_cannot_be_committed(session: Session, participant: Participant) -> None:
    assessment = _first_assessment(session, participant)
    session.add(Alert(assessment_id=assessment.id, rule_code="PF2:lt:83", scale_code="PF2", value=40.0, threshold=83.0))
    with pytest.raises(UnauditedWrite, match="alerts"):
        session.commit()
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Alert)) == 0


@pytest.mark.parametrize("started", [False, True])
def test_an_answer_save_without_its_event_cannot_be_committed(
    session: Session, participant: Participant, monkeypatch: pytest.MonkeyPatch, started: bool
) -> None:
    """The answer save writes with Core statements; the guard sees them all the same. On
    PostgreSQL a started questionnaire's answer is saved with its receipt and its event in one
    statement, which cannot leave the event out: the guard is told what it wrote, and without
    being told of the event, it refuses the commit of the answer."""
    assessment = _first_assessment(session, participant)
    if started:
        start_assessment(session, assessment, mode=AssessmentMode.SELF, text=TEXT, actor="staff:0")
        session.commit()
    monkeypatch.setattr(questionnaire, "record_event", lambda *args, **kwargs: 0)
    if started and session.connection().dialect.name == "postgresql":
        def note_all_but_events(guarded: Session, table: str, **kwargs: Any) -> None:
            if table != "audit_events":
                note_write(guarded, table, **kwargs)

        monkeypatch.setattr(questionnaire, "note_write", note_all_but_events)
    record_answer(session, assessment, QLQ, item_id="q1", value=2, locale="en", actor="participant:1", grace=GRACE)
    with pytest.raises(UnauditedWrite, match="answers"):
        session.commit()
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Answer)) == 0


def test_changes_that_change_nothing_or_only_bookkeeping_need_no_event(
    session: Session, participant: Participant, nurse: StaffUser
) -> None:
    # Revoking when there is nothing to revoke: a bulk UPDATE that matched no row.
    assert committed(session, lambda: revoke_links(session, participant, actor="staff:0")) == []
    # Throttling counters, a staff notification waiting to be sent, a failed sign-in counter.
    assert committed(session, lambda: register_attempt(session, "test:key", limit=3, window=timedelta(minutes=1))) == []
    assert committed(session, lambda: session.add(OutboxMessage(recipient="x@example.org", subject="s", body="b"))) == []

    def wrong_password() -> None:
        with pytest.raises(LoginRefused):
            authenticate(session, email=nurse.email, password="not the password", client="203.0.113.9")

    assert committed(session, wrong_password) == []
    assert nurse.failed_logins == 1
    # Setting an attribute to the value it already has is no change.
    participant.locale = "en"
    assert committed(session, lambda: None) == []


def test_events_of_a_rolled_back_savepoint_do_not_count(session: Session, participant: Participant) -> None:
    with pytest.raises(RuntimeError), session.begin_nested():
        record_event(session, actor="test", action="thing.note", entity_type="participant", entity_id=participant.id)
        raise RuntimeError("undo the event")
    participant.locale = "es"
    with pytest.raises(UnauditedWrite, match="participants"):
        session.commit()
    session.rollback()


def test_log_mode_commits_and_names_the_tables(
    connection: Connection, participant: Participant, caplog: pytest.LogCaptureFixture
) -> None:
    logging_session = make_session_factory(connection, join_transaction_mode="create_savepoint",
                                           info=session_info("log"))()
    row = logging_session.get(Participant, participant.id)
    assert row is not None
    row.locale = "ar"
    with caplog.at_level(logging.WARNING, logger="pro_app.db.audit_guard"):
        logging_session.commit()
    assert "participants" in caplog.text and "without an audit event" in caplog.text
    logging_session.expire_all()
    assert logging_session.get(Participant, participant.id).locale == "ar"  # type: ignore[union-attr]
    logging_session.close()


def test_sessions_outside_the_app_are_not_guarded(db_session: Session, participant: Participant) -> None:
    row = db_session.get(Participant, participant.id)
    assert row is not None
    row.locale = "zh_Hans"
    db_session.commit()  # the tests' own direct database access, like a migration's


def test_the_application_guards_its_sessions(app: Flask, database_url: str, participant: Participant) -> None:
    # In the tests: raise (tests/conftest.py), so every request and command is checked.
    test_session = app.extensions["pro_db"].writer()
    assert test_session.info[audit_guard.INFO_KEY] == "raise"
    row = test_session.get(Participant, participant.id)
    row.locale = "es"
    with pytest.raises(UnauditedWrite):
        test_session.commit()
    test_session.close()
    # In production: log by default (a missed audit call must not fail a patient's request).
    config = app_config(DATABASE_URL=database_url)
    del config["AUDIT_GUARD"]
    production = create_app(config)
    for factory in (production.extensions["pro_db"].reader, production.extensions["pro_db"].writer):
        assert factory.kw["info"][audit_guard.INFO_KEY] == "log"
    with pytest.raises(ValueError, match="AUDIT_GUARD"):
        create_app(app_config(DATABASE_URL=database_url, AUDIT_GUARD="sometimes"))


# ---------------------------------------------------------------- participant data


def test_enrolment_is_audited_without_contact_details(session: Session, study: Study) -> None:
    holder: dict[str, Participant] = {}

    def enrol() -> None:
        holder["p"] = enrol_participant(
            session, study=study, site=study.sites[0], arm=study.arms[1], subject_code="cov-2", locale="es",
            email="patient@example.org", phone="+4930123456", actor="staff:7",
        )

    event = only(committed(session, enrol), "participant.enrol")
    assert (event.actor, event.entity_type, event.entity_id) == ("staff:7", "participant", str(holder["p"].id))
    after = data(event.after)
    assert after["subject_code"] == "COV-2" and after["arm"] == "high" and after["site"] == "A"
    assert after["contact"] == {"email": True, "phone": True}
    assert "enrolment" in after["anchors"] and after["assessments"] > 0
    assert "patient@example.org" not in (event.after or "") and "+4930123456" not in (event.after or "")


def test_links_are_audited_without_their_secrets(session: Session, participant: Participant) -> None:
    issued: list[Any] = []
    events = committed(session, lambda: issued.append(issue_link(session, participant, actor="staff:7", valid_days=30)))
    event = only(events, "access_link.issue")
    assert (event.actor, event.entity_type, event.entity_id) == ("staff:7", "participant", str(participant.id))
    assert data(event.after)["link_id"] == issued[0].link.id
    assert issued[0].token not in (event.after or "") and issued[0].code not in (event.after or "")
    revoked = only(committed(session, lambda: revoke_links(session, participant, actor="staff:8")), "access_link.revoke")
    assert (revoked.actor, data(revoked.after)) == ("staff:8", {"revoked": 1})


def test_protocol_date_changes_and_withdrawal_are_audited_with_reasons(session: Session, participant: Participant) -> None:
    infusion = now_utc() + timedelta(days=10)
    event = only(committed(session, lambda: reanchor_participant(
        session, participant, kind="infusion", occurred_at=infusion, reason="Infusion postponed", actor="staff:7",
    )), "participant.reanchor")
    assert event.reason == "Infusion postponed" and event.entity_id == str(participant.id)
    assert data(event.before) == {"anchor": "infusion", "at": None}
    assert data(event.after)["at"] == infusion.isoformat()
    events = committed(session, lambda: withdraw_participant(session, participant, reason="Patient's wish",
                                                             actor="staff:7"))
    withdrawal = only(events, "participant.withdraw")
    assert (data(withdrawal.before), data(withdrawal.after)["status"]) == ({"status": "active"}, "withdrawn")
    assert withdrawal.reason == "Patient's wish"


# ---------------------------------------------------------------- clinical data


def test_answers_submission_scores_and_alerts_are_audited(
    session: Session, participant: Participant, nurse: StaffUser
) -> None:
    actor = f"participant:{participant.id}"
    assessment = _first_assessment(session, participant)
    started = only(committed(session, lambda: start_assessment(
        session, assessment, mode=AssessmentMode.SELF, text=TEXT, actor=actor)), "assessment.start")
    assert data(started.after)["text_checksum"] == TEXT.checksum
    tablet = only(committed(session, lambda: hand_over(
        session, assessment, mode=AssessmentMode.INTERVIEW, text=TEXT, actor="staff:7")), "assessment.mode")
    assert (data(tablet.before), data(tablet.after)) == ({"mode": "self"}, {"mode": "interview"})

    def answer(item: str, value: int) -> list[AuditEvent]:
        return committed(session, lambda: record_answer(session, assessment, QLQ, item_id=item, value=value,
                                                        locale="en", actor=actor, grace=GRACE))

    first = only(answer("q1", 2), "answer.save")
    assert (first.actor, first.entity_type, first.entity_id) == (actor, "assessment", str(assessment.id))
    assert first.before is None and data(first.after)["item"] == "q1" and data(first.after)["value"] == 2
    changed = only(answer("q1", 4), "answer.save")
    assert data(changed.before) == {"value": 2} and data(changed.after)["value"] == 4
    assert answer("q1", 4) == [], "saving the same value again changes nothing"
    for item in QLQ.items[1:]:
        answer(item.id, _worst(item.number))
    events = committed(session, lambda: submit_assessment(session, assessment, QLQ, submission_key="k-1", actor=actor,
                                                          grace=GRACE, base_url="http://localhost"))
    assert [e.action for e in events] == ["scores.store", "alert.raise", "assessment.submit"]
    scores = only(events, "scores.store")
    assert scores.before is None and scores.entity_id == str(assessment.id)
    stored = dict(session.execute(select(ScaleScore.scale_code, ScaleScore.value)
                                  .where(ScaleScore.assessment_id == assessment.id)).tuples().all())
    assert data(scores.after)["scores"] == stored
    raised = only(events, "alert.raise")
    alerts = session.scalars(select(Alert).where(Alert.assessment_id == assessment.id)).all()
    assert raised.actor == "system" and sorted(data(raised.after)["alerts"]) == sorted(a.rule_code for a in alerts)
    assert data(only(events, "assessment.submit").after)["items_answered"] == 30

    acknowledged = committed(session, lambda: acknowledge_alerts(session, assessment, user=nurse, note="Called."))
    assert {(e.action, e.entity_type, e.actor) for e in acknowledged} == {("alert.acknowledge", "alert", f"staff:{nurse.id}")}
    assert {e.entity_id for e in acknowledged} == {str(a.id) for a in alerts}
    assert all(data(e.before) == {"state": "open"} and data(e.after) == {"state": "acknowledged", "note": "Called."}
               for e in acknowledged)


def test_corrections_are_audited_with_reason_and_values(session: Session, participant: Participant, nurse: StaffUser) -> None:
    assessment = _submitted(session, participant, worst=False)
    events = committed(session, lambda: correct_answer(session, assessment, item_id="q3", value=4,
                                                       reason="Patient chose the wrong box", user=nurse))
    correction = only(events, "answer.correct")
    assert (correction.actor, correction.entity_type, correction.entity_id) == (
        f"staff:{nurse.id}", "assessment", str(assessment.id))
    assert data(correction.before) == {"item": "q3", "value": 2, "answered_by": f"participant:{participant.id}"}
    assert data(correction.after) == {"item": "q3", "value": 4, "answered_by": f"staff:{nurse.id}"}
    assert correction.reason == "Patient chose the wrong box"
    scores = only(events, "scores.store")
    assert scores.reason == "Patient chose the wrong box" and "PF2" in data(scores.before)["scores"]


def test_rescoring_audits_each_changed_assessment(
    session: Session, connection: Connection, participant: Participant
) -> None:
    assessment = _submitted(session, participant, worst=False)
    assert [e.action for e in committed(session, lambda: rescore(session, actor="cli"))] == ["scores.rescore"]
    # Someone with direct database access damages a score; rescoring repairs it, audited.
    connection.execute(update(ScaleScore).where(ScaleScore.assessment_id == assessment.id,
                                                ScaleScore.scale_code == "PF2").values(value=12.5))
    session.expire_all()
    events = committed(session, lambda: rescore(session, actor="cli"))
    assert [e.action for e in events] == ["scores.store", "scores.rescore"]
    assert data(events[0].before) == {"scores": {"PF2": 12.5}}
    assert data(events[0].after)["scores"]["PF2"] == pytest.approx(66.66666666666667)


def test_the_clock_audits_what_it_opens_and_closes(session: Session, participant: Participant) -> None:
    mark = _last_seq(session)
    report = advance_states(session, now=now_utc() + timedelta(days=400), grace=GRACE)  # commits itself
    events = session.scalars(select(AuditEvent).where(AuditEvent.seq > mark)).all()
    assert report.missed > 0
    missed = only(list(events), "assessment.missed")
    assert missed.actor == "system" and len(data(missed.after)["assessments"]) == report.missed


# ---------------------------------------------------------------- schedules, alert rules, texts, exports


def test_schedules_and_alert_rules_are_audited(session: Session) -> None:
    study = make_study(session, "SCH", template=None)  # committed with its schedule (no study service yet)
    created = only(committed(session, lambda: load_builtin_template(session, study, "qol_6_weekly", actor="staff:1")),
                   "schedule_template.create")
    template = study_template(session, study)
    assert template is not None and created.entity_id == str(template.id)
    rules = rules_of(template)
    events = committed(session, lambda: save_template_rules(session, template, rules[:-1], actor="staff:1"))
    updated = only(events, "schedule_template.update")
    assert len(data(updated.before)["timepoints"]) == len(rules)
    assert len(data(updated.after)["timepoints"]) == len(rules) - 1
    first = rule_settings(session, study, QLQ)[0]
    events = committed(session, lambda: save_rule_settings(
        session, study, QLQ, {first.scale: (False, 55.0)}, worsening_points=None, actor="staff:1"))
    saved = only(events, "study.alert_rules")
    assert data(saved.before)["rules"][first.scale] == [True, first.threshold]
    assert data(saved.after)["rules"][first.scale] == [False, 55.0]
    assert (data(saved.before)["worsening_points"], data(saved.after)["worsening_points"]) == (10.0, None)


def test_licensed_text_and_exports_are_audited(session: Session, study: Study, tmp_path: Path) -> None:
    content = json.loads(EN_TEXT.read_text(encoding="utf-8"))
    content.update({"source": "licensed", "title": "Site licensed text (test stand-in)"})
    content["items"] = {item: f"Stand-in wording {item}" for item in content["items"]}
    path = tmp_path / "en.json"
    path.write_text(json.dumps(content), encoding="utf-8")
    event = only(committed(session, lambda: load_licensed_text(
        session, instrument_code="qlq_c30", locale="en", path=path, supported_locales=["en"], actor="cli:dm")),
        "instrument_text.load")
    assert event.actor == "cli:dm" and data(event.after)["locale"] == "en"
    export = only(committed(session, lambda: audit_export(session, ExportFilters(study=study.code), export_format="csv",
                                                          actor="staff:3")), "export")
    assert (export.entity_type, export.entity_id, data(export.after)["format"]) == ("study", study.code, "csv")


# ---------------------------------------------------------------- staff accounts


def test_staff_account_changes_are_audited(session: Session, study: Study) -> None:
    holder: dict[str, StaffUser] = {}

    def create() -> None:
        holder["u"] = create_staff_user(session, email="New.Nurse@Example.org", password=STAFF_PASSWORD, role="nurse",
                                        site_ids=[study.sites[1].id], actor="staff:1")

    created = only(committed(session, create), "staff_user.create")
    user = holder["u"]
    assert data(created.after) == {"email": "new.nurse@example.org", "role": "nurse", "sites": [study.sites[1].id],
                                   "locale": None}
    assert "password" not in (created.after or "")
    signed_in = committed(session, lambda: authenticate(session, email=user.email, password=STAFF_PASSWORD,
                                                        client="198.51.100.1"))
    assert only(signed_in, "staff_user.login").actor == f"staff:{user.id}"
    new_password = "another-long-secret-phrase"
    changed = committed(session, lambda: change_password(session, user, current=STAFF_PASSWORD, new=new_password))
    assert data(only(changed, "staff_user.sessions_ended").after) == {"reason": "password changed"}
    reset = committed(session, lambda: reset_password(session, user, new=STAFF_PASSWORD, actor="staff:1"))
    assert only(reset, "staff_user.sessions_ended").actor == "staff:1"

    def lock() -> None:
        for _attempt in range(5):
            with pytest.raises(LoginRefused):
                authenticate(session, email=user.email, password="wrong wrong wrong", client="198.51.100.2")

    locked = only(committed(session, lock), "staff_user.lock")
    assert locked.entity_id == str(user.id) and "locked_until" in data(locked.after)
    deactivated = committed(session, lambda: set_active(session, user, active=False, actor="staff:1"))
    assert [e.action for e in deactivated] == ["staff_user.deactivate", "staff_user.sessions_ended"]
    assert (data(deactivated[0].before), data(deactivated[0].after)) == ({"active": True}, {"active": False})
