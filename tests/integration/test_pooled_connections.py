"""PostgreSQL connections that die in the pool (database restart, failover,
``pg_terminate_backend``): one that sat idle is checked and replaced before a request uses it;
one used a moment ago is used at once, so a request on a connection killed in that moment is
answered 503 ("nothing was lost") and the pool replaces its connections for the next one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from pro_app import create_app
from pro_app.db.migrate import upgrade
from tests.conftest import app_config, scratch_postgres
from tests.factories import committed_started_patient


@pytest.fixture(scope="module")
def own_database() -> Iterator[str]:
    with scratch_postgres("pool") as url:
        upgrade(url)
        yield url


def _terminate_connections_of(url: str) -> int:
    """Kill every other connection to the database of ``url``, as a restart would."""
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            return len(connection.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )).all())
    finally:
        admin.dispose()


def _pings(app: Flask) -> list[float]:
    """Record each check of a pooled connection (the dialect's ping)."""
    engine = app.extensions["pro_db"].engine
    seen: list[float] = []
    ping = engine.dialect.do_ping

    def counting(dbapi_connection: object) -> bool:
        seen.append(time.monotonic())
        return bool(ping(dbapi_connection))

    engine.dialect.do_ping = counting  # type: ignore[method-assign]
    return seen


@contextmanager
def _patient_on_a_page(url: str, study_code: str, ping_idle_after_ms: int) -> Iterator[tuple[FlaskClient, list[float]]]:
    """A patient who opened their link and the first question (the pool's connection used),
    in an app checking connections idle for longer than ``ping_idle_after_ms``; and the
    checks made from then on."""
    token, _assessment = committed_started_patient(url, study_code, "P-001")
    app = create_app(app_config(DATABASE_URL=url, DATABASE_PING_IDLE_MS=ping_idle_after_ms))
    try:
        pings = _pings(app)
        client = app.test_client()
        assert client.get(f"/p/{token}").status_code == 303
        assert client.get("/q/1").status_code == 200
        yield client, pings
    finally:
        app.extensions["pro_db"].engine.dispose()


def test_an_idle_connection_killed_in_the_pool_is_replaced_before_use(own_database: str) -> None:
    with _patient_on_a_page(own_database, "POOL-1", ping_idle_after_ms=50) as (client, pings):
        assert pings == []  # used a moment ago: no check
        time.sleep(0.1)
        assert _terminate_connections_of(own_database) >= 1
        page = client.get("/q/2")
        assert page.status_code == 200 and b"item-text" in page.data
        assert len(pings) == 1


def test_a_connection_killed_a_moment_after_use_fails_one_request_only(own_database: str) -> None:
    with _patient_on_a_page(own_database, "POOL-2", ping_idle_after_ms=60_000) as (client, pings):
        assert _terminate_connections_of(own_database) >= 1
        failed = client.get("/q/2")
        assert failed.status_code == 503
        assert b"Nothing was lost" in failed.data
        assert client.get("/q/2").status_code == 200  # the pool replaced the dead connection
        assert pings == []
