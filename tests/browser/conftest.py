"""Browser tests: Debian's Chromium driven by Playwright against a live server.

The server is the real application on a real SQLite file (not ``:memory:``: the server
thread and the test need the same database), served by Werkzeug in a background thread.
Playwright never downloads a browser here; it launches ``/usr/bin/chromium``.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Page
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.serving import BaseWSGIServer, make_server

from pro_app import create_app
from pro_app.db.engine import make_engine, make_session_factory
from pro_app.db.migrate import upgrade
from pro_app.db.models import Answer, Assessment, Study
from tests.conftest import app_config
from tests.factories import enrol, link_for, make_study

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = REPO / "test-results" / "screenshots"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/browser" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's Chromium is missing: `make test` installs it (apt-get install chromium)")
    return {
        **browser_type_launch_args,
        "executable_path": str(CHROMIUM),
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    """A small Android phone (360 x 640 CSS px, touch)."""
    return {
        **browser_context_args,
        "viewport": {"width": 360, "height": 640},
        "device_scale_factor": 2,
        "is_mobile": True,
        "has_touch": True,
        "locale": "en-GB",
    }


@dataclass
class LiveServer:
    url: str
    app: Flask
    session_factory: Any

    def session(self) -> Session:
        return self.session_factory()  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    database_url = f"sqlite:///{tmp_path_factory.mktemp('live') / 'live.sqlite3'}"
    upgrade(database_url)
    app = create_app(app_config(DATABASE_URL=database_url, WTF_CSRF_ENABLED=True, SERVER_NAME=None, TESTING=False))
    server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    engine = make_engine(database_url)
    yield LiveServer(f"http://127.0.0.1:{server.server_port}", app, make_session_factory(engine))
    server.shutdown()
    engine.dispose()


@dataclass
class Patient:
    participant_id: int
    assessment_id: int
    link: str
    code: str


@pytest.fixture
def patient(live_server: LiveServer) -> Patient:
    """A fresh participant with an open baseline questionnaire and a personal link."""
    return make_patient(live_server)


def make_patient(live_server: LiveServer, locale: str = "en") -> Patient:
    with live_server.session() as session:
        study = session.scalars(select(Study).where(Study.code == "BROWSER")).one_or_none()
        if study is None:
            study = make_study(session, "BROWSER")
        participant = enrol(session, study, f"B-{secrets.token_hex(4).upper()}", locale=locale)
        issued = link_for(session, participant)
        assessment = session.scalars(
            select(Assessment).where(Assessment.participant_id == participant.id, Assessment.timepoint_code == "baseline")
        ).one()
        session.commit()
        return Patient(participant.id, assessment.id, f"{live_server.url}/p/{issued.token}", issued.code)


def stored_answers(live_server: LiveServer, assessment_id: int) -> dict[str, int]:
    with live_server.session() as session:
        return dict(
            session.execute(select(Answer.item_id, Answer.value).where(Answer.assessment_id == assessment_id))
            .tuples()
            .all()
        )


def assessment_state(live_server: LiveServer, assessment_id: int) -> Assessment:
    with live_server.session() as session:
        assessment = session.get(Assessment, assessment_id)
        assert assessment is not None
        session.expunge(assessment)
        return assessment


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """Run axe-core (WCAG 2.x A/AA rules) in the page and return its violations."""
    if not AXE.exists():
        pytest.fail("axe-core is missing: `make test` installs it with npm")
    page.evaluate(AXE.read_text(encoding="utf-8"))
    result = page.evaluate(
        "async () => (await axe.run(document, {runOnly: {type: 'tag', values: "
        "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})).violations"
    )
    return [{"id": v["id"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"]]} for v in result]


def assert_accessible(page: Page) -> None:
    violations = axe_violations(page)
    assert violations == [], json.dumps(violations, indent=1)


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
