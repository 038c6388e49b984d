"""Group charts for the analysts' pages: one line per dose group over timepoints, with
confidence-interval error bars, drawn on the server as SVG and as PNG from the same drawing.

:func:`draw` lays a :class:`ChartSpec` out once into a :class:`Drawing` -- a flat list of
lines, markers and texts in pixel coordinates. :func:`render_svg` and :func:`render_png` only
paint that list, so the picture on the page, the SVG download and the PNG download cannot
disagree.

Readability rules: a title and a subtitle (what is plotted, which direction is better), a
labelled y axis with its unit, timepoint labels under the x axis (turned 45 degrees when they
would not fit side by side, thinned out when even that would overlap), a legend naming every
dose group, and for each group its own colour *and* marker shape (Okabe-Ito palette: safe for
colour-blind readers and in grey-scale print). Groups are nudged sideways at each timepoint so
that overlapping error bars stay distinguishable. A timepoint without a mean breaks the line
rather than bridging it. Error bars longer than the axis are cut at its end (the tables give the
exact limits).

The SVG obeys the pages' Content-Security-Policy: presentation attributes only, never
``style=``, ``<style>`` or ``<script>``; every text is escaped. Screen readers get the whole
series as text in ``<desc>`` and each point's value in its ``<title>``.

PNG text uses DejaVu Sans when installed (``/usr/share/fonts``), else Pillow's built-in font.
Scripts such as Chinese need a font with their glyphs; the SVG, drawn by the browser, has no
such limit.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from markupsafe import Markup, escape
from PIL import Image, ImageDraw, ImageFont

Anchor = Literal["start", "middle", "end"]
Shape = Literal["circle", "square", "triangle", "diamond"]

#: Okabe-Ito colours, in the order dose groups get them (vermillion rather than orange: it
#: keeps enough contrast on white for thin lines).
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#000000", "#56b4e9", "#e69f00")
SHAPES: tuple[Shape, ...] = ("circle", "square", "triangle", "diamond")

_INK = "#1b1f24"
_MUTED = "#56606b"
_GRID = "#dde2e7"
_AXIS = "#56606b"
_ZERO = "#8a939c"
_REFERENCE = "#8a939c"
_BACKGROUND = "#ffffff"

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_LABEL_CHARS = 22
_CHAR_WIDTH = 0.56  # average glyph width of a sans-serif font, in em
_TITLE_SIZE = 15
_TEXT_SIZE = 12
_TICK_SIZE = 11
_FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"), Path("/usr/share/fonts/TTF"))


# --------------------------------------------------------------------------- input


@dataclass(frozen=True)
class ChartPoint:
    """One group's mean at one timepoint, its interval (None without one) and a tooltip."""

    mean: float
    low: float | None = None
    high: float | None = None
    text: str = ""


@dataclass(frozen=True)
class ChartSeries:
    """A dose group: its legend label and a point (or None) per timepoint."""

    label: str
    points: tuple[ChartPoint | None, ...]


@dataclass(frozen=True)
class ChartSpec:
    """Everything a chart shows; all texts arrive translated.

    ``y_range`` None fits a range symmetric around zero (for changes); ``reference_lines`` are
    drawn dashed and explained in the legend by ``reference_label``.
    """

    ident: str
    title: str
    subtitle: str
    x_label: str
    y_label: str
    timepoints: tuple[str, ...]
    series: tuple[ChartSeries, ...]
    description: str
    empty_text: str
    y_range: tuple[float, float] | None = (0.0, 100.0)
    reference_lines: tuple[float, ...] = ()
    reference_label: str = ""
    width: int = 720

    @property
    def has_points(self) -> bool:
        return any(point is not None for series in self.series for point in series.points)


# --------------------------------------------------------------------------- drawing


@dataclass(frozen=True)
class Line:
    x1: float
    y1: float
    x2: float
    y2: float
    colour: str
    width: float = 1.0
    dash: tuple[float, ...] = ()


