"""The staff dashboard on a large trial: build time for a site nurse and for an admin.

Run: ``.venv/bin/python benchmarks/dashboard.py`` (``--help`` for sizes). Prints figures only;
tests never assert timings. Target: p95 under 150 ms on each database.

Data: 10,000 participants at two sites (Europe/Berlin, Asia/Shanghai) in three dose groups,
enrolled over the last two years, each with the dense CAR-T schedule plus 12-weekly follow-up
(about 20 assessments; windows from two years ago to two years ahead). Statuses agree with
the windows: past windows mostly completed, some missed and a few left stale by a lagging
status job; open windows partly started or submitted; withdrawn participants' later
assessments cancelled. Recent submissions raise some alerts, the last fortnight's still open.

Databases: a temporary SQLite file always (migrated, no ANALYZE, as the application leaves
it); PostgreSQL at ``PRO_BENCH_DATABASE_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/bench``: created if missing, schema emptied and
migrated, analysed after loading as autovacuum would) when the server answers; a URL set
explicitly must answer. Never the test suite's database.

Options: ``--explain`` prints the plan of every query a nurse's dashboard sends;
``--try-index`` measures with the index change recommended for PostgreSQL (``*`` rows);
``--json`` ends the output with one JSON line of figures for benchmarks/run_all.py.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from _fixtures import figure, optional_postgres_url, print_figures_json, temporary_sqlite_url
from sqlalchemy import Engine, event, insert, select, text
from sqlalchemy.orm import Session

from pro_app.db.engine import make_engine, make_session_factory
from pro_app.db.models import Alert, Arm, Assessment, Participant, Site, Study
from pro_app.domain.schedule import BUILTIN_TEMPLATES, TimepointRule, plan_assessments
from pro_app.domain.states import AlertState, AssessmentStatus, ParticipantStatus, TimeUnit
from pro_app.services.dashboard import build_dashboard

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/bench"
TARGET_P95_MS = 150.0
SITES = (("BER", "Berlin University Hospital", "Europe/Berlin"), ("SHA", "Shanghai Cancer Center", "Asia/Shanghai"))
ARMS = (("low", "Low dose"), ("medium", "Medium dose"), ("high", "High dose"))
#: The dense early CAR-T schedule (14 timepoints) and 12-weekly follow-up to week 144 (8).
SCHEDULE: tuple[TimepointRule, ...] = BUILTIN_TEMPLATES["car_t_early"][1] + tuple(
    TimepointRule(f"w{week}", f"Week {week}", "infusion", week * 7, TimeUnit.DAYS, 14, 14, TimeUnit.DAYS)
    for week in range(60, 145, 12)
)
HORIZON = timedelta(days=730)
#: The index change recommended for "open now" (``--try-index`` applies it to the benchmark
#: database only): the window check then happens inside the index, whichever side of the
#: window the planner starts from.
RECOMMENDED_INDEX = (
    "DROP INDEX ix_assessments_status_closes",
    "CREATE INDEX ix_assessments_status_closes ON assessments (status, window_closes_at, window_opens_at)",
)


@dataclass(frozen=True)
class Populated:
    site_ids: list[int]
    participants: int
    assessments: int
    open_alerts: int
    seconds: float


def populate(session: Session, participants: int, now: datetime, seed: int = 20240601) -> Populated:
    """Bulk-insert a study of ``participants`` with their assessments and alerts; commits."""
    started = time.perf_counter()
    rng = random.Random(seed)
    study = Study(code="BENCH", name="Dashboard benchmark", timezone="Europe/Berlin")
    study.sites = [Site(code=code, name=name, timezone=zone) for code, name, zone in SITES]
    study.arms = [Arm(code=code, name=name) for code, name in ARMS]
    session.add(study)
    session.flush()

    people: list[dict[str, Any]] = []
    for number in range(participants):
        site = study.sites[number % len(study.sites)]
        enrolled = now - timedelta(seconds=rng.uniform(0, HORIZON.total_seconds()))
        roll = rng.random()
        status = ParticipantStatus.ACTIVE.value
        withdrawn_at = None
        if roll < 0.08:
            status = ParticipantStatus.WITHDRAWN.value
            withdrawn_at = enrolled + (now - enrolled) * rng.random()
        elif roll < 0.11:
            status = ParticipantStatus.COMPLETED.value
        people.append({
            "study_id": study.id,
            "site_id": site.id,
            "arm_id": study.arms[rng.randrange(len(study.arms))].id,
            "subject_code": f"{site.code}-{number:05d}",
            "locale": "en",
            "timezone": site.timezone,
            "status": status,
            "enrolled_at": enrolled,
            "withdrawn_at": withdrawn_at,
        })
    _bulk_insert(session, Participant, people)
    ids = dict(session.execute(select(Participant.subject_code, Participant.id)).tuples().all())

    rows: list[dict[str, Any]] = []
    for person in people:
        enrolled = person["enrolled_at"]
        anchors = {"lymphodepletion": enrolled + timedelta(days=7), "infusion": enrolled + timedelta(days=12)}
        for planned in plan_assessments(SCHEDULE, anchors, person["timezone"]):
            if planned.window_opens_at > now + HORIZON:
                continue
            status, submitted = _status(rng, person, planned.window_opens_at, planned.window_closes_at, now)
            rows.append({
                "participant_id": ids[person["subject_code"]],
                "timepoint_code": planned.code,
                "timepoint_label": planned.label,
                "occurrence": planned.occurrence,
                "instrument_code": "qlq_c30",
                "instrument_version": "3.0",
                "planned_at": planned.planned_at,
                "window_opens_at": planned.window_opens_at,
                "window_closes_at": planned.window_closes_at,
                "status": status,
                "mode": "self" if submitted else None,
                "started_at": submitted - timedelta(minutes=9) if submitted else None,
                "submitted_at": submitted,
                "created_at": enrolled,
                "updated_at": submitted or enrolled,
            })
    _bulk_insert(session, Assessment, rows)

    # Alerts on 4% of the last 90 days' submissions: recent ones open, older ones mostly reviewed.
    recent = session.execute(
        select(Assessment.id, Assessment.submitted_at).where(
            Assessment.status == AssessmentStatus.COMPLETED.value,
            Assessment.submitted_at >= now - timedelta(days=90),
        ).order_by(Assessment.id)
    ).tuples().all()
    alerts: list[dict[str, Any]] = []
    for assessment_id, submitted in recent:
        if submitted is None or rng.random() >= 0.04:
            continue
        fresh = now - submitted < timedelta(days=14)
        state = AlertState.OPEN.value if fresh or rng.random() < 0.1 else AlertState.ACKNOWLEDGED.value
        alerts.append({
            "assessment_id": assessment_id,
            "rule_code": "threshold",
            "scale_code": rng.choice(("PA", "FA", "DY", "QL2")),
            "value": round(rng.uniform(40, 100), 4),
            "threshold": 40.0,
            "state": state,
            "created_at": submitted + timedelta(seconds=1),
            "acknowledged_at": None if state == AlertState.OPEN.value else submitted + timedelta(hours=20),
            "note": None,
        })
    _bulk_insert(session, Alert, alerts)
    session.commit()
    return Populated(
        site_ids=[site.id for site in study.sites],
        participants=len(people),
        assessments=len(rows),
        open_alerts=sum(a["state"] == AlertState.OPEN.value for a in alerts),
        seconds=time.perf_counter() - started,
    )


def _bulk_insert(session: Session, model: type[Any], rows: list[dict[str, Any]]) -> None:
    """ORM bulk INSERT, in runs of rows whose NULL columns match: the ORM leaves NULLs out of
    the statement and starts a new batch whenever that set changes."""
    rows = sorted(rows, key=lambda row: [value is None for value in row.values()])
    for start in range(0, len(rows), 20_000):
        session.execute(insert(model), rows[start:start + 20_000])


def _status(
    rng: random.Random, person: dict[str, Any], opens: datetime, closes: datetime, now: datetime
) -> tuple[str, datetime | None]:
    """A status (and submission instant) that agrees with the window and the participant."""
    withdrawn_at: datetime | None = person["withdrawn_at"]
    if withdrawn_at is not None and closes > withdrawn_at:
        return AssessmentStatus.CANCELLED.value, None
    if person["status"] == ParticipantStatus.COMPLETED.value and opens > now:
        return AssessmentStatus.CANCELLED.value, None
    if now < opens:
        return AssessmentStatus.SCHEDULED.value, None
    roll = rng.random()
    if now < closes:  # open now
        if roll < 0.35:
            return AssessmentStatus.COMPLETED.value, opens + (now - opens) * rng.random()
        if roll < 0.45:
            return AssessmentStatus.IN_PROGRESS.value, None
        if roll < 0.55:
            return AssessmentStatus.SCHEDULED.value, None  # the status job has not run yet
        return AssessmentStatus.OPEN.value, None
    if now - closes < timedelta(days=2) and roll < 0.3:
        return AssessmentStatus.OPEN.value, None  # closed, not yet marked missed
    if roll < 0.82:
        return AssessmentStatus.COMPLETED.value, opens + (closes - opens) * rng.random()
    return AssessmentStatus.MISSED.value, None


@contextmanager
def counting_statements(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Collect the queries the block sends (to count them and to explain them)."""
    seen: list[tuple[str, Any]] = []

    def before(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)


