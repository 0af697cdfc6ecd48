"""A self-contained HTML report of proxies, confidences, labels and network disparities.

The report is one file: every picture is embedded as a base64 PNG ``data:`` URI and every plot is an
inline SVG element, so it can be mailed, archived or opened offline; it references nothing outside
itself (no script, no style sheet, no font, no image file).

Building blocks:

* :class:`Picture` (a titled RGB image) and :class:`SceneSection` (the pictures, colour bars, curves
  and metrics of one stereo pair);
* :func:`proxy_scene`: the section of one pair of a proxies file (left image, SGM proxy disparity,
  confidence heat map, labels over the image, ground truth, optional network disparities, error
  maps, sparsification curves and the reliability diagram with each measure's expected calibration
  error, metrics), used by :mod:`pseudolabel.viz.show` and ``pseudolabel demo``;
* :func:`render_report` / :func:`write_report`: the HTML page.

numpy, OpenCV and h5py only (never torch).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from pseudolabel import __version__
from pseudolabel.confidence.calibration import ECE_BINS, ece_from_bins
from pseudolabel.confidence.evaluation import pair_reliability
from pseudolabel.confidence.labels import describe_target, label_density
from pseudolabel.confidence.sparsification import (
    DEFAULT_FRACTIONS,
    image_evaluation,
)
from pseudolabel.datasets import read_ground_truth
from pseudolabel.errors import InputError
from pseudolabel.io import atomic_write_bytes, read_image
from pseudolabel.metrics import disparity_metrics
from pseudolabel.store.names import find_pair_file, key_to_name
from pseudolabel.viz.colour import (
    CONFIDENCE_COLORMAP,
    DISPARITY_COLORMAP,
    colour_bar,
    confidence_image,
    disparity_image,
    display_range,
    error_image,
    error_legend,
    gray_rgb,
    labels_overlay,
    resize_for_display,
)
from pseudolabel.viz.plots import reliability_plot_height, reliability_svg, sparsification_svg

if TYPE_CHECKING:
    from pseudolabel.store.proxies import ProxyFile

#: Widest picture stored in a report, pixels (larger ones are shrunk; the page scales them anyway).
MAX_PICTURE_WIDTH: int = 640
#: Conventional measures drawn next to the main one in the sparsification plot (the best by AUC).
CURVES_SHOWN: int = 4
#: The metrics of a report's tables, in column order (:func:`dense_metrics`; means over scenes are
#: :func:`pseudolabel.metrics.average_metrics` restricted to these).
REPORT_METRICS: tuple[str, ...] = ("density", "bad3", "epe", "d1")


@dataclass
class Picture:
    """One picture of a report.

    Attributes:
        title: short heading shown above it.
        image: ``uint8`` (H, W, 3) RGB.
        caption: one line shown below it (may be empty).
        kind: what it shows, which says which colour bar explains it: ``image``, ``disparity``,
            ``confidence``, ``labels`` (disparity colours) or ``error``.
    """

    title: str
    image: np.ndarray
    caption: str = ""
    kind: str = "image"


@dataclass
class SceneSection:
    """Everything the report shows for one stereo pair.

    Attributes:
        key: the pair key (section heading).
        pictures: the pictures, in reading order.
        legends: colour bars and error legend (small pictures shown under the grid).
        svgs: inline SVG plots (sparsification curves, then the reliability diagram).
        metrics: ``{row name: {"density", "bad3", "epe", ...}}`` (percent, percent, pixels), shown as a
            table; empty without ground truth.
        notes: plain-text lines shown under the heading.
        plot_notes: plain-text lines shown under the plots (the expected calibration errors).
    """

    key: str
    pictures: list[Picture] = field(default_factory=list)
    legends: list[Picture] = field(default_factory=list)
    svgs: list[str] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    plot_notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# encoding


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of an ``uint8`` (H, W) or (H, W, 3) RGB image.

    Raises:
        InputError: not an 8-bit image, or OpenCV cannot encode it.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise InputError(f"a report picture must be uint8 (H, W[, 3]), got {image.dtype} {image.shape}")
    bgr = image[:, :, ::-1] if image.ndim == 3 else image
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(bgr), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise InputError(f"cannot encode a {image.shape} picture as PNG")
    return encoded.tobytes()


def png_data_uri(image: np.ndarray) -> str:
    """``data:image/png;base64,...`` URI of an ``uint8`` RGB image."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


