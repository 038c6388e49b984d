"""Configuration precedence and failing fast on a missing secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from pro_app import create_app
from pro_app.config import ConfigError, load_config


def test_defaults_then_environment_then_mapping(tmp_path: Path) -> None:
    env = {"PRO_SECRET_KEY": "from-env", "PRO_STAFF_SESSION_MINUTES": "30", "PRO_LOCALES": "en, es"}
    config = load_config({"STAFF_SESSION_MINUTES": 5}, environ=env, instance_path=tmp_path)
    assert config["SECRET_KEY"] == "from-env"
    assert config["STAFF_SESSION_MINUTES"] == 5
    assert config["LOCALES"] == ["en", "es"]
    assert config["DATABASE_URL"] == f"sqlite:///{tmp_path / 'pro-app.sqlite3'}"


def test_missing_secret_fails_fast_outside_development(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PRO_SECRET_KEY"):
        load_config(environ={}, instance_path=tmp_path)


def test_development_reads_the_generated_secret(tmp_path: Path) -> None:
    (tmp_path / "secret_key").write_text("generated-secret\n", encoding="utf-8")
    config = load_config(environ={"PRO_ENV": "development"}, instance_path=tmp_path)
    assert config["SECRET_KEY"] == "generated-secret"
    with pytest.raises(ConfigError):
        load_config(environ={"PRO_ENV": "production"}, instance_path=tmp_path)


def test_bad_numbers_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PRO_STAFF_SESSION_MINUTES"):
        load_config(environ={"PRO_SECRET_KEY": "x", "PRO_STAFF_SESSION_MINUTES": "soon"}, instance_path=tmp_path)


def test_create_app_does_no_database_io() -> None:
    """An unreachable database does not stop the app from being created (gunicorn forks after)."""
    app = create_app({"SECRET_KEY": "x", "DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"})
    assert app.config["DATABASE_URL"].endswith("/none")
