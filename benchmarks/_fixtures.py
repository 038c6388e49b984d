"""Shared set-up for the benchmarks: a migrated throw-away SQLite database and an app on it."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask import Flask  # noqa: E402

from pro_app import create_app  # noqa: E402
from pro_app.db.migrate import upgrade  # noqa: E402


def figure(
    name: str, value: float | None, unit: str, *, budget: str = "", passed: bool | None = None,
    ceiling: float | None = None, ratio: float | None = None, note: str = "",
) -> dict[str, Any]:
    """One row of the results table that benchmarks/run_all.py prints and writes.

    ``passed`` is None where there is no budget, or where the run was too small to judge it
    (``--quick`` sizes); ``ceiling`` and ``ratio`` are for figures measured against one.
    """
    return {"name": name, "value": value, "unit": unit, "ceiling": ceiling, "ratio": ratio,
            "budget": budget, "pass": passed, "note": note}


def print_figures_json(figures: list[dict[str, Any]]) -> None:
    """The machine-readable result (``--json``): one line, the last one the script prints."""
    print(json.dumps({"figures": figures}), flush=True)


def temporary_app(**config: object) -> Flask:
    folder = Path(tempfile.mkdtemp(prefix="pro-bench-"))
    url = f"sqlite:///{folder / 'bench.sqlite3'}"
    upgrade(url)
    return create_app({"SECRET_KEY": "benchmark", "DATABASE_URL": url, "BASE_URL": "http://127.0.0.1", **config})


def temporary_sqlite_url() -> str:
    """A migrated SQLite database in a fresh temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="pro-bench-"))
    url = f"sqlite:///{folder / 'bench.sqlite3'}"
    upgrade(url)
    return url


def fresh_postgres_url(url: str) -> str:
    """The PostgreSQL database at ``url``, created if missing, emptied and migrated to head.

    Refuses the test suite's database: benchmarks drop everything in the schema they use.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    name = parsed.database or ""
    if not name or name in ("test", "postgres", "template0", "template1"):
        raise SystemExit(f"refusing to benchmark in the database {name!r}; use a dedicated one such as 'bench'")
    server = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as connection:
            exists = connection.scalar(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name})
            if not exists:
                quoted = connection.dialect.identifier_preparer.quote(name)
                connection.execute(text(f"CREATE DATABASE {quoted}"))
    finally:
        server.dispose()
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()
    upgrade(url)
    return url


def optional_postgres_url(env: str, default: str, *, skip: bool = False) -> str | None:
    """A fresh PostgreSQL database for a benchmark (see :func:`fresh_postgres_url`): the one
    the environment variable ``env`` names, else ``default``; None when skipped, or when none
    is configured and the default's server is not reachable (a configured one must work)."""
    from sqlalchemy.exc import OperationalError

    if skip:
        return None
    configured = os.environ.get(env)
    try:
        return fresh_postgres_url(configured or default)
    except OperationalError as error:
        if configured:
            raise
        print(f"PostgreSQL skipped: {default} is not reachable ({type(error).__name__})")
        return None


def drop_postgres_database(url: str) -> None:
    """Drop the benchmark's PostgreSQL database at ``url`` (its connections closed first)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    server = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as connection:
            quoted = connection.dialect.identifier_preparer.quote(parsed.database or "")
            connection.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
    finally:
        server.dispose()
