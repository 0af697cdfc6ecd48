"""TODO docstring."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

import numpy as np

from pseudolabel.errors import InputError

#: Line colours of :func:`sparsification_svg` (CSS), in order of the measures after ``optimal``.
CURVE_COLOURS: tuple[str, ...] = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")


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
            drawn in the given order (the first one thick).
        fractions: kept fractions in (0, 1] (x axis).
        aucs: ``{measure: AUC}`` shown in the legend (x100), optional.
        optimal: the optimal curve (dashed black), optional.
        title: caption above the plot.

    Returns:
        An ``<svg>`` element as a string.
    """
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

    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'role="img" aria-label="{escape(title or "sparsification curves")}" font-family="sans-serif" font-size="11">'
        ),
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
    ]
    if title:
        parts.append(f'<text x="{left}" y="15" font-size="12" font-weight="bold">{escape(title)}</text>')
    for index in range(5):
        value = top * index / 4
        y = y_of(value / 100.0)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e6e6e6"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{value:.1f}%</text>')
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = x_of(tick)
        parts.append(f'<line x1="{x:.1f}" y1="{upper + plot_h}" x2="{x:.1f}" y2="{upper + plot_h + 4}" stroke="black"/>')
        parts.append(f'<text x="{x:.1f}" y="{upper + plot_h + 16}" text-anchor="middle">{tick:g}</text>')
    parts.append(f'<rect x="{left}" y="{upper}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle">kept fraction (most confident first)</text>')
    parts.append(
        f'<text x="12" y="{upper + plot_h / 2:.1f}" text-anchor="middle" transform="rotate(-90 12 {upper + plot_h / 2:.1f})">bad-3 of kept pixels</text>'
    )
    for index, (name, values) in enumerate(series):
        keep = np.isfinite(values)
        if not keep.any():
            continue
        points = " ".join(f"{x_of(f):.1f},{y_of(v):.1f}" for f, v in zip(fractions[keep], values[keep]))
        if name == "optimal":
            colour, style = "black", 'stroke-dasharray="5,3" stroke-width="1.5"'
        else:
            colour = CURVE_COLOURS[index % len(CURVE_COLOURS)]
            style = f'stroke-width="{2.5 if index == 0 else 1.3}"'
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" {style}/>')
        y = upper + 8 + 16 * index
        auc = (aucs or {}).get(name)
        label = name if auc is None or not np.isfinite(auc) else f"{name} {100 * auc:.2f}"
        dash = ' stroke-dasharray="5,3"' if name == "optimal" else ""
        parts.append(f'<line x1="{left + plot_w + 10}" y1="{y}" x2="{left + plot_w + 30}" y2="{y}" stroke="{colour}" stroke-width="2"{dash}/>')
        parts.append(f'<text x="{left + plot_w + 34}" y="{y + 4}">{escape(label)}</text>')
    if aucs:
        parts.append(f'<text x="{left + plot_w + 10}" y="{upper + 8 + 16 * len(series) + 6}" fill="#555">AUC x100</text>')
    parts.append("</svg>")
    return "".join(parts)
