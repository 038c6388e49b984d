"""Small server-rendered SVG charts for staff pages (no JavaScript, no inline styles).

A trend chart shows one 0-100 score over a participant's timepoints. The y axis is always
0-100, so charts of different scales and participants can be compared at a glance. A
timepoint without a score breaks the line rather than bridging it: joining the points either
side would draw a value nobody measured. Screen readers get every value as text in the
``<desc>``, rounded to one decimal like every displayed score (stored scores keep full
precision).

The markup obeys the Content-Security-Policy: presentation attributes and class names only,
never ``style=`` or ``<style>``/``<script>``. Every piece of text is escaped.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

#: Characters XML forbids (an SVG must stay well-formed whatever a label contains).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_LABEL_CHARS = 14
_FONT_SIZE = 11
_LINE = "#1f5f9e"
_GRID = "#c3cad3"
_TEXT = "#39424c"
_GRIDLINES = (0, 50, 100)


@dataclass(frozen=True)
class _Box:
    """The plotting area inside the chart, in viewBox units."""

    left: float
    top: float
    width: float
    height: float

    @property
    def bottom(self) -> float:
        return self.top + self.height

    @property
    def right(self) -> float:
        return self.left + self.width

    def y(self, value: float) -> float:
        clamped = min(100.0, max(0.0, value))
        return self.top + (100.0 - clamped) / 100.0 * self.height


def trend_svg(
    points: Sequence[tuple[str, float | None]],
    *,
    title: str,
    y_label: str,
    width: int = 320,
    height: int = 160,
    missing_text: str = "not scored",
    empty_text: str = "No scores yet.",
) -> Markup:
    """A line chart of a 0-100 score over timepoints, as inline SVG markup.

    ``points`` are ``(timepoint label, score or None)`` in timepoint order. ``title``,
    ``y_label``, ``missing_text`` and ``empty_text`` arrive translated from the caller.
    """
    if width < 120 or height < 80:
        raise ValueError("a trend chart needs at least 120 x 80 units")
    values = [(_clean(label), _score(value)) for label, value in points]
    box = _Box(left=44.0, top=10.0, width=width - 44.0 - 10.0, height=height - 10.0 - 30.0)
    chart_id = _chart_id(title, y_label, values)
    described = "; ".join(
        f"{label}: {missing_text if value is None else _display(value)}" for label, value in values
    ) or empty_text

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="trend-chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" '
        f'font-family="sans-serif" font-size="{_FONT_SIZE}" direction="ltr">',
        f'<title id="{chart_id}-title">{_text(title)}</title>',
        f'<desc id="{chart_id}-desc">{_text(described)}</desc>',
        _grid(box),
        _axis_label(box, y_label),
        _x_labels(box, [label for label, _ in values]),
        _lines(box, values),
        _dots(box, values),
        "</svg>",
    ]
    return Markup("".join(parts))


def _grid(box: _Box) -> str:
    lines = []
    ticks = []
    for level in _GRIDLINES:
        y = _n(box.y(level))
        lines.append(f'<line x1="{_n(box.left)}" y1="{y}" x2="{_n(box.right)}" y2="{y}"/>')
        ticks.append(f'<text x="{_n(box.left - 6)}" y="{y}" dy="0.35em">{level}</text>')
    return (
        f'<g class="trend-grid" stroke="{_GRID}" stroke-width="1">{"".join(lines)}</g>'
        f'<g class="trend-ticks" fill="{_TEXT}" text-anchor="end">{"".join(ticks)}</g>'
    )


def _axis_label(box: _Box, y_label: str) -> str:
    x = _n(12)
    y = _n(box.top + box.height / 2)
    return (
        f'<text class="trend-axis-label" fill="{_TEXT}" text-anchor="middle" '
        f'transform="rotate(-90 {x} {y})" x="{x}" y="{y}">{_text(y_label)}</text>'
    )


def _x(box: _Box, index: int, count: int) -> float:
    """The centre of the index-th of ``count`` equal bands (labels never hang off the edge)."""
    return box.left + (index + 0.5) * box.width / count


def _x_labels(box: _Box, labels: Sequence[str]) -> str:
    """Timepoint labels under the axis, left to right, leaving out any that would overlap the
    one before (the value list in ``<desc>`` and each dot's tooltip still name them all)."""
    texts = []
    free_from = -math.inf  # the first x not yet covered by a label
    for index, label in enumerate(labels):
        shown = _shorten(label)
        x = _x(box, index, len(labels))
        half = len(shown) * _FONT_SIZE * 0.55 / 2
        if x - half < free_from:
            continue
        texts.append(f'<text x="{_n(x)}" y="{_n(box.bottom + 16)}">{_text(shown)}</text>')
        free_from = x + half + 6
    if not texts:
        return ""
    return f'<g class="trend-xlabels" fill="{_TEXT}" text-anchor="middle">{"".join(texts)}</g>'


def _lines(box: _Box, values: Sequence[tuple[str, float | None]]) -> str:
    """One polyline per run of consecutive scored timepoints: a missing score is a gap."""
    runs: list[list[str]] = [[]]
    for index, (_label, value) in enumerate(values):
        if value is None:
            runs.append([])
            continue
        runs[-1].append(f"{_n(_x(box, index, len(values)))},{_n(box.y(value))}")
    polylines = [f'<polyline points="{" ".join(run)}"/>' for run in runs if len(run) >= 2]
    if not polylines:
        return ""
    return (
        f'<g class="trend-line" fill="none" stroke="{_LINE}" stroke-width="2" '
        f'stroke-linejoin="round" stroke-linecap="round">{"".join(polylines)}</g>'
    )


def _dots(box: _Box, values: Sequence[tuple[str, float | None]]) -> str:
    dots = [
        f'<circle cx="{_n(_x(box, index, len(values)))}" cy="{_n(box.y(value))}" r="3.5">'
        f"<title>{_text(label)}: {_display(value)}</title></circle>"
        for index, (label, value) in enumerate(values)
        if value is not None
    ]
    if not dots:
        return ""
    return f'<g class="trend-points" fill="{_LINE}" stroke="#ffffff" stroke-width="1">{"".join(dots)}</g>'


def _score(value: float | None) -> float | None:
    """A plottable score, or None for a missing one (NaN and infinities are not scores)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _display(value: float) -> str:
    """One decimal, for display only (never ``-0.0``)."""
    shown = f"{value:.1f}"
    return "0.0" if shown == "-0.0" else shown


def _clean(label: str) -> str:
    return _CONTROL.sub("", str(label)).strip()


def _shorten(label: str) -> str:
    return label if len(label) <= _LABEL_CHARS else label[: _LABEL_CHARS - 1].rstrip() + "\u2026"


def _text(value: str) -> str:
    return str(escape(_clean(value)))


def _n(number: float) -> str:
    """A coordinate with at most one decimal and no trailing zeros."""
    return f"{number:.1f}".rstrip("0").rstrip(".")


def _chart_id(title: str, y_label: str, values: Sequence[tuple[str, float | None]]) -> str:
    """An id for ARIA references, stable for the same chart and distinct between charts
    (a page may show one chart per scale)."""
    digest = hashlib.sha256(repr((title, y_label, list(values))).encode("utf-8")).hexdigest()
    return f"trend-{digest[:12]}"