@dataclass(frozen=True)
class Polyline:
    points: tuple[tuple[float, float], ...]
    colour: str
    width: float = 2.0


@dataclass(frozen=True)
class Marker:
    x: float
    y: float
    shape: Shape
    colour: str
    radius: float = 4.5
    tooltip: str = ""


@dataclass(frozen=True)
class Text:
    """Text centred vertically on ``y``; ``angle`` turns it (degrees, clockwise) about (x, y)."""

    x: float
    y: float
    text: str
    size: float = _TEXT_SIZE
    anchor: Anchor = "start"
    colour: str = _INK
    bold: bool = False
    angle: float = 0.0


Item = Line | Polyline | Marker | Text


@dataclass
class Layer:
    name: str
    items: list[Item] = field(default_factory=list)


@dataclass
class Drawing:
    """The laid-out chart: what both renderers paint."""

    ident: str
    width: int
    height: int
    title: str
    description: str
    layers: list[Layer] = field(default_factory=list)

    def layer(self, name: str) -> Layer:
        layer = Layer(name)
        self.layers.append(layer)
        return layer


def draw(spec: ChartSpec) -> Drawing:
    """Lay the chart out in pixels (see the module docstring for the rules)."""
    width = max(360, spec.width)
    title = _clean(spec.title)
    drawing = Drawing(_ident(spec), width, 0, title, _clean(spec.description))

    head = drawing.layer("title")
    y = 20.0
    for line in _wrap(title, _TITLE_SIZE, width - 24):
        head.items.append(Text(12, y, line, _TITLE_SIZE, bold=True))
        y += 20
    for line in _wrap(_clean(spec.subtitle), _TEXT_SIZE, width - 24):
        head.items.append(Text(12, y, line, _TEXT_SIZE, colour=_MUTED))
        y += 16
    legend_bottom = _legend(drawing.layer("legend"), spec, top=y + 6, width=width)

    low, high = spec.y_range if spec.y_range is not None else _symmetric_range(spec)
    ticks = _ticks(low, high)
    tick_width = max(_text_width(_tick_text(t), _TICK_SIZE) for t in ticks)
    labels = [_shorten(_clean(label)) for label in spec.timepoints]
    left = 28.0 + tick_width + 8.0
    right = width - 16.0
    count = max(1, len(labels))
    band = (right - left) / count
    widest = max((_text_width(label, _TICK_SIZE) for label in labels), default=0.0)
    turned = widest > band - 6
    if turned:
        # A label turned 45 degrees reaches left of its band: keep the first one on the canvas.
        first = _text_width(labels[0], _TICK_SIZE) * math.cos(math.pi / 4) if labels else 0.0
        left = max(left, first - band / 2 + 8)
        band = (right - left) / count
        label_depth = widest * math.sin(math.pi / 4) + 14
    else:
        label_depth = 22.0
    plot_height = 260.0
    top = legend_bottom + 14
    bottom = top + plot_height
    height = int(math.ceil(bottom + label_depth + 30))
    drawing.height = height
    plot = _Plot(left, top, right, bottom, low, high)

    _axes(drawing.layer("axes"), spec, plot, ticks, labels, band, turned, height)
    if not spec.has_points:
        drawing.layer("empty").items.append(
            Text((left + right) / 2, (top + bottom) / 2, _clean(spec.empty_text), _TEXT_SIZE, "middle", _MUTED)
        )
        return drawing
    _series(drawing.layer("series"), spec, plot, band)
    return drawing


@dataclass(frozen=True)
class _Plot:
    left: float
    top: float
    right: float
    bottom: float
    low: float
    high: float

    def y(self, value: float) -> float:
        clamped = min(self.high, max(self.low, value))
        return self.bottom - (clamped - self.low) / (self.high - self.low) * (self.bottom - self.top)


