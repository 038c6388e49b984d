"""The patient's questionnaire: personal link or code, start page, one question per screen,
background saving, review, submission and thank-you page.

Every page works without JavaScript (plain form posts and redirects); with JavaScript the
page script saves answers in the background and queues them while the phone is offline.
URLs never carry an assessment id: the session decides which questionnaire is answered.

Every write carries a request id (see :mod:`pro_app.web.patient.receipts`), so retries save
once; an expired form or sign-in never loses the answer it carried (see
:mod:`pro_app.web.patient.recovery`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from sqlalchemy import Connection
from werkzeug.wrappers import Response

from pro_app.db.types import utcnow
from pro_app.domain.errors import Conflict, DomainError
from pro_app.domain.instruments import Instrument, InstrumentText, Item
from pro_app.domain.states import AssessmentStatus
from pro_app.extensions import database
from pro_app.web.database import reads_first, reads_only
from pro_app.services.access import find_link, link_is_usable
from pro_app.services.questionnaire import (
    OpenAssessment,
    SavedAnswer,
    answer_replay,
    answer_value,
    answers_of,
    lock_assessment,
    new_request_id,
    next_assessment,
    record_answer,
    replayed_answer,
    replayed_submission,
    save_answer_at_once,
    start_assessment,
    submit_assessment,
)
from pro_app.services.throttle import register_attempt
from pro_app.web.patient import pages, receipts, recovery
from pro_app.web.patient.context import (
    PatientContext,
    assessment_for,
    drop_pending_answer,
    grace_period,
    item_id_at,
    load_patient,
    open_assessment_for,
    pending_answer,
    sign_in_with_link,
)
from pro_app.web.patient.forms import (
    AnswerRequest,
    CodeForm,
    QuestionPost,
    StartForm,
    SubmitForm,
    read_answer_request,
    read_question_post,
)

bp = Blueprint("patient", __name__)

RenderResult = str | tuple[str, int] | Response
JsonResult = tuple[dict[str, object], int] | tuple[dict[str, object], int, dict[str, str]]


def _message(error: DomainError) -> str:
    return _(error.message, **error.params)


def _status(error: DomainError) -> int:
    return 409 if isinstance(error, Conflict) else 400


def _code(error: DomainError) -> str:
    return "conflict" if isinstance(error, Conflict) else "invalid"


def _require_patient() -> PatientContext:
    context = load_patient(utcnow())
    if context is None:
        abort(401)
    return context


@bp.errorhandler(CSRFError)
def form_expired(_error: CSRFError) -> RenderResult | tuple[dict[str, object], int]:
    return recovery.csrf_failed()


@bp.get("/p/<token>")
def open_link(token: str) -> RenderResult:
    link = find_link(database.session, token=token) if len(token) <= 100 else None
    if link is None or not link_is_usable(link):
        return render_template("patient/link_invalid.html"), 404 if link is None else 410
    sign_in_with_link(link)
    return redirect(url_for("patient.home"), code=303)


@bp.route("/start", methods=["GET", "POST"])
def enter_code() -> RenderResult:
    form = CodeForm()
    if not form.validate_on_submit():
        return render_template("patient/code.html", form=form), 400 if form.is_submitted() else 200
    db = database.session
    window = timedelta(minutes=current_app.config["CODE_ATTEMPT_WINDOW_MINUTES"])
    allowed = register_attempt(
        db, f"code:{request.remote_addr}", limit=current_app.config["CODE_ATTEMPTS_PER_WINDOW"], window=window
    )
    link = find_link(db, code=form.code.data) if allowed else None
    db.commit()  # failed attempts are counted even though nothing else changes
    if not allowed:
        form.code.errors.append(_("Too many attempts. Please wait 15 minutes and try again."))
        return render_template("patient/code.html", form=form), 429
    if link is None or not link_is_usable(link):
        form.code.errors.append(_("This code was not recognised. Please check it and try again."))
        return render_template("patient/code.html", form=form), 400
    sign_in_with_link(link)
    return redirect(url_for("patient.home"), code=303)


@bp.get("/q/")
@reads_only
def home() -> RenderResult:
    context = _require_patient()
    now = utcnow()
    assessment = assessment_for(context, now)
    if assessment is None:
        drop_pending_answer()  # a kept answer has no open questionnaire to go into
        upcoming = next_assessment(database.session, context.participant, now=now)
        return render_template("patient/nothing_due.html", upcoming=upcoming)
    instrument, text = pages.wording_for(context, assessment)
    pending = pages.pending_question_number(pending_answer(now), assessment, len(instrument.items))
    if pending is not None:  # back after the sign-in ended: confirm the answer kept from then
        return redirect(url_for("patient.question", number=pending), code=303)
    answered = answers_of(database.session, assessment)
    return render_template(
        "patient/start.html",
        assessment=assessment,
        text=text,
        answered=len(answered),
        total=len(instrument.items),
        form=StartForm(assessment=assessment.id),
    )


@bp.post("/q/start")
def start() -> Response:
    context = _require_patient()
    now = utcnow()
    assessment = pages.assessment_or_gone(context, now, StartForm().assessment.data)
    instrument, text = pages.wording_for(context, assessment)
    start_assessment(database.session, assessment, mode=context.mode, text=text, actor=context.actor, now=now)
    database.session.commit()
    return redirect(pages.first_unanswered_url(instrument, answers_of(database.session, assessment)), code=303)


@bp.route("/q/<int:number>", methods=["GET", "POST"])
@reads_first
@reads_only
def question(number: int) -> RenderResult:
    now = utcnow()
    # The stored answer is read with the sign-in for the page, and for PostgreSQL's save in
    # one statement.
    alone = database.connection_alone() if request.method == "POST" else None
    context = load_patient(now, item_id=item_id_at(number) if request.method == "GET" or alone else None)
    if context is None:
        if request.method == "POST":
            return recovery.session_ended(number, read_question_post(), now)
        abort(401)
    assessment = open_assessment_for(context, now)
    if assessment is None:
        return pages.closed_page(context, now)
    instrument, text = pages.wording_for(context, assessment)
    if not 1 <= number <= len(instrument.items):
        abort(404)
    item = instrument.items[number - 1]
    if assessment.status != AssessmentStatus.IN_PROGRESS.value:
        return redirect(url_for("patient.home"), code=303)
    if request.method == "POST":
        return _save_question(alone, context, assessment, instrument, text, item, read_question_post(), now)
    read = context.answer_at_sign_in
    if read is not None and (read.assessment_id, read.item_id) == (assessment.id, item.id):
        stored = read.value
    else:  # tablet mode, or an instrument whose question ``number`` has another id
        stored = answer_value(database.connection, assessment.id, item.id)
    selected, notice = recovery.offer_pending_answer(stored, assessment, instrument, item, number, now)
    return pages.render_question(assessment, instrument, text, item, selected, notice=notice)


def _save_question(
    alone: Connection | None,
    context: PatientContext,
    assessment: OpenAssessment,
    instrument: Instrument,
    text: InstrumentText,
    item: Item,
    post: QuestionPost,
    now: datetime,
) -> RenderResult:
    """The no-JavaScript save: the page's request id makes a re-posted page save once."""
    choices = instrument.response_set(item.response_set).values
    if not post.is_valid(choices) or post.assessment != assessment.id:
        status = 409 if post.assessment not in (None, assessment.id) else 400
        return pages.render_question(assessment, instrument, text, item, post.value, error=True), status
    if post.value is not None:
        try:
            request_id = receipts.request_id_of(post.request_id)
            saved = _saved_alone(alone, context, assessment, instrument, text, item.id, post.value, request_id, now)
            if saved is None:
                database.begin_writing()
                record_answer(
                    database.session, assessment, instrument, item_id=item.id, value=post.value,
                    locale=text.locale, actor=context.actor, grace=grace_period(), now=now, request_id=request_id,
                )
                database.session.commit()
        except DomainError as error:
            database.session.rollback()
            return pages.render_question(
                assessment, instrument, text, item, post.value, message=_message(error)
            ), _status(error)
        recovery.answer_saved(assessment, item.number)
    return redirect(pages.url_after(post.go, item.number, len(instrument.items)), code=303)


