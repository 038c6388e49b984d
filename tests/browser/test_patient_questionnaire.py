"""A patient on a small phone answers the questionnaire in Chromium."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

from tests.browser.conftest import (
    LiveServer,
    Patient,
    assert_accessible,
    assessment_state,
    screenshot,
    stored_answers,
)

PHONE = {"viewport": {"width": 360, "height": 640}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}


def _choose(page: Page, value: int) -> None:
    page.locator(f"label.option[for=v{value}]").click()


def _start(page: Page, patient: Patient) -> None:
    page.goto(patient.link)
    expect(page.get_by_role("heading", name="Your questionnaire")).to_be_visible()
    page.get_by_role("button", name=re.compile("Start|Continue")).click()


def _answer_and_next(page: Page, number: int, value: int) -> None:
    expect(page.locator("#progress-text")).to_have_text(f"Question {number} of 30")
    _choose(page, value)
    expect(page.locator("#save-state")).to_have_text("Answer saved.")
    page.get_by_role("button", name="Review answers" if number == 30 else "Next", exact=True).click()


def _value_for(number: int) -> int:
    return 5 if number >= 29 else (number % 4) + 1


def test_full_run_with_background_saving(page: Page, live_server: LiveServer, patient: Patient) -> None:
    _start(page, patient)
    for number in range(1, 31):
        _answer_and_next(page, number, _value_for(number))
    expect(page.get_by_role("heading", name="Check your answers")).to_be_visible()
    expect(page.get_by_text("You have answered every question.")).to_be_visible()
    page.get_by_role("button", name="Submit my answers").click()
    expect(page.get_by_role("heading", name="Thank you")).to_be_visible()
    assert stored_answers(live_server, patient.assessment_id) == {f"q{n}": _value_for(n) for n in range(1, 31)}
    state = assessment_state(live_server, patient.assessment_id)
    assert state.status == "completed" and state.mode == "self"


def test_back_and_change_an_answer(page: Page, live_server: LiveServer, patient: Patient) -> None:
    _start(page, patient)
    _answer_and_next(page, 1, 2)
    _answer_and_next(page, 2, 3)
    page.get_by_role("button", name="Back").click()
    expect(page.locator("#progress-text")).to_have_text("Question 2 of 30")
    expect(page.locator("#v3")).to_be_checked()
    page.get_by_role("button", name="Back").click()
    expect(page.locator("#v2")).to_be_checked()
    _choose(page, 4)
    expect(page.locator("#save-state")).to_have_text("Answer saved.")
    assert stored_answers(live_server, patient.assessment_id) == {"q1": 4, "q2": 3}


def test_leave_and_resume_on_another_phone(browser: Browser, live_server: LiveServer, patient: Patient) -> None:
    first = browser.new_context(**PHONE)
    page = first.new_page()
    _start(page, patient)
    for number in range(1, 4):
        _answer_and_next(page, number, 1)
    # The phone is put away on question 4, not halfway through loading it: closing a
    # context while a navigation commits can leave Chromium waiting forever.
    expect(page.locator("#progress-text")).to_have_text("Question 4 of 30")
    page.close()
    first.close()
    second = browser.new_context(**PHONE)
    page = second.new_page()
    page.goto(patient.link)
    expect(page.get_by_text("You have answered 3 questions of 30.")).to_be_visible()
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("#progress-text")).to_have_text("Question 4 of 30")
    second.close()
    assert stored_answers(live_server, patient.assessment_id) == {"q1": 1, "q2": 1, "q3": 1}


def test_network_loss_queues_answers_until_it_returns(
    page: Page, context: BrowserContext, live_server: LiveServer, patient: Patient
) -> None:
    _start(page, patient)
    _answer_and_next(page, 1, 1)
    expect(page.locator("#progress-text")).to_have_text("Question 2 of 30")
    context.set_offline(True)
    _choose(page, 3)
    expect(page.locator("#save-state")).to_contain_text("No connection")
    page.get_by_role("button", name="Next", exact=True).click()
    # Still on question 2: the answer waits in the browser, nothing is lost.
    expect(page.locator("#progress-text")).to_have_text("Question 2 of 30")
    assert stored_answers(live_server, patient.assessment_id) == {"q1": 1}
    queued = page.evaluate("() => localStorage.getItem('pro-app-queue-' + %d)" % patient.assessment_id)
    assert queued and '"item":"q2"' in queued
    context.set_offline(False)
    expect(page.locator("#progress-text")).to_have_text("Question 3 of 30", timeout=40_000)
    assert stored_answers(live_server, patient.assessment_id) == {"q1": 1, "q2": 3}
    assert page.evaluate("() => localStorage.getItem('pro-app-queue-' + %d)" % patient.assessment_id) is None


def test_double_submit_creates_one_submission(page: Page, live_server: LiveServer, patient: Patient) -> None:
    _start(page, patient)
    _answer_and_next(page, 1, 2)
    page.goto(f"{live_server.url}/q/review")
    page.get_by_label("Yes, submit with the unanswered questions left blank").check()
    button = page.get_by_role("button", name="Submit my answers")
    button.dblclick()
    expect(page.get_by_role("heading", name="Thank you")).to_be_visible()
    page.go_back()
    page.reload()  # the browser re-posts the same form at most; still one submission
    state = assessment_state(live_server, patient.assessment_id)
    assert state.status == "completed"
    from pro_app.db.models import AuditEvent
    from sqlalchemy import func, select

    with live_server.session() as session:
        submits = session.scalar(
            select(func.count()).select_from(AuditEvent).where(
                AuditEvent.action == "assessment.submit", AuditEvent.entity_id == str(patient.assessment_id)
            )
        )
    assert submits == 1


def test_works_with_javascript_disabled(browser: Browser, live_server: LiveServer, patient: Patient) -> None:
    context = browser.new_context(**PHONE, java_script_enabled=False)
    page = context.new_page()
    _start(page, patient)
    for number in range(1, 31):
        expect(page.locator("#progress-text")).to_have_text(f"Question {number} of 30")
        _choose(page, _value_for(number))
        page.get_by_role("button", name="Review answers" if number == 30 else "Next", exact=True).click()
    page.get_by_role("button", name="Submit my answers").click()
    expect(page.get_by_role("heading", name="Thank you")).to_be_visible()
    context.close()
    assert len(stored_answers(live_server, patient.assessment_id)) == 30
    assert assessment_state(live_server, patient.assessment_id).status == "completed"


def test_keyboard_only(page: Page, live_server: LiveServer, patient: Patient) -> None:
    page.goto(patient.link)
    page.keyboard.press("Tab")  # skip link
    start = page.get_by_role("button", name="Start")
    start.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#progress-text")).to_have_text("Question 1 of 30")
    page.locator("#v1").focus()
    page.keyboard.press("ArrowDown")
    expect(page.locator("#v2")).to_be_checked()
    expect(page.locator("#save-state")).to_have_text("Answer saved.")
    outline = page.evaluate("() => getComputedStyle(document.activeElement.closest('label')).outlineStyle")
    assert outline != "none", "the focused answer is visibly marked"
    assert stored_answers(live_server, patient.assessment_id) == {"q2": 2} or stored_answers(
        live_server, patient.assessment_id
    ) == {"q1": 2}


@pytest.mark.parametrize("width", [320, 360, 390])
def test_fits_small_screens_with_large_touch_targets(browser: Browser, live_server: LiveServer, patient: Patient, width: int) -> None:
    context = browser.new_context(**{**PHONE, "viewport": {"width": width, "height": 700}})
    page = context.new_page()
    _start(page, patient)
    for number in (1, 6, 29):
        page.goto(f"{live_server.url}/q/{number}")
        scroll_width = page.evaluate("() => document.documentElement.scrollWidth")
        assert scroll_width <= width, f"question {number} scrolls sideways at {width}px"
        for box in page.locator("label.option").all():
            size = box.bounding_box()
            assert size and size["width"] >= 44 and size["height"] >= 44
        for button in page.locator(".actions button").all():
            size = button.bounding_box()
            assert size and size["width"] >= 44 and size["height"] >= 44
        if width in (320, 390) and number in (1, 29):
            screenshot(page, f"question-{number}-{width}px")
    context.close()


def test_no_accessibility_violations(page: Page, live_server: LiveServer, patient: Patient) -> None:
    page.goto(patient.link)
    assert_accessible(page)
    page.get_by_role("button", name="Start").click()
    assert_accessible(page)
    _choose(page, 2)
    expect(page.locator("#save-state")).to_have_text("Answer saved.")
    assert_accessible(page)
    page.goto(f"{live_server.url}/q/30")
    assert_accessible(page)
    page.goto(f"{live_server.url}/q/review")
    assert_accessible(page)
    page.get_by_label("Yes, submit with the unanswered questions left blank").check()
    page.get_by_role("button", name="Submit my answers").click()
    expect(page.get_by_role("heading", name="Thank you")).to_be_visible()
    assert_accessible(page)
    page.goto(f"{live_server.url}/start")
    assert_accessible(page)


def test_pages_make_no_external_requests(page: Page, live_server: LiveServer, patient: Patient) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    _start(page, patient)
    _answer_and_next(page, 1, 1)
    # The next page has loaded (a test ending mid-navigation can hang the browser's shutdown).
    expect(page.locator("#progress-text")).to_have_text("Question 2 of 30")
    assert requested and all(url.startswith(live_server.url) for url in requested), requested


def test_stylesheet_and_script_arrive_compressed_and_work(page: Page, live_server: LiveServer, patient: Patient) -> None:
    encodings: dict[str, str | None] = {}
    page.on("response", lambda response: encodings.__setitem__(
        response.url.rsplit("/", 1)[-1], response.all_headers().get("content-encoding")
    ) if "/static/" in response.url else None)
    _start(page, patient)
    expect(page.locator("#progress-text")).to_have_text("Question 1 of 30")
    assert encodings == {"app.css": "gzip", "questionnaire.js": "gzip"}
    # The stylesheet applies (answers are large touch targets) and the script saves in the background.
    assert page.locator("label.option[for=v1]").bounding_box()["height"] >= 44  # type: ignore[index]
    _choose(page, 3)
    expect(page.locator("#save-state")).to_have_text("Answer saved.")
    assert stored_answers(live_server, patient.assessment_id) == {"q1": 3}


# -- request ids, expired forms and expired sign-ins ---------------------------------------------


def _queue(page: Page, patient: Patient) -> list[dict[str, object]]:
    raw = page.evaluate("() => localStorage.getItem('pro-app-queue-' + %d)" % patient.assessment_id)
    return json.loads(raw) if raw else []


def _receipts(live_server: LiveServer, assessment_id: int) -> dict[str, tuple[str | None, int | None]]:
    from pro_app.db.models import RequestReceipt
    from sqlalchemy import select

    with live_server.session() as session:
        rows = session.scalars(select(RequestReceipt).where(RequestReceipt.assessment_id == assessment_id)).all()
        return {row.request_id: (row.item_id, row.value) for row in rows}


def test_retries_of_a_queued_answer_send_the_same_request_id(
    page: Page, live_server: LiveServer, patient: Patient
) -> None:
    _start(page, patient)
    keys: list[str] = []
    bodies: list[dict[str, object]] = []

    def flaky(route: Route) -> None:
        keys.append(route.request.headers.get("idempotency-key", ""))
        bodies.append(json.loads(route.request.post_data or "{}"))
        if len(keys) <= 2:
            route.fulfill(status=503, body="busy")
        else:
            route.continue_()

    expect(page.locator("#progress-text")).to_have_text("Question 1 of 30")  # see below: loaded first
    page.route("**/q/answer", flaky)
    _choose(page, 3)
    expect(page.locator("#save-state")).to_have_text("Answer saved.", timeout=20_000)
    # Closing the page while a handler is still running can wait for ever: stop routing first.
    page.unroute_all(behavior="ignoreErrors")
    assert len(keys) == 3 and len(set(keys)) == 1, keys
    uuid.UUID(keys[0])
    assert all(body["request_id"] == keys[0] and body["value"] == 3 for body in bodies)
    assert _receipts(live_server, patient.assessment_id) == {keys[0]: ("q1", 3)}
    # Moving on posts the form under the same id: a repetition, not a second save.
    page.get_by_role("button", name="Next", exact=True).click()
    expect(page.locator("#progress-text")).to_have_text("Question 2 of 30")
    assert _receipts(live_server, patient.assessment_id) == {keys[0]: ("q1", 3)}


def test_an_answer_refused_for_good_leaves_the_queue_and_the_patient_is_told(
    page: Page, live_server: LiveServer, patient: Patient
) -> None:
    _start(page, patient)
    # The question page must have loaded before the route is set: a route set while the page
    # is still navigating can miss the first request (seen once in CI).
    expect(page.locator("#progress-text")).to_have_text("Question 1 of 30")
    page.route("**/q/answer", lambda route: route.fulfill(
        status=409, content_type="application/json",
        body=json.dumps({"error": "This questionnaire is closed; answers can no longer be saved.", "code": "closed"}),
    ))
    _choose(page, 2)
    expect(page.locator("#save-state")).to_contain_text("Your answer could not be saved. This questionnaire is closed")
    page.unroute_all(behavior="ignoreErrors")
    assert _queue(page, patient) == []


def test_ended_sign_in_keeps_queued_answers_until_the_link_is_opened_again(
    page: Page, context: BrowserContext, live_server: LiveServer, patient: Patient
) -> None:
    _start(page, patient)
    _answer_and_next(page, 1, 2)
    expect(page.locator("#progress-text")).to_have_text("Question 2 of 30")
    context.clear_cookies()  # the sign-in ends while the page is open
    _choose(page, 3)
    state = page.locator("#save-state")
    expect(state).to_contain_text("Your session has ended. Your answers are kept on this device")
    expect(state.get_by_role("link", name="Enter my personal code")).to_be_visible()
    queued = _queue(page, patient)
    assert [(e["item"], e["value"]) for e in queued] == [("q2", 3)] and queued[0]["request_id"]
    assert stored_answers(live_server, patient.assessment_id) == {"q1": 2}
    # Moving on now reaches the server, which keeps the answer too and explains.
    page.get_by_role("button", name="Next", exact=True).click()
    expect(page.get_by_role("heading", name="Please sign in again")).to_be_visible()
    expect(page.get_by_text("Your answer to question 2 has not been saved yet.")).to_be_visible()
    assert_accessible(page)
    page.goto(patient.link)
    expect(page.locator("#progress-text")).to_have_text("Question 2 of 30")
    expect(page.locator("#v3")).to_be_checked()
    expect(page.locator("#save-state")).to_have_text("Answer saved.")
    expect(page.locator("#unsaved-notice")).to_be_hidden()
    assert_accessible(page)
    assert stored_answers(live_server, patient.assessment_id) == {"q1": 2, "q2": 3}
    assert _queue(page, patient) == []
    assert queued[0]["request_id"] in _receipts(live_server, patient.assessment_id)


def test_a_page_whose_csrf_token_expired_renews_it_and_saves(
    page: Page, context: BrowserContext, live_server: LiveServer, patient: Patient
) -> None:
    _start(page, patient)
    expect(page.locator("#progress-text")).to_have_text("Question 1 of 30")
    context.clear_cookies()
    other = context.new_page()  # signing in again elsewhere makes a new session and token
    other.goto(patient.link)
    expect(other.get_by_role("heading", name="Your questionnaire")).to_be_visible()
    other.close()
    _choose(page, 4)
    expect(page.locator("#save-state")).to_have_text("Answer saved.")
    assert stored_answers(live_server, patient.assessment_id) == {"q1": 4}
    page.get_by_role("button", name="Next", exact=True).click()  # the form got the new token too
    expect(page.locator("#progress-text")).to_have_text("Question 2 of 30")


def test_without_javascript_an_ended_sign_in_keeps_the_answer_to_confirm(
    browser: Browser, live_server: LiveServer, patient: Patient
) -> None:
    context = browser.new_context(**PHONE, java_script_enabled=False)
    page = context.new_page()
    _start(page, patient)
    _choose(page, 1)
    page.get_by_role("button", name="Next", exact=True).click()
    expect(page.locator("#progress-text")).to_have_text("Question 2 of 30")
    context.clear_cookies()
    _choose(page, 4)
    page.get_by_role("button", name="Next", exact=True).click()
    expect(page.get_by_role("heading", name="Please sign in again")).to_be_visible()
    expect(page.get_by_text("Your answer to question 2 has not been saved yet.")).to_be_visible()
    assert stored_answers(live_server, patient.assessment_id) == {"q1": 1}
    page.goto(patient.link)
    expect(page.locator("#progress-text")).to_have_text("Question 2 of 30")
    expect(page.locator("#v4")).to_be_checked()
    expect(page.get_by_text("please check it, then continue to save it")).to_be_visible()
    page.get_by_role("button", name="Next", exact=True).click()
    expect(page.locator("#progress-text")).to_have_text("Question 3 of 30")
    assert stored_answers(live_server, patient.assessment_id) == {"q1": 1, "q2": 4}
    context.close()


def test_without_javascript_an_expired_form_is_shown_again_with_the_answer(
    browser: Browser, live_server: LiveServer, patient: Patient
) -> None:
    context = browser.new_context(**PHONE, java_script_enabled=False)
    page = context.new_page()
    _start(page, patient)
    expect(page.locator("#progress-text")).to_have_text("Question 1 of 30")
    context.clear_cookies()
    other = context.new_page()
    other.goto(patient.link)
    other.close()
    _choose(page, 3)
    page.get_by_role("button", name="Next", exact=True).click()
    expect(page.get_by_text("This page had expired, so your answer has not been saved yet.")).to_be_visible()
    expect(page.locator("#progress-text")).to_have_text("Question 1 of 30")
    expect(page.locator("#v3")).to_be_checked()
    assert stored_answers(live_server, patient.assessment_id) == {}
    page.get_by_role("button", name="Next", exact=True).click()
    expect(page.locator("#progress-text")).to_have_text("Question 2 of 30")
    assert stored_answers(live_server, patient.assessment_id) == {"q1": 3}
    context.close()
