"""Exporting a large trial: the wide CSV of 200,000 completed questionnaires through run_export.

Run: ``.venv/bin/python benchmarks/export.py`` (``--help`` for sizes and formats). Prints
figures only; tests never assert timings. Target for the wide CSV of 200,000 assessments:
under 10 s and under 200 MB.

Data (a temporary SQLite file, migrated): ``--participants`` (default 10,000) at two sites in
three dose groups, each with lymphodepletion, infusion and enrolment anchors and
``--assessments`` (default 20) completed questionnaires from the dense CAR-T schedule and its
12-weekly follow-up: all 30 items answered (random values), the 16 scores computed by the real
scoring code, each assessment's result row as the app writes it, the demo text's checksum. Answers and scores are bulk-inserted with the SQLite
driver in chunks (6 million answer rows at the default size).

Measured, each in a fresh process so that its peak memory is the export's own:
``iter_records`` alone (reading what the wide CSV needs), then ``run_export`` to a file
(reading + writing) -- wall time, rows per second, the process's peak resident memory (VmHWM)
and its growth over the state after start-up, and the file size; then the same export again
under ``tracemalloc`` for the peak of Python allocations (slower; its time is not reported).
``--formats`` adds other formats (e.g. ``wide,items-long,scores-long,xlsx``).

PostgreSQL (``PRO_BENCH_EXPORT_DATABASE_URL``, default ``bench_export`` on 127.0.0.1 as user
``postgres``; skipped when that server does not answer, or with ``--no-postgres``): the same
trial loaded with ``COPY`` and analysed, and the wide CSV measured from it the same way (no
trace). The database is dropped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from _fixtures import drop_postgres_database, optional_postgres_url, temporary_sqlite_url
from sqlalchemy import Connection, insert, select

import numpy as np

from pro_app.db.engine import make_engine, make_session_factory
from pro_app.db.models import AnchorEvent, Arm, Assessment, Participant, Site, Study
from pro_app.domain.instruments import Instrument, default_registry
from pro_app.domain.records import ExportFilters
from pro_app.domain.schedule import BUILTIN_TEMPLATES, TimepointRule, plan_assessments
from pro_app.domain.scoring import ALGORITHM_VERSION, score_batch
from pro_app.domain.states import AssessmentStatus, TimeUnit
from pro_app.services.scores import encode_answers, encode_scores

TARGET_SECONDS = 10.0
TARGET_MB = 200.0
STUDY = "EXPORT-BENCH"
SITES = (("BER", "Berlin University Hospital", "Europe/Berlin"), ("SHA", "Shanghai Cancer Center", "Asia/Shanghai"))
ARMS = (("low", "Low dose"), ("medium", "Medium dose"), ("high", "High dose"))
SCHEDULE: tuple[TimepointRule, ...] = BUILTIN_TEMPLATES["car_t_early"][1] + tuple(
    TimepointRule(f"w{week}", f"Week {week}", "infusion", week * 7, TimeUnit.DAYS, 14, 14, TimeUnit.DAYS)
    for week in range(60, 145, 12)
)
CHUNK = 5_000  # assessments per insert round (150,000 answer rows)
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/bench_export"


def _sqlite_time(instant: datetime) -> str:
    """The storage form SQLAlchemy's SQLite DATETIME reads (naive UTC)."""
    return instant.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def populate(url: str, participants: int, per_participant: int, seed: int = 20240601) -> tuple[int, int, float]:
    """Insert the study; returns (assessments, answer rows, seconds)."""
    started = time.perf_counter()
    rng = random.Random(seed)
    instrument = default_registry().get("qlq_c30")
    text = default_registry().text("qlq_c30", "en")
    item_ids = instrument.item_ids
    score_codes = instrument.score_codes
    items_per_score = [len(instrument.scale(code).items) for code in score_codes[: len(instrument.scales)]]
    items_per_score += [len(summary.scales) for summary in instrument.summary_scores]
    maxima = np.array([instrument.response_set(item.response_set).maximum for item in instrument.items])
    numpy_rng = np.random.default_rng(seed)
    now = datetime.now(timezone.utc)

    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        study = Study(code=STUDY, name="Export benchmark", timezone="Europe/Berlin")
        study.sites = [Site(code=code, name=name, timezone=zone) for code, name, zone in SITES]
        study.arms = [Arm(code=code, name=name) for code, name in ARMS]
        session.add(study)
        session.flush()
        people: list[dict[str, Any]] = []
        for number in range(participants):
            site = study.sites[number % len(study.sites)]
            people.append({
                "study_id": study.id, "site_id": site.id, "arm_id": study.arms[number % len(study.arms)].id,
                "subject_code": f"{site.code}-{number:05d}", "locale": "en", "timezone": site.timezone,
                "status": "active", "enrolled_at": now - timedelta(days=900 + rng.uniform(0, 365)),
            })
        session.execute(insert(Participant), people)
        ids = dict(session.execute(select(Participant.subject_code, Participant.id)).tuples().all())
        anchors: list[dict[str, Any]] = []
        assessments: list[dict[str, Any]] = []
        for person in people:
            enrolled = person["enrolled_at"]
            events = {"enrolment": enrolled, "lymphodepletion": enrolled + timedelta(days=7),
                      "infusion": enrolled + timedelta(days=12)}
            participant_id = ids[person["subject_code"]]
            anchors += [{"participant_id": participant_id, "kind": kind, "occurred_at": at} for kind, at in events.items()]
            for planned in plan_assessments(SCHEDULE, events, person["timezone"])[:per_participant]:
                submitted = planned.window_opens_at + (planned.window_closes_at - planned.window_opens_at) * rng.random()
                assessments.append({
                    "participant_id": participant_id, "timepoint_code": planned.code, "timepoint_label": planned.label,
                    "occurrence": planned.occurrence, "instrument_code": "qlq_c30", "instrument_version": "3.0",
                    "locale": "en", "text_source": text.source, "text_checksum": text.checksum,
                    "planned_at": planned.planned_at, "window_opens_at": planned.window_opens_at,
                    "window_closes_at": planned.window_closes_at, "status": AssessmentStatus.COMPLETED.value,
                    "mode": "self", "started_at": submitted - timedelta(minutes=9), "submitted_at": submitted,
                    "created_at": enrolled, "updated_at": submitted,
                })
        session.execute(insert(AnchorEvent), anchors)
        for start in range(0, len(assessments), 20_000):
            session.execute(insert(Assessment), assessments[start:start + 20_000])
        session.commit()
        rows = session.execute(
            select(Assessment.id, Assessment.submitted_at).order_by(Assessment.id)
        ).tuples().all()

    answer_rows = 0
    with engine.begin() as connection:
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start:start + CHUNK]
            matrix = (numpy_rng.random((len(chunk), len(item_ids))) * maxima).astype(np.int64) + 1
            scores = score_batch(instrument, matrix)
            answer_rows += _insert_chunk(connection, instrument, chunk, matrix, scores, items_per_score)
    if engine.dialect.name == "postgresql":  # as autovacuum would after a bulk load
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("ANALYZE")
    engine.dispose()
    return len(rows), answer_rows, time.perf_counter() - started