def _legend(layer: Layer, spec: ChartSpec, *, top: float, width: int) -> float:
    """Legend entries left to right, wrapping to further rows; returns the bottom edge."""
    entries: list[tuple[str, int | None]] = [(_clean(s.label), index) for index, s in enumerate(spec.series)]
    if spec.reference_lines and spec.reference_label:
        entries.append((_clean(spec.reference_label), None))
    x, y = 12.0, top
    for label, index in entries:
        entry_width = 30 + _text_width(label, _TEXT_SIZE) + 18
        if x > 12 and x + entry_width > width - 12:
            x, y = 12.0, y + 20
        if index is None:
            layer.items.append(Line(x, y, x + 24, y, _REFERENCE, 1.5, (5, 3)))
        else:
            colour, shape = _style(index)
            layer.items.append(Line(x, y, x + 24, y, colour, 2.0))
            layer.items.append(Marker(x + 12, y, shape, colour))
        layer.items.append(Text(x + 30, y, label, _TEXT_SIZE))
        x += entry_width
    return y + 10


def _axes(
    layer: Layer, spec: ChartSpec, plot: _Plot, ticks: Sequence[float], labels: Sequence[str],
    band: float, turned: bool, height: int,
) -> None:
    items = layer.items
    for tick in ticks:
        y = plot.y(tick)
        colour, line_width = (_ZERO, 1.5) if tick == 0 and plot.low < 0 else (_GRID, 1.0)
        items.append(Line(plot.left, y, plot.right, y, colour, line_width))
        items.append(Text(plot.left - 6, y, _tick_text(tick), _TICK_SIZE, "end", _MUTED))
    for value in spec.reference_lines:
        if plot.low < value < plot.high:
            y = plot.y(value)
            items.append(Line(plot.left, y, plot.right, y, _REFERENCE, 1.5, (5, 3)))
    items.append(Line(plot.left, plot.top, plot.left, plot.bottom, _AXIS, 1.0))
    items.append(Line(plot.left, plot.bottom, plot.right, plot.bottom, _AXIS, 1.0))
    # Thin the labels out when even turned ones would overlap (every k-th is shown): turned
    # 45 degrees, neighbours are band x sin 45 apart and need a line height between them.
    step = max(1, math.ceil((_TICK_SIZE * 1.25) / (band * math.sin(math.pi / 4)))) if turned else 1
    for index, label in enumerate(labels):
        x = plot.left + (index + 0.5) * band
        items.append(Line(x, plot.bottom, x, plot.bottom + 4, _AXIS, 1.0))
        if index % step:
            continue
        if turned:
            items.append(Text(x, plot.bottom + 12, label, _TICK_SIZE, "end", _INK, angle=-45))
        else:
            items.append(Text(x, plot.bottom + 14, label, _TICK_SIZE, "middle", _INK))
    centre = (plot.top + plot.bottom) / 2
    items.append(Text(14, centre, _clean(spec.y_label), _TEXT_SIZE, "middle", _INK, angle=-90))
    items.append(Text((plot.left + plot.right) / 2, height - 12, _clean(spec.x_label), _TEXT_SIZE, "middle"))


def _series(layer: Layer, spec: ChartSpec, plot: _Plot, band: float) -> None:
    groups = len(spec.series)
    nudge = min(8.0, band / (groups + 1)) if groups > 1 else 0.0
    lines: list[Item] = []
    bars: list[Item] = []
    markers: list[Item] = []
    for index, series in enumerate(spec.series):
        colour, shape = _style(index)
        offset = (index - (groups - 1) / 2) * nudge
        run: list[tuple[float, float]] = []
        for position, point in enumerate(series.points):
            if point is None or not math.isfinite(point.mean):
                if len(run) >= 2:
                    lines.append(Polyline(tuple(run), colour))
                run = []
                continue
            x = plot.left + (position + 0.5) * band + offset
            y = plot.y(point.mean)
            run.append((x, y))
            if point.low is not None and point.high is not None:
                top, bottom = plot.y(point.high), plot.y(point.low)
                bars.append(Line(x, top, x, bottom, colour, 1.5))
                bars.append(Line(x - 4, top, x + 4, top, colour, 1.5))
                bars.append(Line(x - 4, bottom, x + 4, bottom, colour, 1.5))
            markers.append(Marker(x, y, shape, colour, tooltip=_clean(point.text)))
        if len(run) >= 2:
            lines.append(Polyline(tuple(run), colour))
    layer.items.extend(lines + bars + markers)


