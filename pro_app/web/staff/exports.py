"""Export downloads for analysts and administrators (audited: who, what, which filters)."""

from __future__ import annotations

import tempfile

from flask import Blueprint, abort, render_template, request, send_file
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from pro_app.db.models import Arm, ScheduleTemplate, Site, Study, Timepoint
from pro_app.db.types import utcnow
from pro_app.domain.errors import DomainError
from pro_app.domain.states import Role
from pro_app.exports.formats import FORMATS
from pro_app.extensions import database
from pro_app.services.export_run import begin_snapshot, build_filters, write_export
from pro_app.services.exports import audit_export
from pro_app.services.staff import visible_site_ids
from pro_app.web.choices import options
from pro_app.web.staff.forms import ExportForm
from pro_app.web.staff.guard import staff_required, staff_user
from pro_app.web.staff.pages import attach_error

bp = Blueprint("exports", __name__, url_prefix="/staff/exports")
SPOOL_BYTES = 8 * 1024 * 1024  # larger exports go to a temporary file, not memory


def _study_and_sites(session: Session, study_id: int) -> tuple[Study, list[Site]]:
    study = session.get(Study, study_id)
    if study is None:
        abort(404)
    visible = visible_site_ids(staff_user())
    query = select(Site).where(Site.study_id == study.id).order_by(Site.name)
    if visible is not None:
        query = query.where(Site.id.in_(visible))
    sites = list(session.scalars(query))
    if not sites:
        abort(403)  # the study exists, but none of its sites is the user's
    return study, sites


def _form(db: Session, study: Study, sites: list[Site]) -> ExportForm:
    form = ExportForm()
    form.format.choices = options((name, f"{name} - {fmt.description}") for name, fmt in FORMATS.items())
    form.sites.choices = options((site.code, site.name) for site in sites)
    form.arms.choices = options(
        (arm.code, arm.name) for arm in db.scalars(select(Arm).where(Arm.study_id == study.id).order_by(Arm.id))
    )
    codes = db.execute(
        select(Timepoint.code, Timepoint.label)
        .join(ScheduleTemplate, Timepoint.template_id == ScheduleTemplate.id)
        .where(ScheduleTemplate.study_id == study.id)
        .order_by(Timepoint.position)
    ).tuples().all()
    form.timepoints.choices = options(codes)
    return form


@bp.route("/<int:study_id>", methods=["GET", "POST"])
@staff_required(Role.ADMIN.value, Role.ANALYST.value)
def download(study_id: int) -> str | tuple[str, int] | Response:
    if request.method != "POST":
        study, sites = _study_and_sites(database.session, study_id)
        return render_template("staff/exports.html", study=study, form=_form(database.session, study, sites))
    actor = f"staff:{staff_user().id}"
    visible = visible_site_ids(staff_user())
    # The request's writing transaction, opened by the sign-in check, holds SQLite's write lock:
    # end it, so that everything up to the finished file is read from one snapshot of a reading
    # session and no other change waits for the export; the lock is taken again, briefly, only
    # to record who exported what.
    database.session.commit()
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    with database.state().reader() as reader:
        begin_snapshot(reader)
        study, sites = _study_and_sites(reader, study_id)
        form = _form(reader, study, sites)
        if not form.validate_on_submit():
            return render_template("staff/exports.html", study=study, form=form), 400
        # Analysts export only their own sites: no site chosen means all of theirs.
        own = [site.code for site in sites]
        chosen_sites = form.sites.data or (own if visible is not None else None)
        try:
            filters = build_filters(
                reader, study=study.code, site_codes=chosen_sites, arm_codes=form.arms.data or None,
                timepoint_codes=form.timepoints.data or None, date_from=form.date_from.data,
                date_to=form.date_to.data, include_incomplete=form.include_incomplete.data,
            )
        except DomainError as error:
            attach_error(form, error)
            return render_template("staff/exports.html", study=study, form=form), 400
        chosen = FORMATS[form.format.data]
        write_export(reader, filters, chosen.name, spool)  # type: ignore[arg-type]
        study_code = study.code
    audit_export(database.session, filters, export_format=chosen.name, actor=actor)
    database.session.commit()
    spool.seek(0)
    name = f"{study_code}-{chosen.name}-{utcnow():%Y%m%dT%H%M}{chosen.extension}"
    return send_file(spool, mimetype=chosen.media_type, as_attachment=True, download_name=name)  # type: ignore[arg-type]
