"""The ceiling: a bare Flask app that does the least work each measured path could possibly do.

Served by ``benchmarks/web.py`` with exactly the gunicorn settings of ``make run`` (same
worker count and class, loopback bind, the same access log format and logger class), on the
same machine and in the same run as pro-app, so that each pro-app figure can be read as a
share of what this machine can serve at all with this stack:

- ``GET /plain``: a plain-text response (the cost of gunicorn + Flask alone);
- ``GET /form``: a static form of 30 radio buttons rendered from a Jinja template, about
  the size of the patient's question page (the least a question page can cost);
- ``POST /insert``: one row inserted and committed in SQLite (WAL journal,
  ``synchronous=FULL``, ``BEGIN IMMEDIATE`` and a busy timeout, as pro-app's engine does),
  a small JSON reply (the least a durable answer save can cost);
- ``POST /insert-postgres``: the same row inserted and committed in PostgreSQL (psycopg, one
  connection per worker thread, a transaction per request as pro-app's writes use), when
  ``CEILING_POSTGRES`` names a database (a libpq connection string). Not a budget's ceiling:
  it shows what the cheapest durable write costs on PostgreSQL on the same machine, so that
  pro-app's saves on PostgreSQL can be read against both;
- ``POST /save-audited``: not a budget's ceiling either: the writes of pro-app's answer save
  in plain SQL on SQLite, as lean as they can be written -- in one ``BEGIN IMMEDIATE``
  transaction, the stored answer and the audit chain's head read in one statement, the
  request's receipt inserted unless its request id has one (a repetition writes nothing
  more), the answer inserted or changed, an audit event hashed (SHA-256 over its content
  and the previous hash) and appended, the head moved. It leaves out what pro-app does
  around the writes (session cookie, CSRF token, sign-in read, validation, wording, the ORM
  session and its audit guard), so the two can be read against each other;
- ``GET /healthz``: for the harness to know the server is up.

The SQLite file is named by ``CEILING_DATABASE`` (created if missing). Run by hand:
``CEILING_DATABASE=/tmp/c.sqlite3 .venv/bin/gunicorn --chdir benchmarks ceiling_app:app``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from datetime import datetime, timezone
from typing import Any

from flask import Flask, Response, g, jsonify, render_template, request
from jinja2 import DictLoader

#: 30 radio buttons in 6 fieldsets of 5, with labels, hidden fields and buttons: close to
#: the markup and size of pro-app's question page (web.py prints both sizes).
FORM_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<link rel="stylesheet" href="/static/app.css">
<meta name="csrf-token" content="{{ token }}">
</head>
<body class="patient">
<header class="top"><span class="brand">{{ title }}</span></header>
<main id="main">
<form method="post" action="/form" class="question" id="question-form" autocomplete="off">
  <input type="hidden" name="csrf_token" value="{{ token }}">
  <input type="hidden" name="request_id" value="{{ request_id }}">
  <h1 class="progress-text" id="progress-text">Form with {{ groups|length * 5 }} choices</h1>
  <progress max="30" value="1" aria-labelledby="progress-text"></progress>
  {%- for group in groups %}
  <fieldset>
    <legend><span class="recall">During the past week:</span>
      <span class="item-text">Statement number {{ group }} about how you have been feeling lately?</span></legend>
    <div class="options labelled">
    {%- for value in values %}
      <label class="option" for="g{{ group }}v{{ value }}">
        <input type="radio" id="g{{ group }}v{{ value }}" name="g{{ group }}" value="{{ value }}">
        <span>{{ labels[value] }}</span>
      </label>
    {%- endfor %}
    </div>
  </fieldset>
  {%- endfor %}
  <p class="save-state" id="save-state" role="status" aria-live="polite"></p>
  <div class="actions">
    <button type="submit" name="go" value="back" class="secondary">Back</button>
    <button type="submit" name="go" value="next">Next</button>
  </div>
</form>
</main>
<footer class="bottom"><p>Static form used to measure the ceiling of a rendered page.</p></footer>
<script src="/static/questionnaire.js" defer></script>
</body>
</html>
"""
LABELS = {1: "Not at all", 2: "A little", 3: "Quite a bit", 4: "Very much", 5: "Does not apply"}


