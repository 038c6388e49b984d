"""Tabular exports for analysts: long items, long scores, wide CSV and an Excel workbook.

Every row starts with the same context columns (:data:`CONTEXT_COLUMNS` plus one
``days_from_<anchor>`` column per anchor kind), so the three CSV files join on
``assessment_id`` and each file stands on its own. The rules that matter for analysis:

* Scores are written at full float64 precision (``repr``), never rounded: reading a value back
  gives exactly the stored float. A missing value is an empty field, never 0 or "NA".
* Instants are UTC, ISO 8601 with a ``Z`` (``2024-03-31T08:00:00Z``); the started and submitted
  instants are repeated in the participant's own time zone with the offset then in force
  (``2024-03-31T10:00:00+02:00``), because "the morning after infusion" is a local notion.
* ``days_from_<anchor>`` counts local calendar days from the anchor day (Day 0) to the day the
  questionnaire was submitted (else the planned day) -- the protocol's "Day 7" -- so a change
  to or from daylight saving time in between does not shift it by one.
* CSV is UTF-8 without a byte-order mark, RFC 4180 (``\\r\\n`` line ends, quoting only when
  needed), one header row; an export without rows is the header alone.

Writers stream: memory stays constant whatever the number of records.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, BinaryIO, TYPE_CHECKING
from zoneinfo import ZoneInfo


from pro_app.domain.errors import ValidationError
from pro_app.domain.instruments import Instrument, InstrumentText
from pro_app.domain.records import AssessmentRecord, PackedValues
from pro_app.domain.schedule import ANCHOR_KINDS
from pro_app.domain.states import AssessmentMode, AssessmentStatus
from pro_app.exports import ExportContext

if TYPE_CHECKING:  # openpyxl itself is imported when a workbook is written (it slows every start)
    from openpyxl.worksheet._write_only import WriteOnlyWorksheet

__all__ = [
    "CONTEXT_COLUMNS",
    "DEMO_NOTICE",
    "context_columns",
    "data_dictionary",
    "english_text",
    "wide_columns",
    "write_items_long",
    "write_scores_long",
    "write_wide_csv",
    "write_xlsx",
]

DEMO_NOTICE = (
    "Demo wording: questionnaire texts were pro-app's demonstration wording, "
    "not the licensed EORTC text"
)
"""Said in the workbook whenever any exported assessment was answered on the demo wording."""

#: Column name, type, description, allowed values -- one data dictionary row.
DictionaryRow = tuple[str, str, str, str]

_STATUSES = ", ".join(status.value for status in AssessmentStatus)
_MODES = ", ".join(mode.value for mode in AssessmentMode)

#: The context columns every row starts with (the anchor columns follow ``occurrence``...
#: see :func:`context_columns` for the full order).
CONTEXT_COLUMNS: tuple[DictionaryRow, ...] = (
    ("study", "text", "Study code.", ""),
    ("site", "text", "Site (hospital) where the participant is enrolled.", ""),
    ("arm", "text", "Arm / dose group code; empty when the participant has none.", ""),
    ("subject_code", "text", "Pseudonymous participant code.", ""),
    ("timezone", "text", "The participant's time zone (IANA name); local times and days are counted in it.", ""),
    ("assessment_id", "integer", "pro-app's identifier of the assessment; joins the long and wide files.", ""),
    ("timepoint", "text", "Timepoint code from the study's schedule.", ""),
    ("timepoint_label", "text", "Timepoint name as shown to staff.", ""),
    ("occurrence", "integer", "Repetition of a recurring timepoint: 0 for the first (or only) one.", ">= 0"),
    ("planned_date", "date", "Planned day of the assessment, in the participant's local calendar (ISO 8601).", ""),
    ("window_opens_utc", "datetime (UTC)", "When the answering window opened (UTC, ISO 8601).", ""),
    ("window_closes_utc", "datetime (UTC)", "When the answering window closed (UTC, ISO 8601).", ""),
    ("started_at_utc", "datetime (UTC)", "When the participant started answering (UTC); empty if never started.", ""),
    ("started_at_local", "text (local datetime)",
     "The same instant in the participant's time zone, ISO 8601 with its UTC offset.", ""),
    ("submitted_at_utc", "datetime (UTC)", "When the questionnaire was submitted (UTC); empty if not submitted.", ""),
    ("submitted_at_local", "text (local datetime)",
     "The same instant in the participant's time zone, ISO 8601 with its UTC offset.", ""),
)
_TRAILING_COLUMNS: tuple[DictionaryRow, ...] = (
    ("status", "text", "Assessment status at export time.", _STATUSES),
    ("mode", "text", "How it was answered: on the participant's phone, on a clinic tablet, or by interview.", _MODES),
    ("locale", "text", "Language of the questionnaire text shown.", ""),
    ("instrument", "text", "Instrument code.", ""),
    ("instrument_version", "text", "Instrument version.", ""),
    ("text_source", "text",
     "Wording shown: 'demo' = pro-app's demonstration wording, 'licensed' = the official text loaded by the site.",
     "demo, licensed"),
    ("text_checksum", "text", "SHA-256 of the exact text shown (proves which wording the participant saw).", ""),
    ("scoring_algorithm", "text", "Version of the scoring rules that computed the scores; empty when not scored.", ""),
)


def _anchor_column(kind: str) -> DictionaryRow:
    return (
        f"days_from_{kind}",
        "integer",
        f"Local calendar days from the {kind} day (Day 0) to the day submitted, else the planned day; "
        f"empty when the {kind} date is not known.",
        "",
    )


def context_columns() -> tuple[DictionaryRow, ...]:
    """The columns every exported row starts with, in order."""
    return CONTEXT_COLUMNS + tuple(_anchor_column(kind) for kind in ANCHOR_KINDS) + _TRAILING_COLUMNS


def wide_columns(instrument: Instrument) -> tuple[str, ...]:
    """Header of the wide table: context, then items and scores in the instrument's order."""
    return tuple(row[0] for row in context_columns()) + instrument.item_ids + instrument.score_codes


