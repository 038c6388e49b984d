"""Loading a site's licensed wording, and refusing broken files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pro_app.cli import main
from pro_app.db.models import Assessment, AuditEvent, InstrumentTextRecord
from tests.factories import enrol, link_for, make_study

EN = Path(__file__).resolve().parents[2] / "pro_app" / "instruments" / "qlq_c30" / "text" / "en.json"


def licensed_text(tmp_path: Path, locale: str = "en", **changes: object) -> Path:
    content = json.loads(EN.read_text(encoding="utf-8"))
    content.update({"source": "licensed", "locale": locale, "title": "Site licensed text (test stand-in)"})
    content["items"] = {item: f"Licensed stand-in wording {item}" for item in content["items"]}
    content.update(changes)
    path = tmp_path / f"{locale}.json"
    path.write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
    return path


def _count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(InstrumentTextRecord)) or 0)


def test_load_text_takes_precedence_and_is_audited(
    app: Flask, runner: FlaskCliRunner, db_session: Session, tmp_path: Path
) -> None:
    status = runner.invoke(main, ["instruments", "text-status"])
    assert status.exit_code == 0 and status.output.count(" demo ") == 4
    result = runner.invoke(main, ["instruments", "load-text", "qlq_c30", "en", str(licensed_text(tmp_path)), "--by", "dm@site"])
    assert result.exit_code == 0, result.output
    assert "Loaded licensed qlq_c30 3.0 text for en" in result.output
    status = runner.invoke(main, ["instruments", "text-status"])
    assert "licensed" in status.output and "cli:dm@site" in status.output
    event = db_session.scalars(select(AuditEvent).where(AuditEvent.action == "instrument_text.load")).one()
    assert event.actor == "cli:dm@site"
    # The patient now sees the licensed wording, and the assessment records it.
    study = make_study(db_session)
    participant = enrol(db_session, study)
    token = link_for(db_session, participant).token
    db_session.commit()
    client = app.test_client()
    client.get(f"/p/{token}")
    assessment = db_session.scalars(select(Assessment).where(Assessment.participant_id == participant.id).order_by(Assessment.planned_at)).first()
    assert assessment is not None
    client.post("/q/start", data={"assessment": assessment.id})
    page = client.get("/q/1").get_data(as_text=True)
    assert "Licensed stand-in wording q1" in page
    db_session.expire_all()
    assert assessment.text_source == "licensed"
    assert assessment.text_checksum == db_session.scalars(select(InstrumentTextRecord.checksum)).one()
    # A second load replaces the first; the first is kept, inactive.
    again = runner.invoke(main, ["instruments", "load-text", "qlq_c30", "en", str(licensed_text(tmp_path, title="v2"))])
    assert again.exit_code == 0
    assert _count(db_session) == 2
    assert db_session.scalar(select(func.count()).select_from(InstrumentTextRecord).where(InstrumentTextRecord.active)) == 1


def _broken(tmp_path: Path, case: str) -> tuple[Path, list[str], str]:
    if case == "missing item":
        content = json.loads(licensed_text(tmp_path).read_text(encoding="utf-8"))
        del content["items"]["q17"]
        path = tmp_path / "missing.json"
        path.write_text(json.dumps(content), encoding="utf-8")
        return path, ["en"], "q17"
    if case == "wrong label count":
        content = json.loads(licensed_text(tmp_path).read_text(encoding="utf-8"))
        content["response_labels"]["seven_point"]["4"] = "middle"
        path = tmp_path / "labels.json"
        path.write_text(json.dumps(content), encoding="utf-8")
        return path, ["en"], "seven_point"
    if case == "wrong encoding":
        path = tmp_path / "latin1.json"
        path.write_bytes(licensed_text(tmp_path).read_text(encoding="utf-8").replace("wording", "wördíng").encode("latin-1"))
        return path, ["en"], "not UTF-8"
    if case == "unknown locale":
        return licensed_text(tmp_path, locale="fr"), ["fr"], "Unknown locale fr"
    if case == "locale mismatch":
        return licensed_text(tmp_path, locale="es"), ["en"], "for es, not en"
    if case == "demo source":
        return licensed_text(tmp_path, source="demo"), ["en"], "must say \"licensed\""
    if case == "not json":
        path = tmp_path / "text.json"
        path.write_text("{ not json", encoding="utf-8")
        return path, ["en"], "not valid JSON"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    ["missing item", "wrong label count", "wrong encoding", "unknown locale", "locale mismatch", "demo source", "not json"],
)
def test_broken_text_files_are_refused(runner: FlaskCliRunner, db_session: Session, tmp_path: Path, case: str) -> None:
    path, (locale,), expected = _broken(tmp_path, case)
    result = runner.invoke(main, ["instruments", "load-text", "qlq_c30", locale, str(path)])
    assert result.exit_code == 1, result.output
    assert "Text refused, nothing stored." in result.output and expected in result.output
    assert _count(db_session) == 0


def test_unknown_instrument_is_refused(runner: FlaskCliRunner, db_session: Session, tmp_path: Path) -> None:
    result = runner.invoke(main, ["instruments", "load-text", "qlq_c99", "en", str(licensed_text(tmp_path))])
    assert result.exit_code == 1 and "Unknown instrument qlq_c99" in result.output
    assert _count(db_session) == 0