@bp.post("/q/answer")
@reads_first
def save_answer() -> JsonResult:
    """Background save: JSON in, a receipt out. 2xx means the answer is stored durably; the
    same request again (same request id) gets the same receipt without a second write, even
    when the questionnaire was submitted or closed since.

    Everything is read before the write transaction begins, in the sign-in's one statement
    (who is signed in, the open questionnaire, and whether this request was handled before),
    so that on SQLite the write lock is held only for the write itself and a repetition is
    answered without waiting for it, and on PostgreSQL a repetition costs no write."""
    now = utcnow()
    form = read_answer_request()
    refused: DomainError | None = None
    try:
        request_id = None if form is None else receipts.request_id_of(form.request_id)
    except DomainError as error:
        request_id, refused = None, error
    alone = database.connection_alone()
    # On PostgreSQL the sign-in also reads the stored answer, for the save in one statement.
    context = load_patient(now, request_id=request_id, item_id=form.item if alone is not None and form else None)
    if context is None:
        return recovery.session_ended_json()
    if form is None:
        return recovery.json_error(_("The answer could not be read. Please choose it again."), "invalid", 400)
    if refused is not None:
        return recovery.json_error(_message(refused), _code(refused), _status(refused))
    assessment = open_assessment_for(context, now)
    still_open = assessment is not None and assessment.id == form.assessment
    try:
        replay = _replay_of_save(context, request_id, form, still_open=still_open)
    except DomainError as error:
        return recovery.json_error(_message(error), _code(error), _status(error))
    if replay is not None:
        database.make_durable()  # the receipt of a save that may have been committed a moment ago
        return receipts.receipt_body(replay), 200, {receipts.REPLAYED_HEADER: "true"}
    if assessment is None or not still_open:
        return recovery.json_error(_("This questionnaire is closed; answers can no longer be saved."), "closed", 409)
    instrument, text = pages.wording_for(context, assessment)
    try:
        saved = _saved_alone(alone, context, assessment, instrument, text, form.item, form.value, request_id, now)
    except DomainError as error:
        return recovery.json_error(_message(error), _code(error), _status(error))
    if saved is None:
        db = database.begin_writing()
        if assessment.status != AssessmentStatus.IN_PROGRESS.value:
            # The first answer starts the questionnaire. start_assessment reads it again under
            # the lock: started or submitted in the meantime, it is left as it is; closed, the
            # save below refuses the answer and the start is rolled back with it.
            start_assessment(db, lock_assessment(db, assessment.id), mode=context.mode, text=text,
                             actor=context.actor, now=now)
        try:
            saved = record_answer(
                db, assessment, instrument, item_id=form.item, value=form.value,
                locale=text.locale, actor=context.actor, grace=grace_period(), now=now, request_id=request_id,
            )
        except DomainError as error:
            db.rollback()
            return recovery.json_error(_message(error), _code(error), _status(error))
        db.commit()
    recovery.answer_saved(assessment, instrument.item(saved.item_id).number)
    if request_id is None and form.key:  # a page script from before request ids
        return {"saved": True, "item": saved.item_id, "value": saved.value, "key": form.key}, 200
    if saved.replayed:
        return receipts.receipt_body(saved), 200, {receipts.REPLAYED_HEADER: "true"}
    return receipts.receipt_body(saved), 200