_ITEM_COLUMNS: tuple[DictionaryRow, ...] = (
    ("item", "text", "Item identifier.", ""),
    ("item_number", "integer", "Position of the item on the form.", ""),
    ("value", "integer", "The answer (response value).", ""),
    ("response_label", "text", "English label of the answer; empty for unlabelled values.", ""),
    ("answered_at_utc", "datetime (UTC)", "When the answer was last saved (UTC).", ""),
)
_SCORE_COLUMNS: tuple[DictionaryRow, ...] = (
    ("scale", "text", "Scale or summary score code.", ""),
    ("scale_kind", "text", "functional, symptom, global or summary.", "functional, symptom, global, summary"),
    ("value", "number", "Score 0-100 at full precision; empty when the missing-data rule leaves it unscored.", "0-100"),
)

_KIND_DIRECTION = {
    "functional": "higher = better functioning",
    "symptom": "higher = more symptoms / problems",
    "global": "higher = better global health status",
}


def data_dictionary(instrument: Instrument, text: InstrumentText | None) -> list[DictionaryRow]:
    """One row per column of the wide table: name, type, description, allowed values.

    Item descriptions quote ``text`` (the wording the dictionary is written in; ``None`` gives
    descriptions without wording) and list the response labels of the item's response set.
    """
    rows = list(context_columns())
    for item in instrument.items:
        response_set = instrument.response_set(item.response_set)
        wording = text.items.get(item.id, "") if text is not None else ""
        recall = "past week" if item.recall == "past_week" else "no recall period"
        description = f"Item {item.number} ({recall})" + (f": {wording}" if wording else ".")
        labels = text.response_labels.get(response_set.code, {}) if text is not None else {}
        allowed = f"{response_set.minimum}-{response_set.maximum}"
        if labels:
            allowed += " (" + "; ".join(f"{value} = {label}" for value, label in labels.items()) + ")"
        rows.append((item.id, "integer", description, allowed + "; empty = not answered"))
    for scale in instrument.scales:
        items = ", ".join(scale.items)
        rule = (f"scored when at least {scale.min_answered} of its {len(scale.items)} items are answered"
                if len(scale.items) > 1 else "scored when its item is answered")
        description = f"{scale.name} ({scale.kind} scale; items {items}; {rule})."
        rows.append((scale.code, "number", description, f"0-100, {_KIND_DIRECTION[scale.kind]}; empty = not scored"))
    for summary in instrument.summary_scores:
        parts = ", ".join(f"100 - {code}" if code in summary.reversed else code for code in summary.scales)
        rule = "empty unless every component is scored" if summary.require_all else "mean of the scored components"
        description = f"{summary.name}: mean of {parts}."
        rows.append((summary.code, "number", description, f"0-100, higher = better; {rule}"))
    return rows


