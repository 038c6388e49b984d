"""Shared set-up for the benchmarks: a migrated throw-away SQLite database and an app on it."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask import Flask  # noqa: E402

from pro_app import create_app  # noqa: E402
from pro_app.db.migrate import upgrade  # noqa: E402


def temporary_app(**config: object) -> Flask:
    folder = Path(tempfile.mkdtemp(prefix="pro-bench-"))
    url = f"sqlite:///{folder / 'bench.sqlite3'}"
    upgrade(url)
    return create_app({"SECRET_KEY": "benchmark", "DATABASE_URL": url, "BASE_URL": "http://127.0.0.1", **config})
