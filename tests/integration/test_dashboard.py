"""The staff dashboard lists: exact membership at every boundary, site scoping, counts, and
the shape of the SQL (a fixed number of queries, each driven by its index)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Connection, event
from sqlalchemy.orm import Session

from pro_app.db.models import Alert, Assessment, Participant, Study
from pro_app.domain.states import AlertState, AssessmentStatus, ParticipantStatus
from pro_app.services.dashboard import Dashboard, DashboardRow, Section, build_dashboard, local_day
from tests.factories import make_study

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=timezone.utc)  # 13:00 in Berlin, 20:00 in Shanghai
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
SCHEDULED, OPEN, IN_PROGRESS = AssessmentStatus.SCHEDULED, AssessmentStatus.OPEN, AssessmentStatus.IN_PROGRESS
COMPLETED, MISSED, CANCELLED = AssessmentStatus.COMPLETED, AssessmentStatus.MISSED, AssessmentStatus.CANCELLED


@pytest.fixture
def study(db_session: Session) -> Study:
    """Site A in Berlin, site B in Shanghai; arms "Low dose" and "High dose"."""
    return make_study(db_session, "DASH-1", template=None)


def participant(
    session: Session,
    study: Study,
    code: str,
    *,
    site: int = 0,
    status: ParticipantStatus = ParticipantStatus.ACTIVE,
    arm: int | None = 0,
) -> Participant:
    person = Participant(
        study=study,
        site=study.sites[site],
        arm=None if arm is None else study.arms[arm],
        subject_code=code,
        timezone=study.sites[site].timezone,
        status=status.value,
    )
    session.add(person)
    session.flush()
    return person


def assessment(
    session: Session,
    person: Participant,
    label: str,
    opens: datetime,
    closes: datetime,
    status: AssessmentStatus = SCHEDULED,
    submitted_at: datetime | None = None,
) -> Assessment:
    row = Assessment(
        participant_id=person.id,
        timepoint_code=label.lower().replace(" ", "_"),
        timepoint_label=label,
        instrument_code="qlq_c30",
        instrument_version="3.0",
        planned_at=opens,
        window_opens_at=opens,
        window_closes_at=closes,
        status=status.value,
        submitted_at=submitted_at,
    )
    session.add(row)
    session.flush()
    return row


def alert(session: Session, item: Assessment, scale: str, *, state: AlertState = AlertState.OPEN,
          created_at: datetime = NOW) -> Alert:
    row = Alert(assessment_id=item.id, rule_code="threshold", scale_code=scale, value=83.3, threshold=50.0,
                state=state.value, created_at=created_at)
    session.add(row)
    session.flush()
    return row


def board(session: Session, *, site_ids: list[int] | None = None, tz: str = "Europe/Berlin",
          limit: int = 100, now: datetime = NOW) -> Dashboard:
    return build_dashboard(session, site_ids=site_ids, now=now, timezone=tz, limit=limit)


def labels(section: Section[DashboardRow]) -> list[str]:
    return [row.timepoint_label for row in section.rows]


# --- open now ---------------------------------------------------------------------------------

def test_open_now_follows_the_window_not_a_stale_status(db_session: Session, study: Study) -> None:
    p = participant(db_session, study, "P-001")
    assessment(db_session, p, "stale scheduled", NOW - HOUR, NOW + 3 * DAY, SCHEDULED)
    assessment(db_session, p, "open", NOW - DAY, NOW + 2 * DAY, OPEN)
    assessment(db_session, p, "started", NOW - DAY, NOW + HOUR, IN_PROGRESS)
    assessment(db_session, p, "opens right now", NOW, NOW + 5 * DAY, SCHEDULED)
    assessment(db_session, p, "closes right now", NOW - DAY, NOW, OPEN)
    assessment(db_session, p, "stale open, closed", NOW - 2 * DAY, NOW - MIN, OPEN)
    assessment(db_session, p, "opens in a minute", NOW + MIN, NOW + DAY, SCHEDULED)
    assessment(db_session, p, "completed", NOW - DAY, NOW + DAY, COMPLETED, submitted_at=NOW - HOUR)
    assessment(db_session, p, "cancelled", NOW - DAY, NOW + DAY, CANCELLED)
    assessment(db_session, p, "marked missed", NOW - DAY, NOW + DAY, MISSED)

    section = board(db_session).open_now

    # Closing soonest first.
    assert labels(section) == ["started", "open", "stale scheduled", "opens right now"]
    assert section.total == 4 and not section.truncated
    first = section.rows[0]
    assert (first.subject_code, first.site_name, first.arm_name, first.status) == (
        "P-001", "Site A", "Low dose", "in_progress")
    assert first.window_opens_at == NOW - DAY and first.window_closes_at == NOW + HOUR
    assert first.window_closes_at.tzinfo is not None and first.participant_id == p.id


def test_a_participant_without_an_arm_is_listed_with_none(db_session: Session, study: Study) -> None:
    p = participant(db_session, study, "P-002", arm=None)
    assessment(db_session, p, "open", NOW - DAY, NOW + DAY, OPEN)
    [row] = board(db_session).open_now.rows
    assert row.arm_name is None


# --- closing soon ------------------------------------------------------------------------------

def test_closing_soon_is_open_and_closing_within_24_hours(db_session: Session, study: Study) -> None:
    p = participant(db_session, study, "P-001")
    assessment(db_session, p, "23h59m", NOW - DAY, NOW + 24 * HOUR - MIN, OPEN)
    assessment(db_session, p, "exactly 24h", NOW - DAY, NOW + 24 * HOUR, SCHEDULED)
    assessment(db_session, p, "24h01m", NOW - DAY, NOW + 24 * HOUR + MIN, OPEN)
    assessment(db_session, p, "1 minute", NOW - DAY, NOW + MIN, IN_PROGRESS)
    assessment(db_session, p, "already closed", NOW - DAY, NOW, OPEN)
    assessment(db_session, p, "not open yet", NOW + HOUR, NOW + 10 * HOUR, SCHEDULED)
    assessment(db_session, p, "completed", NOW - DAY, NOW + HOUR, COMPLETED, submitted_at=NOW - HOUR)
    assessment(db_session, p, "cancelled", NOW - DAY, NOW + HOUR, CANCELLED)

    dashboard = board(db_session)

    assert labels(dashboard.closing_soon) == ["1 minute", "23h59m", "exactly 24h"]
    assert dashboard.closing_soon.total == 3
    assert labels(dashboard.open_now) == ["1 minute", "23h59m", "exactly 24h", "24h01m"]


# --- due today ---------------------------------------------------------------------------------

def test_due_today_is_the_viewers_local_day(db_session: Session, study: Study) -> None:
    # Shanghai (UTC+8): 10 March runs from 9 March 16:00 UTC to 10 March 16:00 UTC.
    midnight = datetime(2025, 3, 9, 16, 0, tzinfo=timezone.utc)
    p = participant(db_session, study, "P-001", site=1)
    assessment(db_session, p, "at local midnight", midnight, midnight + 3 * DAY)
    assessment(db_session, p, "last second of the day", midnight + DAY - timedelta(seconds=1), midnight + 3 * DAY)
    assessment(db_session, p, "next local midnight", midnight + DAY, midnight + 3 * DAY)
    assessment(db_session, p, "a second before midnight", midnight - timedelta(seconds=1), midnight + 3 * DAY, OPEN)
    assessment(db_session, p, "already missed", midnight + HOUR, midnight + 2 * HOUR, MISSED)
    assessment(db_session, p, "started", midnight + 2 * HOUR, midnight + DAY, IN_PROGRESS)
    assessment(db_session, p, "completed", midnight + HOUR, midnight + DAY, COMPLETED, submitted_at=NOW - HOUR)
    assessment(db_session, p, "cancelled", midnight + HOUR, midnight + DAY, CANCELLED)

    shanghai = board(db_session, tz="Asia/Shanghai")
    berlin = board(db_session, tz="Europe/Berlin")  # 9 March 23:00 UTC to 10 March 23:00 UTC

    assert labels(shanghai.due_today) == [
        "at local midnight", "already missed", "started", "last second of the day"]
    assert labels(berlin.due_today) == ["last second of the day", "next local midnight"]
    assert (shanghai.day_starts_at, shanghai.day_ends_at) == (midnight, midnight + DAY)


def test_a_local_day_with_a_daylight_saving_change_has_23_hours() -> None:
    start, end = local_day(datetime(2025, 3, 30, 12, 0, tzinfo=timezone.utc), ZoneInfo("Europe/Berlin"))
    assert start == datetime(2025, 3, 29, 23, 0, tzinfo=timezone.utc)
    assert end - start == timedelta(hours=23)


# --- missed ------------------------------------------------------------------------------------

def test_missed_recent_includes_closed_windows_whose_status_was_not_updated(
    db_session: Session, study: Study
) -> None:
    p = participant(db_session, study, "P-001")
    assessment(db_session, p, "missed 2 days ago", NOW - 4 * DAY, NOW - 2 * DAY, MISSED)
    assessment(db_session, p, "scheduled, closed an hour ago", NOW - DAY, NOW - HOUR, SCHEDULED)
    assessment(db_session, p, "started, closed now", NOW - DAY, NOW, IN_PROGRESS)
    assessment(db_session, p, "exactly 7 days", NOW - 8 * DAY, NOW - 7 * DAY, MISSED)
    assessment(db_session, p, "7 days and a minute", NOW - 8 * DAY, NOW - 7 * DAY - MIN, OPEN)
    assessment(db_session, p, "completed", NOW - 3 * DAY, NOW - DAY, COMPLETED, submitted_at=NOW - 2 * DAY)
    assessment(db_session, p, "cancelled", NOW - 3 * DAY, NOW - DAY, CANCELLED)
    assessment(db_session, p, "still open", NOW - DAY, NOW + MIN, OPEN)

    section = board(db_session).missed_recent

    # Most recently closed first.
    assert labels(section) == [
        "started, closed now", "scheduled, closed an hour ago", "missed 2 days ago", "exactly 7 days"]


# --- submitted today ---------------------------------------------------------------------------

def test_submitted_today_around_local_midnight_in_shanghai(db_session: Session, study: Study) -> None:
    midnight = datetime(2025, 3, 9, 16, 0, tzinfo=timezone.utc)  # 10 March 00:00 in Shanghai
    p = participant(db_session, study, "P-001", site=1)
    window = (midnight - 5 * DAY, midnight + 5 * DAY)
    assessment(db_session, p, "just before midnight", *window, COMPLETED, submitted_at=midnight - timedelta(seconds=1))
    assessment(db_session, p, "at midnight", *window, COMPLETED, submitted_at=midnight)
    assessment(db_session, p, "this evening", *window, COMPLETED, submitted_at=NOW - MIN)
    assessment(db_session, p, "a second before the next day", *window, COMPLETED,
               submitted_at=midnight + DAY - timedelta(seconds=1))
    assessment(db_session, p, "next day", *window, COMPLETED, submitted_at=midnight + DAY)
    assessment(db_session, p, "started today", *window, IN_PROGRESS)

    shanghai = board(db_session, tz="Asia/Shanghai").submitted_today
    berlin = board(db_session, tz="Europe/Berlin").submitted_today  # from 9 March 23:00 UTC

    # Latest submission first.
    assert labels(shanghai) == ["a second before the next day", "this evening", "at midnight"]
    assert labels(berlin) == ["next day", "a second before the next day", "this evening"]
    assert shanghai.rows[0].submitted_at == midnight + DAY - timedelta(seconds=1)


# --- participants and sites --------------------------------------------------------------------

def test_withdrawn_participants_leave_the_work_lists_but_not_what_they_submitted(
    db_session: Session, study: Study
) -> None:
    for code, status in (("P-ACTIVE", ParticipantStatus.ACTIVE), ("P-GONE", ParticipantStatus.WITHDRAWN),
                         ("P-DONE", ParticipantStatus.COMPLETED)):
        p = participant(db_session, study, code, status=status)
        assessment(db_session, p, f"{code} open", NOW - DAY, NOW + HOUR, OPEN)
        assessment(db_session, p, f"{code} due", NOW - HOUR, NOW + 3 * DAY)
        assessment(db_session, p, f"{code} missed", NOW - 3 * DAY, NOW - DAY, MISSED)
        done = assessment(db_session, p, f"{code} submitted", NOW - DAY, NOW + DAY, COMPLETED, submitted_at=NOW - HOUR)
        alert(db_session, done, "PA")

    dashboard = board(db_session)

    assert labels(dashboard.open_now) == ["P-ACTIVE open", "P-ACTIVE due"]
    assert labels(dashboard.closing_soon) == ["P-ACTIVE open"]
    assert labels(dashboard.due_today) == ["P-ACTIVE due"]
    assert labels(dashboard.missed_recent) == ["P-ACTIVE missed"]
    assert {row.subject_code for row in dashboard.submitted_today.rows} == {"P-ACTIVE", "P-GONE", "P-DONE"}
    assert {row.subject_code for row in dashboard.open_alerts.rows} == {"P-ACTIVE", "P-GONE", "P-DONE"}


def _one_of_everything(session: Session, study: Study, code: str, site: int) -> None:
    p = participant(session, study, code, site=site)
    assessment(session, p, "open", NOW - HOUR, NOW + HOUR, OPEN)
    assessment(session, p, "missed", NOW - 2 * DAY, NOW - DAY, MISSED)
    done = assessment(session, p, "submitted", NOW - DAY, NOW + DAY, COMPLETED, submitted_at=NOW - MIN)
    alert(session, done, "FA")


@pytest.mark.parametrize(
    ("site_ids", "expected"),
    [([0], {"A-001"}), ([1], {"B-001"}), ([0, 1], {"A-001", "B-001"}), (None, {"A-001", "B-001"}), ([], set())],
    ids=["site A", "site B", "both sites", "admin", "no site"],
)
def test_every_list_is_scoped_to_the_viewers_sites(
    db_session: Session, study: Study, site_ids: list[int] | None, expected: set[str]
) -> None:
    _one_of_everything(db_session, study, "A-001", 0)
    _one_of_everything(db_session, study, "B-001", 1)
    other = make_study(db_session, "DASH-2", template=None)
    _one_of_everything(db_session, other, "X-001", 0)
    scope = None if site_ids is None else [study.sites[index].id for index in site_ids]
    if site_ids is None:
        expected = expected | {"X-001"}  # admins see every study

    dashboard = board(db_session, site_ids=scope)

    for name in ("open_now", "closing_soon", "due_today", "missed_recent", "submitted_today", "open_alerts"):
        section: Section[Any] = getattr(dashboard, name)
        assert {row.subject_code for row in section.rows} == expected, name
        assert section.total == len(expected), name


# --- alerts ------------------------------------------------------------------------------------

def test_open_alerts_oldest_first_with_their_values(db_session: Session, study: Study) -> None:
    p = participant(db_session, study, "P-001", arm=1)
    first = assessment(db_session, p, "Day 7", NOW - 10 * DAY, NOW - 6 * DAY, COMPLETED, submitted_at=NOW - 7 * DAY)
    second = assessment(db_session, p, "Day 14", NOW - 3 * DAY, NOW + DAY, COMPLETED, submitted_at=NOW - HOUR)
    new = alert(db_session, second, "PA", created_at=NOW - HOUR)
    old = alert(db_session, first, "FA", created_at=NOW - 7 * DAY)
    alert(db_session, first, "DY", state=AlertState.ACKNOWLEDGED, created_at=NOW - 7 * DAY)

    section = board(db_session).open_alerts

    assert [row.alert_id for row in section.rows] == [old.id, new.id]
    row = section.rows[0]
    assert (row.scale_code, row.value, row.threshold, row.rule_code) == ("FA", 83.3, 50.0, "threshold")
    assert (row.subject_code, row.arm_name, row.timepoint_label, row.status) == (
        "P-001", "High dose", "Day 7", "completed")
    assert row.created_at == NOW - 7 * DAY and row.submitted_at == NOW - 7 * DAY
    assert row.assessment_id == first.id and row.participant_id == p.id


# --- limits, counts and SQL ---------------------------------------------------------------------

@pytest.fixture
def statements(connection: Connection) -> Iterator[list[tuple[str, Any]]]:
    """The SQL sent on the test's connection while the test runs (BEGIN/SAVEPOINT left out)."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(connection, "before_cursor_execute", record)
    yield seen
    event.remove(connection, "before_cursor_execute", record)