# --------------------------------------------------------------------------- cell values


#: Text of 0-99 as two digits, and of years as four: instants are written by looking up the
#: text of their fields, about three times faster than ``%02d`` formatting (which was a sixth
#: of an export's work: the wide CSV writes seven instants per row, the long items file one
#: per answer).
_TWO_DIGITS = tuple(f"{number:02d}" for number in range(100))


class _Years(dict[int, str]):
    def __missing__(self, year: int) -> str:
        text = self[year] = f"{year:04d}"  # at most 9,999 entries
        return text


_YEARS = _Years()


def _utc(instant: datetime | None) -> str:
    """The instant in UTC, ISO 8601 to the second with a ``Z`` (what
    ``isoformat(timespec="seconds")`` gives, with ``Z`` for ``+00:00``)."""
    if instant is None:
        return ""
    if instant.tzinfo is not timezone.utc:
        instant = instant.astimezone(timezone.utc)
    two = _TWO_DIGITS
    return (
        f"{_YEARS[instant.year]}-{two[instant.month]}-{two[instant.day]}"
        f"T{two[instant.hour]}:{two[instant.minute]}:{two[instant.second]}Z"
    )


def _local(instant: datetime | None, zone: ZoneInfo) -> str:
    """The instant in ``zone`` with the offset then in force (see :func:`_with_offset`)."""
    return "" if instant is None else _with_offset(instant.astimezone(zone))


def _with_offset(local: datetime) -> str:
    """A local instant as ``isoformat(timespec="seconds")`` writes it, written as :func:`_utc`
    writes its fields."""
    two = _TWO_DIGITS
    return (
        f"{_YEARS[local.year]}-{two[local.month]}-{two[local.day]}"
        f"T{two[local.hour]}:{two[local.minute]}:{two[local.second]}{_offset_text(local.utcoffset())}"
    )


@lru_cache(maxsize=512)
def _offset_text(offset: timedelta | None) -> str:
    """An offset as ``isoformat`` writes it (``+02:00``; seconds only for historical offsets
    that have them). A time zone database holds a few hundred distinct offsets."""
    if offset is None:
        return ""
    return datetime(2000, 1, 1, tzinfo=timezone(offset)).isoformat(timespec="seconds")[19:]


def _day(local: datetime) -> str:
    """The calendar day of a local instant, ``YYYY-MM-DD``."""
    return f"{_YEARS[local.year]}-{_TWO_DIGITS[local.month]}-{_TWO_DIGITS[local.day]}"


class _AnchorDays:
    """Days from each anchor; the anchors' local days are remembered per participant (an
    export lists each participant many times, and converting instants is a large share of
    the work per row)."""

    def __init__(self, limit: int = 50_000) -> None:
        self._days: dict[tuple[int, str], tuple[Mapping[str, datetime], list[date | None]]] = {}
        self._limit = limit

    def days_from(self, record: AssessmentRecord, zone: ZoneInfo, reference: date | None = None) -> list[int | None]:
        """Per anchor kind: local calendar days from the anchor day to the reference day (the
        local day of the submission, else of the planned instant: pass it if you have it);
        ``None`` when the anchor is not known."""
        key = (record.participant_id, record.timezone)
        anchors = record.anchors
        cached = self._days.get(key)
        if cached is not None and (cached[0] is anchors or cached[0] == anchors):
            anchor_days = cached[1]
        else:
            if len(self._days) >= self._limit:
                self._days.clear()
            anchor_days = [
                anchors[kind].astimezone(zone).date() if kind in anchors else None for kind in ANCHOR_KINDS
            ]
            self._days[key] = (anchors, anchor_days)
        if reference is None:
            reference = (record.submitted_at or record.planned_at).astimezone(zone).date()
        return [None if day is None else (reference - day).days for day in anchor_days]


class _Memo(dict[Any, str]):
    """CSV text of values that recur on every row (site names, codes, answer values, score
    values), converted once: conversion is most of the cost of writing a row. ``None`` is the
    empty field. Bounded: cleared when it grows past ``limit`` entries."""

    def __init__(self, convert: Callable[[Any], str], limit: int = 100_000) -> None:
        super().__init__({None: ""})
        self._convert = convert
        self._limit = limit

    def __missing__(self, value: Any) -> str:
        if len(self) >= self._limit:
            self.clear()
            self[None] = ""
        text = self[value] = self._convert(value)
        return text


