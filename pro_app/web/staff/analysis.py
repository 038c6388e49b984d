"""The analysts' pages of a study: completion, mean scores and change from baseline by dose
group and timepoint, with charts to download as SVG or PNG.

Analysts and administrators only (nurses get 403). An analyst sees only the sites assigned to
them: a study where they have none does not exist for them (404), and every number is computed
from their sites' participants alone.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Response, abort, render_template, request
from flask_babel import format_percent
from flask_babel import gettext as _
from sqlalchemy import select

from pro_app.db.models import Site, Study
from pro_app.db.types import utcnow
from pro_app.domain.statistics import Summary
from pro_app.domain.states import Role
from pro_app.extensions import database
from pro_app.services.analysis import (
    ArmColumn,
    ChangeFromBaseline,
    Overview,
    ScaleInfo,
    TimepointColumn,
    change_from_baseline,
    study_overview,
)
from pro_app.services.audit import record_event
from pro_app.services.staff import visible_site_ids
from pro_app.web.staff.analysis_charts import ChartPoint, ChartSeries, ChartSpec, draw, render_png, render_svg
from pro_app.web.staff.guard import staff_required, staff_user

bp = Blueprint("analysis", __name__, url_prefix="/staff/analysis")

ROLES = (Role.ADMIN.value, Role.ANALYST.value)
MEASURES = ("score", "change")


def _study_for_user(study_id: int) -> tuple[Study, list[int] | None]:
    """The study and the sites whose data the user may see (None = all); 404 without any."""
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


def _site_names(study: Study, sites: list[int] | None) -> list[str] | None:
    return None if sites is None else [site.name for site in study.sites if site.id in sites]


@bp.get("/<int:study_id>")
@staff_required(*ROLES)
def overview(study_id: int) -> str:
    study, sites = _study_for_user(study_id)
    result = study_overview(database.session, study, site_ids=sites, now=utcnow())
    charts = [(scale, render_svg(draw(score_chart(result, scale)))) for scale in result.scales]
    return render_template("staff/analysis.html", study=study, overview=result, change=result.change,
                           charts=charts, site_names=_site_names(study, sites), **_helpers())


@bp.get("/<int:study_id>/change")
@staff_required(*ROLES)
def change(study_id: int) -> str:
    study, sites = _study_for_user(study_id)
    result = change_from_baseline(database.session, study, site_ids=sites)
    charts = [(scale, render_svg(draw(change_chart(result, scale)))) for scale in result.scales]
    return render_template("staff/analysis_change.html", study=study, change=result, charts=charts,
                           site_names=_site_names(study, sites), **_helpers())


@bp.get("/<int:study_id>/chart/<scale>.svg")
@staff_required(*ROLES)
def chart_svg(study_id: int, scale: str) -> Response:
    spec, filename = _chart_download(study_id, scale)
    return _attachment(str(render_svg(draw(spec), standalone=True)), "image/svg+xml", f"{filename}.svg")


@bp.get("/<int:study_id>/chart/<scale>.png")
@staff_required(*ROLES)
def chart_png(study_id: int, scale: str) -> Response:
    spec, filename = _chart_download(study_id, scale)
    return _attachment(render_png(draw(spec)), "image/png", f"{filename}.png")


def _chart_download(study_id: int, scale_code: str) -> tuple[ChartSpec, str]:
    """The chart asked for (``?measure=score`` or ``change``), audited as an export."""
    measure = request.args.get("measure", "score")
    if measure not in MEASURES:
        abort(400)
    study, sites = _study_for_user(study_id)
    session = database.session
    if measure == "change":
        changes = change_from_baseline(session, study, site_ids=sites)
        scale = _scale_or_404(changes.scales, scale_code)
        spec = change_chart(changes, scale)
    else:
        result = study_overview(session, study, site_ids=sites, now=utcnow())
        scale = _scale_or_404(result.scales, scale_code)
        spec = score_chart(result, scale)
    record_event(session, actor=f"staff:{staff_user().id}", action="export.analysis_chart", entity_type="study",
                 entity_id=study.id, after={"scale": scale.code, "measure": measure, "sites": sites,
                                            "format": request.path.rsplit(".", 1)[-1]})
    session.commit()
    return spec, f"{study.code}-{scale.code}-{measure}"


def _scale_or_404(scales: tuple[ScaleInfo, ...], code: str) -> ScaleInfo:
    for scale in scales:
        if scale.code == code:
            return scale
    abort(404)


def _attachment(body: str | bytes, mimetype: str, filename: str) -> Response:
    safe = "".join(ch if (ch.isascii() and ch.isalnum()) or ch in "-_." else "_" for ch in filename)
    return Response(body, mimetype=mimetype, headers={"Content-Disposition": f'attachment; filename="{safe}"'})


# --------------------------------------------------------------------------- charts


def score_chart(result: Overview, scale: ScaleInfo) -> ChartSpec:
    """Mean score with its confidence interval per dose group over the timepoints."""
    level = format_percent(result.level)
    direction = _("Higher scores are better.") if scale.higher_is_better else _("Higher scores mean more symptoms.")
    series = tuple(
        ChartSeries(arm_label(arm), tuple(_point(result.summary(scale.code, tp.key, arm.id), arm, tp, level)
                                          for tp in result.score_timepoints))
        for arm in result.arms
    )
    return _spec(
        f"score-{scale.code}", scale, result.score_timepoints, series,
        subtitle=_("Mean score and %(level)s confidence interval by dose group. %(direction)s",
                   level=level, direction=direction),
        y_label=_("Score (0-100)"), empty=_("No scores yet."), y_range=(0.0, 100.0),
    )


def change_chart(result: ChangeFromBaseline, scale: ScaleInfo) -> ChartSpec:
    """Mean change from baseline with its confidence interval per dose group, with dashed
    lines at the clinically important difference."""
    level = format_percent(result.level)
    direction = _("Above zero is an improvement.") if scale.higher_is_better else _("Below zero is an improvement.")
    series = tuple(
        ChartSeries(arm_label(arm), tuple(
            _point(result.cell(scale.code, tp.key, arm.id).change, arm, tp, level, signed=True)
            for tp in result.timepoints))
        for arm in result.arms
    )
    points = threshold_text(result.threshold)
    return _spec(
        f"change-{scale.code}", scale, result.timepoints, series,
        subtitle=_("Mean change from baseline and %(level)s confidence interval by dose group. %(direction)s",
                   level=level, direction=direction),
        y_label=_("Change from baseline (points)"), empty=_("No change from baseline yet."), y_range=None,
        reference=((-result.threshold, result.threshold),
                   _("±%(points)s points (clinically important change)", points=points)),
    )


def _spec(
    ident: str, scale: ScaleInfo, timepoints: tuple[TimepointColumn, ...], series: tuple[ChartSeries, ...], *,
    subtitle: str, y_label: str, empty: str, y_range: tuple[float, float] | None,
    reference: tuple[tuple[float, ...], str] = ((), ""),
) -> ChartSpec:
    described = [point.text for s in series for point in s.points if point is not None]
    return ChartSpec(
        ident=ident,
        title=scale_title(scale),
        subtitle=subtitle,
        x_label=_("Timepoint"),
        y_label=y_label,
        timepoints=tuple(tp.label for tp in timepoints),
        series=series,
        description="; ".join(described) or empty,
        empty_text=empty,
        y_range=y_range,
        reference_lines=reference[0],
        reference_label=reference[1],
    )


def _point(summary: Summary, arm: ArmColumn, timepoint: TimepointColumn, level: str,
           *, signed: bool = False) -> ChartPoint | None:
    if summary.mean is None:
        return None
    show = signed_number if signed else number
    if summary.low is not None and summary.high is not None:
        text = _("%(group)s, %(timepoint)s: mean %(mean)s (%(level)s CI %(low)s to %(high)s), n = %(n)s",
                 group=arm_label(arm), timepoint=timepoint.label, mean=show(summary.mean), level=level,
                 low=show(summary.low), high=show(summary.high), n=summary.n)
    else:
        text = _("%(group)s, %(timepoint)s: mean %(mean)s, n = %(n)s", group=arm_label(arm),
                 timepoint=timepoint.label, mean=show(summary.mean), n=summary.n)
    return ChartPoint(summary.mean, summary.low, summary.high, text)


# --------------------------------------------------------------------------- display helpers


def arm_label(arm: ArmColumn) -> str:
    return arm.name or arm.code or _("No dose group")


def scale_title(scale: ScaleInfo) -> str:
    return f"{scale.name} ({scale.code})"


def number(value: float | None) -> str:
    """One decimal, for display only (stored values keep full precision); never ``-0.0``."""
    if value is None:
        return "\u2013"
    shown = f"{value:.1f}"
    return "0.0" if shown == "-0.0" else shown


def signed_number(value: float | None) -> str:
    """A change with its sign: +5.0, \u22123.3, 0.0."""
    if value is None:
        return "\u2013"
    shown = number(value)
    if shown == "0.0":
        return shown
    return shown.replace("-", "\u2212") if value < 0 else f"+{shown}"


def threshold_text(threshold: float) -> str:
    return f"{threshold:g}"


def interval(summary: Summary, *, signed: bool = False) -> str:
    if summary.low is None or summary.high is None:
        return "\u2013"
    show = signed_number if signed else number
    return str(_("%(low)s to %(high)s", low=show(summary.low), high=show(summary.high)))


def _helpers() -> dict[str, Callable[..., str]]:
    return {"arm_label": arm_label, "scale_title": scale_title, "number": number, "signed_number": signed_number,
            "interval": interval, "threshold_text": threshold_text, "percent": format_percent}
