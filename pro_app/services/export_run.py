"""Running an export: from what an analyst asked for to a file, audited before it is written.

The same use case serves the CLI and the web: :func:`build_filters` turns codes and local
dates into :class:`ExportFilters` (refusing unknown codes, so a typo never yields a silently
empty file), :func:`export_context` gathers what the writers need besides the records, and
:func:`run_export` records who exported what and streams the records through the writer.
The caller owns the transaction: it commits (keeping the audit event) once the file is safe.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta, timezone
from importlib import metadata
from typing import BinaryIO
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from pro_app.db.models import Assessment, InstrumentTextRecord, Participant, ScheduleTemplate, Site, Study, Timepoint
from pro_app.domain.errors import N_, NotFound, ValidationError
from pro_app.domain.instruments import InstrumentText, NotRegisteredError, default_registry
from pro_app.domain.records import ExportFilters
from pro_app.exports import ExportContext
from pro_app.exports.formats import FORMATS, WITHOUT_ANSWER_TIMES
from pro_app.services.exports import audit_export, check_filters, iter_records
from pro_app.services.texts import text_for


def _study(session: Session, code: str) -> Study:
    study = session.scalars(select(Study).where(Study.code == code)).one_or_none()
    if study is None:
        raise NotFound(N_("Unknown study %(code)s."), field="study", code=code)
    return study


def _clean(codes: Iterable[str] | None) -> tuple[str, ...] | None:
    """``None`` or no codes at all means "no restriction"; duplicates and blanks are dropped."""
    if codes is None:
        return None
    cleaned = tuple(dict.fromkeys(code.strip() for code in codes if code.strip()))
    return cleaned or None


def build_filters(
    session: Session,
    *,
    study: str,
    site_codes: Iterable[str] | None = None,
    arm_codes: Iterable[str] | None = None,
    timepoint_codes: Iterable[str] | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    include_incomplete: bool = False,
) -> ExportFilters:
    """Filters from what people type: codes, and planned dates as calendar days (inclusive).

    Dates are days in the study's time zone: ``date_to`` includes the whole of that day. Unknown
    site, dose group or timepoint codes are refused rather than matching nothing.
    """
    found = _study(session, study)
    zone = ZoneInfo(found.timezone)
    site_ids: tuple[int, ...] | None = None
    sites = _clean(site_codes)
    if sites is not None:
        known = dict(session.execute(select(Site.code, Site.id).where(Site.study_id == found.id)).tuples().all())
        unknown = [code for code in sites if code not in known]
        if unknown:
            raise ValidationError(N_("Unknown site %(code)s."), field="site", code=unknown[0])
        site_ids = tuple(known[code] for code in sites)
    timepoints = _clean(timepoint_codes)
    if timepoints is not None:
        _check_timepoints(session, found, timepoints)
    planned_from = _start_of(date_from, zone, field="from")
    planned_to = _start_of(date_to, zone, field="to", next_day=True)
    if date_from is not None and date_to is not None and date_to < date_from:
        raise ValidationError(N_("The end of the date range is before its start."), field="to")
    filters = ExportFilters(
        study=found.code,
        site_ids=site_ids,
        arm_codes=_clean(arm_codes),
        timepoint_codes=timepoints,
        planned_from=planned_from,
        planned_to=planned_to,
        include_incomplete=include_incomplete,
    )
    check_filters(session, filters)  # dose groups and the length of the date range
    return filters


def _start_of(day: date | None, zone: ZoneInfo, *, field: str, next_day: bool = False) -> datetime | None:
    """Local midnight of ``day`` (or of the day after) as a UTC instant."""
    if day is None:
        return None
    try:
        if next_day:
            day = day + timedelta(days=1)
        return datetime.combine(day, time(0), tzinfo=zone).astimezone(timezone.utc)
    except OverflowError:
        raise ValidationError(N_("The date range is too long."), field=field) from None


def _check_timepoints(session: Session, study: Study, codes: Sequence[str]) -> None:
    """Every code must be a timepoint of the study's schedules or of an existing assessment."""
    known = set(
        session.scalars(
            select(Timepoint.code)
            .join(ScheduleTemplate, Timepoint.template_id == ScheduleTemplate.id)
            .where(ScheduleTemplate.study_id == study.id, Timepoint.code.in_(codes))
        )
    )
    missing = [code for code in codes if code not in known]
    if missing:
        known |= set(
            session.scalars(
                select(Assessment.timepoint_code)
                .join(Participant, Assessment.participant_id == Participant.id)
                .where(Participant.study_id == study.id, Assessment.timepoint_code.in_(missing))
                .distinct()
            )
        )
    unknown = [code for code in codes if code not in known]
    if unknown:
        raise ValidationError(N_("Unknown timepoint %(code)s."), field="timepoint", code=unknown[0])