def _quoted(text: str) -> str:
    """RFC 4180: a field holding a comma, a double quote or a line break is enclosed in
    double quotes, and its double quotes are doubled (as the csv module's QUOTE_MINIMAL)."""
    if _NEEDS_QUOTES.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


_NEEDS_QUOTES = re.compile(r'[",\r\n]')


class _CsvRows:
    """Rows of one CSV file, written as RFC 4180 text (``\r\n`` line ends, minimal quoting).

    Built by hand rather than with ``csv.writer``: an export writes millions of fields, and
    joining already converted text is several times faster than the csv module's per-field
    checks. Every field passes through :meth:`text` (quoted when needed) or is a number or a
    timestamp, which never needs quoting.
    """

    def __init__(self, out: io.TextIOWrapper) -> None:
        self._out = out
        self.text = _Memo(_quoted)
        self.integer = _Memo(str)
        #: ``repr`` is the shortest text that reads back as exactly the same float.
        self.number = _Memo(lambda value: repr(float(value)))
        self.anchor_days = _AnchorDays()
        self._pending: list[str] = []

    def write(self, fields: Iterable[str]) -> None:
        self._pending.append(",".join(fields))
        if len(self._pending) >= 500:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._out.write("\r\n".join(self._pending) + "\r\n")
            self._pending.clear()

    def context(self, record: AssessmentRecord) -> list[str]:
        """The context columns (see :func:`context_columns` for the order)."""
        text = self.text
        integer = self.integer
        zone = ZoneInfo(record.timezone)  # zoneinfo caches instances per key
        planned = record.planned_at.astimezone(zone)
        started = record.started_at
        submitted = record.submitted_at
        local_submitted = None if submitted is None else submitted.astimezone(zone)
        reference = (planned if local_submitted is None else local_submitted).date()
        return [
            text[record.study],
            text[record.site],
            text[record.arm],
            text[record.subject_code],
            text[record.timezone],
            str(record.assessment_id),
            text[record.timepoint_code],
            text[record.timepoint_label],
            integer[record.occurrence],
            _day(planned),
            _utc(record.window_opens_at),
            _utc(record.window_closes_at),
            _utc(started),
            _local(started, zone),
            _utc(submitted),
            "" if local_submitted is None else _with_offset(local_submitted),
            *map(integer.__getitem__, self.anchor_days.days_from(record, zone, reference)),
            text[record.status],
            text[record.mode],
            text[record.locale],
            text[record.instrument_code],
            text[record.instrument_version],
            text[record.text_source],
            text[record.text_checksum],
            text[record.scoring_algorithm],
        ]


@contextmanager
def _csv_rows(out: BinaryIO, header: Iterable[str]) -> Iterator[_CsvRows]:
    """CSV rows over the caller's binary stream, which is left open: the text layer is
    detached, not closed (closing it would close the caller's stream too)."""
    text = io.TextIOWrapper(out, encoding="utf-8", newline="")
    try:
        rows = _CsvRows(text)
        rows.write(map(_quoted, header))
        yield rows
        rows.flush()
    finally:
        text.flush()
        text.detach()


def _header(extra: Sequence[DictionaryRow]) -> list[str]:
    return [row[0] for row in context_columns()] + [row[0] for row in extra]


def english_text(context: ExportContext) -> InstrumentText | None:
    """The wording labels are written in: English, else the first text the context holds."""
    if "en" in context.texts:
        return context.texts["en"]
    return next(iter(context.texts.values()), None)


def write_items_long(records: Iterable[AssessmentRecord], out: BinaryIO, context: ExportContext) -> int:
    """One row per answered item, in form order; returns the number of rows."""
    instrument = context.instrument
    text = english_text(context)
    labels: dict[str, dict[int, str]] = {}
    for item in instrument.items:
        labels[item.id] = text.response_labels.get(item.response_set, {}) if text is not None else {}
    numbers = {item.id: str(item.number) for item in instrument.items}
    count = 0
    with _csv_rows(out, _header(_ITEM_COLUMNS)) as rows:
        for record in records:
            if not record.answers:
                continue
            context_fields = rows.context(record)
            for item_id in _ordered(record.answers, instrument.item_ids):
                value = record.answers[item_id]
                rows.write(context_fields + [
                    rows.text[item_id],
                    numbers.get(item_id, ""),
                    rows.integer[value],
                    rows.text[labels.get(item_id, {}).get(value)],
                    _utc(record.answered_at.get(item_id)),
                ])
                count += 1
    return count


