"""Rendering and navigation helpers of the patient pages (kept out of the views)."""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from urllib.parse import urlsplit

from flask import abort, current_app, render_template, request, url_for
from flask_babel import get_locale
from markupsafe import escape

from pro_app.db.models import Assessment
from pro_app.domain.instruments import Instrument, InstrumentText, Item
from pro_app.domain.states import AssessmentStatus
from pro_app.extensions import database
from pro_app.services.questionnaire import OpenAssessment, answers_of, new_request_id, next_assessment
from pro_app.web.patient.context import (
    PatientContext,
    PendingAnswer,
    assessment_for,
    drop_pending_answer,
    instrument_and_text,
    submission_key_for,
)
from pro_app.web.patient.forms import SubmitForm
from pro_app.web.signed import csrf_token


def locale_code() -> str:
    return str(get_locale() or "en")


def wording_for(
    context: PatientContext, assessment: Assessment | OpenAssessment
) -> tuple[Instrument, InstrumentText]:
    """The instrument of the assessment and its wording in the page language (else the study's)."""
    return instrument_and_text(assessment, locale_code(), context.participant.study_locale)


def assessment_or_gone(context: PatientContext, now: datetime, assessment_id: int | None) -> Assessment:
    assessment = assessment_for(context, now)
    if assessment is None or assessment.id != assessment_id:
        abort(409)
    return assessment


def first_unanswered_url(instrument: Instrument, answers: dict[str, int]) -> str:
    for item in instrument.items:
        if item.id not in answers:
            return url_for("patient.question", number=item.number)
    return url_for("patient.review")


def url_after(go: str | None, number: int, total: int) -> str:
    if go == "back":
        return url_for("patient.question", number=number - 1) if number > 1 else url_for("patient.home")
    if go == "review" or number >= total:
        return url_for("patient.review")
    return url_for("patient.question", number=number + 1)


def closed_page(context: PatientContext, now: datetime) -> tuple[str, int]:
    """The questionnaire was submitted or its window closed while the page was open."""
    upcoming = next_assessment(database.session, context.participant, now=now)
    status = 409 if request.method == "POST" else 200
    return render_template("patient/nothing_due.html", upcoming=upcoming, closed=True), status


def options(instrument: Instrument, text: InstrumentText, item: Item) -> list[tuple[int, str | None]]:
    """Answer values with their labels; unlabelled values (2-6 of a 1-7 scale) get None."""
    response_set = instrument.response_set(item.response_set)
    labels = text.response_labels.get(response_set.code, {})
    return [(value, labels.get(value)) for value in response_set.values]


def render_question(
    assessment: Assessment | OpenAssessment,
    instrument: Instrument,
    text: InstrumentText,
    item: Item,
    selected: int | None,
    *,
    message: str | None = None,
    error: bool = False,
    notice: str | None = None,
) -> str:
    """The question page, ``selected`` checked. Every rendering carries a new request id, so
    only a re-post of the very same page can be taken for a repetition of an earlier request.

    A plain question page (no message) comes from :class:`QuestionPageCache`: the same for
    every patient answering this question in this wording and language with this answer
    selected, apart from the CSRF token, the questionnaire's id and the request id."""
    number = item.number
    response_set = instrument.response_set(item.response_set)
    values = {
        "item": item,
        "total": len(instrument.items),
        "text": text,
        "options": options(instrument, text, item),
        "scale_class": "numeric" if len(response_set.labelled) < len(response_set.values) else "labelled",
        "selected": selected,
        "message": message,
        "error": error,
        "notice": notice,
    }
    per_request = {"assessment_id": assessment.id, "request_id": new_request_id()}
    plain = not (message or error or notice) and request.path == url_for("patient.question", number=number)
    if not plain or not QuestionPageCache.enabled():
        return render_template("patient/question.html", **values, **per_request)
    key = (instrument.code, instrument.version, text.locale, text.checksum, locale_code(), number, selected)
    return QuestionPageCache.of_app().page(key, values, {**per_request, "csrf_token": csrf_token()})


