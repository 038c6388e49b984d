"""Test isolation works on every database, and the schema protects the data by itself."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from pro_app.db.engine import make_engine
from pro_app.db.models import Answer, Assessment, Participant, Site, Study
from tests.conftest import POSTGRES_URL


def _study(session: Session) -> Study:
    study = Study(code="ISO-1", name="Isolation", timezone="UTC")
    study.sites = [Site(code="S1", name="Site", timezone="UTC")]
    session.add(study)
    session.flush()
    return study


def _assessment(session: Session) -> Assessment:
    study = _study(session)
    participant = Participant(study=study, site=study.sites[0], subject_code="P-001", timezone="UTC")
    now = datetime.now(timezone.utc)
    assessment = Assessment(
        participant=participant, timepoint_code="baseline", timepoint_label="Baseline", instrument_code="qlq_c30",
        instrument_version="3.0", planned_at=now, window_opens_at=now, window_closes_at=now + timedelta(days=1),
    )
    session.add(assessment)
    session.flush()
    return assessment


@pytest.mark.parametrize("attempt", [1, 2])
def test_committed_rows_do_not_leak_into_the_next_test(db_session: Session, attempt: int) -> None:
    assert db_session.scalar(select(func.count()).select_from(Study)) == 0
    _study(db_session)
    db_session.commit()
    assert db_session.scalar(select(func.count()).select_from(Study)) == 1


def test_one_answer_per_assessment_and_item(db_session: Session) -> None:
    assessment = _assessment(db_session)
    db_session.add(Answer(assessment=assessment, item_id="q1", value=2, answered_by="participant"))
    db_session.flush()
    db_session.add(Answer(assessment=assessment, item_id="q1", value=3, answered_by="participant"))
    with pytest.raises(IntegrityError):
        db_session.flush()


@pytest.mark.parametrize("value", [-1, 101])
def test_answer_values_are_bounded(db_session: Session, value: int) -> None:
    assessment = _assessment(db_session)
    db_session.add(Answer(assessment=assessment, item_id="q1", value=value, answered_by="participant"))
    with pytest.raises(IntegrityError):
        db_session.flush()


def test_unknown_assessment_status_is_refused(db_session: Session) -> None:
    assessment = _assessment(db_session)
    assessment.status = "lost"
    with pytest.raises(IntegrityError):
        db_session.flush()


def test_foreign_keys_are_enforced(db_session: Session) -> None:
    db_session.add(Answer(assessment_id=987654, item_id="q1", value=1, answered_by="participant"))
    with pytest.raises(IntegrityError):
        db_session.flush()


def test_subject_codes_are_unique_per_study(db_session: Session) -> None:
    study = _study(db_session)
    db_session.add(Participant(study=study, site=study.sites[0], subject_code="P-1", timezone="UTC"))
    db_session.add(Participant(study=study, site=study.sites[0], subject_code="P-1", timezone="UTC"))
    with pytest.raises(IntegrityError):
        db_session.flush()


@pytest.mark.parametrize("zone", ["Asia/Kathmandu", "Etc/UTC", "UTC"])
def test_instants_come_back_in_utc_whatever_the_sessions_time_zone(db_session: Session, zone: str) -> None:
    """psycopg returns instants in the session's zone (exports set it to UTC for speed): each
    comes back as the same instant in ``timezone.utc`` itself, on SQLite as well."""
    assessment = _assessment(db_session)
    started = datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=timezone.utc)
    assessment.started_at = started
    db_session.flush()
    if db_session.get_bind().dialect.name == "postgresql":
        db_session.execute(text("SELECT set_config('TimeZone', :zone, true)"), {"zone": zone})
    value = db_session.execute(select(Assessment.started_at).where(Assessment.id == assessment.id)).scalar_one()
    assert value == started
    assert value.tzinfo is timezone.utc


@pytest.mark.skipif(not POSTGRES_URL, reason="PostgreSQL: PRO_TEST_DATABASE_URL is not set")
def test_every_postgresql_connection_works_in_utc_whatever_the_servers_zone() -> None:
    """The server's zone here is Asia/Kathmandu (+05:45, as a startup option): the app's
    connections still read instants as ``timezone.utc`` itself, in a transaction or not, and
    a connection's autocommit setting is left as the pool gave it."""
    assert POSTGRES_URL is not None
    engine = make_engine(POSTGRES_URL, connect_args={"options": "-c TimeZone=Asia/Kathmandu"})
    try:
        for isolation in ("READ COMMITTED", "AUTOCOMMIT"):
            with engine.connect().execution_options(isolation_level=isolation) as connection:
                assert connection.exec_driver_sql("SHOW TimeZone").scalar_one() == "UTC"
                driver = connection.connection.dbapi_connection
                assert driver is not None
                assert driver.autocommit is (isolation == "AUTOCOMMIT")
                instant = driver.execute("SELECT TIMESTAMPTZ '2026-03-29 01:30:15.123456+00'").fetchone()[0]
                assert instant == datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=timezone.utc)
                assert instant.tzinfo is timezone.utc
        engine.dispose()  # new connections get the same setting
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW TimeZone").scalar_one() == "UTC"
    finally:
        engine.dispose()


def test_naive_datetimes_are_refused_and_instants_come_back_in_utc(db_session: Session) -> None:
    assessment = _assessment(db_session)
    berlin = datetime(2026, 3, 29, 3, 30, tzinfo=timezone(timedelta(hours=2)))
    assessment.started_at = berlin
    db_session.commit()
    db_session.expire_all()
    assert assessment.started_at == berlin
    assert assessment.started_at.utcoffset() == timedelta(0)
    assessment.submitted_at = datetime(2026, 1, 1, 12, 0)
    with pytest.raises(StatementError, match="naive datetime"):
        db_session.flush()