def _app_version() -> str:
    try:
        return f"pro-app {metadata.version('pro-app')}"
    except metadata.PackageNotFoundError:
        return "pro-app"


def export_context(session: Session, filters: ExportFilters, *, now: datetime | None = None) -> ExportContext:
    """What the writers need besides the records: the study's instrument and its wording.

    ``texts`` holds, per locale, the wording that locale shows now: a site's licensed text
    where one is loaded, else the demo wording (labels and the data dictionary use English).
    """
    study = check_filters(session, filters)
    registry = default_registry()
    instrument = registry.get(study.instrument_code, study.instrument_version)
    locales = set(registry.locales(instrument.code))
    locales |= set(
        session.scalars(
            select(InstrumentTextRecord.locale).where(
                InstrumentTextRecord.instrument_code == instrument.code,
                InstrumentTextRecord.instrument_version == instrument.version,
                InstrumentTextRecord.active.is_(True),
            )
        )
    )
    texts: dict[str, InstrumentText] = {}
    for locale in sorted(locales):
        try:
            texts[locale] = text_for(session, instrument, [locale])
        except NotRegisteredError:
            continue
    site_codes: list[str] | None = None
    if filters.site_ids is not None:
        by_id = dict(session.execute(select(Site.id, Site.code).where(Site.id.in_(filters.site_ids))).tuples().all())
        site_codes = [by_id.get(site_id, str(site_id)) for site_id in filters.site_ids]
    return ExportContext(
        instrument=instrument,
        texts=texts,
        filters=filters,
        generated_at=now or datetime.now(timezone.utc),
        app_version=_app_version(),
        extra={"site_codes": site_codes, "study_name": study.name},
    )


def begin_snapshot(session: Session) -> None:
    """Make a fresh read-only ``session`` see one consistent snapshot for a whole export.

    On PostgreSQL the default READ COMMITTED would give every chunk's queries their own
    snapshot (an assessment submitted meanwhile could show scores but an earlier status);
    REPEATABLE READ, read-only, fixes one. SQLite's read transactions already read a single
    snapshot. Call it before the session's first query; a session joined to an outer
    connection (as in tests) keeps that connection's settings.
    """
    bind = session.get_bind()
    if isinstance(bind, Engine) and bind.dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True})


def check_format(export_format: str) -> str:
    """The format name, if it is one of :data:`FORMATS`."""
    if export_format not in FORMATS:
        raise ValidationError(N_("Unknown export format %(name)s."), field="format", name=export_format)
    return export_format


def write_export(
    session: Session, filters: ExportFilters, export_format: str, out: BinaryIO, *, context: ExportContext | None = None
) -> int:
    """Stream the selected records through the format's writer; reads only, records nothing.

    For callers that audit separately (see :func:`run_export`); returns the writer's count.
    """
    chosen = FORMATS[check_format(export_format)]
    context = context or export_context(session, filters)
    records = iter_records(session, filters, answer_times=chosen.name not in WITHOUT_ANSWER_TIMES)
    return chosen.writer(records, out, context)


def run_export(session: Session, filters: ExportFilters, export_format: str, out: BinaryIO, *, actor: str) -> int:
    """Audit, then write the export to ``out``; returns the writer's count of rows (or resources).

    The audit event is recorded before anything is written, so no file leaves without one;
    the caller commits once the file is complete (and rolls back if writing fails). An
    export that selects nothing is a valid file with its header, not an error.

    The audit event locks the head of the audit chain (and a writing SQLite transaction holds
    the database's write lock) until the caller commits, so every other audited change waits
    for the export. For large exports prefer :func:`write_export` on a read-only session into
    a temporary file, then :func:`~pro_app.services.exports.audit_export` and commit, then
    publish the file -- as ``pro-app export`` does.
    """
    check_format(export_format)
    context = export_context(session, filters)
    audit_export(session, filters, export_format=export_format, actor=actor)
    session.flush()
    return write_export(session, filters, export_format, out, context=context)
