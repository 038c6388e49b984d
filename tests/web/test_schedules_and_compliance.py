"""The schedule editor with its preview, and the compliance report."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from pro_app.db.models import Assessment, AuditEvent, ScheduleTemplate, Study, Timepoint
from tests.factories import enrol, make_staff, make_study, sign_in


@pytest.fixture
def study(db_session: Session) -> Study:
    study = make_study(db_session, "SCH-1")
    db_session.commit()
    return study


@pytest.fixture
def admin(app: Flask, db_session: Session) -> FlaskClient:
    make_staff(db_session, "admin", [], "admin@sch.org")
    db_session.commit()
    client = app.test_client()
    sign_in(client, "admin@sch.org")
    return client


def _rows(study: Study, session: Session) -> dict[str, object]:
    data: dict[str, object] = {}
    timepoints = session.scalars(select(Timepoint).order_by(Timepoint.position)).all()
    for index, tp in enumerate(timepoints):
        data.update({
            f"rows-{index}-code": tp.code, f"rows-{index}-label": tp.label, f"rows-{index}-anchor_kind": tp.anchor_kind,
            f"rows-{index}-offset": tp.offset, f"rows-{index}-offset_unit": tp.offset_unit,
            f"rows-{index}-window_before": tp.window_before, f"rows-{index}-window_after": tp.window_after,
            f"rows-{index}-window_unit": tp.window_unit, f"rows-{index}-repeat_every": tp.repeat_every or "",
            f"rows-{index}-repeat_until": tp.repeat_until or "",
        })
    return data


def test_editor_shows_the_template_and_a_preview(admin: FlaskClient, study: Study) -> None:
    page = admin.get(f"/staff/admin/studies/{study.id}/schedule?enrolment=2026-01-05T09:00")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert 'value="baseline"' in body and "Week {week}" in body
    assert "Week 144" in body and "Week 6" in body, "the preview lists every occurrence"
    assert admin.get(f"/staff/admin/studies/{study.id}/schedule?enrolment=yesterday").status_code == 400


def test_a_study_without_a_schedule_is_offered_the_default_and_given_it_only_when_saved(
    admin: FlaskClient, db_session: Session
) -> None:
    study = make_study(db_session, "SCH-0", template=None)
    db_session.commit()
    url = f"/staff/admin/studies/{study.id}/schedule"
    assert admin.get(url + "?enrolment=garbage").status_code == 400
    page = admin.get(url)
    assert page.status_code == 200 and 'value="baseline"' in page.get_data(as_text=True)
    assert admin.post(url, data={"rows-0-code": ""}).status_code == 400
    assert db_session.scalars(select(ScheduleTemplate).where(ScheduleTemplate.study_id == study.id)).all() == []
    data = {
        "rows-0-code": "baseline", "rows-0-label": "Baseline", "rows-0-anchor_kind": "enrolment", "rows-0-offset": 0,
        "rows-0-offset_unit": "days", "rows-0-window_before": 0, "rows-0-window_after": 3, "rows-0-window_unit": "days",
        "rows-0-repeat_every": "", "rows-0-repeat_until": "",
    }
    assert admin.post(url, data=data).status_code == 303
    (template,) = db_session.scalars(select(ScheduleTemplate).where(ScheduleTemplate.study_id == study.id)).all()
    assert [tp.code for tp in template.timepoints] == ["baseline"]


def test_saving_a_changed_window_and_a_new_timepoint(admin: FlaskClient, study: Study, db_session: Session) -> None:
    data = _rows(study, db_session)
    data["rows-1-window_after"] = 10
    data.update({"rows-2-code": "eot", "rows-2-label": "End of treatment", "rows-2-anchor_kind": "infusion",
                 "rows-2-offset": 180, "rows-2-offset_unit": "days", "rows-2-window_before": 14,
                 "rows-2-window_after": 14, "rows-2-window_unit": "days"})
    response = admin.post(f"/staff/admin/studies/{study.id}/schedule", data=data)
    assert response.status_code == 303
    db_session.expire_all()
    codes = {tp.code: tp for tp in db_session.scalars(select(Timepoint))}
    assert set(codes) == {"baseline", "w6", "eot"} and codes["w6"].window_after == 10
    assert db_session.scalars(select(AuditEvent).where(AuditEvent.action == "schedule_template.update")).one()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rows-1-code": "Week Six!"}, "code"),
        ({"rows-1-repeat_every": 0}, "Number must be at least 1."),
        ({"rows-1-repeat_until": 7}, "repeat"),
        ({"rows-0-label": ""}, "label"),
        ({"rows-1-code": "baseline"}, "baseline"),
    ],
)
def test_invalid_schedules_are_refused(admin: FlaskClient, study: Study, db_session: Session,
                                       change: dict[str, object], message: str) -> None:
    data = {**_rows(study, db_session), **change}
    response = admin.post(f"/staff/admin/studies/{study.id}/schedule", data=data)
    assert response.status_code == 400
    assert message.lower() in response.get_data(as_text=True).lower()
    db_session.expire_all()
    assert {tp.code for tp in db_session.scalars(select(Timepoint))} == {"baseline", "w6"}


def test_a_timepoint_with_questionnaires_cannot_be_removed(admin: FlaskClient, study: Study, db_session: Session) -> None:
    enrol(db_session, study, "SCH-P1")
    db_session.commit()
    data = {**_rows(study, db_session), "rows-1-remove": "y"}
    response = admin.post(f"/staff/admin/studies/{study.id}/schedule", data=data)
    assert response.status_code == 409 and "cannot be removed" in response.get_data(as_text=True)


def test_compliance_report_and_csv(app: Flask, admin: FlaskClient, study: Study, db_session: Session) -> None:
    one = enrol(db_session, study, "CMP-1", days_ago=50)
    two = enrol(db_session, study, "CMP-2", days_ago=50, site_index=1)
    db_session.flush()
    now = datetime.now(timezone.utc)
    for participant, status in ((one, "completed"), (two, "missed")):
        baseline = db_session.scalars(select(Assessment).where(
            Assessment.participant_id == participant.id, Assessment.timepoint_code == "baseline")).one()
        baseline.status = status
        if status == "completed":
            baseline.submitted_at = baseline.window_opens_at + timedelta(hours=30)
    db_session.commit()
    page = admin.get(f"/staff/studies/{study.id}/compliance").get_data(as_text=True)
    assert "Baseline" in page and "Site A" in page and "Site B" in page
    response = admin.get(f"/staff/studies/{study.id}/compliance?format=csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    baseline_a = next(r for r in rows if r["site"] == "Site A" and r["timepoint"] == "Baseline")
    assert (baseline_a["expected"], baseline_a["completed"], baseline_a["missed"]) == ("1", "1", "0")
    assert float(baseline_a["completion_rate"]) == 1.0 and float(baseline_a["median_hours_to_completion"]) == 30.0
    baseline_b = next(r for r in rows if r["site"] == "Site B" and r["timepoint"] == "Baseline")
    assert (baseline_b["completed"], baseline_b["missed"], baseline_b["completion_rate"]) == ("0", "1", "0.0")
    week6 = [r for r in rows if r["timepoint"] == "Week 6"]
    assert week6 and all(r["expected"] == "1" for r in week6), "week 6 window has opened, not yet answered"
    assert all(r["timepoint"] != "Week 12" for r in rows), "future windows are not expected yet"
    assert admin.get(f"/staff/studies/{study.id}/compliance?format=pdf").status_code == 400
    nurse_b = make_staff(db_session, "nurse", [study.sites[1]], "nurse.b@sch.org")
    db_session.commit()
    nurse = app.test_client()
    sign_in(nurse, nurse_b.email)
    own_rows = list(csv.DictReader(io.StringIO(nurse.get(f"/staff/studies/{study.id}/compliance?format=csv").get_data(as_text=True))))
    assert {r["site"] for r in own_rows} == {"Site B"}
    assert db_session.scalars(select(AuditEvent).where(AuditEvent.action == "export.compliance")).all()