# ----------------------------------------------------------------------------------------------
# metrics


def dense_metrics(disparity: np.ndarray, ground_truth: np.ndarray) -> dict[str, float]:
    """Density, bad-3 and EPE of a (dense or sparse) disparity map against ground truth.

    Args:
        disparity: ``float32`` (H, W), pixels, NaN where there is no value.
        ground_truth: ``float32`` (H, W), pixels, NaN or ``<= 0`` where unknown.

    Returns:
        ``density`` (percent of all pixels with a value), ``bad3`` (percent of the pixels with both a
        value and ground truth whose error exceeds 3 px), ``epe`` (pixels, same pixels), ``d1``
        (percent, KITTI D1 on the same pixels) and ``pixels`` (how many were evaluated).
    """
    has_value = np.isfinite(disparity)
    scores = disparity_metrics(disparity, ground_truth, mask=has_value)
    return {
        "density": 100.0 * label_density(np.where(has_value, 0.0, np.nan)),
        "bad3": scores["bad3"],
        "epe": scores["epe"],
        "d1": scores["d1"],
        "pixels": scores["pixels"],
    }


def metrics_table_rows(metrics: Mapping[str, Mapping[str, float]]) -> list[list[str]]:
    """Table cells (header first) for ``{row name: metrics}``: density %, bad-3 %, D1 %, EPE px."""
    rows = [["", "density", "bad-3", "D1", "EPE"]]
    for name, values in metrics.items():
        rows.append(
            [
                name,
                f"{values.get('density', float('nan')):.1f}%",
                f"{values.get('bad3', float('nan')):.2f}%",
                f"{values.get('d1', float('nan')):.2f}%",
                f"{values.get('epe', float('nan')):.2f} px",
            ]
        )
    return rows


# ----------------------------------------------------------------------------------------------
# one pair of a proxies file


