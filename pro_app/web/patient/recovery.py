"""Keeping what the patient entered when a page's CSRF token or their sign-in has expired.

The server is the first durable record of an answer, so a refused request must never be
where an answer disappears:

- a question posted with a missing or expired CSRF token while the patient is still signed
  in is shown again, the posted answer selected, with a fresh token and a request to
  confirm (400: nothing was saved);
- a question posted after the sign-in ended keeps the answer in the signed session, never in
  the database (nobody is identified), and asks the patient to open their link or type their
  code again; back on that question the answer is selected and confirmed by moving on (401);
- the page script's background save gets a JSON answer it can act on: a fresh CSRF token to
  send the same request again, or "session ended" so it keeps the answer queued;
- the review page is shown again after an expired token, its submission key unchanged.
"""

from __future__ import annotations

from datetime import datetime

from flask import redirect, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from pro_app.db.models import Assessment
from pro_app.db.types import utcnow
from pro_app.domain.instruments import Instrument, Item
from pro_app.domain.states import AssessmentStatus
from pro_app.extensions import database
from pro_app.services.questionnaire import OpenAssessment, answers_of
from pro_app.web import errors
from pro_app.web.patient import pages
from pro_app.web.patient.context import (
    assessment_for,
    drop_pending_answer,
    keep_pending_answer,
    load_patient,
    pending_answer,
)
from pro_app.web.patient.forms import QuestionPost, SubmitForm, read_question_post
from pro_app.web.signed import csrf_token

JsonResult = tuple[dict[str, object], int]
RenderResult = str | tuple[str, int] | Response

#: Bounds of what is worth keeping from an unverified post (the real check comes on saving).
_MAX_NUMBER = 1000
_MAX_VALUE = 100


def json_error(message: str, code: str, status: int) -> JsonResult:
    """An error of the background save. ``code`` tells the page script what to do:
    ``session_ended`` and ``csrf`` keep the answer queued, the others drop it."""
    return {"error": message, "code": code}, status


def session_ended_json() -> JsonResult:
    return json_error(
        _("Your session has ended. Your answers are kept on this device: open your personal link again, "
          "or enter your personal code, and they will be sent."),
        "session_ended",
        401,
    )


def csrf_failed() -> RenderResult | JsonResult:
    """The patient blueprint's answer to a failed CSRF check, by page."""
    endpoint = request.endpoint
    if endpoint == "patient.save_answer":
        return _answer_api_not_verified()
    if endpoint == "patient.question" and request.method == "POST" and request.view_args:
        return _question_not_verified(int(request.view_args["number"]))
    if endpoint == "patient.submit":
        return _submission_not_verified()
    return errors.csrf_failure()


def _answer_api_not_verified() -> JsonResult:
    if load_patient(utcnow()) is None:
        return session_ended_json()
    body, status = json_error(
        _("The page had expired. Your answer is kept and will be sent again."), "csrf", 400
    )
    # The script sends the same request (same request id) again with this token.
    body["csrf_token"] = csrf_token()
    return body, status


def _question_not_verified(number: int) -> RenderResult:
    now = utcnow()
    post = read_question_post()  # the page shown carries a fresh token
    context = load_patient(now)
    if context is None:
        return session_ended(number, post, now)
    if not pages.same_origin():
        return errors.csrf_failure()
    assessment = assessment_for(context, now)
    if assessment is None or post.assessment != assessment.id:
        return pages.closed_page(context, now)
    instrument, text = pages.wording_for(context, assessment)
    if not 1 <= number <= len(instrument.items) or assessment.status != AssessmentStatus.IN_PROGRESS.value:
        return redirect(url_for("patient.home"), code=303)
    item = instrument.items[number - 1]
    allowed = instrument.response_set(item.response_set).values
    value = post.value
    selected = value if value in allowed else answers_of(database.session, assessment).get(item.id)
    notice = _("This page had expired, so your answer has not been saved yet. "
               "Please check it and press the button again to save it.")
    return pages.render_question(assessment, instrument, text, item, selected, notice=notice), 400


def _submission_not_verified() -> RenderResult:
    now = utcnow()
    context = load_patient(now)
    if context is None:
        return render_template("patient/session_ended.html", kept=False, number=None), 401
    if not pages.same_origin():
        return errors.csrf_failure()
    assessment = assessment_for(context, now)
    if assessment is None:
        return pages.closed_page(context, now)
    form = SubmitForm()  # read, never validated: its CSRF field renders a fresh token
    message = _("This page had expired, so your answers have not been submitted yet. Please submit them again.")
    return pages.render_review(context, assessment, form, message=message), 400


def session_ended(number: int, post: QuestionPost, now: datetime) -> tuple[str, int]:
    """A question posted without a sign-in: keep its answer for the patient to confirm later."""
    value = post.value
    assessment_id = post.assessment
    kept = (
        value is not None
        and assessment_id is not None
        and 1 <= number <= _MAX_NUMBER
        and 0 <= value <= _MAX_VALUE
        and pages.same_origin()
    )
    if kept and value is not None and assessment_id is not None:
        keep_pending_answer(assessment_id, number, value, now)
    return render_template("patient/session_ended.html", kept=kept, number=number), 401


def offer_pending_answer(
    stored: int | None,
    assessment: Assessment | OpenAssessment,
    instrument: Instrument,
    item: Item,
    number: int,
    now: datetime,
) -> tuple[int | None, str | None]:
    """The answer to select on the question page, and a notice when it is one kept from
    before the sign-in ended (selected, and said to still need saving).

    ``stored`` is the answer saved for the question, if any. A kept answer is offered only on
    its own question of its own questionnaire (which belongs to the patient signed in now);
    it is dropped once it is no longer needed or no longer a valid answer.
    """
    pending = pending_answer(now)
    if pending is None or pending.assessment_id != assessment.id or pending.number != number:
        return stored, None
    allowed = instrument.response_set(item.response_set).values
    if pending.value not in allowed or pending.value == stored:
        drop_pending_answer()
        return stored, None
    return pending.value, _("Your session had ended before this answer could be saved. It is selected below: "
                            "please check it, then continue to save it.")


def answer_saved(assessment: Assessment | OpenAssessment, number: int) -> None:
    """The question was answered: a kept answer for it is no longer needed."""
    pending = pending_answer(utcnow())
    if pending is not None and pending.assessment_id == assessment.id and pending.number == number:
        drop_pending_answer()
