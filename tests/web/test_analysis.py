"""The analysts' pages: completion, mean scores with confidence intervals and change from
baseline by dose group, their charts (SVG and PNG) and who may see which numbers.

The study is built by hand with stored scores, so every number below can be checked with a
pocket calculator (t(0.975, 2) = 4.302653, t(0.975, 1) = 12.706205).
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from pro_app.db.models import (
    Arm,
    Assessment,
    AuditEvent,
    Participant,
    ScaleScore,
    ScheduleTemplate,
    Site,
    Study,
    Timepoint,
)
from pro_app.services.analysis import change_from_baseline, study_overview
from pro_app.web.staff import analysis
from pro_app.web.staff.analysis_charts import ChartPoint, ChartSeries, ChartSpec, draw, render_png, render_svg
from tests.factories import make_staff, sign_in

SVG = "{http://www.w3.org/2000/svg}"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NOW = datetime.now(timezone.utc)
# Timepoint code -> (label, template position, days before now it was planned)
TIMEPOINTS = {"baseline": ("Baseline", 0, 100), "d28": ("Day 28", 1, 72), "d90": ("Day 90", 2, 10)}


@pytest.fixture
def app(app: Flask) -> Flask:
    """The app with the analysis pages, whether or not create_app registers them yet."""
    if "analysis" not in app.blueprints:
        app.register_blueprint(analysis.bp)
    return app


@dataclass
class World:
    study: Study
    site_a: Site
    site_b: Site
    arms: dict[str, Arm]


def _study(session: Session, code: str) -> World:
    study = Study(code=code, name=f"Study {code}", timezone="Europe/Berlin")
    site_a = Site(code="A", name="Site A", timezone="Europe/Berlin")
    site_b = Site(code="B", name="Site B", timezone="Asia/Shanghai")
    study.sites = [site_a, site_b]
    study.arms = [Arm(code="low", name="Low dose"), Arm(code="medium", name="Medium dose"),
                  Arm(code="high", name="High dose")]
    session.add(study)
    session.flush()
    return World(study, site_a, site_b, {arm.code: arm for arm in study.arms})


def _participant(session: Session, world: World, subject: str, arm: str, site: Site,
                 visits: dict[str, tuple[str, dict[str, float | None]]], timepoints: dict[str, Timepoint]) -> None:
    """One participant with an assessment per visit: code -> (status, {scale: score})."""
    participant = Participant(study_id=world.study.id, site_id=site.id, arm_id=world.arms[arm].id,
                              subject_code=subject, timezone=site.timezone)
    session.add(participant)
    session.flush()
    for code, (status, scores) in visits.items():
        label, _position, days_ago = TIMEPOINTS[code]
        if status == "future":
            days_ago, status = -10, "scheduled"
        planned = NOW - timedelta(days=days_ago)
        assessment = Assessment(
            participant_id=participant.id, timepoint_id=timepoints[code].id, timepoint_code=code,
            timepoint_label=label, occurrence=0, instrument_code="qlq_c30", instrument_version="3.0",
            text_source="demo", planned_at=planned, window_opens_at=planned - timedelta(days=1),
            window_closes_at=planned + timedelta(days=3), status=status,
            submitted_at=planned if status == "completed" else None,
        )
        session.add(assessment)
        session.flush()
        for scale, value in scores.items():
            session.add(ScaleScore(assessment_id=assessment.id, scale_code=scale, value=value,
                                   items_answered=0 if value is None else 2, algorithm_version="test"))
    session.flush()


@pytest.fixture
def world(db_session: Session) -> World:
    """Three dose groups; H1 is the only participant at site B.

    PF2 (functional) and FA (symptom) scores:
      L1 low    baseline PF2 60 FA 40 | d28 PF2 80 FA 20 | d90 missed
      L2 low    baseline PF2 70 FA 30 | d28 PF2 65 FA 45 | d90 not open yet
      L3 low    baseline PF2 80       | d28 PF2 not scorable | d90 cancelled
      M1 medium baseline PF2 40       | d28 open, not answered
      H1 high   baseline PF2 10       | d28 PF2 20          (site B)
      H2 high   baseline missed       | d28 PF2 50 | d90 PF2 70  (baseline = d28, the first completed)
    """
    world = _study(db_session, "ANA-1")
    template = ScheduleTemplate(study_id=world.study.id, name="Test schedule")
    template.timepoints = [
        Timepoint(code=code, label=label, position=position, anchor_kind="enrolment", offset=position * 28)
        for code, (label, position, _days) in TIMEPOINTS.items()
    ]
    db_session.add(template)
    db_session.flush()
    tps = {tp.code: tp for tp in template.timepoints}
    a, b = world.site_a, world.site_b
    _participant(db_session, world, "L1", "low", a, {
        "baseline": ("completed", {"PF2": 60.0, "FA": 40.0, "QL2": 50.0}),
        "d28": ("completed", {"PF2": 80.0, "FA": 20.0, "QL2": None}), "d90": ("missed", {})}, tps)
    _participant(db_session, world, "L2", "low", a, {
        "baseline": ("completed", {"PF2": 70.0, "FA": 30.0}), "d28": ("completed", {"PF2": 65.0, "FA": 45.0}),
        "d90": ("future", {})}, tps)
    _participant(db_session, world, "L3", "low", a, {
        "baseline": ("completed", {"PF2": 80.0}), "d28": ("completed", {"PF2": None}), "d90": ("cancelled", {})}, tps)
    _participant(db_session, world, "M1", "medium", a, {
        "baseline": ("completed", {"PF2": 40.0}), "d28": ("open", {})}, tps)
    _participant(db_session, world, "H1", "high", b, {
        "baseline": ("completed", {"PF2": 10.0}), "d28": ("completed", {"PF2": 20.0})}, tps)
    _participant(db_session, world, "H2", "high", a, {
        "baseline": ("missed", {}), "d28": ("completed", {"PF2": 50.0}), "d90": ("completed", {"PF2": 70.0})}, tps)
    make_staff(db_session, "admin", [], "admin@ana.org")
    make_staff(db_session, "analyst", [a], "analyst.a@ana.org")
    make_staff(db_session, "nurse", [a], "nurse.a@ana.org")
    db_session.commit()
    return world


def _signed_in(app: Flask, email: str) -> FlaskClient:
    client = app.test_client()
    assert sign_in(client, email).status_code == 303
    return client


def _ids(world: World) -> dict[str, int | None]:
    return {code: arm.id for code, arm in world.arms.items()}


# --------------------------------------------------------------------------- the numbers


def test_overview_numbers_for_every_site(db_session: Session, world: World) -> None:
    result = study_overview(db_session, world.study, site_ids=None, now=NOW)
    arm = _ids(world)
    assert [tp.label for tp in result.timepoints] == ["Baseline", "Day 28", "Day 90"]
    assert [a.name for a in result.arms] == ["Low dose", "Medium dose", "High dose"]
    assert [s.code for s in result.scales][:2] == ["QL2", "PF2"] and result.scales[-1].code == "C30SUM"
    assert len(result.scales) == 16

    def completion(tp: str, group: str) -> tuple[int, int]:
        cell = result.completion_for((tp, 0), arm[group])
        return cell.completed, cell.expected

    assert completion("baseline", "low") == (3, 3)
    assert completion("baseline", "high") == (1, 2)  # H2 missed it
    assert completion("d28", "medium") == (0, 1)  # open, not answered
    assert completion("d90", "low") == (0, 1)  # missed counts; not yet open and cancelled do not
    assert completion("d90", "high") == (1, 1)
    assert result.completion_total(("baseline", 0)).expected == 6

    base = result.summary("PF2", ("baseline", 0), arm["low"])  # 60, 70, 80
    assert (base.n, base.mean, base.sd) == (3, pytest.approx(70.0), pytest.approx(10.0))
    assert base.low == pytest.approx(70 - 24.841377, abs=1e-5) and base.high == pytest.approx(70 + 24.841377, abs=1e-5)
    d28 = result.summary("PF2", ("d28", 0), arm["low"])  # 80, 65 (L3 not scorable)
    assert (d28.n, d28.mean) == (2, pytest.approx(72.5))
    assert d28.high == pytest.approx(72.5 + 12.706205 * 7.5, abs=1e-4)
    medium = result.summary("PF2", ("baseline", 0), arm["medium"])
    assert (medium.n, medium.mean, medium.low, medium.high) == (1, 40.0, None, None)
    assert result.summary("PF2", ("d28", 0), arm["high"]).mean == pytest.approx(35.0)  # 20 (site B) and 50
    assert result.summary("QL2", ("d28", 0), arm["low"]).n == 0  # NULL score: missing, not zero
    assert result.demo_wording


def test_change_from_baseline_numbers(db_session: Session, world: World) -> None:
    change = change_from_baseline(db_session, world.study, site_ids=None)
    arm = _ids(world)
    assert [tp.code for tp in change.timepoints] == ["d28", "d90"]
    low = change.cell("PF2", ("d28", 0), arm["low"])  # +20 and -5
    assert (low.change.n, low.change.mean) == (2, pytest.approx(7.5))
    assert (low.improved, low.stable, low.worsened) == (1, 1, 0)
    fatigue = change.cell("FA", ("d28", 0), arm["low"])  # -20 (better) and +15 (worse): symptom scale
    assert (fatigue.change.mean, fatigue.improved, fatigue.stable, fatigue.worsened) == (pytest.approx(-2.5), 1, 0, 1)
    high = change.cell("PF2", ("d28", 0), arm["high"])  # H1 +10 exactly; H2's d28 is its own baseline
    assert (high.change.n, high.change.mean, high.improved) == (1, pytest.approx(10.0), 1)
    later = change.cell("PF2", ("d90", 0), arm["high"])  # H2: 70 - 50
    assert (later.change.n, later.change.mean) == (1, pytest.approx(20.0))
    assert change.cell("PF2", ("d28", 0), arm["medium"]).change.n == 0


def test_site_scoping_leaves_other_sites_out(db_session: Session, world: World) -> None:
    result = study_overview(db_session, world.study, site_ids=[world.site_a.id], now=NOW)
    arm = _ids(world)
    assert result.completion_for(("baseline", 0), arm["high"]).expected == 1  # H2 only
    assert result.summary("PF2", ("baseline", 0), arm["high"]).n == 0
    assert result.summary("PF2", ("d28", 0), arm["high"]).mean == pytest.approx(50.0)
    assert result.change.cell("PF2", ("d28", 0), arm["high"]).change.n == 0


# --------------------------------------------------------------------------- the pages


def _section(body: str, anchor: str) -> str:
    start = body.index(anchor)
    return body[start:body.index("</table>", start)]


def test_overview_page_shows_the_table_values(app: Flask, world: World) -> None:
    client = _signed_in(app, "admin@ana.org")
    response = client.get(f"/staff/analysis/{world.study.id}")
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert " style=" not in body and "<style" not in body
    assert "Demo wording" in body
    completion = _section(body, 'id="completion-title"')
    assert "3 / 3" in completion and "1 / 2" in completion and "0 / 1" in completion
    pf2 = _section(body, 'id="score-PF2"')
    assert "Physical functioning (PF2)" in pf2 and "<svg" in pf2
    for shown in ("70.0", "45.2 to 94.8", "72.5", "-22.8 to 167.8", "40.0", "35.0"):
        assert shown in pf2, shown
    change = _section(body, 'id="change-title"')
    assert "+7.5" in change and "1 / 1 / 0" in change and "1 / 0 / 1" in change
    assert f"/staff/analysis/{world.study.id}/chart/PF2.png" in body


def test_change_page(app: Flask, world: World) -> None:
    client = _signed_in(app, "admin@ana.org")
    response = client.get(f"/staff/analysis/{world.study.id}/change")
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert " style=" not in body
    fatigue = _section(body, 'id="change-FA"')
    assert "Change from baseline (points)" in fatigue and "\u22122.5" in fatigue
    assert "measure=change" in body


def test_analyst_of_site_a_sees_only_site_a(app: Flask, world: World) -> None:
    client = _signed_in(app, "analyst.a@ana.org")
    body = client.get(f"/staff/analysis/{world.study.id}").get_data(as_text=True)
    assert "Only the participants of your sites are included: Site A." in body
    pf2 = _section(body, 'id="score-PF2"')
    assert "50.0" in pf2 and "35.0" not in pf2 and "10.0" not in pf2, "site B's H1 leaked into the numbers"
    svg = client.get(f"/staff/analysis/{world.study.id}/chart/PF2.svg").get_data(as_text=True)
    assert "mean 35.0" not in svg and "mean 50.0" in svg


# --------------------------------------------------------------------------- the charts


def _texts(root: ET.Element) -> list[str]:
    return [text.text or "" for text in root.iter(f"{SVG}text")]


def test_svg_download_is_a_readable_chart(app: Flask, world: World, db_session: Session) -> None:
    client = _signed_in(app, "admin@ana.org")
    response = client.get(f"/staff/analysis/{world.study.id}/chart/PF2.svg")
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"
    assert response.headers["Content-Disposition"] == 'attachment; filename="ANA-1-PF2-score.svg"'
    assert b"style=" not in response.data
    root = ET.fromstring(response.data)  # well-formed XML
    assert root.tag == f"{SVG}svg" and root.attrib["role"] == "img"
    texts = _texts(root)
    assert "Physical functioning (PF2)" in texts
    assert "Score (0-100)" in texts and "Timepoint" in texts
    assert {"Low dose", "Medium dose", "High dose"} <= set(texts), "a legend entry per dose group"
    assert {"Baseline", "Day 28", "Day 90"} <= set(texts)
    assert len(list(root.iter(f"{SVG}polyline"))) >= 2  # low and high have consecutive means
    tooltips = [t.text or "" for t in root.iter(f"{SVG}title")]
    assert any("Low dose, Baseline: mean 70.0 (95% CI 45.2 to 94.8), n = 3" in t for t in tooltips)
    assert db_session.scalars(select(AuditEvent).where(AuditEvent.action == "export.analysis_chart")).all()

    change = client.get(f"/staff/analysis/{world.study.id}/chart/FA.svg?measure=change")
    assert change.status_code == 200
    assert "Change from baseline (points)" in _texts(ET.fromstring(change.data))
    assert client.get(f"/staff/analysis/{world.study.id}/chart/PF2.svg?measure=median").status_code == 400


def test_inline_charts_obey_the_csp(app: Flask, world: World) -> None:
    client = _signed_in(app, "admin@ana.org")
    body = client.get(f"/staff/analysis/{world.study.id}").get_data(as_text=True)
    svgs = re.findall(r"<svg.*?</svg>", body, re.S)
    assert len(svgs) == 16
    for svg in svgs:
        ET.fromstring(svg)
    ids = re.findall(r'<title id="([^"]+)"', body)
    assert len(ids) == len(set(ids)) == 16, "ARIA ids are unique on the page"


def test_png_download(app: Flask, world: World) -> None:
    client = _signed_in(app, "admin@ana.org")
    response = client.get(f"/staff/analysis/{world.study.id}/chart/PF2.png")
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert response.headers["Content-Disposition"] == 'attachment; filename="ANA-1-PF2-score.png"'
    assert response.data.startswith(PNG_SIGNATURE)
    image = Image.open(io.BytesIO(response.data))
    assert image.width == 1440 and 700 <= image.height <= 1400
    colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 10, "not a blank picture"
    change = client.get(f"/staff/analysis/{world.study.id}/chart/PF2.png?measure=change")
    assert change.status_code == 200 and change.data.startswith(PNG_SIGNATURE)


# --------------------------------------------------------------------------- access and edge cases


def test_roles_and_unknown_things(app: Flask, world: World, db_session: Session) -> None:
    study = world.study.id
    nurse = _signed_in(app, "nurse.a@ana.org")
    for path in (f"/staff/analysis/{study}", f"/staff/analysis/{study}/change",
                 f"/staff/analysis/{study}/chart/PF2.svg", f"/staff/analysis/{study}/chart/PF2.png"):
        assert nurse.get(path).status_code == 403, path
    anonymous = app.test_client().get(f"/staff/analysis/{study}")
    assert anonymous.status_code == 302 and "/staff/login" in anonymous.headers["Location"]

    admin = _signed_in(app, "admin@ana.org")
    assert admin.get(f"/staff/analysis/{study}/chart/XX.svg").status_code == 404
    assert admin.get(f"/staff/analysis/{study}/chart/pf2.png").status_code == 404
    assert admin.get("/staff/analysis/999999").status_code == 404

    other = _study(db_session, "ANA-OTHER")
    make_staff(db_session, "analyst", [other.site_b], "analyst.other@ana.org")
    db_session.commit()
    outsider = _signed_in(app, "analyst.other@ana.org")
    assert outsider.get(f"/staff/analysis/{study}").status_code == 404, "no site of theirs in this study"
    assert outsider.get(f"/staff/analysis/{study}/chart/PF2.png").status_code == 404


def test_a_study_without_data_shows_an_empty_state(app: Flask, db_session: Session) -> None:
    empty = _study(db_session, "ANA-EMPTY")
    make_staff(db_session, "admin", [], "admin.empty@ana.org")
    db_session.commit()
    client = _signed_in(app, "admin.empty@ana.org")
    page = client.get(f"/staff/analysis/{empty.study.id}")
    assert page.status_code == 200
    assert "nothing to analyse" in page.get_data(as_text=True)
    change = client.get(f"/staff/analysis/{empty.study.id}/change")
    assert change.status_code == 200 and "No change from baseline yet" in change.get_data(as_text=True)
    svg = client.get(f"/staff/analysis/{empty.study.id}/chart/QL2.svg")
    assert svg.status_code == 200 and "No scores yet." in _texts(ET.fromstring(svg.data))
    png = client.get(f"/staff/analysis/{empty.study.id}/chart/C30SUM.png?measure=change")
    assert png.status_code == 200 and png.data.startswith(PNG_SIGNATURE)


# --------------------------------------------------------------------------- the drawing itself


def _spec(**changes: object) -> ChartSpec:
    values: dict[str, object] = dict(
        ident="score-PF2", title="PF2 <b>&</b>", subtitle="Mean", x_label="Timepoint", y_label="Score (0-100)",
        timepoints=("Baseline", "Week 6", "Week 12", "Week 18"),
        series=(ChartSeries("Low <dose>", (ChartPoint(50, 40, 60, "a"), ChartPoint(55, 45, 65, "b"), None,
                                           ChartPoint(70, 60, 120, "d"))),),
        description="desc", empty_text="No scores yet.",
    )
    values.update(changes)
    return ChartSpec(**values)  # type: ignore[arg-type]


def test_chart_escapes_text_breaks_lines_at_gaps_and_cuts_bars_at_the_axis() -> None:
    drawing = draw(_spec())
    markup = str(render_svg(drawing))
    root = ET.fromstring(markup)
    assert "PF2 <b>&</b>" in _texts(root) and "Low <dose>" in _texts(root)
    lines = list(root.iter(f"{SVG}polyline"))
    assert len(lines) == 1 and len(lines[0].attrib["points"].split()) == 2, "Week 12 is missing: a gap"
    top = min(float(line.attrib["y1"]) for line in root.iter(f"{SVG}line"))
    assert top >= 0, "the interval up to 120 is cut at the top of the axis"
    assert "style=" not in markup and "<script" not in markup


def test_long_and_non_latin_labels_still_draw() -> None:
    labels = tuple(f"Within 72 hours before lymphodepletion {i}" for i in range(60))
    spec = _spec(timepoints=labels, series=(ChartSeries("低剂量", tuple(ChartPoint(50.0) for _ in labels)),),
                 subtitle="平均分和95%置信区间" * 10, y_label="النتيجة (0-100)")
    drawing = draw(spec)
    root = ET.fromstring(str(render_svg(drawing, standalone=True)).encode("utf-8"))
    shown = [t for t in root.iter(f"{SVG}text") if (t.text or "").startswith("Within")]
    assert 0 < len(shown) < 60, "labels that would overlap are thinned out"
    assert all("rotate(-45" in t.attrib.get("transform", "") for t in shown)
    assert all(len(t.text or "") <= 22 for t in shown), "long labels are shortened"
    subtitle_lines = [t for t in root.iter(f"{SVG}text") if "置信" in (t.text or "")]
    assert len(subtitle_lines) >= 2, "a long subtitle wraps"
    png = render_png(drawing, scale=1)
    assert png.startswith(PNG_SIGNATURE) and Image.open(io.BytesIO(png)).width == 720
