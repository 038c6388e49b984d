"""Right-to-left: the questionnaire in Arabic on a 360 px phone."""

from __future__ import annotations

from playwright.sync_api import Browser, expect

from pro_app.domain.instruments import default_registry
from tests.browser.conftest import LiveServer, assert_accessible, make_patient, screenshot, stored_answers
from tests.web.test_languages import translated

PHONE = {"viewport": {"width": 360, "height": 640}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}


def test_arabic_questionnaire_reads_right_to_left(browser: Browser, live_server: LiveServer) -> None:
    patient = make_patient(live_server, locale="ar")
    context = browser.new_context(**PHONE, locale="ar")
    page = context.new_page()
    text = default_registry().text("qlq_c30", "ar")
    page.goto(patient.link)
    assert page.locator("html").get_attribute("lang") == "ar"
    assert page.locator("html").get_attribute("dir") == "rtl"
    expect(page.get_by_role("heading", name=translated("ar", "Your questionnaire"))).to_be_visible()
    screenshot(page, "ar-start-360px")
    assert_accessible(page)
    page.locator("form[action='/q/start'] button").click()
    expect(page.locator("#progress-text")).to_have_text(translated("ar", "Question %(num)s of %(total)s") % {"num": 1, "total": 30})
    expect(page.locator("legend")).to_contain_text(text.items["q1"])
    # Options start on the right.
    first, last = page.locator("label.option").first.bounding_box(), page.locator("label.option").last.bounding_box()
    assert first and last and first["y"] < last["y"]
    page.locator("label.option[for=v2]").click()
    expect(page.locator("#save-state")).to_have_text(translated("ar", "Answer saved."))
    screenshot(page, "ar-question-1-360px")
    assert_accessible(page)
    page.goto(f"{live_server.url}/q/29")
    one, seven = page.locator("label[for=v1]").bounding_box(), page.locator("label[for=v7]").bounding_box()
    assert one and seven and one["x"] > seven["x"], "1 sits at the right, where an Arabic reader starts"
    ends = page.locator(".ends span")
    worst, best = ends.first.bounding_box(), ends.last.bounding_box()
    assert worst and best and worst["x"] > best["x"], "the end labels follow the same order"
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
    screenshot(page, "ar-question-29-360px")
    assert_accessible(page)
    page.goto(f"{live_server.url}/q/review")
    assert_accessible(page)
    page.locator("input[name=confirm_missing]").check()
    page.locator("form[action='/q/submit'] button").click()
    expect(page.get_by_role("heading", name=translated("ar", "Thank you"))).to_be_visible()
    assert_accessible(page)
    context.close()
    assert stored_answers(live_server, patient.assessment_id) == {"q1": 2}