def _saved_alone(
    alone: Connection | None,
    context: PatientContext,
    assessment: OpenAssessment,
    instrument: Instrument,
    text: InstrumentText,
    item_id: str,
    value: object,
    request_id: str | None,
    now: datetime,
) -> SavedAnswer | None:
    """On PostgreSQL, the answer saved by one statement of its own (``save_answer_at_once``)
    when the sign-in read the item's stored answer and nothing changed since; None when the
    save must take its usual path (``record_answer``), and on SQLite."""
    read = context.answer_at_sign_in
    if alone is None or read is None or (read.assessment_id, read.item_id) != (assessment.id, item_id):
        return None
    return save_answer_at_once(
        alone, assessment, instrument, item_id=item_id, value=value, stored_value=read.value,
        mode=context.mode.value, locale=text.locale, actor=context.actor, grace=grace_period(), now=now,
        request_id=request_id,
    )


def _replay_of_save(
    context: PatientContext, request_id: str | None, form: AnswerRequest, *, still_open: bool
) -> SavedAnswer | None:
    """The stored result when this save was handled before (even if the questionnaire was
    submitted or closed since), else None; a request id used for something else is a conflict.

    The receipt is read with a link sign-in. Otherwise it is looked up on SQLite (so a
    repetition needs no write lock), and on PostgreSQL only when the questionnaire no longer
    takes answers: while it does, the write finds a repetition (its receipt is inserted first)."""
    if request_id is None:
        return None
    read = context.receipt_at_sign_in
    if read is not None and read[0] == request_id:
        if read[1] is None:
            return None
        return answer_replay(read[1], participant_id=context.participant.id, assessment_id=form.assessment,
                             item_id=form.item, value=form.value)
    if still_open and not database.locks_to_write:
        return None
    return replayed_answer(database.session, request_id, participant_id=context.participant.id,
                           assessment_id=form.assessment, item_id=form.item, value=form.value)