@dataclass(frozen=True)
class Timing:
    p50: float
    p95: float
    worst: float
    queries: int
    totals: str


def measure(
    engine: Engine, site_ids: Sequence[int] | None, zone: str, now: datetime, runs: int, limit: int
) -> Timing:
    factory = make_session_factory(engine)
    timings: list[float] = []
    for run in range(runs + 3):  # three warm-up runs fill the pool and statement caches
        with factory() as session:
            started = time.perf_counter()
            with counting_statements(engine) as statements:
                dashboard = build_dashboard(session, site_ids=site_ids, now=now, timezone=zone, limit=limit)
            elapsed = time.perf_counter() - started
        if run >= 3:
            timings.append(elapsed * 1000)
    timings.sort()
    sections = ("open_now", "due_today", "closing_soon", "missed_recent", "submitted_today", "open_alerts")
    totals = " ".join(f"{getattr(dashboard, name).total}" for name in sections)
    return Timing(
        p50=statistics.median(timings),
        p95=timings[max(0, round(0.95 * len(timings)) - 1)],
        worst=timings[-1],
        queries=len(statements),
        totals=totals,
    )


def explain(engine: Engine, site_ids: Sequence[int] | None, zone: str, now: datetime, limit: int) -> None:
    """Print the plan of every query one dashboard sends, as the database will run it."""
    with make_session_factory(engine)() as session, counting_statements(engine) as statements:
        build_dashboard(session, site_ids=site_ids, now=now, timezone=zone, limit=limit)
    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    with engine.connect() as connection:
        for statement, parameters in statements:
            print("   ", " ".join(statement.split())[:150], "...")
            for line in connection.exec_driver_sql(prefix + statement, parameters):
                print("       ", " | ".join(str(part) for part in line[-1:]))


