"""Logs never carry what identifies a patient or opens their questionnaire.

A full patient journey (personal link, manual code, every question, background save, review,
submission) and a staff journey (sign-in, a refused sign-in, a new staff account, enrolment
with email and phone, the participant page, alerts, an export, a chart, a password change,
the second factor where the app has one, sign-out) run in-process with every logger at DEBUG
(SQLAlchemy included), followed by the background tick that sends email and SMS reminders
through a real local SMTP server and SMS gateway, once failing and once delivering. The
access log of every URL those requests used is written by gunicorn's RedactingLogger in the
formats operators use.

Every captured line (log records with their tracebacks, stdout/stderr, the tick's console
output, the access and error log) is searched for every secret the journeys used: link
tokens (also the ones reminders carried), manual codes, passwords, emails, phone numbers,
the second-factor key, and answers in context (``value=3``, ``"value": 3``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from flask import Flask
from flask.testing import FlaskClient
from gunicorn.config import Config
from sqlalchemy import Connection, delete, select, update
from sqlalchemy.orm import Session

from pro_app import create_app
from pro_app.cli import main
from pro_app.db.engine import make_engine, make_session_factory
from pro_app.db.models import Assessment, Participant, Reminder, Study
from pro_app.db.types import utcnow
from pro_app.domain.instruments import default_registry
from pro_app.gunicorn_logging import RedactingLogger
from tests.conftest import app_config
from tests.factories import STAFF_PASSWORD, make_staff, make_study

QLQ = default_registry().get("qlq_c30")
WRONG_PASSWORD = "wrong-Passphrase-4711"
NEW_PASSWORD = "brand-new-Passphrase-0815"
NEW_USER_PASSWORD = "initial-Passphrase-2024"
PATIENT_EMAIL = "jane.patient-secret@mailbox.example"
PATIENT_PHONE = "+4915199887766"
SECOND_EMAIL = "reminded.person@mailbox.example"
SECOND_PHONE = "+4917612345987"
#: The test's own SMTP server logs what it receives; it is not part of the application.
HARNESS_LOGGERS = ("mail.log",)
ANSWER_IN_CONTEXT = [
    re.compile(r"\bvalue\b\W{0,8}[1-7]\b", re.IGNORECASE),
    re.compile(r"\bq([1-9]|[12][0-9]|30)\b\W{1,8}[1-7]\b"),
]

# Formats an operator may give gunicorn: the Makefile's, gunicorn's default (with the
# referrer), and one with the raw URI and the Referer header.
ACCESS_FORMATS = [
    '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms',
    '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"',
    '%(U)s?%(q)s %({raw_uri}e)s %({query_string}e)s %({referer}i)s %({http_referer}e)s',
]


# --------------------------------------------------------------------------- real servers


class Inbox:
    """A local SMTP server's handler: refuses recipients while ``refuse`` is set (quoting the
    address, as real servers do), otherwise keeps the messages."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.refuse = False

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # type: ignore[no-untyped-def]  # noqa: N802
        if self.refuse:
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]  # noqa: N802
        await asyncio.sleep(0)
        self.messages.append(envelope.content.decode("utf-8", "replace"))
        return "250 Message accepted"


