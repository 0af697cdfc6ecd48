"""Sparse disparity labels: the proxy disparity where a confidence measure exceeds ``tau``.

numpy only (never torch).
"""

from __future__ import annotations

import numpy as np

from pseudolabel.errors import InputError

#: Default tau of ``pseudolabel labels`` / :func:`pseudolabel.confidence.evaluation.label_proxies` for the
#: shipped CCNN (chosen on its training scenes, see BENCHMARKS.md ## Confidence and models/weights/ccnn.md).
DEFAULT_TAU: float = 0.9


def threshold_labels(disparity: np.ndarray, confidence: np.ndarray, tau: float) -> np.ndarray:
    """Keep the proxy disparity where ``confidence > tau``.

    Args:
        disparity: ``float32`` (H, W) dense proxy disparity, pixels, left view.
        confidence: ``float32`` (H, W) in [0, 1], higher = more trustworthy.
        tau: threshold in [0, 1).

    Returns:
        ``float32`` (H, W) labels, pixels, ``NaN`` where there is no label.
    """
    if not 0.0 <= tau < 1.0:
        raise InputError(f"--tau must be in [0, 1), got {tau}")
    if disparity.shape != confidence.shape:
        raise InputError(f"disparity {disparity.shape} and confidence {confidence.shape} differ in shape")
    keep = (confidence > tau) & np.isfinite(disparity)
    return np.where(keep, disparity, np.nan).astype(np.float32)


def label_density(labels: np.ndarray) -> float:
    """Share of pixels with a label (``float`` in [0, 1])."""
    return float(np.isfinite(labels).mean()) if labels.size else 0.0


def label_statistics(labels: np.ndarray, ground_truth: np.ndarray) -> dict[str, float]:
    """Accuracy of labels against ground truth.

    Args:
        labels: ``float32`` (H, W), pixels, NaN where no label.
        ground_truth: ``float32`` (H, W), pixels, NaN (or ``<= 0``) where unknown.

    Returns:
        ``density`` (labelled share of all pixels), ``gt_coverage`` (labelled share of the pixels with
        ground truth), ``bad1``/``bad2``/``bad3`` (share of labelled pixels with ground truth whose
        error exceeds 1/2/3 px; NaN when none), ``labelled_with_gt`` (count).
    """
    known = np.isfinite(ground_truth) & (ground_truth > 0)
    labelled = np.isfinite(labels)
    both = known & labelled
    count = int(both.sum())
    errors = np.abs(labels[both] - ground_truth[both])
    stats = {
        "density": label_density(labels),
        "gt_coverage": float(count / known.sum()) if known.any() else float("nan"),
        "labelled_with_gt": float(count),
    }
    for threshold in (1, 2, 3):
        stats[f"bad{threshold}"] = float((errors > threshold).mean()) if count else float("nan")
    return stats
