"""The export formats offered to analysts, by the name the CLI and the web use.

Pure data: no database, no request. The standard formats (SDTM QS, FHIR, REDCap) are imported
only when one is written, so this module (and the tabular formats) work without them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import BinaryIO

from pro_app.domain.records import AssessmentRecord
from pro_app.exports import ExportContext, ExportFormat
from pro_app.exports.tabular import write_items_long, write_scores_long, write_wide_csv, write_xlsx

CSV = "text/csv"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
ZIP = "application/zip"
FHIR_JSON = "application/fhir+json"


def _sdtm_qs(records: Iterable[AssessmentRecord], out: BinaryIO, context: ExportContext) -> int:
    from pro_app.exports.sdtm import write_sdtm_qs

    written: int = write_sdtm_qs(records, out, context)
    return written


def _fhir(records: Iterable[AssessmentRecord], out: BinaryIO, context: ExportContext) -> int:
    from pro_app.exports.fhir import write_fhir_bundle

    written: int = write_fhir_bundle(records, out, context)
    return written


def _redcap(records: Iterable[AssessmentRecord], out: BinaryIO, context: ExportContext) -> int:
    from pro_app.exports.redcap import write_redcap

    written: int = write_redcap(records, out, context)
    return written


#: Formats that never write when each item was answered: the records they get need not carry
#: those 30 instants per assessment, which are a large share of the reading time.
WITHOUT_ANSWER_TIMES: frozenset[str] = frozenset({"wide", "scores-long", "xlsx"})

FORMATS: dict[str, ExportFormat] = {
    export_format.name: export_format
    for export_format in (
        ExportFormat("items-long", CSV, ".csv", write_items_long,
                     "CSV, one row per answered item, with its English response label."),
        ExportFormat("scores-long", CSV, ".csv", write_scores_long,
                     "CSV, one row per scale or summary score at full precision."),
        ExportFormat("wide", CSV, ".csv", write_wide_csv,
                     "CSV, one row per assessment: items q1..q30 then the scores."),
        ExportFormat("xlsx", XLSX, ".xlsx", write_xlsx,
                     "Excel workbook: the wide table, a data dictionary and an About sheet."),
        ExportFormat("sdtm-qs", ZIP, ".zip", _sdtm_qs,
                     "CDISC SDTM QS domain (ZIP: data and variable list)."),
        ExportFormat("fhir", FHIR_JSON, ".json", _fhir,
                     "HL7 FHIR Bundle (JSON) of the questionnaire responses."),
        ExportFormat("redcap", ZIP, ".zip", _redcap,
                     "REDCap data dictionary and records (ZIP)."),
    )
}
