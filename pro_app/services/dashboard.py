"""The nurse's home page: what is open, due, closing, missed, submitted and alarming.

Clinical rules the lists follow:

- An assessment is answerable while ``window_opens_at <= now < window_closes_at`` (the rule
  ``questionnaire.accepts_answers`` applies). The window times decide, never the stored
  status alone: nothing guarantees that a ``scheduled`` assessment whose window has opened,
  or an ``open`` one whose window has closed, has been moved on yet.
- The work lists (open now, due today, closing soon, missed) show ACTIVE participants only:
  nobody follows up a withdrawn participant's questionnaires.
- What happened stays visible whoever it happened to: submissions today and open alerts are
  listed whatever the participant's status is now, so a withdrawal never hides an alarming
  result that no one has reviewed.
- "Today" is the viewer's (site's) calendar day, local midnight to local midnight.

Each list is one query selecting only the columns shown (assessment, participant, site and
arm joined; no ORM objects, so no lazy loads), bounded by ``limit``, plus one COUNT query
only when the list is longer than the limit. Each assessment list is driven by one index
over a status and a time range (``ix_assessments_status_opens``, ``ix_assessments_status_closes``
or ``ix_assessments_submitted``), the alerts by ``ix_alerts_state_created``; participants,
sites and arms are then found by primary key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone as dt_timezone
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Row, Select, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import QueryableAttribute, Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from pro_app.db.models import Alert, Arm, Assessment, Participant, Reminder, Site
from pro_app.domain.states import AlertState, AssessmentStatus, ParticipantStatus, ReminderStatus

#: Statuses of an assessment nobody has finished or called off yet.
PENDING = (AssessmentStatus.SCHEDULED.value, AssessmentStatus.OPEN.value, AssessmentStatus.IN_PROGRESS.value)
#: Closing within this long counts as "closing soon" (the overdue list).
CLOSING_SOON = timedelta(hours=24)
#: Missed assessments are followed up for this long after their window closed.
MISSED_LOOKBACK = timedelta(days=7)

RowT = TypeVar("RowT")
_T = TypeVar("_T")


@dataclass(frozen=True)
class DashboardRow:
    """One assessment as the dashboard lists it (all instants aware, in UTC)."""

    assessment_id: int
    participant_id: int
    subject_code: str
    site_name: str
    arm_name: str | None
    timepoint_label: str
    window_opens_at: datetime
    window_closes_at: datetime
    status: str
    submitted_at: datetime | None


@dataclass(frozen=True)
class AlertRow:
    """One open alert with the assessment and participant it belongs to."""

    alert_id: int
    assessment_id: int
    participant_id: int
    subject_code: str
    site_name: str
    arm_name: str | None
    timepoint_label: str
    window_opens_at: datetime
    window_closes_at: datetime
    status: str
    submitted_at: datetime | None
    scale_code: str
    value: float
    threshold: float | None
    rule_code: str
    created_at: datetime


@dataclass(frozen=True)
class Section(Generic[RowT]):
    """The first ``limit`` rows of a list, and how many rows the whole list has."""

    rows: tuple[RowT, ...]
    total: int

    @property
    def truncated(self) -> bool:
        """True when only part of the list is shown ("showing 100 of 1,234")."""
        return self.total > len(self.rows)


@dataclass(frozen=True)
class Dashboard:
    open_now: Section[DashboardRow]
    due_today: Section[DashboardRow]
    closing_soon: Section[DashboardRow]
    missed_recent: Section[DashboardRow]
    submitted_today: Section[DashboardRow]
    open_alerts: Section[AlertRow]
    #: The local day the "today" lists cover, as UTC instants: [day_starts_at, day_ends_at).
    day_starts_at: datetime
    day_ends_at: datetime


def build_dashboard(
    session: Session,
    *,
    site_ids: Sequence[int] | None,
    now: datetime,
    timezone: str,
    limit: int = 100,
) -> Dashboard:
    """The dashboard lists for the given sites (``None``: every site, for admins).

    ``now`` must be time-zone aware; ``timezone`` is the viewer's zone name and sets the
    bounds of "today". Each list holds at most ``limit`` rows; its ``total`` counts them all.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be time-zone aware")
    if limit < 1:
        raise ValueError("limit must be at least 1")
    now = now.astimezone(dt_timezone.utc)
    day_start, day_end = local_day(now, ZoneInfo(timezone))
    lists = _Lists(session, site_ids, limit)
    # Participants are looked up by primary key from each list's rows, never scanned first.
    active = _unindexed(Participant.status) == ParticipantStatus.ACTIVE.value
    opens, closes = Assessment.window_opens_at, Assessment.window_closes_at

    return Dashboard(
        # Driven by ix_assessments_status_opens: the pending rows whose window has opened are
        # the open ones plus closed ones not yet marked missed, whereas the pending rows that
        # close after now are every future assessment of the trial.
        open_now=lists.assessments(
            active,
            Assessment.status.in_(PENDING),
            opens <= now,
            _unindexed(closes) > now,
            order_by=(closes, Participant.subject_code, Assessment.id),
        ),
        due_today=lists.assessments(
            active,
            Assessment.status.in_(PENDING + (AssessmentStatus.MISSED.value,)),
            opens >= day_start,
            opens < day_end,
            order_by=(opens, Participant.subject_code, Assessment.id),
        ),
        closing_soon=lists.assessments(
            active,
            Assessment.status.in_(PENDING),
            closes > now,
            closes <= now + CLOSING_SOON,
            _unindexed(opens) <= now,
            order_by=(closes, Participant.subject_code, Assessment.id),
        ),
        # A pending status on a closed window is a missed assessment whose status has not
        # been updated yet; both kinds are listed, the most recently closed first.
        missed_recent=lists.assessments(
            active,
            Assessment.status.in_(PENDING + (AssessmentStatus.MISSED.value,)),
            closes <= now,
            closes >= now - MISSED_LOOKBACK,
            order_by=(closes.desc(), Participant.subject_code, Assessment.id),
        ),
        submitted_today=lists.assessments(
            _unindexed(Assessment.status) == AssessmentStatus.COMPLETED.value,
            Assessment.submitted_at >= day_start,
            Assessment.submitted_at < day_end,
            order_by=(Assessment.submitted_at.desc(), Assessment.id),
        ),
        # A queue of work: the longest-waiting alert first, so none is pushed past the limit.
        open_alerts=lists.alerts(
            Alert.state == AlertState.OPEN.value,
            order_by=(Alert.created_at, Alert.id),
        ),
        day_starts_at=day_start,
        day_ends_at=day_end,
    )


