"""HL7 FHIR R4: the instrument as a Questionnaire, answers as QuestionnaireResponses, scores as
Observations.

``write_fhir_bundle`` writes a Bundle of type ``collection``: per assessment one
QuestionnaireResponse, followed by one Observation per scored scale (scales the missing-data
rule left unscored are omitted, not sent with a null value). The bundle is written entry by
entry, so memory stays constant however many assessments the export holds.

Conventions (all identifiers are local ``urn:pro-app:...`` URIs; no real identity leaves):

* Questionnaire canonical ``urn:pro-app:questionnaire:<code>:<version>``; items ``q1``..``q30``
  of type ``choice``. A labelled answer value is an ``answerOption.valueCoding`` (system
  ``urn:pro-app:<code>:response:<response set>``, code = the value, display = our label); a
  value without a label (2-6 of items 29-30) is an ``answerOption.valueInteger``. Every option
  carries the value as the standard ``ordinalValue`` extension, for scoring tools.
* A response answer uses the same type as the option it chose: ``valueCoding`` (display in the
  language of the assessment) or ``valueInteger``. Unanswered items are left out.
* ``QuestionnaireResponse.status``: ``completed`` when submitted, ``in-progress`` while open,
  ``stopped`` when missed or cancelled (then it has no items).
* ``subject`` is a logical reference by identifier: system
  ``urn:pro-app:study:<study>:subject``, value = the pseudonymous subject code.
* ``fullUrl`` is ``urn:uuid:<uuid5>`` derived from the study and assessment id (and the scale
  code for Observations), so re-exporting gives the same ids; every Observation's
  ``derivedFrom`` points at its response's ``fullUrl``.
* Times are in the participant's local time with UTC offset.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, BinaryIO
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pro_app.domain.instruments import Instrument, InstrumentText, Item
from pro_app.domain.records import AssessmentRecord
from pro_app.domain.states import AssessmentStatus
from pro_app.exports import ExportContext

JSON = dict[str, Any]

ORDINAL_VALUE = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
UCUM = "http://unitsofmeasure.org"
TEXT_SOURCE_EXTENSION = "urn:pro-app:extension:text-source"
TEXT_CHECKSUM_EXTENSION = "urn:pro-app:extension:text-checksum"
TIMEPOINT_EXTENSION = "urn:pro-app:extension:timepoint"
TIMEPOINT_SYSTEM = "urn:pro-app:timepoint"

#: Namespace of every uuid5 this export derives (itself derived, so it is stable and documented).
UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:pro-app:fhir")

_RESPONSE_STATUS: Mapping[str, str] = {
    AssessmentStatus.COMPLETED.value: "completed",
    AssessmentStatus.SCHEDULED.value: "in-progress",
    AssessmentStatus.OPEN.value: "in-progress",
    AssessmentStatus.IN_PROGRESS.value: "in-progress",
    AssessmentStatus.MISSED.value: "stopped",
    AssessmentStatus.CANCELLED.value: "stopped",
}


# --------------------------------------------------------------------------- identifiers


def questionnaire_url(instrument: Instrument) -> str:
    return f"urn:pro-app:questionnaire:{instrument.code}:{instrument.version}"


def response_system(instrument: Instrument, response_set: str) -> str:
    return f"urn:pro-app:{instrument.code}:response:{response_set}"


def scale_system(instrument: Instrument) -> str:
    return f"urn:pro-app:{instrument.code}:scale"


def subject_system(study: str) -> str:
    return f"urn:pro-app:study:{quote(study, safe='')}:subject"


def response_uuid(record: AssessmentRecord) -> uuid.UUID:
    return uuid.uuid5(UUID_NAMESPACE, f"{record.study}/assessment/{record.assessment_id}")


def observation_uuid(record: AssessmentRecord, score_code: str) -> uuid.UUID:
    return uuid.uuid5(UUID_NAMESPACE, f"{record.study}/assessment/{record.assessment_id}/score/{score_code}")


# --------------------------------------------------------------------------- Questionnaire


def questionnaire_resource(instrument: Instrument, text: InstrumentText) -> JSON:
    """The instrument as an R4 Questionnaire, worded with ``text`` (one locale).

    ``copyright`` says whose wording it is: pro-app's demonstration wording, or official text
    a site loaded under its licence.
    """
    items = []
    for item in instrument.items:
        items.append({
            "linkId": item.id,
            "prefix": f"{item.number}.",
            "text": text.items[item.id],
            "type": "choice",
            "required": False,
            "answerOption": [_answer_option(instrument, item, value, text) for value in _values(instrument, item)],
        })
    return {
        "resourceType": "Questionnaire",
        "id": re.sub(r"[^A-Za-z0-9.-]", "-", f"pro-app-{instrument.code}-{instrument.version}")[:64],
        "extension": _text_extensions(text.source, text.checksum),
        "url": questionnaire_url(instrument),
        "version": instrument.version,
        "name": "PRO_APP_" + re.sub(r"[^A-Za-z0-9_]", "_", f"{instrument.code}_{instrument.version}").upper(),
        "title": text.title,
        "status": "active",
        "subjectType": ["Patient"],
        "language": _bcp47(text.locale),
        "publisher": "pro-app",
        "description": text.instructions,
        "copyright": _copyright(instrument, text),
        "item": items,
    }


def write_fhir_questionnaire(out: BinaryIO, context: ExportContext) -> int:
    """Write the Questionnaire (in the export's default language) as JSON; return 1."""
    text = _default_text(context)
    out.write(_dumps(questionnaire_resource(context.instrument, text), indent=2).encode("utf-8"))
    out.write(b"\n")
    return 1


def _values(instrument: Instrument, item: Item) -> tuple[int, ...]:
    return instrument.response_set(item.response_set).values


def _answer_option(instrument: Instrument, item: Item, value: int, text: InstrumentText) -> JSON:
    option: JSON = {"extension": [{"url": ORDINAL_VALUE, "valueDecimal": value}]}
    option.update(_answer_value(instrument, item, value, text, None))
    return option


def _answer_value(
    instrument: Instrument, item: Item, value: int, text: InstrumentText | None, fallback: InstrumentText | None
) -> JSON:
    """``valueCoding`` for a labelled value (display from ``text``, else ``fallback``),
    ``valueInteger`` for a value the instrument leaves unlabelled."""
    if value not in instrument.response_set(item.response_set).labelled:
        return {"valueInteger": value}
    coding: JSON = {"system": response_system(instrument, item.response_set), "code": str(value)}
    for candidate in (text, fallback):
        label = candidate.response_labels.get(item.response_set, {}).get(value) if candidate else None
        if label is not None:
            coding["display"] = label
            break
    return {"valueCoding": coding}


def _copyright(instrument: Instrument, text: InstrumentText) -> str:
    owner = "the EORTC Quality of Life Group" if instrument.title.upper().startswith("EORTC") else "its copyright holder"
    if text.source == "demo":
        return (
            f"Item and response wording in this resource is pro-app's own demonstration wording, not the "
            f"official {instrument.title} text or any official translation. The official questionnaire is "
            f"copyrighted by {owner}; using it, in any form including electronic, requires a licence."
        )
    return (
        f"Official {instrument.title} wording, loaded by the site under its licence from {owner}. "
        "Copyrighted: do not redistribute outside the terms of that licence."
    )


# --------------------------------------------------------------------------- Bundle


def write_fhir_bundle(records: Iterable[AssessmentRecord], out: BinaryIO, context: ExportContext) -> int:
    """Write a ``collection`` Bundle entry by entry; return the number of resources written."""
    instrument = context.instrument
    fallback = _default_text(context)
    generated = _aware(context.generated_at)
    header = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(UUID_NAMESPACE, f"{context.filters.study}/bundle/{generated.isoformat()}")),
        "type": "collection",
        "timestamp": generated.isoformat(),
    }
    # The opening is the header object without its closing brace; entries follow one per line.
    out.write(_dumps(header)[:-1].encode("utf-8") + b',"entry":[')
    count = 0
    for record in records:
        text = context.texts.get(record.locale or "") or fallback
        resources = [response_resource(record, instrument, text, fallback)]
        resources.extend(observation_resources(record, instrument))
        for resource in resources:
            entry = {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource}
            out.write((b"\n" if count == 0 else b",\n") + _dumps(entry).encode("utf-8"))
            count += 1
    out.write(b"\n]}\n")
    return count