def _insert_chunk(
    connection: Connection,
    instrument: Instrument,
    chunk: Sequence[tuple[int, datetime | None]],
    matrix: Any,
    scores: Any,
    items_per_score: Sequence[int],
) -> int:
    answers: list[tuple[Any, ...]] = []
    stored: list[tuple[Any, ...]] = []
    summaries: list[tuple[Any, ...]] = []  # the result rows, as services.scores.store_scores writes them
    item_ids = instrument.item_ids
    score_codes = instrument.score_codes
    sqlite = connection.dialect.name == "sqlite"
    for (assessment_id, submitted), values, results in zip(chunk, matrix.tolist(), scores.tolist()):
        assert submitted is not None
        # One answer every 15 s over the nine minutes before submission: on SQLite as the
        # stored text (naive UTC), on PostgreSQL as instants.
        first = submitted.astimezone(timezone.utc) - timedelta(minutes=9)
        if sqlite:
            naive = first.replace(tzinfo=None)
            times: list[Any] = [(naive + timedelta(seconds=15 * n)).isoformat(" ", "microseconds")
                                for n in range(len(item_ids))]
        else:
            times = [first + timedelta(seconds=15 * n) for n in range(len(item_ids))]
        answers += [(assessment_id, item_id, value, "en", at, "participant")
                    for item_id, value, at in zip(item_ids, values, times)]
        at = _sqlite_time(submitted) if sqlite else submitted
        values_by_code = {code: None if value != value else value for code, value in zip(score_codes, results)}
        stored += [(assessment_id, code, value, n, ALGORITHM_VERSION, at)
                   for (code, value), n in zip(values_by_code.items(), items_per_score)]
        summaries.append((assessment_id, encode_answers(instrument, dict(zip(item_ids, values))),
                          encode_scores(instrument, values_by_code), ALGORITHM_VERSION, at))
    _bulk(connection, "answers", ("assessment_id", "item_id", "value", "locale", "answered_at", "answered_by"), answers)
    _bulk(connection, "scale_scores",
          ("assessment_id", "scale_code", "value", "items_answered", "algorithm_version", "computed_at"), stored)
    _bulk(connection, "assessment_results", ("assessment_id", "answers", "scores", "algorithm_version", "computed_at"),
          summaries)
    return len(answers)


