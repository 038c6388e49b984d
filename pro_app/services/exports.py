"""Reading assessments for export, in constant memory, whatever the size of the study.

Assessments are streamed in id order by one query and handled in chunks; whatever else a
chunk needs (anchors; answers of unscored assessments or, for items-long, answer times) is
fetched with one query each, so memory is bounded by the chunk and the number of queries by
the number of chunks.

Speed (200,000 assessments hold 6 million answers and 3.2 million scores): a scored
assessment's answers and scores are read from its result row (``assessment_results``, written
with the scores), so the wide export reads one row per assessment instead of aggregating
nine million. Scores are read back exactly: they are stored as the ``repr`` of the float, and the
fallback for rows without a result reads them as exact text (17 significant digits on SQLite,
PostgreSQL's shortest exact form), never rounded.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, ColumnElement, Select, String, Text, case, cast, func, select, text
from sqlalchemy.orm import Session

from pro_app.db.models import (
    AnchorEvent,
    Answer,
    AssessmentResult,
    Arm,
    Assessment,
    Participant,
    ScaleScore,
    Site,
    Study,
    Timepoint,
)
from pro_app.domain.errors import N_, NotFound, ValidationError
from pro_app.domain.instruments import NotRegisteredError, default_registry
from pro_app.domain.records import AssessmentRecord, ExportFilters, PackedValues
from pro_app.domain.states import AssessmentStatus
from pro_app.services.audit import record_event

#: Assessments per chunk: few enough that a chunk's rows are still in the CPU caches when they
#: are written (the wide CSV of 200,000 assessments took about 10% less time than in chunks
#: of 2,000), enough that the queries per chunk (anchors, answers) stay few.
CHUNK = 500
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


def _base_query(study: Study, filters: ExportFilters, *, dialect: str = "") -> Select[Any]:
    # SQLite would start from the status index (or the participants of the study) and then
    # sort every selected row, result rows included, in a temporary B-tree before returning
    # the first. Comparing expressions (``status || ''``, ``study_id + 0``) keeps it off those
    # indexes, so it walks the assessments in id order and needs no sort at all.
    sqlite = dialect == "sqlite"
    status = Assessment.status.concat("") if sqlite else Assessment.status
    study_id = Participant.study_id + 0 if sqlite else Participant.study_id
    query = (
        select(*_COLUMNS)
        .join(Participant, Assessment.participant_id == Participant.id)
        .join(Site, Participant.site_id == Site.id)
        .outerjoin(Arm, Participant.arm_id == Arm.id)
        .outerjoin(Timepoint, Assessment.timepoint_id == Timepoint.id)
        .where(study_id == study.id)
    )
    if filters.include_incomplete:
        query = query.where(status != AssessmentStatus.SCHEDULED.value)
    else:
        query = query.where(status == AssessmentStatus.COMPLETED.value)
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

    One ordered query streams the assessments with their result rows (``yield_per``: a
    server-side cursor on PostgreSQL, incremental fetching on SQLite), so the database sorts
    once. A scored assessment's answers and scores come from its result row
    (:class:`AssessmentResult`, one line of values each); the answers of assessments without one
    (started, not submitted) are read per chunk from the answers table. With
    ``answer_times=True`` the answers and their ``answered_at`` are read from the answers table
    for every assessment (the items-long format writes the time of each answer).
    """
    study = check_filters(session, filters)
    if session.get_bind().dialect.name == "postgresql":
        # For this transaction: floats as exact text, and instants in UTC, which psycopg then
        # reads as ``timezone.utc`` itself; in the server's zone (even ``Etc/UTC``) psycopg and
        # UTCDateTime would each convert every instant (UTCDateTime's share alone was 17% of a
        # wide export's time). The app's connections start in UTC; set here too, the export
        # does not depend on it (a transaction-pooling PgBouncer hands out server connections
        # that never saw the setting).
        session.execute(text(
            "SELECT set_config('extra_float_digits', '3', true), set_config('TimeZone', 'UTC', true)"
        ))
    # Plain Core execution: the rows are tuples of values, with none of the ORM's per-row work.
    connection = session.connection()
    query = (
        _base_query(study, filters, dialect=session.get_bind().dialect.name)
        .add_columns(AssessmentResult.answers, AssessmentResult.scores, AssessmentResult.algorithm_version)
        .outerjoin(AssessmentResult, AssessmentResult.assessment_id == Assessment.id)
        .order_by(Assessment.id)
        .execution_options(yield_per=chunk)
    )
    decode = _ResultDecoder()
    for rows in connection.execute(query).partitions():
        answers: dict[int, Mapping[str, int]] = {}
        answered_at: dict[int, dict[str, datetime]] = {}
        scores: dict[int, Mapping[str, float | None]] = {}
        algorithms: dict[int, str] = {}
        unscored: list[int] = []
        for row in rows:
            decoded = None if row[-1] is None else decode(row[18], row[19], row[-3], row[-2])
            if decoded is None:
                unscored.append(row[0])
            else:
                if not answer_times:
                    answers[row[0]] = decoded[0]
                scores[row[0]] = decoded[1]
                algorithms[row[0]] = row[-1]
        if answer_times:
            _read_answers_with_times(connection, [row[0] for row in rows], answers, answered_at)
        elif unscored:
            _read_answers(connection, unscored, answers)
        if unscored:
            _read_scores(session, connection, unscored, scores, algorithms)
        anchors = _read_anchors(connection, sorted({row[1] for row in rows}))
        for (
            assessment_id, participant_id, subject_code, zone, site_name, arm_code, position,
            timepoint_code, timepoint_label, occurrence, planned_at, opens_at, closes_at,
            started_at, submitted_at, status, mode, locale, instrument_code, instrument_version,
            text_source, text_checksum, *_result,
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


#: The characters a result row's lines may hold: digits and commas (answers), and what
#: ``repr`` writes for a float (scores). Checked, with the number of fields, before a line is
#: used, so nothing copied into an export can need quoting or start a spreadsheet formula.
#: An ASCII line holds only these if deleting them from its bytes leaves nothing, which is
#: checked twice as fast as a regular expression's character class.
_ANSWER_CHARACTERS = b"0123456789,"
_SCORE_CHARACTERS = b"0123456789.,e-"


class _ResultDecoder:
    """Answers and scores from a result row's two lines of values (see :class:`AssessmentResult`),
    as :class:`PackedValues`: decoded only if a writer reads them as mappings.

    Values repeat endlessly across a study (answers are 1-7; a scale has a few dozen possible
    scores), so each distinct text is converted once: a dictionary lookup instead of a float
    parse per value. A row whose lines do not fit its instrument yields ``None``, and the
    caller reads that assessment's answers and scores from their tables instead.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self._layouts: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]] | None] = {}
        self._answers: dict[str, int] = {}
        self._scores: dict[str, float | None] = {"": None}
        self._limit = limit

    def __call__(
        self, instrument_code: str, version: str, answers_text: str, scores_text: str
    ) -> tuple[PackedValues[int], PackedValues[float | None]] | None:
        key = (instrument_code, version)
        if key not in self._layouts:
            try:
                instrument = default_registry().get(instrument_code, version)
            except NotRegisteredError:
                self._layouts[key] = None
            else:
                self._layouts[key] = (instrument.item_ids, instrument.score_codes)
        layout = self._layouts[key]
        if layout is None:
            return None
        item_ids, score_codes = layout
        if (
            answers_text.count(",") != len(item_ids) - 1
            or scores_text.count(",") != len(score_codes) - 1
            or not answers_text.isascii()
            or not scores_text.isascii()
            or answers_text.encode().translate(None, _ANSWER_CHARACTERS)
            or scores_text.encode().translate(None, _SCORE_CHARACTERS)
        ):
            return None
        return PackedValues(item_ids, answers_text, self._answer_values), PackedValues(
            score_codes, scores_text, self._score_values
        )

    def _answer_values(self, order: tuple[str, ...], text: str) -> dict[str, int]:
        known = self._answers
        values = text.split(",")
        for value in values:
            if value not in known and value:
                known[value] = int(value)
        return {item: known[value] for item, value in zip(order, values) if value}

    def _score_values(self, order: tuple[str, ...], text: str) -> dict[str, float | None]:
        known = self._scores
        if len(known) > self._limit:
            known.clear()
            known[""] = None
        texts = text.split(",")
        for value in texts:
            if value not in known:
                known[value] = float(value)
        return {code: known[value] for code, value in zip(order, texts)}


def _read_answers_with_times(
    connection: Connection, ids: list[int], answers: dict[int, Mapping[str, int]],
    answered_at: dict[int, dict[str, datetime]],
) -> None:
    found: dict[int, dict[str, int]] = {}
    for assessment_id, item_id, value, at in connection.execute(
        select(Answer.assessment_id, Answer.item_id, Answer.value, Answer.answered_at).where(
            Answer.assessment_id.in_(ids)
        )
    ):
        if assessment_id not in found:
            found[assessment_id] = {}
            answered_at[assessment_id] = {}
        found[assessment_id][item_id] = value
        answered_at[assessment_id][item_id] = at
    answers.update(found)


def _read_answers(connection: Connection, ids: list[int], answers: dict[int, Mapping[str, int]]) -> None:
    """Answers of assessments without a result row, one aggregated row per assessment (both
    lists are aggregated over the same rows in the same order, so they pair up)."""
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


def _read_scores(
    session: Session, connection: Connection, ids: list[int],
    scores: dict[int, Mapping[str, float | None]], algorithms: dict[int, str],
) -> None:
    """Scores of assessments without a result row (none, unless rows were written before
    result rows existed and not migrated), read as exact text."""
    score_text = _exact_score_text(session)
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
        parsed = [float(value) if value else None for value in values.split(",")]
        scores[assessment_id] = dict(zip(_split(codes), parsed))
        algorithms[assessment_id] = algorithm


def _read_anchors(connection: Connection, participant_ids: list[int]) -> dict[int, dict[str, datetime]]:
    anchors: dict[int, dict[str, datetime]] = {}
    for participant_id, kind, at in connection.execute(
        select(AnchorEvent.participant_id, AnchorEvent.kind, AnchorEvent.occurred_at).where(
            AnchorEvent.participant_id.in_(participant_ids)
        )
    ):
        anchors.setdefault(participant_id, {})[kind] = at
    return anchors


def audit_export(session: Session, filters: ExportFilters, *, export_format: str, actor: str) -> None:
    """Who exported what, with which filters (recorded before the file is produced)."""
    record_event(
        session, actor=actor, action="export", entity_type="study", entity_id=filters.study,
        after={"format": export_format, "filters": filters.describe()},
    )
