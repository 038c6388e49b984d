"""Standard-format exports: CDISC SDTM QS, HL7 FHIR R4 and REDCap, on hand-built records.

The instrument and its English and Spanish wording are the real shipped files. FHIR resources
are validated with the R4B models of ``fhir.resources`` (R4B is R4 for every resource used here;
the package's default models are R5).
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.questionnaire import Questionnaire
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse

from pro_app.domain.instruments import Instrument, InstrumentText, default_registry
from pro_app.domain.records import AssessmentRecord, ExportFilters
from pro_app.exports import ExportContext
from pro_app.exports.fhir import (
    UUID_NAMESPACE,
    questionnaire_resource,
    write_fhir_bundle,
    write_fhir_questionnaire,
)
from pro_app.exports.redcap import DICTIONARY_COLUMNS, event_base_name, redcap_dictionary, write_redcap
from pro_app.exports.sdtm import COLUMNS, write_sdtm_qs

GENERATED = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
ALL_TWO = {f"q{n}": 2 for n in range(1, 31)}


@pytest.fixture(scope="module")
def instrument() -> Instrument:
    return default_registry().get("qlq_c30")


@pytest.fixture(scope="module")
def en(instrument: Instrument) -> InstrumentText:
    return default_registry().text("qlq_c30", "en")


@pytest.fixture(scope="module")
def context(instrument: Instrument) -> ExportContext:
    texts = {locale: default_registry().text("qlq_c30", locale) for locale in ("en", "es")}
    return ExportContext(instrument, texts, ExportFilters("CART1"), GENERATED)


def record(
    assessment_id: int,
    subject: str = "RIV-001",
    *,
    status: str = "completed",
    answers: dict[str, int] | None = None,
    scores: dict[str, float | None] | None = None,
    locale: str | None = "en",
    planned_at: datetime = datetime(2025, 3, 1, 9, 0, tzinfo=UTC),
    submitted_at: datetime | None = datetime(2025, 3, 1, 10, 30, 15, tzinfo=UTC),
    timepoint: tuple[str, str, int] = ("d28", "Day 28", 0),
    visit_number: int = 901,
    timezone: str = "Europe/Berlin",
) -> AssessmentRecord:
    code, label, occurrence = timepoint
    done = status == "completed"
    answered = submitted_at if done and submitted_at else planned_at
    return AssessmentRecord(
        assessment_id=assessment_id,
        study="CART1",
        site="Riverside",
        arm="low",
        subject_code=subject,
        participant_id=1,
        timezone=timezone,
        timepoint_code=code,
        timepoint_label=label,
        occurrence=occurrence,
        visit_number=visit_number,
        planned_at=planned_at,
        window_opens_at=planned_at,
        window_closes_at=planned_at,
        started_at=None,
        submitted_at=submitted_at if done else None,
        status=status,
        mode="self" if done else None,
        locale=locale,
        instrument_code="qlq_c30",
        instrument_version="3.0",
        text_source="demo",
        text_checksum="0" * 64,
        answers=dict(ALL_TWO) if answers is None else answers,
        answered_at={item: answered for item in (ALL_TWO if answers is None else answers)},
        scores=scores or {},
        scoring_algorithm="eortc-scoring-manual-3ed+c30sum-2016/1" if scores else None,
    )


def read_zip(data: bytes) -> dict[str, list[dict[str, str]]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {
            name: list(csv.DictReader(io.StringIO(archive.read(name).decode("utf-8"), newline="")))
            for name in archive.namelist()
        }


def zip_header(data: bytes, name: str) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return next(csv.reader(io.StringIO(archive.read(name).decode("utf-8"), newline="")))


# --------------------------------------------------------------------------- SDTM QS


def sdtm(records: list[AssessmentRecord], context: ExportContext) -> tuple[int, bytes]:
    out = io.BytesIO()
    count = write_sdtm_qs(records, out, context)
    return count, out.getvalue()


def test_qs_has_the_sdtm_columns_and_the_define_list_covers_each(context: ExportContext) -> None:
    count, data = sdtm([record(1)], context)
    expected = [
        "STUDYID", "DOMAIN", "USUBJID", "QSSEQ", "QSTESTCD", "QSTEST", "QSCAT", "QSORRES", "QSSTRESC",
        "QSSTRESN", "QSSTAT", "QSREASND", "QSEVLINT", "VISITNUM", "VISIT", "QSDTC",
    ]
    assert zip_header(data, "qs.csv") == expected == list(COLUMNS)
    files = read_zip(data)
    assert count == len(files["qs.csv"]) == 30
    define = files["define_qs.csv"]
    assert [row["Variable"] for row in define] == expected
    for row in define:
        assert row["Label"] and row["Type"] in ("Char", "Num") and row["Origin"] and row["Role"]
        longest = max(len(qs[row["Variable"]].encode()) for qs in files["qs.csv"])
        assert int(row["Length"]) >= longest
    assert {row["Variable"]: row["Format"] for row in define}["QSDTC"] == "ISO 8601"


def test_item_rows_carry_codes_texts_and_values(context: ExportContext) -> None:
    answers = dict(ALL_TWO, q1=1, q29=4, q30=7)
    rows = read_zip(sdtm([record(1, answers=answers)], context)[1])["qs.csv"]
    assert [row["QSTESTCD"] for row in rows] == [f"EOR01{n:02d}" for n in range(1, 31)]
    by_code = {row["QSTESTCD"]: row for row in rows}
    assert by_code["EOR0101"]["QSORRES"] == "No"
    assert by_code["EOR0102"]["QSORRES"] == "A bit"
    assert by_code["EOR0129"]["QSORRES"] == "4"  # unlabelled value: the number itself
    assert by_code["EOR0130"]["QSORRES"] == "Best possible"
    assert (by_code["EOR0130"]["QSSTRESC"], by_code["EOR0130"]["QSSTRESN"]) == ("7", "7")
    for row in rows:
        assert row["STUDYID"] == "CART1" and row["DOMAIN"] == "QS" and row["USUBJID"] == "CART1-RIV-001"
        assert row["QSCAT"] == "EORTC QLQ-C30 V3.0"
        assert row["VISITNUM"] == "901" and row["VISIT"] == "DAY 28"
        assert row["QSSTAT"] == "" and row["QSREASND"] == ""
        assert float(row["QSSTRESN"]) == int(row["QSSTRESC"])


def test_qstest_is_a_short_neutral_label_not_the_item_wording(context: ExportContext, en: InstrumentText) -> None:
    rows = read_zip(sdtm([record(1)], context)[1])["qs.csv"]
    names = [row["QSTEST"] for row in rows]
    assert len(set(names)) == 30
    for name, wording in zip(names, en.items.values()):
        assert 0 < len(name) <= 40
        assert name != wording


def test_evaluation_interval_is_the_past_week_from_item_6(context: ExportContext) -> None:
    rows = read_zip(sdtm([record(1)], context)[1])["qs.csv"]
    intervals = {int(row["QSTESTCD"][-2:]): row["QSEVLINT"] for row in rows}
    assert all(intervals[n] == "" for n in range(1, 6))
    assert all(intervals[n] == "-P1W" for n in range(6, 31))


def test_unanswered_items_of_a_completed_questionnaire_are_not_done(context: ExportContext) -> None:
    answers = {k: v for k, v in ALL_TWO.items() if k not in ("q3", "q30")}
    rows = read_zip(sdtm([record(1, answers=answers)], context)[1])["qs.csv"]
    assert len(rows) == 30
    for row in rows:
        if row["QSTESTCD"] in ("EOR0103", "EOR0130"):
            assert (row["QSSTAT"], row["QSREASND"]) == ("NOT DONE", "NOT ANSWERED")
            assert row["QSORRES"] == row["QSSTRESC"] == row["QSSTRESN"] == ""
        else:
            assert row["QSSTAT"] == "" and row["QSORRES"]


@pytest.mark.parametrize("status, reason", [("missed", "MISSED"), ("cancelled", "CANCELLED")])
def test_a_questionnaire_not_done_is_one_qsall_row(context: ExportContext, status: str, reason: str) -> None:
    count, data = sdtm([record(1, status=status, answers={})], context)
    rows = read_zip(data)["qs.csv"]
    assert count == len(rows) == 1
    row = rows[0]
    assert (row["QSTESTCD"], row["QSSTAT"], row["QSREASND"]) == ("QSALL", "NOT DONE", reason)
    assert row["QSORRES"] == row["QSSTRESN"] == row["QSEVLINT"] == ""
    assert row["QSDTC"] == "2025-03-01"  # nothing submitted: the planned local date
    assert row["QSSEQ"] == "1"


def test_an_unsubmitted_questionnaire_keeps_its_answers(context: ExportContext) -> None:
    rows = read_zip(sdtm([record(1, status="in_progress", answers={"q1": 3})], context)[1])["qs.csv"]
    assert len(rows) == 30
    assert rows[0]["QSORRES"] == "A fair amount"
    assert {(r["QSSTAT"], r["QSREASND"]) for r in rows[1:]} == {("NOT DONE", "NOT SUBMITTED")}
    empty = read_zip(sdtm([record(2, status="open", answers={})], context)[1])["qs.csv"]
    assert [(r["QSTESTCD"], r["QSREASND"]) for r in empty] == [("QSALL", "NOT SUBMITTED")]


def test_qsseq_numbers_each_subjects_rows_in_time_order_whatever_the_input_order(context: ExportContext) -> None:
    def at(day: int) -> datetime:
        return datetime(2025, 3, day, 9, 0, tzinfo=UTC)

    records = [
        record(1, "RIV-002", planned_at=at(1), submitted_at=at(1)),
        record(2, "RIV-001", planned_at=at(8), submitted_at=at(8), timepoint=("d7", "Day 7", 0), visit_number=601),
        record(3, "RIV-001", status="missed", answers={}, planned_at=at(2)),
        record(4, "RIV-001", planned_at=at(20), submitted_at=at(20)),
    ]
    count, data = sdtm(records, context)
    shuffled = list(records)
    random.Random(7).shuffle(shuffled)
    assert sdtm(shuffled, context)[1] == data  # same data, same bytes
    rows = read_zip(data)["qs.csv"]
    assert count == len(rows) == 30 + 1 + 30 + 30
    subjects = [row["USUBJID"] for row in rows]
    assert subjects == sorted(subjects)
    for subject in set(subjects):
        seqs = [int(row["QSSEQ"]) for row in rows if row["USUBJID"] == subject]
        assert seqs == list(range(1, len(seqs) + 1))
    first = [row for row in rows if row["USUBJID"] == "CART1-RIV-001"]
    assert first[0]["QSTESTCD"] == "QSALL"  # planned 2 March, before the others
    assert first[1]["QSDTC"].startswith("2025-03-08") and first[-1]["QSDTC"].startswith("2025-03-20")


def test_qsdtc_is_local_iso8601_with_offset(context: ExportContext) -> None:
    winter = record(1, submitted_at=datetime(2025, 3, 1, 10, 30, 15, 123456, tzinfo=UTC))
    summer = record(2, submitted_at=datetime(2025, 7, 1, 23, 30, tzinfo=UTC), planned_at=datetime(2025, 7, 1, tzinfo=UTC))
    shanghai = record(3, "NGC-001", timezone="Asia/Shanghai")
    rows = read_zip(sdtm([winter, summer, shanghai], context)[1])["qs.csv"]
    dates = {row["QSDTC"] for row in rows}
    assert dates == {"2025-03-01T11:30:15+01:00", "2025-07-02T01:30:00+02:00", "2025-03-01T18:30:15+08:00"}
    iso = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2})?$")
    assert all(iso.match(value) for value in dates)


def test_qsorres_uses_the_language_of_the_assessment_with_english_fallback(context: ExportContext) -> None:
    spanish = context.texts["es"].response_labels["four_point"][2]
    rows = read_zip(sdtm([record(1, locale="es"), record(2, "RIV-002", locale="fr")], context)[1])["qs.csv"]
    by_subject = {row["USUBJID"]: row["QSORRES"] for row in rows if row["QSTESTCD"] == "EOR0101"}
    assert by_subject == {"CART1-RIV-001": spanish, "CART1-RIV-002": "A bit"}
    assert spanish != "A bit"


def test_qs_holds_items_only_no_scores(context: ExportContext) -> None:
    rows = read_zip(sdtm([record(1, scores={"QL2": 50.0})], context)[1])["qs.csv"]
    assert {row["QSTESTCD"][:5] for row in rows} == {"EOR01"}


# --------------------------------------------------------------------------- FHIR R4


def fhir_bundle(records: list[AssessmentRecord], context: ExportContext) -> tuple[int, bytes]:
    out = io.BytesIO()
    count = write_fhir_bundle(records, out, context)
    return count, out.getvalue()


def test_questionnaire_is_valid_r4_with_our_wording(instrument: Instrument, en: InstrumentText) -> None:
    resource = questionnaire_resource(instrument, en)
    Questionnaire.model_validate(resource)
    assert resource["url"] == "urn:pro-app:questionnaire:qlq_c30:3.0"
    assert resource["status"] == "active"
    assert "demonstration wording" in resource["copyright"] and "licence" in resource["copyright"]
    items = resource["item"]
    assert [item["linkId"] for item in items] == [f"q{n}" for n in range(1, 31)]
    assert {item["type"] for item in items} == {"choice"}
    assert items[0]["text"] == en.items["q1"]
    assert [o["valueCoding"]["display"] for o in items[0]["answerOption"]] == list(
        en.response_labels["four_point"].values()
    )
    q29 = items[28]["answerOption"]
    assert q29[0]["valueCoding"] == {
        "system": "urn:pro-app:qlq_c30:response:seven_point", "code": "1", "display": "Worst possible",
    }
    assert [o["valueInteger"] for o in q29[1:6]] == [2, 3, 4, 5, 6]
    assert q29[6]["valueCoding"]["display"] == "Best possible"


def test_questionnaire_is_exportable_on_its_own(context: ExportContext) -> None:
    out = io.BytesIO()
    assert write_fhir_questionnaire(out, context) == 1
    resource = json.loads(out.getvalue())
    assert Questionnaire.model_validate(resource).url == "urn:pro-app:questionnaire:qlq_c30:3.0"
    assert resource["language"] == "en"


def test_bundle_resources_validate_and_reference_each_other(
    context: ExportContext, instrument: Instrument, en: InstrumentText
) -> None:
    scores: dict[str, float | None] = {code: 50.0 for code in instrument.score_codes}
    scores.update(PF2=200 / 3, NV=None, C30SUM=None)
    answers = {k: v for k, v in ALL_TWO.items() if k not in ("q14", "q15")}
    records = [
        record(1, answers=answers, scores=scores),
        record(2, "RIV-002", status="missed", answers={}),
        record(3, "RIV-003", status="in_progress", answers={"q1": 1, "q29": 5}),
    ]
    count, data = fhir_bundle(records, context)
    bundle = json.loads(data)
    Bundle.model_validate(bundle)
    assert bundle["type"] == "collection"
    entries = bundle["entry"]
    assert count == len(entries) == 3 + len(instrument.score_codes) - 2  # null scores left out
    link_ids = {item["linkId"] for item in questionnaire_resource(instrument, en)["item"]}
    full_urls = {entry["fullUrl"] for entry in entries}
    assert len(full_urls) == len(entries)
    responses = {}
    for entry in entries:
        resource = entry["resource"]
        assert entry["fullUrl"] == f"urn:uuid:{resource['id']}"
        if resource["resourceType"] == "QuestionnaireResponse":
            QuestionnaireResponse.model_validate(resource)
            assert resource["questionnaire"] == "urn:pro-app:questionnaire:qlq_c30:3.0"
            assert {item["linkId"] for item in resource.get("item", [])} <= link_ids
            responses[entry["fullUrl"]] = resource
        else:
            Observation.model_validate(resource)
            assert resource["status"] == "final"
            assert [ref["reference"] for ref in resource["derivedFrom"]][0] in full_urls
            source = responses[resource["derivedFrom"][0]["reference"]]
            assert source["subject"] == resource["subject"]
            assert resource["effectiveDateTime"] == source["authored"]
    assert [r["status"] for r in responses.values()] == ["completed", "stopped", "in-progress"]
    first, missed, open_ = responses.values()
    assert len(first["item"]) == 28 and "item" not in missed
    assert open_["authored"] == "2025-03-01T10:00:00+01:00"  # latest answer while unsubmitted


def test_observations_carry_scores_at_full_precision(context: ExportContext) -> None:
    value = 200 / 3
    _, data = fhir_bundle([record(1, scores={"PF2": value, "QL2": 0.0, "FA": None})], context)
    observations = [e["resource"] for e in json.loads(data)["entry"] if e["resource"]["resourceType"] == "Observation"]
    by_code = {o["code"]["coding"][0]["code"]: o for o in observations}
    assert set(by_code) == {"PF2", "QL2"}
    pf2 = by_code["PF2"]
    assert pf2["code"]["coding"][0]["system"] == "urn:pro-app:qlq_c30:scale"
    assert pf2["valueQuantity"]["value"] == value  # bit-exact after the JSON round trip
    assert pf2["valueQuantity"]["unit"] == "score"
    assert by_code["QL2"]["valueQuantity"]["value"] == 0
    assert pf2["effectiveDateTime"] == "2025-03-01T11:30:15+01:00"
    assert pf2["method"]["text"] == "eortc-scoring-manual-3ed+c30sum-2016/1"


def test_answers_are_codings_where_labelled_and_integers_otherwise(context: ExportContext) -> None:
    answers = dict(ALL_TWO, q29=3, q30=7)
    _, data = fhir_bundle([record(1, answers=answers, locale="es")], context)
    response = json.loads(data)["entry"][0]["resource"]
    items = {item["linkId"]: item["answer"] for item in response["item"]}
    spanish = context.texts["es"]
    assert items["q1"] == [{"valueCoding": {
        "system": "urn:pro-app:qlq_c30:response:four_point", "code": "2",
        "display": spanish.response_labels["four_point"][2],
    }}]
    assert items["q29"] == [{"valueInteger": 3}]
    assert items["q30"][0]["valueCoding"]["code"] == "7"
    assert response["language"] == "es"


def test_subject_is_a_pseudonymous_identifier_and_ids_are_deterministic(context: ExportContext) -> None:
    records = [record(7, scores={"QL2": 50.0})]
    _, data = fhir_bundle(records, context)
    assert fhir_bundle(records, context)[1] == data
    response = json.loads(data)["entry"][0]["resource"]
    assert response["subject"] == {
        "type": "Patient", "identifier": {"system": "urn:pro-app:study:CART1:subject", "value": "RIV-001"},
    }
    assert response["id"] == str(uuid.uuid5(UUID_NAMESPACE, "CART1/assessment/7"))
    assert response["authored"] == "2025-03-01T11:30:15+01:00"


def test_bundle_is_written_while_records_are_still_being_read(context: ExportContext) -> None:
    out = io.BytesIO()
    seen_before: list[int] = []

    def records() -> Iterator[AssessmentRecord]:
        for n in range(1, 4):
            seen_before.append(out.getvalue().count(b'"resourceType":"QuestionnaireResponse"'))
            yield record(n, f"RIV-00{n}")

    assert write_fhir_bundle(records(), out, context) == 3
    assert seen_before == [0, 1, 2]  # each response was out before the next record was read
    assert len(json.loads(out.getvalue())["entry"]) == 3


def test_empty_bundle_is_valid_json(context: ExportContext) -> None:
    count, data = fhir_bundle([], context)
    assert count == 0
    assert json.loads(data)["entry"] == []


# --------------------------------------------------------------------------- REDCap


def redcap(records: list[AssessmentRecord], context: ExportContext) -> tuple[int, bytes]:
    out = io.BytesIO()
    count = write_redcap(records, out, context)
    return count, out.getvalue()


def dictionary_fields(rows: list[list[str]]) -> dict[str, dict[str, str]]:
    return {row[0]: dict(zip(DICTIONARY_COLUMNS, row)) for row in rows[1:]}


def test_dictionary_has_exactly_the_18_redcap_columns(instrument: Instrument, en: InstrumentText) -> None:
    rows = redcap_dictionary(instrument, en)
    assert rows[0] == [
        "Variable / Field Name", "Form Name", "Section Header", "Field Type", "Field Label",
        "Choices, Calculations, OR Slider Labels", "Field Note", "Text Validation Type OR Show Slider Number",
        "Text Validation Min", "Text Validation Max", "Identifier?", "Branching Logic (Show field only if...)",
        "Required Field?", "Custom Alignment", "Question Number (surveys only)", "Matrix Group Name",
        "Matrix Ranking?", "Field Annotation",
    ]
    assert all(len(row) == 18 for row in rows)
    assert rows[1][0] == "record_id"
    names = [row[0] for row in rows[1:]]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]{0,25}", name) for name in names)
    assert {row[1] for row in rows[1:]} == {"qlq_c30"}


def test_items_are_radio_fields_with_redcap_choices(instrument: Instrument, en: InstrumentText) -> None:
    fields = dictionary_fields(redcap_dictionary(instrument, en))
    choices = "Choices, Calculations, OR Slider Labels"
    for n in range(1, 31):
        field = fields[f"q{n}"]
        assert field["Field Type"] == "radio"
        assert field["Field Label"] == en.items[f"q{n}"]
        assert field["Question Number (surveys only)"] == str(n)
        assert re.fullmatch(r"\d+, [^|]+( \| \d+, [^|]+)+", field[choices])
    assert fields["q1"][choices] == "1, No | 2, A bit | 3, A fair amount | 4, A great deal"
    assert fields["q29"][choices] == "1, Worst possible | 2, 2 | 3, 3 | 4, 4 | 5, 5 | 6, 6 | 7, Best possible"
    assert fields["q1"]["Section Header"] == en.sections["physical"]
    assert fields["q2"]["Section Header"] == ""


def test_scores_are_read_only_number_fields(instrument: Instrument, en: InstrumentText) -> None:
    fields = dictionary_fields(redcap_dictionary(instrument, en))
    for code in instrument.score_codes:
        field = fields[code.lower()]
        assert field["Field Type"] == "text"
        assert field["Text Validation Type OR Show Slider Number"] == "number"
        assert (field["Text Validation Min"], field["Text Validation Max"]) == ("0", "100")
        assert "@READONLY" in field["Field Annotation"]


def test_records_columns_are_dictionary_fields(context: ExportContext, instrument: Instrument) -> None:
    scores: dict[str, float | None] = {code: 25.0 for code in instrument.score_codes}
    scores.update(PF2=200 / 3, EF=None)
    answers = {k: v for k, v in ALL_TWO.items() if k != "q5"}
    records = [
        record(1, answers=answers, scores=scores),
        record(2, status="missed", answers={}, timepoint=("w6", "Week 18", 2), visit_number=203),
    ]
    count, data = redcap(records, context)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        dictionary = list(csv.reader(io.StringIO(archive.read("data_dictionary.csv").decode(), newline="")))
    assert dictionary == redcap_dictionary(instrument, context.texts["en"])
    fields = dictionary_fields(dictionary)
    header = zip_header(data, "records.csv")
    assert header[:2] == ["record_id", "redcap_event_name"]
    data_fields = [name for name, f in fields.items() if f["Field Type"] != "descriptive"]
    for column in header:
        assert column in data_fields or column in ("redcap_event_name", "qlq_c30_complete")
    assert set(data_fields) <= set(header)
    rows = read_zip(data)["records.csv"]
    assert count == len(rows) == 2
    done, missed = rows
    assert (done["record_id"], done["redcap_event_name"]) == ("RIV-001", "d28_arm_1")
    assert done["q1"] == "2" and done["q5"] == ""  # blank for an unanswered item
    assert float(done["pf2"]) == 200 / 3 and done["ef"] == ""
    assert done["submitted_at"] == "2025-03-01 11:30:15" and done["planned_date"] == "2025-03-01"
    assert done["qlq_c30_complete"] == "2"
    assert missed["redcap_event_name"] == "w6_3_arm_1"
    assert missed["assessment_status"] == "missed" and missed["qlq_c30_complete"] == "0"
    assert all(missed[f"q{n}"] == "" for n in range(1, 31))
    assert missed["submitted_at"] == missed["pf2"] == ""
    events = read_zip(data)["events.csv"]
    assert [(e["event_name"], e["unique_event_name"]) for e in events] == [
        ("w6_3", "w6_3_arm_1"), ("d28", "d28_arm_1"),  # visit order
    ]
    designation = read_zip(data)["instrument_designation.csv"]
    assert {(d["unique_event_name"], d["form"]) for d in designation} == {
        ("w6_3_arm_1", "qlq_c30"), ("d28_arm_1", "qlq_c30"),
    }


def test_choice_values_in_records_are_dictionary_choices(context: ExportContext, instrument: Instrument) -> None:
    fields = dictionary_fields(redcap_dictionary(instrument, context.texts["en"]))
    rows = read_zip(redcap([record(1), record(2, status="in_progress", answers={"q1": 4})], context)[1])["records.csv"]
    for row in rows:
        for name, field in fields.items():
            if field["Field Type"] in ("radio", "dropdown") and row[name]:
                raw = [c.split(", ", 1)[0] for c in field["Choices, Calculations, OR Slider Labels"].split(" | ")]
                assert row[name] in raw, name


def test_event_names_follow_redcap_slugging() -> None:
    assert event_base_name("d28", 0) == "d28"
    assert event_base_name("w6", 1) == "w6_2"
    assert event_base_name("a_very_long_timepoint_code", 0) == "a_very_long_timepo"
    assert len(event_base_name("x" * 40, 9)) == 18


def test_colliding_event_names_stay_distinct(context: ExportContext) -> None:
    records = [
        record(1, timepoint=("followup_after_infusion_a", "A", 0)),
        record(2, timepoint=("followup_after_infusion_b", "B", 0)),
    ]
    rows = read_zip(redcap(records, context)[1])["records.csv"]
    names = [row["redcap_event_name"] for row in rows]
    assert len(set(names)) == 2
    assert all(len(name.removesuffix("_arm_1")) <= 18 for name in names)


def test_licensed_wording_is_named_as_such_and_labels_stay_neutral(
    instrument: Instrument, en: InstrumentText
) -> None:
    licensed = replace(en, source="licensed", checksum="1" * 64)
    copyright_ = questionnaire_resource(instrument, licensed)["copyright"]
    assert "licence" in copyright_ and "demonstration" not in copyright_
    assert "wording_notice" not in dictionary_fields(redcap_dictionary(instrument, licensed))
    assert "wording_notice" in dictionary_fields(redcap_dictionary(instrument, en))
    context = ExportContext(instrument, {"en": licensed}, ExportFilters("CART1"), GENERATED)
    rows = read_zip(sdtm([record(1)], context)[1])["qs.csv"]
    assert all(row["QSTEST"] != licensed.items[f"q{n}"] for n, row in enumerate(rows, start=1))
