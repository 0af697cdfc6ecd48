"""Plots of confidence evaluation, each written as an SVG element (HTML reports) or a raster image (PNG):
sparsification curves and the reliability diagram.

:func:`sparsification_shapes` (and :func:`reliability_shapes`) lays the plot out once as a list of shapes (lines, polylines, texts,
rectangles, in SVG user units = pixels of the ``width`` x ``height`` canvas); :func:`shapes_to_svg` and
:func:`shapes_to_image` render that same list, so the SVG of ``pseudolabel show`` and the PNG of
``pseudolabel confidence eval --plot`` have the same axes, colours and legend.

numpy and OpenCV only (never torch).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

import cv2
import numpy as np

from pseudolabel.errors import InputError

#: Line colours of the measures (CSS hex), in the order of the curves; the optimal curve is black.
CURVE_COLOURS: tuple[str, ...] = (
    "#d62728",
    "#1f77b4",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
    "#e377c2",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
)
#: Dash pattern of the optimal curve (drawn, skipped), canvas pixels.
DASH: tuple[int, int] = (5, 3)
#: Pixels of the raster image per canvas unit (a 460 x 300 plot becomes a 920 x 600 image).
RASTER_SCALE: int = 2

Number = int | float


@dataclass(frozen=True)
class Line:
    """A straight segment from ``(x1, y1)`` to ``(x2, y2)`` (canvas units, y down); ``width`` None = 1."""

    x1: Number
    y1: Number
    x2: Number
    y2: Number
    colour: str
    width: Number | None = None
    dashed: bool = False


@dataclass(frozen=True)
class Polyline:
    """An open line through ``points`` (``(x, y)`` canvas units)."""

    points: tuple[tuple[float, float], ...]
    colour: str
    width: Number
    dashed: bool = False


@dataclass(frozen=True)
class Text:
    """A text whose baseline starts (``anchor`` start), is centred (middle) or ends (end) at ``(x, y)``.

    ``rotated``: turned 90 degrees counter-clockwise about ``(x, y)`` (reads upwards).
    """

    x: Number
    y: Number
    text: str
    anchor: str = "start"
    size: int = 11
    bold: bool = False
    colour: str | None = None
    rotated: bool = False


@dataclass(frozen=True)
class Rect:
    """An axis-aligned rectangle; ``fill`` / ``stroke`` None = not painted."""

    x: Number
    y: Number
    width: Number
    height: Number
    fill: str | None = None
    stroke: str | None = None


Shape = Line | Polyline | Text | Rect


def sparsification_shapes(
    curves: Mapping[str, Sequence[float] | np.ndarray],
    fractions: Sequence[float] | np.ndarray,
    aucs: Mapping[str, float] | None = None,
    optimal: Sequence[float] | np.ndarray | None = None,
    title: str = "",
    width: int = 460,
    height: int = 300,
) -> list[Shape]:
    """The sparsification plot as shapes on a ``width`` x ``height`` canvas (see :func:`sparsification_svg`)."""
    fractions = np.asarray(fractions, dtype=np.float64)
    series = [(name, np.asarray(values, dtype=np.float64)) for name, values in curves.items()]
    if optimal is not None:
        series.append(("optimal", np.asarray(optimal, dtype=np.float64)))
    for name, values in series:
        if values.shape != fractions.shape:
            raise InputError(f"curve {name!r} has {values.size} values for {fractions.size} fractions")
    finite_tops = [float(np.nanmax(values)) for _, values in series if np.isfinite(values).any()]
    top = max(finite_tops + [1e-3]) * 100.0 * 1.08
    left, right, upper, lower = 46, 150, 26, 34
    plot_w, plot_h = width - left - right, height - upper - lower

    def x_of(fraction: float) -> float:
        return left + fraction * plot_w

    def y_of(rate: float) -> float:
        return upper + plot_h - (rate * 100.0) / top * plot_h

    shapes: list[Shape] = [Rect(0, 0, width, height, fill="white")]
    if title:
        shapes.append(Text(left, 15, title, size=12, bold=True))
    for index in range(5):
        value = top * index / 4
        y = y_of(value / 100.0)
        shapes.append(Line(left, y, left + plot_w, y, "#e6e6e6"))
        shapes.append(Text(left - 4, y + 4, f"{value:.1f}%", anchor="end"))
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = x_of(tick)
        shapes.append(Line(x, upper + plot_h, x, upper + plot_h + 4, "black"))
        shapes.append(Text(x, upper + plot_h + 16, f"{tick:g}", anchor="middle"))
    shapes.append(Rect(left, upper, plot_w, plot_h, stroke="black"))
    shapes.append(Text(left + plot_w / 2, height - 4, "kept fraction (most confident first)", anchor="middle"))
    shapes.append(Text(12, upper + plot_h / 2, "bad-3 of kept pixels", anchor="middle", rotated=True))
    for index, (name, values) in enumerate(series):
        keep = np.isfinite(values)
        if not keep.any():
            continue
        points = tuple((x_of(f), y_of(v)) for f, v in zip(fractions[keep], values[keep]))
        dashed = name == "optimal"
        colour = "black" if dashed else CURVE_COLOURS[index % len(CURVE_COLOURS)]
        shapes.append(Polyline(points, colour, 1.5 if dashed else (2.5 if index == 0 else 1.3), dashed=dashed))
        y = upper + 8 + 16 * index
        auc = (aucs or {}).get(name)
        label = name if auc is None or not np.isfinite(auc) else f"{name} {100 * auc:.2f}"
        shapes.append(Line(left + plot_w + 10, y, left + plot_w + 30, y, colour, width=2, dashed=dashed))
        shapes.append(Text(left + plot_w + 34, y + 4, label))
    if aucs:
        shapes.append(Text(left + plot_w + 10, upper + 8 + 16 * len(series) + 6, "AUC x100", colour="#555"))
    return shapes


# ---------------------------------------------------------------------------------------------
# SVG


def _number(value: Number) -> str:
    """Integers as written, other values with one decimal (SVG coordinates)."""
    return str(value) if isinstance(value, int) else f"{value:.1f}"


def _svg_shape(shape: Shape) -> str:
    dash = f' stroke-dasharray="{DASH[0]},{DASH[1]}"'
    if isinstance(shape, Rect):
        paint = f' fill="{shape.fill or "none"}"' + (f' stroke="{shape.stroke}"' if shape.stroke else "")
        return f'<rect x="{shape.x}" y="{shape.y}" width="{shape.width}" height="{shape.height}"{paint}/>'
    if isinstance(shape, Line):
        style = (f' stroke-width="{shape.width}"' if shape.width is not None else "") + (dash if shape.dashed else "")
        ends = f'x1="{_number(shape.x1)}" y1="{_number(shape.y1)}" x2="{_number(shape.x2)}" y2="{_number(shape.y2)}"'
        return f'<line {ends} stroke="{shape.colour}"{style}/>'
    if isinstance(shape, Polyline):
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in shape.points)
        style = (dash if shape.dashed else "") + f' stroke-width="{shape.width}"'
        return f'<polyline points="{points}" fill="none" stroke="{shape.colour}"{style}/>'
    x, y = _number(shape.x), _number(shape.y)
    attributes = f'x="{x}" y="{y}"'
    if shape.anchor != "start":
        attributes += f' text-anchor="{shape.anchor}"'
    if shape.size != 11:
        attributes += f' font-size="{shape.size}"'
    if shape.bold:
        attributes += ' font-weight="bold"'
    if shape.colour is not None:
        attributes += f' fill="{shape.colour}"'
    if shape.rotated:
        attributes += f' transform="rotate(-90 {x} {y})"'
    return f"<text {attributes}>{escape(shape.text)}</text>"


def shapes_to_svg(shapes: Sequence[Shape], width: int, height: int, label: str) -> str:
    """An inline ``<svg>`` element (11 px sans-serif text, no external reference) drawing ``shapes``."""
    header = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(label)}" font-family="sans-serif" font-size="11">'
    )
    return header + "".join(_svg_shape(shape) for shape in shapes) + "</svg>"


# ---------------------------------------------------------------------------------------------
# raster (OpenCV)

_NAMED_COLOURS = {"black": (0, 0, 0), "white": (255, 255, 255)}
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _rgb(colour: str) -> tuple[int, int, int]:
    """``(r, g, b)`` of ``black``, ``white``, ``#rgb`` or ``#rrggbb``."""
    if colour in _NAMED_COLOURS:
        return _NAMED_COLOURS[colour]
    digits = colour.lstrip("#")
    if len(digits) == 3:
        digits = "".join(2 * digit for digit in digits)
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def _dashes(points: np.ndarray, on: float, off: float) -> list[np.ndarray]:
    """The drawn pieces of a dashed path through ``points`` (float (N, 2)), as (M, 2) point arrays."""
    pieces: list[np.ndarray] = []
    current: list[np.ndarray] = []
    drawing, left_in_phase = True, on
    for start, stop in zip(points[:-1], points[1:]):
        length = float(np.hypot(*(stop - start)))
        position = 0.0
        while position < length:
            step = min(left_in_phase, length - position)
            here = start + (stop - start) * (position / length)
            there = start + (stop - start) * ((position + step) / length)
            if drawing:
                if not current:
                    current.append(here)
                current.append(there)
            position += step
            left_in_phase -= step
            if left_in_phase <= 1e-9:
                if drawing and current:
                    pieces.append(np.asarray(current))
                    current = []
                drawing = not drawing
                left_in_phase = on if drawing else off
    if current:
        pieces.append(np.asarray(current))
    return pieces


