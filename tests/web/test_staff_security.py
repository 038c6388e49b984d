"""Staff authentication hardening: common passwords, the TOTP second factor (enrolment, sign-in,
wrong, replayed and drifting codes, lockout), per-study enforcement, administrators' reset,
session cookie attributes, and no default accounts after install."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from pro_app import create_app
from pro_app.cli import main
from pro_app.config import ConfigError
from pro_app.db.engine import make_engine
from pro_app.db.models import AuditEvent, StaffUser, Study
from pro_app.db.types import utcnow
from pro_app.domain import totp
from pro_app.services import auth, second_factor
from tests.conftest import app_config, migrated_sqlite
from tests.factories import STAFF_PASSWORD, make_staff, make_study, sign_in

COMMON = "Qwerty123456"  # on the list as "qwerty123456": refused in any case


def _count(session: Session, model: type, *where: object) -> int:
    return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _events(session: Session, action: str) -> list[AuditEvent]:
    return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)))


def _key(app: Flask) -> bytes:
    return second_factor.sealing_key(app.config["SECRET_KEY"])


def _code(secret: bytes, offset_steps: int = 0) -> str:
    return totp.totp(secret, time.time() + offset_steps * totp.STEP_SECONDS)


def _reload(session: Session, user: StaffUser) -> StaffUser:
    session.expire_all()
    fresh = session.get(StaffUser, user.id)
    assert fresh is not None
    return fresh


def enrol_second_factor(app: Flask, session: Session, user: StaffUser) -> bytes:
    """Switch the second factor on through the services, confirmed 90 s ago (so the current
    code is not the one used for the confirmation)."""
    enrolment = second_factor.begin_enrolment(session, user, key=_key(app), issuer="pro-app")
    secret = totp.from_base32(enrolment.secret)
    moment = utcnow() - timedelta(seconds=90)
    second_factor.confirm_enrolment(session, user, code=totp.totp(secret, moment.timestamp()), key=_key(app),
                                    now=moment)
    session.commit()
    return secret


def sign_in_with_code(client: FlaskClient, email: str, code: str):  # type: ignore[no-untyped-def]
    first = sign_in(client, email)
    assert first.status_code == 303 and first.headers["Location"] == "/staff/login/code"
    return client.post("/staff/login/code", data={"code": code})


@pytest.fixture
def study(db_session: Session) -> Study:
    study = make_study(db_session, "SEC-1")
    db_session.commit()
    return study


@pytest.fixture
def admin(db_session: Session, study: Study) -> StaffUser:
    user = make_staff(db_session, "admin", [], "admin@sec.org")
    db_session.commit()
    return user


@pytest.fixture
def analyst(db_session: Session, study: Study) -> StaffUser:
    user = make_staff(db_session, "analyst", [study.sites[0]], "analyst@sec.org")
    db_session.commit()
    return user


@pytest.fixture
def admin_client(app: Flask, admin: StaffUser) -> FlaskClient:
    client = app.test_client()
    assert sign_in(client, admin.email).status_code == 303
    return client


# ---------------------------------------------------------------- common passwords, every path


def test_cli_create_user_refuses_a_common_password(runner: FlaskCliRunner, db_session: Session) -> None:
    result = runner.invoke(main, ["create-user", "a@example.org", "--role", "nurse", "--password", COMMON])
    assert result.exit_code == 1 and "most commonly used passwords" in result.output
    assert _count(db_session, StaffUser) == 0


def test_admin_create_and_reset_refuse_a_common_password(
    admin_client: FlaskClient, analyst: StaffUser, db_session: Session
) -> None:
    created = admin_client.post("/staff/admin/users", data={"email": "n@example.org", "role": "nurse", "password": COMMON})
    page = created.get_data(as_text=True)
    assert created.status_code == 400 and "most commonly used passwords" in page and 'value="n@example.org"' in page
    assert _count(db_session, StaffUser, StaffUser.email == "n@example.org") == 0
    before = (analyst.password_hash, analyst.session_version)
    reset = admin_client.post(f"/staff/admin/users/{analyst.id}/password", data={"password": "  1Q2W3E4R5T6Y "})
    assert reset.status_code == 400 and "most commonly used passwords" in reset.get_data(as_text=True)
    fresh = _reload(db_session, analyst)
    assert (fresh.password_hash, fresh.session_version) == before


def test_password_change_refuses_a_common_password(app: Flask, analyst: StaffUser, db_session: Session) -> None:
    client = app.test_client()
    sign_in(client, analyst.email)
    before = (analyst.password_hash, analyst.session_version)
    response = client.post("/staff/password", data={"current": STAFF_PASSWORD, "new": COMMON})
    assert response.status_code == 400 and "most commonly used passwords" in response.get_data(as_text=True)
    fresh = _reload(db_session, analyst)
    assert (fresh.password_hash, fresh.session_version) == before
    assert client.get("/staff/").status_code == 200, "still signed in, nothing changed"
    assert 'not one of the most commonly used passwords' in client.get("/staff/password").get_data(as_text=True)


def test_seed_demo_passwords_pass_the_rules(runner: FlaskCliRunner, db_session: Session) -> None:
    result = runner.invoke(main, ["seed-demo"])
    assert result.exit_code == 0, result.output
    assert _count(db_session, StaffUser) == 3


# ---------------------------------------------------------------- no default accounts


def test_a_freshly_migrated_database_has_no_staff_accounts(tmp_path: Path, db_session: Session) -> None:
    url = migrated_sqlite(tmp_path, "fresh")
    engine = make_engine(url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM staff_users")).scalar() == 0
    engine.dispose()
    # The test database (SQLite and PostgreSQL) is migrated the same way and starts empty too.
    assert _count(db_session, StaffUser) == 0


# ---------------------------------------------------------------- enrolment


def test_enrolment_shows_the_key_once_and_needs_a_valid_code(
    app: Flask, admin: StaffUser, admin_client: FlaskClient, db_session: Session
) -> None:
    other_device = app.test_client()
    assert sign_in(other_device, admin.email).status_code == 303
    premature = admin_client.post("/staff/second-factor", data={"code": "123456"})
    assert premature.status_code == 303 and _reload(db_session, admin).second_factor_secret is None
    page = admin_client.get("/staff/second-factor")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "<svg" in html
    match = re.search(r'<code class="code wrap">([A-Z2-7 ]+)</code>', html)
    assert match is not None
    shown = match.group(1)
    secret = totp.from_base32(shown)
    assert admin_client.get("/staff/second-factor").get_data(as_text=True).count(shown) == 1, "same key on reload"
    stored = _reload(db_session, admin)
    assert stored.second_factor_secret is not None and not stored.has_second_factor
    assert totp.to_base32(secret) not in stored.second_factor_secret, "the key is stored sealed"

    wrong_code = "000000" if _code(secret) != "000000" else "111111"
    wrong = admin_client.post("/staff/second-factor", data={"code": wrong_code})
    assert wrong.status_code == 400 and "The code is not correct." in wrong.get_data(as_text=True)
    assert admin_client.post("/staff/second-factor", data={"code": "12ab"}).status_code == 400
    assert not _reload(db_session, admin).has_second_factor

    ok = admin_client.post("/staff/second-factor", data={"code": _code(secret)})
    assert ok.status_code == 303
    done = admin_client.get(ok.headers["Location"]).get_data(as_text=True)
    assert "switched on" in done and shown not in done and "<svg" not in done, "never shown again"
    assert _reload(db_session, admin).has_second_factor
    assert admin_client.get("/staff/").status_code == 200, "this device stays signed in"
    assert other_device.get("/staff/").status_code == 302, "sessions without the second factor end"
    assert len(_events(db_session, "staff_user.second_factor_enable")) == 1
    assert admin_client.post("/staff/second-factor", data={"code": _code(secret)}).status_code == 409


def test_nurses_are_not_offered_a_second_factor(app: Flask, study: Study, db_session: Session) -> None:
    make_staff(db_session, "nurse", [study.sites[0]], "nurse@sec.org")
    db_session.commit()
    client = app.test_client()
    sign_in(client, "nurse@sec.org")
    assert client.get("/staff/second-factor").status_code == 403


# ---------------------------------------------------------------- signing in with a code


def test_sign_in_needs_password_then_code(app: Flask, analyst: StaffUser, db_session: Session) -> None:
    secret = enrol_second_factor(app, db_session, analyst)
    client = app.test_client()
    first = sign_in(client, analyst.email)
    assert first.status_code == 303 and first.headers["Location"] == "/staff/login/code"
    assert client.get("/staff/").status_code == 302, "not signed in after the password alone"
    page = client.get("/staff/login/code").get_data(as_text=True)
    assert 'autocomplete="one-time-code"' in page
    done = client.post("/staff/login/code", data={"code": _code(secret)})
    assert done.status_code == 303 and done.headers["Location"] == "/staff/"
    assert client.get("/staff/").status_code == 200
    login = _events(db_session, "staff_user.login")[-1]
    assert login.entity_id == str(analyst.id) and json.loads(login.after or "{}") == {"second_factor": "totp"}


def test_sign_in_keeps_the_page_asked_for(app: Flask, analyst: StaffUser, db_session: Session) -> None:
    secret = enrol_second_factor(app, db_session, analyst)
    client = app.test_client()
    client.post("/staff/login?next=/staff/participants/", data={"email": analyst.email, "password": STAFF_PASSWORD,
                                                                "next": "/staff/participants/"})
    done = client.post("/staff/login/code", data={"code": _code(secret)})
    assert done.headers["Location"] == "/staff/participants/"


def test_wrong_code_is_refused(app: Flask, analyst: StaffUser, db_session: Session) -> None:
    secret = enrol_second_factor(app, db_session, analyst)
    client = app.test_client()
    valid = {_code(secret, k) for k in (-1, 0, 1)}
    wrong = next(c for c in ("000000", "111111", "222222") if c not in valid)
    response = sign_in_with_code(client, analyst.email, wrong)
    assert response.status_code == 401 and "The code is not correct." in response.get_data(as_text=True)
    assert client.get("/staff/").status_code == 302
    malformed = client.post("/staff/login/code", data={"code": "abc"})
    assert malformed.status_code == 401 and "6-digit code" in malformed.get_data(as_text=True)
    assert client.post("/staff/login/code", data={}).status_code == 400
    assert _reload(db_session, analyst).failed_logins == 2


def test_a_code_cannot_be_used_twice(app: Flask, analyst: StaffUser, db_session: Session) -> None:
    secret = enrol_second_factor(app, db_session, analyst)
    code = _code(secret, 1)  # the next step's code stays valid for the whole test
    first = app.test_client()
    assert sign_in_with_code(first, analyst.email, code).status_code == 303
    replay = app.test_client()
    response = sign_in_with_code(replay, analyst.email, code)
    assert response.status_code == 401 and "already been used" in response.get_data(as_text=True)
    assert replay.get("/staff/").status_code == 302


def test_one_step_of_clock_drift_is_accepted_two_are_not(app: Flask, analyst: StaffUser, db_session: Session) -> None:
    """Through the pages (ahead of the server clock), then exactly at the service with a fixed clock."""
    secret = enrol_second_factor(app, db_session, analyst)
    behind = app.test_client()
    assert sign_in_with_code(behind, analyst.email, _code(secret, -2)).status_code == 401
    ahead = app.test_client()
    assert sign_in_with_code(ahead, analyst.email, _code(secret, 1)).status_code == 303

    now = utcnow() + timedelta(minutes=10)  # after every step used above
    user = _reload(db_session, analyst)

    def attempt(offset: int, at: datetime) -> bool:
        code = totp.totp(secret, at.timestamp() + offset * totp.STEP_SECONDS)
        try:
            auth.complete_second_factor(db_session, user_id=user.id, session_version=user.session_version, code=code,
                                        client="test", key=_key(app), now=at)
        except auth.LoginRefused:
            return False
        return True

    assert not attempt(-2, now)
    assert not attempt(2, now)
    assert attempt(-1, now)
    assert attempt(0, now + timedelta(minutes=1))
    assert attempt(1, now + timedelta(minutes=2))


def test_code_failures_count_towards_the_lockout(app: Flask, analyst: StaffUser, db_session: Session) -> None:
    secret = enrol_second_factor(app, db_session, analyst)
    valid = {_code(secret, k) for k in (-1, 0, 1, 2)}
    wrong = next(c for c in ("000000", "111111", "222222") if c not in valid)
    client = app.test_client()
    for _ in range(3):
        assert sign_in_with_code(client, analyst.email, wrong).status_code == 401
    # The right password again does not clear the count while the code is still missing.
    assert sign_in(client, analyst.email).status_code == 303
    assert client.post("/staff/login/code", data={"code": wrong}).status_code == 401
    locked = client.post("/staff/login/code", data={"code": wrong})
    assert locked.status_code == 401 and "locked" in locked.get_data(as_text=True)
    assert client.post("/staff/login/code", data={"code": _code(secret)}).status_code == 401, "must start again"
    refused = sign_in(client, analyst.email)
    assert refused.status_code == 401 and "locked" in refused.get_data(as_text=True)
    assert _reload(db_session, analyst).locked_until is not None
    assert len(_events(db_session, "staff_user.lock")) == 1


def test_the_code_step_expires(app: Flask, analyst: StaffUser, db_session: Session) -> None:
    secret = enrol_second_factor(app, db_session, analyst)
    client = app.test_client()
    sign_in(client, analyst.email)
    with client.session_transaction() as session:
        session["staff_pending"] = {**session["staff_pending"], "at": int(time.time()) - 6 * 60}
    response = client.post("/staff/login/code", data={"code": _code(secret)})
    assert response.status_code == 401 and "sign in again" in response.get_data(as_text=True)
    assert client.get("/staff/login/code").status_code == 303
    assert client.get("/staff/").status_code == 302


def test_a_secret_sealed_under_another_key_fails_closed(analyst: StaffUser, db_session: Session, database_url: str,
                                                         app: Flask) -> None:
    secret = enrol_second_factor(app, db_session, analyst)
    other = create_app(app_config(DATABASE_URL=database_url, SECRET_KEY="a-rotated-secret-key"))
    other.extensions["pro_db"] = app.extensions["pro_db"]
    client = other.test_client()
    response = sign_in_with_code(client, analyst.email, _code(secret))
    assert response.status_code == 401 and "cannot be checked" in response.get_data(as_text=True)
    assert client.get("/staff/").status_code == 302


# ---------------------------------------------------------------- enforcement per study


def _require(db_session: Session, study: Study) -> None:
    second_factor.set_requirement(db_session, study, required=True, actor="test")
    db_session.commit()


def test_a_study_requirement_gates_everything_until_enrolment(
    app: Flask, study: Study, analyst: StaffUser, db_session: Session
) -> None:
    nurse = make_staff(db_session, "nurse", [study.sites[0]], "nurse@sec.org")
    elsewhere = make_study(db_session, "SEC-2")
    outsider = make_staff(db_session, "analyst", [elsewhere.sites[0]], "outsider@sec.org")
    db_session.commit()
    _require(db_session, study)
    client = app.test_client()
    assert sign_in(client, analyst.email).status_code == 303
    for path in ("/staff/", f"/staff/exports/{study.id}", f"/staff/analysis/{study.id}", "/staff/participants/",
                 "/staff/password", f"/staff/studies/{study.id}/compliance"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"] == "/staff/second-factor", path
    assert client.post(f"/staff/exports/{study.id}", data={"format": "csv_long"}).status_code == 302
    page = client.get("/staff/second-factor").get_data(as_text=True)
    assert "SEC-1" in page and "requires a second factor" in page
    secret = totp.from_base32(re.search(r'<code class="code wrap">([A-Z2-7 ]+)</code>', page).group(1))  # type: ignore[union-attr]
    assert client.post("/staff/second-factor", data={"code": _code(secret)}).status_code == 303
    assert client.get("/staff/").status_code == 200
    assert client.get(f"/staff/exports/{study.id}").status_code == 200
    # Nurses, and analysts of other studies only, are not affected.
    for user in (nurse, outsider):
        other = app.test_client()
        sign_in(other, user.email)
        assert other.get("/staff/").status_code == 200


def test_administrators_are_gated_by_any_requiring_study(app: Flask, study: Study, admin: StaffUser,
                                                        admin_client: FlaskClient, db_session: Session) -> None:
    settings = admin_client.get(f"/staff/admin/studies/{study.id}/settings")
    assert settings.status_code == 200 and "admin@sec.org" in settings.get_data(as_text=True)
    saved = admin_client.post(f"/staff/admin/studies/{study.id}/settings", data={"require_second_factor": "y"})
    assert saved.status_code == 303
    db_session.expire_all()
    assert db_session.get(Study, study.id).require_second_factor  # type: ignore[union-attr]
    event = _events(db_session, "study.settings")[-1]
    assert event.actor == f"staff:{admin.id}" and event.entity_id == str(study.id)
    assert json.loads(event.before or "{}") == {"require_second_factor": False}
    assert json.loads(event.after or "{}") == {"require_second_factor": True}
    assert admin_client.get("/staff/admin/users").headers["Location"] == "/staff/second-factor"
    assert admin_client.get("/staff/second-factor").status_code == 200
    # Once enrolled the administrator works again; saving the same value writes no event.
    secret = enrol_second_factor(app, db_session, _reload(db_session, admin))
    client = app.test_client()
    assert sign_in_with_code(client, admin.email, _code(secret)).status_code == 303
    assert client.post(f"/staff/admin/studies/{study.id}/settings", data={"require_second_factor": "y"}).status_code == 303
    assert len(_events(db_session, "study.settings")) == 1
    assert "Accounts without a second factor" not in client.get(f"/staff/admin/studies/{study.id}/settings").get_data(as_text=True)


def test_switching_off_only_when_not_required(app: Flask, study: Study, analyst: StaffUser, db_session: Session) -> None:
    secret = enrol_second_factor(app, db_session, analyst)
    client = app.test_client()
    assert sign_in_with_code(client, analyst.email, _code(secret)).status_code == 303
    _require(db_session, study)
    page = client.get("/staff/second-factor").get_data(as_text=True)
    assert "cannot be switched off" in page
    refused = client.post("/staff/second-factor/remove", data={"password": STAFF_PASSWORD})
    assert refused.status_code == 409 and "SEC-1" in refused.get_data(as_text=True)
    second_factor.set_requirement(db_session, study, required=False, actor="test")
    db_session.commit()
    wrong = client.post("/staff/second-factor/remove", data={"password": "not-my-password"})
    assert wrong.status_code == 400
    assert client.post("/staff/second-factor/remove", data={"password": STAFF_PASSWORD}).status_code == 303
    assert not _reload(db_session, analyst).has_second_factor
    assert client.get("/staff/").status_code == 200
    assert len(_events(db_session, "staff_user.second_factor_remove")) == 1
    assert sign_in(app.test_client(), analyst.email).headers["Location"] == "/staff/", "password alone again"


# ---------------------------------------------------------------- administrators' reset


def test_admin_resets_a_second_factor_with_a_reason(
    app: Flask, admin: StaffUser, admin_client: FlaskClient, analyst: StaffUser, db_session: Session
) -> None:
    secret = enrol_second_factor(app, db_session, analyst)
    their_device = app.test_client()
    assert sign_in_with_code(their_device, analyst.email, _code(secret)).status_code == 303
    users = admin_client.get("/staff/admin/users").get_data(as_text=True)
    assert f"/staff/admin/users/{analyst.id}/second-factor" in users
    no_reason = admin_client.post(f"/staff/admin/users/{analyst.id}/second-factor", data={"reason": ""})
    assert no_reason.status_code == 400 and _reload(db_session, analyst).has_second_factor
    done = admin_client.post(f"/staff/admin/users/{analyst.id}/second-factor", data={"reason": "phone lost"})
    assert done.status_code == 303
    fresh = _reload(db_session, analyst)
    assert not fresh.has_second_factor and fresh.second_factor_secret is None
    event = _events(db_session, "staff_user.second_factor_reset")[-1]
    assert event.reason == "phone lost" and event.actor == f"staff:{admin.id}" and event.entity_id == str(analyst.id)
    assert their_device.get("/staff/").status_code == 302, "their sessions end"
    again = admin_client.post(f"/staff/admin/users/{analyst.id}/second-factor", data={"reason": "again"})
    assert again.status_code == 409
    own = admin_client.post(f"/staff/admin/users/{admin.id}/second-factor", data={"reason": "mine"})
    assert own.status_code == 400
    assert admin_client.post("/staff/admin/users/999999/second-factor", data={"reason": "x"}).status_code == 404


def test_cli_resets_a_second_factor(app: Flask, runner: FlaskCliRunner, analyst: StaffUser, db_session: Session) -> None:
    enrol_second_factor(app, db_session, analyst)
    missing_reason = runner.invoke(main, ["reset-second-factor", analyst.email])
    assert missing_reason.exit_code == 2
    result = runner.invoke(main, ["reset-second-factor", analyst.email.upper(), "--reason", "phone lost"])
    assert result.exit_code == 0, result.output
    assert not _reload(db_session, analyst).has_second_factor
    assert _events(db_session, "staff_user.second_factor_reset")[-1].actor == "cli"
    assert runner.invoke(main, ["reset-second-factor", "nobody@sec.org", "--reason", "x"]).exit_code == 1


# ---------------------------------------------------------------- session cookie


def _session_cookie(response) -> str:  # type: ignore[no-untyped-def]
    cookies = [value for value in response.headers.getlist("Set-Cookie") if value.startswith("session=")]
    assert cookies, "the response sets the session cookie"
    return cookies[0]


def test_cookie_over_http_is_httponly_and_lax(app: Flask, admin: StaffUser) -> None:
    cookie = _session_cookie(sign_in(app.test_client(), admin.email))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie


def test_cookie_over_https_is_secure(app: Flask, admin: StaffUser) -> None:
    client = app.test_client()
    response = client.post("/staff/login", data={"email": admin.email, "password": STAFF_PASSWORD},
                           base_url="https://localhost")
    assert response.status_code == 303
    cookie = _session_cookie(response)
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


@pytest.mark.parametrize("config", [{"BASE_URL": "https://pro.example.org"}, {"COOKIE_SECURE": "always"}])
def test_cookie_is_secure_by_configuration(database_url: str, config: dict[str, str]) -> None:
    app = create_app(app_config(DATABASE_URL=database_url, **config))
    response = app.test_client().post("/language", data={"lang": "es", "next": "/staff/login"})
    assert response.status_code == 303
    assert "Secure" in _session_cookie(response)


def test_cookie_setting_is_checked() -> None:
    with pytest.raises(ConfigError, match="PRO_COOKIE_SECURE"):
        create_app(app_config(COOKIE_SECURE="sometimes"))