def local_day(now: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC instants of the local midnight that began ``now``'s day and of the next one.

    Counted on the wall clock, so a day with a daylight-saving change lasts 23 or 25 hours.
    """
    today = now.astimezone(zone).date()
    start = datetime.combine(today, time(0), zone)
    end = datetime.combine(today + timedelta(days=1), time(0), zone)
    return start.astimezone(dt_timezone.utc), end.astimezone(dt_timezone.utc)


class _unindexed(FunctionElement[_T]):
    """A column whose index the query must not be driven by; the same column everywhere but
    SQLite, where it is written with SQLite's documented unary ``+``.

    SQLite plans by rules of thumb until someone runs ANALYZE (the application never does):
    it prefers an equality on the first column of any index to a range, so it would read
    every completed assessment through ``ix_assessments_status_opens`` to find today's few
    submissions; and after ANALYZE it would walk all of a large site's participants. Marking
    the terms that must not choose the access path leaves each list exactly one index to use,
    with and without statistics. PostgreSQL always has statistics (autovacuum) and decides.
    """

    name = "unindexed"
    inherit_cache = True

    def __init__(self, column: QueryableAttribute[_T]) -> None:
        expression = column.expression
        super().__init__(expression)
        self.type = expression.type  # values compared with it are bound as the column's type


@compiles(_unindexed)
def _render_plain(element: _unindexed[Any], compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(_unindexed, "sqlite")
def _render_unary_plus(element: _unindexed[Any], compiler: SQLCompiler, **kw: Any) -> str:
    return "+" + compiler.process(element.clauses, **kw)


_ASSESSMENT_COLUMNS = (
    Assessment.id,
    Participant.id,
    Participant.subject_code,
    Site.name,
    Arm.name,
    Assessment.timepoint_label,
    Assessment.window_opens_at,
    Assessment.window_closes_at,
    Assessment.status,
    Assessment.submitted_at,
)

_ALERT_COLUMNS = (
    Alert.id,
    *_ASSESSMENT_COLUMNS,
    Alert.scale_code,
    Alert.value,
    Alert.threshold,
    Alert.rule_code,
    Alert.created_at,
)


def _dashboard_row(row: Row[Any]) -> DashboardRow:
    return DashboardRow(*row)


def _alert_row(row: Row[Any]) -> AlertRow:
    return AlertRow(*row)


class _Lists:
    """Runs the list queries of one dashboard: site scoping, limit and counting in one place."""

    def __init__(self, session: Session, site_ids: Sequence[int] | None, limit: int) -> None:
        self.session = session
        self.site_ids = None if site_ids is None else sorted(set(site_ids))
        self.limit = limit

    def assessments(self, *criteria: ColumnElement[bool], order_by: Sequence[Any]) -> Section[DashboardRow]:
        rows = (
            select(*_ASSESSMENT_COLUMNS)
            .join(Participant, Participant.id == Assessment.participant_id)
            .join(Site, Site.id == Participant.site_id)
            .outerjoin(Arm, Arm.id == Participant.arm_id)
        )
        count = (
            select(func.count())
            .select_from(Assessment)
            .join(Participant, Participant.id == Assessment.participant_id)
        )
        return self._section(rows, count, criteria, order_by, _dashboard_row)

    def alerts(self, *criteria: ColumnElement[bool], order_by: Sequence[Any]) -> Section[AlertRow]:
        rows = (
            select(*_ALERT_COLUMNS)
            .join(Assessment, Assessment.id == Alert.assessment_id)
            .join(Participant, Participant.id == Assessment.participant_id)
            .join(Site, Site.id == Participant.site_id)
            .outerjoin(Arm, Arm.id == Participant.arm_id)
        )
        count = (
            select(func.count())
            .select_from(Alert)
            .join(Assessment, Assessment.id == Alert.assessment_id)
            .join(Participant, Participant.id == Assessment.participant_id)
        )
        return self._section(rows, count, criteria, order_by, _alert_row)

    def _section(
        self,
        rows_query: Select[Any],
        count_query: Select[Any],
        criteria: Sequence[ColumnElement[bool]],
        order_by: Sequence[Any],
        make: Callable[[Row[Any]], RowT],
    ) -> Section[RowT]:
        if self.site_ids is not None and not self.site_ids:
            return Section(rows=(), total=0)  # staff without a site see nothing, at no cost
        where = list(criteria)
        if self.site_ids is not None:
            where.append(_unindexed(Participant.site_id).in_(self.site_ids))
        found = tuple(
            make(row)
            for row in self.session.execute(rows_query.where(*where).order_by(*order_by).limit(self.limit))
        )
        if len(found) < self.limit:
            return Section(rows=found, total=len(found))  # the whole list fits: nothing to count
        total = self.session.scalar(count_query.where(*where))
        return Section(rows=found, total=int(total or 0))



@dataclass(frozen=True)
class FailedReminderRow:
    reminder_id: int
    participant_id: int
    subject_code: str
    timepoint_label: str
    channel: str
    attempts: int
    last_error: str | None
    due_at: datetime


def failed_reminders(
    session: Session, *, site_ids: Sequence[int] | None, now: datetime, days: int = 14, limit: int = 50
) -> list[FailedReminderRow]:
    """Reminders that could not be delivered recently, so the team can reach the patient."""
    if site_ids is not None and not site_ids:
        return []
    query = (
        select(
            Reminder.id, Participant.id, Participant.subject_code, Assessment.timepoint_label, Reminder.channel,
            Reminder.attempts, Reminder.last_error, Reminder.due_at,
        )
        .join(Assessment, Reminder.assessment_id == Assessment.id)
        .join(Participant, Assessment.participant_id == Participant.id)
        .where(Reminder.status == ReminderStatus.FAILED.value, Reminder.due_at >= now - timedelta(days=days))
        .order_by(Reminder.due_at.desc())
        .limit(limit)
    )
    if site_ids is not None:
        query = query.where(Participant.site_id.in_(site_ids))
    return [FailedReminderRow(*row) for row in session.execute(query)]
