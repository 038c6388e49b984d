"""Reading assessments for export, in constant memory, whatever the size of the study.

Assessments are streamed in id order by one query and handled in chunks; the answers, scores
and anchors of each chunk are fetched with one query each, so memory is bounded by the chunk
and the number of queries by the number of chunks.

Speed (200,000 assessments hold 6 million answers and 3.2 million scores): turning a database
row into Python objects costs about a microsecond, so scores, and answers when their times
are not needed, come one row per assessment, aggregated into comma-separated lists in SQL and
split in Python. Scores travel as text that reads back as exactly the stored float (17
significant digits on SQLite, PostgreSQL's shortest exact form), never rounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, String, Text, case, cast, func, select, text
from sqlalchemy.orm import Session

from pro_app.db.models import (
    AnchorEvent,
    Answer,
    Arm,
    Assessment,
    Participant,
    ScaleScore,
    Site,
    Study,
    Timepoint,
)
from pro_app.domain.errors import N_, NotFound, ValidationError
from pro_app.domain.records import AssessmentRecord, ExportFilters
from pro_app.domain.states import AssessmentStatus
from pro_app.services.audit import record_event

CHUNK = 2000
#: Longest date range an export may ask for (a typing error like year 20260 is refused).
MAX_RANGE_DAYS = 366 * 30


def check_filters(session: Session, filters: ExportFilters) -> Study:
    study = session.scalars(select(Study).where(Study.code == filters.study)).one_or_none()
    if study is None:
        raise NotFound(N_("Unknown study %(code)s."), field="study", code=filters.study)
    if filters.planned_from and filters.planned_to:
        if filters.planned_to < filters.planned_from:
            raise ValidationError(N_("The end of the date range is before its start."), field="to")
        if (filters.planned_to - filters.planned_from).days > MAX_RANGE_DAYS:
            raise ValidationError(N_("The date range is too long."), field="to")
    if filters.arm_codes is not None:
        known = set(session.scalars(select(Arm.code).where(Arm.study_id == study.id)))
        unknown = sorted(set(filters.arm_codes) - known)
        if unknown:
            raise ValidationError(N_("Unknown dose group %(code)s."), field="arm", code=unknown[0])
    return study


#: The columns an export row needs, selected as plain values: no ORM entities to build,
#: track and expunge, which cost several times more than the values themselves.
_COLUMNS = (
    Assessment.id,
    Assessment.participant_id,
    Participant.subject_code,
    Participant.timezone,
    Site.name,
    Arm.code,
    Timepoint.position,
    Assessment.timepoint_code,
    Assessment.timepoint_label,
    Assessment.occurrence,
    Assessment.planned_at,
    Assessment.window_opens_at,
    Assessment.window_closes_at,
    Assessment.started_at,
    Assessment.submitted_at,
    Assessment.status,
    Assessment.mode,
    Assessment.locale,
    Assessment.instrument_code,
    Assessment.instrument_version,
    Assessment.text_source,
    Assessment.text_checksum,
)


def _base_query(study: Study, filters: ExportFilters) -> Select[Any]:
    query = (
        select(*_COLUMNS)
        .join(Participant, Assessment.participant_id == Participant.id)
        .join(Site, Participant.site_id == Site.id)
        .outerjoin(Arm, Participant.arm_id == Arm.id)
        .outerjoin(Timepoint, Assessment.timepoint_id == Timepoint.id)
        .where(Participant.study_id == study.id)
    )
    if filters.include_incomplete:
        query = query.where(Assessment.status != AssessmentStatus.SCHEDULED.value)
    else:
        query = query.where(Assessment.status == AssessmentStatus.COMPLETED.value)
    if filters.site_ids is not None:
        query = query.where(Participant.site_id.in_(filters.site_ids))
    if filters.arm_codes is not None:
        query = query.where(Arm.code.in_(filters.arm_codes))
    if filters.timepoint_codes is not None:
        query = query.where(Assessment.timepoint_code.in_(filters.timepoint_codes))
    if filters.planned_from is not None:
        query = query.where(Assessment.planned_at >= filters.planned_from)
    if filters.planned_to is not None:
        query = query.where(Assessment.planned_at < filters.planned_to)
    return query


def _exact_score_text(session: Session) -> ColumnElement[str]:
    """A score as text that reads back as exactly the stored float ('' when not scorable)."""
    if session.get_bind().dialect.name == "sqlite":
        # CAST keeps 15 significant digits; printf's "!" flag allows the 17 any double needs.
        exact: ColumnElement[str] = func.printf("%!.17g", ScaleScore.value)
    else:
        exact = cast(ScaleScore.value, Text)  # shortest exact form (extra_float_digits >= 1, set below)
    return case((ScaleScore.value.is_(None), ""), else_=exact)


def _split(joined: str | None) -> list[str]:
    return joined.split(",") if joined else []


def iter_records(
    session: Session, filters: ExportFilters, *, chunk: int = CHUNK, answer_times: bool = True
) -> Iterator[AssessmentRecord]:
    """Every assessment the filters select, in assessment id order, with answers and scores.

    One ordered query streams the assessments (``yield_per``: a server-side cursor on
    PostgreSQL, incremental fetching on SQLite), so the database sorts once -- paging with
    ``id > last ... LIMIT`` made SQLite re-scan and re-sort every selected row per page, as
    its planner prefers the status index. With ``answer_times=False`` the records carry no
    ``answered_at`` (formats that do not write it skip reading 30 instants per assessment).
    """
    study = check_filters(session, filters)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL extra_float_digits = 3"))  # floats as exact text
    score_text = _exact_score_text(session)
    # Plain Core execution: the rows are tuples of values, with none of the ORM's per-row work.
    connection = session.connection()
    result = connection.execute(
        _base_query(study, filters).order_by(Assessment.id).execution_options(yield_per=chunk)
    )
    for rows in result.partitions():
        ids = [row[0] for row in rows]
        participant_ids = sorted({row[1] for row in rows})
        answers: dict[int, dict[str, int]] = {}
        answered_at: dict[int, dict[str, datetime]] = {}
        if answer_times:
            for assessment_id, item_id, value, at in connection.execute(
                select(Answer.assessment_id, Answer.item_id, Answer.value, Answer.answered_at).where(
                    Answer.assessment_id.in_(ids)
                )
            ):
                if assessment_id not in answers:
                    answers[assessment_id] = {}
                    answered_at[assessment_id] = {}
                answers[assessment_id][item_id] = value
                answered_at[assessment_id][item_id] = at
        else:
            # Both lists are aggregated over the same rows in the same order, so they pair up.
            for assessment_id, item_ids, values in connection.execute(
                select(
                    Answer.assessment_id,
                    func.aggregate_strings(Answer.item_id, ","),
                    func.aggregate_strings(cast(Answer.value, String), ","),
                )
                .where(Answer.assessment_id.in_(ids))
                .group_by(Answer.assessment_id)
            ):
                answers[assessment_id] = dict(zip(_split(item_ids), map(int, _split(values))))
        scores: dict[int, dict[str, float | None]] = {}
        algorithms: dict[int, str] = {}
        for assessment_id, codes, values, algorithm in connection.execute(
            select(
                ScaleScore.assessment_id,
                func.aggregate_strings(ScaleScore.scale_code, ","),
                func.aggregate_strings(score_text, ","),
                func.max(ScaleScore.algorithm_version),
            )
            .where(ScaleScore.assessment_id.in_(ids))
            .group_by(ScaleScore.assessment_id)
        ):
            texts = values.split(",")
            try:
                parsed: list[float | None] = list(map(float, texts))
            except ValueError:  # an empty text is a score the missing-data rule left out
                parsed = [float(text) if text else None for text in texts]
            scores[assessment_id] = dict(zip(_split(codes), parsed))
            algorithms[assessment_id] = algorithm
        anchors: dict[int, dict[str, datetime]] = {}
        for participant_id, kind, at in connection.execute(
            select(AnchorEvent.participant_id, AnchorEvent.kind, AnchorEvent.occurred_at).where(
                AnchorEvent.participant_id.in_(participant_ids)
            )
        ):
            anchors.setdefault(participant_id, {})[kind] = at
        for (
            assessment_id, participant_id, subject_code, zone, site_name, arm_code, position,
            timepoint_code, timepoint_label, occurrence, planned_at, opens_at, closes_at,
            started_at, submitted_at, status, mode, locale, instrument_code, instrument_version,
            text_source, text_checksum,
        ) in rows:
            yield AssessmentRecord(
                assessment_id=assessment_id,
                study=study.code,
                site=site_name,
                arm=arm_code,
                subject_code=subject_code,
                participant_id=participant_id,
                timezone=zone,
                timepoint_code=timepoint_code,
                timepoint_label=timepoint_label,
                occurrence=occurrence,
                visit_number=((position or 0) + 1) * 100 + occurrence,
                planned_at=planned_at,
                window_opens_at=opens_at,
                window_closes_at=closes_at,
                started_at=started_at,
                submitted_at=submitted_at,
                status=status,
                mode=mode,
                locale=locale,
                instrument_code=instrument_code,
                instrument_version=instrument_version,
                text_source=text_source,
                text_checksum=text_checksum,
                anchors=anchors.get(participant_id, {}),
                answers=answers.get(assessment_id, {}),
                answered_at=answered_at.get(assessment_id, {}),
                scores=scores.get(assessment_id, {}),
                scoring_algorithm=algorithms.get(assessment_id),
            )


def audit_export(session: Session, filters: ExportFilters, *, export_format: str, actor: str) -> None:
    """Who exported what, with which filters (recorded before the file is produced)."""
    record_event(
        session, actor=actor, action="export", entity_type="study", entity_id=filters.study,
        after={"format": export_format, "filters": filters.describe()},
    )
