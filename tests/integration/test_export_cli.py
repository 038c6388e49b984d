"""``pro-app export``: real questionnaires answered through the services, exported to files.

Covers every tabular format's content (scores exactly as stored), the filters, an empty result,
bad input (exit status 2, one line, no file), atomic writing and the audit event.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from click.testing import Result
from flask.testing import FlaskCliRunner
from openpyxl import load_workbook
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from pro_app.cli import main
from pro_app.cli.export import export_command
from pro_app.db.models import Assessment, AssessmentResult, AuditEvent, Participant, ScaleScore, Study
from pro_app.domain.instruments import default_registry
from pro_app.domain.records import AssessmentRecord, ExportFilters
from pro_app.domain.states import AssessmentMode, AssessmentStatus
from pro_app.exports import ExportContext, ExportFormat
from pro_app.exports import formats as formats_module
from pro_app.services.export_run import build_filters, run_export
from pro_app.services.participants import enrol_participant
from pro_app.services.questionnaire import record_answer, start_assessment, submit_assessment
from tests.factories import make_study

QLQ = default_registry().get("qlq_c30")
EN = default_registry().text("qlq_c30", "en")
T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)  # Monday 10:00 in Berlin
GRACE = timedelta(0)


@dataclass
class Trial:
    study: Study
    completed: list[Assessment]
    in_progress: Assessment


def _assessment(session: Session, participant: Participant, code: str) -> Assessment:
    return session.scalars(
        select(Assessment).where(Assessment.participant_id == participant.id, Assessment.timepoint_code == code)
        .order_by(Assessment.occurrence)
    ).first()  # type: ignore[return-value]


def _answer(session: Session, assessment: Assessment, values: list[int], at: datetime, *, submit: bool = True) -> None:
    start_assessment(session, assessment, mode=AssessmentMode.SELF, text=EN, actor="test", now=at)
    for n, (item, value) in enumerate(zip(QLQ.items, values)):
        record_answer(session, assessment, QLQ, item_id=item.id, value=value, locale="en", actor="test",
                      grace=GRACE, now=at + timedelta(seconds=10 * n))
    if submit:
        submit_assessment(session, assessment, QLQ, submission_key=f"key-{assessment.id}", actor="test",
                          grace=GRACE, now=at + timedelta(minutes=6))


@pytest.fixture
def trial(db_session: Session) -> Trial:
    """Three participants: Berlin/low with baseline and week 6 done, Shanghai/high with
    baseline done and week 6 started, Berlin/high with baseline done."""
    study = make_study(db_session, "EXP-1")
    site_a, site_b = study.sites
    low, high = study.arms
    people = [
        enrol_participant(db_session, study=study, site=site_a, arm=low, subject_code="A-001", locale="en",
                          anchors={"infusion": T0 - timedelta(days=3)}, actor="test", now=T0),
        enrol_participant(db_session, study=study, site=site_b, arm=high, subject_code="B-001", locale="en",
                          actor="test", now=T0),
        enrol_participant(db_session, study=study, site=site_a, arm=high, subject_code="A-002", locale="en",
                          actor="test", now=T0),
    ]
    values = [
        [2, 3, 1, 1, 1, 2, 2, 1, 3, 2, 4, 3, 1, 1, 1, 2, 1, 3, 2, 2, 3, 3, 2, 2, 1, 2, 1, 1, 4, 5],
        [1] * 28 + [7, 6],
        [4, 4, 3, 2, 1, 3, 3, 2, 2, 3, 1, 2, 2, 1, 1, 1, 2, 3, 2, 1, 2, 2, 3, 1, 2, 1, 2, 3, 3, 4],
    ]
    completed = []
    for person, answers in zip(people, values):
        baseline = _assessment(db_session, person, "baseline")
        _answer(db_session, baseline, answers, T0 + timedelta(hours=1))
        completed.append(baseline)
    week6 = _assessment(db_session, people[0], "w6")
    _answer(db_session, week6, values[2], week6.planned_at + timedelta(hours=2))
    completed.append(week6)
    started = _assessment(db_session, people[1], "w6")
    _answer(db_session, started, [2] * 10, started.planned_at + timedelta(hours=2), submit=False)
    db_session.commit()
    return Trial(study, completed, started)


def export(runner: FlaskCliRunner, *args: str) -> Result:
    # Through the `pro-app` group when the command is registered there, else directly.
    command = main if "export" in main.commands else export_command
    prefix = ["export"] if command is main else []
    return runner.invoke(command, [*prefix, *args])


def read_csv(path: Path) -> list[dict[str, str]]:
    raw = path.read_bytes()
    assert b"\r\n" in raw and not raw.startswith(b"\xef\xbb\xbf")
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8"), newline="")))


def stored_scores(session: Session, assessment: Assessment) -> dict[str, float | None]:
    return dict(session.execute(
        select(ScaleScore.scale_code, ScaleScore.value).where(ScaleScore.assessment_id == assessment.id)
    ).tuples().all())


def export_events(session: Session) -> list[dict[str, Any]]:
    session.expire_all()
    events = session.scalars(select(AuditEvent).where(AuditEvent.action == "export").order_by(AuditEvent.seq)).all()
    return [json.loads(event.after or "{}") | {"actor": event.actor, "entity": event.entity_id} for event in events]


# --------------------------------------------------------------------------- content


def test_wide_export_holds_every_completed_assessment_with_exact_scores(
    runner: FlaskCliRunner, db_session: Session, trial: Trial, tmp_path: Path
) -> None:
    path = tmp_path / "wide.csv"
    result = export(runner, "--format", "wide", "--study", "EXP-1", "--output", str(path))
    assert result.exit_code == 0, result.output
    assert "Exported 4 records (wide)" in result.output
    rows = read_csv(path)
    assert [row["assessment_id"] for row in rows] == [str(a.id) for a in sorted(trial.completed, key=lambda a: a.id)]
    by_id = {int(row["assessment_id"]): row for row in rows}
    for assessment in trial.completed:
        row = by_id[assessment.id]
        for code, value in stored_scores(db_session, assessment).items():
            assert value is not None
            assert row[code] == repr(value) and float(row[code]) == value
        assert row["status"] == "completed" and row["text_source"] == "demo" and row["text_checksum"] == EN.checksum
        assert row["scoring_algorithm"] and row["mode"] == "self"
    first = by_id[trial.completed[0].id]
    assert first["subject_code"] == "A-001" and first["site"] == "Site A" and first["arm"] == "low"
    assert first["timepoint"] == "baseline" and first["planned_date"] == "2025-01-06"
    assert first["submitted_at_utc"] == "2025-01-06T10:06:00Z"
    assert first["submitted_at_local"] == "2025-01-06T11:06:00+01:00"
    assert first["days_from_enrolment"] == "0" and first["days_from_infusion"] == "3"
    assert first["days_from_lymphodepletion"] == ""
    assert [first[f"q{n}"] for n in (1, 2, 29, 30)] == ["2", "3", "4", "5"]
    shanghai = next(row for row in rows if row["subject_code"] == "B-001")
    assert shanghai["site"] == "Site B" and shanghai["submitted_at_local"] == "2025-01-06T18:06:00+08:00"
    week6 = by_id[trial.completed[3].id]
    assert week6["timepoint"] == "w6" and week6["days_from_enrolment"] == "42"


def test_long_exports_and_the_workbook(runner: FlaskCliRunner, db_session: Session, trial: Trial, tmp_path: Path) -> None:
    for name in ("items-long", "scores-long", "xlsx"):
        suffix = ".xlsx" if name == "xlsx" else ".csv"
        result = export(runner, "--format", name, "--study", "EXP-1", "--output", str(tmp_path / f"{name}{suffix}"))
        assert result.exit_code == 0, result.output
    items = read_csv(tmp_path / "items-long.csv")
    assert len(items) == 4 * 30
    first = [row for row in items if row["assessment_id"] == str(trial.completed[0].id)]
    assert [row["item"] for row in first] == list(QLQ.item_ids)
    assert first[0]["value"] == "2" and first[0]["response_label"] == "A bit"
    assert first[0]["answered_at_utc"] == "2025-01-06T10:00:00Z" and first[29]["answered_at_utc"] == "2025-01-06T10:04:50Z"
    scores = read_csv(tmp_path / "scores-long.csv")
    assert len(scores) == 4 * 16
    stored = {(a.id, code): value for a in trial.completed for code, value in stored_scores(db_session, a).items()}
    assert {(int(row["assessment_id"]), row["scale"]): float(row["value"]) for row in scores} == stored
    book = load_workbook(tmp_path / "xlsx.xlsx")
    data = list(book["Data"].iter_rows(values_only=True))
    assert len(data) == 5
    header = data[0]
    ql2 = header.index("QL2")
    assert {row[header.index("assessment_id")]: row[ql2] for row in data[1:]} == {
        a.id: stored[(a.id, "QL2")] for a in trial.completed
    }
    about = dict(book["About"].iter_rows(values_only=True))
    assert about["Filter: study"] == "EXP-1" and "Demo wording" in about["Notice"]
    assert about["Generated by"].startswith("pro-app")


def test_standard_output(runner: FlaskCliRunner, trial: Trial) -> None:
    result = export(runner, "--format", "wide", "--study", "EXP-1", "--output", "-")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout_bytes.decode("utf-8"), newline="")))
    assert len(rows) == 4


# --------------------------------------------------------------------------- filters


def subjects_and_timepoints(path: Path) -> list[tuple[str, str]]:
    return sorted((row["subject_code"], row["timepoint"]) for row in read_csv(path))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--site", "A"], [("A-001", "baseline"), ("A-001", "w6"), ("A-002", "baseline")]),
        (["--site", "B"], [("B-001", "baseline")]),
        (["--site", "A", "--site", "B", "--arm", "high"], [("A-002", "baseline"), ("B-001", "baseline")]),
        (["--arm", "low"], [("A-001", "baseline"), ("A-001", "w6")]),
        (["--timepoint", "w6"], [("A-001", "w6")]),
        (["--from", "2025-02-01"], [("A-001", "w6")]),
        (["--to", "2025-01-06"], [("A-001", "baseline"), ("A-002", "baseline"), ("B-001", "baseline")]),
        (["--from", "2025-01-06", "--to", "2025-01-06"],
         [("A-001", "baseline"), ("A-002", "baseline"), ("B-001", "baseline")]),
        (["--include-incomplete", "--timepoint", "w6"], [("A-001", "w6"), ("B-001", "w6")]),
    ],
)
def test_filters(runner: FlaskCliRunner, trial: Trial, tmp_path: Path, args: list[str], expected: list[tuple[str, str]]) -> None:
    path = tmp_path / "out.csv"
    result = export(runner, "--format", "wide", "--study", "EXP-1", "--output", str(path), *args)
    assert result.exit_code == 0, result.output
    assert subjects_and_timepoints(path) == expected


def test_incomplete_assessments_carry_their_answers_and_no_scores(
    runner: FlaskCliRunner, trial: Trial, tmp_path: Path
) -> None:
    path = tmp_path / "out.csv"
    result = export(runner, "--format", "wide", "--study", "EXP-1", "--output", str(path),
                    "--include-incomplete", "--site", "B", "--timepoint", "w6")
    assert result.exit_code == 0, result.output
    (row,) = read_csv(path)
    assert row["status"] == AssessmentStatus.IN_PROGRESS.value and row["submitted_at_utc"] == ""
    assert [row[f"q{n}"] for n in range(1, 12)] == ["2"] * 10 + [""]
    assert row["QL2"] == "" and row["C30SUM"] == "" and row["scoring_algorithm"] == ""
    assert row["days_from_enrolment"] == "42"  # from the planned day while not submitted


@pytest.mark.parametrize("name", ["wide", "items-long", "scores-long"])
def test_an_empty_result_is_a_header_only_file(runner: FlaskCliRunner, trial: Trial, tmp_path: Path, name: str) -> None:
    path = tmp_path / "empty.csv"
    result = export(runner, "--format", name, "--study", "EXP-1", "--output", str(path), "--site", "B", "--timepoint", "w6")
    assert result.exit_code == 0, result.output
    assert "Exported 0 records" in result.output
    lines = path.read_bytes().split(b"\r\n")
    assert lines[0].startswith(b"study,site,arm,subject_code") and lines[1:] == [b""]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "pdf"], "Unknown export format pdf."),
        (["--study", "NOPE"], "Unknown study NOPE."),
        (["--site", "Z"], "Unknown site Z."),
        (["--arm", "mega"], "Unknown dose group mega."),
        (["--timepoint", "w7"], "Unknown timepoint w7."),
        (["--from", "2025-13-01"], "--from: '2025-13-01' is not a date; use YYYY-MM-DD."),
        (["--to", "20250-01-01"], "--to: '20250-01-01' is not a date; use YYYY-MM-DD."),
        (["--from", "yesterday"], "--from: 'yesterday' is not a date; use YYYY-MM-DD."),
        (["--from", "2025-03-01", "--to", "2025-02-01"], "The end of the date range is before its start."),
        (["--from", "1900-01-01", "--to", "2999-12-31"], "The date range is too long."),
        (["--to", "9999-12-31"], "The date range is too long."),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    runner: FlaskCliRunner, db_session: Session, trial: Trial, tmp_path: Path, args: list[str], message: str
) -> None:
    options = {"--format": "wide", "--study": "EXP-1"}
    given = dict(zip(args[::2], args[1::2]))
    base = [part for key, value in options.items() if key not in given for part in (key, value)]
    result = export(runner, *base, "--output", str(tmp_path / "out.csv"), *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [f"Error: {message}"]
    assert list(tmp_path.iterdir()) == []
    assert export_events(db_session) == []


def test_a_missing_output_folder_is_bad_input(runner: FlaskCliRunner, trial: Trial, tmp_path: Path) -> None:
    result = export(runner, "--format", "wide", "--study", "EXP-1", "--output", str(tmp_path / "no" / "out.csv"))
    assert result.exit_code == 2
    assert "does not exist" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = export(runner, "--format", "wide", "--study", "EXP-1", "--output", str(tmp_path))
    assert result.exit_code == 2 and "is a folder" in result.stderr


def test_a_failed_export_leaves_no_file_and_no_audit_event(
    runner: FlaskCliRunner, db_session: Session, trial: Trial, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.csv"
    path.write_bytes(b"previous export\r\n")

    def broken(records: Any, out: BinaryIO, context: ExportContext) -> int:
        out.write(b"study,site\r\n")
        next(iter(records))
        raise RuntimeError("disk on fire")

    broken_format = ExportFormat("wide", "text/csv", ".csv", broken, "broken")
    monkeypatch.setitem(formats_module.FORMATS, "wide", broken_format)
    result = export(runner, "--format", "wide", "--study", "EXP-1", "--output", str(path))
    assert result.exit_code != 0 and isinstance(result.exception, RuntimeError)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    assert path.read_bytes() == b"previous export\r\n"  # the previous file is untouched
    assert export_events(db_session) == []


# --------------------------------------------------------------------------- audit


def test_each_export_is_audited_with_its_format_and_filters(
    runner: FlaskCliRunner, db_session: Session, trial: Trial, tmp_path: Path
) -> None:
    result = export(runner, "--format", "scores-long", "--study", "EXP-1", "--output", str(tmp_path / "s.csv"),
                    "--site", "A", "--arm", "high", "--timepoint", "baseline", "--from", "2025-01-01",
                    "--to", "2025-01-31", "--include-incomplete", "--by", "analyst@example.org")
    assert result.exit_code == 0, result.output
    (event,) = export_events(db_session)
    site_a = trial.study.sites[0]
    assert event["actor"] == "cli:analyst@example.org" and event["entity"] == "EXP-1"
    assert event["format"] == "scores-long"
    filters = event["filters"]
    assert filters["study"] == "EXP-1" and filters["sites"] == [site_a.id] and filters["arms"] == ["high"]
    assert filters["timepoints"] == ["baseline"] and filters["include_incomplete"] is True
    # Calendar days in the study's time zone (Berlin, UTC+1 in winter); "--to" includes its day.
    assert filters["from"] == "2024-12-31T23:00:00+00:00" and filters["to"] == "2025-01-31T23:00:00+00:00"
    export(runner, "--format", "wide", "--study", "EXP-1", "--output", "-")
    assert [e["format"] for e in export_events(db_session)] == ["scores-long", "wide"]


# --------------------------------------------------------------------------- service


def test_run_export_audits_first_and_reads_consistently(db_session: Session, trial: Trial) -> None:
    filters = build_filters(db_session, study="EXP-1", site_codes=["A"])
    out = io.BytesIO()
    count = run_export(db_session, filters, "wide", out, actor="test")
    assert count == 3 and out.getvalue().count(b"\r\n") == 4
    (event,) = export_events(db_session)
    assert event["format"] == "wide" and event["filters"]["sites"] == [trial.study.sites[0].id]


def test_records_without_answer_times_are_otherwise_identical(db_session: Session, trial: Trial) -> None:
    from pro_app.services.exports import iter_records

    filters = ExportFilters("EXP-1", include_incomplete=True)
    full = list(iter_records(db_session, filters, chunk=2))
    lean = list(iter_records(db_session, filters, chunk=2, answer_times=False))
    assert len(full) == 5 and [r.assessment_id for r in full] == sorted(r.assessment_id for r in full)
    for with_times, without in zip(full, lean):
        assert without.answered_at == {} and len(with_times.answered_at) == len(with_times.answers)
        assert _without_times(with_times) == _without_times(without)
    scores = {r.assessment_id: r.scores for r in full}
    for assessment in trial.completed:
        assert scores[assessment.id] == stored_scores(db_session, assessment)
    assert all(value is not None for value in scores[trial.completed[0].id].values())


def _without_times(record: AssessmentRecord) -> tuple[Any, ...]:
    return tuple(getattr(record, name) for name in record.__slots__ if name != "answered_at")


def test_unscorable_scales_come_back_as_none(db_session: Session, trial: Trial) -> None:
    """Items 8, 29 and 30 unanswered: DY and QL2 are not scorable, nor C30SUM (it needs DY)."""
    from pro_app.services.exports import iter_records

    assessment = _assessment(db_session, trial.completed[2].participant, "w6")
    at = assessment.planned_at + timedelta(hours=1)
    start_assessment(db_session, assessment, mode=AssessmentMode.SELF, text=EN, actor="test", now=at)
    for item in [item for item in QLQ.items if item.number not in (8, 29, 30)]:
        record_answer(db_session, assessment, QLQ, item_id=item.id, value=2, locale="en", actor="test", grace=GRACE, now=at)
    submit_assessment(db_session, assessment, QLQ, submission_key="partial", actor="test", grace=GRACE, now=at)
    for answer_times in (True, False):
        (record,) = [r for r in iter_records(db_session, ExportFilters("EXP-1"), answer_times=answer_times)
                     if r.assessment_id == assessment.id]
        assert record.scores["QL2"] is None and record.scores["DY"] is None and record.scores["C30SUM"] is None
        assert record.scores["PF2"] is not None and len(record.scores) == 16
        assert record.scores == stored_scores(db_session, assessment)
        assert len(record.answers) == 27


def test_scores_without_a_result_row_are_read_exactly_from_the_score_rows(db_session: Session, trial: Trial) -> None:
    """Score rows stored before result rows existed: read from ``scale_scores`` as exact text."""
    from pro_app.services.exports import iter_records

    assessment = trial.completed[1]
    expected = stored_scores(db_session, assessment) | {"QL2": None}
    db_session.execute(update(ScaleScore).where(ScaleScore.assessment_id == assessment.id,
                                                ScaleScore.scale_code == "QL2").values(value=None))
    db_session.execute(delete(AssessmentResult).where(AssessmentResult.assessment_id == assessment.id))
    for answer_times in (True, False):
        (record,) = [r for r in iter_records(db_session, ExportFilters("EXP-1"), answer_times=answer_times)
                     if r.assessment_id == assessment.id]
        assert record.scores == expected and record.scoring_algorithm is not None
        assert record.answers == {item.id: value for item, value in zip(QLQ.items, [1] * 28 + [7, 6])}
