"""CDISC SDTM Questionnaires (QS) domain: one row per item per questionnaire, plus its variable list.

The ZIP holds ``qs.csv`` (the QS dataset) and ``define_qs.csv`` (a define-style list of its
variables: label, type, length, format, codelist, origin, role). The dataset follows the
SDTMIG QS conventions used for the EORTC QLQ-C30:

* ``QSTESTCD`` is ``EOR01`` + the item number zero-padded (``EOR0101`` .. ``EOR0130``);
  ``QSCAT`` is ``EORTC QLQ-C30 V3.0``.
* ``QSTEST`` is a neutral short label paraphrasing pro-app's own demonstration wording. It is
  never the official EORTC item text, nor the CDISC terminology that paraphrases it; sponsors who
  need the controlled-terminology labels map ``QSTESTCD`` to them in their own pipeline.
* ``QSORRES`` is the response as the participant saw it (the label in the assessment's language,
  falling back to English; the bare number for values without a label, e.g. 2-6 of items 29-30),
  ``QSSTRESC``/``QSSTRESN`` the value itself.
* A completed questionnaire has a row for every item: unanswered items carry
  ``QSSTAT = "NOT DONE"`` and ``QSREASND = "NOT ANSWERED"``. A questionnaire not done at all
  (missed, cancelled) is one ``QSTESTCD = "QSALL"`` row with the reason (``MISSED``,
  ``CANCELLED``); one still open or in progress keeps its answered items and marks the others
  ``NOT SUBMITTED`` (or, with no answer yet, one ``QSALL`` row ``NOT SUBMITTED``).
* ``QSEVLINT`` is ``-P1W`` for items asked about the past week (6-30), empty for items 1-5.
* ``QSDTC`` is the submission time in the participant's local time with its UTC offset
  (ISO 8601, whole seconds); when nothing was submitted, the planned local date.

Derived scale scores are deliberately not in QS: SDTM tabulates what was collected and the
scores belong to ADaM (ADQS), where analysts re-derive and verify them. The scores remain in
the tabular and FHIR exports.

Rows are sorted by subject, then planned time, then item, and ``QSSEQ`` numbers each subject's
rows 1..n in that order, so the same data always gives the same file. The dataset is held
per assessment (not per row) while sorting: a whole study is a few thousand assessments.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pro_app.domain.instruments import Instrument, InstrumentText, Item, NotRegisteredError, default_registry
from pro_app.domain.records import AssessmentRecord
from pro_app.domain.states import AssessmentStatus
from pro_app.exports import ExportContext

QS_FILE = "qs.csv"
DEFINE_FILE = "define_qs.csv"
DOMAIN = "QS"
NOT_DONE = "NOT DONE"
QSALL = "QSALL"
QSALL_TEST = "Questionnaire Status"
MAX_TEST_LENGTH = 40  # SDTMIG: QSTEST is at most 40 characters
MAX_TESTCD_LENGTH = 8  # SDTMIG: QSTESTCD is at most 8 characters, starting with a letter

#: QSREASND for a questionnaire (or its unanswered items) by assessment status.
REASON_NOT_ANSWERED = "NOT ANSWERED"
REASON_NOT_SUBMITTED = "NOT SUBMITTED"
_WHOLE_REASONS: Mapping[str, str] = {
    AssessmentStatus.MISSED.value: "MISSED",
    AssessmentStatus.CANCELLED.value: "CANCELLED",
}

#: ISO 8601 evaluation interval per recall period (``none`` has no interval).
EVALUATION_INTERVALS: Mapping[str, str] = {"past_week": "-P1W"}

#: Test-code prefixes of instruments with published SDTM conventions (QSTESTCD = prefix + nn).
_TESTCD_PREFIX: Mapping[str, str] = {"qlq_c30": "EOR01"}

#: Neutral short labels for QSTEST, paraphrasing pro-app's demonstration wording (text/en.json).
#: What an item asks about is fixed by the instrument, so the labels stay valid when a site
#: shows licensed wording; they must never be replaced by the official item text.
_SHORT_LABELS: Mapping[str, Mapping[str, str]] = {
    "qlq_c30": {
        "q1": "Heavy physical effort is difficult",
        "q2": "Walking a long distance is difficult",
        "q3": "Walking a few hundred metres difficult",
        "q4": "Lying down or sitting much of the day",
        "q5": "Needs help: meals, clothes, hygiene",
        "q6": "Held back in job or tasks at home",
        "q7": "Held back from hobbies or free time",
        "q8": "Breathing felt hard",
        "q9": "Pain anywhere in the body",
        "q10": "Took breaks to recover strength",
        "q11": "Slept badly",
        "q12": "Body felt short of strength",
        "q13": "Little desire to eat",
        "q14": "Felt queasy or sick to the stomach",
        "q15": "Threw up",
        "q16": "Bowel movements hard or infrequent",
        "q17": "Stools loose or watery",
        "q18": "Felt worn out",
        "q19": "Pain stopped ordinary things in the day",
        "q20": "Hard to focus attention",
        "q21": "Felt on edge",
        "q22": "Troubled by anxious thoughts",
        "q23": "Easily annoyed",
        "q24": "Felt low or down-hearted",
        "q25": "Forgot things more than usual",
        "q26": "Health or care disrupted family life",
        "q27": "Health or care disrupted social life",
        "q28": "Illness or care strained finances",
        "q29": "Rating of general health (1-7)",
        "q30": "Rating of overall life (1-7)",
    }
}


@dataclass(frozen=True, slots=True)
class Variable:
    """One QS variable as the define-style list describes it."""

    name: str
    label: str
    type: str  # "Char" or "Num", as in the SDTMIG metadata tables
    role: str
    origin: str
    format: str = ""
    codelist: str = ""
    comment: str = ""


#: The QS variables in dataset order (labels as in the SDTMIG QS specification).
VARIABLES: tuple[Variable, ...] = (
    Variable("STUDYID", "Study Identifier", "Char", "Identifier", "Assigned"),
    Variable("DOMAIN", "Domain Abbreviation", "Char", "Identifier", "Assigned", codelist="QS"),
    Variable(
        "USUBJID", "Unique Subject Identifier", "Char", "Identifier", "Derived",
        comment="STUDYID-subject code (pseudonymous)",
    ),
    Variable(
        "QSSEQ", "Sequence Number", "Num", "Identifier", "Derived",
        comment="1..n per subject, rows sorted by planned time then item number",
    ),
    Variable("QSTESTCD", "Question Short Name", "Char", "Topic", "Assigned"),
    Variable(
        "QSTEST", "Question Name", "Char", "Synonym Qualifier", "Assigned",
        comment="Neutral short label from pro-app's own demonstration wording; not the official item text",
    ),
    Variable("QSCAT", "Category of Question", "Char", "Grouping Qualifier", "Assigned"),
    Variable("QSORRES", "Finding in Original Units", "Char", "Result Qualifier", "Collected"),
    Variable("QSSTRESC", "Character Result/Finding in Std Format", "Char", "Result Qualifier", "Derived"),
    Variable("QSSTRESN", "Numeric Finding in Standard Units", "Num", "Result Qualifier", "Derived"),
    Variable("QSSTAT", "Completion Status", "Char", "Record Qualifier", "Derived", codelist=NOT_DONE),
    Variable("QSREASND", "Reason Not Performed", "Char", "Record Qualifier", "Derived"),
    Variable(
        "QSEVLINT", "Evaluation Interval", "Char", "Timing", "Assigned", format="ISO 8601 duration",
    ),
    Variable("VISITNUM", "Visit Number", "Num", "Timing", "Assigned"),
    Variable("VISIT", "Visit Name", "Char", "Timing", "Assigned", comment="Timepoint label, upper case"),
    Variable(
        "QSDTC", "Date/Time of Finding", "Char", "Timing", "Collected", format="ISO 8601",
        comment="Submission in the participant's local time with UTC offset; planned local date if not submitted",
    ),
)
COLUMNS: tuple[str, ...] = tuple(v.name for v in VARIABLES)
DEFINE_COLUMNS: tuple[str, ...] = (
    "Order", "Variable", "Label", "Type", "Length", "Format", "Codelist", "Origin", "Role", "Comment",
)


def write_sdtm_qs(records: Iterable[AssessmentRecord], out: BinaryIO, context: ExportContext) -> int:
    """Write the QS dataset and its variable list as a ZIP; return the number of QS rows."""
    instrument = context.instrument
    qs = _QsBuilder(instrument, context.texts)
    ordered = sorted(records, key=_sort_key)
    lengths = {name: 0 for name in COLUMNS}
    count = 0
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with _csv_member(archive, QS_FILE, context.generated_at) as stream:
            writer = csv.writer(stream, lineterminator="\r\n")
            writer.writerow(COLUMNS)
            seq: dict[str, int] = {}
            for record in ordered:
                for row in qs.rows(record):
                    usubjid = row["USUBJID"]
                    seq[usubjid] = seq.get(usubjid, 0) + 1
                    row["QSSEQ"] = str(seq[usubjid])
                    values = [row.get(name, "") for name in COLUMNS]
                    for name, value in zip(COLUMNS, values):
                        lengths[name] = max(lengths[name], len(value.encode("utf-8")))
                    writer.writerow(values)
                    count += 1
        with _csv_member(archive, DEFINE_FILE, context.generated_at) as stream:
            writer = csv.writer(stream, lineterminator="\r\n")
            writer.writerow(DEFINE_COLUMNS)
            writer.writerows(define_rows(instrument, context.texts, lengths))
    return count


def define_rows(
    instrument: Instrument, texts: Mapping[str, InstrumentText], lengths: Mapping[str, int]
) -> list[list[str]]:
    """The define-style variable list: one row per QS column, in dataset order.

    ``lengths`` are the longest values written (UTF-8 bytes, as SAS stores them); numeric
    variables have length 8 (SAS double).
    """
    codelists = _codelists(instrument, texts)
    comments = {"QSORRES": _orres_comment(texts)}
    rows = []
    for order, var in enumerate(VARIABLES, start=1):
        length = "8" if var.type == "Num" else str(max(1, lengths.get(var.name, 0)))
        rows.append([
            str(order), var.name, var.label, var.type, length, var.format,
            var.codelist or codelists.get(var.name, ""), var.origin, var.role,
            comments.get(var.name, var.comment),
        ])
    return rows


def item_test_code(instrument: Instrument, item: Item) -> str:
    """``QSTESTCD`` of an item: the instrument's prefix and the item number, two digits."""
    prefix = _TESTCD_PREFIX.get(instrument.code)
    if prefix is None:
        prefix = re.sub(r"[^A-Z0-9]", "", instrument.code.upper())[:MAX_TESTCD_LENGTH - 2] or "Q"
    code = f"{prefix}{item.number:02d}"
    if len(code) > MAX_TESTCD_LENGTH or not code[0].isalpha():
        raise ValueError(f"cannot form an SDTM test code for item {item.id!r} of {instrument.code!r}")
    return code


