"""Configuration: built-in defaults, then ``PRO_*`` environment variables, then a mapping.

Configuration is read when the application is created, never at import time, so tests and
several app instances in one process can each have their own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Where the embedded database and generated secrets live (``instance/`` beside the checkout).
DEFAULT_INSTANCE_PATH = Path(__file__).resolve().parent.parent / "instance"

DEFAULTS: dict[str, Any] = {
    "ENV": "production",
    "SECRET_KEY": None,
    "DATABASE_URL": None,  # None: SQLite file under the instance folder
    "SQLITE_BUSY_TIMEOUT_MS": 15000,
    # PostgreSQL: a pooled connection idle for longer is checked before use (docs/operations.md).
    "DATABASE_PING_IDLE_MS": 1000,
    "DEFAULT_LOCALE": "en",
    "LOCALES": ["en", "zh_Hans", "es", "ar"],
    "DEFAULT_TIMEZONE": "UTC",
    "BASE_URL": "http://127.0.0.1:8000",
    "MAX_CONTENT_LENGTH": 64 * 1024,
    "STAFF_SESSION_MINUTES": 15,
    "PATIENT_LINK_DAYS": 400,
    "PATIENT_GRACE_MINUTES": 120,
    "CODE_ATTEMPTS_PER_WINDOW": 10,
    "CODE_ATTEMPT_WINDOW_MINUTES": 15,
    "LOG_LEVEL": "INFO",
    "SMTP_HOST": "localhost",
    "SMTP_PORT": 25,
    "SMTP_TLS": "none",
    "SMTP_USER": None,
    "SMTP_PASSWORD": None,
    "MAIL_FROM": "pro-app@localhost",
    "SMS_BACKEND": None,  # console (development default), http, or none (production default)
    "SMS_GATEWAY_URL": None,
    "SMS_GATEWAY_USER": None,
    "SMS_GATEWAY_PASSWORD": None,
    "SMS_PAYLOAD_TEMPLATE": None,  # default: {"to": "{to}", "text": "{text}"}
    "SMS_GATEWAY_TIMEOUT": 10,
    "PREFERRED_URL_SCHEME": "http",
    # Session cookie "Secure" flag: "auto" sets it when BASE_URL is https:// or the request
    # itself arrived over HTTPS; "always" sets it on every response (for a TLS proxy in front
    # whose scheme the app cannot see, with an http:// BASE_URL). See docs/staff.md.
    "COOKIE_SECURE": "auto",
    # Name of the service in staff members' authenticator apps (the otpauth:// issuer).
    "SECOND_FACTOR_ISSUER": "pro-app",
    # Time allowed between an accepted password and the second-factor code.
    "SECOND_FACTOR_PENDING_MINUTES": 5,
    "AUDIT_GUARD": "log",  # off | log | raise: what a commit of unaudited changes does (docs/staff.md)
}

# Settings that must be converted from the strings the environment gives.
_INT_KEYS = {
    "SQLITE_BUSY_TIMEOUT_MS",
    "DATABASE_PING_IDLE_MS",
    "MAX_CONTENT_LENGTH",
    "STAFF_SESSION_MINUTES",
    "PATIENT_LINK_DAYS",
    "PATIENT_GRACE_MINUTES",
    "CODE_ATTEMPTS_PER_WINDOW",
    "CODE_ATTEMPT_WINDOW_MINUTES",
    "SMTP_PORT",
    "SMS_GATEWAY_TIMEOUT",
    "SECOND_FACTOR_PENDING_MINUTES",
}
#: Settings limited to a few words.
_CHOICE_KEYS = {"COOKIE_SECURE": ("auto", "always")}
_LIST_KEYS = {"LOCALES"}


class ConfigError(RuntimeError):
    """The configuration cannot run the application; the message says what to set."""


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in DEFAULTS:
        raw = environ.get(f"PRO_{key}")
        if raw is None or raw == "":
            continue
        if key in _INT_KEYS:
            try:
                values[key] = int(raw)
            except ValueError as exc:
                raise ConfigError(f"PRO_{key} must be a whole number, got {raw!r}") from exc
        elif key in _LIST_KEYS:
            values[key] = [part.strip() for part in raw.split(",") if part.strip()]
        else:
            values[key] = raw
    return values


def load_config(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    instance_path: Path = DEFAULT_INSTANCE_PATH,
) -> dict[str, Any]:
    """Merge defaults, ``PRO_*`` variables and ``overrides`` (in that order of precedence)."""
    config: dict[str, Any] = dict(DEFAULTS)
    config.update(_from_environment(os.environ if environ is None else environ))
    config.update(overrides or {})
    if not config["DATABASE_URL"]:
        config["DATABASE_URL"] = f"sqlite:///{instance_path / 'pro-app.sqlite3'}"
    if not config.get("SECRET_KEY"):
        config["SECRET_KEY"] = _development_secret(config, instance_path)
    for key, allowed in _CHOICE_KEYS.items():
        if config[key] not in allowed:
            raise ConfigError(f"PRO_{key} must be one of {', '.join(allowed)}, got {config[key]!r}")
    if config["DEFAULT_LOCALE"] not in config["LOCALES"]:
        raise ConfigError(
            f"PRO_DEFAULT_LOCALE {config['DEFAULT_LOCALE']!r} is not one of PRO_LOCALES {config['LOCALES']}"
        )
    return config


def _development_secret(config: Mapping[str, Any], instance_path: Path) -> str:
    """In development the secret is read from ``instance/secret_key`` (``make run`` writes it).

    Outside development a missing secret is a deployment error: signing cookies with a
    made-up key would silently log everybody out on each restart and on every other
    instance behind the load balancer.
    """
    secret_file = instance_path / "secret_key"
    if config["ENV"] == "development" and secret_file.is_file():
        return secret_file.read_text(encoding="utf-8").strip()
    raise ConfigError(
        "No secret key configured. Set PRO_SECRET_KEY (e.g. `python -c 'import secrets; "
        "print(secrets.token_hex(32))'`), or for local development set PRO_ENV=development "
        f"and write one into {secret_file} (`make run` does this)."
    )
