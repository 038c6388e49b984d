"""Health check and error pages: clear messages, right status codes, never a traceback."""

from __future__ import annotations

import pytest
from flask import Flask, abort
from flask.testing import FlaskClient

from pro_app import create_app
from tests.conftest import app_config


def test_healthz_reports_the_database(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "reachable"}


def test_healthz_is_503_when_the_database_is_unreachable() -> None:
    app = create_app(app_config(DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none"))
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["database"] == "unreachable"


def test_404_page_is_friendly(client: FlaskClient) -> None:
    response = client.get("/no/such/page")
    assert response.status_code == 404
    body = response.get_data(as_text=True)
    assert "Page not found" in body and '<html lang="en"' in body


def test_405(client: FlaskClient) -> None:
    response = client.delete("/healthz")
    assert response.status_code == 405
    assert "Action not allowed" in response.get_data(as_text=True)


def test_413_for_oversized_bodies(client: FlaskClient) -> None:
    response = client.post("/language", data={"lang": "x" * 200_000})
    assert response.status_code == 413
    assert "Too much data sent" in response.get_data(as_text=True)


def test_missing_csrf_token_is_a_clear_400(app: Flask) -> None:
    app.config["WTF_CSRF_ENABLED"] = True
    response = app.test_client().post("/language", data={"lang": "en", "next": "/"})
    assert response.status_code == 400
    assert "The form had expired" in response.get_data(as_text=True)


def test_json_clients_get_json_errors(client: FlaskClient) -> None:
    response = client.get("/nothing", headers={"Accept": "application/json"})
    assert response.status_code == 404
    assert response.get_json()["error"] == "Page not found"


@pytest.fixture
def failing_app(app: Flask) -> Flask:
    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("secret internal detail: token=abc123")

    @app.get("/forbidden")
    def forbidden() -> str:
        abort(403)

    return app


def test_500_page_shows_no_traceback(failing_app: Flask) -> None:
    failing_app.testing = False  # let the error handler run as in production
    failing_app.config["PROPAGATE_EXCEPTIONS"] = False
    response = failing_app.test_client().get("/boom")
    assert response.status_code == 500
    body = response.get_data(as_text=True)
    assert "Something went wrong" in body
    assert "Traceback" not in body and "secret internal detail" not in body and "RuntimeError" not in body


def test_403(failing_app: Flask) -> None:
    response = failing_app.test_client().get("/forbidden")
    assert response.status_code == 403 and "Access denied" in response.get_data(as_text=True)


def test_security_headers_on_every_response(client: FlaskClient) -> None:
    for path in ("/healthz", "/missing", "/static/css/app.css"):
        headers = client.get(path).headers
        csp = headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "object-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
    assert client.get("/healthz").headers["Cache-Control"] == "no-store"


def test_language_switch_only_follows_local_paths(client: FlaskClient) -> None:
    response = client.post("/language", data={"lang": "en", "next": "https://evil.example/"})
    assert response.status_code == 303 and response.headers["Location"] == "/"
    response = client.post("/language", data={"lang": "xx-unknown", "next": "/healthz"})
    assert response.status_code == 303 and response.headers["Location"] == "/healthz"
