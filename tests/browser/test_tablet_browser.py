"""A nurse hands a clinic tablet to a patient and takes it back."""

from __future__ import annotations

import secrets

from playwright.sync_api import Browser, expect

from pro_app.db.models import Study
from tests.browser.conftest import LiveServer, assert_accessible, assessment_state, make_patient, screenshot
from tests.factories import STAFF_PASSWORD, make_staff

TABLET = {"viewport": {"width": 800, "height": 1280}, "device_scale_factor": 1.5, "has_touch": True}


def _nurse(live_server: LiveServer) -> str:
    email = f"nurse-{secrets.token_hex(3)}@browser.org"
    with live_server.session() as session:
        from sqlalchemy import select

        study = session.scalars(select(Study).where(Study.code == "BROWSER")).one()
        make_staff(session, "nurse", list(study.sites), email)
        session.commit()
    return email


def test_tablet_mode_round_trip(browser: Browser, live_server: LiveServer) -> None:
    patient = make_patient(live_server)
    email = _nurse(live_server)
    context = browser.new_context(**TABLET)
    page = context.new_page()
    page.goto(f"{live_server.url}/staff/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    assert_accessible(page)
    screenshot(page, "staff-dashboard-tablet")
    page.goto(f"{live_server.url}/staff/participants/{patient.participant_id}")
    assert_accessible(page)
    staff_url = page.url
    page.get_by_role("button", name="Hand this tablet to the patient").click()
    expect(page.get_by_role("heading", name="Your questionnaire")).to_be_visible()
    page.get_by_role("button", name="Start").click()
    for number in range(1, 31):
        expect(page.locator("#progress-text")).to_have_text(f"Question {number} of 30")
        page.locator("label.option[for=v2]").click()
        expect(page.locator("#save-state")).to_have_text("Answer saved.")
        page.get_by_role("button", name="Review answers" if number == 30 else "Next", exact=True).click()
    page.get_by_role("button", name="Submit my answers").click()
    expect(page.get_by_text("Please hand the tablet back to the study nurse.")).to_be_visible()
    # The patient cannot get back to staff pages, by URL or by history.
    page.goto(staff_url)
    expect(page.get_by_role("heading", name="Tablet locked")).to_be_visible()
    assert_accessible(page)
    page.go_back()
    page.goto(f"{live_server.url}/staff/")
    expect(page.get_by_role("heading", name="Tablet locked")).to_be_visible()
    page.get_by_label("Your password").fill("wrong password!")
    page.get_by_role("button", name="Unlock").click()
    expect(page.get_by_text("The password is not correct.")).to_be_visible()
    page.get_by_label("Your password").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Unlock").click()
    expect(page.get_by_role("heading", name="Scores")).to_be_visible()
    screenshot(page, "staff-participant-after-tablet")
    context.close()
    state = assessment_state(live_server, patient.assessment_id)
    assert state.status == "completed" and state.mode == "tablet"