def response_resource(
    record: AssessmentRecord, instrument: Instrument, text: InstrumentText | None, fallback: InstrumentText | None
) -> JSON:
    """One assessment as a QuestionnaireResponse (answered items only, in form order)."""
    resource: JSON = {
        "resourceType": "QuestionnaireResponse",
        "id": str(response_uuid(record)),
    }
    extensions = [{
        "url": TIMEPOINT_EXTENSION,
        "valueCoding": {
            "system": TIMEPOINT_SYSTEM,
            "code": record.timepoint_code if record.occurrence == 0 else f"{record.timepoint_code}:{record.occurrence + 1}",
            "display": record.timepoint_label,
        },
    }]
    if record.text_source:
        extensions.extend(_text_extensions(record.text_source, record.text_checksum))
    resource["extension"] = extensions
    resource["identifier"] = {
        "system": f"urn:pro-app:study:{quote(record.study, safe='')}:assessment",
        "value": str(record.assessment_id),
    }
    resource["questionnaire"] = questionnaire_url(instrument)
    resource["status"] = _RESPONSE_STATUS.get(record.status, "in-progress")
    resource["subject"] = _subject(record)
    authored = _authored(record)
    if authored is not None:
        resource["authored"] = _local(authored, record.timezone)
    if record.locale:
        resource["language"] = _bcp47(record.locale)
    items = []
    for item in instrument.items:
        value = record.answers.get(item.id)
        if value is not None:
            items.append({"linkId": item.id, "answer": [_answer_value(instrument, item, value, text, fallback)]})
    if items:
        resource["item"] = items
    return resource


