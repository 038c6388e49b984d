"""Security headers on every response the app serves, and no inline code in any page.

Every route x method (and HEAD, OPTIONS) is requested as an anonymous visitor, a signed-in
patient and an administrator, plus the error statuses (400, 401, 403, 404, 405, 413, 429),
static files, downloads and the health check. Every response must carry a strict
Content-Security-Policy, ``nosniff``, ``no-referrer`` (patient links carry their token in the
URL), HSTS exactly when served over HTTPS, and ``Cache-Control: no-store`` unless it is a
static asset. Every HTML page is scanned for what the policy would block: inline scripts,
``on*`` handlers, ``style`` attributes and elements, ``javascript:`` URLs, foreign resources.

The helpers here (the world of test data and the two checks) are shared with
``test_fuzz_endpoints.py``, which applies the same checks to every fuzzed response.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from pro_app import create_app
from pro_app.db.models import Alert, Assessment, Participant, StaffUser, Study
from pro_app.domain.instruments import default_registry
from pro_app.domain.states import AssessmentMode
from pro_app.services.participants import enrol_participant
from pro_app.services.questionnaire import record_answer, start_assessment, submit_assessment
from pro_app.services.texts import text_for
from tests.conftest import app_config, migrated_sqlite
from tests.factories import STAFF_PASSWORD, link_for, make_staff, make_study, now_utc, sign_in

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "pro_app" / "static"
QLQ = default_registry().get("qlq_c30")
ONE_YEAR = 31_536_000
GRACE = timedelta(minutes=120)


# --------------------------------------------------------------------------- the world


@dataclass
class World:
    """Rows of two studies and two sites, with secrets known to the tests."""

    study: Study
    empty_study: Study  # no schedule template, no participants
    patient: Participant  # site A, questionnaire in progress with some answers
    completed: Participant  # site A, baseline submitted, an open alert
    other: Participant  # site B, questionnaire open, an open alert
    withdrawn: Participant  # site B
    tokens: dict[str, str]  # participant name -> link token
    codes: dict[str, str]
    links: dict[str, int]
    assessments: dict[str, int]  # participant name -> baseline assessment id
    alerts: dict[str, int]
    staff: dict[str, StaffUser]  # admin, nurse (site A), analyst (site A), nurse_b (site B), inactive
    emails: dict[str, str] = field(default_factory=dict)

    def ids(self) -> dict[str, int]:
        return {
            "participant_id": self.patient.id, "assessment_id": self.assessments["completed"],
            "user_id": self.staff["nurse_b"].id, "study_id": self.study.id, "number": 1,
        }


def _baseline(session: Session, participant: Participant) -> Assessment:
    assessment = session.scalars(
        select(Assessment).where(Assessment.participant_id == participant.id).order_by(Assessment.planned_at)
    ).first()
    assert assessment is not None
    return assessment


def _answer(session: Session, assessment: Assessment, count: int, actor: str) -> None:
    text = text_for(session, QLQ, ("en",))
    start_assessment(session, assessment, mode=AssessmentMode.SELF, text=text, actor=actor)
    for item in QLQ.items[:count]:
        value = QLQ.response_set(item.response_set).values[-1]
        record_answer(session, assessment, QLQ, item_id=item.id, value=value, locale="en", actor=actor, grace=GRACE)


def build_world(session: Session, prefix: str = "W") -> World:
    """Everything a page can show: in-progress and completed questionnaires, alerts,
    participants of two sites, every staff role, a withdrawn participant, a study without
    schedule. Built through the real services; the caller commits."""
    study = make_study(session, f"{prefix}-1")
    empty = make_study(session, f"{prefix}-2", template=None)
    people: dict[str, Participant] = {}
    for name, site, code in (("patient", 0, "A-1"), ("completed", 0, "A-2"), ("other", 1, "B-1"), ("withdrawn", 1, "B-2")):
        people[name] = enrol_participant(
            session, study=study, site=study.sites[site], arm=study.arms[site], subject_code=f"{prefix}-{code}",
            locale="en", email=f"{name}.{prefix.lower()}@patients.example", phone=f"+49301234{len(people):04d}",
            anchors={"enrolment": now_utc()}, actor="test",
        )
    tokens, codes, links = {}, {}, {}
    for name in ("patient", "other", "completed"):
        issued = link_for(session, people[name])
        tokens[name], codes[name], links[name] = issued.token, issued.code, issued.link.id
    assessments = {name: _baseline(session, person).id for name, person in people.items()}
    _answer(session, _baseline(session, people["patient"]), 3, f"participant:{people['patient'].id}")
    done = _baseline(session, people["completed"])
    _answer(session, done, len(QLQ.items), f"participant:{people['completed'].id}")
    submit_assessment(session, done, QLQ, submission_key="world-key-0001", actor="test", grace=GRACE)
    alerts = {}
    for name in ("completed", "other"):
        alert = session.scalars(select(Alert).where(Alert.assessment_id == assessments[name])).first()
        if alert is None:
            alert = Alert(assessment_id=assessments[name], rule_code="PF2:lt:83", scale_code="PF2", value=40.0,
                          threshold=83.0)
            session.add(alert)
            session.flush()
        alerts[name] = alert.id
    people["withdrawn"].status = "withdrawn"
    staff = {
        "admin": make_staff(session, "admin", [], f"admin@{prefix.lower()}.example"),
        "nurse": make_staff(session, "nurse", [study.sites[0]], f"nurse@{prefix.lower()}.example"),
        "analyst": make_staff(session, "analyst", [study.sites[0]], f"analyst@{prefix.lower()}.example"),
        "nurse_b": make_staff(session, "nurse", [study.sites[1]], f"nurse-b@{prefix.lower()}.example"),
        "inactive": make_staff(session, "analyst", [study.sites[1]], f"inactive@{prefix.lower()}.example"),
    }
    staff["inactive"].is_active = False
    session.flush()
    return World(
        study=study, empty_study=empty, patient=people["patient"], completed=people["completed"],
        other=people["other"], withdrawn=people["withdrawn"], tokens=tokens, codes=codes, links=links,
        assessments=assessments, alerts=alerts, staff=staff,
        emails={name: user.email for name, user in staff.items()},
    )


def signed_in(app: Flask, world: World, role: str) -> FlaskClient:
    """A client of ``role``: anonymous, patient (through the personal link) or a staff role."""
    client = app.test_client()
    if role == "patient":
        assert client.get(f"/p/{world.tokens['patient']}").status_code == 303
    elif role != "anonymous":
        response = sign_in(client, world.emails[role], STAFF_PASSWORD)
        assert response.status_code == 303, response.get_data(as_text=True)
    return client


# --------------------------------------------------------------------------- the checks


def _policy(header: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives


UNSAFE_SOURCES = {"'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", "data:", "*", "http:", "https:", "blob:"}


def security_header_problems(response: TestResponse, *, https: bool, static: bool) -> list[str]:
    """What is wrong with the security headers of one response (empty: all fine).

    ``static``: a static asset answered successfully, which may be cached.
    """
    problems = []
    headers = response.headers
    policy = _policy(headers.get("Content-Security-Policy", ""))
    for directive, value in (("default-src", ["'self'"]), ("object-src", ["'none'"]), ("base-uri", ["'none'"]),
                             ("frame-ancestors", ["'none'"])):
        if policy.get(directive) != value:
            problems.append(f"CSP {directive} is {policy.get(directive)}, expected {value}")
    for directive in ("script-src", "style-src", "default-src"):
        unsafe = UNSAFE_SOURCES & set(policy.get(directive, []))
        if unsafe:
            problems.append(f"CSP {directive} allows {sorted(unsafe)}")
    if headers.get("X-Content-Type-Options") != "nosniff":
        problems.append(f"X-Content-Type-Options is {headers.get('X-Content-Type-Options')!r}")
    if headers.get("Referrer-Policy") != "no-referrer":
        problems.append(f"Referrer-Policy is {headers.get('Referrer-Policy')!r}")
    hsts = headers.get("Strict-Transport-Security")
    if https:
        match = re.search(r"max-age=(\d+)", hsts or "")
        if not match or int(match.group(1)) < ONE_YEAR:
            problems.append(f"HSTS over HTTPS is {hsts!r}")
    elif hsts is not None:
        problems.append("HSTS sent over plain HTTP")
    cache = {part.strip().lower() for part in headers.get("Cache-Control", "").split(",")}
    if not static and "no-store" not in cache:
        problems.append(f"Cache-Control is {headers.get('Cache-Control')!r}, expected no-store")
    return problems


class _InlineCodeFinder(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' would block or what loads foreign code."""

    URL_ATTRIBUTES = {"href", "src", "action", "formaction", "xlink:href", "data", "poster", "background"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self._inline_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name.lower(): value or "" for name, value in attrs}
        for name, value in values.items():
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=...> event handler attribute")
            if name == "style":
                self.problems.append(f"<{tag} style=...> style attribute")
            if name in self.URL_ATTRIBUTES and re.sub(r"\s", "", value).lower().startswith(("javascript:", "vbscript:")):
                self.problems.append(f"<{tag} {name}={value!r}> script URL")
        if tag == "script":
            source = values.get("src")
            if source is None:
                self._inline_script = values.get("type", "").lower() not in ("application/json",)
            elif not _same_origin(source):
                self.problems.append(f"<script src={source!r}> from another origin")
        elif tag == "style":
            self.problems.append("<style> element")
        elif tag in ("object", "embed", "iframe", "frame", "base", "applet"):
            self.problems.append(f"<{tag}> element")
        elif tag == "link" and "stylesheet" in values.get("rel", "").lower() and not _same_origin(values.get("href", "")):
            self.problems.append(f"stylesheet {values.get('href')!r} from another origin")
        elif tag == "img" and not (_same_origin(values.get("src", "")) or values.get("src", "").startswith("data:")):
            self.problems.append(f"image {values.get('src')!r} from another origin")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._inline_script = False

    def handle_data(self, data: str) -> None:
        if self._inline_script and data.strip():
            self.problems.append(f"inline <script>: {data.strip()[:60]!r}")


