"""Pages and the questionnaire in English, Simplified Chinese, Spanish and Arabic."""

from __future__ import annotations

import re
from datetime import datetime as dt
from datetime import timedelta
from datetime import timezone as tz
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from babel import support
from babel.dates import format_datetime
from babel.messages.pofile import read_po
from flask import Flask, g
from flask_babel import format_datetime as babel_format_datetime
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from wtforms import IntegerField
from wtforms.i18n import messages_path

from pro_app.db.models import Answer, Assessment, Participant
from pro_app.domain.instruments import default_registry
from pro_app.web.forms import Form
from pro_app.web.i18n import datetimeformat
from tests.factories import enrol, link_for, make_study

TRANSLATIONS = Path(__file__).resolve().parents[2] / "translations"
HTML_LANG = {"en": ("en", "ltr"), "zh_Hans": ("zh-Hans", "ltr"), "es": ("es", "ltr"), "ar": ("ar", "rtl")}


def translated(locale: str, message: str) -> str:
    with (TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        entry = read_po(handle).get(message)
    assert entry is not None and entry.string, (locale, message)
    return str(entry.string)


def _patient(session: Session, locale: str = "en") -> tuple[Participant, str, Assessment]:
    study = make_study(session)
    participant = enrol(session, study, locale=locale)
    token = link_for(session, participant).token
    assessment = session.scalars(select(Assessment).where(Assessment.participant_id == participant.id).order_by(Assessment.planned_at)).first()
    assert assessment is not None
    session.commit()
    return participant, token, assessment


def _html_attributes(page: str) -> tuple[str, str]:
    match = re.search(r'<html lang="([^"]+)" dir="([^"]+)"', page)
    assert match, page[:200]
    return match.group(1), match.group(2)


@pytest.mark.parametrize(
    ("header", "locale"),
    [("zh-CN,zh;q=0.9", "zh_Hans"), ("es-MX", "es"), ("ar-EG,ar;q=0.8", "ar"), ("fr-FR, en;q=0.5", "en"), ("xx", "en")],
)
def test_browser_language_chooses_the_page_language(client: FlaskClient, header: str, locale: str) -> None:
    page = client.get("/start", headers={"Accept-Language": header}).get_data(as_text=True)
    assert _html_attributes(page) == HTML_LANG[locale]
    assert translated(locale, "Enter your personal code") in page


def test_choice_order_explicit_then_participant_then_browser(client: FlaskClient, db_session: Session) -> None:
    _participant, token, _assessment = _patient(db_session, locale="es")
    client.get(f"/p/{token}")
    page = client.get("/q/", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert _html_attributes(page) == HTML_LANG["es"], "the participant's preference beats the browser"
    client.post("/language", data={"lang": "ar", "next": "/q/"})
    page = client.get("/q/", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert _html_attributes(page) == HTML_LANG["ar"], "an explicit choice beats both"
    assert translated("ar", "Your questionnaire") in page


def test_unknown_locales_fall_back_without_error(client: FlaskClient) -> None:
    response = client.post("/language", data={"lang": "klingon", "next": "/start"})
    assert response.status_code == 303
    with client.session_transaction() as session:
        session["lang"] = "xx_INVALID"  # e.g. a cookie from an older version
    page = client.get("/start", headers={"Accept-Language": "@@@;q=abc"})
    assert page.status_code == 200 and _html_attributes(page.get_data(as_text=True)) == HTML_LANG["en"]
    with client.session_transaction() as session:
        session["lang"] = ["ar"]  # not a code at all
    page = client.get("/start", headers={"Accept-Language": "es-" + "x" * 5000 + ", zh-CN;q=0.5"})
    assert page.status_code == 200, "an absurdly long tag is passed over, not matched by its prefix"
    assert _html_attributes(page.get_data(as_text=True)) == HTML_LANG["zh_Hans"]


@pytest.mark.parametrize("locale", ["zh_Hans", "es", "ar"])
def test_questionnaire_wording_in_each_language(client: FlaskClient, db_session: Session, locale: str) -> None:
    _participant, token, assessment = _patient(db_session, locale=locale)
    client.get(f"/p/{token}")
    client.post("/q/start", data={"assessment": assessment.id})
    text = default_registry().text("qlq_c30", locale)
    page = client.get("/q/6").get_data(as_text=True)
    assert text.items["q6"] in page and text.recall["past_week"] in page
    for label in text.response_labels["four_point"].values():
        assert label in page
    assert translated(locale, "Question %(num)s of %(total)s") % {"num": 6, "total": 30} in page
    db_session.expire_all()
    assert assessment.locale == locale and assessment.text_checksum == text.checksum


def test_switching_language_mid_way_keeps_answers_and_records_the_locale(client: FlaskClient, db_session: Session) -> None:
    _participant, token, assessment = _patient(db_session, locale="en")
    client.get(f"/p/{token}")
    client.post("/q/start", data={"assessment": assessment.id})
    client.post("/q/1", data={"assessment": assessment.id, "value": 2, "go": "next"})
    switched = client.post("/language", data={"lang": "zh_Hans", "next": "/q/2"})
    assert switched.headers["Location"] == "/q/2"
    page = client.get("/q/1").get_data(as_text=True)
    assert default_registry().text("qlq_c30", "zh_Hans").items["q1"] in page
    assert re.search(r'value="2"\s+checked', page), "the earlier answer is still there"
    client.post("/q/2", data={"assessment": assessment.id, "value": 3, "go": "next"})
    db_session.expire_all()
    locales = dict(db_session.execute(select(Answer.item_id, Answer.locale).where(Answer.assessment_id == assessment.id)).tuples().all())
    assert locales == {"q1": "en", "q2": "zh_Hans"}


def test_dates_are_formatted_for_the_locale_and_time_zone(client: FlaskClient, db_session: Session) -> None:
    _participant, token, assessment = _patient(db_session, locale="es")
    assessment.status = "missed"
    db_session.commit()
    client.get(f"/p/{token}")
    page = client.get("/q/").get_data(as_text=True)
    upcoming = db_session.scalars(
        select(Assessment).where(Assessment.participant_id == assessment.participant_id, Assessment.status == "scheduled")
        .order_by(Assessment.window_opens_at)
    ).first()
    assert upcoming is not None
    expected = format_datetime(upcoming.window_opens_at, "medium", tzinfo=ZoneInfo("Europe/Berlin"), locale="es")
    assert expected in page


@pytest.mark.parametrize("locale", ["en", "es", "zh_Hans", "ar"])
def test_wtforms_own_messages_come_in_the_page_language(app: Flask, locale: str) -> None:
    """Forms take WTForms' messages from a per-process cache of its catalogue, per language."""
    class NumberForm(Form):
        class Meta:
            csrf = False

        number = IntegerField()

    expected = support.Translations.load(messages_path(), [locale], domain="wtforms").ugettext(
        "Not a valid integer value."
    )
    if locale == "es":
        assert expected != "Not a valid integer value."
    for _ in range(2):  # the second form is answered from the cached catalogue
        with app.test_request_context("/", method="POST", data={"number": "twelve"}):
            g.preferred_locale = locale
            form = NumberForm()
            assert not form.validate()
            assert form.number.errors == [expected]


@pytest.mark.parametrize("locale", ["en", "es", "zh_Hans", "ar"])
@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "Asia/Shanghai", "America/New_York", "Australia/Lord_Howe"])
def test_the_datetime_filter_writes_what_flask_babel_writes(app: Flask, locale: str, zone: str) -> None:
    """``datetimeformat`` reuses date and time parts within a request; the text must not change."""
    starts = [dt(2026, 3, 29, 0, 30, tzinfo=tz.utc), dt(2026, 10, 25, 0, 30, tzinfo=tz.utc),
              dt(2026, 11, 1, 5, 59, 59, 999_999, tzinfo=tz.utc), dt(2026, 4, 5, 14, 45, tzinfo=tz.utc)]
    instants = [start + timedelta(minutes=17 * step) for start in starts for step in range(12)]
    instants.append(dt(2026, 6, 1, 12, 0))  # naive: taken as UTC, as Flask-Babel does
    with app.test_request_context("/"):
        g.preferred_locale = locale
        g.timezone = zone
        for _ in range(2):  # the second pass comes from the parts remembered for the request
            for instant in instants:
                for form in ("short", "medium", "long", "full"):
                    assert datetimeformat(instant, form) == babel_format_datetime(instant, form), (instant, form)
        assert datetimeformat(instants[0], "yyyy-MM-dd HH:mm") == babel_format_datetime(instants[0], "yyyy-MM-dd HH:mm")
        day = dt(2026, 3, 29).date()  # a date alone is formatted as Flask-Babel does it
        assert datetimeformat(day, "short") == babel_format_datetime(day, "short")