def read_pair_ground_truth(attrs: Mapping[str, Any], proxies_path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """The ground truth named by a pair's ``gt_left`` / ``gt_scale`` attributes, or None.

    The file is looked up as stored or next to the proxies file (:func:`pseudolabel.store.names.find_pair_file`)
    and read by :func:`pseudolabel.datasets.read_ground_truth`.

    Args:
        attrs: the pair's attributes (``key``, optional ``gt_left`` and ``gt_scale``).
        proxies_path: the proxies file (relative paths may be relative to its folder).
        shape: (H, W) of the pair.

    Returns:
        ``float32`` (H, W) disparity in pixels, NaN where unknown (also where the stored value is
        ``<= 0``); None when the pair names no ground truth or its file is not found.

    Raises:
        InputError: the ground truth has another size than the pair.
    """
    text = attrs.get("gt_left")
    if not text:
        return None
    path = find_pair_file(proxies_path, str(text))
    if path is None:
        return None
    scale = attrs.get("gt_scale")
    ground_truth = read_ground_truth(path, float(scale) if scale else None, shape, str(attrs.get("key", "")))
    return np.where(np.isfinite(ground_truth) & (ground_truth > 0), ground_truth, np.nan).astype(np.float32)


def _labels_caption(attrs: Mapping[str, Any]) -> str:
    """How a pair's ``labels`` were made, from their attributes (``tau``, ``measure``, ``target_error``)."""
    if "tau" not in attrs:
        return ""
    measure, tau = attrs.get("measure", "?"), float(attrs["tau"])
    target = f" (tau {describe_target(float(attrs['target_error']))})" if "target_error" in attrs else ""
    if not np.isfinite(tau):
        return f"no labels: no tau on confidence/{measure} reaches the target{target}"
    return f"confidence/{measure} > {tau:.4g}{target}"


def proxy_scene(
    proxies: ProxyFile,
    key: str,
    measure: str = "ccnn",
    predictions: Mapping[str, np.ndarray] | None = None,
    ground_truth: np.ndarray | None | bool = True,
    max_width: int = MAX_PICTURE_WIDTH,
    curves: bool = True,
) -> SceneSection:
    """The report section of one pair of an open proxies file.

    Args:
        proxies: an open :class:`pseudolabel.store.proxies.ProxyFile`.
        key: the pair key.
        measure: the confidence drawn as a heat map and first in the curves (``confidence/<measure>``;
            when the pair lacks it, the first stored confidence, if any).
        predictions: ``{name: float32 (H, W) disparity in pixels}`` of networks to show (e.g.
            ``{"network before": ..., "network after": ...}``), in order.
        ground_truth: an (H, W) ground truth in pixels, ``True`` to read the one the pair's attributes
            name (if found), or ``None``/``False`` for none.
        max_width: pictures wider than this are shrunk for the report (0 = full resolution).
        curves: draw the sparsification curves and, next to them, the reliability diagram of the same
            measures, and note their expected calibration errors (needs ground truth and a confidence).

    Returns:
        A :class:`SceneSection`. Metrics rows (with ground truth): ``SGM proxies``, ``labels (...)`` when
        the pair has labels, and one per prediction.
    """
    attrs = proxies.pair_attrs(key)
    path = Path(proxies.path)
    arrays = proxies.read(key, ["disparity"])
    proxy = arrays["disparity"]
    shape = proxy.shape
    section = SceneSection(key=key)
    stored = proxies.list_confidences(key)
    shown_measure = measure if measure in stored else (stored[0] if stored else None)
    confidence = proxies.read(key, [f"confidence/{shown_measure}"])[f"confidence/{shown_measure}"] if shown_measure else None
    labels = proxies.read(key, ["labels"])["labels"] if proxies.has(key, "labels") else None
    label_attrs: dict[str, Any] = {}
    if labels is not None:
        raw = proxies.h5["pairs"][key_to_name(key)]["labels"].attrs
        label_attrs = {name: (value.decode() if isinstance(value, bytes) else value) for name, value in raw.items()}
    image_path = find_pair_file(path, str(attrs.get("left", "")))
    image = read_image(image_path) if image_path is not None else None
    if image is not None and image.shape[:2] != shape:
        section.notes.append(f"left image {image_path} is {image.shape[1]}x{image.shape[0]}, the pair is {shape[1]}x{shape[0]}; not shown")
        image = None
    if image is None and image_path is None:
        section.notes.append(f"left image {attrs.get('left')} not found (run from the folder where `pseudolabel sgm` ran to see it)")
    if ground_truth is True:
        gt = read_pair_ground_truth(attrs, path, shape)
    elif isinstance(ground_truth, np.ndarray):
        gt = ground_truth
    else:
        gt = None
    predictions = dict(predictions or {})
    low, high = display_range(gt, proxy, *predictions.values())

    def add(title: str, picture: np.ndarray, caption: str = "", kind: str = "image", nearest: bool = False) -> None:
        section.pictures.append(Picture(title, resize_for_display(picture, max_width, nearest), caption, kind))

    section.notes.append(
        f"{shape[1]}x{shape[0]} pixels, disparity range searched [{attrs.get('min_disp')}, {attrs.get('max_disp')}) px, "
        f"{100 * float(attrs.get('valid_fraction', float('nan'))):.1f}% of the proxies pass the left-right and uniqueness checks"
    )
    if image is not None:
        add("left image", gray_rgb(image), str(attrs.get("left", "")))
    add("SGM proxy disparity", disparity_image(proxy, low, high), "dense, left view", "disparity")
    if confidence is not None:
        add(f"confidence ({shown_measure})", confidence_image(confidence), "bright = trustworthy", "confidence")
    if labels is not None:
        caption = _labels_caption(label_attrs)
        add(
            "labels over the image",
            labels_overlay(image, labels, low, high),
            f"{caption}, {100 * label_density(labels):.1f}% of the pixels",
            "labels",
        )
    if gt is not None:
        add("ground truth", disparity_image(gt, low, high), "for evaluation only", "disparity")
    for name, prediction in predictions.items():
        if prediction.shape != shape:
            raise InputError(f"prediction {name!r} has shape {prediction.shape}, the pair is {shape}")
        add(name, disparity_image(prediction, low, high), "", "disparity")
    if gt is not None:
        section.metrics["SGM proxies"] = dense_metrics(proxy, gt)
        add("error: SGM proxies", error_image(proxy, gt), _metric_caption(section.metrics["SGM proxies"]), "error", nearest=True)
        if labels is not None:
            tau = float(label_attrs.get("tau", float("nan")))
            name = f"labels (tau {tau:.4g})" if np.isfinite(tau) else "labels"
            section.metrics[name] = dense_metrics(labels, gt)
            add("error: labels", error_image(labels, gt), _metric_caption(section.metrics[name]), "error", nearest=True)
        for name, prediction in predictions.items():
            section.metrics[name] = dense_metrics(prediction, gt)
            add(f"error: {name}", error_image(prediction, gt), _metric_caption(section.metrics[name]), "error", nearest=True)
    bar_width = min(max(320, min(shape[1], max_width or shape[1])), 480)
    section.legends.append(
        Picture("disparity colours", colour_bar(low, high, DISPARITY_COLORMAP, "disparity (px), black = unknown", bar_width), kind="disparity")
    )
    if confidence is not None:
        section.legends.append(Picture("confidence colours", colour_bar(0.0, 1.0, CONFIDENCE_COLORMAP, "confidence", bar_width), kind="confidence"))
    if gt is not None:
        section.legends.append(Picture("error colours", error_legend(bar_width), kind="error"))
    if curves and gt is not None and stored:
        confidences = {name: proxies.read(key, [f"confidence/{name}"])[f"confidence/{name}"] for name in stored}
        evaluation = image_evaluation(confidences, proxy, gt)
        if evaluation["pixels"]:
            aucs: dict[str, float] = evaluation["auc"]  # type: ignore[assignment]
            others = sorted((n for n in stored if n != shown_measure), key=lambda n: aucs[n])[:CURVES_SHOWN]
            order = ([shown_measure] if shown_measure else []) + others
            error_rate = float(evaluation["error_rate"])  # type: ignore[arg-type]
            optimal_curve = np.clip((DEFAULT_FRACTIONS - (1.0 - error_rate)) / DEFAULT_FRACTIONS, 0.0, None)
            section.svgs.append(
                sparsification_svg(
                    {name: evaluation["curves"][name] for name in order},  # type: ignore[index]
                    DEFAULT_FRACTIONS,
                    aucs={**{name: aucs[name] for name in order}, "optimal": float(evaluation["optimal_auc"])},  # type: ignore[arg-type]
                    optimal=optimal_curve,
                    title=f"sparsification of the SGM proxies: {key}",
                )
            )
            tables = pair_reliability({name: confidences[name] for name in order}, proxy, gt)
            eces = {name: ece_from_bins(table) for name, table in tables.items()}
            section.svgs.append(reliability_svg(tables, eces, f"reliability: {key}", height=reliability_plot_height(len(tables))))
            section.plot_notes.append(ece_note(eces))
    return section


def ece_note(eces: Mapping[str, float]) -> str:
    """The line of a report section giving each measure's expected calibration error (``eces`` in [0, 1], shown in percent)."""
    values = ", ".join(f"{name} {100 * value:.2f}%" for name, value in eces.items())
    return f"expected calibration error ({ECE_BINS} equal-width bins; correct = within 3 px of the ground truth): {values}"


def _metric_caption(values: Mapping[str, float]) -> str:
    return f"bad-3 {values['bad3']:.2f}%, EPE {values['epe']:.2f} px, density {values['density']:.1f}%"


# ----------------------------------------------------------------------------------------------
# HTML


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222;background:#fafafa;max-width:1600px}
h1{font-size:1.6em;margin-bottom:4px}h2{font-size:1.25em;margin-top:32px;border-bottom:1px solid #ccc;padding-bottom:4px}
p.lead{color:#444;max-width:70em}
table{border-collapse:collapse;margin:8px 0 12px 0;background:white}
th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}th:first-child,td:first-child{text-align:left}
th{background:#eee}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px}
figure{margin:0;background:white;border:1px solid #ddd;padding:6px}
figure img{width:100%;height:auto;display:block;image-rendering:auto}
figcaption{font-size:0.85em;color:#333;margin-top:4px}figcaption b{display:block;color:#000}
.legends{display:flex;flex-wrap:wrap;gap:12px;margin:10px 0}.legends img{display:block}
.plots{display:flex;flex-wrap:wrap;gap:12px;margin:10px 0}
.note{font-size:0.9em;color:#555;margin:2px 0}
code,pre{background:#f0f0f0;border-radius:3px}pre{padding:8px;overflow-x:auto;font-size:0.85em}
footer{margin-top:32px;font-size:0.8em;color:#666}
"""


def html_table(rows: Sequence[Sequence[str]]) -> str:
    """An HTML table from cells, the first row being the header (cells are escaped)."""
    if not rows:
        return ""
    header = "".join(f"<th>{escape(str(cell))}</th>" for cell in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows[1:])
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def _figure(picture: Picture) -> str:
    height, width = picture.image.shape[:2]
    caption = f"<b>{escape(picture.title)}</b>{escape(picture.caption)}"
    return (
        f'<figure><img src="{png_data_uri(picture.image)}" width="{width}" height="{height}" '
        f'alt="{escape(picture.title)}"><figcaption>{caption}</figcaption></figure>'
    )


def render_section(section: SceneSection) -> str:
    """HTML of one :class:`SceneSection`."""
    parts = [f'<section id="{escape(section.key)}"><h2>{escape(section.key)}</h2>']
    parts += [f'<p class="note">{escape(note)}</p>' for note in section.notes]
    if section.metrics:
        parts.append(html_table(metrics_table_rows(section.metrics)))
    parts.append('<div class="grid">' + "".join(_figure(p) for p in section.pictures) + "</div>")
    if section.legends:
        legends = "".join(
            f'<img src="{png_data_uri(p.image)}" width="{p.image.shape[1]}" height="{p.image.shape[0]}" alt="{escape(p.title)}">'
            for p in section.legends
        )
        parts.append(f'<div class="legends">{legends}</div>')
    if section.svgs:
        parts.append('<div class="plots">' + "".join(section.svgs) + "</div>")
    parts += [f'<p class="note">{escape(note)}</p>' for note in section.plot_notes]
    parts.append("</section>")
    return "".join(parts)


def render_report(
    title: str,
    sections: Sequence[SceneSection],
    intro_html: str = "",
    summary_rows: Sequence[Sequence[str]] | None = None,
    details: Mapping[str, Any] | None = None,
) -> str:
    """The whole HTML page (a string; see :func:`write_report`).

    Args:
        title: page title and heading.
        sections: one per pair.
        intro_html: trusted HTML shown under the heading (build it with :func:`html.escape`).
        summary_rows: a summary table (header first), shown before the sections.
        details: JSON-able settings of the run, shown at the end.
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        intro_html,
    ]
    if summary_rows:
        parts.append("<h2>Summary</h2>" + html_table(summary_rows))
    if len(sections) > 1:
        links = " &middot; ".join(f'<a href="#{escape(s.key)}">{escape(s.key)}</a>' for s in sections)
        parts.append(f'<p class="note">Scenes: {links}</p>')
    parts += [render_section(section) for section in sections]
    if details:
        parts.append("<h2>Settings</h2><pre>" + escape(json.dumps(details, indent=1, default=str)) + "</pre>")
    parts.append(f"<footer>pseudolabel {escape(__version__)}. Pictures are embedded PNG images; plots are inline SVG.</footer>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: str | os.PathLike[str], html: str) -> None:
    """Write the page atomically (a failed run never leaves half a report)."""
    atomic_write_bytes(path, html.encode("utf-8"))
