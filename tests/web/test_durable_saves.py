"""A patient's save is acknowledged only once it is on stable storage (SQLite).

The save's commit syncs the database's log before the reply is made; a repeated request
answered from its stored receipt syncs the log too (the first copy may have been committed a
moment ago by another worker and still be syncing); and a disk that fails the sync gets a 503
with Retry-After, the same request sent again later being answered with its receipt and stored
once. SQLite only: PostgreSQL makes a commit visible only once it is durable.
"""

from __future__ import annotations

import errno
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from pro_app import create_app
from tests.conftest import app_config, migrated_sqlite
from tests.factories import committed_started_patient, hidden_fields, json_save, stored_answers
from tests.syncs import Syncs


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    migrated_sqlite(tmp_path, "durable")
    return tmp_path / "durable.sqlite3"


@pytest.fixture
def started(sqlite_path: Path) -> tuple[str, int]:
    return committed_started_patient(f"sqlite:///{sqlite_path}", "DURABLE-1", "D-001")


@pytest.fixture
def app(sqlite_path: Path) -> Iterator[Flask]:
    app = create_app(app_config(DATABASE_URL=f"sqlite:///{sqlite_path}"))
    yield app
    app.extensions["pro_db"].engine.dispose()


@pytest.fixture
def client(app: Flask, started: tuple[str, int]) -> FlaskClient:
    client = app.test_client()
    assert client.get(f"/p/{started[0]}").status_code == 303
    return client


@pytest.fixture
def syncs(sqlite_path: Path, monkeypatch: pytest.MonkeyPatch) -> Syncs:
    watched = Syncs(sqlite_path)
    watched.install(monkeypatch)
    return watched


def test_a_save_and_its_repetition_are_answered_after_the_log_is_synced(
    client: FlaskClient, started: tuple[str, int], syncs: Syncs, sqlite_path: Path
) -> None:
    _token, assessment_id = started
    key = str(uuid.uuid4())
    status, _headers, receipt = json_save(client, assessment_id, "q1", 3, key)
    assert status == 200
    log = f"{sqlite_path}-wal"
    assert (log, True) in syncs.calls  # synced, with the write turn already handed on

    syncs.calls.clear()
    status, headers, replayed = json_save(client, assessment_id, "q1", 3, key)  # the receipt, read
    assert status == 200 and headers.get("Idempotent-Replayed") == "true" and replayed == receipt
    assert log in syncs.paths()
    assert stored_answers(f"sqlite:///{sqlite_path}", assessment_id) == {"q1": 3}


def test_a_repeated_submission_is_answered_after_the_log_is_synced(
    client: FlaskClient, started: tuple[str, int], syncs: Syncs, sqlite_path: Path
) -> None:
    _token, assessment_id = started
    assert json_save(client, assessment_id, "q1", 2, str(uuid.uuid4()))[0] == 200
    fields = hidden_fields(client.get("/q/review").get_data(as_text=True), "/q/submit")
    data = {**fields, "confirm_missing": "y"}
    assert client.post("/q/submit", data=data).headers["Location"] == "/q/done"
    syncs.calls.clear()
    again = client.post("/q/submit", data=data)
    assert again.status_code == 303 and again.headers["Location"] == "/q/done"
    assert f"{sqlite_path}-wal" in syncs.paths()


def test_a_disk_that_fails_the_sync_gets_503_and_the_retry_is_stored_once(
    client: FlaskClient, started: tuple[str, int], syncs: Syncs, sqlite_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _token, assessment_id = started
    key = str(uuid.uuid4())
    syncs.fail_with = errno.EIO
    with caplog.at_level(logging.CRITICAL):
        status, headers, body = json_save(client, assessment_id, "q4", 2, key)
    assert status == 503 and headers.get("Retry-After") == "5"
    assert body == {"error": "Service unavailable", "message": "Please try again in a few minutes."}
    assert any(record.levelno == logging.CRITICAL and "Disk I/O error" in record.getMessage()
               for record in caplog.records)

    syncs.fail_with = None  # the disk works again; the page script sends the same request
    status, _headers, receipt = json_save(client, assessment_id, "q4", 2, key)
    assert status == 200 and receipt["item"] == "q4" and receipt["value"] == 2
    assert stored_answers(f"sqlite:///{sqlite_path}", assessment_id) == {"q4": 2}