def _style(index: int) -> tuple[str, Shape]:
    return PALETTE[index % len(PALETTE)], SHAPES[index % len(SHAPES)]


def _symmetric_range(spec: ChartSpec) -> tuple[float, float]:
    """A range symmetric around zero holding every mean and interval, in steps of 10 points
    (at least +/-20 so that small changes do not look dramatic; at most +/-100)."""
    extent = max([20.0, *(abs(v) * 1.25 for v in spec.reference_lines)])
    for series in spec.series:
        for point in series.points:
            if point is not None:
                extent = max([extent, *(abs(v) for v in (point.mean, point.low, point.high)
                                        if v is not None and math.isfinite(v))])
    extent = min(100.0, math.ceil(extent / 10.0) * 10.0)
    # End the axis on a labelled tick (e.g. +/-100 rather than +/-90 with ticks every 20).
    step = _tick_step(2 * extent)
    extent = min(100.0, math.ceil(extent / step) * step)
    return (-extent, extent)


def _tick_step(span: float) -> float:
    """The first of 5, 10, 20, 25, 50, 100 giving at most ten intervals."""
    return next(s for s in (5.0, 10.0, 20.0, 25.0, 50.0, 100.0, 1e9) if span / s <= 10)


def _ticks(low: float, high: float) -> list[float]:
    step = _tick_step(high - low)
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + 1e-9:
        ticks.append(0.0 if abs(value) < 1e-9 else value)
        value += step
    return ticks


def _tick_text(value: float) -> str:
    return f"{value:g}".replace("-", "\u2212")


# --------------------------------------------------------------------------- SVG


def render_svg(drawing: Drawing, *, standalone: bool = False) -> Markup:
    """The drawing as SVG markup, inline in a page or (``standalone``) as a file."""
    ident = drawing.ident
    parts = []
    if standalone:
        parts.append('<?xml version="1.0" encoding="UTF-8"?>\n')
    parts.append(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="analysis-chart" viewBox="0 0 {drawing.width} {drawing.height}" '
        f'width="{drawing.width}" height="{drawing.height}" role="img" '
        f'aria-labelledby="{ident}-title {ident}-desc" font-family="DejaVu Sans, Verdana, sans-serif" '
        f'font-size="{_TEXT_SIZE}" direction="ltr">'
        f'<title id="{ident}-title">{_escape(drawing.title)}</title>'
        f'<desc id="{ident}-desc">{_escape(drawing.description)}</desc>'
        f'<rect x="0" y="0" width="{drawing.width}" height="{drawing.height}" fill="{_BACKGROUND}"/>'
    )
    for layer in drawing.layers:
        parts.append(f'<g class="analysis-{layer.name}">')
        parts.extend(_svg_item(item) for item in layer.items)
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))


