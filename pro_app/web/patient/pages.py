"""Rendering and navigation helpers of the patient pages (kept out of the views)."""

from __future__ import annotations

from datetime import datetime

from flask import abort, render_template, request, url_for
from flask_babel import get_locale
from sqlalchemy import select

from pro_app.db.models import Assessment
from pro_app.domain.instruments import Instrument, InstrumentText, Item
from pro_app.extensions import database
from pro_app.services.questionnaire import answers_of, next_assessment
from pro_app.web.patient.context import PatientContext, assessment_for, instrument_and_text
from pro_app.web.patient.forms import AnswerForm, SubmitForm


def locale_code() -> str:
    return str(get_locale() or "en")


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
    assessment: Assessment,
    instrument: Instrument,
    text: InstrumentText,
    item: Item,
    form: AnswerForm,
    *,
    message: str | None = None,
    error: bool = False,
) -> str:
    return render_template(
        "patient/question.html",
        assessment=assessment,
        item=item,
        total=len(instrument.items),
        text=text,
        options=options(instrument, text, item),
        scale_class="numeric" if len(instrument.response_set(item.response_set).labelled) < len(
            instrument.response_set(item.response_set).values
        ) else "labelled",
        form=form,
        message=message,
        error=error,
    )


def render_review(
    assessment: Assessment,
    form: SubmitForm,
    *,
    message: str | None = None,
    error: bool = False,
    confirm_needed: bool = False,
) -> str:
    instrument, text = instrument_and_text(assessment, locale_code())
    answers = answers_of(database.session, assessment)
    rows = []
    for item in instrument.items:
        value = answers.get(item.id)
        labels = text.response_labels.get(item.response_set, {})
        rows.append((item, text.items[item.id], value, labels.get(value) if value is not None else None))
    missing = [item for item in instrument.items if item.id not in answers]
    form.assessment.data = assessment.id
    return render_template(
        "patient/review.html",
        rows=rows,
        missing=missing,
        form=form,
        message=message,
        error=error,
        confirm_needed=confirm_needed,
    )


def already_submitted(context: PatientContext, form: SubmitForm) -> Assessment | None:
    """A replayed submission (double tap, retried request): the assessment it submitted."""
    key = form.key.data
    if not key or len(key) > 64:
        return None
    return database.session.scalars(
        select(Assessment).where(
            Assessment.participant_id == context.participant.id, Assessment.submission_key == key
        )
    ).one_or_none()
