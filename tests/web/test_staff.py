"""Staff sign-in, enrolment, the participant page, tablet mode, alerts and administration."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pro_app.db.models import (
    AccessLink,
    Alert,
    Assessment,
    AuditEvent,
    OutboxMessage,
    Participant,
    StaffUser,
    Study,
)
from pro_app.services.access import find_link
from tests.factories import STAFF_PASSWORD, enrol, make_staff, make_study, sign_in


@pytest.fixture
def study(db_session: Session) -> Study:
    study = make_study(db_session, "STAFF-1")
    db_session.commit()
    return study


@pytest.fixture
def nurse(db_session: Session, study: Study) -> StaffUser:
    user = make_staff(db_session, "nurse", [study.sites[0]], "nurse.a@example.org")
    db_session.commit()
    return user


@pytest.fixture
def nurse_client(app: Flask, nurse: StaffUser) -> FlaskClient:
    client = app.test_client()
    assert sign_in(client, nurse.email).status_code == 303
    return client


def _count(session: Session, model: type, *where: object) -> int:
    return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


# ---------------------------------------------------------------- sign-in and sessions


def test_login_and_logout(app: Flask, nurse: StaffUser) -> None:
    client = app.test_client()
    assert client.get("/staff/").status_code == 302
    page = client.get("/staff/login").get_data(as_text=True)
    assert "Staff sign-in" in page and 'autocomplete="current-password"' in page
    response = sign_in(client, "NURSE.A@example.org")
    assert response.status_code == 303 and response.headers["Location"] == "/staff/"
    assert client.get("/staff/").status_code == 200
    client.post("/staff/logout")
    assert client.get("/staff/").status_code == 302


def test_wrong_password_then_lockout(app: Flask, nurse: StaffUser, db_session: Session) -> None:
    client = app.test_client()
    for _ in range(4):
        response = sign_in(client, nurse.email, "wrong-password-123")
        assert response.status_code == 401
        assert "The email or password is not correct." in response.get_data(as_text=True)
    response = sign_in(client, nurse.email, "wrong-password-123")
    assert response.status_code == 401
    locked = sign_in(client, nurse.email)  # even the right password, while locked
    assert locked.status_code == 401 and "locked" in locked.get_data(as_text=True)
    db_session.expire_all()
    assert db_session.get(StaffUser, nurse.id).locked_until is not None  # type: ignore[union-attr]
    # Unknown accounts get the same message (no account discovery).
    unknown = sign_in(client, "nobody@example.org")
    assert unknown.status_code == 401 and "The email or password is not correct." in unknown.get_data(as_text=True)


def test_login_is_throttled_per_client_address(app: Flask, nurse: StaffUser) -> None:
    client = app.test_client()
    statuses = [sign_in(client, f"someone{n}@example.org", "x" * 12).status_code for n in range(31)]
    assert statuses[-1] == 401
    assert "Too many sign-in attempts" in sign_in(client, nurse.email).get_data(as_text=True)


def test_bad_login_input_is_a_400_with_the_typed_email_kept(app: Flask) -> None:
    response = app.test_client().post("/staff/login", data={"email": "typed@example.org", "password": ""})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert 'value="typed@example.org"' in page and "This field is required." in page


def test_session_ends_after_inactivity(app: Flask, nurse_client: FlaskClient) -> None:
    with nurse_client.session_transaction() as session:
        session["staff"] = {**session["staff"], "seen": int(time.time()) - 16 * 60}
    assert nurse_client.get("/staff/").status_code == 302


def test_logout_kills_a_copied_cookie(app: Flask, nurse_client: FlaskClient) -> None:
    with nurse_client.session_transaction() as session:
        stolen = dict(session)
    nurse_client.post("/staff/logout")
    thief = app.test_client()
    with thief.session_transaction() as session:
        session.update(stolen)
    assert thief.get("/staff/").status_code == 302


def test_password_change_signs_out_other_devices(app: Flask, nurse: StaffUser, nurse_client: FlaskClient) -> None:
    other = app.test_client()
    sign_in(other, nurse.email)
    bad = nurse_client.post("/staff/password", data={"current": STAFF_PASSWORD, "new": "short"})
    assert bad.status_code == 400 and "at least 12 characters" in bad.get_data(as_text=True)
    wrong = nurse_client.post("/staff/password", data={"current": "nope-nope-nope", "new": "a-brand-new-secret"})
    assert wrong.status_code == 400
    ok = nurse_client.post("/staff/password", data={"current": STAFF_PASSWORD, "new": "a-brand-new-secret"})
    assert ok.status_code == 200 and "has been changed" in ok.get_data(as_text=True)
    assert nurse_client.get("/staff/").status_code == 200, "this device stays signed in"
    assert other.get("/staff/").status_code == 302, "other devices are signed out"


# ---------------------------------------------------------------- enrolment


def _enrol_data(study: Study, **overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "subject_code": "car-101", "site": study.sites[0].id, "arm": study.arms[1].id, "locale": "es",
        "timezone": "", "email": "", "phone": "+4930123456",
        "lymphodepletion": (datetime.now() + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M"),
        "infusion": (datetime.now() + timedelta(days=8)).strftime("%Y-%m-%dT%H:%M"),
    }
    data.update(overrides)
    return data


def test_enrol_creates_participant_schedule_and_letter(nurse_client: FlaskClient, study: Study, db_session: Session) -> None:
    form = nurse_client.get("/staff/participants/new").get_data(as_text=True)
    assert "Site B" not in form, "only the nurse's own sites are offered"
    response = nurse_client.post("/staff/participants/new", data=_enrol_data(study))
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "CAR-101 has been enrolled." in page and "<svg" in page
    token = re.search(r"/p/([A-Za-z0-9_-]{40,})", page)
    code = re.search(r'<code class="code">([A-Z0-9]{10})</code>', page)
    assert token and code
    participant = db_session.scalars(select(Participant).where(Participant.subject_code == "CAR-101")).one()
    assert participant.locale == "es" and participant.timezone == "Europe/Berlin" and participant.phone == "+4930123456"
    assert {a.kind for a in participant.anchors} == {"enrolment", "lymphodepletion", "infusion"}
    assert _count(db_session, Assessment, Assessment.participant_id == participant.id) > 0
    link = find_link(db_session, token=token.group(1))
    assert link is not None and link.participant_id == participant.id
    assert find_link(db_session, code=code.group(1)) is not None


@pytest.mark.parametrize(
    ("overrides", "status", "message"),
    [
        ({"subject_code": "x"}, 400, "Use 3 to 40 letters, digits or dashes."),
        ({"subject_code": "bad code!"}, 400, "Use 3 to 40 letters, digits or dashes."),
        ({"arm": 999999}, 400, "Not a valid choice"),
        ({"site": 999999}, 400, "Not a valid choice"),
        ({"locale": "fr"}, 400, "Not a valid choice"),
        ({"timezone": "Mars/Olympus"}, 400, "Unknown time zone Mars/Olympus."),
        ({"infusion": "2999-01-01T10:00"}, 400, "too far in the past or the future"),
        ({"infusion": "not a date"}, 400, "Not a valid datetime value."),
        ({"phone": "12345"}, 400, "international format"),
        ({"email": "nope"}, 400, "Enter a valid email address."),
        ({"lymphodepletion": (datetime.now() + timedelta(days=9)).strftime("%Y-%m-%dT%H:%M")}, 400,
         "The infusion cannot be before the lymphodepletion."),
    ],
)
def test_enrol_validation_keeps_what_was_typed(
    nurse_client: FlaskClient, study: Study, db_session: Session, overrides: dict[str, object], status: int, message: str
) -> None:
    response = nurse_client.post("/staff/participants/new", data=_enrol_data(study, **overrides))
    assert response.status_code == status
    page = response.get_data(as_text=True)
    assert message in page
    assert f'value="{overrides.get("phone", "+4930123456")}"' in page, "typed values are kept"
    assert _count(db_session, Participant) == 0


def test_enrol_duplicate_subject_code(nurse_client: FlaskClient, study: Study, db_session: Session) -> None:
    assert nurse_client.post("/staff/participants/new", data=_enrol_data(study)).status_code == 200
    again = nurse_client.post("/staff/participants/new", data=_enrol_data(study, subject_code="CAR-101"))
    assert again.status_code == 409
    assert "Subject code CAR-101 is already enrolled in this study." in again.get_data(as_text=True)
    assert _count(db_session, Participant) == 1


def test_enrol_arm_of_another_study_is_refused(nurse_client: FlaskClient, study: Study, db_session: Session) -> None:
    other = make_study(db_session, "OTHER")
    nurse = db_session.scalars(select(StaffUser).where(StaffUser.email == "nurse.a@example.org")).one()
    nurse.sites.append(other.sites[0])
    db_session.commit()
    response = nurse_client.post("/staff/participants/new", data=_enrol_data(study, arm=other.arms[0].id))
    assert response.status_code == 400
    assert "does not belong to the study" in response.get_data(as_text=True)


# ---------------------------------------------------------------- the participant page


def test_participant_page_scoping(app: Flask, nurse_client: FlaskClient, study: Study, db_session: Session) -> None:
    own = enrol(db_session, study, "OWN-1", site_index=0)
    other = enrol(db_session, study, "OTHER-1", site_index=1)
    db_session.commit()
    page = nurse_client.get(f"/staff/participants/{own.id}")
    assert page.status_code == 200 and "OWN-1" in page.get_data(as_text=True)
    assert nurse_client.get(f"/staff/participants/{other.id}").status_code == 404
    assert nurse_client.post(f"/staff/participants/{other.id}/link").status_code == 404
    assert nurse_client.post(f"/staff/participants/{other.id}/withdraw", data={"reason": "x"}).status_code == 404
    listing = nurse_client.get("/staff/participants/").get_data(as_text=True)
    assert "OWN-1" in listing and "OTHER-1" not in listing


def test_reissue_and_revoke_link(nurse_client: FlaskClient, study: Study, db_session: Session) -> None:
    participant = enrol(db_session, study, "LNK-1")
    db_session.commit()
    first = nurse_client.post(f"/staff/participants/{participant.id}/link").get_data(as_text=True)
    token = re.search(r"/p/([A-Za-z0-9_-]{40,})", first)
    assert token and "<svg" in first
    second = nurse_client.post(f"/staff/participants/{participant.id}/link").get_data(as_text=True)
    token2 = re.search(r"/p/([A-Za-z0-9_-]{40,})", second)
    assert token2 and token2.group(1) != token.group(1)
    db_session.expire_all()
    assert find_link(db_session, token=token.group(1)).revoked_at is not None  # type: ignore[union-attr]
    nurse_client.post(f"/staff/participants/{participant.id}/link/revoke")
    db_session.expire_all()
    assert find_link(db_session, token=token2.group(1)).revoked_at is not None  # type: ignore[union-attr]
    assert _count(db_session, AccessLink, AccessLink.revoked_at.is_(None)) == 0


def test_withdraw_keeps_data_and_stops_assessments(nurse_client: FlaskClient, study: Study, db_session: Session) -> None:
    participant = enrol(db_session, study, "WD-1")
    db_session.commit()
    missing_reason = nurse_client.post(f"/staff/participants/{participant.id}/withdraw", data={"reason": ""})
    assert missing_reason.status_code == 400
    response = nurse_client.post(f"/staff/participants/{participant.id}/withdraw", data={"reason": "Patient's wish"})
    assert response.status_code == 303
    db_session.expire_all()
    assert db_session.get(Participant, participant.id).status == "withdrawn"  # type: ignore[union-attr]
    states = set(db_session.scalars(select(Assessment.status).where(Assessment.participant_id == participant.id)))
    assert states == {"cancelled"}
    event = db_session.scalars(select(AuditEvent).where(AuditEvent.action == "participant.withdraw")).one()
    assert event.reason == "Patient's wish"
    again = nurse_client.post(f"/staff/participants/{participant.id}/withdraw", data={"reason": "again"})
    assert again.status_code == 409


# ---------------------------------------------------------------- tablet mode and alerts


def _open_baseline(session: Session, participant: Participant) -> Assessment:
    return session.scalars(
        select(Assessment).where(Assessment.participant_id == participant.id, Assessment.timepoint_code == "baseline")
    ).one()


def _answer_everything(client: FlaskClient, assessment: Assessment, worst: bool) -> None:
    client.post("/q/start", data={"assessment": assessment.id})
    for number in range(1, 31):
        value = (1 if number >= 29 else 4) if worst else (7 if number >= 29 else 1)
        client.post(f"/q/{number}", data={"assessment": assessment.id, "value": value, "go": "next"})
    page = client.get("/q/review").get_data(as_text=True)
    key = re.search(r'name="key" type="hidden" value="([^"]+)"', page)
    assert key
    assert client.post("/q/submit", data={"assessment": assessment.id, "key": key.group(1)}).status_code == 303


def test_tablet_mode_locks_staff_pages_until_the_nurse_unlocks(
    nurse_client: FlaskClient, nurse: StaffUser, study: Study, db_session: Session
) -> None:
    participant = enrol(db_session, study, "TAB-1", locale="zh_Hans")
    db_session.commit()
    assessment = _open_baseline(db_session, participant)
    response = nurse_client.post(
        f"/staff/participants/{participant.id}/hand-over", data={"assessment": assessment.id, "mode": "tablet"}
    )
    assert response.status_code == 303 and response.headers["Location"] == "/q/"
    # The staff side is unreachable while the patient holds the tablet.
    for path in ("/staff/", f"/staff/participants/{participant.id}", "/staff/participants/", "/staff/password"):
        locked = nurse_client.get(path)
        assert locked.status_code == 302 and locked.headers["Location"] == "/staff/tablet/unlock"
    assert nurse_client.post("/staff/logout").headers["Location"] == "/staff/tablet/unlock"
    page = nurse_client.get("/q/").get_data(as_text=True)
    assert 'lang="zh-Hans"' in page, "the patient's language"
    _answer_everything(nurse_client, assessment, worst=True)
    done = nurse_client.get("/q/done").get_data(as_text=True)
    assert "/staff/tablet/unlock" in done
    wrong = nurse_client.post("/staff/tablet/unlock", data={"password": "not-the-password"})
    assert wrong.status_code == 401
    right = nurse_client.post("/staff/tablet/unlock", data={"password": STAFF_PASSWORD})
    assert right.status_code == 303 and right.headers["Location"] == f"/staff/participants/{participant.id}"
    assert nurse_client.get("/staff/").status_code == 200
    assert nurse_client.get("/q/").status_code == 401, "the patient view is closed again"
    db_session.expire_all()
    done_assessment = db_session.get(Assessment, assessment.id)
    assert done_assessment is not None and done_assessment.mode == "tablet" and done_assessment.status == "completed"
    actions = set(db_session.scalars(select(AuditEvent.action).where(AuditEvent.entity_id == str(assessment.id))))
    assert {"tablet.start", "tablet.unlock", "assessment.submit"} <= actions


def test_interview_mode_is_recorded(nurse_client: FlaskClient, study: Study, db_session: Session) -> None:
    participant = enrol(db_session, study, "INT-1")
    db_session.commit()
    assessment = _open_baseline(db_session, participant)
    nurse_client.post(f"/staff/participants/{participant.id}/hand-over", data={"assessment": assessment.id, "mode": "interview"})
    nurse_client.post("/q/start", data={"assessment": assessment.id})
    nurse_client.post("/q/1", data={"assessment": assessment.id, "value": 2, "go": "next"})
    db_session.expire_all()
    assert db_session.get(Assessment, assessment.id).mode == "interview"  # type: ignore[union-attr]


def test_hand_over_refuses_a_closed_assessment(nurse_client: FlaskClient, study: Study, db_session: Session) -> None:
    participant = enrol(db_session, study, "TAB-2")
    db_session.commit()
    future = db_session.scalars(
        select(Assessment).where(Assessment.participant_id == participant.id, Assessment.status == "scheduled")
    ).first()
    assert future is not None
    response = nurse_client.post(
        f"/staff/participants/{participant.id}/hand-over", data={"assessment": future.id, "mode": "tablet"}
    )
    assert response.status_code == 409
    assert nurse_client.get("/staff/").status_code == 200, "nothing was locked"


def test_alerts_are_raised_notified_and_acknowledged(
    app: Flask, nurse_client: FlaskClient, nurse: StaffUser, study: Study, db_session: Session
) -> None:
    participant = enrol(db_session, study, "ALR-1")
    other_site_nurse = make_staff(db_session, "nurse", [study.sites[1]], "nurse.b@example.org")
    db_session.commit()
    assessment = _open_baseline(db_session, participant)
    from tests.factories import link_for

    token = link_for(db_session, participant).token
    db_session.commit()
    patient = app.test_client()
    patient.get(f"/p/{token}")
    _answer_everything(patient, assessment, worst=True)
    alerts = db_session.scalars(select(Alert).where(Alert.assessment_id == assessment.id)).all()
    assert {a.scale_code for a in alerts} == {"PF2", "RF2", "EF", "CF", "SF", "FA", "NV", "PA", "DY", "SL", "AP", "CO", "DI", "FI"}
    mails = db_session.scalars(select(OutboxMessage)).all()
    assert [m.recipient for m in mails] == [nurse.email], "only the participant's site nurses"
    assert other_site_nurse.email not in [m.recipient for m in mails]
    body = mails[0].body + mails[0].subject
    assert "ALR-1" not in body and "PF2" not in body and "score" not in body.lower(), "no health data by email"
    assert f"/staff/participants/{participant.id}" in body
    dashboard = nurse_client.get("/staff/").get_data(as_text=True)
    assert "ALR-1" in dashboard and "Open alerts" in dashboard
    url = f"/staff/participants/assessments/{assessment.id}/acknowledge-alerts"
    empty = nurse_client.post(url, data={"note": ""})
    assert empty.status_code == 400 and "This field is required." in empty.get_data(as_text=True)
    ok = nurse_client.post(url, data={"note": "Called the patient."})
    assert ok.status_code == 303
    db_session.expire_all()
    acknowledged = db_session.scalars(select(Alert).where(Alert.assessment_id == assessment.id)).all()
    assert {(a.state, a.acknowledged_by_id, a.note) for a in acknowledged} == {("acknowledged", nurse.id, "Called the patient.")}
    assert _count(db_session, AuditEvent, AuditEvent.action == "alert.acknowledge") == len(alerts)
    twice = nurse_client.post(url, data={"note": "again"})
    assert twice.status_code == 409
    page = nurse_client.get(f"/staff/participants/{participant.id}").get_data(as_text=True)
    assert "Called the patient." in page and "<svg" in page and "Demo wording" in page


def test_no_alerts_for_a_good_result_and_worsening_from_baseline(app: Flask, study: Study, db_session: Session) -> None:
    participant = enrol(db_session, study, "WRS-1", days_ago=20)
    from tests.factories import link_for

    db_session.commit()
    baseline = _open_baseline(db_session, participant)
    # The baseline window closed weeks ago; open it around now so the patient can answer it.
    baseline.window_opens_at = datetime.now().astimezone() - timedelta(days=1)
    baseline.window_closes_at = datetime.now().astimezone() + timedelta(days=1)
    baseline.status = "open"
    db_session.commit()
    token = link_for(db_session, participant).token
    db_session.commit()
    patient = app.test_client()
    patient.get(f"/p/{token}")
    _answer_everything(patient, baseline, worst=False)
    assert _count(db_session, Alert) == 0
    week6 = db_session.scalars(
        select(Assessment).where(Assessment.participant_id == participant.id, Assessment.timepoint_code == "w6")
        .order_by(Assessment.planned_at)
    ).first()
    assert week6 is not None
    week6.window_opens_at = datetime.now().astimezone() - timedelta(hours=1)
    week6.window_closes_at = datetime.now().astimezone() + timedelta(days=1)
    db_session.commit()
    patient.get(f"/p/{token}")
    # A middling result: worse than baseline by far more than 10 points on every scale.
    patient.post("/q/start", data={"assessment": week6.id})
    for number in range(1, 31):
        patient.post(f"/q/{number}", data={"assessment": week6.id, "value": 4 if number >= 29 else 2, "go": "next"})
    key = re.search(r'name="key" type="hidden" value="([^"]+)"', patient.get("/q/review").get_data(as_text=True))
    assert key
    patient.post("/q/submit", data={"assessment": week6.id, "key": key.group(1)})
    rules = set(db_session.scalars(select(Alert.rule_code).where(Alert.assessment_id == week6.id)))
    assert "PF2:worsening:10" in rules and "QL2:worsening:10" in rules


# ---------------------------------------------------------------- administration


@pytest.fixture
def admin_client(app: Flask, db_session: Session, study: Study) -> FlaskClient:
    make_staff(db_session, "admin", [], "admin@example.org")
    db_session.commit()
    client = app.test_client()
    sign_in(client, "admin@example.org")
    return client


def test_admin_creates_deactivates_and_resets_accounts(app: Flask, admin_client: FlaskClient, study: Study, db_session: Session) -> None:
    response = admin_client.post("/staff/admin/users", data={
        "email": "New.Nurse@example.org", "role": "nurse", "sites": [study.sites[0].id], "password": "initial-secret-1",
    })
    assert response.status_code == 303
    user = db_session.scalars(select(StaffUser).where(StaffUser.email == "new.nurse@example.org")).one()
    duplicate = admin_client.post("/staff/admin/users", data={"email": "new.nurse@example.org", "role": "nurse", "password": "initial-secret-1"})
    assert duplicate.status_code == 409
    weak = admin_client.post("/staff/admin/users", data={"email": "x@example.org", "role": "nurse", "password": "short"})
    assert weak.status_code == 400 and 'value="x@example.org"' in weak.get_data(as_text=True)
    their_device = app.test_client()
    assert sign_in(their_device, "new.nurse@example.org", "initial-secret-1").status_code == 303
    admin_client.post(f"/staff/admin/users/{user.id}/active")
    assert their_device.get("/staff/").status_code == 302, "deactivation ends their sessions"
    assert sign_in(app.test_client(), "new.nurse@example.org", "initial-secret-1").status_code == 401
    admin_client.post(f"/staff/admin/users/{user.id}/active")
    assert admin_client.post(f"/staff/admin/users/{user.id}/password", data={"password": "tiny"}).status_code == 400
    assert admin_client.post(f"/staff/admin/users/{user.id}/password", data={"password": "reset-secret-22"}).status_code == 303
    assert sign_in(app.test_client(), "new.nurse@example.org", "reset-secret-22").status_code == 303


def test_admin_edits_alert_rules(admin_client: FlaskClient, study: Study, db_session: Session) -> None:
    page = admin_client.get(f"/staff/admin/studies/{study.id}/alerts").get_data(as_text=True)
    assert "Giesinger" in page
    data: dict[str, object] = {"worsening_enabled": "y", "worsening_points": 15}
    scales = ["PF2", "RF2", "EF", "CF", "SF", "FA", "NV", "PA", "DY", "SL", "AP", "CO", "DI", "FI"]
    for index, scale in enumerate(scales):
        data[f"rules-{index}-scale"] = scale
        data[f"rules-{index}-threshold"] = 70 if scale == "PF2" else 50
        if scale != "FI":
            data[f"rules-{index}-enabled"] = "y"
    assert admin_client.post(f"/staff/admin/studies/{study.id}/alerts", data=data).status_code == 303
    db_session.expire_all()
    assert db_session.get(Study, study.id).worsening_alert_points == 15  # type: ignore[union-attr]
    bad = {**data, "rules-0-threshold": 150}
    response = admin_client.post(f"/staff/admin/studies/{study.id}/alerts", data=bad)
    assert response.status_code == 400 and "Use a score from 0 to 100." in response.get_data(as_text=True)
    event = db_session.scalars(select(AuditEvent).where(AuditEvent.action == "study.alert_rules")).one()
    assert '"PF2":[true,70.0]' in (event.after or "") and '"FI":[false,50.0]' in (event.after or "")


def test_changing_a_protocol_date_shows_what_moved(nurse_client: FlaskClient, db_session: Session) -> None:
    study = make_study(db_session, "CART-W", template="car_t_early")
    nurse = db_session.scalars(select(StaffUser).where(StaffUser.email == "nurse.a@example.org")).one()
    nurse.sites.append(study.sites[0])
    participant = enrol(db_session, study, "RA-9")
    db_session.commit()
    url = f"/staff/participants/{participant.id}/anchors"
    new_date = (datetime.now() + timedelta(days=10)).strftime("%Y-%m-%dT%H:%M")
    missing = nurse_client.post(url, data={"kind": "infusion", "occurred_at": new_date, "reason": ""})
    assert missing.status_code == 400 and "This field is required." in missing.get_data(as_text=True)
    far = nurse_client.post(url, data={"kind": "infusion", "occurred_at": "2999-01-01T10:00", "reason": "typo"})
    assert far.status_code == 400 and "too far in the past or the future" in far.get_data(as_text=True)
    bad_kind = nurse_client.post(url, data={"kind": "surgery", "occurred_at": new_date, "reason": "x"})
    assert bad_kind.status_code == 400
    ok = nurse_client.post(url, data={"kind": "infusion", "occurred_at": new_date, "reason": "Product delayed"})
    assert ok.status_code == 303
    page = nurse_client.get(f"/staff/participants/{participant.id}").get_data(as_text=True)
    assert "Product delayed" in page and "Day 7 moved from" not in page  # first infusion date: planned, nothing moved
    later = (datetime.now() + timedelta(days=17)).strftime("%Y-%m-%dT%H:%M")
    nurse_client.post(url, data={"kind": "infusion", "occurred_at": later, "reason": "Postponed again"})
    page = nurse_client.get(f"/staff/participants/{participant.id}").get_data(as_text=True)
    assert "Postponed again" in page and "Day 7 moved from" in page
