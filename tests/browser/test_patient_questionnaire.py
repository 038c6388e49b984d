"""A patient on a small phone answers the questionnaire in Chromium."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

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
    assert requested and all(url.startswith(live_server.url) for url in requested), requested
