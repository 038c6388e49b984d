"""Participants: list, enrolment, the participant page, links, withdrawal, tablet mode, alerts,
corrections of submitted answers and the history pages."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, g, redirect, render_template, request, session, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from werkzeug.wrappers import Response
from wtforms import HiddenField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length

from pro_app.db.models import Answer, Arm, Assessment, Participant, Site
from pro_app.domain.errors import N_, Conflict, DomainError, NotFound, ValidationError
from pro_app.domain.states import AssessmentMode, Role
from pro_app.extensions import database
from pro_app.services.access import IssuedLink, issue_link, revoke_links
from pro_app.services.alerts import acknowledge_alerts
from pro_app.services.audit import record_event
from pro_app.services.corrections import MAX_REASON, check_correctable, correct_answer
from pro_app.services.history import HistoryEntry
from pro_app.services.history import assessment_history as read_assessment_history
from pro_app.services.history import participant_history as read_participant_history
from pro_app.services.participants import enrol_participant, reanchor_participant, withdraw_participant
from pro_app.services.questionnaire import hand_over
from pro_app.services.scores import instrument_of
from pro_app.services.staff import visible_site_ids
from pro_app.services.texts import text_for
from pro_app.web.forms import Form
from pro_app.web.patient.context import assessment_for_tablet, instrument_and_text, sign_in_tablet
from pro_app.web.staff import pages
from pro_app.web.staff.forms import AcknowledgeForm, AnchorForm, ConfirmForm, EnrolForm, ReasonForm, TabletStartForm
from pro_app.web.staff.guard import TABLET_KEY, participant_or_404, staff_required, staff_user

bp = Blueprint("participants", __name__, url_prefix="/staff/participants")

CARE_ROLES = (Role.ADMIN.value, Role.NURSE.value)
READ_ROLES = (Role.ADMIN.value, Role.NURSE.value, Role.ANALYST.value)
Page = str | tuple[str, int] | Response


def _actor() -> str:
    return f"staff:{staff_user().id}"


@bp.get("/")
@staff_required(*READ_ROLES)
def index() -> str:
    query = select(Participant).join(Site).order_by(Site.name, Participant.subject_code)
    sites = visible_site_ids(staff_user())
    if sites is not None:
        query = query.where(Participant.site_id.in_(sites))
    return render_template("staff/participants.html", participants=database.session.scalars(query.limit(500)).all())


@bp.route("/new", methods=["GET", "POST"])
@staff_required(*CARE_ROLES)
def enrol() -> Page:
    form = EnrolForm()
    pages.fill_enrol_choices(form, staff_user())
    if not form.validate_on_submit():
        return render_template("staff/enrol.html", form=form), 400 if form.is_submitted() else 200
    db = database.session
    site = db.get(Site, form.site.data)
    arm = db.get(Arm, form.arm.data)
    try:
        anchors = pages.anchor_instants(form, site)
        if site is None or arm is None or arm.study_id != site.study_id:
            form.arm.errors.append(_("This dose group does not belong to the study of the chosen site."))
            return render_template("staff/enrol.html", form=form), 400
        participant = enrol_participant(
            db, study=site.study, site=site, arm=arm, subject_code=form.subject_code.data,
            locale=form.locale.data, timezone=form.timezone.data or None, email=form.email.data,
            phone=form.phone.data, anchors=anchors, actor=_actor(),
        )
        issued = issue_link(db, participant, actor=_actor(), valid_days=current_app.config["PATIENT_LINK_DAYS"])
    except DomainError as error:
        db.rollback()
        pages.attach_error(form, error)
        return render_template("staff/enrol.html", form=form), 409 if error.field == "subject_code" else 400
    db.commit()
    return _letter(participant, issued, enrolled=True)


@bp.get("/<int:participant_id>")
@staff_required(*READ_ROLES)
def detail(participant_id: int) -> str:
    participant = participant_or_404(participant_id)
    return pages.render_participant(participant)


def _letter(participant: Participant, issued: IssuedLink, *, enrolled: bool = False) -> str:
    url = f"{current_app.config['BASE_URL'].rstrip('/')}{url_for('patient.open_link', token=issued.token)}"
    return render_template(
        "staff/letter.html", participant=participant, url=url, code=issued.code, qr=pages.qr_svg(url),
        expires=issued.link.expires_at, enrolled=enrolled,
    )


@bp.post("/<int:participant_id>/link")
@staff_required(*CARE_ROLES)
def reissue_link(participant_id: int) -> Page:
    participant = participant_or_404(participant_id)
    if not ConfirmForm().validate_on_submit():
        abort(400)
    if participant.status != "active":
        return pages.render_participant(participant, message=_("Withdrawn participants get no new links.")), 409
    issued = issue_link(database.session, participant, actor=_actor(), valid_days=current_app.config["PATIENT_LINK_DAYS"])
    database.session.commit()
    return _letter(participant, issued)


@bp.post("/<int:participant_id>/link/revoke")
@staff_required(*CARE_ROLES)
def revoke_link(participant_id: int) -> Response:
    participant = participant_or_404(participant_id)
    if not ConfirmForm().validate_on_submit():
        abort(400)
    revoke_links(database.session, participant, actor=_actor())
    database.session.commit()
    return redirect(url_for("participants.detail", participant_id=participant.id), code=303)


@bp.post("/<int:participant_id>/withdraw")
@staff_required(*CARE_ROLES)
def withdraw(participant_id: int) -> Page:
    participant = participant_or_404(participant_id)
    form = ReasonForm()
    if not form.validate_on_submit():
        return pages.render_participant(participant, withdraw_form=form), 400
    try:
        withdraw_participant(database.session, participant, reason=form.reason.data, actor=_actor())
    except DomainError as error:
        database.session.rollback()
        return pages.render_participant(participant, message=_(error.message, **error.params)), 409
    database.session.commit()
    return redirect(url_for("participants.detail", participant_id=participant.id), code=303)


@bp.post("/<int:participant_id>/anchors")
@staff_required(*CARE_ROLES)
def reanchor(participant_id: int) -> Page:
    """Change a protocol date (e.g. a postponed infusion); later assessments follow it."""
    participant = participant_or_404(participant_id)
    form = AnchorForm()
    if not form.validate_on_submit():
        return pages.render_participant(participant, anchor_form=form), 400
    try:
        occurred_at = pages.local_instant(form.occurred_at.data, participant.timezone, "occurred_at")
        reanchor_participant(database.session, participant, kind=form.kind.data, occurred_at=occurred_at,
                             reason=form.reason.data, actor=_actor())
    except DomainError as error:
        database.session.rollback()
        pages.attach_error(form, error)
        return pages.render_participant(participant, anchor_form=form), 409 if error.field is None else 400
    database.session.commit()
    return redirect(url_for("participants.detail", participant_id=participant.id, _anchor="dates"), code=303)


@bp.post("/<int:participant_id>/hand-over")
@staff_required(*CARE_ROLES)
def start_tablet(participant_id: int) -> Page:
    """Lock this browser into the patient's questionnaire (tablet) or an interview."""
    participant = participant_or_404(participant_id)
    form = TabletStartForm()
    if not form.validate_on_submit():
        abort(400)
    assessment = assessment_for_tablet(participant, form.assessment.data)
    if assessment is None:
        return pages.render_participant(participant, message=_("This questionnaire is not open.")), 409
    mode = AssessmentMode(form.mode.data)
    _instrument, text = instrument_and_text(assessment, participant.locale, participant.study.default_locale)
    hand_over(database.session, assessment, mode=mode, text=text, actor=_actor())
    record_event(database.session, actor=_actor(), action=f"{mode.value}.start", entity_type="assessment",
                 entity_id=assessment.id)
    database.session.commit()
    sign_in_tablet(participant.id, assessment.id, mode)
    session[TABLET_KEY] = {
        "staff": staff_user().id, "participant": participant.id, "assessment": assessment.id,
        "lang": session.get("lang"),
    }
    session["lang"] = participant.locale  # the patient's language, until the tablet is unlocked
    return redirect(url_for("patient.home"), code=303)


