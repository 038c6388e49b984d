"""Session cookies verified once and CSRF tokens signed once per process (pro_app.web.signed):
what a request gets from the memo is what verifying or signing anew would have given it."""

from __future__ import annotations

import re
import time

import flask_wtf.csrf as flask_wtf_csrf
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from pro_app.db.models import Assessment
from pro_app.web.signed import SignedMemo
from tests.factories import enrol, hidden_fields, link_for, make_study


def _patient(app: Flask, db_session: Session, code: str) -> tuple[FlaskClient, int]:
    participant = enrol(db_session, make_study(db_session, code), f"{code}-1")
    token = link_for(db_session, participant).token
    assessment = db_session.scalars(
        select(Assessment).where(Assessment.participant_id == participant.id, Assessment.timepoint_code == "baseline")
    ).one()
    db_session.commit()
    client = app.test_client()
    assert client.get(f"/p/{token}").status_code == 303
    assert client.post("/q/start", data={"assessment": assessment.id}).status_code == 303
    assert client.get("/q/1").status_code == 200  # the session gets its CSRF secret: a new cookie
    return client, assessment.id


def _meta_token(page: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
    assert found
    return found.group(1)


def _cookie(client: FlaskClient, app: Flask) -> str:
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    assert cookie is not None
    return cookie.value


def _save(client: FlaskClient, assessment_id: int, token: str, value: int = 2) -> int:
    return client.post(
        "/q/answer", json={"assessment": assessment_id, "item": "q1", "value": value},
        headers={"X-CSRFToken": token},
    ).status_code


def test_a_verified_session_cookie_is_taken_again_until_it_is_too_old(
    app: Flask, db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = _patient(app, db_session, "SIGN-1")
    assert client.get("/q/1").status_code == 200
    value = _cookie(client, app)
    with app.app_context():
        verified = SignedMemo.of_app(app, "pro_verified_session_cookies")
        assert verified.get(value) is not None  # verified on the first page, kept
    assert client.get("/q/2").status_code == 200  # taken from the memo: still signed in

    # Past the session lifetime the memo refuses it, as the signature check would.
    lifetime = app.permanent_session_lifetime.total_seconds()
    later = time.time() + lifetime + 5
    monkeypatch.setattr(time, "time", lambda: later)
    assert client.get("/q/2").status_code == 401
    with app.app_context():
        assert SignedMemo.of_app(app, "pro_verified_session_cookies").get(value) is None


def test_a_changed_cookie_is_verified_and_a_forged_one_refused(app: Flask, db_session: Session) -> None:
    client, _ = _patient(app, db_session, "SIGN-2")
    assert client.get("/q/1").status_code == 200
    value = _cookie(client, app)
    payload, _, signature = value.rpartition(".")
    forged = f"{payload}.{signature[::-1]}"
    client.set_cookie(app.config["SESSION_COOKIE_NAME"], forged)
    assert client.get("/q/1").status_code == 401
    client.set_cookie(app.config["SESSION_COOKIE_NAME"], value)
    assert client.get("/q/1").status_code == 200


def test_cookies_verified_with_a_replaced_secret_key_are_verified_again(app: Flask, db_session: Session) -> None:
    client, _ = _patient(app, db_session, "SIGN-3")
    assert client.get("/q/1").status_code == 200
    app.secret_key = "another-secret-key-for-this-test-0123456789"
    assert client.get("/q/1").status_code == 401  # signed with the old key: not accepted from the memo


def test_the_memo_is_emptied_when_full() -> None:
    memo: SignedMemo[int] = SignedMemo(("key",))
    for number in range(SignedMemo.LIMIT):
        memo.put(str(number), number)
    assert len(memo) == SignedMemo.LIMIT and memo.get("0") == 0
    memo.put("one more", 1)
    assert len(memo) == 1 and memo.get("0") is None and memo.get("one more") == 1


def _two_seconds_later(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flask-WTF's signature carries the second it was made."""
    later = time.time() + 2
    monkeypatch.setattr(time, "time", lambda: later)


def test_a_session_keeps_one_signed_csrf_token_and_it_validates(
    app: Flask, db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, assessment_id = _patient(app, db_session, "SIGN-4")
    other, _ = _patient(app, db_session, "SIGN-5")
    app.config["WTF_CSRF_ENABLED"] = True  # off in the other tests
    first = _meta_token(client.get("/q/1").get_data(as_text=True))
    _two_seconds_later(monkeypatch)
    second = _meta_token(client.get("/q/2").get_data(as_text=True))
    assert first == second
    assert _save(client, assessment_id, first) == 200
    assert _meta_token(other.get("/q/1").get_data(as_text=True)) != first  # another session's secret
    assert _save(client, assessment_id, "forged." + first[::-1]) == 400
    assert _save(client, assessment_id, "") == 400


def test_templates_get_the_same_token_as_the_page_cache(
    app: Flask, db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = _patient(app, db_session, "SIGN-6")
    page = client.get("/q/1").get_data(as_text=True)
    token = _meta_token(page)
    app.config["WTF_CSRF_ENABLED"] = True  # forms render their token field
    _two_seconds_later(monkeypatch)
    review = client.get("/q/review").get_data(as_text=True)  # rendered by its templates each time
    hidden = re.findall(r'name="csrf_token"[^>]*value="([^"]+)"', review)
    assert len(hidden) >= 2 and set(hidden) == {token}  # the language menu's and the form's


def test_with_a_time_limit_tokens_are_signed_on_every_request(
    app: Flask, db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.config["WTF_CSRF_TIME_LIMIT"] = 3600
    client, assessment_id = _patient(app, db_session, "SIGN-7")
    app.config["WTF_CSRF_ENABLED"] = True
    first = _meta_token(client.get("/q/1").get_data(as_text=True))
    _two_seconds_later(monkeypatch)
    second = _meta_token(client.get("/q/2").get_data(as_text=True))
    assert first != second  # a new timestamp: each token is checked against the limit
    assert _save(client, assessment_id, first) == 200 and _save(client, assessment_id, second) == 200


def _patient_with_token(app: Flask, db_session: Session, code: str) -> tuple[FlaskClient, int, str]:
    """A started patient, CSRF checks on, and the token their question page shows."""
    client, assessment_id = _patient(app, db_session, code)
    app.config["WTF_CSRF_ENABLED"] = True
    return client, assessment_id, _meta_token(client.get("/q/1").get_data(as_text=True))


def _count_signature_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token Flask-WTF verifies by its signature."""
    checked: list[str] = []
    original = flask_wtf_csrf.validate_csrf

    def validate(data: str | None, *args: object, **kwargs: object) -> None:
        checked.append(str(data))
        original(data, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(flask_wtf_csrf, "validate_csrf", validate)
    return checked


def test_the_kept_token_is_compared_not_verified_again(
    app: Flask, db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, assessment_id, token = _patient_with_token(app, db_session, "SIGN-8")
    checked = _count_signature_checks(monkeypatch)
    assert _save(client, assessment_id, token) == 200
    assert _save(client, assessment_id, token, value=3) == 200
    assert checked == []
    # The form post (no script) sends the same token in its field.
    fields = hidden_fields(client.get("/q/1").get_data(as_text=True), "/q/1")
    assert fields["csrf_token"] == token
    reply = client.post("/q/1", data={**fields, "value": "4", "go": "next"})
    assert reply.status_code == 303 and checked == []


def test_any_other_token_gets_flask_wtfs_check(
    app: Flask, db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    other, _ = _patient(app, db_session, "SIGN-10")  # started before CSRF checks are on
    client, assessment_id, token = _patient_with_token(app, db_session, "SIGN-9")
    others = _meta_token(other.get("/q/1").get_data(as_text=True))
    checked = _count_signature_checks(monkeypatch)
    for refused in (token[:-1], token + "x", others, "not.a.token"):
        reply = client.post("/q/answer", json={"assessment": assessment_id, "item": "q1", "value": 2},
                            headers={"X-CSRFToken": refused})
        assert reply.status_code == 400 and reply.get_json()["code"] == "csrf", refused
    assert checked == [token[:-1], token + "x", others, "not.a.token"]
    fields = hidden_fields(client.get("/q/1").get_data(as_text=True), "/q/1")
    del fields["csrf_token"]
    assert client.post("/q/1", data={**fields, "value": "2", "go": "next"}).status_code == 400
    assert checked[-1] == "None"  # no token at all: Flask-WTF's check refuses it
    assert _save(client, assessment_id, token) == 200  # the right one still passes


def test_a_valid_token_signed_elsewhere_is_checked_once_then_kept(
    app: Flask, db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, assessment_id, token = _patient_with_token(app, db_session, "SIGN-11")
    with app.app_context():  # as after a restart, or a page from another worker
        app.extensions.pop("pro_signed_csrf_tokens")
    checked = _count_signature_checks(monkeypatch)
    assert _save(client, assessment_id, token) == 200
    assert _save(client, assessment_id, token, value=3) == 200
    assert checked == [token]
    assert _meta_token(client.get("/q/2").get_data(as_text=True)) == token


def test_over_https_the_kept_token_still_needs_a_referrer_of_this_host(
    app: Flask, db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, assessment_id, token = _patient_with_token(app, db_session, "SIGN-12")
    checked = _count_signature_checks(monkeypatch)
    body = {"assessment": assessment_id, "item": "q1", "value": 2}
    headers = {"X-CSRFToken": token}
    https = {"base_url": "https://localhost"}
    assert client.post("/q/answer", json=body, headers=headers, **https).status_code == 400
    foreign = {**headers, "Referer": "https://elsewhere.example/q/1"}
    assert client.post("/q/answer", json=body, headers=foreign, **https).status_code == 400
    own = {**headers, "Referer": "https://localhost/q/1"}
    assert client.post("/q/answer", json=body, headers=own, **https).status_code == 200
    assert checked == []
