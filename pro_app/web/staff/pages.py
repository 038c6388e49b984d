"""Helpers of the staff pages: form choices, anchor dates, the participant page, QR codes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import segno
from flask import current_app, g, render_template
from flask_babel import gettext as _
from markupsafe import Markup
from sqlalchemy import select
from wtforms import Form

from pro_app.db.models import AccessLink, Alert, Arm, Assessment, AuditEvent, Participant, ScaleScore, Site, StaffUser
from pro_app.db.types import utcnow
from pro_app.domain.errors import N_, DomainError, ValidationError
from pro_app.domain.instruments import default_registry
from pro_app.domain.schedule import local_to_utc
from pro_app.domain.states import AssessmentStatus
from pro_app.extensions import database
from pro_app.services.access import link_is_usable
from pro_app.services.staff import visible_site_ids
from pro_app.web.choices import options
from pro_app.web.i18n import language_choices
from pro_app.web.staff.charts import trend_svg
from pro_app.web.staff.forms import AcknowledgeForm, AnchorForm, ConfirmForm, EnrolForm, ReasonForm, TabletStartForm

#: Anchor dates further away than this are almost certainly typing errors.
ANCHOR_PAST = timedelta(days=5 * 365)
ANCHOR_FUTURE = timedelta(days=365)


def fill_enrol_choices(form: EnrolForm, user: StaffUser) -> None:
    db = database.session
    site_query = select(Site).order_by(Site.name)
    sites = visible_site_ids(user)
    if sites is not None:
        site_query = site_query.where(Site.id.in_(sites))
    visible = db.scalars(site_query).all()
    form.site.choices = options((site.id, f"{site.name} ({site.study.code})") for site in visible)
    studies = {site.study_id for site in visible}
    arms = db.scalars(select(Arm).where(Arm.study_id.in_(studies)).order_by(Arm.study_id, Arm.id)).all()
    form.arm.choices = options((arm.id, f"{arm.name} ({arm.study.code})") for arm in arms)
    form.locale.choices = options(language_choices())


def local_instant(value: datetime, zone_name: str, field: str) -> datetime:
    """A date typed in the participant's local time as an aware instant, checked for sense."""
    try:
        ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(N_("Unknown time zone %(zone)s."), field="timezone", zone=zone_name) from None
    instant = local_to_utc(value, zone_name)
    now = utcnow()
    if not now - ANCHOR_PAST <= instant <= now + ANCHOR_FUTURE:
        raise ValidationError(N_("This date is too far in the past or the future; please check it."), field=field)
    return instant


def anchor_instants(form: EnrolForm, site: Site | None) -> dict[str, datetime]:
    """Anchor dates typed in the participant's local time, as UTC instants (checked for sense)."""
    zone_name = form.timezone.data or (site.timezone if site else "UTC")
    anchors = {}
    for field in (form.lymphodepletion, form.infusion):
        if field.data is not None:
            anchors[field.name] = local_instant(field.data, zone_name, field.name)
    if "lymphodepletion" in anchors and "infusion" in anchors and anchors["infusion"] < anchors["lymphodepletion"]:
        raise ValidationError(N_("The infusion cannot be before the lymphodepletion."), field="infusion")
    return anchors


def attach_error(form: Form, error: DomainError) -> None:
    """Show a service's message next to its field (or the form's first field)."""
    field = getattr(form, error.field or "", None) or next(iter(form))
    field.errors = [*field.errors, _(error.message, **error.params)]


def qr_svg(url: str) -> Markup:
    """The link as a QR code, an SVG drawn on the server (no script, no external service)."""
    svg = segno.make(url, error="m").svg_inline(scale=4, dark="#000", light="#fff", omitsize=False)
    return Markup(svg)


@dataclass(frozen=True)
class ScoreColumn:
    assessment: Assessment
    values: dict[str, float | None]