def _many_open(session: Session, study: Study, count: int) -> None:
    for number in range(count):
        p = participant(session, study, f"P-{number:03d}", site=number % 2)
        item = assessment(session, p, f"open {number:03d}", NOW - DAY, NOW + (number + 1) * MIN, OPEN)
        assessment(session, p, f"missed {number:03d}", NOW - 3 * DAY, NOW - DAY, MISSED)
        alert(session, item, "PA", created_at=NOW - (number + 1) * MIN)


def test_a_small_limit_shows_the_first_rows_and_counts_them_all(
    db_session: Session, study: Study, statements: list[tuple[str, Any]]
) -> None:
    _many_open(db_session, study, 5)
    statements.clear()

    dashboard = board(db_session, limit=2)

    assert labels(dashboard.open_now) == ["open 000", "open 001"]
    assert dashboard.open_now.total == 5 and dashboard.open_now.truncated
    assert labels(dashboard.closing_soon) == ["open 000", "open 001"] and dashboard.closing_soon.total == 5
    assert dashboard.missed_recent.total == 5 and len(dashboard.missed_recent.rows) == 2
    assert [row.subject_code for row in dashboard.open_alerts.rows] == ["P-004", "P-003"]
    assert dashboard.open_alerts.total == 5
    assert dashboard.due_today.total == 0 and dashboard.submitted_today.total == 0
    # Six lists, and a COUNT only for the four that do not fit.
    assert len(statements) == 6 + 4
    assert sum("count(*)" in sql for sql, _ in statements) == 4

    nurse = board(db_session, site_ids=[study.sites[1].id], limit=2)
    assert [row.subject_code for row in nurse.open_now.rows] == ["P-001", "P-003"]
    assert nurse.open_now.total == 2 and not nurse.open_now.truncated


