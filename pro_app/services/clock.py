"""Moving assessments along with the clock: scheduled -> open when the window opens, and
-> missed when it closes unanswered.

A started questionnaire (in progress) is given the grace period after its window closes
before it counts as missed, and its answers are always kept. Rows are claimed with
``SELECT ... FOR UPDATE SKIP LOCKED`` so several ``pro-app tick`` runs on different machines
never fight over the same assessment; running it again changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from pro_app.db.models import Assessment
from pro_app.domain.states import AssessmentStatus
from pro_app.services.audit import record_event

BATCH = 500


@dataclass(frozen=True)
class ClockReport:
    opened: int
    missed: int


def _claim(session: Session, condition: object) -> list[Assessment]:
    return list(
        session.scalars(
            select(Assessment)
            .where(condition)  # type: ignore[arg-type]
            .order_by(Assessment.id)
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        )
    )


def advance_states(session: Session, *, now: datetime, grace: timedelta) -> ClockReport:
    """Open and close windows up to ``now``; commits after each batch."""
    opened = missed = 0
    scheduled, open_, in_progress = (
        AssessmentStatus.SCHEDULED.value,
        AssessmentStatus.OPEN.value,
        AssessmentStatus.IN_PROGRESS.value,
    )
    while batch := _claim(
        session,
        or_(
            and_(Assessment.status.in_((scheduled, open_)), Assessment.window_closes_at <= now),
            and_(Assessment.status == in_progress, Assessment.window_closes_at <= now - grace),
        ),
    ):
        for assessment in batch:
            assessment.status = AssessmentStatus.MISSED.value
        record_event(
            session, actor="system", action="assessment.missed", entity_type="assessment", entity_id=None,
            after={"assessments": [a.id for a in batch]},
        )
        missed += len(batch)
        session.commit()
    while batch := _claim(
        session,
        and_(Assessment.status == scheduled, Assessment.window_opens_at <= now, Assessment.window_closes_at > now),
    ):
        for assessment in batch:
            assessment.status = open_
        record_event(
            session, actor="system", action="assessment.open", entity_type="assessment", entity_id=None,
            after={"assessments": [a.id for a in batch]},
        )
        opened += len(batch)
        session.commit()
    return ClockReport(opened=opened, missed=missed)