def _same_origin(url: str) -> bool:
    return url.startswith("/") and not url.startswith("//")


def inline_code_problems(response: TestResponse) -> list[str]:
    """Inline code and foreign resources in an HTML response (empty for other types)."""
    if response.mimetype != "text/html":
        return []
    finder = _InlineCodeFinder()
    finder.feed(response.get_data(as_text=True))
    finder.close()
    return finder.problems


def response_problems(response: TestResponse, path: str, *, https: bool = False) -> list[str]:
    static = path.startswith("/static/") and response.status_code in (200, 304)
    return security_header_problems(response, https=https, static=static) + inline_code_problems(response)


# --------------------------------------------------------------------------- the tests


@pytest.fixture
def world(db_session: Session) -> World:
    world = build_world(db_session, "H")
    db_session.commit()
    return world


_VARIABLE = re.compile(r"<(?:(\w+)(?:\([^>]*\))?:)?(\w+)>")


def real_paths(app: Flask, world: World) -> Iterator[tuple[str, str, str]]:
    """(endpoint, method, path) of every rule x method, URL variables filled with real rows.

    A route with a variable this table does not know fails here, so a new route gets real
    values (and with them, its headers checked) the day it is added.
    """
    values: dict[str, list[str]] = {name: [str(value)] for name, value in world.ids().items()}
    values["token"] = [world.tokens["patient"]]
    values["scale"] = ["PF2"]
    values["filename"] = sorted(str(p.relative_to(STATIC)) for p in STATIC.rglob("*") if p.is_file())
    for rule in app.url_map.iter_rules():
        unknown = set(rule.arguments) - set(values)
        assert not unknown, f"{rule.rule}: no real value known for {sorted(unknown)}; add one to real_paths()"
        fills = [{}] if not rule.arguments else [
            {name: values[name][i % len(values[name])] for name in rule.arguments}
            for i in range(max(len(values[name]) for name in rule.arguments))
        ]
        for fill in fills:
            path = _VARIABLE.sub(lambda m: fill[m.group(2)], rule.rule)  # noqa: B023
            for method in sorted(rule.methods or ()):
                yield rule.endpoint, method, path


