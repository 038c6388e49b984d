"""Compliance: how many of the expected questionnaires were completed, per study, site, arm
and timepoint, and how long patients took from the window opening to submission.

"Expected" counts every assessment whose window has opened, except cancelled ones (a
withdrawn participant owes nothing more).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from pro_app.db.models import Arm, Assessment, Participant, Site, Study, Timepoint
from pro_app.domain.states import AssessmentStatus


@dataclass
class ComplianceRow:
    study: str
    site: str
    arm: str
    timepoint: str
    expected: int = 0
    completed: int = 0
    missed: int = 0
    _hours: list[float] = field(default_factory=list, repr=False)
    _order: tuple[int, int] = (0, 0)

    @property
    def completion_rate(self) -> float | None:
        return self.completed / self.expected if self.expected else None

    @property
    def median_hours_to_completion(self) -> float | None:
        return statistics.median(self._hours) if self._hours else None


COLUMNS = ("study", "site", "arm", "timepoint", "expected", "completed", "missed", "completion_rate",
           "median_hours_to_completion")


def compliance_report(
    session: Session, study: Study, *, site_ids: Sequence[int] | None, now: datetime
) -> list[ComplianceRow]:
    query = (
        select(
            Site.name, Arm.name, Assessment.timepoint_code, Assessment.occurrence, Assessment.timepoint_label,
            Assessment.status, Assessment.window_opens_at, Assessment.submitted_at, Timepoint.position,
        )
        .join(Participant, Assessment.participant_id == Participant.id)
        .join(Site, Participant.site_id == Site.id)
        .outerjoin(Arm, Participant.arm_id == Arm.id)
        .outerjoin(Timepoint, Assessment.timepoint_id == Timepoint.id)
        .where(
            Participant.study_id == study.id,
            Assessment.window_opens_at <= now,
            Assessment.status != AssessmentStatus.CANCELLED.value,
        )
    )
    if site_ids is not None:
        query = query.where(Participant.site_id.in_(site_ids))
    rows: dict[tuple[str, str, str, int], ComplianceRow] = {}
    for site, arm, code, occurrence, label, status, opens, submitted, position in session.execute(
        query.execution_options(yield_per=2000)
    ):
        key = (site, arm or "", code, occurrence)
        row = rows.get(key)
        if row is None:
            row = rows[key] = ComplianceRow(study.code, site, arm or "", label, _order=(position or 0, occurrence))
        row.expected += 1
        if status == AssessmentStatus.COMPLETED.value:
            row.completed += 1
            if submitted is not None:
                row._hours.append((submitted - opens).total_seconds() / 3600)
        elif status == AssessmentStatus.MISSED.value:
            row.missed += 1
    return sorted(rows.values(), key=lambda r: (r.site, r.arm, r._order))