def bench(label: str, url: str, args: argparse.Namespace, now: datetime) -> list[tuple[str, str, Timing]]:
    """(database, viewer, timing) of a nurse of one site and of an admin."""
    engine = make_engine(url)
    try:
        factory = make_session_factory(engine)
        with factory() as session:
            info = populate(session, args.participants, now)
        if args.try_index:
            with engine.begin() as connection:
                for statement in RECOMMENDED_INDEX:
                    connection.execute(text(statement))
            label += "*"
        if engine.dialect.name == "postgresql" or args.sqlite_analyze:
            # PostgreSQL's autovacuum analyses a table after a bulk load; the application never
            # runs ANALYZE on SQLite, so by default SQLite plans without statistics, as in use.
            with engine.begin() as connection:
                connection.execute(text("ANALYZE"))
        print(f"{label}: populated {info.participants:,} participants, {info.assessments:,} assessments, "
              f"{info.open_alerts:,} open alerts in {info.seconds:.1f} s")
        nurse_site = info.site_ids[:1]
        if args.explain:
            print(f"  plans for a nurse of one site ({label}):")
            explain(engine, nurse_site, SITES[0][2], now, args.limit)
        return [(label, who, measure(engine, sites, zone, now, args.runs, args.limit))
                for who, sites, zone in (("nurse, 1 site", nurse_site, SITES[0][2]), ("admin, all", None, SITES[0][2]))]
    finally:
        engine.dispose()


def postgres_url(args: argparse.Namespace) -> str | None:
    """The dedicated PostgreSQL database (fresh), or None (see ``optional_postgres_url``)."""
    return optional_postgres_url("PRO_BENCH_DATABASE_URL", DEFAULT_POSTGRES, skip=args.no_postgres)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--participants", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--explain", action="store_true", help="print each query's plan")
    parser.add_argument("--sqlite-analyze", action="store_true", help="give SQLite table statistics too")
    parser.add_argument("--try-index", action="store_true",
                        help="measure with the recommended index (rows marked *)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of figures")
    args = parser.parse_args()
    now = datetime.now(timezone.utc)

    url = postgres_url(args)  # first, so that a wrong URL fails before minutes of SQLite work
    rows = bench("SQLite", temporary_sqlite_url(), args, now)
    if url is not None:
        rows += bench("PostgreSQL", url, args, now)
    print()
    print(f"build_dashboard, {args.runs} runs each, limit {args.limit}, times in ms (target p95 < {TARGET_P95_MS:.0f})")
    print(f"{'database':<12}{'viewer':<15}{'p50':>8}{'p95':>8}{'max':>8}{'queries':>9}  {'':<12}"
          "totals: open due closing missed submitted alerts")
    for label, who, timing in rows:
        verdict = "ok" if timing.p95 < TARGET_P95_MS else "OVER TARGET"
        print(f"{label:<12}{who:<15}{timing.p50:>8.1f}{timing.p95:>8.1f}{timing.worst:>8.1f}"
              f"{timing.queries:>9}  {verdict:<12}{timing.totals}")
    sys.stdout.flush()
    if args.json:
        full = args.participants >= 10_000
        print_figures_json([
            figure(f"Dashboard build p95, {label}, {who}, {args.participants:,} participants", timing.p95, "ms",
                   budget=f"< {TARGET_P95_MS:.0f} ms at 10,000", passed=timing.p95 < TARGET_P95_MS if full else None,
                   note=f"p50 {timing.p50:.1f} ms, {timing.queries} queries, {args.runs} runs, in-process")
            for label, who, timing in rows
        ])


if __name__ == "__main__":
    main()