@pytest.mark.parametrize("role", ["anonymous", "patient", "admin"])
def test_every_route_and_method_sends_the_headers(app: Flask, world: World, role: str) -> None:
    client = signed_in(app, world, role)
    problems, statuses = [], set()
    for endpoint, method, path in real_paths(app, world):
        if endpoint == "staff_auth.logout":
            continue  # ends the session the rest of the walk needs; checked on its own below
        for https in (False, True):
            response = client.open(path, method=method, data={}, base_url="https://localhost" if https else None)
            statuses.add(response.status_code)
            problems += [f"{method} {path} https={https} -> {response.status_code}: {p}"
                         for p in response_problems(response, path, https=https)]
            if response.status_code >= 500:
                problems.append(f"{method} {path} -> {response.status_code}")
            if role == "admin" and "/tablet/unlock" in response.headers.get("Location", ""):
                client = signed_in(app, world, role)  # a hand-over locked this browser
    assert problems == []
    assert {200, 303}.issubset(statuses), statuses
    client = signed_in(app, world, role)
    response = client.post("/staff/logout")
    assert response.status_code == 303 and response_problems(response, "/staff/logout") == []


def test_error_responses_send_the_headers(app: Flask, world: World) -> None:
    seen: dict[int, TestResponse] = {}
    anonymous = app.test_client()
    seen[401] = anonymous.get("/q/")
    seen[404] = anonymous.get("/no/such/page")
    seen[405] = anonymous.delete("/healthz")
    seen[413] = anonymous.post("/language", data={"lang": "x" * 200_000})
    nurse = signed_in(app, world, "nurse")
    seen[403] = nurse.get("/staff/admin/users")
    guesser = app.test_client()
    for attempt in range(12):
        response = guesser.post("/start", data={"code": f"WRONG{attempt:05d}"})
        seen.setdefault(response.status_code, response)
    app.config["WTF_CSRF_ENABLED"] = True
    seen[400] = app.test_client().post("/language", data={"lang": "en"})
    json_error = app.test_client().get("/nothing", headers={"Accept": "application/json"})
    assert set(seen) >= {400, 401, 403, 404, 405, 413, 429}, sorted(seen)
    problems = [f"{status}: {p}" for status, response in seen.items() for p in response_problems(response, "/x")]
    problems += [f"json 404: {p}" for p in response_problems(json_error, "/nothing")]
    assert problems == []


