"""REDCap: a data dictionary for a longitudinal project and the records in its flat import format.

The ZIP holds:

* ``data_dictionary.csv`` - the 18 standard REDCap data-dictionary columns; one form named after
  the instrument (``qlq_c30``) with ``record_id`` (the subject code), the assessment's context
  (dose group, site, timepoint, dates, status, mode, language, which wording was shown), the
  items ``q1``..``q30`` as radio buttons (``1, label | 2, label | ...``; values without a label
  show the number) and the scores as read-only number fields.
* ``records.csv`` - one row per assessment: ``record_id``, ``redcap_event_name``, every data
  field of the dictionary in its order, then REDCap's form-status field ``<form>_complete``
  (2 = Complete for a submitted questionnaire, else 0 = Incomplete). Missing values are blank.
* ``events.csv`` and ``instrument_designation.csv`` - the events the records use and the form
  designated to each, in the columns REDCap's "Define My Events" upload takes.

Events: REDCap names an event ``<event name>_arm_<n>``, the event name lower-cased, reduced to
letters, digits and underscores and cut to 18 characters. The event name here is the
timepoint code, with ``_<n>`` appended for the n-th occurrence of a repeating timepoint
(n >= 2), so ``d28`` -> ``d28_arm_1`` and the third ``w6`` -> ``w6_3_arm_1``. Every participant is
in REDCap arm 1; the dose group is the ``dose_group`` field, not a REDCap arm. Two timepoints
that would cut to the same 18 characters get a numeric suffix so that events stay distinct.

Dates are the participant's local time (REDCap has no time zones); ``timezone`` names it.
Scores keep full precision.
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

from pro_app.domain.instruments import Instrument, InstrumentText, Item
from pro_app.domain.records import AssessmentRecord
from pro_app.domain.states import AssessmentMode, AssessmentStatus
from pro_app.exports import ExportContext

DICTIONARY_FILE = "data_dictionary.csv"
RECORDS_FILE = "records.csv"
EVENTS_FILE = "events.csv"
DESIGNATION_FILE = "instrument_designation.csv"

#: The REDCap data dictionary columns, exactly as REDCap writes and reads them.
DICTIONARY_COLUMNS: tuple[str, ...] = (
    "Variable / Field Name",
    "Form Name",
    "Section Header",
    "Field Type",
    "Field Label",
    "Choices, Calculations, OR Slider Labels",
    "Field Note",
    "Text Validation Type OR Show Slider Number",
    "Text Validation Min",
    "Text Validation Max",
    "Identifier?",
    "Branching Logic (Show field only if...)",
    "Required Field?",
    "Custom Alignment",
    "Question Number (surveys only)",
    "Matrix Group Name",
    "Matrix Ranking?",
    "Field Annotation",
)
EVENT_COLUMNS: tuple[str, ...] = ("event_name", "arm_num", "unique_event_name", "custom_event_label")
DESIGNATION_COLUMNS: tuple[str, ...] = ("arm_num", "unique_event_name", "form")

RECORD_ID = "record_id"
EVENT_FIELD = "redcap_event_name"
ARM = 1
EVENT_NAME_LENGTH = 18  # REDCap keeps this many characters of an event name in its unique name
FORM_COMPLETE = 2
FORM_INCOMPLETE = 0
READONLY = "@READONLY"


@dataclass(frozen=True, slots=True)
class Field:
    """One data-dictionary row; ``choices`` are (raw value, label) pairs for radio/dropdown."""

    name: str
    type: str
    label: str
    note: str = ""
    validation: str = ""
    minimum: str = ""
    maximum: str = ""
    choices: tuple[tuple[str, str], ...] = ()
    section: str = ""
    annotation: str = ""
    number: str = ""

    def row(self, form: str) -> list[str]:
        choices = " | ".join(f"{value}, {_clean(label)}" for value, label in self.choices)
        return [
            self.name, form, self.section, self.type, self.label, choices, self.note,
            self.validation, self.minimum, self.maximum, "", "", "", "", self.number, "", "", self.annotation,
        ]


def _options(values: Iterable[str]) -> tuple[tuple[str, str], ...]:
    return tuple((value, value.replace("_", " ").capitalize()) for value in values)


#: The assessment context, after record_id and before the items.
CONTEXT_FIELDS: tuple[Field, ...] = (
    Field("dose_group", "text", "Dose group (study arm code)"),
    Field("site", "text", "Site"),
    Field("timepoint", "text", "Timepoint code"),
    Field("timepoint_label", "text", "Timepoint"),
    Field("occurrence", "text", "Occurrence of the timepoint (1 = first)", validation="integer", minimum="1"),
    Field("visit_number", "text", "Visit number", validation="integer"),
    Field("planned_date", "text", "Planned date (local)", validation="date_ymd"),
    Field("submitted_at", "text", "Submitted (local time)", validation="datetime_seconds_ymd"),
    Field("timezone", "text", "Participant's time zone", note="IANA name, e.g. Europe/Berlin"),
    Field("assessment_status", "dropdown", "Questionnaire status", choices=_options(s.value for s in AssessmentStatus)),
    Field("assessment_mode", "dropdown", "Mode of completion", choices=_options(m.value for m in AssessmentMode)),
    Field("language", "text", "Language shown"),
    Field(
        "text_source", "dropdown", "Wording shown",
        choices=(("demo", "pro-app demonstration wording"), ("licensed", "Licensed official wording")),
    ),
    Field("text_checksum", "text", "Checksum of the wording shown", annotation=READONLY),
)


def redcap_dictionary(instrument: Instrument, text: InstrumentText) -> list[list[str]]:
    """The data dictionary as rows, the header row first (ready for ``csv.writer``).

    Field labels and choice labels come from ``text``; with demonstration wording the form
    opens with a descriptive field that says so.
    """
    form = form_name(instrument)
    rows = [list(DICTIONARY_COLUMNS)]
    rows.append(Field(RECORD_ID, "text", "Subject code").row(form))
    if text.source == "demo":
        notice = Field(
            "wording_notice", "descriptive",
            f"Labels use pro-app's demonstration wording, not the official {instrument.title} text.",
        )
        rows.append(notice.row(form))
    rows.extend(field.row(form) for field in CONTEXT_FIELDS)
    rows.extend(field.row(form) for field in _item_fields(instrument, text))
    rows.extend(field.row(form) for field in _score_fields(instrument))
    return rows


def form_name(instrument: Instrument) -> str:
    return re.sub(r"[^a-z0-9_]", "_", instrument.code.lower())


def write_redcap(records: Iterable[AssessmentRecord], out: BinaryIO, context: ExportContext) -> int:
    """Write dictionary, records and events as a ZIP; return the number of records rows."""
    instrument = context.instrument
    dictionary = redcap_dictionary(instrument, _default_text(context))
    form = form_name(instrument)
    data_fields = [row[0] for row in dictionary[1:] if row[3] != "descriptive" and row[0] != RECORD_ID]
    header = [RECORD_ID, EVENT_FIELD, *data_fields, f"{form}_complete"]
    events = _EventNames()
    count = 0
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with _csv_member(archive, DICTIONARY_FILE, context.generated_at) as stream:
            csv.writer(stream, lineterminator="\r\n").writerows(dictionary)
        with _csv_member(archive, RECORDS_FILE, context.generated_at) as stream:
            writer = csv.writer(stream, lineterminator="\r\n")
            writer.writerow(header)
            for record in records:
                values = _record_values(record, instrument)
                values[RECORD_ID] = record.subject_code
                values[EVENT_FIELD] = events.unique_name(record)
                values[f"{form}_complete"] = str(FORM_COMPLETE if record.complete else FORM_INCOMPLETE)
                writer.writerow([values.get(name, "") for name in header])
                count += 1
        with _csv_member(archive, EVENTS_FILE, context.generated_at) as stream:
            writer = csv.writer(stream, lineterminator="\r\n")
            writer.writerow(EVENT_COLUMNS)
            writer.writerows(events.rows())
        with _csv_member(archive, DESIGNATION_FILE, context.generated_at) as stream:
            writer = csv.writer(stream, lineterminator="\r\n")
            writer.writerow(DESIGNATION_COLUMNS)
            writer.writerows([str(ARM), unique, form] for _, _, unique, _ in events.rows())
    return count


def event_base_name(timepoint_code: str, occurrence: int) -> str:
    """The event name of a timepoint occurrence (0-based ``occurrence``), REDCap-slugged."""
    name = timepoint_code if occurrence == 0 else f"{timepoint_code}_{occurrence + 1}"
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return slug[:EVENT_NAME_LENGTH].rstrip("_") or "event"


# --------------------------------------------------------------------------- fields and values


def _item_fields(instrument: Instrument, text: InstrumentText) -> list[Field]:
    fields = []
    previous_section = None
    for item in instrument.items:
        section = ""
        if item.section != previous_section:
            section = _section_header(item, text)
            previous_section = item.section
        rs = instrument.response_set(item.response_set)
        labels = text.response_labels.get(item.response_set, {})
        choices = tuple((str(v), labels.get(v, str(v))) for v in rs.values)
        fields.append(
            Field(item.id, "radio", text.items[item.id], choices=choices, section=section, number=str(item.number))
        )
    return fields


def _section_header(item: Item, text: InstrumentText) -> str:
    parts = [text.sections.get(item.section, ""), text.recall.get(item.recall, "")]
    return " — ".join(part.strip() for part in parts if part.strip())


def _score_fields(instrument: Instrument) -> list[Field]:
    names = {s.code: s.name for s in instrument.scales} | {s.code: s.name for s in instrument.summary_scores}
    fields = [
        Field(
            score_field(code), "text", f"{names[code]} ({code}), 0-100",
            note="Computed by pro-app; blank when the missing-data rule leaves it unscored",
            validation="number", minimum="0", maximum="100", annotation=READONLY,
            section="Scores" if i == 0 else "",
        )
        for i, code in enumerate(instrument.score_codes)
    ]
    fields.append(Field("scoring_algorithm", "text", "Scoring algorithm version", annotation=READONLY))
    return fields


def score_field(code: str) -> str:
    """REDCap field of a score: the score code in lower case (``PF2`` -> ``pf2``)."""
    return re.sub(r"[^a-z0-9_]", "_", code.lower())


def _record_values(record: AssessmentRecord, instrument: Instrument) -> dict[str, str]:
    zone = _zone(record.timezone)
    values = {
        "dose_group": record.arm or "",
        "site": record.site,
        "timepoint": record.timepoint_code,
        "timepoint_label": record.timepoint_label,
        "occurrence": str(record.occurrence + 1),
        "visit_number": str(record.visit_number),
        "planned_date": _aware(record.planned_at).astimezone(zone).date().isoformat(),
        "submitted_at": (
            _aware(record.submitted_at).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S") if record.submitted_at else ""
        ),
        "timezone": record.timezone,
        "assessment_status": record.status,
        "assessment_mode": record.mode or "",
        "language": record.locale or "",
        "text_source": record.text_source or "",
        "text_checksum": record.text_checksum or "",
        "scoring_algorithm": record.scoring_algorithm or "",
    }
    for item_id, value in record.answers.items():
        values[item_id] = str(value)
    for code in instrument.score_codes:
        score = record.scores.get(code)
        values[score_field(code)] = "" if score is None else repr(score)
    return values


class _EventNames:
    """REDCap unique event names, kept distinct, in the order of the visits they stand for."""

    def __init__(self) -> None:
        self._names: dict[tuple[str, int], str] = {}
        self._used: set[str] = set()
        self._events: dict[str, tuple[int, str]] = {}

    def unique_name(self, record: AssessmentRecord) -> str:
        key = (record.timepoint_code, record.occurrence)
        name = self._names.get(key)
        if name is None:
            name = base = event_base_name(*key)
            suffix = 2
            while name in self._used:
                tail = f"_{suffix}"
                name = base[: EVENT_NAME_LENGTH - len(tail)].rstrip("_") + tail
                suffix += 1
            self._names[key] = name
            self._used.add(name)
            self._events[name] = (record.visit_number, record.timepoint_label)
        return f"{name}_arm_{ARM}"

    def rows(self) -> list[tuple[str, str, str, str]]:
        ordered = sorted(self._events.items(), key=lambda item: (item[1][0], item[0]))
        return [(name, str(ARM), f"{name}_arm_{ARM}", label) for name, (_, label) in ordered]


# --------------------------------------------------------------------------- plumbing


def _clean(label: str) -> str:
    # "|" separates choices in REDCap; a label must not contain it.
    return label.replace("|", "/").strip()


def _default_text(context: ExportContext) -> InstrumentText:
    preferred = context.extra.get("locale")
    if isinstance(preferred, str) and preferred in context.texts:
        return context.texts[preferred]
    if "en" in context.texts:
        return context.texts["en"]
    if not context.texts:
        raise ValueError("the export context holds no instrument text")
    return context.texts[min(context.texts)]


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
    moment = _aware(when).astimezone(UTC)
    stamp = (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)
    info = zipfile.ZipInfo(name, date_time=stamp if moment.year >= 1980 else (1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    with archive.open(info, "w") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
        yield text


__all__ = (
    "DICTIONARY_COLUMNS",
    "event_base_name",
    "form_name",
    "redcap_dictionary",
    "score_field",
    "write_redcap",
)