def item_test_name(instrument: Instrument, item: Item, demo_text: InstrumentText | None) -> str:
    """``QSTEST`` of an item: a neutral short label (at most 40 characters), never official text.

    Curated labels exist for the shipped instruments; any other instrument gets the start of
    its demonstration wording cut at a word boundary, or ``Item n`` when there is none.
    """
    label = _SHORT_LABELS.get(instrument.code, {}).get(item.id)
    if label is None and demo_text is not None and demo_text.source == "demo":
        label = _shorten(demo_text.items[item.id])
    return (label or f"Item {item.number}")[:MAX_TEST_LENGTH]


def category(instrument: Instrument) -> str:
    """``QSCAT``: the instrument title in the SDTM style (``EORTC QLQ-C30 V3.0``)."""
    return re.sub(r"\s+VERSION\s+", " V", instrument.title.upper()).strip()


# --------------------------------------------------------------------------- rows


class _QsBuilder:
    """Turns one assessment into its QS rows (all values as text; QSSEQ added by the caller)."""

    def __init__(self, instrument: Instrument, texts: Mapping[str, InstrumentText]) -> None:
        self.instrument = instrument
        self.texts = texts
        self.fallback = _default_text(texts)
        # Curated labels need no wording; only another instrument falls back to its demo text.
        demo = None if instrument.code in _SHORT_LABELS else _demo_text(instrument, texts)
        self.category = category(instrument)
        self.codes = {item.id: item_test_code(instrument, item) for item in instrument.items}
        self.names = {item.id: item_test_name(instrument, item, demo) for item in instrument.items}
        self.intervals = {item.id: EVALUATION_INTERVALS.get(item.recall, "") for item in instrument.items}

    def rows(self, record: AssessmentRecord) -> Iterator[dict[str, str]]:
        common = {
            "STUDYID": record.study,
            "DOMAIN": DOMAIN,
            "USUBJID": usubjid(record),
            "QSCAT": self.category,
            "VISITNUM": str(record.visit_number),
            "VISIT": record.timepoint_label.upper(),
            "QSDTC": finding_datetime(record),
        }
        whole_reason = _WHOLE_REASONS.get(record.status)
        if whole_reason is None and not record.complete and not record.answers:
            whole_reason = REASON_NOT_SUBMITTED
        if whole_reason is not None:
            yield {**common, "QSTESTCD": QSALL, "QSTEST": QSALL_TEST, "QSSTAT": NOT_DONE, "QSREASND": whole_reason}
            return
        missing_reason = REASON_NOT_ANSWERED if record.complete else REASON_NOT_SUBMITTED
        text = self.texts.get(record.locale or "") or self.fallback
        for item in self.instrument.items:
            row = {
                **common,
                "QSTESTCD": self.codes[item.id],
                "QSTEST": self.names[item.id],
                "QSEVLINT": self.intervals[item.id],
            }
            value = record.answers.get(item.id)
            if value is None:
                row["QSSTAT"] = NOT_DONE
                row["QSREASND"] = missing_reason
            else:
                row["QSORRES"] = _response_text(item, value, text, self.fallback)
                row["QSSTRESC"] = str(value)
                row["QSSTRESN"] = str(value)
            yield row


