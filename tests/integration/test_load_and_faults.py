"""Patients answering at the same time against the real gunicorn, with faults injected.

Small runs of benchmarks/load_patients.py (its functions, not a copy): four to six patients
per run, each with its own cookies, misbehaving like phones on a poor connection (replayed
posts, read timeouts, double submissions). After each run the database must hold every
acknowledged answer exactly once with its last acknowledged value and every acknowledged
submission once with its 16 scores. No timing is asserted; the figures are printed by the
script itself.

SQLite: a normal run, a worker SIGKILLed mid-run, a graceful reload (SIGHUP). PostgreSQL, when
``PRO_TEST_DATABASE_URL`` is set: a normal run and the application's connections terminated
mid-run, in a database of their own (``<name>_load``), dropped at the end, because the test
session owns the test database.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from pro_app.db.engine import make_engine
from pro_app.db.models import Answer
from tests.conftest import scratch_postgres

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from load_patients import Report, Settings, check_database, run_load  # noqa: E402

#: Per run: 2 x 6 + 3 x 4 patients make about 1,700 requests, some 45 s of CPU over both cores
#: (the server's share dominates). The default-size figures come from the script itself.
PATIENTS = 6
FAULT_PATIENTS = 4


def assert_clean(report: Report) -> None:
    assert not report.failures, "\n".join(report.lines())
    assert report.submitted == report.settings.patients
    behaviour = report.stats.behaviour
    assert behaviour["replay"] and behaviour["timeout"] and behaviour["duplicate_submit"], (
        "the clients misbehaved as intended: " + "\n".join(report.lines())
    )


def remove(report: Report) -> None:
    shutil.rmtree(report.folder, ignore_errors=True)
    if report.database_url.startswith("sqlite:///"):
        shutil.rmtree(Path(report.database_url.removeprefix("sqlite:///")).parent, ignore_errors=True)


def test_sqlite_normal_run_and_the_checks_have_teeth() -> None:
    report = run_load(Settings(patients=PATIENTS, keep=True, max_seconds=240))
    try:
        assert_clean(report)
        assert not report.stats.server_statuses
        # The same checks on a database where one acknowledged answer was changed behind the
        # clients' backs: they must notice.
        run = next(run for run in report.runs if run.acks)
        last = run.acks[-1]
        engine = make_engine(report.database_url)
        try:
            with engine.begin() as connection:
                connection.execute(
                    update(Answer)
                    .where(Answer.assessment_id == run.assessment_id, Answer.item_id == last.item)
                    .values(value=1 if last.value != 1 else 2)
                )
        finally:
            engine.dispose()
        checks = check_database(report.database_url, report.runs, report.stats, report.settings, [])
        failed = [message for ok, message in checks if not ok]
        assert any("acknowledged answer stored" in message and run.subject in message for message in failed), failed
    finally:
        remove(report)


@pytest.mark.parametrize("fault", ["kill-worker", "reload"])
def test_sqlite_worker_killed_or_reloaded_mid_run(fault: str) -> None:
    report = run_load(Settings(patients=FAULT_PATIENTS, fault=fault, fault_count=2, max_seconds=240))
    try:
        assert_clean(report)
        assert len(report.faults) == 2
        if fault == "kill-worker":
            assert all("SIGKILL worker" in event.description for event in report.faults)
        else:
            assert all("SIGHUP master" in event.description for event in report.faults)
    finally:
        remove(report)


@pytest.fixture
def load_database() -> Iterator[str]:
    """``<test database>_load``: created here, emptied and migrated by the script, dropped after."""
    with scratch_postgres("load") as url:
        yield url


def test_postgresql_normal_run(load_database: str) -> None:
    report = run_load(Settings(patients=PATIENTS, database_url=load_database, max_seconds=240))
    try:
        assert_clean(report)
    finally:
        remove(report)


def test_postgresql_connections_terminated_mid_run(load_database: str) -> None:
    """Requests whose connection is terminated under them get a 503 with Retry-After (their
    transaction died with the connection) and are sent again: no other 5xx, nothing lost,
    nothing duplicated."""
    report = run_load(
        Settings(patients=FAULT_PATIENTS, database_url=load_database, fault="db-drop", fault_count=2, max_seconds=240)
    )
    try:
        assert_clean(report)
        assert report.submitted == FAULT_PATIENTS and len(report.faults) == 2
        assert all("connections of the app terminated" in event.description for event in report.faults)
    finally:
        remove(report)