def test_the_number_of_queries_does_not_grow_with_the_rows(
    db_session: Session, study: Study, statements: list[tuple[str, Any]]
) -> None:
    _many_open(db_session, study, 40)
    statements.clear()
    dashboard = board(db_session, limit=25)
    assert dashboard.open_now.total == 40 and len(dashboard.open_now.rows) == 25
    assert len(statements) == 6 + 4  # no lazy loads: sites and arms came with the rows


def test_bad_arguments_are_refused(db_session: Session) -> None:
    with pytest.raises(ValueError, match="aware"):
        build_dashboard(db_session, site_ids=None, now=NOW.replace(tzinfo=None), timezone="UTC")
    with pytest.raises(ValueError, match="limit"):
        build_dashboard(db_session, site_ids=None, now=NOW, timezone="UTC", limit=0)


EXPECTED_INDEX = {
    "open_now": "ix_assessments_status_opens",
    "due_today": "ix_assessments_status_opens",
    "closing_soon": "ix_assessments_status_closes",
    "missed_recent": "ix_assessments_status_closes",
    "submitted_today": "ix_assessments_submitted",
    "open_alerts": "ix_alerts_state_created",
}


#: sqlite_stat1 as ANALYZE writes it for benchmarks/dashboard.py's trial of 10,000 participants.
TRIAL_STATISTICS = [
    ("alerts", "ix_alerts_state_created", "664 332 1"),
    ("assessments", "ix_assessments_submitted", "211781 2"),
    ("assessments", "ix_assessments_status_opens", "211781 35297 5"),
    ("assessments", "ix_assessments_status_closes", "211781 35297 5 2"),
    ("assessments", "ix_assessments_participant_planned", "211781 22 1"),
    ("participants", "ix_participants_site_status", "10000 5000 1667"),
    ("participants", "ix_participants_arm_id", "10000 3334"),
]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # EXPLAIN QUERY PLAN is SQLite's
@pytest.mark.parametrize("analyzed", [False, True], ids=["no statistics", "trial-sized statistics"])
def test_sqlite_drives_each_list_by_its_index(
    db_session: Session, study: Study, connection: Connection, statements: list[tuple[str, Any]], analyzed: bool
) -> None:
    assert connection.dialect.name == "sqlite"  # benchmarks/dashboard.py --explain shows PostgreSQL's plans
    _many_open(db_session, study, 3)
    p = participant(db_session, study, "P-TODAY")
    assessment(db_session, p, "due", NOW - HOUR, NOW + DAY)
    assessment(db_session, p, "done", NOW - DAY, NOW + DAY, COMPLETED, submitted_at=NOW - HOUR)
    if analyzed:  # as if ANALYZE had run on a large trial (rolled back with the test)
        connection.exec_driver_sql("ANALYZE")
        connection.exec_driver_sql("DELETE FROM sqlite_stat1")
        connection.exec_driver_sql("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (?, ?, ?)", TRIAL_STATISTICS)
        connection.exec_driver_sql("ANALYZE sqlite_schema")  # the planner reloads the statistics
    statements.clear()

    board(db_session, site_ids=[study.sites[0].id], limit=1)

    def plan(sql: str, params: Any) -> list[str]:
        return [row[-1] for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)]

    lists = [(sql, params) for sql, params in statements if "count(*)" not in sql]
    assert len(lists) == len(EXPECTED_INDEX)
    for (sql, params), (name, index) in zip(lists, EXPECTED_INDEX.items()):
        assert any(f"USING INDEX {index} " in step for step in plan(sql, params)), (name, plan(sql, params))
    for sql, params in statements:  # the COUNT queries too: nothing big is ever read in full
        steps = plan(sql, params)
        assert not [step for step in steps if step.startswith("SCAN") and "sites" not in step and "arms" not in step], (
            sql, steps)