def usubjid(record: AssessmentRecord) -> str:
    """``USUBJID``: study and subject code, unique across studies."""
    return f"{record.study}-{record.subject_code}"


def finding_datetime(record: AssessmentRecord) -> str:
    """``QSDTC``: local submission time with offset, or the planned local date."""
    zone = _zone(record.timezone)
    if record.submitted_at is not None:
        return _aware(record.submitted_at).astimezone(zone).isoformat(timespec="seconds")
    return _aware(record.planned_at).astimezone(zone).date().isoformat()


def _response_text(item: Item, value: int, text: InstrumentText | None, fallback: InstrumentText | None) -> str:
    for candidate in (text, fallback):
        if candidate is not None:
            label = candidate.response_labels.get(item.response_set, {}).get(value)
            if label is not None:
                return label
    return str(value)


def _sort_key(record: AssessmentRecord) -> tuple[str, datetime, int, int]:
    return (usubjid(record), _aware(record.planned_at), record.visit_number, record.assessment_id)


# --------------------------------------------------------------------------- define helpers


def _codelists(instrument: Instrument, texts: Mapping[str, InstrumentText]) -> dict[str, str]:
    first = instrument.items[0]
    last = instrument.items[-1]
    values = sorted({v for rs in instrument.response_sets for v in rs.values})
    english = _default_text(texts)
    labels = []
    if english is not None:
        for rs in instrument.response_sets:
            shown = "; ".join(f"{v} = {english.response_labels[rs.code][v]}" for v in rs.labelled)
            labels.append(f"{rs.code}: {shown}")
    intervals = sorted({EVALUATION_INTERVALS[i.recall] for i in instrument.items if i.recall in EVALUATION_INTERVALS})
    reasons = [REASON_NOT_ANSWERED, REASON_NOT_SUBMITTED, *_WHOLE_REASONS.values()]
    return {
        "QSTESTCD": f"{item_test_code(instrument, first)}-{item_test_code(instrument, last)}; {QSALL}",
        "QSCAT": category(instrument),
        "QSORRES": " | ".join(labels) + ("; " if labels else "") + "unlabelled values as the number",
        "QSSTRESC": ", ".join(str(v) for v in values),
        "QSSTRESN": f"{values[0]}-{values[-1]}",
        "QSREASND": "; ".join(reasons),
        "QSEVLINT": "; ".join(intervals),
    }


