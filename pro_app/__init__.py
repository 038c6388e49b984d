"""pro-app: patient-reported outcomes in cancer clinical trials.

``create_app`` only wires things together: configuration, extensions, blueprints, CLI and
logging. It performs no database queries, migrations or network calls, so gunicorn can
import it before forking workers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from pro_app.config import DEFAULT_INSTANCE_PATH, load_config
from pro_app.extensions import babel, csrf, database
from pro_app.web import cookies, errors, health, i18n, security, signed, static_files
from pro_app.web.patient import views as patient
from pro_app.web.staff import admin, analysis, dashboard, exports, guard, participants, reports, staff_auth

TRANSLATIONS_DIR = Path(__file__).resolve().parent.parent / "translations"


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__, instance_path=str(DEFAULT_INSTANCE_PATH), instance_relative_config=False)
    _configure(app, config)
    _configure_logging(app)
    _init_extensions(app)
    _register_blueprints(app)
    return app


def _configure(app: Flask, overrides: Mapping[str, Any] | None) -> None:
    app.config.update(load_config(overrides))
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", str(TRANSLATIONS_DIR))
    app.config["BABEL_DEFAULT_LOCALE"] = app.config["DEFAULT_LOCALE"]
    cookies.configure(app)  # HttpOnly, SameSite=Lax, Secure over HTTPS
    app.config["WTF_CSRF_TIME_LIMIT"] = None  # the session lifetime bounds the token instead


def _configure_logging(app: Flask) -> None:
    app.logger.setLevel(getattr(logging, str(app.config["LOG_LEVEL"]).upper(), logging.INFO))


def _init_extensions(app: Flask) -> None:
    database.init_app(app)
    csrf.init_app(app)
    babel.init_app(app, locale_selector=i18n.select_locale, timezone_selector=i18n.select_timezone)


def _register_blueprints(app: Flask) -> None:
    app.register_blueprint(health.bp)
    app.register_blueprint(i18n.bp)
    app.register_blueprint(patient.bp)
    for blueprint in (staff_auth.bp, dashboard.bp, participants.bp, admin.bp, reports.bp, analysis.bp, exports.bp):
        app.register_blueprint(blueprint)
    app.jinja_env.globals["current_staff"] = guard.current_staff
    i18n.register(app)
    signed.register(app)
    errors.register(app)
    security.register(app)
    static_files.register(app)