def write_scores_long(records: Iterable[AssessmentRecord], out: BinaryIO, context: ExportContext) -> int:
    """One row per stored score (an unscorable one has an empty value); returns the row count."""
    instrument = context.instrument
    kinds: dict[str, str] = {**instrument.scale_kinds, **{s.code: "summary" for s in instrument.summary_scores}}
    count = 0
    with _csv_rows(out, _header(_SCORE_COLUMNS)) as rows:
        for record in records:
            if not record.scores:
                continue
            context_fields = rows.context(record)
            for code in _ordered(record.scores, instrument.score_codes):
                rows.write(context_fields + [rows.text[code], rows.text[kinds.get(code)], rows.number[record.scores[code]]])
                count += 1
    return count


def write_wide_csv(records: Iterable[AssessmentRecord], out: BinaryIO, context: ExportContext) -> int:
    """One row per assessment: context, q1..qN, then the scores; empty = missing."""
    item_ids = context.instrument.item_ids
    score_codes = context.instrument.score_codes
    count = 0
    with _csv_rows(out, wide_columns(context.instrument)) as rows:
        integer = rows.integer.__getitem__
        number = rows.number.__getitem__
        for record in records:
            fields = rows.context(record)
            answers, scores = record.answers, record.scores
            # Values straight from a result row are already this file's text, in this order.
            if type(answers) is PackedValues and answers.order == item_ids:
                fields.append(answers.text)
            else:
                fields += map(integer, map(answers.get, item_ids))
            if type(scores) is PackedValues and scores.order == score_codes:
                fields.append(scores.text)
            else:
                fields += map(number, map(scores.get, score_codes))
            rows.write(fields)
            count += 1
    return count


def _ordered(present: Mapping[str, object], order: Sequence[str]) -> list[str]:
    """Keys in the instrument's order; any the instrument does not know follow, sorted."""
    known = [key for key in order if key in present]
    if len(known) < len(present):
        known += sorted(set(present) - set(order))
    return known


# --------------------------------------------------------------------------- Excel

#: Excel's row limit, header included.
XLSX_MAX_ROWS = 1_048_576
_UTC_FORMAT = "yyyy-mm-dd hh:mm:ss"
_DATE_FORMAT = "yyyy-mm-dd"
# Characters XML 1.0 cannot carry; openpyxl refuses them, so they are dropped from text cells.
_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


class _Cells:
    """Typed cells of one write-only sheet: real numbers, dates and UTC datetimes; text as text."""

    def __init__(self, sheet: WriteOnlyWorksheet) -> None:
        from openpyxl.cell import WriteOnlyCell

        self.sheet = sheet
        self._cell = WriteOnlyCell

    def text(self, value: str | None) -> object:
        if not value:
            return None
        value = _ILLEGAL.sub("", value)
        if value.startswith("="):  # text, never a formula
            cell = self._cell(self.sheet, value=value)
            cell.data_type = "s"
            return cell
        return value

    def instant(self, value: datetime | None) -> object:
        if value is None:
            return None
        # Excel has no time zones: naive UTC, to the second like the CSV files.
        cell = self._cell(self.sheet, value=value.astimezone(timezone.utc).replace(tzinfo=None, microsecond=0))
        cell.number_format = _UTC_FORMAT
        return cell

    def day(self, value: date) -> object:
        cell = self._cell(self.sheet, value=value)
        cell.number_format = _DATE_FORMAT
        return cell

    def number(self, value: float | None) -> object:
        """A numeric cell holding the float's ``repr``: openpyxl itself would write only 16
        significant digits, and a score must read back as exactly the stored float."""
        if value is None:
            return None
        cell = self._cell(self.sheet, value=repr(float(value)))
        cell.data_type = "n"
        return cell


