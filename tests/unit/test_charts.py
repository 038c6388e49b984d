"""The server-rendered trend chart: well-formed SVG, gaps for missing scores, escaped text,
every value readable by a screen reader, nothing the Content-Security-Policy forbids."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from markupsafe import Markup

from pro_app.web.staff.charts import trend_svg

SVG = "{http://www.w3.org/2000/svg}"
POINTS: list[tuple[str, float | None]] = [
    ("Baseline", 58.333333333333336),
    ("Week 6", 66.66666666666667),
    ("Week 12", None),
    ("Week 18", 100.0),
    ("Week 24", 0.0),
]


def parse(markup: Markup) -> ET.Element:
    return ET.fromstring(str(markup))


def polylines(root: ET.Element) -> list[list[tuple[float, float]]]:
    return [
        [(float(x), float(y)) for x, y in (pair.split(",") for pair in line.attrib["points"].split())]
        for line in root.iter(f"{SVG}polyline")
    ]


def dots(root: ET.Element) -> list[tuple[float, float]]:
    return [(float(c.attrib["cx"]), float(c.attrib["cy"])) for c in root.iter(f"{SVG}circle")]


def test_chart_is_an_accessible_image_with_every_value_described() -> None:
    markup = trend_svg(POINTS, title="Physical functioning", y_label="Score (0-100)")
    assert isinstance(markup, Markup)
    root = parse(markup)

    assert root.tag == f"{SVG}svg" and root.attrib["role"] == "img"
    title = root.find(f"{SVG}title")
    desc = root.find(f"{SVG}desc")
    assert title is not None and desc is not None
    assert title.text == "Physical functioning"
    assert desc.text == "Baseline: 58.3; Week 6: 66.7; Week 12: not scored; Week 18: 100.0; Week 24: 0.0"
    assert root.attrib["aria-labelledby"] == f"{title.attrib['id']} {desc.attrib['id']}"
    assert root.attrib["viewBox"] == "0 0 320 160"


def test_a_missing_score_breaks_the_line_and_has_no_dot() -> None:
    root = parse(trend_svg(POINTS, title="PF2", y_label="Score"))

    lines = polylines(root)
    assert [len(line) for line in lines] == [2, 2]  # Baseline-Week 6, then Week 18-Week 24
    assert len(dots(root)) == 4
    # Every line vertex is one of the dots; time runs left to right.
    assert {vertex for line in lines for vertex in line} == set(dots(root))
    xs = [x for x, _ in dots(root)]
    assert xs == sorted(xs)


def test_values_sit_on_a_fixed_0_to_100_axis_with_gridlines() -> None:
    root = parse(trend_svg(POINTS, title="PF2", y_label="Score"))

    grid = {float(line.attrib["y1"]) for line in root.iter(f"{SVG}line")}
    ticks = {t.text: float(t.attrib["y"]) for t in root.iter(f"{SVG}text") if t.text in ("0", "50", "100")}
    assert set(ticks) == {"0", "50", "100"} and set(ticks.values()) == grid
    y = {label: cy for (label, value), (_, cy) in zip([p for p in POINTS if p[1] is not None], dots(root))}
    assert y["Week 18"] == ticks["100"] and y["Week 24"] == ticks["0"]
    # 58.3 is plotted at full precision (rounded only to the SVG's tenth of a unit).
    expected = ticks["100"] + (ticks["0"] - ticks["100"]) * (100 - 58.333333333333336) / 100
    assert y["Baseline"] == pytest.approx(expected, abs=0.05)
    assert "Score" in [t.text for t in root.iter(f"{SVG}text")]


def test_text_is_escaped_and_nothing_inline_is_emitted() -> None:
    evil = '<script>alert("x")</script>'
    markup = trend_svg([(evil, 50.0), ("Week 6 & <b>", None)], title=f"{evil} & co", y_label='"><img onerror=1>')
    text = str(markup)

    assert "<script" not in text and "<img" not in text and "<b>" not in text
    root = parse(markup)  # still well-formed XML
    desc = root.find(f"{SVG}desc")
    title = root.find(f"{SVG}title")
    assert desc is not None and desc.text == f"{evil}: 50.0; Week 6 & <b>: not scored"
    assert title is not None and title.text == f"{evil} & co"
    for element in root.iter():
        assert element.tag not in (f"{SVG}script", f"{SVG}style", f"{SVG}foreignObject")
        assert "style" not in element.attrib
        assert not [name for name in element.attrib if name.lower().startswith("on")]


def test_control_characters_cannot_break_the_markup() -> None:
    root = parse(trend_svg([("Day\x00 1\x1b", 10.0)], title="T\x07", y_label="Y"))
    desc = root.find(f"{SVG}desc")
    assert desc is not None and desc.text == "Day 1: 10.0"


def test_no_points_gives_an_empty_chart_that_says_so() -> None:
    root = parse(trend_svg([], title="Fatigue", y_label="Score", empty_text="No scores yet."))
    desc = root.find(f"{SVG}desc")
    assert desc is not None and desc.text == "No scores yet."
    assert not polylines(root) and not dots(root)


def test_single_and_isolated_scores_are_dots_without_lines() -> None:
    root = parse(trend_svg([("Baseline", 40.0), ("Week 6", None), ("Week 12", 45.0)], title="T", y_label="Y"))
    assert not polylines(root)
    assert len(dots(root)) == 2


def test_not_a_number_counts_as_not_scored_and_display_rounds_to_one_decimal() -> None:
    root = parse(trend_svg(
        [("a", float("nan")), ("b", 99.96), ("c", 0.04), ("d", -0.0)], title="T", y_label="Y",
        missing_text="sin puntuación",
    ))
    desc = root.find(f"{SVG}desc")
    assert desc is not None and desc.text == "a: sin puntuación; b: 100.0; c: 0.0; d: 0.0"
    tooltips = [t.text for c in root.iter(f"{SVG}circle") for t in c.iter(f"{SVG}title")]
    assert tooltips == ["b: 100.0", "c: 0.0", "d: 0.0"]


def test_crowded_labels_are_thinned_but_every_timepoint_is_described() -> None:
    points: list[tuple[str, float | None]] = [(f"Week {6 * n}", float(n * 4)) for n in range(25)]
    root = parse(trend_svg(points, title="T", y_label="Y"))
    shown = [t.text for t in root.iter(f"{SVG}text") if t.text and t.text.startswith("Week")]
    assert shown[0] == "Week 0" and 1 < len(shown) < len(points)
    desc = root.find(f"{SVG}desc")
    assert desc is not None and desc.text is not None and desc.text.count("Week") == 25
    assert len(dots(root)) == 25


def test_charts_of_different_scales_get_different_ids() -> None:
    first = parse(trend_svg(POINTS, title="PF2", y_label="Score"))
    second = parse(trend_svg(POINTS, title="RF2", y_label="Score"))
    assert first.attrib["aria-labelledby"] != second.attrib["aria-labelledby"]


def test_size_is_configurable_and_sane() -> None:
    root = parse(trend_svg(POINTS, title="T", y_label="Y", width=480, height=240))
    assert (root.attrib["width"], root.attrib["height"], root.attrib["viewBox"]) == ("480", "240", "0 0 480 240")
    with pytest.raises(ValueError):
        trend_svg(POINTS, title="T", y_label="Y", width=40, height=20)