@bp.get("/q/review")
@reads_only
def review() -> RenderResult:
    context = _require_patient()
    now = utcnow()
    assessment = assessment_for(context, now)
    if assessment is None:
        return pages.closed_page(context, now)
    if assessment.status != AssessmentStatus.IN_PROGRESS.value:
        return redirect(url_for("patient.home"), code=303)
    return pages.render_review(context, assessment, SubmitForm(assessment=assessment.id))


@bp.post("/q/submit")
@reads_first
def submit() -> RenderResult:
    context = _require_patient()
    now = utcnow()
    form = SubmitForm()
    db = database.session
    assessment = assessment_for(context, now)
    try:
        request_id = receipts.request_id_of(form.request_id.data, legacy_key=form.key.data)
        # Once submitted the questionnaire accepts nothing, but a repetition of the request
        # that submitted it (double tap, second tab, retry) gets the same thank-you page.
        if assessment is None and request_id is not None and replayed_submission(
            db, request_id, participant_id=context.participant.id, assessment_id=form.assessment.data
        ):
            database.make_durable()
            return redirect(url_for("patient.done"), code=303)
    except DomainError as error:
        if assessment is None:
            return pages.closed_page(context, now)
        return pages.render_review(context, assessment, form, message=_message(error)), _status(error)
    if assessment is None:
        return pages.closed_page(context, now)
    if not form.validate() or form.assessment.data != assessment.id:
        return pages.render_review(context, assessment, form, error=True), 400
    instrument, _text = pages.wording_for(context, assessment)
    missing = len(instrument.items) - len(answers_of(db, assessment))
    if missing and not form.confirm_missing.data:
        return pages.render_review(context, assessment, form, confirm_needed=True), 400
    db = database.begin_writing()
    try:
        submit_assessment(
            db, assessment, instrument, submission_key=request_id or new_request_id(), actor=context.actor,
            grace=grace_period(), base_url=current_app.config["BASE_URL"], now=now,
        )
    except DomainError as error:
        db.rollback()
        return pages.render_review(context, assessment, form, message=_message(error)), _status(error)
    db.commit()
    return redirect(url_for("patient.done"), code=303)


@bp.get("/q/done")
def done() -> str:
    context = _require_patient()
    return render_template("patient/done.html", tablet=context.assessment_id is not None)

