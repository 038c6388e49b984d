"""Small builders for test data, going through the real services where one exists."""

from __future__ import annotations

import html
import re
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.orm import Session

from pro_app.db import direct
from pro_app.db.engine import make_engine, make_session_factory, writer_engine
from pro_app.db.models import Answer, Arm, Assessment, Participant, Site, Study
from pro_app.domain.instruments import default_registry
from pro_app.domain.states import AssessmentMode
from pro_app.services.access import IssuedLink, issue_link
from pro_app.services.participants import enrol_participant
from pro_app.services.questionnaire import start_assessment
from pro_app.services.schedules import load_builtin_template


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def make_study(session: Session, code: str = "TEST-1", template: str | None = "qol_6_weekly") -> Study:
    study = Study(code=code, name=f"Study {code}", timezone="Europe/Berlin")
    study.sites = [
        Site(code="A", name="Site A", timezone="Europe/Berlin"),
        Site(code="B", name="Site B", timezone="Asia/Shanghai"),
    ]
    study.arms = [Arm(code="low", name="Low dose"), Arm(code="high", name="High dose")]
    session.add(study)
    session.flush()
    if template:
        load_builtin_template(session, study, template, actor="test")
    return study


def enrol(
    session: Session,
    study: Study,
    subject_code: str = "P-001",
    *,
    site_index: int = 0,
    days_ago: int = 0,
    locale: str = "en",
) -> Participant:
    return enrol_participant(
        session,
        study=study,
        site=study.sites[site_index],
        arm=study.arms[0],
        subject_code=subject_code,
        locale=locale,
        anchors={"enrolment": now_utc() - timedelta(days=days_ago)},
        actor="test",
    )


def link_for(session: Session, participant: Participant, valid_days: int = 30) -> IssuedLink:
    return issue_link(session, participant, actor="test", valid_days=valid_days)


STAFF_PASSWORD = "correct-horse-battery"


def make_staff(session: Session, role: str, sites: list[Site] | None = None, email: str | None = None):  # type: ignore[no-untyped-def]
    from pro_app.services.staff import create_staff_user

    return create_staff_user(
        session, email=email or f"{role}-{len(sites or [])}-{id(sites)}@example.org", password=STAFF_PASSWORD,
        role=role, site_ids=[s.id for s in sites or []], actor="test",
    )


def sign_in(client, email: str, password: str = STAFF_PASSWORD):  # type: ignore[no-untyped-def]
    return client.post("/staff/login", data={"email": email, "password": password})


def committed_started_patient(url: str, study_code: str, subject_code: str) -> tuple[str, int]:
    """In the database at ``url``, committed: a new study with one patient whose baseline
    questionnaire is started. Returns their link token and the questionnaire's id."""
    engine = make_engine(url)
    try:
        with make_session_factory(writer_engine(engine))() as session:
            participant = enrol(session, make_study(session, study_code), subject_code)
            issued = link_for(session, participant)
            assessment = session.scalars(
                select(Assessment).where(Assessment.participant_id == participant.id,
                                         Assessment.timepoint_code == "baseline")
            ).one()
            start_assessment(session, assessment, mode=AssessmentMode.SELF,
                             text=default_registry().text("qlq_c30", "en"), actor="test")
            session.commit()
            return issued.token, assessment.id
    finally:
        engine.dispose()


def json_save(client: FlaskClient, assessment_id: int, item: str, value: int,
              key: str) -> tuple[int, dict[str, str], dict[str, object]]:
    """A background save as the page script sends it: (status, headers, JSON body)."""
    response = client.post("/q/answer", json={"assessment": assessment_id, "item": item, "value": value},
                           headers={"Idempotency-Key": key, "Accept": "application/json"})
    return response.status_code, dict(response.headers), response.get_json()


def stored_answers(url: str, assessment_id: int) -> dict[str, int]:
    """The answers stored for a questionnaire in the database at ``url`` (item: value)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(Answer.item_id, Answer.value).where(Answer.assessment_id == assessment_id)
            ).tuples().all()
            return dict(rows)
    finally:
        engine.dispose()


def hidden_fields(page: str, action: str | None = None) -> dict[str, str]:
    """The hidden inputs (name: value) of a page, or of its form posting to ``action``."""
    if action is not None:
        start = page.index(f'action="{action}"')
        page = page[start:page.index("</form>", start)]
    fields: dict[str, str] = {}
    for tag in re.findall(r"<input\b[^>]*>", page):
        name, value = re.search(r'\bname="([^"]*)"', tag), re.search(r'\bvalue="([^"]*)"', tag)
        if name and 'type="hidden"' in tag:
            fields[html.unescape(name.group(1))] = html.unescape(value.group(1)) if value else ""
    return fields


def wait_until_blocked(engine: Engine) -> None:
    """Until another transaction waits for a lock (PostgreSQL), or a moment (SQLite)."""
    if engine.dialect.name != "postgresql":
        time.sleep(0.5)
        return
    deadline = time.monotonic() + 20
    with engine.connect() as connection:
        while time.monotonic() < deadline:
            waiting = connection.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )).scalar()
            connection.rollback()  # the statistics are a snapshot per transaction
            if waiting:
                return
            time.sleep(0.05)
    raise AssertionError("the other transaction never waited for the lock")


def direct_statements_sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The first word of each statement sent on the driver's cursor (``pro_app.db.direct``)
    from now on, in order, as the list returned fills."""
    sent: list[str] = []
    run = direct._run

    def counted(connection: Connection, compiled: Any, parameters: Any) -> Any:
        sent.append(compiled.sql.lstrip().split(None, 1)[0].upper())
        return run(connection, compiled, parameters)

    monkeypatch.setattr(direct, "_run", counted)
    return sent