@bp.post("/assessments/<int:assessment_id>/acknowledge-alerts")
@staff_required(*CARE_ROLES)
def acknowledge(assessment_id: int) -> Page:
    assessment = database.session.get(Assessment, assessment_id)
    if assessment is None:
        abort(404)
    participant = participant_or_404(assessment.participant_id)
    form = AcknowledgeForm()
    if not form.validate_on_submit():
        return pages.render_participant(participant, ack_forms={assessment.id: form}), 400
    try:
        acknowledge_alerts(database.session, assessment, user=staff_user(), note=form.note.data)
    except DomainError as error:
        database.session.rollback()
        return pages.render_participant(participant, message=_(error.message, **error.params)), 409
    database.session.commit()
    return redirect(url_for("participants.detail", participant_id=participant.id, _anchor="alerts"), code=303)


# ---------------------------------------------------------------- corrections after submission

#: The form value meaning "not answered" (the item is then missing, as if skipped).
NOT_ANSWERED = "none"


class CorrectionForm(Form):
    """One corrected answer: the question, the new value and the required reason."""

    item = HiddenField(validators=[DataRequired(_l("Please choose the question to correct."))])
    value = StringField(_l("Corrected answer"), validators=[DataRequired(_l("Please choose the corrected answer."))])
    reason = TextAreaField(
        _l("Reason for the correction"),
        validators=[
            DataRequired(_l("Please give the reason for the correction.")),
            Length(max=MAX_REASON, message=_l("The reason is too long (at most %(max)s characters).")),
        ],
        description=_l("For example: the patient reported choosing the wrong answer by mistake."),
    )