def _orres_comment(texts: Mapping[str, InstrumentText]) -> str:
    shown = ", ".join(f"{locale} ({text.source})" for locale, text in sorted(texts.items()))
    return (
        "Response label in the language of the assessment (English when that text is not "
        f"available); texts: {shown}. 'demo' marks pro-app's demonstration wording, not official text"
    )


# --------------------------------------------------------------------------- shared plumbing


def _default_text(texts: Mapping[str, InstrumentText]) -> InstrumentText | None:
    if "en" in texts:
        return texts["en"]
    return texts[min(texts)] if texts else None


def _demo_text(instrument: Instrument, texts: Mapping[str, InstrumentText]) -> InstrumentText | None:
    """English demonstration wording: the study's own if it is demo, else the shipped one."""
    english = texts.get("en")
    if english is not None and english.source == "demo":
        return english
    try:
        shipped = default_registry().text(instrument.code, "en")
    except NotRegisteredError:
        return None
    return shipped if shipped.source == "demo" and shipped.version == instrument.version else None


def _shorten(wording: str) -> str:
    words = wording.strip().rstrip("?.!:;").split()
    label = ""
    for word in words:
        candidate = f"{label} {word}".strip()
        if len(candidate) > MAX_TEST_LENGTH:
            break
        label = candidate
    return label.rstrip(",;:")


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _aware(moment: datetime) -> datetime:
    """Instants are stored in UTC; a naive one (e.g. from SQLite) is read as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@contextmanager
def _csv_member(archive: zipfile.ZipFile, name: str, when: datetime) -> Iterator[io.TextIOWrapper]:
    """A UTF-8 text stream into one member of the ZIP, dated with the export so that the same
    data always gives the same bytes."""
    info = zipfile.ZipInfo(name, date_time=_zip_time(when))
    info.compress_type = zipfile.ZIP_DEFLATED
    with archive.open(info, "w") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
        yield text


def _zip_time(when: datetime) -> tuple[int, int, int, int, int, int]:
    # ZIP stores local wall time without zone and cannot go below 1980.
    moment = _aware(when).astimezone(UTC)
    if moment.year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    return (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)


__all__ = (
    "COLUMNS",
    "DEFINE_COLUMNS",
    "VARIABLES",
    "category",
    "define_rows",
    "finding_datetime",
    "item_test_code",
    "item_test_name",
    "usubjid",
    "write_sdtm_qs",
)