def _svg_item(item: Item) -> str:
    if isinstance(item, Line):
        dash = f' stroke-dasharray="{" ".join(_n(d) for d in item.dash)}"' if item.dash else ""
        return (f'<line x1="{_n(item.x1)}" y1="{_n(item.y1)}" x2="{_n(item.x2)}" y2="{_n(item.y2)}" '
                f'stroke="{item.colour}" stroke-width="{_n(item.width)}"{dash}/>')
    if isinstance(item, Polyline):
        points = " ".join(f"{_n(x)},{_n(y)}" for x, y in item.points)
        return (f'<polyline points="{points}" fill="none" stroke="{item.colour}" stroke-width="{_n(item.width)}" '
                f'stroke-linejoin="round" stroke-linecap="round"/>')
    if isinstance(item, Marker):
        tooltip = f"<title>{_escape(item.tooltip)}</title>" if item.tooltip else ""
        paint = f'fill="{item.colour}" stroke="{_BACKGROUND}" stroke-width="1"'
        if item.shape == "circle":
            return f'<circle cx="{_n(item.x)}" cy="{_n(item.y)}" r="{_n(item.radius)}" {paint}>{tooltip}</circle>'
        points = " ".join(f"{_n(x)},{_n(y)}" for x, y in _marker_points(item))
        return f'<polygon points="{points}" {paint}>{tooltip}</polygon>'
    weight = ' font-weight="bold"' if item.bold else ""
    turn = f' transform="rotate({_n(item.angle)} {_n(item.x)} {_n(item.y)})"' if item.angle else ""
    return (f'<text x="{_n(item.x)}" y="{_n(item.y)}" dy="0.35em" text-anchor="{item.anchor}" '
            f'font-size="{_n(item.size)}" fill="{item.colour}"{weight}{turn}>{_escape(item.text)}</text>')


def _marker_points(marker: Marker) -> list[tuple[float, float]]:
    x, y, r = marker.x, marker.y, marker.radius
    if marker.shape == "square":
        s = r * 0.9
        return [(x - s, y - s), (x + s, y - s), (x + s, y + s), (x - s, y + s)]
    if marker.shape == "triangle":
        return [(x, y - r * 1.2), (x + r * 1.1, y + r * 0.8), (x - r * 1.1, y + r * 0.8)]
    return [(x, y - r * 1.25), (x + r * 1.1, y), (x, y + r * 1.25), (x - r * 1.1, y)]


# --------------------------------------------------------------------------- PNG