class QuestionPageCache:
    """Rendered question pages, per app, with holes for what differs between requests.

    Rendering the page (three templates, its translations, the language menu) was the
    largest part of serving it. What it shows depends only on the key (instrument, wording
    and its checksum, page language, question, answer selected); the CSRF token, the
    questionnaire id and the request id are rendered as markers the first time and filled in
    on every request. ``tests/web/test_question_page_cache.py`` checks that every page served
    from here equals a fresh rendering. Off where templates reload (development).
    """

    #: Pages kept per app: 30 questions x 8 answer states x the offered languages, with room.
    LIMIT = 4096
    _EXTENSION = "pro_question_pages"
    _MARKERS = {name: f"\x00{name}:{secrets.token_hex(8)}\x00" for name in ("csrf_token", "assessment_id", "request_id")}

    def __init__(self) -> None:
        self._pages: dict[tuple[object, ...], list[str]] = {}

    @staticmethod
    def enabled() -> bool:
        return not current_app.jinja_env.auto_reload

    @classmethod
    def of_app(cls) -> QuestionPageCache:
        cache = current_app.extensions.get(cls._EXTENSION)
        if cache is None:
            cache = current_app.extensions[cls._EXTENSION] = cls()
        return cache  # type: ignore[no-any-return]

    def page(self, key: tuple[object, ...], values: dict[str, object], per_request: dict[str, object]) -> str:
        parts = self._pages.get(key)
        if parts is None:
            markers = self._MARKERS
            html = render_template(
                "patient/question.html", **values, assessment_id=markers["assessment_id"],
                request_id=markers["request_id"], csrf_token=lambda: markers["csrf_token"],
            )
            parts = self._split(html)
            if len(self._pages) >= self.LIMIT:
                self._pages.clear()
            self._pages[key] = parts
        # Odd positions hold marker names; escaped as the template would have escaped them.
        return "".join(
            part if index % 2 == 0 else str(escape(per_request[part])) for index, part in enumerate(parts)
        )

    @classmethod
    def _split(cls, html: str) -> list[str]:
        names = {marker: name for name, marker in cls._MARKERS.items()}
        pattern = re.compile("|".join(re.escape(marker) for marker in names))
        parts: list[str] = []
        last = 0
        for found in pattern.finditer(html):
            parts += [html[last:found.start()], names[found.group(0)]]
            last = found.end()
        parts.append(html[last:])
        return parts


def render_review(
    context: PatientContext,
    assessment: Assessment,
    form: SubmitForm,
    *,
    message: str | None = None,
    error: bool = False,
    confirm_needed: bool = False,
) -> str:
    instrument, text = wording_for(context, assessment)
    answers = answers_of(database.session, assessment)
    rows = []
    for item in instrument.items:
        value = answers.get(item.id)
        labels = text.response_labels.get(item.response_set, {})
        rows.append((item, text.items[item.id], value, labels.get(value) if value is not None else None))
    missing = [item for item in instrument.items if item.id not in answers]
    form.assessment.data = assessment.id
    form.request_id.data = form.key.data = submission_key_for(assessment.id)
    return render_template(
        "patient/review.html",
        rows=rows,
        missing=missing,
        form=form,
        message=message,
        error=error,
        confirm_needed=confirm_needed,
    )


def same_origin() -> bool:
    """Whether the browser says this request comes from our own pages.

    Browsers send ``Sec-Fetch-Site`` with form posts (and ``Origin``, which our no-referrer
    policy turns into "null" for forms); an answer is only kept across a failed sign-in check
    when neither names another site, so a page elsewhere cannot plant an answer for a patient
    to confirm. Old browsers that send neither are trusted.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is not None and origin != "null":
        return urlsplit(origin).netloc == request.host
    return True


def pending_question_number(pending: PendingAnswer | None, assessment: Assessment, total: int) -> int | None:
    """The question to show again for a kept answer, or None (and the answer is dropped when
    it cannot belong to this patient's open questionnaire: it is never applied elsewhere)."""
    if pending is None:
        return None
    if (
        pending.assessment_id != assessment.id
        or assessment.status != AssessmentStatus.IN_PROGRESS.value
        or not 1 <= pending.number <= total
    ):
        drop_pending_answer()
        return None
    return pending.number
