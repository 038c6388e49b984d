"""Analysts download exports in the browser; every download is audited and site-scoped."""

from __future__ import annotations

import csv
import io
import sqlite3
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openpyxl import load_workbook
from sqlalchemy import select
from sqlalchemy.orm import Session

from pro_app import create_app
from pro_app.db.engine import make_engine, make_session_factory
from pro_app.db.models import Assessment, AuditEvent, Study
from pro_app.domain.instruments import default_registry
from pro_app.domain.states import AssessmentMode
from pro_app.exports import ExportContext, ExportFormat
from pro_app.exports.formats import FORMATS
from pro_app.services.questionnaire import record_answer, start_assessment, submit_assessment
from tests.conftest import app_config, migrated_sqlite
from tests.factories import enrol, make_staff, make_study, sign_in

QLQ = default_registry().get("qlq_c30")
TEXT = default_registry().text("qlq_c30", "en")


def _complete(session: Session, study: Study, code: str, site_index: int) -> None:
    participant = enrol(session, study, code, site_index=site_index)
    assessment = session.scalars(select(Assessment).where(Assessment.participant_id == participant.id).order_by(Assessment.planned_at)).first()
    assert assessment is not None
    start_assessment(session, assessment, mode=AssessmentMode.SELF, text=TEXT, actor="test")
    for item in QLQ.items:
        record_answer(session, assessment, QLQ, item_id=item.id, value=2, locale="en", actor="test", grace=timedelta(0))
    submit_assessment(session, assessment, QLQ, submission_key=f"k-{code}", actor="test", grace=timedelta(0))


@pytest.fixture
def study(db_session: Session) -> Study:
    study = make_study(db_session, "EXP-W")
    _complete(db_session, study, "A-1", 0)
    _complete(db_session, study, "B-1", 1)
    make_staff(db_session, "analyst", [study.sites[0]], "analyst@exp.org")
    make_staff(db_session, "nurse", [study.sites[0]], "nurse@exp.org")
    db_session.commit()
    return study


def _client(app: Flask, email: str) -> FlaskClient:
    client = app.test_client()
    assert sign_in(client, email).status_code == 303
    return client


def test_analyst_downloads_only_their_sites(app: Flask, study: Study, db_session: Session) -> None:
    client = _client(app, "analyst@exp.org")
    page = client.get(f"/staff/exports/{study.id}")
    assert page.status_code == 200 and "sdtm-qs" in page.get_data(as_text=True)
    response = client.post(f"/staff/exports/{study.id}", data={"format": "wide"})
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [r["subject_code"] for r in rows] == ["A-1"], "site B is not the analyst's"
    assert rows[0]["q1"] == "2" and rows[0]["text_source"] == "demo"
    event = db_session.scalars(select(AuditEvent).where(AuditEvent.action == "export")).one()
    assert event.actor.startswith("staff:") and '"format":"wide"' in (event.after or "")
    other_site = client.post(f"/staff/exports/{study.id}", data={"format": "wide", "sites": ["B"]})
    assert other_site.status_code == 400


def test_formats_download(app: Flask, study: Study) -> None:
    client = _client(app, "analyst@exp.org")
    xlsx = client.post(f"/staff/exports/{study.id}", data={"format": "xlsx"})
    book = load_workbook(io.BytesIO(xlsx.get_data()), read_only=True)
    assert len(book.sheetnames) >= 2
    archive = client.post(f"/staff/exports/{study.id}", data={"format": "sdtm-qs"})
    assert set(zipfile.ZipFile(io.BytesIO(archive.get_data())).namelist()) >= {"qs.csv", "define_qs.csv"}
    bundle = client.post(f"/staff/exports/{study.id}", data={"format": "fhir"})
    assert bundle.get_json()["resourceType"] == "Bundle"


def test_bad_input_and_access(app: Flask, study: Study, db_session: Session) -> None:
    analyst = _client(app, "analyst@exp.org")
    assert analyst.post(f"/staff/exports/{study.id}", data={"format": "pdf"}).status_code == 400
    backwards = analyst.post(f"/staff/exports/{study.id}", data={"format": "wide", "date_from": "2026-05-01", "date_to": "2026-04-01"})
    assert backwards.status_code == 400 and "before its start" in backwards.get_data(as_text=True)
    empty = analyst.post(f"/staff/exports/{study.id}", data={"format": "wide", "date_from": "2001-01-01", "date_to": "2001-01-02"})
    assert empty.status_code == 200
    lines = empty.get_data(as_text=True).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("study,"), "an empty result is a file with its header"
    nurse = _client(app, "nurse@exp.org")
    assert nurse.get(f"/staff/exports/{study.id}").status_code == 403
    other = make_study(db_session, "EXP-OTHER")
    db_session.commit()
    assert analyst.get(f"/staff/exports/{other.id}").status_code == 403, "a study without the analyst's sites"
    assert analyst.get("/staff/exports/999999").status_code == 404


def test_a_download_does_not_hold_the_write_lock_while_the_file_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a real SQLite file (not the tests' shared transaction): while the export is being
    written, another connection takes the database's write lock at once, and the download is
    still audited afterwards."""
    url = migrated_sqlite(tmp_path, "app")
    path = tmp_path / "app.sqlite3"
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        study = make_study(session, "EXP-L")
        _complete(session, study, "A-1", 0)
        make_staff(session, "analyst", [study.sites[0]], "analyst@lock.org")
        session.commit()
        study_id = study.id
    probes: list[str] = []
    wide = FORMATS["wide"]

    def probing_writer(records: Any, out: BinaryIO, context: ExportContext) -> int:
        other = sqlite3.connect(path, timeout=0)  # fails at once if the lock is held
        try:
            other.execute("BEGIN IMMEDIATE")
            probes.append("write lock free")
            other.rollback()
        finally:
            other.close()
        return wide.writer(records, out, context)

    monkeypatch.setitem(FORMATS, "wide", ExportFormat("wide", wide.media_type, wide.extension, probing_writer, wide.description))
    app = create_app(app_config(DATABASE_URL=url, AUDIT_GUARD="raise"))
    client = _client(app, "analyst@lock.org")
    response = client.post(f"/staff/exports/{study_id}", data={"format": "wide"})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert probes == ["write lock free"]
    assert len(list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))) == 1
    with make_session_factory(engine)() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "export")).all()
        assert len(events) == 1 and '"format":"wide"' in (events[0].after or "")
    engine.dispose()
