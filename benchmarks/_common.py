"""Helpers shared by the benchmark scripts (not part of the installed package)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pseudolabel.datasets import evaluation_mask, occlusion_free
from pseudolabel.io import read_disparity, read_image

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"


@dataclass
class Scene:
    """One scene of ``manifest.json``: images, ground truth in pixels (NaN = unknown), evaluation mask."""

    scene_id: str
    group: str
    left: np.ndarray
    right: np.ndarray
    gt: np.ndarray
    mask: np.ndarray  # bool (H, W): pixels to evaluate (known GT, non-occluded where a mask says so)
    max_disp: int


def load_manifest(data_dir: Path = DEFAULT_DATA) -> list[dict]:
    with open(data_dir / "manifest.json") as handle:
        return json.load(handle)["scenes"]


def load_scene(entry: dict, data_dir: Path = DEFAULT_DATA) -> Scene:
    left = read_image(data_dir / entry["left"])
    right = read_image(data_dir / entry["right"])
    if left.ndim == 3 and left.shape[2] == 4:
        left, right = left[:, :, :3], right[:, :, :3]
    gt = read_disparity(data_dir / entry["gt_left"], float(entry["gt_scale"]))
    mask = np.isfinite(gt) & (gt > 0)
    masks = entry.get("masks", {})
    if "nonocc" in masks:
        mask &= evaluation_mask(data_dir / masks["nonocc"])
    elif "occlusion" in masks:
        mask &= occlusion_free(data_dir / masks["occlusion"])
    elif entry["group"].startswith("middlebury"):
        # Middlebury 2001/2006 ship no occlusion mask: derive it from the ground truth itself.
        mask &= ~occlusion_from_disparity(gt)
    return Scene(entry["id"], entry["group"], left, right, gt, mask, int(entry["max_disp"]))


def occlusion_from_disparity(gt: np.ndarray, tolerance: float = 1.0) -> np.ndarray:
    """Left pixels hidden in the right view, from a left ground-truth disparity (pixels, NaN = unknown).

    Pixel ``x`` with disparity ``d`` lands on ``x - d`` in the right image; it is occluded when a pixel
    further right, ``x' > x``, with a larger disparity lands at or left of it:
    ``min_{x' > x} (x' - d(x')) < x - d(x) - tolerance``, or when ``x - d < 0`` (outside the right image).

    Returns:
        ``bool`` (H, W), True = occluded.
    """
    height, width = gt.shape
    landing = np.where(np.isfinite(gt), np.arange(width)[None, :] - gt, np.inf)
    # running minimum of the landing positions strictly to the right of each pixel
    suffix_min = np.minimum.accumulate(landing[:, ::-1], axis=1)[:, ::-1]
    right_of = np.concatenate([suffix_min[:, 1:], np.full((height, 1), np.inf)], axis=1)
    outside = landing < 0  # no correspondence at all: the match falls left of the right image
    return np.isfinite(gt) & ((right_of < landing - tolerance) | outside)


def bad_rate(disparity: np.ndarray, gt: np.ndarray, mask: np.ndarray, threshold: float) -> float:
    """Fraction (%) of ``mask`` pixels with ``|disparity - gt| > threshold``; NaN if the mask is empty."""
    if not mask.any():
        return float("nan")
    error = np.abs(disparity[mask] - gt[mask])
    return float(100.0 * np.mean(~(error <= threshold)))


def sgm_figures(disparity: np.ndarray, valid: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """The three accuracy figures of a ``match`` result (%): ``dense_bad2`` of the dense ``disparity``,
    ``valid_density`` (share of ``mask`` that is ``valid``) and ``valid_bad2`` (bad-2 of the valid subset)."""
    return {
        "dense_bad2": bad_rate(disparity, gt, mask, 2.0),
        "valid_density": float(100.0 * valid[mask].mean()),
        "valid_bad2": bad_rate(disparity, gt, mask & valid, 2.0),
    }


def machine_description(date: str | None = None) -> str:
    """CPU, core count, Python/numpy/numba versions and ``date`` (ISO; default today)."""
    import numba

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = re.findall(r"model name\s*:\s*(.*)", handle.read())
        if names:
            cpu = names[0].strip()
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical cores; Python {platform.python_version()}, numpy {np.__version__}, "
        f"numba {numba.__version__}; {date or datetime.date.today().isoformat()}"
    )


def replace_section(markdown_path: Path, heading: str, body: str) -> None:
    """Replace (or append) the ``## heading`` section of a Markdown file with ``body``.

    A hand-written block between ``<!-- summary`` and ``<!-- /summary -->`` at the top of the existing
    section (the question, verdict and data lines) is kept above the new body.
    """
    text = markdown_path.read_text() if markdown_path.exists() else "# Benchmarks\n"
    marker = f"## {heading}\n"
    if marker in text:
        start = text.index(marker)
        following = text.find("\n## ", start + len(marker))
        end = len(text) if following < 0 else following + 1
        old_section = text[start:end]
        summary = ""
        opening = old_section.find("<!-- summary")
        closing = old_section.find("<!-- /summary -->")
        if 0 <= opening < closing:
            summary = old_section[opening : closing + len("<!-- /summary -->")] + "\n\n"
        section = marker + "\n" + summary + body.strip() + "\n"
        text = text[:start] + section + ("\n" + text[end:] if following >= 0 else "")
    else:
        text = text.rstrip() + "\n\n" + marker + "\n" + body.strip() + "\n"
    markdown_path.write_text(text)