def test_static_files_may_be_cached_but_never_sniffed(client: FlaskClient) -> None:
    files = sorted(p for p in STATIC.rglob("*") if p.is_file())
    assert files
    for file in files:
        path = f"/static/{file.relative_to(STATIC)}"
        response = client.get(path)
        assert response.status_code == 200
        assert response_problems(response, path) == []
        assert "max-age" in response.headers.get("Cache-Control", "")
    missing = client.get("/static/css/missing.css")
    assert missing.status_code == 404
    assert "no-store" in missing.headers["Cache-Control"], "a missing asset's 404 is not cached for a day"


def test_downloads_and_json_are_never_cached(app: Flask, world: World) -> None:
    admin = signed_in(app, world, "admin")
    study = world.study.id
    downloads = [
        admin.post(f"/staff/exports/{study}", data={"format": "items-long"}),
        admin.get(f"/staff/studies/{study}/compliance?format=csv"),
        admin.get(f"/staff/analysis/{study}/chart/PF2.svg"),
        admin.get(f"/staff/analysis/{study}/chart/PF2.png"),
    ]
    patient = signed_in(app, world, "patient")
    json_save = patient.post("/q/answer", json={"assessment": world.assessments["patient"], "item": "q4", "value": 2})
    health = app.test_client().get("/healthz")
    for response in [*downloads, json_save, health]:
        assert response.status_code == 200, response.status_code
        assert response_problems(response, "/download") == []
    assert [r.mimetype for r in downloads] == ["text/csv", "text/csv", "image/svg+xml", "image/png"]


def test_patient_pages_hold_no_inline_code(app: Flask, world: World) -> None:
    """The whole questionnaire, page by page, including errors and the language switch."""
    client = signed_in(app, world, "patient")
    assessment = world.assessments["patient"]
    pages = [client.get("/q/"), *(client.get(f"/q/{n}") for n in range(1, len(QLQ.items) + 1))]
    pages.append(client.post("/q/1", data={"assessment": assessment, "value": "99"}))
    pages.append(client.get("/q/review"))
    pages.append(client.post("/q/submit", data={"assessment": assessment, "key": "page-key-000001"}))
    pages.append(client.get("/q/done"))
    for language in ("ar", "zh_Hans", "es"):
        client.post("/language", data={"lang": language})
        pages.append(client.get("/q/1"))
    pages += [app.test_client().get("/start"), app.test_client().get("/p/unknown-token")]
    assert [p for page in pages for p in response_problems(page, "/q/")] == []
    assert any('src="/static/js/questionnaire.js"' in page.get_data(as_text=True) for page in pages)