def _draw_path(canvas: np.ndarray, points: np.ndarray, colour: str, width: float, dashed: bool, scale: int) -> None:
    thickness = max(1, int(round(width * scale)))
    pieces = _dashes(points, DASH[0], DASH[1]) if dashed else [points]
    for piece in pieces:
        pixels = np.round(piece * scale).astype(np.int32)
        cv2.polylines(canvas, [pixels], False, _rgb(colour), thickness, cv2.LINE_AA)


def _draw_text(canvas: np.ndarray, shape: Text, scale: int) -> None:
    font_scale = shape.size * scale * 0.034
    thickness = max(1, int(round(0.6 * scale))) + (1 if shape.bold else 0)
    (text_w, text_h), baseline = cv2.getTextSize(shape.text, _FONT, font_scale, thickness)
    shift = {"start": 0, "middle": text_w // 2, "end": text_w}[shape.anchor]
    colour = _rgb(shape.colour or "black")
    x, y = int(round(shape.x * scale)), int(round(shape.y * scale))
    if not shape.rotated:
        cv2.putText(canvas, shape.text, (x - shift, y), _FONT, font_scale, colour, thickness, cv2.LINE_AA)
        return
    # Draw on a white strip, turn it counter-clockwise, keep the darker pixels: the baseline ends on
    # column x and the text's anchor point on row y.
    strip = np.full((text_h + baseline + thickness, text_w + thickness, 3), 255, np.uint8)
    cv2.putText(strip, shape.text, (0, text_h), _FONT, font_scale, colour, thickness, cv2.LINE_AA)
    turned = np.rot90(strip)
    top, first = y - (turned.shape[0] - shift), x - text_h
    rows = slice(max(top, 0), min(top + turned.shape[0], canvas.shape[0]))
    cols = slice(max(first, 0), min(first + turned.shape[1], canvas.shape[1]))
    part = turned[rows.start - top : rows.stop - top, cols.start - first : cols.stop - first]
    canvas[rows, cols] = np.minimum(canvas[rows, cols], part)


def shapes_to_image(shapes: Sequence[Shape], width: int, height: int, scale: int = RASTER_SCALE) -> np.ndarray:
    """``shapes`` drawn with OpenCV: ``uint8`` RGB (height * scale, width * scale, 3) on white."""
    canvas = np.full((height * scale, width * scale, 3), 255, np.uint8)
    for shape in shapes:
        if isinstance(shape, Rect):
            corners = (int(round(shape.x * scale)), int(round(shape.y * scale)))
            far = (int(round((shape.x + shape.width) * scale)), int(round((shape.y + shape.height) * scale)))
            if shape.fill:
                cv2.rectangle(canvas, corners, far, _rgb(shape.fill), -1)
            if shape.stroke:
                cv2.rectangle(canvas, corners, far, _rgb(shape.stroke), max(1, scale // 2))
        elif isinstance(shape, Line):
            ends = np.array([[shape.x1, shape.y1], [shape.x2, shape.y2]], dtype=np.float64)
            _draw_path(canvas, ends, shape.colour, shape.width or 0.5, shape.dashed, scale)
        elif isinstance(shape, Polyline):
            _draw_path(canvas, np.asarray(shape.points, dtype=np.float64), shape.colour, shape.width, shape.dashed, scale)
        else:
            _draw_text(canvas, shape, scale)
    return canvas


# ---------------------------------------------------------------------------------------------
# the plot


def sparsification_svg(
    curves: Mapping[str, Sequence[float] | np.ndarray],
    fractions: Sequence[float] | np.ndarray,
    aucs: Mapping[str, float] | None = None,
    optimal: Sequence[float] | np.ndarray | None = None,
    title: str = "",
    width: int = 460,
    height: int = 300,
) -> str:
    """Sparsification curves as an inline SVG element (no external reference).

    Args:
        curves: ``{measure: bad-3 rate of the kept pixels}`` in [0, 1], one value per fraction,
            drawn in the given order (the first one thick) in the colours of :data:`CURVE_COLOURS`.
        fractions: kept fractions in (0, 1] (x axis).
        aucs: ``{measure: AUC}`` in [0, 1] shown in the legend (x100), optional.
        optimal: the optimal curve (dashed black), optional.
        title: caption above the plot.
        width, height: canvas size, pixels.

    Returns:
        An ``<svg>`` element as a string.
    """
    shapes = sparsification_shapes(curves, fractions, aucs, optimal, title, width, height)
    return shapes_to_svg(shapes, width, height, title or "sparsification curves")


def sparsification_image(
    curves: Mapping[str, Sequence[float] | np.ndarray],
    fractions: Sequence[float] | np.ndarray,
    aucs: Mapping[str, float] | None = None,
    optimal: Sequence[float] | np.ndarray | None = None,
    title: str = "",
    width: int = 460,
    height: int = 300,
    scale: int = RASTER_SCALE,
) -> np.ndarray:
    """The plot of :func:`sparsification_svg` as ``uint8`` RGB (height * scale, width * scale, 3)."""
    return shapes_to_image(sparsification_shapes(curves, fractions, aucs, optimal, title, width, height), width, height, scale)


def write_sparsification_plot(
    path: str | os.PathLike[str],
    curves: Mapping[str, Sequence[float] | np.ndarray],
    fractions: Sequence[float] | np.ndarray,
    aucs: Mapping[str, float] | None = None,
    optimal: Sequence[float] | np.ndarray | None = None,
    title: str = "",
    width: int = 460,
    height: int = 300,
) -> None:
    """Write the plot atomically: an SVG file when ``path`` ends with ``.svg``, else an image (PNG, ...)."""
    from pseudolabel.io import atomic_write_bytes, write_image

    if Path(path).suffix.lower() == ".svg":
        svg = sparsification_svg(curves, fractions, aucs, optimal, title, width, height)
        atomic_write_bytes(path, svg.encode())
    else:
        write_image(path, sparsification_image(curves, fractions, aucs, optimal, title, width, height))


# ---------------------------------------------------------------------------------------------
# the reliability diagram


def reliability_shapes(
    tables: Mapping[str, np.ndarray],
    eces: Mapping[str, float] | None = None,
    title: str = "",
    width: int = 460,
    height: int = 320,
) -> list[Shape]:
    """The reliability diagram as shapes on a ``width`` x ``height`` canvas (see :func:`reliability_svg`)."""
    from pseudolabel.confidence.calibration import reliability_curve

    left, right, upper, lower = 46, 150, 26, 34
    plot_w, plot_h = width - left - right, height - upper - lower

    def x_of(value: float) -> float:
        return left + value * plot_w

    def y_of(value: float) -> float:
        return upper + plot_h - value * plot_h

    shapes: list[Shape] = [Rect(0, 0, width, height, fill="white")]
    if title:
        shapes.append(Text(left, 15, title, size=12, bold=True))
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        shapes.append(Line(left, y_of(tick), left + plot_w, y_of(tick), "#e6e6e6"))
        shapes.append(Text(left - 4, y_of(tick) + 4, f"{tick:g}", anchor="end"))
        shapes.append(Line(x_of(tick), upper + plot_h, x_of(tick), upper + plot_h + 4, "black"))
        shapes.append(Text(x_of(tick), upper + plot_h + 16, f"{tick:g}", anchor="middle"))
    names = list(tables)
    if names:
        # Pixel share per bin of the first measure, as grey bars along the bottom (a quarter of the height at most).
        first = np.asarray(tables[names[0]], dtype=np.float64)
        _, _, share = reliability_curve(first)
        bins = first.shape[0]
        tallest = float(share.max()) if share.size and share.max() > 0 else 1.0
        for index, value in enumerate(share):
            if value > 0:
                bar = 0.25 * plot_h * value / tallest
                shapes.append(Rect(x_of(index / bins), upper + plot_h - bar, plot_w / bins, bar, fill="#dddddd"))
    shapes.append(Polyline(((x_of(0.0), y_of(0.0)), (x_of(1.0), y_of(1.0))), "black", 1.2, dashed=True))
    shapes.append(Rect(left, upper, plot_w, plot_h, stroke="black"))
    shapes.append(Text(left + plot_w / 2, height - 4, "confidence (bin mean)", anchor="middle"))
    shapes.append(Text(12, upper + plot_h / 2, "share within 3 px", anchor="middle", rotated=True))
    for index, name in enumerate(names):
        mean_confidence, accuracy, _ = reliability_curve(np.asarray(tables[name], dtype=np.float64))
        keep = np.isfinite(mean_confidence) & np.isfinite(accuracy)
        colour = CURVE_COLOURS[index % len(CURVE_COLOURS)]
        points = tuple((x_of(c), y_of(a)) for c, a in zip(mean_confidence[keep], accuracy[keep]))
        if len(points) > 1:
            shapes.append(Polyline(points, colour, 2.5 if index == 0 else 1.3))
        for x, y in points:
            shapes.append(Rect(x - 2, y - 2, 4, 4, fill=colour))
        y = upper + 8 + 16 * index
        ece = (eces or {}).get(name)
        label = name if ece is None or not np.isfinite(ece) else f"{name} {100 * ece:.2f}"
        shapes.append(Line(left + plot_w + 10, y, left + plot_w + 30, y, colour, width=2))
        shapes.append(Text(left + plot_w + 34, y + 4, label))
    y = upper + 8 + 16 * len(names)
    shapes.append(Line(left + plot_w + 10, y, left + plot_w + 30, y, "black", width=1.2, dashed=True))
    shapes.append(Text(left + plot_w + 34, y + 4, "calibrated"))
    if names:
        shapes.append(Rect(left + plot_w + 12, y + 12, 16, 8, fill="#dddddd"))
        shapes.append(Text(left + plot_w + 34, y + 20, f"pixels of {names[0]}"))
    if eces:
        shapes.append(Text(left + plot_w + 10, y + 40, "ECE %", colour="#555"))
    return shapes


def reliability_svg(
    tables: Mapping[str, np.ndarray], eces: Mapping[str, float] | None = None, title: str = "", width: int = 460, height: int = 320
) -> str:
    """Reliability diagram as an inline SVG element: for each measure, the share of correct pixels
    (``|d - gt| <= 3`` px) against the mean confidence of every non-empty bin, the diagonal of a calibrated
    confidence (dashed), and the first measure's pixel share per bin as grey bars.

    Args:
        tables: ``{measure: float64 (bins, 3)}`` reliability tables
            (:func:`pseudolabel.confidence.calibration.reliability_bins`, possibly summed over images),
            drawn in order in the colours of :data:`CURVE_COLOURS` (the first one thick).
        eces: ``{measure: ECE}`` in [0, 1] shown in the legend (%), optional.
        title: caption above the plot.
        width, height: canvas size, pixels.
    """
    return shapes_to_svg(reliability_shapes(tables, eces, title, width, height), width, height, title or "reliability diagram")


def reliability_image(
    tables: Mapping[str, np.ndarray],
    eces: Mapping[str, float] | None = None,
    title: str = "",
    width: int = 460,
    height: int = 320,
    scale: int = RASTER_SCALE,
) -> np.ndarray:
    """The plot of :func:`reliability_svg` as ``uint8`` RGB (height * scale, width * scale, 3)."""
    return shapes_to_image(reliability_shapes(tables, eces, title, width, height), width, height, scale)


def reliability_plot_height(measures: int, height: int = 320) -> int:
    """Canvas height, pixels, of a reliability diagram of ``measures`` curves: at least ``height``, and
    tall enough for its legend (one line per measure, the diagonal, the pixel bars and the ECE heading)."""
    return max(height, 100 + 16 * (measures + 2))


def write_reliability_plot(
    path: str | os.PathLike[str],
    tables: Mapping[str, np.ndarray],
    eces: Mapping[str, float] | None = None,
    title: str = "",
    width: int = 460,
    height: int = 320,
) -> None:
    """Write the reliability diagram atomically: an SVG file when ``path`` ends with ``.svg``, else an image."""
    from pseudolabel.io import atomic_write_bytes, write_image

    height = reliability_plot_height(len(tables), height)
    if Path(path).suffix.lower() == ".svg":
        atomic_write_bytes(path, reliability_svg(tables, eces, title, width, height).encode())
    else:
        write_image(path, reliability_image(tables, eces, title, width, height))