def _xlsx_row(
    record: AssessmentRecord, cells: _Cells, anchor_days: _AnchorDays, item_ids: Sequence[str], score_codes: Sequence[str]
) -> list[object]:
    zone = ZoneInfo(record.timezone)
    row: list[object] = [
        cells.text(record.study),
        cells.text(record.site),
        cells.text(record.arm),
        cells.text(record.subject_code),
        cells.text(record.timezone),
        record.assessment_id,
        cells.text(record.timepoint_code),
        cells.text(record.timepoint_label),
        record.occurrence,
        cells.day(record.planned_at.astimezone(zone).date()),
        cells.instant(record.window_opens_at),
        cells.instant(record.window_closes_at),
        cells.instant(record.started_at),
        cells.text(_local(record.started_at, zone)),
        cells.instant(record.submitted_at),
        cells.text(_local(record.submitted_at, zone)),
        *anchor_days.days_from(record, zone),
        cells.text(record.status),
        cells.text(record.mode),
        cells.text(record.locale),
        cells.text(record.instrument_code),
        cells.text(record.instrument_version),
        cells.text(record.text_source),
        cells.text(record.text_checksum),
        cells.text(record.scoring_algorithm),
    ]
    row += [record.answers.get(item_id) for item_id in item_ids]
    row += [cells.number(record.scores.get(code)) for code in score_codes]
    return row


def write_xlsx(records: Iterable[AssessmentRecord], out: BinaryIO, context: ExportContext) -> int:
    """The wide table as an Excel workbook, with a data dictionary and an "About" sheet.

    Cells are typed (integer answers, float scores, dates, UTC datetimes); the workbook is
    written in openpyxl's write-only mode, which streams rows to temporary files, so memory
    stays constant. Returns the number of assessment rows.
    """
    instrument = context.instrument
    item_ids = instrument.item_ids
    score_codes = instrument.score_codes
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    data = workbook.create_sheet("Data")
    data.freeze_panes = "A2"
    dictionary = workbook.create_sheet("Data dictionary")
    about = workbook.create_sheet("About")
    cells = _Cells(data)
    anchor_days = _AnchorDays()
    data.append(list(wide_columns(instrument)))
    count = 0
    shown: dict[tuple[str, str, str], int] = {}  # (locale, source, checksum) -> assessments
    for record in records:
        if count + 1 >= XLSX_MAX_ROWS:
            # Stated in English, like other operator-facing limits (an unlikely case for a trial).
            raise ValidationError(
                "%(problem)s", field="format",
                problem=f"More than {XLSX_MAX_ROWS - 1:,} assessments do not fit in an Excel sheet; export CSV instead.",
            )
        data.append(_xlsx_row(record, cells, anchor_days, item_ids, score_codes))
        count += 1
        if record.text_source:
            key = (record.locale or "", record.text_source, record.text_checksum or "")
            shown[key] = shown.get(key, 0) + 1

    text = english_text(context)
    dictionary_cells = _Cells(dictionary)
    dictionary.append(["column", "type", "description", "allowed values"])
    for row in data_dictionary(instrument, text):
        dictionary.append([dictionary_cells.text(part) for part in row])

    about_cells = _Cells(about)
    for label, value in _about_rows(context, count, shown, text):
        about.append([label, about_cells.text(value)])
    workbook.save(out)
    return count


def _about_rows(
    context: ExportContext, count: int, shown: dict[tuple[str, str, str], int], text: InstrumentText | None
) -> Iterator[tuple[str, str]]:
    yield "Generated at (UTC)", _utc(context.generated_at)
    yield "Generated by", context.app_version
    yield "Instrument", f"{context.instrument.code} {context.instrument.version} ({context.instrument.title})"
    yield "Assessments", str(count)
    filters = context.filters.describe()
    if "site_codes" in context.extra:  # the service resolves site ids to the codes people use
        filters["sites"] = context.extra["site_codes"]
    for name, value in filters.items():
        yield f"Filter: {name}", _describe(value)
    yield "Dates and times", (
        "Columns ending _utc are UTC; _local columns are in the participant's time zone with its offset; "
        "planned_date and days_from_* use the participant's local calendar."
    )
    for (locale, source, checksum), n in sorted(shown.items()):
        yield f"Text shown ({locale})", f"{source} wording, sha256 {checksum}: {n} assessment{'s' if n != 1 else ''}"
    if text is not None:
        yield "Dictionary wording", f"{text.locale}: {text.source} (sha256 {text.checksum})"
    if any(source == "demo" for _locale, source, _checksum in shown):
        yield "Notice", DEMO_NOTICE
    elif text is not None and text.source == "demo":
        yield "Notice", "The item wording in the data dictionary is pro-app's demonstration wording, not the licensed EORTC text"


def _describe(value: object) -> str:
    if value is None:
        return "all"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(part) for part in value)
    return str(value)