def observation_resources(record: AssessmentRecord, instrument: Instrument) -> list[JSON]:
    """One Observation per scored scale or summary, in the instrument's score order."""
    names = {s.code: s.name for s in instrument.scales} | {s.code: s.name for s in instrument.summary_scores}
    derived_from = [{"reference": f"urn:uuid:{response_uuid(record)}"}]
    authored = _authored(record)
    resources = []
    for code in instrument.score_codes:
        value = record.scores.get(code)
        if value is None or not math.isfinite(value):
            continue
        resource: JSON = {
            "resourceType": "Observation",
            "id": str(observation_uuid(record, code)),
            "status": "final" if record.complete else "preliminary",
            "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "survey", "display": "Survey"}]}],
            "code": {
                "coding": [{"system": scale_system(instrument), "code": code, "display": names[code]}],
                "text": names[code],
            },
            "subject": _subject(record),
        }
        if authored is not None:
            resource["effectiveDateTime"] = _local(authored, record.timezone)
        resource["valueQuantity"] = {"value": value, "unit": "score", "system": UCUM, "code": "{score}"}
        if record.scoring_algorithm:
            resource["method"] = {"text": record.scoring_algorithm}
        resource["derivedFrom"] = derived_from
        resources.append(resource)
    return resources


def _subject(record: AssessmentRecord) -> JSON:
    return {"type": "Patient", "identifier": {"system": subject_system(record.study), "value": record.subject_code}}


def _authored(record: AssessmentRecord) -> datetime | None:
    """Submission time; for an unsubmitted response, its latest answer (FHIR: last changed)."""
    if record.submitted_at is not None:
        return record.submitted_at
    return max(record.answered_at.values(), default=None)


def _text_extensions(source: str, checksum: str | None) -> list[JSON]:
    extensions: list[JSON] = [{"url": TEXT_SOURCE_EXTENSION, "valueCode": source}]
    if checksum:
        extensions.append({"url": TEXT_CHECKSUM_EXTENSION, "valueString": checksum})
    return extensions


# --------------------------------------------------------------------------- plumbing


def _default_text(context: ExportContext) -> InstrumentText:
    preferred = context.extra.get("locale")
    if isinstance(preferred, str) and preferred in context.texts:
        return context.texts[preferred]
    if "en" in context.texts:
        return context.texts["en"]
    if not context.texts:
        raise ValueError("the export context holds no instrument text")
    return context.texts[min(context.texts)]


def _bcp47(locale: str) -> str:
    return locale.replace("_", "-")


def _dumps(obj: object, indent: int | None = None) -> str:
    separators = (",", ": ") if indent else (",", ":")
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, indent=indent, separators=separators)


def _local(moment: datetime, timezone: str) -> str:
    try:
        zone: ZoneInfo = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return _aware(moment).astimezone(zone).isoformat(timespec="seconds")


def _aware(moment: datetime) -> datetime:
    """Instants are stored in UTC; a naive one (e.g. from SQLite) is read as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


__all__ = (
    "UUID_NAMESPACE",
    "observation_resources",
    "questionnaire_resource",
    "questionnaire_url",
    "response_resource",
    "write_fhir_bundle",
    "write_fhir_questionnaire",
)