def render_participant(
    participant: Participant,
    *,
    message: str | None = None,
    withdraw_form: ReasonForm | None = None,
    ack_forms: dict[int, AcknowledgeForm] | None = None,
    anchor_form: AnchorForm | None = None,
) -> str:
    db = database.session
    g.timezone = participant.timezone
    now = utcnow()
    assessments = db.scalars(
        select(Assessment).where(Assessment.participant_id == participant.id).order_by(Assessment.planned_at)
    ).all()
    completed = [a for a in assessments if a.status == AssessmentStatus.COMPLETED.value]
    scores: dict[int, dict[str, float | None]] = {a.id: {} for a in completed}
    for row in db.scalars(select(ScaleScore).where(ScaleScore.assessment_id.in_(list(scores)))):
        scores[row.assessment_id][row.scale_code] = row.value
    instrument = default_registry().get(participant.study.instrument_code, participant.study.instrument_version)
    trends = [
        (scale.code, scale.name, trend_svg([(a.timepoint_label, scores[a.id].get(scale.code)) for a in completed],
                                            title=scale.name, y_label=_("Score (0-100)"),
                                            missing_text=_("not scored"), empty_text=_("No scores yet.")))
        for scale in instrument.scales
    ] if completed else []
    alerts = db.scalars(
        select(Alert).where(Alert.assessment_id.in_([a.id for a in assessments])).order_by(Alert.id)
    ).all()
    by_assessment = {a.id: a for a in assessments}
    alert_groups: dict[int, list[Alert]] = {}
    for alert in alerts:
        alert_groups.setdefault(alert.assessment_id, []).append(alert)
    link = db.scalars(
        select(AccessLink).where(AccessLink.participant_id == participant.id).order_by(AccessLink.created_at.desc())
    ).first()
    answerable = [
        a for a in assessments
        if a.status in ("scheduled", "open", "in_progress") and a.window_opens_at <= now < a.window_closes_at
        or (a.status == "in_progress" and a.window_opens_at <= now
            < a.window_closes_at + timedelta(minutes=current_app.config["PATIENT_GRACE_MINUTES"]))
    ]
    return render_template(
        "staff/participant.html",
        participant=participant,
        assessments=assessments,
        completed=completed,
        scores=scores,
        score_codes=instrument.score_codes,
        trends=trends,
        alert_groups=[(by_assessment[aid], group) for aid, group in sorted(
            alert_groups.items(), key=lambda item: by_assessment[item[0]].planned_at, reverse=True)],
        ack_forms=ack_forms or {},
        ack_form=AcknowledgeForm(),
        link=link,
        link_usable=link is not None and link_is_usable(link, now),
        answerable=answerable[0] if answerable else None,
        hand_over_form=TabletStartForm(),
        confirm_form=ConfirmForm(),
        withdraw_form=withdraw_form or ReasonForm(),
        anchor_form=anchor_form or AnchorForm(),
        reanchors=_reanchor_history(participant),
        message=message,
        demo_wording=any(a.text_source == "demo" for a in assessments),
    )


@dataclass(frozen=True)
class Reanchor:
    occurred_at: datetime
    actor: str
    reason: str | None
    anchor: str
    new_at: datetime
    moved: list[tuple[str, datetime, datetime]]


def _reanchor_history(participant: Participant) -> list[Reanchor]:
    """What moved when protocol dates changed, newest first (read from the audit trail)."""
    events = database.session.scalars(
        select(AuditEvent)
        .where(AuditEvent.action == "participant.reanchor", AuditEvent.entity_id == str(participant.id))
        .order_by(AuditEvent.seq.desc())
    ).all()
    history = []
    for event in events:
        after = json.loads(event.after or "{}")
        history.append(Reanchor(
            event.occurred_at, event.actor, event.reason, after.get("anchor", ""),
            datetime.fromisoformat(after["at"]),
            [(m["label"], datetime.fromisoformat(m["from"][0]), datetime.fromisoformat(m["to"][0]))
             for m in after.get("moved", [])],
        ))
    return history
