"""Tabular exports (long items, long scores, wide CSV, Excel) on hand-built records.

The instrument and its English wording are the shipped files; records are built by hand so
that every edge is pinned down: full-precision scores, blanks, local times, days from anchors
across daylight-saving changes, RFC 4180 quoting, typed Excel cells and the demo notice.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook

from pro_app.domain.instruments import Instrument, InstrumentText, default_registry
from pro_app.domain.records import AssessmentRecord, ExportFilters
from pro_app.domain.schedule import ANCHOR_KINDS
from pro_app.domain.scoring import ALGORITHM_VERSION, result_values, score_answers
from pro_app.exports import ExportContext
from pro_app.exports.formats import FORMATS, WITHOUT_ANSWER_TIMES
from pro_app.exports.tabular import (
    DEMO_NOTICE,
    context_columns,
    data_dictionary,
    wide_columns,
    write_items_long,
    write_scores_long,
    write_wide_csv,
    write_xlsx,
)

QLQ: Instrument = default_registry().get("qlq_c30")
EN: InstrumentText = default_registry().text("qlq_c30", "en")
GENERATED = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
MIXED = [2, 3, 1, 1, 1, 2, 2, 1, 3, 2, 4, 3, 1, 1, 1, 2, 1, 3, 2, 2, 3, 3, 2, 2, 1, 2, 1, 1, 4, 5]
ANSWERS = {item.id: value for item, value in zip(QLQ.items, MIXED)}
SCORES = result_values(score_answers(QLQ, ANSWERS))


def context(**overrides: Any) -> ExportContext:
    values: dict[str, Any] = {
        "instrument": QLQ, "texts": {"en": EN}, "filters": ExportFilters("CART1"), "generated_at": GENERATED,
    }
    values.update(overrides)
    return ExportContext(**values)


def record(assessment_id: int = 1, **overrides: Any) -> AssessmentRecord:
    submitted = datetime(2025, 1, 15, 9, 40, 12, 345678, tzinfo=UTC)
    values: dict[str, Any] = {
        "assessment_id": assessment_id,
        "study": "CART1",
        "site": "Berlin University Hospital",
        "arm": "low",
        "subject_code": "BER-001",
        "participant_id": 7,
        "timezone": "Europe/Berlin",
        "timepoint_code": "d7",
        "timepoint_label": "Day 7",
        "occurrence": 0,
        "visit_number": 601,
        "planned_at": datetime(2025, 1, 15, 8, 0, tzinfo=UTC),
        "window_opens_at": datetime(2025, 1, 14, 8, 0, tzinfo=UTC),
        "window_closes_at": datetime(2025, 1, 16, 8, 0, tzinfo=UTC),
        "started_at": submitted - timedelta(minutes=9),
        "submitted_at": submitted,
        "status": "completed",
        "mode": "self",
        "locale": "en",
        "instrument_code": "qlq_c30",
        "instrument_version": "3.0",
        "text_source": "demo",
        "text_checksum": EN.checksum,
        "anchors": {
            "lymphodepletion": datetime(2025, 1, 3, 7, 0, tzinfo=UTC),
            "infusion": datetime(2025, 1, 8, 9, 0, tzinfo=UTC),
        },
        "answers": dict(ANSWERS),
        "answered_at": {item_id: submitted - timedelta(seconds=30 - n) for n, item_id in enumerate(ANSWERS)},
        "scores": dict(SCORES),
        "scoring_algorithm": ALGORITHM_VERSION,
    }
    values.update(overrides)
    return AssessmentRecord(**values)


def csv_rows(writer: Any, records: list[AssessmentRecord], ctx: ExportContext | None = None) -> tuple[int, bytes, list[dict[str, str]]]:
    out = io.BytesIO()
    count = writer(records, out, ctx or context())
    raw = out.getvalue()
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8"), newline="")))
    return count, raw, rows


# --------------------------------------------------------------------------- columns


def test_wide_header_is_context_then_items_then_scores_in_instrument_order() -> None:
    _, raw, _ = csv_rows(write_wide_csv, [])
    header = raw.decode().split("\r\n")[0].split(",")
    assert header == list(wide_columns(QLQ))
    context_names = [row[0] for row in context_columns()]
    assert header[: len(context_names)] == context_names
    assert header[len(context_names):] == [f"q{n}" for n in range(1, 31)] + [
        "QL2", "PF2", "RF2", "EF", "CF", "SF", "FA", "NV", "PA", "DY", "SL", "AP", "CO", "DI", "FI", "C30SUM"
    ]
    for name in ("study", "site", "arm", "subject_code", "timepoint", "timepoint_label", "planned_date",
                 "window_opens_utc", "window_closes_utc", "started_at_utc", "started_at_local",
                 "submitted_at_utc", "submitted_at_local", "status", "mode", "locale", "instrument",
                 "instrument_version", "text_source", "text_checksum", "scoring_algorithm"):
        assert name in context_names
    assert [f"days_from_{kind}" for kind in ANCHOR_KINDS] == [
        "days_from_lymphodepletion", "days_from_infusion", "days_from_enrolment"
    ]
    assert all(f"days_from_{kind}" in context_names for kind in ANCHOR_KINDS)


def test_every_row_carries_the_context() -> None:
    _, _, rows = csv_rows(write_wide_csv, [record()])
    row = rows[0]
    assert row["study"] == "CART1" and row["site"] == "Berlin University Hospital" and row["arm"] == "low"
    assert row["subject_code"] == "BER-001" and row["timepoint"] == "d7" and row["timepoint_label"] == "Day 7"
    assert row["planned_date"] == "2025-01-15"
    assert row["window_opens_utc"] == "2025-01-14T08:00:00Z"
    assert row["window_closes_utc"] == "2025-01-16T08:00:00Z"
    assert row["submitted_at_utc"] == "2025-01-15T09:40:12Z"
    assert row["submitted_at_local"] == "2025-01-15T10:40:12+01:00"
    assert row["started_at_utc"] == "2025-01-15T09:31:12Z"
    assert row["days_from_lymphodepletion"] == "12" and row["days_from_infusion"] == "7"
    assert row["status"] == "completed" and row["mode"] == "self" and row["locale"] == "en"
    assert row["instrument"] == "qlq_c30" and row["instrument_version"] == "3.0"
    assert row["text_source"] == "demo" and row["text_checksum"] == EN.checksum
    assert row["scoring_algorithm"] == ALGORITHM_VERSION


# --------------------------------------------------------------------------- values


def test_wide_scores_have_full_precision_and_items_are_integers() -> None:
    scores = dict(SCORES, QL2=58.333333333333336, PF2=0.1 + 0.2, C30SUM=71.11111111111111, EF=100.0)
    _, _, rows = csv_rows(write_wide_csv, [record(scores=scores)])
    row = rows[0]
    for code, value in scores.items():
        assert value is not None
        assert row[code] == repr(value), code
        assert float(row[code]) == value  # reads back as exactly the stored float
    assert row["PF2"] == "0.30000000000000004"
    assert [row[f"q{n}"] for n in range(1, 31)] == [str(v) for v in MIXED]


def test_missing_values_are_empty_fields() -> None:
    answers = {k: v for k, v in ANSWERS.items() if k not in ("q3", "q30")}
    scores = dict(SCORES, C30SUM=None, QL2=None)
    incomplete = record(
        answers=answers, scores=scores, arm=None, mode=None, started_at=None, submitted_at=None,
        status="missed", anchors={}, scoring_algorithm=None,
    )
    _, _, rows = csv_rows(write_wide_csv, [incomplete])
    row = rows[0]
    assert row["q3"] == "" and row["q30"] == "" and row["q1"] == "2"
    assert row["QL2"] == "" and row["C30SUM"] == "" and row["PF2"] == repr(SCORES["PF2"])
    for column in ("arm", "mode", "started_at_utc", "started_at_local", "submitted_at_utc", "submitted_at_local",
                   "days_from_infusion", "days_from_lymphodepletion", "days_from_enrolment", "scoring_algorithm"):
        assert row[column] == "", column
    unscored = record(answers={}, scores={}, status="open", submitted_at=None)
    row = csv_rows(write_wide_csv, [unscored])[2][0]
    assert all(row[code] == "" for code in QLQ.score_codes)
    assert all(row[item] == "" for item in QLQ.item_ids)


def test_local_times_follow_the_participants_zone_and_its_daylight_saving_offset() -> None:
    # Berlin moves to summer time at 01:00 UTC on 30 March 2025.
    before = record(1, submitted_at=datetime(2025, 3, 30, 0, 30, tzinfo=UTC), started_at=None)
    after = record(2, submitted_at=datetime(2025, 3, 30, 1, 30, tzinfo=UTC), started_at=None)
    shanghai = record(3, timezone="Asia/Shanghai", submitted_at=datetime(2025, 3, 30, 17, 0, tzinfo=UTC),
                      planned_at=datetime(2025, 3, 30, 16, 30, tzinfo=UTC))
    _, _, rows = csv_rows(write_wide_csv, [before, after, shanghai])
    assert rows[0]["submitted_at_local"] == "2025-03-30T01:30:00+01:00"
    assert rows[1]["submitted_at_local"] == "2025-03-30T03:30:00+02:00"
    assert rows[2]["submitted_at_local"] == "2025-03-31T01:00:00+08:00"
    assert rows[2]["submitted_at_utc"] == "2025-03-30T17:00:00Z"
    assert rows[2]["planned_date"] == "2025-03-31"  # the participant's calendar, not UTC's
    assert rows[2]["timezone"] == "Asia/Shanghai"


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/St_Johns", "Asia/Kathmandu", "Pacific/Chatham",
                                  "Africa/Monrovia", "America/Sao_Paulo", "UTC"])
def test_instants_are_written_as_isoformat_writes_them(zone: str) -> None:
    # Half- and quarter-hour offsets, a historical offset with seconds (Monrovia's -0:44:30
    # until 1972), both sides of daylight-saving changes, years before 1000.
    zoneinfo = ZoneInfo(zone)
    instants = [datetime(1960, 6, 1, 12, 0, 5, tzinfo=UTC), datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC)]
    start = datetime(2025, 1, 1, tzinfo=UTC)
    instants += [start + timedelta(hours=7 * n, seconds=n, microseconds=999_999) for n in range(1300)]
    records = [record(n, timezone=zone, started_at=at, submitted_at=at, planned_at=at) for n, at in enumerate(instants)]
    _, _, rows = csv_rows(write_wide_csv, records)
    for at, row in zip(instants, rows, strict=True):
        assert row["submitted_at_local"] == at.astimezone(zoneinfo).isoformat(timespec="seconds")
        assert row["started_at_local"] == row["submitted_at_local"]
        assert row["submitted_at_utc"] == at.isoformat(timespec="seconds").replace("+00:00", "Z")
        assert row["planned_date"] == at.astimezone(zoneinfo).date().isoformat()


@pytest.mark.parametrize(
    ("anchor", "submitted", "expected"),
    [
        # Spring: 23:30 local both days, but only 6 days 23 hours apart in UTC.
        (datetime(2025, 3, 27, 22, 30, tzinfo=UTC), datetime(2025, 4, 3, 21, 30, tzinfo=UTC), 7),
        # Autumn: 00:30 local both days, 7 days 1 hour apart in UTC.
        (datetime(2025, 10, 22, 22, 30, tzinfo=UTC), datetime(2025, 10, 29, 23, 30, tzinfo=UTC), 7),
        # Same local day, whatever the hour.
        (datetime(2025, 3, 30, 0, 5, tzinfo=UTC), datetime(2025, 3, 30, 21, 55, tzinfo=UTC), 0),
        # Submitted before the anchor (a pre-infusion questionnaire).
        (datetime(2025, 3, 31, 6, 0, tzinfo=UTC), datetime(2025, 3, 29, 10, 0, tzinfo=UTC), -2),
    ],
)
def test_days_from_anchor_count_local_calendar_days_across_dst(
    anchor: datetime, submitted: datetime, expected: int
) -> None:
    row = csv_rows(write_wide_csv, [record(anchors={"infusion": anchor}, submitted_at=submitted)])[2][0]
    assert row["days_from_infusion"] == str(expected)
    assert row["days_from_lymphodepletion"] == "" and row["days_from_enrolment"] == ""


def test_days_from_anchor_use_the_planned_day_until_submitted() -> None:
    planned = datetime(2025, 4, 3, 21, 30, tzinfo=UTC)  # 23:30 in Berlin
    pending = record(anchors={"infusion": datetime(2025, 3, 27, 22, 30, tzinfo=UTC)}, submitted_at=None,
                     planned_at=planned, status="open")
    assert csv_rows(write_wide_csv, [pending])[2][0]["days_from_infusion"] == "7"


def test_anchor_days_are_not_reused_for_another_participant_or_changed_anchors() -> None:
    first = record(1, participant_id=1, anchors={"infusion": datetime(2025, 1, 8, 9, 0, tzinfo=UTC)})
    moved = record(2, participant_id=1, anchors={"infusion": datetime(2025, 1, 10, 9, 0, tzinfo=UTC)})
    other = record(3, participant_id=2, anchors={})
    rows = csv_rows(write_wide_csv, [first, moved, other])[2]
    assert [row["days_from_infusion"] for row in rows] == ["7", "5", ""]


def test_csv_is_utf8_rfc4180_with_crlf_and_quoting_only_where_needed() -> None:
    awkward = record(
        site='Hôpital "Saint-Louis", Paris', timepoint_label="Day 7\nafter infusion", subject_code="北京-001",
        timepoint_code="=d7",
    )
    count, raw, rows = csv_rows(write_wide_csv, [awkward])
    assert count == 1
    assert not raw.startswith(b"\xef\xbb\xbf")  # no byte-order mark
    text = raw.decode("utf-8")
    assert text.endswith("\r\n") and text.count("\r\n") == 2
    assert '"Hôpital ""Saint-Louis"", Paris"' in text
    assert ",CART1," not in text and text.split("\r\n")[1].startswith("CART1,")
    assert rows[0]["site"] == 'Hôpital "Saint-Louis", Paris'
    assert rows[0]["timepoint_label"] == "Day 7\nafter infusion"
    assert rows[0]["subject_code"] == "北京-001" and rows[0]["timepoint"] == "=d7"
    # The same file read by the csv module's own writer would be byte-identical.
    expected = io.StringIO(newline="")
    writer = csv.writer(expected, lineterminator="\r\n")
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    for row in parsed:
        writer.writerow(row)
    assert expected.getvalue() == text


@pytest.mark.parametrize("writer", [write_items_long, write_scores_long, write_wide_csv])
def test_no_records_is_a_header_only_file(writer: Any) -> None:
    count, raw, rows = csv_rows(writer, [])
    assert count == 0 and rows == []
    assert raw.count(b"\r\n") == 1 and raw.startswith(b"study,site,arm,subject_code")


@pytest.mark.parametrize("writer", [write_items_long, write_scores_long, write_wide_csv, write_xlsx])
def test_the_callers_stream_is_left_open(writer: Any) -> None:
    out = io.BytesIO()
    writer([record()], out, context())
    assert not out.closed
    out.write(b"")  # still usable


def test_csv_writers_stream_rather_than_collect() -> None:
    out = io.BytesIO()
    sizes: list[int] = []

    def records() -> Iterator[AssessmentRecord]:
        for n in range(1, 3001):
            if n % 1000 == 0:
                sizes.append(out.tell())
            yield record(n)

    assert write_wide_csv(records(), out, context()) == 3000
    assert sizes[0] > 0 and sizes[0] < sizes[1] < sizes[2] < out.tell()


# --------------------------------------------------------------------------- long files


def test_items_long_has_one_row_per_answered_item_with_english_labels() -> None:
    answers = dict(ANSWERS, q29=3)
    del answers["q5"]
    spanish = record(answers=answers, locale="es")
    count, _, rows = csv_rows(write_items_long, [spanish], context(texts={"es": default_registry().text("qlq_c30", "es"), "en": EN}))
    assert count == 29 == len(rows)
    assert [row["item"] for row in rows] == [item.id for item in QLQ.items if item.id != "q5"]
    first = rows[0]
    assert first["item_number"] == "1" and first["value"] == "2" and first["response_label"] == "A bit"
    assert first["locale"] == "es" and first["subject_code"] == "BER-001"
    assert first["answered_at_utc"] == "2025-01-15T09:39:42Z"
    by_item = {row["item"]: row for row in rows}
    assert by_item["q11"]["response_label"] == "A great deal"
    assert by_item["q29"]["value"] == "3" and by_item["q29"]["response_label"] == ""  # unlabelled value
    assert by_item["q30"]["value"] == "5" and by_item["q30"]["item_number"] == "30"


def test_items_long_skips_assessments_without_answers() -> None:
    count, _, rows = csv_rows(write_items_long, [record(1, answers={}, answered_at={}), record(2)])
    assert count == 30 and {row["assessment_id"] for row in rows} == {"2"}


def test_scores_long_has_one_row_per_score_at_full_precision() -> None:
    scores = dict(SCORES, QL2=58.333333333333336, FI=None)
    count, _, rows = csv_rows(write_scores_long, [record(scores=scores), record(2, scores={})])
    assert count == 16 == len(rows)
    assert [row["scale"] for row in rows] == list(QLQ.score_codes)
    by_scale = {row["scale"]: row for row in rows}
    assert by_scale["QL2"]["value"] == "58.333333333333336" and by_scale["QL2"]["scale_kind"] == "global"
    assert by_scale["PF2"]["scale_kind"] == "functional" and by_scale["FA"]["scale_kind"] == "symptom"
    assert by_scale["C30SUM"]["scale_kind"] == "summary"
    assert by_scale["FI"]["value"] == ""
    assert all(float(row["value"]) == scores[row["scale"]] for row in rows if row["value"])
    assert "items_answered" not in rows[0]


# --------------------------------------------------------------------------- Excel


def workbook(records: list[AssessmentRecord], ctx: ExportContext | None = None) -> Any:
    out = io.BytesIO()
    count = write_xlsx(records, out, ctx or context())
    assert count == len(records)
    return load_workbook(io.BytesIO(out.getvalue()))


def test_xlsx_cells_are_typed() -> None:
    scores = dict(SCORES, QL2=58.333333333333336, FI=None)
    answers = {k: v for k, v in ANSWERS.items() if k != "q7"}
    book = workbook([record(scores=scores, answers=answers, timepoint_label="=SUM(A1)")])
    assert book.sheetnames == ["Data", "Data dictionary", "About"]
    sheet = book["Data"]
    header = [cell.value for cell in sheet[1]]
    assert header == list(wide_columns(QLQ))
    cells = {name: cell for name, cell in zip(header, sheet[2])}
    assert cells["q1"].value == 2 and type(cells["q1"].value) is int and cells["q1"].data_type == "n"
    assert cells["q7"].value is None
    assert type(cells["QL2"].value) is float and cells["QL2"].value == 58.333333333333336
    assert all(cells[code].value == value for code, value in scores.items())
    assert cells["FI"].value is None
    opened = cells["window_opens_utc"]
    assert opened.value == datetime(2025, 1, 14, 8, 0) and opened.is_date and "yyyy" in opened.number_format
    assert cells["submitted_at_utc"].value == datetime(2025, 1, 15, 9, 40, 12)  # UTC, to the second
    assert cells["planned_date"].value == datetime(2025, 1, 15, 0, 0) and cells["planned_date"].number_format == "yyyy-mm-dd"
    assert cells["submitted_at_local"].value == "2025-01-15T10:40:12+01:00"
    assert cells["days_from_infusion"].value == 7 and cells["days_from_enrolment"].value is None
    assert cells["assessment_id"].value == 1 and cells["occurrence"].value == 0
    assert cells["timepoint_label"].value == "=SUM(A1)" and cells["timepoint_label"].data_type == "s"
    assert cells["subject_code"].value == "BER-001" and cells["text_source"].value == "demo"


def test_xlsx_data_dictionary_describes_every_column() -> None:
    book = workbook([record()])
    rows = list(book["Data dictionary"].iter_rows(values_only=True))
    assert rows[0] == ("column", "type", "description", "allowed values")
    by_column = {row[0]: row for row in rows[1:]}
    assert [row[0] for row in rows[1:]] == list(wide_columns(QLQ))
    assert by_column["q1"][1] == "integer"
    assert by_column["q1"][3].startswith("1-4 (1 = No; 2 = A bit; 3 = A fair amount; 4 = A great deal)")
    assert by_column["q30"][3].startswith("1-7 (1 = Worst possible; 7 = Best possible)")
    assert "past week" in by_column["q30"][2] and EN.items["q30"] in by_column["q30"][2]
    assert by_column["QL2"][1] == "number" and by_column["QL2"][3].startswith("0-100")
    assert "Global health status" in by_column["QL2"][2]
    assert "100 - FA" in by_column["C30SUM"][2] and "every component" in by_column["C30SUM"][3]
    assert "demo" in by_column["text_source"][3]


def test_data_dictionary_rows_match_the_wide_columns() -> None:
    dictionary = data_dictionary(QLQ, EN)
    assert [row[0] for row in dictionary] == list(wide_columns(QLQ))
    assert all(len(row) == 4 and row[1] and row[2] for row in dictionary)
    without_text = data_dictionary(QLQ, None)
    assert [row[0] for row in without_text] == [row[0] for row in dictionary]
    assert dict((row[0], row[3]) for row in without_text)["q1"].startswith("1-4;")


def test_xlsx_about_sheet_names_filters_sources_and_the_demo_notice() -> None:
    ctx = context(
        filters=ExportFilters("CART1", site_ids=(3,), arm_codes=("low",), include_incomplete=True),
        extra={"site_codes": ["BER"]},
    )
    about = dict(workbook([record()], ctx)["About"].iter_rows(values_only=True))
    assert about["Generated at (UTC)"] == "2025-06-01T08:00:00Z"
    assert about["Filter: study"] == "CART1" and about["Filter: sites"] == "BER"
    assert about["Filter: arms"] == "low" and about["Filter: timepoints"] == "all"
    assert about["Filter: include_incomplete"] == "True"
    assert about["Assessments"] == "1"
    assert about["Text shown (en)"] == f"demo wording, sha256 {EN.checksum}: 1 assessment"
    assert about["Notice"] == DEMO_NOTICE
    assert DEMO_NOTICE == (
        "Demo wording: questionnaire texts were pro-app's demonstration wording, not the licensed EORTC text"
    )


def test_xlsx_has_no_demo_notice_when_only_licensed_text_was_shown() -> None:
    licensed = replace(EN, source="licensed", checksum="f" * 64)
    ctx = context(texts={"en": licensed})
    about = dict(workbook([record(text_source="licensed", text_checksum="f" * 64)], ctx)["About"].iter_rows(values_only=True))
    assert "Notice" not in about
    assert about["Text shown (en)"].startswith("licensed wording")


def test_empty_xlsx_has_the_header_the_dictionary_and_about() -> None:
    book = workbook([])
    assert [list(row) for row in book["Data"].iter_rows(values_only=True)] == [list(wide_columns(QLQ))]
    assert book["Data dictionary"].max_row == len(wide_columns(QLQ)) + 1
    about = dict(book["About"].iter_rows(values_only=True))
    assert about["Assessments"] == "0"
    # No questionnaire was exported, but the dictionary quotes the demo wording: said so.
    assert about["Notice"] != DEMO_NOTICE and "data dictionary" in about["Notice"]


# --------------------------------------------------------------------------- formats


def test_formats_name_media_types_and_extensions() -> None:
    expected = {
        "items-long": ("text/csv", ".csv"),
        "scores-long": ("text/csv", ".csv"),
        "wide": ("text/csv", ".csv"),
        "xlsx": ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", ".xlsx"),
        "sdtm-qs": ("application/zip", ".zip"),
        "fhir": ("application/fhir+json", ".json"),
        "redcap": ("application/zip", ".zip"),
    }
    assert {name: (f.media_type, f.extension) for name, f in FORMATS.items()} == expected
    assert all(f.name == name and f.description for name, f in FORMATS.items())
    assert FORMATS["wide"].writer is write_wide_csv and FORMATS["xlsx"].writer is write_xlsx
    assert WITHOUT_ANSWER_TIMES <= set(FORMATS) and "items-long" not in WITHOUT_ANSWER_TIMES


def test_planned_date_for_an_excel_date_is_the_local_day() -> None:
    late = record(planned_at=datetime(2025, 1, 15, 23, 30, tzinfo=UTC))  # 00:30 on the 16th in Berlin
    cells = dict(zip(wide_columns(QLQ), next(workbook([late])["Data"].iter_rows(min_row=2, values_only=True))))
    assert cells["planned_date"].date() == date(2025, 1, 16)