def _use_wal(connection: sqlite3.Connection) -> None:
    """Switch a new database to WAL. Both workers open it at once on their first request, and
    the switch answers "database is locked" at once rather than waiting out the busy timeout,
    so the loser tries again until the other worker's switch is done."""
    deadline = time.monotonic() + 15
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


_PER_THREAD = threading.local()


def _connection() -> sqlite3.Connection:
    """One connection per worker thread, opened on first use (after gunicorn's fork)."""
    connection: sqlite3.Connection | None = getattr(_PER_THREAD, "connection", None)
    if connection is None:
        connection = sqlite3.connect(os.environ.get("CEILING_DATABASE", "ceiling.sqlite3"), isolation_level=None)
        connection.execute("PRAGMA busy_timeout = 15000")
        _use_wal(connection)
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute(
            "CREATE TABLE IF NOT EXISTS saves (id INTEGER PRIMARY KEY, request_id TEXT NOT NULL, "
            "value INTEGER NOT NULL, saved_at REAL NOT NULL)"
        )
        connection.executescript(_AUDITED_SAVE_SCHEMA)
        _PER_THREAD.connection = connection
    return connection


#: The tables of ``/save-audited``, shaped like pro-app's (keys and indexes alike).
_AUDITED_SAVE_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS receipts (request_id TEXT PRIMARY KEY, assessment_id INTEGER NOT NULL,
    item_id TEXT NOT NULL, value INTEGER NOT NULL, outcome TEXT NOT NULL, recorded_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS ix_receipts_assessment ON receipts (assessment_id);
CREATE TABLE IF NOT EXISTS answers (id INTEGER PRIMARY KEY, assessment_id INTEGER NOT NULL,
    item_id TEXT NOT NULL, value INTEGER NOT NULL, answered_at REAL NOT NULL, UNIQUE (assessment_id, item_id));
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, occurred_at TEXT NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, entity_id TEXT NOT NULL, before TEXT, after TEXT NOT NULL, prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS ix_events_entity ON events (entity_id, seq);
CREATE TABLE IF NOT EXISTS head (id INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL, last_hash TEXT NOT NULL);
INSERT OR IGNORE INTO head (id, last_seq, last_hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
COMMIT;
"""
_STORED_AND_HEAD = (
    "SELECT head.last_seq, head.last_hash, answers.id, answers.value FROM head "
    "LEFT JOIN answers ON answers.assessment_id = ? AND answers.item_id = ? WHERE head.id = 1"
)


def _save_audited(
    connection: sqlite3.Connection, request_id: str, assessment: int, item: str, value: int
) -> dict[str, Any]:
    """One audited, idempotent answer save (see the module's docstring)."""
    now = time.time()
    connection.execute("BEGIN IMMEDIATE")
    try:
        last_seq, last_hash, answer_id, stored = connection.execute(_STORED_AND_HEAD, (assessment, item)).fetchone()
        outcome = "unchanged" if stored == value else "saved"
        added = connection.execute(
            "INSERT INTO receipts (request_id, assessment_id, item_id, value, outcome, recorded_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING RETURNING request_id",
            (request_id, assessment, item, value, outcome, now),
        ).fetchone()
        if added is not None and outcome == "saved":
            if answer_id is None:
                connection.execute("INSERT INTO answers (assessment_id, item_id, value, answered_at) VALUES (?, ?, ?, ?)",
                                   (assessment, item, value, now))
            else:
                connection.execute("UPDATE answers SET value = ?, answered_at = ? WHERE id = ?", (value, now, answer_id))
            before = None if stored is None else json.dumps({"value": stored})
            after = json.dumps({"item": item, "value": value, "request_id": request_id}, sort_keys=True)
            occurred = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="microseconds")
            event = [last_seq + 1, occurred, "participant", "answer.save", str(assessment), before, after, last_hash]
            digest = hashlib.sha256(json.dumps(event, separators=(",", ":")).encode()).hexdigest()
            connection.execute("INSERT INTO events (seq, occurred_at, actor, action, entity_id, before, after, "
                               "prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (*event, digest))
            connection.execute("UPDATE head SET last_seq = ?, last_hash = ? WHERE id = 1", (last_seq + 1, digest))
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return {"request_id": request_id, "assessment": assessment, "item": item, "value": value, "outcome": outcome,
            "replayed": added is None}


def _postgres() -> Any:
    """One PostgreSQL connection per worker thread, opened on first use (after the fork)."""
    connection = getattr(_PER_THREAD, "postgres", None)
    if connection is None:
        import psycopg  # only when the PostgreSQL reference is measured

        connection = psycopg.connect(os.environ["CEILING_POSTGRES"], autocommit=True)
        with connection.transaction():
            # Both workers create the table on their first request; PostgreSQL's IF NOT EXISTS
            # is not safe against a concurrent CREATE, so they take turns on a transaction lock.
            connection.execute("SELECT pg_advisory_xact_lock(hashtext('pro-app ceiling saves'))")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS saves (id BIGSERIAL PRIMARY KEY, request_id TEXT NOT NULL, "
                "value INTEGER NOT NULL, saved_at DOUBLE PRECISION NOT NULL)"
            )
        _PER_THREAD.postgres = connection
    return connection


def _posted_value() -> int:
    payload = request.get_json(silent=True) or {}
    value = payload.get("value", 1) if isinstance(payload, dict) else 1
    return value if isinstance(value, int) else 1


def create_ceiling_app() -> Flask:
    app = Flask(__name__)
    # A loader (not render_template_string, which compiles on every call): the template is
    # compiled once per worker and cached, as pro-app's file templates are.
    app.jinja_loader = DictLoader({"form.html": FORM_TEMPLATE})

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok", mimetype="text/plain")

    @app.get("/plain")
    def plain() -> Response:
        return Response("Hello, patient.\n", mimetype="text/plain")

    @app.get("/form")
    def form() -> str:
        return render_template(
            "form.html", title="Ceiling form", token="a" * 91, request_id="00000000-0000-4000-8000-000000000000",
            groups=range(1, 7), values=range(1, 6), labels=LABELS,
        )

    @app.post("/insert")
    def insert() -> tuple[Response, int]:
        value = _posted_value()
        connection = _connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            cursor = connection.execute(
                "INSERT INTO saves (request_id, value, saved_at) VALUES (?, ?, ?)",
                (request.headers.get("Idempotency-Key", ""), value, time.time()),
            )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        g.row = cursor.lastrowid
        return jsonify(saved=True, id=g.row), 200

    @app.post("/save-audited")
    def save_audited() -> tuple[Response, int]:
        payload = request.get_json(silent=True)
        fields = payload if isinstance(payload, dict) else {}
        assessment, item = fields.get("assessment"), fields.get("item")
        request_id = request.headers.get("Idempotency-Key", "")
        if not isinstance(assessment, int) or not isinstance(item, str) or not request_id:
            return jsonify(error="assessment, item and Idempotency-Key are required"), 400
        return jsonify(_save_audited(_connection(), request_id, assessment, item, _posted_value())), 200

    @app.post("/insert-postgres")
    def insert_postgres() -> tuple[Response, int]:
        value = _posted_value()
        connection = _postgres()
        with connection.transaction():  # BEGIN ... COMMIT (ROLLBACK on an error)
            row = connection.execute(
                "INSERT INTO saves (request_id, value, saved_at) VALUES (%s, %s, %s) RETURNING id",
                (request.headers.get("Idempotency-Key", ""), value, time.time()),
            ).fetchone()
        g.row = row[0] if row else None
        return jsonify(saved=True, id=g.row), 200

    return app


app = create_ceiling_app()