def test_a_response_that_sets_a_header_keeps_it(app: Flask) -> None:
    """The headers are defaults: a response with its own value keeps it, and each header is sent once."""
    app.add_url_rule("/test/framed", view_func=lambda: ("framed", {"x-frame-options": "SAMEORIGIN"}))
    headers = app.test_client().get("/test/framed").headers
    assert headers.getlist("X-Frame-Options") == ["SAMEORIGIN"]
    for name in ("Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy", "Cross-Origin-Opener-Policy"):
        assert len(headers.getlist(name)) == 1, name


def test_hsts_only_over_https(app: Flask, client: FlaskClient) -> None:
    assert "Strict-Transport-Security" not in client.get("/healthz").headers
    secure = client.get("/healthz", base_url="https://localhost").headers["Strict-Transport-Security"]
    assert "max-age=31536000" in secure
    # The app itself trusts no proxy header: a forged X-Forwarded-Proto changes nothing.
    forged = client.get("/healthz", headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" not in forged.headers


def test_hsts_when_the_public_address_is_https(database_url: str) -> None:
    """Behind a TLS-terminating proxy that gunicorn was not told to trust, the request
    arrives as plain HTTP; the configured public HTTPS address still asks for HSTS (which
    browsers only honour over HTTPS anyway)."""
    app = create_app(app_config(DATABASE_URL=database_url, BASE_URL="https://pro.hospital.example"))
    response = app.test_client().get("/healthz")
    assert "max-age=31536000" in response.headers["Strict-Transport-Security"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_gunicorn_behind_a_local_proxy_sends_hsts(tmp_path: Path) -> None:
    """gunicorn trusts X-Forwarded-Proto from 127.0.0.1 (``forwarded_allow_ips``), so a
    TLS-terminating proxy on the same machine gets HSTS; others' headers are not trusted."""
    url = migrated_sqlite(tmp_path, "hsts")
    port = _free_port()
    env = {**os.environ, "PRO_SECRET_KEY": "hsts-test", "PRO_DATABASE_URL": url, "PRO_BASE_URL": f"http://127.0.0.1:{port}"}
    env.pop("FORWARDED_ALLOW_IPS", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1", "wsgi:app"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                plain = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10)
                break
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        else:
            pytest.fail("gunicorn did not start")
        proxied = urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{port}/healthz", headers={"X-Forwarded-Proto": "https"}), timeout=5)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert plain.headers.get("Strict-Transport-Security") is None
    assert "max-age=31536000" in proxied.headers["Strict-Transport-Security"]
    assert proxied.headers["Cache-Control"] == "no-store"


def test_the_checks_catch_what_they_look_for() -> None:
    """The scanner and the header check are themselves tested against bad examples."""
    bad_html = TestResponse(
        b'<p style="x" onclick="a()"><a href=" javascript:alert(1)">x</a><script>alert(1)</script>'
        b'<script src="https://cdn.example/x.js"></script><style>p{}</style><iframe></iframe>',
        200, {"Content-Type": "text/html; charset=utf-8"}, request=None,  # type: ignore[arg-type]
    )
    problems = " ".join(inline_code_problems(bad_html))
    for expected in ("style attribute", "event handler", "script URL", "inline <script>", "another origin",
                     "<style>", "<iframe>"):
        assert expected in problems, expected
    headers = {"Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'",
               "Cache-Control": "public", "Strict-Transport-Security": "max-age=5"}
    bad_headers = TestResponse(b"", 200, headers, request=None)  # type: ignore[arg-type]
    problems = " ".join(security_header_problems(bad_headers, https=False, static=False))
    for expected in ("object-src", "base-uri", "frame-ancestors", "unsafe-inline", "X-Content-Type-Options", "Referrer-Policy",
                     "plain HTTP", "no-store"):
        assert expected in problems, expected
