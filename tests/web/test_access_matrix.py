"""Every staff URL x every role x own site / other site / anonymous.

A nurse of site A can never see or change site B's participants, not even by editing an id
in the URL. The route inventory test fails when a route is added without a line here.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from pro_app.db.models import Alert, Assessment, Participant, Study
from tests.factories import enrol, make_staff, make_study, sign_in

ROLES = ("anonymous", "admin", "nurse", "analyst")
ANY_STAFF = {"admin", "nurse", "analyst"}
CARE = {"admin", "nurse"}
ADMIN = {"admin"}
SECOND_FACTOR = {"admin", "analyst"}  # nurses are not offered a second factor


@dataclass(frozen=True)
class Route:
    endpoint: str
    method: str
    path: str  # {participant}, {alert}, {study}, {user} are filled per scope
    roles: set[str]
    scoped: bool  # concerns one participant: other-site access must be 404


MATRIX = [
    Route("dashboard.home", "GET", "/staff/", ANY_STAFF, False),
    Route("participants.index", "GET", "/staff/participants/", ANY_STAFF, False),
    Route("participants.enrol", "GET", "/staff/participants/new", CARE, False),
    Route("participants.enrol", "POST", "/staff/participants/new", CARE, False),
    Route("participants.detail", "GET", "/staff/participants/{participant}", ANY_STAFF, True),
    Route("participants.reissue_link", "POST", "/staff/participants/{participant}/link", CARE, True),
    Route("participants.revoke_link", "POST", "/staff/participants/{participant}/link/revoke", CARE, True),
    Route("participants.withdraw", "POST", "/staff/participants/{participant}/withdraw", CARE, True),
    Route("participants.reanchor", "POST", "/staff/participants/{participant}/anchors", CARE, True),
    Route("participants.start_tablet", "POST", "/staff/participants/{participant}/hand-over", CARE, True),
    Route("participants.acknowledge", "POST", "/staff/participants/assessments/{assessment}/acknowledge-alerts", CARE, True),
    Route("participants.correct", "GET", "/staff/participants/assessments/{assessment}/correct", CARE, True),
    Route("participants.correct", "POST", "/staff/participants/assessments/{assessment}/correct", CARE, True),
    Route("participants.history", "GET", "/staff/participants/{participant}/history", ANY_STAFF, True),
    Route("participants.assessment_history", "GET", "/staff/participants/assessments/{assessment}/history", ANY_STAFF,
          True),
    Route("staff_auth.password", "GET", "/staff/password", ANY_STAFF, False),
    Route("staff_auth.password", "POST", "/staff/password", ANY_STAFF, False),
    Route("staff_auth.second_factor", "GET", "/staff/second-factor", SECOND_FACTOR, False),
    Route("staff_auth.second_factor", "POST", "/staff/second-factor", SECOND_FACTOR, False),
    Route("staff_auth.remove_second_factor", "POST", "/staff/second-factor/remove", SECOND_FACTOR, False),
    Route("admin.users", "GET", "/staff/admin/users", ADMIN, False),
    Route("admin.users", "POST", "/staff/admin/users", ADMIN, False),
    Route("admin.toggle_active", "POST", "/staff/admin/users/{user}/active", ADMIN, False),
    Route("admin.reset", "POST", "/staff/admin/users/{user}/password", ADMIN, False),
    Route("admin.reset_second_factor", "POST", "/staff/admin/users/{user}/second-factor", ADMIN, False),
    Route("admin.study_settings", "GET", "/staff/admin/studies/{study}/settings", ADMIN, False),
    Route("admin.study_settings", "POST", "/staff/admin/studies/{study}/settings", ADMIN, False),
    Route("exports.download", "GET", "/staff/exports/{study}", {"admin", "analyst"}, False),
    Route("exports.download", "POST", "/staff/exports/{study}", {"admin", "analyst"}, False),
    Route("reports.index", "GET", "/staff/studies/", ANY_STAFF, False),
    Route("reports.compliance", "GET", "/staff/studies/{study}/compliance", ANY_STAFF, False),
    Route("admin.schedules", "GET", "/staff/admin/studies/{study}/schedule", ADMIN, False),
    Route("admin.schedules", "POST", "/staff/admin/studies/{study}/schedule", ADMIN, False),
    Route("admin.alert_rules", "GET", "/staff/admin/studies/{study}/alerts", ADMIN, False),
    Route("admin.alert_rules", "POST", "/staff/admin/studies/{study}/alerts", ADMIN, False),
    Route("analysis.overview", "GET", "/staff/analysis/{study}", {"admin", "analyst"}, False),
    Route("analysis.change", "GET", "/staff/analysis/{study}/change", {"admin", "analyst"}, False),
    Route("analysis.chart_svg", "GET", "/staff/analysis/{study}/chart/PF2.svg", {"admin", "analyst"}, False),
    Route("analysis.chart_png", "GET", "/staff/analysis/{study}/chart/PF2.png", {"admin", "analyst"}, False),
]
#: Routes open to everybody by design (sign-in, patient pages with their own access checks).
PUBLIC = {
    "static", "health.healthz", "i18n.choose_language", "staff_auth.login", "staff_auth.login_code", "staff_auth.logout",
    "staff_auth.tablet_unlock", "patient.open_link", "patient.enter_code", "patient.home", "patient.start",
    "patient.question", "patient.save_answer", "patient.review", "patient.submit", "patient.done",
}


def test_every_route_is_in_the_matrix(app: Flask) -> None:
    covered = {(r.endpoint, r.method) for r in MATRIX}
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC:
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:  # type: ignore[operator]
            assert (rule.endpoint, method) in covered, f"{method} {rule.rule} is not in the access-control matrix"


@pytest.fixture
def world(db_session: Session) -> dict[str, object]:
    study = make_study(db_session, "ACL")
    own = enrol(db_session, study, "OWN-1", site_index=0)
    other = enrol(db_session, study, "OTHER-1", site_index=1)
    users = {
        "admin": make_staff(db_session, "admin", [], "admin@acl.org"),
        "nurse": make_staff(db_session, "nurse", [study.sites[0]], "nurse@acl.org"),
        "analyst": make_staff(db_session, "analyst", [study.sites[0]], "analyst@acl.org"),
    }
    victim = make_staff(db_session, "nurse", [study.sites[1]], "victim@acl.org")
    alerts, assessments = {}, {}
    for name, participant in (("own", own), ("other", other)):
        assessment = db_session.scalars(select(Assessment).where(Assessment.participant_id == participant.id).order_by(Assessment.planned_at)).first()
        assert assessment is not None
        alert = Alert(assessment_id=assessment.id, rule_code="PF2:lt:83", scale_code="PF2", value=40.0, threshold=83.0)
        db_session.add(alert)
        db_session.flush()
        alerts[name] = alert.id
        assessments[name] = assessment.id
    db_session.commit()
    return {"study": study, "own": own, "other": other, "users": users, "victim": victim, "alerts": alerts,
            "assessments": assessments}


def _client(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    if role != "anonymous":
        assert sign_in(client, f"{role}@acl.org").status_code == 303
    return client


def _path(route: Route, world: dict[str, object], scope: str) -> str:
    participant = world[scope]
    assert isinstance(participant, Participant)
    study = world["study"]
    assert isinstance(study, Study)
    return route.path.format(
        participant=participant.id, assessment=world["assessments"][scope],  # type: ignore[index]
        study=study.id, user=world["victim"].id,  # type: ignore[attr-defined]
    )


@pytest.mark.parametrize("role", ROLES)
def test_access_matrix(app: Flask, world: dict[str, object], role: str, db_session: Session) -> None:
    client = _client(app, role)
    problems = []
    for route in MATRIX:
        for scope in ("own", "other") if route.scoped else ("own",):
            path = _path(route, world, scope)
            response = client.open(path, method=route.method, data={})
            status = response.status_code
            if role == "anonymous":
                ok = status == 302 and "/staff/login" in response.headers.get("Location", "")
            elif role not in route.roles:
                ok = status == 403
            elif scope == "other" and role != "admin":
                ok = status == 404
            else:
                ok = status not in (401, 403, 404, 500) and "/staff/login" not in response.headers.get("Location", "")
            if not ok:
                problems.append(f"{role} {route.method} {path} ({scope}) -> {status}")
            if role != "anonymous" and status == 302 and "/tablet/unlock" in response.headers.get("Location", ""):
                client = _client(app, role)  # a hand-over locked this client; start afresh
    assert problems == []
    # Nothing of the other site changed through any of these requests.
    db_session.expire_all()
    other = db_session.get(Participant, world["other"].id)  # type: ignore[attr-defined]
    assert other is not None and other.status == "active"
    alert = db_session.get(Alert, world["alerts"]["other"])  # type: ignore[index]
    assert alert is not None and alert.state == "open"
