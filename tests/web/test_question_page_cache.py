"""Question pages served from the page cache equal fresh renderings, and carry only their own
request's CSRF token, questionnaire id and request id.

Every other patient test goes through the cache too (it is on wherever templates do not
reload); these tests compare it with the template itself, for every question and language.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from flask import Flask, g
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from pro_app.db.models import Assessment
from pro_app.domain.instruments import default_registry
from pro_app.web.patient import pages
from pro_app.web.patient.pages import QuestionPageCache
from tests.factories import enrol, link_for, make_study

QLQ = default_registry().get("qlq_c30")
FIXED_REQUEST_ID = "3f1b2c4d-0000-4000-8000-00000000abcd"


@pytest.fixture
def fixed_request_ids(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(pages, "new_request_id", lambda: FIXED_REQUEST_ID)
    yield


def _render(app: Flask, assessment: Assessment, locale: str, number: int, selected: int | None, *,
            cached: bool) -> str:
    app.jinja_env.auto_reload = not cached  # the cache is off where templates reload
    try:
        with app.test_request_context(f"/q/{number}"):
            g.preferred_locale = locale
            text = default_registry().text("qlq_c30", locale)
            item = QLQ.items[number - 1]
            return pages.render_question(assessment, QLQ, text, item, selected)
    finally:
        app.jinja_env.auto_reload = False


def _without_token(page: str) -> str:
    """The page with its CSRF token blanked (each request context signs a new one)."""
    page = re.sub(r'(<meta name="csrf-token" content=")[^"]*"', r'\1"', page)
    return re.sub(r'(<input[^>]*name="csrf_token"[^>]*value=")[^"]*"', r'\1"', page)


def test_cached_pages_equal_fresh_ones_for_every_question_language_and_answer(
    app: Flask, db_session: Session, fixed_request_ids: None
) -> None:
    participant = enrol(db_session, make_study(db_session, "CACHE-1"), "C-001")
    assessment = db_session.scalars(select(Assessment).where(Assessment.participant_id == participant.id)).first()
    assert assessment is not None
    for locale in app.config["LOCALES"]:
        for item in QLQ.items:
            values = QLQ.response_set(item.response_set).values
            for selected in (None, values[0], values[-1]):
                fresh = _render(app, assessment, locale, item.number, selected, cached=False)
                filled = _render(app, assessment, locale, item.number, selected, cached=True)
                again = _render(app, assessment, locale, item.number, selected, cached=True)
                assert _without_token(filled) == _without_token(fresh), (locale, item.number, selected)
                assert _without_token(again) == _without_token(fresh), (locale, item.number, selected)
                assert "\x00" not in again
                assert f'value="{assessment.id}"' in again and FIXED_REQUEST_ID in again
    with app.app_context():
        stored = len(QuestionPageCache.of_app()._pages)
    assert stored == sum(3 for _ in app.config["LOCALES"] for _ in QLQ.items)


def _hidden(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" type="hidden" value="([^"]*)"', page)
    assert found, name
    return found.group(1)


def test_each_patient_gets_their_own_ids_and_token_from_a_cached_page(
    app: Flask, db_session: Session
) -> None:
    study = make_study(db_session, "CACHE-2")
    clients: list[tuple[FlaskClient, int]] = []
    for subject in ("C-101", "C-102"):
        participant = enrol(db_session, study, subject)
        token = link_for(db_session, participant).token
        assessment = db_session.scalars(
            select(Assessment).where(Assessment.participant_id == participant.id,
                                     Assessment.timepoint_code == "baseline")
        ).one()
        db_session.commit()
        client = app.test_client()
        assert client.get(f"/p/{token}").status_code == 303
        assert client.post("/q/start", data={"assessment": assessment.id}).status_code == 303
        clients.append((client, assessment.id))
    pages_seen = []
    for client, assessment_id in clients + clients:
        page = client.get("/q/3").get_data(as_text=True)  # the same cached page for all four
        assert _hidden(page, "assessment") == str(assessment_id)
        assert f'data-assessment="{assessment_id}"' in page
        pages_seen.append(page)
    request_ids = {_hidden(page, "request_id") for page in pages_seen}
    assert len(request_ids) == 4  # a new request id in every rendering
    first_token, second_token = _hidden(pages_seen[0], "csrf_token"), _hidden(pages_seen[1], "csrf_token")
    assert first_token and second_token and first_token != second_token


def test_pages_with_a_message_are_rendered_each_time(app: Flask, db_session: Session,
                                                   fixed_request_ids: None) -> None:
    participant = enrol(db_session, make_study(db_session, "CACHE-3"), "C-201")
    assessment = db_session.scalars(select(Assessment).where(Assessment.participant_id == participant.id)).first()
    assert assessment is not None
    with app.test_request_context("/q/5"):
        g.preferred_locale = "en"
        text = default_registry().text("qlq_c30", "en")
        page = pages.render_question(assessment, QLQ, text, QLQ.items[4], 2, notice="Please check this answer.")
        assert "Please check this answer." in page
        assert QuestionPageCache.of_app()._pages == {}
