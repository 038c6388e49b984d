"""Loading a site's licensed wording, and refusing broken files."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pro_app.cli import main
from pro_app.db.models import Answer, Assessment, AuditEvent, InstrumentTextRecord
from pro_app.services import texts
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


def _started_patient(app: Flask, db_session: Session, number: int) -> tuple[FlaskClient, Assessment]:
    """A patient (of a study of their own) who opened their link and started their baseline."""
    participant = enrol(db_session, make_study(db_session, f"KEEP-{number}"))
    token = link_for(db_session, participant).token
    db_session.commit()
    client = app.test_client()
    client.get(f"/p/{token}")
    assessment = db_session.scalars(
        select(Assessment).where(Assessment.participant_id == participant.id).order_by(Assessment.planned_at)
    ).first()
    assert assessment is not None
    assert client.post("/q/start", data={"assessment": assessment.id}).status_code == 303
    db_session.expire_all()
    return client, assessment


def test_a_questionnaire_keeps_the_wording_it_was_started_with(
    app: Flask, runner: FlaskCliRunner, db_session: Session, tmp_path: Path
) -> None:
    """A text loaded while a questionnaire is in progress shows from the next questionnaire
    on: every answer of one questionnaire was given to the wording whose checksum it records."""
    client, demo_started = _started_patient(app, db_session, 1)
    demo_checksum = demo_started.text_checksum
    assert demo_started.text_source == "demo"
    assert "Licensed stand-in" not in client.get("/q/1").get_data(as_text=True)
    loaded = runner.invoke(main, ["instruments", "load-text", "qlq_c30", "en", str(licensed_text(tmp_path))])
    assert loaded.exit_code == 0, loaded.output
    page = client.get("/q/2").get_data(as_text=True)
    assert "Licensed stand-in" not in page and 'name="value" value="1"' in page
    assert client.post("/q/answer", json={"assessment": demo_started.id, "item": "q2", "value": 3},
                       headers={"Idempotency-Key": str(uuid.uuid4())}).status_code == 200
    answer = db_session.scalars(select(Answer).where(Answer.assessment_id == demo_started.id)).one()
    assert (answer.item_id, answer.value, answer.locale) == ("q2", 3, "en")
    db_session.expire_all()
    assert demo_started.text_checksum == demo_checksum

    # A questionnaire started now gets the licensed text; it keeps it after the text is replaced,
    # also in a process that never saw it (found by its checksum among the inactive texts).
    client, licensed_started = _started_patient(app, db_session, 2)
    assert licensed_started.text_source == "licensed"
    assert "Licensed stand-in wording q1" in client.get("/q/1").get_data(as_text=True)
    replaced = runner.invoke(main, ["instruments", "load-text", "qlq_c30", "en", str(licensed_text(
        tmp_path, items={item: f"Replacement wording {item}" for item in json.loads(EN.read_text())["items"]}))])
    assert replaced.exit_code == 0, replaced.output
    texts._PARSED.clear()
    page = client.get("/q/5").get_data(as_text=True)
    assert "Licensed stand-in wording q5" in page and "Replacement wording" not in page
    assert "Replacement wording q1" in _started_patient(app, db_session, 3)[0].get("/q/1").get_data(as_text=True)

    # A patient who switches language sees that language's wording.
    assert client.post("/language", data={"lang": "es", "next": "/q/5"}).status_code == 303
    spanish = client.get("/q/5").get_data(as_text=True)
    assert "Licensed stand-in" not in spanish and 'lang="es"' in spanish