def _assessment_or_404(assessment_id: int) -> tuple[Assessment, Participant]:
    """An assessment of a participant the signed-in user may see; others do not exist for them."""
    assessment = database.session.get(Assessment, assessment_id)
    if assessment is None:
        abort(404)
    return assessment, participant_or_404(assessment.participant_id)


def _parse_value(raw: str) -> int | None:
    if raw.strip() == NOT_ANSWERED:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValidationError(N_("Please choose one of the answers shown."), field="value") from None


@bp.route("/assessments/<int:assessment_id>/correct", methods=["GET", "POST"])
@staff_required(*CARE_ROLES)
def correct(assessment_id: int) -> Page:
    """Correct one answer of a submitted questionnaire (nurses and administrators, with a reason)."""
    assessment, _participant = _assessment_or_404(assessment_id)
    form = CorrectionForm()
    if not form.is_submitted():
        form.item.data = request.args.get("item")
    try:
        check_correctable(assessment)
    except DomainError as error:
        return _render_correction(assessment, form, message=_(error.message, **error.params)), 409
    if not form.is_submitted():
        known = not form.item.data or form.item.data in instrument_of(assessment).item_ids
        return _render_correction(assessment, form), 200 if known else 400
    db = database.session
    try:
        if not form.validate():
            return _render_correction(assessment, form), 400
        result = correct_answer(
            db, assessment, item_id=form.item.data, value=_parse_value(form.value.data), reason=form.reason.data,
            user=staff_user(), base_url=current_app.config["BASE_URL"],
        )
    except DomainError as error:
        db.rollback()
        status = 404 if isinstance(error, NotFound) else 409 if isinstance(error, Conflict) else 400
        return _render_correction(assessment, form, error=error), status
    db.commit()
    return redirect(url_for(
        "participants.assessment_history", assessment_id=assessment.id, corrected=result.item_id,
        raised=len(result.raised), review=len(result.no_longer_met),
    ), code=303)


def _render_correction(
    assessment: Assessment, form: CorrectionForm, *, message: str | None = None, error: DomainError | None = None
) -> str:
    """The questionnaire's answers, and the form for the chosen question."""
    db = database.session
    instrument = instrument_of(assessment)
    text = text_for(db, instrument, [str(get_locale()), assessment.locale or "en", "en"])
    if error is not None:
        field = getattr(form, error.field or "", None)
        if error.field in ("value", "reason") and field is not None:
            field.errors = [*field.errors, _(error.message, **error.params)]
        else:
            message = _(error.message, **error.params)
    if form.item.errors and message is None:
        message = form.item.errors[0]
    answers = {a.item_id: a for a in db.scalars(select(Answer).where(Answer.assessment_id == assessment.id))}
    selected = next((item for item in instrument.items if item.id == form.item.data), None)
    if form.item.data and selected is None and message is None:
        message = _("This question does not exist.")
    choices = [] if selected is None else [
        (value, text.response_labels.get(selected.response_set, {}).get(value))
        for value in instrument.response_set(selected.response_set).values
    ]
    g.timezone = assessment.participant.site.timezone
    current = None if selected is None else answers.get(selected.id)
    return render_template(
        "staff/correct_answer.html", assessment=assessment, participant=assessment.participant,
        items=[(item, text.items.get(item.id, ""), answers.get(item.id)) for item in instrument.items],
        labels=text.response_labels, selected=selected, choices=choices, form=form, message=message,
        wording=None if selected is None else text.items.get(selected.id, ""),
        current=None if current is None else current.value, not_answered=NOT_ANSWERED,
        correctable=assessment.status == "completed",
    )


# ---------------------------------------------------------------- history (from the audit trail)


@bp.get("/<int:participant_id>/history")
@staff_required(*READ_ROLES)
def history(participant_id: int) -> str:
    participant = participant_or_404(participant_id)
    return _render_history(participant, read_participant_history(database.session, participant))


@bp.get("/assessments/<int:assessment_id>/history")
@staff_required(*READ_ROLES)
def assessment_history(assessment_id: int) -> str:
    assessment, participant = _assessment_or_404(assessment_id)
    return _render_history(participant, read_assessment_history(database.session, assessment), assessment=assessment)


def _render_history(
    participant: Participant, entries: list[HistoryEntry], *, assessment: Assessment | None = None
) -> str:
    # Times in the site's zone (where the team works) and in UTC (what the trail stores).
    g.timezone = participant.site.timezone
    corrected = request.args.get("corrected")
    return render_template(
        "staff/history.html", participant=participant, assessment=assessment, entries=entries,
        site_zone=participant.site.timezone, corrected=corrected,
        raised=request.args.get("raised", 0, type=int), review=request.args.get("review", 0, type=int),
    )