def render_png(drawing: Drawing, *, scale: float = 2.0) -> bytes:
    """The drawing as a PNG ``scale`` times its size (drawn twice as large again and reduced,
    which smooths lines Pillow would otherwise draw jagged)."""
    factor = scale * 2
    size = (round(drawing.width * factor), round(drawing.height * factor))
    image = Image.new("RGB", size, _BACKGROUND)
    pen = ImageDraw.Draw(image)
    for layer in drawing.layers:
        for item in layer.items:
            _png_item(image, pen, item, factor)
    image = image.resize((round(drawing.width * scale), round(drawing.height * scale)), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _png_item(image: Image.Image, pen: ImageDraw.ImageDraw, item: Item, k: float) -> None:
    if isinstance(item, Line):
        start, end = (item.x1 * k, item.y1 * k), (item.x2 * k, item.y2 * k)
        width = max(1, round(item.width * k))
        for a, b in _dashes(start, end, tuple(d * k for d in item.dash)):
            pen.line([a, b], fill=item.colour, width=width)
    elif isinstance(item, Polyline):
        pen.line([(x * k, y * k) for x, y in item.points], fill=item.colour, width=max(1, round(item.width * k)),
                 joint="curve")
    elif isinstance(item, Marker):
        outline = max(1, round(k))
        if item.shape == "circle":
            r = item.radius * k
            pen.ellipse([item.x * k - r, item.y * k - r, item.x * k + r, item.y * k + r], fill=item.colour,
                        outline=_BACKGROUND, width=outline)
        else:
            pen.polygon([(x * k, y * k) for x, y in _marker_points(item)], fill=item.colour, outline=_BACKGROUND,
                        width=outline)
    else:
        _png_text(image, item, k)


def _dashes(
    start: tuple[float, float], end: tuple[float, float], pattern: tuple[float, ...]
) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    if not pattern:
        return [(start, end)]
    length = math.dist(start, end)
    if length == 0:
        return []
    dx, dy = (end[0] - start[0]) / length, (end[1] - start[1]) / length
    segments = []
    travelled, index = 0.0, 0
    while travelled < length:
        step = pattern[index % len(pattern)]
        if index % 2 == 0:
            stop = min(length, travelled + step)
            segments.append(((start[0] + dx * travelled, start[1] + dy * travelled),
                             (start[0] + dx * stop, start[1] + dy * stop)))
        travelled += step
        index += 1
    return segments


def _png_text(image: Image.Image, item: Text, k: float) -> None:
    if not item.text:
        return
    font = _font(round(item.size * k), item.bold)
    left, _top, right, _bottom = font.getbbox(item.text)
    width = right - left
    ascent = font.getmetrics()[0] if isinstance(font, ImageFont.FreeTypeFont) else item.size * k * 0.8
    # Match SVG's dy="0.35em": the baseline sits 0.35 em below the anchor point.
    baseline_shift = item.size * k * 0.35
    shift = {"start": 0.0, "middle": width / 2, "end": float(width)}[item.anchor]
    if not item.angle:
        pen = ImageDraw.Draw(image)
        pen.text((item.x * k - shift - left, item.y * k + baseline_shift - ascent), item.text, font=font,
                 fill=item.colour)
        return
    # Turned text: draw it on its own transparent tile, rotate the tile, and place it so the
    # anchor point lands where the SVG's rotate(angle x y) would put it.
    pad = round(item.size * k)
    tile = Image.new("RGBA", (math.ceil(width) + 2 * pad, round(item.size * k * 1.6) + 2 * pad), (255, 255, 255, 0))
    anchor_x, anchor_y = pad + shift, pad + ascent - baseline_shift
    ImageDraw.Draw(tile).text((pad - left, pad), item.text, font=font, fill=item.colour)
    turned = tile.rotate(-item.angle, expand=True, resample=Image.Resampling.BICUBIC)
    radians = math.radians(item.angle)
    vx, vy = anchor_x - tile.width / 2, anchor_y - tile.height / 2
    rx = vx * math.cos(radians) - vy * math.sin(radians)
    ry = vx * math.sin(radians) + vy * math.cos(radians)
    position = (round(item.x * k - (turned.width / 2 + rx)), round(item.y * k - (turned.height / 2 + ry)))
    image.paste(turned, position, turned)


@functools.lru_cache(maxsize=32)
def _font(size: int, bold: bool) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    for folder in _FONT_DIRS:
        path = folder / name
        if path.is_file():
            try:
                return ImageFont.truetype(str(path), size)
            except OSError:
                continue
    try:
        return ImageFont.load_default(size)
    except (TypeError, OSError):  # an old Pillow, or one built without FreeType
        return ImageFont.load_default()


# --------------------------------------------------------------------------- text helpers


def _clean(text: str) -> str:
    return _CONTROL.sub("", str(text)).strip()


def _escape(text: str) -> str:
    return str(escape(_clean(text)))


def _shorten(label: str) -> str:
    return label if len(label) <= _LABEL_CHARS else label[: _LABEL_CHARS - 1].rstrip() + "\u2026"


def _wrap(text: str, size: float, width: float) -> list[str]:
    """``text`` in lines no wider than ``width`` (estimated): broken between words, or between
    characters in scripts written without spaces."""
    if _text_width(text, size) <= width:
        return [text] if text else []
    words = text.split(" ") if " " in text else list(text)
    joiner = " " if " " in text else ""
    lines: list[str] = []
    current = ""
    for word in words:
        candidate = f"{current}{joiner}{word}" if current else word
        if current and _text_width(candidate, size) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def _text_width(text: str, size: float) -> float:
    # East Asian characters are about one em wide; the rest about half of one.
    return sum(size if ord(ch) >= 0x1100 else size * _CHAR_WIDTH for ch in text)


def _n(number: float) -> str:
    """A coordinate with at most one decimal and no trailing zeros."""
    shown = f"{number:.1f}".rstrip("0").rstrip(".")
    return "0" if shown == "-0" else shown


def _ident(spec: ChartSpec) -> str:
    """An id for ARIA references: readable, and unique between the charts of one page."""
    digest = hashlib.sha256(repr(spec).encode("utf-8")).hexdigest()[:8]
    return f"chart-{_ID_UNSAFE.sub('-', spec.ident).strip('-') or 'x'}-{digest}"