def _bulk(connection: Connection, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    """Rows inserted as the database loads them fastest: SQLite's driver in one executemany,
    PostgreSQL's ``COPY``."""
    if connection.dialect.name == "postgresql":
        driver = connection.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    else:
        connection.exec_driver_sql(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows
        )


# --------------------------------------------------------------------------- measuring (child process)


def _rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss
    over an exec, so a child would report the populating parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def measure(url: str, export_format: str, mode: str) -> dict[str, Any]:
    """One measurement in this (fresh) process; ``mode`` is read, export or trace."""
    from pro_app.services.export_run import run_export
    from pro_app.services.exports import iter_records

    engine = make_engine(url)
    filters = ExportFilters(study=STUDY)
    folder = Path(tempfile.mkdtemp(prefix="pro-bench-export-"))
    output = folder / f"export-{export_format}"
    try:
        with make_session_factory(engine)() as session:
            session.execute(select(Study.id)).all()  # connect and warm up before the baseline
            baseline = _rss_mb()
            if mode == "trace":
                tracemalloc.start()
            started = time.perf_counter()
            if mode == "read":  # what the wide export reads: no answer times
                count = sum(1 for _ in iter_records(session, filters, answer_times=False))
                size = 0
            else:
                with output.open("wb") as out:
                    count = run_export(session, filters, export_format, out, actor="benchmark")
                size = output.stat().st_size
            seconds = time.perf_counter() - started
            traced = tracemalloc.get_traced_memory()[1] / 2**20 if mode == "trace" else None
            session.rollback()  # the audit event of a benchmark is not kept
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        engine.dispose()
    return {"count": count, "seconds": seconds, "baseline_mb": baseline, "peak_mb": _rss_mb(),
            "traced_mb": traced, "bytes": size}


def _child(url: str, export_format: str, mode: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--measure", url, "--format", export_format, "--mode", mode],
        check=True, capture_output=True, text=True,
    )
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--participants", type=int, default=10_000)
    parser.add_argument("--assessments", type=int, default=20, help="completed assessments per participant (max 22)")
    parser.add_argument("--formats", default="wide",
                        help="comma-separated formats to measure (default: wide; e.g. wide,items-long,scores-long,xlsx)")
    parser.add_argument("--no-trace", action="store_true", help="skip the tracemalloc runs")
    parser.add_argument("--keep", action="store_true", help="keep the populated database (it is large)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of figures (run_all.py)")
    parser.add_argument("--database", help="measure on an already populated SQLite URL (from --keep)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--format", default="wide", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="export", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.format, args.mode)))
        return

    # First, so that a wrong URL fails before minutes of SQLite work.
    postgres = optional_postgres_url("PRO_BENCH_EXPORT_DATABASE_URL", DEFAULT_POSTGRES,
                                     skip=args.no_postgres or bool(args.database))
    if args.database:
        url = args.database
        print(f"SQLite: reusing {url}")
    else:
        url = temporary_sqlite_url()
        assessments, answers, seconds = populate(url, args.participants, args.assessments)
        size_mb = os.path.getsize(url.removeprefix("sqlite:///")) / 2**20
        print(f"SQLite: populated {args.participants:,} participants, {assessments:,} completed assessments, "
              f"{answers:,} answers in {seconds:.1f} s ({size_mb:,.0f} MB file)")
    try:
        figures = report(url, args)
    finally:
        if args.keep or args.database:
            print(f"database kept: {url} (reuse it with --database)")
        else:
            shutil.rmtree(Path(url.removeprefix("sqlite:///")).parent, ignore_errors=True)
    if postgres is not None:
        figures += report_postgres(postgres, args)
    if args.json:
        from _fixtures import print_figures_json

        print_figures_json(figures)
    sys.stdout.flush()


