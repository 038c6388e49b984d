"""Error pages: a clear, translated message and the right status, never a traceback."""

from __future__ import annotations

from flask import Flask, render_template, request
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException, InternalServerError

from pro_app.extensions import database

MESSAGES = {
    400: (_l("The request could not be understood"), _l("Please go back and try again.")),
    401: (_l("Please sign in again"), _l("Your session has ended. Open your personal link again, or sign in.")),
    403: (_l("Access denied"), _l("You do not have permission to open this page.")),
    404: (_l("Page not found"), _l("Check the address, or go back to the previous page.")),
    405: (_l("Action not allowed"), _l("This page cannot be used in that way.")),
    413: (_l("Too much data sent"), _l("The information sent was larger than allowed.")),
    429: (_l("Too many attempts"), _l("Please wait a few minutes and try again.")),
    500: (_l("Something went wrong"), _l("The problem has been recorded. Please try again later.")),
    503: (_l("Service unavailable"), _l("Please try again in a few minutes.")),
}


def _render(status: int, detail: str | None = None) -> tuple[str | dict[str, object], int]:
    title, message = MESSAGES.get(status, MESSAGES[500] if status >= 500 else MESSAGES[400])
    if request.accept_mimetypes.best == "application/json":
        return {"error": str(title), "message": detail or str(message)}, status
    return render_template("errors/error.html", status=status, title=title, message=detail or message), status


def csrf_failure() -> tuple[str | dict[str, object], int]:
    """The answer to a form whose CSRF token is missing or expired (blueprints that can keep
    what the form carried handle their own forms first and fall back to this)."""
    return _render(400, str(_l("The form had expired. Please go back, reload the page and try again.")))


def register(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def _csrf(_error: CSRFError) -> tuple[str | dict[str, object], int]:
        return csrf_failure()

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> tuple[str | dict[str, object], int]:
        return _render(error.code or 500)

    @app.errorhandler(DBAPIError)
    def _database(error: DBAPIError) -> tuple[str | dict[str, object], int] | tuple[str | dict[str, object], int, dict[str, str]]:
        if _database_busy(error):
            # SQLite's writer waited its whole busy timeout: others kept the database busy.
            # Nothing was written; the page and the offline queue retry with the same request id.
            database.session.rollback()
            app.logger.warning("Database busy during %s %s; answered 503", request.method, request.url_rule)
            body, status = _render(503, str(_l("The service is busy. Nothing was lost: please try again.")))
            return body, status, {"Retry-After": "1"}
        if _storage_failed(error):
            # The disk refused a write or a sync: what this request committed may not be on
            # disk, so it is not acknowledged. The client retries (patients' saves with the same
            # request id); the server's storage needs attention.
            try:
                database.session.rollback()
            except DBAPIError:
                pass
            app.logger.critical("Disk I/O error during %s %s; answered 503: check the database's storage",
                                request.method, request.url_rule)
            body, status = _render(503)
            return body, status, {"Retry-After": "5"}
        if not error.connection_invalidated:
            return _unexpected(error)
        # The database connection was lost under the request (a restart, a fail-over, its
        # connections terminated). Its transaction died with it, so nothing was stored: say
        # "briefly unavailable, try again" -- the patient's page and the offline queue retry
        # with the same request id -- rather than report an error. The pool has already
        # dropped the connection; the next request gets a fresh one.
        try:
            database.session.rollback()
        except DBAPIError:
            pass
        app.logger.warning("Database connection lost during %s %s; answered 503", request.method, request.url_rule)
        body, status = _render(503, str(_l("The connection to the database was interrupted. Nothing was lost: please try again.")))
        return body, status, {"Retry-After": "1"}

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> tuple[str | dict[str, object], int]:
        # Roll back whatever the failed request half-did; log it without request data.
        database.session.rollback()
        app.logger.exception("Unhandled error on %s %s", request.method, request.url_rule)
        return _render(InternalServerError.code)


def _storage_failed(error: DBAPIError) -> bool:
    """SQLite's "disk I/O error": reading, writing or syncing the database's files failed."""
    return isinstance(error, OperationalError) and "disk i/o error" in str(error.orig).lower()


def _database_busy(error: DBAPIError) -> bool:
    """SQLite's "database is locked" (or "busy"): the write lock was not free in time."""
    return isinstance(error, OperationalError) and any(
        words in str(error.orig).lower() for words in ("database is locked", "database is busy")
    )