@dataclass
class Gateway:
    url: str = ""
    bodies: list[str] = field(default_factory=list)
    fail = False


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    state = Gateway()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            state.bodies.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode("utf-8"))
            self.send_response(500 if state.fail else 200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the harness's own log
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/send"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- the app


@dataclass
class Logged:
    app: Flask
    session: Session
    connection: Connection
    requests: list[dict[str, str]]  # the WSGI environ of every request, for the access log


@pytest.fixture
def logged(
    database_url: str, caplog: pytest.LogCaptureFixture, smtp: tuple[Inbox, int], gateway: Gateway
) -> Iterator[Logged]:
    """An app whose own engine is created after logging is switched to DEBUG, so SQLAlchemy
    decides to log statements (it checks the level when a connection is made).

    Every logger is set to DEBUG, not only the root: libraries that quieten themselves
    (SQLAlchemy sets ``sqlalchemy`` to WARNING) are what an operator turns up when debugging.
    """
    for name in ["", *logging.root.manager.loggerDict, "sqlalchemy.engine.Engine", "sqlalchemy.pool"]:
        caplog.set_level(logging.DEBUG, logger=name or None)
    engine = make_engine(database_url)
    with engine.connect() as connection:
        transaction = connection.begin()
        app = create_app(app_config(
            DATABASE_URL=database_url, LOG_LEVEL="DEBUG", BASE_URL="http://localhost", SMTP_HOST="127.0.0.1",
            SMTP_PORT=smtp[1], SMS_BACKEND="http", SMS_GATEWAY_URL=gateway.url, SMS_GATEWAY_TIMEOUT=5,
        ))
        factory = make_session_factory(connection, join_transaction_mode="create_savepoint")
        app.extensions["pro_db"].use_session_factory(factory)
        seen: list[dict[str, str]] = []
        inner = app.wsgi_app

        def recording(environ: dict[str, Any], start_response: Any) -> Any:
            seen.append({k: v for k, v in environ.items() if isinstance(v, str)})
            return inner(environ, start_response)

        app.wsgi_app = recording  # type: ignore[method-assign]
        session = factory()
        try:
            yield Logged(app, session, connection, seen)
        finally:
            session.close()
            transaction.rollback()
    engine.dispose()


def _sign_in(app: Flask, email: str, password: str = STAFF_PASSWORD) -> FlaskClient:
    client = app.test_client()
    client.get("/staff/login")
    response = client.post("/staff/login", data={"email": email, "password": password})
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    return client


def _hidden(page: str, name: str) -> str:
    match = re.search(rf'name="{name}"[^>]*value="([^"]*)"', page) or re.search(rf'value="([^"]*)"[^>]*name="{name}"', page)
    assert match, f"no {name} in page"
    return match.group(1)


# --------------------------------------------------------------------------- the journeys


def staff_journey(logged: Logged, secrets: set[str]) -> tuple[FlaskClient, int, str, str]:
    """Returns the nurse's client, the enrolled participant, its link token and code."""
    app, db = logged.app, logged.session
    study = make_study(db, "LOG-1")
    study.quiet_hours_start, study.quiet_hours_end = "00:00", "00:00"  # reminders may go out at any hour
    admin = make_staff(db, "admin", [], "chief.admin@hospital.example")
    nurse = make_staff(db, "nurse", [study.sites[0]], "ward.nurse@hospital.example")
    analyst = make_staff(db, "analyst", [study.sites[0]], "data.analyst@hospital.example")
    db.commit()
    secrets |= {admin.email, nurse.email, analyst.email, "new.colleague@hospital.example"}

    refused = app.test_client()
    assert refused.post("/staff/login", data={"email": nurse.email, "password": WRONG_PASSWORD}).status_code == 401
    assert refused.post("/staff/login", data={"email": "nobody.here@hospital.example", "password": WRONG_PASSWORD}
                        ).status_code == 401
    secrets.add("nobody.here@hospital.example")

    chief = _sign_in(app, admin.email)
    created = chief.post("/staff/admin/users", data={
        "email": "new.colleague@hospital.example", "password": NEW_USER_PASSWORD, "role": "nurse",
        "sites": str(study.sites[0].id)})
    assert created.status_code == 303, created.get_data(as_text=True)[:2000]

    ward = _sign_in(app, nurse.email)
    assert ward.get("/staff/participants/new").status_code == 200
    letters = []
    for subject, email, phone in (("LOG-P-1", PATIENT_EMAIL, PATIENT_PHONE), ("LOG-P-2", SECOND_EMAIL, SECOND_PHONE)):
        response = ward.post("/staff/participants/new", data={
            "subject_code": subject, "site": str(study.sites[0].id), "arm": str(study.arms[0].id), "locale": "en",
            "timezone": "", "email": email, "phone": phone})
        assert response.status_code == 200, response.get_data(as_text=True)[:2000]
        letters.append(response.get_data(as_text=True))
    tokens = [re.search(r"/p/([A-Za-z0-9_-]{20,})", letter).group(1) for letter in letters]  # type: ignore[union-attr]
    codes = [re.search(r'<code class="code">([^<]+)</code>', letter).group(1) for letter in letters]  # type: ignore[union-attr]
    secrets |= set(tokens) | set(codes)
    participant = db.scalars(select(Participant).where(Participant.subject_code == "LOG-P-1")).one()
    assert ward.get(f"/staff/participants/{participant.id}").status_code == 200
    assert ward.get("/staff/participants/").status_code == 200
    assert ward.get("/staff/").status_code == 200

    assert chief.post(f"/staff/exports/{study.id}", data={"format": "items-long"}).status_code == 200
    data_person = _sign_in(app, analyst.email)
    assert data_person.get(f"/staff/analysis/{study.id}/chart/PF2.svg").status_code == 200
    _second_factor(app, chief, secrets)
    changed = data_person.post("/staff/password", data={"current": STAFF_PASSWORD, "new": NEW_PASSWORD})
    assert changed.status_code == 200, changed.get_data(as_text=True)[:2000]
    assert data_person.post("/staff/logout").status_code == 303
    return ward, participant.id, tokens[0], codes[0]


def _second_factor(app: Flask, client: FlaskClient, secrets: set[str]) -> None:
    """Switch the administrator's second factor on, where the app has one."""
    if "staff_auth.second_factor" not in app.view_functions:
        return
    from pro_app.domain import totp  # present with the second factor

    page = client.get("/staff/second-factor").get_data(as_text=True)
    match = re.search(r'<code class="code wrap">([A-Z2-7 ]+)</code>', page)
    assert match, "the set-up page shows the key to type"
    grouped = match.group(1).strip()
    secret = totp.from_base32(grouped)
    secrets |= {grouped, grouped.replace(" ", ""), secret.hex()}
    code = totp.totp(secret, time.time())
    response = client.post("/staff/second-factor", data={"code": code})
    assert response.status_code == 303, response.get_data(as_text=True)[:2000]


def patient_journey(app: Flask, token: str, code: str) -> None:
    phone = app.test_client()
    assert phone.get(f"/p/{token}").status_code == 303
    typed = app.test_client()
    assert typed.post("/start", data={"code": code}).status_code == 303
    start = phone.get("/q/").get_data(as_text=True)
    assessment = _hidden(start, "assessment")
    assert phone.post("/q/start", data={"assessment": assessment}).status_code == 303
    for item in QLQ.items:
        values = QLQ.response_set(item.response_set).values
        # A browser that ignores the referrer policy: the Referer would carry the token.
        page = phone.get(f"/q/{item.number}", headers={"Referer": f"http://localhost/p/{token}"})
        assert page.status_code == 200
        value = values[-1] if item.number < 29 else values[0]  # alarming answers raise alerts
        response = phone.post(f"/q/{item.number}", data={"assessment": assessment, "value": str(value), "go": "next"})
        assert response.status_code == 303, response.get_data(as_text=True)[:1000]
    saved = phone.post("/q/answer", json={"assessment": int(assessment), "item": "q1", "value": 3, "key": "bg-1"})
    assert saved.status_code == 200, saved.get_data(as_text=True)
    key = _hidden(phone.get("/q/review").get_data(as_text=True), "key")
    assert phone.post("/q/submit", data={"assessment": assessment, "key": key}).status_code == 303
    assert phone.get("/q/done").status_code == 200


def reminder_ticks(logged: Logged, inbox: Inbox, gateway: Gateway, secrets: set[str]) -> list[str]:
    """One tick where SMTP refuses and the gateway fails, one where both deliver."""
    runner = logged.app.test_cli_runner()
    db = logged.session
    # The second participant's questionnaire opens just now, so its opening reminder is due.
    reminded = db.scalars(select(Participant).where(Participant.email == SECOND_EMAIL)).one()
    first = db.scalars(select(Assessment).where(Assessment.participant_id == reminded.id)
                       .order_by(Assessment.planned_at)).first()
    assert first is not None
    db.execute(delete(Reminder))
    first.window_opens_at = utcnow() - timedelta(minutes=1)
    db.commit()
    inbox.refuse, gateway.fail = True, True
    outputs = [runner.invoke(main, ["tick"]).output]
    pending = logged.session.scalars(select(Reminder)).all()
    assert pending and any(r.last_error for r in pending), ("the failing tick tried to send", outputs)
    logged.session.execute(update(Reminder).where(Reminder.status == "pending").values(
        next_attempt_at=utcnow() - timedelta(minutes=1)))
    logged.session.commit()
    inbox.refuse, gateway.fail = False, False
    outputs.append(runner.invoke(main, ["tick"]).output)
    assert inbox.messages and gateway.bodies, "the second tick delivered email and SMS"
    for text in inbox.messages + gateway.bodies:
        secrets |= set(re.findall(r"/p/([A-Za-z0-9_-]{20,})", text))
    return outputs


# --------------------------------------------------------------------------- the access log


def access_log_lines(requests: list[dict[str, str]], tmp_path: Path) -> list[str]:
    """What gunicorn's RedactingLogger writes for these requests, in each format, plus the
    error log line gunicorn writes when a request fails."""
    lines = []
    for index, access_format in enumerate(ACCESS_FORMATS):
        config = Config()
        access, errors = tmp_path / f"access-{index}.log", tmp_path / f"error-{index}.log"
        config.set("accesslog", str(access))
        config.set("errorlog", str(errors))
        config.set("access_log_format", access_format)
        logger = RedactingLogger(config)
        for environ in requests:
            raw_uri = environ.get("PATH_INFO", "") + (f"?{environ['QUERY_STRING']}" if environ.get("QUERY_STRING") else "")
            full = {"REMOTE_ADDR": "203.0.113.7", "SERVER_PROTOCOL": "HTTP/1.1", "RAW_URI": raw_uri,
                    "HTTP_USER_AGENT": "phone", **environ}
            headers = [("REFERER", full["HTTP_REFERER"])] if "HTTP_REFERER" in full else []
            response = SimpleNamespace(status="200 OK", sent=100, headers=[])
            logger.access(response, SimpleNamespace(headers=headers), full, timedelta(milliseconds=12))
            logger.exception("Error handling request %s", raw_uri)
        for handler in logger.access_log.handlers + logger.error_log.handlers:
            handler.flush()
        lines += access.read_text(encoding="utf-8").splitlines() + errors.read_text(encoding="utf-8").splitlines()
    return lines


# --------------------------------------------------------------------------- the test


def _leaks(lines: list[str], secrets: set[str]) -> list[str]:
    found = []
    for line in lines:
        for secret in secrets:
            if secret and secret.lower() in line.lower():
                found.append(f"{secret!r} in: {line[:300]}")
        for pattern in ANSWER_IN_CONTEXT:
            if pattern.search(line):
                found.append(f"an answer ({pattern.pattern}) in: {line[:300]}")
    return found


def _phone_forms(number: str) -> set[str]:
    return {number, number.lstrip("+"), number[3:]}


def test_no_secret_reaches_any_log(
    logged: Logged, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
    smtp: tuple[Inbox, int], gateway: Gateway, tmp_path: Path,
) -> None:
    secrets = {STAFF_PASSWORD, WRONG_PASSWORD, NEW_PASSWORD, NEW_USER_PASSWORD, PATIENT_EMAIL, SECOND_EMAIL}
    secrets |= _phone_forms(PATIENT_PHONE) | _phone_forms(SECOND_PHONE)
    _ward, participant_id, token, code = staff_journey(logged, secrets)
    secrets |= {code.replace("-", ""), code.lower()}
    patient_journey(logged.app, token, code)
    submitted = logged.session.scalars(select(Assessment).where(
        Assessment.participant_id == participant_id, Assessment.status == "completed")).all()
    assert len(submitted) == 1
    tick_output = reminder_ticks(logged, smtp[0], gateway, secrets)
    assert logged.session.scalar(select(Study.id).where(Study.code == "LOG-1"))

    records = [r for r in caplog.records if not r.name.startswith(HARNESS_LOGGERS)]
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    lines = [formatter.format(record) for record in records]
    assert any(r.name.startswith("sqlalchemy.engine") for r in records), "SQL logging was captured too"
    assert any(r.name == "pro_app.services.reminders" for r in records), "the reminder paths logged"
    out, err = capfd.readouterr()
    lines += out.splitlines() + err.splitlines() + [line for output in tick_output for line in output.splitlines()]
    assert len(logged.requests) > 80
    access = access_log_lines(logged.requests, tmp_path)
    assert any("/p/[token]" in line for line in access)
    lines += access
    leaks = _leaks(lines, secrets)
    by_source: dict[str, str] = {}
    for leak in leaks:
        by_source.setdefault(leak.split(" in: ", 1)[1].split(" ", 1)[0], leak)
    assert leaks == [], f"{len(leaks)} leaks; one per source:\n" + "\n".join(by_source.values())


def test_the_search_finds_what_it_looks_for() -> None:
    """The leak search itself: each kind of secret and an answer in context are found."""
    lines = ["POST /q/3 value=3", "'value': 4", '{"value": 2}', "answers {'q7': 3}", "to +4915199887766 ok",
             "mail jane.patient-secret@mailbox.example"]
    found = _leaks(lines, {PATIENT_EMAIL, *_phone_forms(PATIENT_PHONE)})
    assert len({f.split(" in: ")[1] for f in found}) == len(lines)
    assert _leaks(["GET /q/3 200 12ms", "INSERT INTO answers (item_id, value, locale) VALUES (?, ?, ?)"], set()) == []
