"""The compliance report of a study, as a page and as CSV."""

from __future__ import annotations

import csv
import io

from flask import Blueprint, Response, abort, render_template, request
from sqlalchemy import select

from pro_app.db.models import Site, Study
from pro_app.db.types import utcnow
from pro_app.domain.states import Role
from pro_app.extensions import database
from pro_app.services.audit import record_event
from pro_app.services.compliance import COLUMNS, compliance_report
from pro_app.services.staff import visible_site_ids
from pro_app.web.staff.guard import staff_required, staff_user

bp = Blueprint("reports", __name__, url_prefix="/staff/studies")


def _study_for_user(study_id: int) -> tuple[Study, list[int] | None]:
    study = database.session.get(Study, study_id)
    sites = visible_site_ids(staff_user())
    if study is None:
        abort(404)
    if sites is not None:
        own = database.session.scalars(select(Site.id).where(Site.study_id == study.id, Site.id.in_(sites))).all()
        if not own:
            abort(404)
        sites = list(own)
    return study, sites


@bp.get("/")
@staff_required(Role.ADMIN.value, Role.NURSE.value, Role.ANALYST.value)
def index() -> str:
    sites = visible_site_ids(staff_user())
    query = select(Study).order_by(Study.code)
    if sites is not None:
        query = query.where(Study.id.in_(select(Site.study_id).where(Site.id.in_(sites))))
    return render_template("staff/studies.html", studies=database.session.scalars(query).all())


@bp.get("/<int:study_id>/compliance")
@staff_required(Role.ADMIN.value, Role.NURSE.value, Role.ANALYST.value)
def compliance(study_id: int) -> str | Response:
    study, sites = _study_for_user(study_id)
    rows = compliance_report(database.session, study, site_ids=sites, now=utcnow())
    if request.args.get("format") == "csv":
        record_event(database.session, actor=f"staff:{staff_user().id}", action="export.compliance",
                     entity_type="study", entity_id=study.id, after={"sites": sites, "rows": len(rows)})
        database.session.commit()
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(COLUMNS)
        for row in rows:
            rate, median = row.completion_rate, row.median_hours_to_completion
            writer.writerow([row.study, row.site, row.arm, row.timepoint, row.expected, row.completed, row.missed,
                             "" if rate is None else repr(rate), "" if median is None else repr(median)])
        return Response(buffer.getvalue(), mimetype="text/csv", headers={
            "Content-Disposition": f'attachment; filename="compliance-{study.code}.csv"'})
    if request.args.get("format") not in (None, "html"):
        abort(400)
    return render_template("staff/compliance.html", study=study, rows=rows)
