"""The patient's saves read first and take SQLite's write lock only to write.

While another transaction holds the write lock: the question page is served, a retried save
gets its receipt (both only read), and a new save waits for the lock -- when it does not get
it within the busy timeout, the answer is 503 with Retry-After and nothing is stored, and the
same request sent again once the lock is free is saved. SQLite only: PostgreSQL has no
database-wide write lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from pro_app import create_app
from pro_app.db.engine import make_engine, writer_engine
from tests.conftest import app_config, migrated_sqlite
from tests.factories import committed_started_patient, json_save, stored_answers


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return migrated_sqlite(tmp_path, "turns")


@pytest.fixture
def started(sqlite_url: str) -> tuple[str, int]:
    """A patient's link token and their started baseline questionnaire, committed."""
    return committed_started_patient(sqlite_url, "TURNS-1", "T-001")


@pytest.fixture
def app(sqlite_url: str) -> Iterator[Flask]:
    app = create_app(app_config(DATABASE_URL=sqlite_url, SQLITE_BUSY_TIMEOUT_MS=400))
    yield app
    app.extensions["pro_db"].engine.dispose()


@pytest.fixture
def other_writer(sqlite_url: str) -> Iterator[Engine]:
    engine = writer_engine(make_engine(sqlite_url))
    yield engine
    engine.dispose()


def test_reads_go_on_while_another_writer_holds_the_lock_and_new_saves_wait_their_turn(
    app: Flask, started: tuple[str, int], other_writer: Engine, sqlite_url: str
) -> None:
    token, assessment_id = started
    client = app.test_client()
    assert client.get(f"/p/{token}").status_code == 303
    first_key, second_key = str(uuid.uuid4()), str(uuid.uuid4())
    status, _, receipt = json_save(client, assessment_id, "q1", 3, first_key)
    assert status == 200

    with other_writer.begin() as holder:  # BEGIN IMMEDIATE: the write lock is taken
        holder.execute(text("SELECT 1"))
        page = client.get("/q/2")
        assert page.status_code == 200 and b'name="value"' in page.data
        status, headers, replayed = json_save(client, assessment_id, "q1", 3, first_key)
        assert status == 200 and headers.get("Idempotent-Replayed") == "true" and replayed == receipt
        status, headers, body = json_save(client, assessment_id, "q2", 4, second_key)
        assert status == 503 and headers.get("Retry-After") == "1"
        assert "Nothing was lost" in str(body)

    assert stored_answers(sqlite_url, assessment_id) == {"q1": 3}
    status, headers, saved = json_save(client, assessment_id, "q2", 4, second_key)  # the same request, sent again
    assert status == 200 and "Idempotent-Replayed" not in headers
    assert saved["item"] == "q2" and saved["value"] == 4
    assert stored_answers(sqlite_url, assessment_id) == {"q1": 3, "q2": 4}