def report(url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Measure on SQLite and print the table; returns the wide CSV's figures."""
    read = _child(url, "wide", "read")
    print(f"iter_records alone (no answer times, as for wide): {read['count']:,} records in "
          f"{read['seconds']:.2f} s ({read['count'] / read['seconds']:,.0f}/s), peak RSS {read['peak_mb']:.0f} MB")
    print()
    print(f"run_export to a file, fresh process each (target for wide: < {TARGET_SECONDS:.0f} s, < {TARGET_MB:.0f} MB)")
    print(f"{'format':<13}{'rows':>10}{'seconds':>9}{'rows/s':>10}{'RSS +MB':>9}{'RSS MB':>8}"
          f"{'traced MB':>11}{'file MB':>9}  verdict")
    wide: dict[str, Any] | None = None
    for export_format in [name.strip() for name in args.formats.split(",") if name.strip()]:
        timed = _child(url, export_format, "export")
        # tracemalloc slows openpyxl's many small allocations tenfold: traced for CSV only.
        trace = not args.no_trace and export_format != "xlsx"
        traced = _child(url, export_format, "trace")["traced_mb"] if trace else None
        growth = timed["peak_mb"] - timed["baseline_mb"]
        verdict = ""
        if export_format == "wide":
            verdict = "ok" if timed["seconds"] < TARGET_SECONDS and timed["peak_mb"] < TARGET_MB else "OVER TARGET"
            wide = timed
        traced_text = "-" if traced is None else f"{traced:.1f}"
        print(f"{export_format:<13}{timed['count']:>10,}{timed['seconds']:>9.2f}"
              f"{timed['count'] / timed['seconds']:>10,.0f}{growth:>9.0f}{timed['peak_mb']:>8.0f}"
              f"{traced_text:>11}{timed['bytes'] / 2**20:>9.1f}  {verdict}")
    print("rows = assessments for wide/xlsx, answers for items-long, scores for scores-long; RSS MB = the"
          " process's peak (Python, SQLAlchemy, app code included), RSS +MB = its growth during the export;"
          " traced MB = peak of Python allocations during the export")
    return [] if wide is None else _wide_figures(wide, "")


def report_postgres(url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The wide CSV again, from the same trial in PostgreSQL (loaded with COPY, then analysed)."""
    try:
        assessments, answers, seconds = populate(url, args.participants, args.assessments)
        print(f"\nPostgreSQL: populated {assessments:,} completed assessments, {answers:,} answers in {seconds:.1f} s")
        timed = _child(url, "wide", "export")
    finally:
        if args.keep:
            print(f"database kept: {url}")
        else:
            drop_postgres_database(url)
    print(f"wide CSV from PostgreSQL: {timed['count']:,} rows in {timed['seconds']:.2f} s "
          f"({timed['count'] / timed['seconds']:,.0f}/s), peak RSS {timed['peak_mb']:.0f} MB "
          f"(+{timed['peak_mb'] - timed['baseline_mb']:.0f} MB), {timed['bytes'] / 2**20:.1f} MB file")
    return _wide_figures(timed, ", PostgreSQL")


def _wide_figures(wide: dict[str, Any], where: str) -> list[dict[str, Any]]:
    from _fixtures import figure

    full = wide["count"] >= 200_000  # the budget's size; smaller runs are indicative only
    return [
        figure(f"Export wide CSV{where}, {wide['count']:,} assessments", wide["seconds"], "s",
               budget=f"< {TARGET_SECONDS:.0f} s at 200,000", passed=wide["seconds"] < TARGET_SECONDS if full else None,
               note=f"{wide['count'] / wide['seconds']:,.0f} rows/s"),
        figure(f"Export wide CSV peak memory{where}, {wide['count']:,} assessments", wide["peak_mb"], "MB",
               budget=f"< {TARGET_MB:.0f} MB at 200,000", passed=wide["peak_mb"] < TARGET_MB if full else None,
               note=f"process peak RSS; +{wide['peak_mb'] - wide['baseline_mb']:.0f} MB during the export"),
    ]


if __name__ == "__main__":
    main()
