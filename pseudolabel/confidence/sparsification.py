"""Sparsification curves and their area (AUC) for confidence evaluation.

Protocol of Hu and Mordohai (TPAMI 2012) and Poggi et al. (ICCV 2017): sort the pixels with ground
truth by decreasing confidence, keep the most confident fraction ``p`` (5%, 10%, ..., 100%) and measure
the bad-3 error rate (share of kept pixels with ``|d - gt| > 3`` px) of what is kept. The area under
this curve (AUC) is lower for better measures; the best possible measure (all correct pixels first)
has the *optimal AUC* ``eps + (1 - eps) ln(1 - eps)`` where ``eps`` is the image's error rate.

Conventions of this implementation:

* ties: pixels of equal confidence are kept together in expectation, i.e. keeping part of a group
  of tied pixels adds the group's mean error per kept pixel (so a constant measure has a flat curve
  equal to ``eps``, and a binary one is not helped by the order of the pixels in memory);
* area: trapezoid rule over the sampled fractions, plus the rectangle ``[0, p_1]`` at the first
  sample's value, so the area covers ``[0, 1]`` like the optimal AUC's closed form (a constant measure
  has AUC exactly ``eps``).

numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Kept fractions of the standard protocol: 0.05, 0.10, ..., 1.00.
DEFAULT_FRACTIONS: np.ndarray = np.round(np.arange(1, 21) * 0.05, 10)
#: Error threshold of bad-3, pixels.
BAD_THRESHOLD: float = 3.0


def error_mask(disparity: np.ndarray, ground_truth: np.ndarray, threshold: float = BAD_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """Bad pixels and evaluated pixels.

    Args:
        disparity: ``float32`` (H, W) estimate, pixels, left view.
        ground_truth: ``float32`` (H, W), pixels, ``NaN`` (or non-finite, or ``<= 0``) where unknown.
        threshold: a pixel is bad when ``|d - gt| > threshold`` (pixels).

    Returns:
        ``(bad, known)``: two ``bool`` (H, W) arrays; ``bad`` is False outside ``known``.
    """
    known = np.isfinite(ground_truth) & (ground_truth > 0)
    with np.errstate(invalid="ignore"):
        bad = known & ~(np.abs(disparity - ground_truth) <= threshold)
    return bad, known


def sparsification_curve(
    confidence: np.ndarray,
    bad: np.ndarray,
    known: np.ndarray | None = None,
    fractions: Sequence[float] | np.ndarray = DEFAULT_FRACTIONS,
) -> np.ndarray:
    """Error rate of the most confident ``fractions`` of the evaluated pixels.

    Args:
        confidence: (H, W) or flat confidence, higher = more trustworthy.
        bad: ``bool``, same shape: the pixel's estimate is wrong.
        known: ``bool``, same shape: evaluated pixels (default all).
        fractions: increasing kept fractions in ``(0, 1]``.

    Returns:
        ``float64`` (len(fractions),) error rates in [0, 1] (ties handled in expectation); ``NaN`` when
        no pixel is evaluated.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    confidence = np.asarray(confidence).ravel()
    bad = np.asarray(bad, dtype=bool).ravel()
    if known is not None:
        keep = np.asarray(known, dtype=bool).ravel()
        confidence, bad = confidence[keep], bad[keep]
    count = confidence.size
    if count == 0:
        return np.full(fractions.shape, np.nan)
    order = np.argsort(-confidence.astype(np.float64), kind="stable")
    sorted_confidence = confidence[order]
    sorted_bad = bad[order].astype(np.float64)
    # Groups of tied confidences.
    starts = np.flatnonzero(np.r_[True, sorted_confidence[1:] != sorted_confidence[:-1]])
    group_sizes = np.diff(np.r_[starts, count])
    group_errors = np.add.reduceat(sorted_bad, starts)
    errors_before = np.r_[0.0, np.cumsum(group_errors)]  # errors in groups [0, g)
    pixels_before = np.r_[0, np.cumsum(group_sizes)]
    kept = np.clip(np.rint(fractions * count).astype(np.int64), 1, count)
    group = np.searchsorted(pixels_before, kept, side="left") - 1  # group holding the kept-th pixel
    group = np.clip(group, 0, len(starts) - 1)
    partial = kept - pixels_before[group]
    errors = errors_before[group] + partial * group_errors[group] / group_sizes[group]
    return errors / kept


def curve_area(curve: np.ndarray, fractions: Sequence[float] | np.ndarray = DEFAULT_FRACTIONS) -> float:
    """Area under a sparsification curve over [0, 1]: trapezoids between samples plus ``[0, p_1] x curve[0]``."""
    curve = np.asarray(curve, dtype=np.float64)
    fractions = np.asarray(fractions, dtype=np.float64)
    widths = np.diff(fractions)
    return float(fractions[0] * curve[0] + np.sum(widths * (curve[1:] + curve[:-1]) / 2.0))


def optimal_auc(error_rate: float) -> float:
    """AUC of a perfect measure for an image with bad-pixel rate ``error_rate`` (closed form, [0, 1])."""
    eps = float(error_rate)
    if eps <= 0.0:
        return 0.0
    if eps >= 1.0:
        return 1.0
    return eps + (1.0 - eps) * np.log1p(-eps)


def optimal_curve(error_rate: float, fractions: Sequence[float] | np.ndarray = DEFAULT_FRACTIONS) -> np.ndarray:
    """Sparsification curve of a perfect measure (all correct pixels first) for an image with bad-pixel rate
    ``error_rate``: ``float64`` (len(fractions),) error rates in [0, 1]."""
    fractions = np.asarray(fractions, dtype=np.float64)
    return np.clip((fractions - (1.0 - float(error_rate))) / fractions, 0.0, None)


def sparsification_auc(
    confidence: np.ndarray,
    bad: np.ndarray,
    known: np.ndarray | None = None,
    fractions: Sequence[float] | np.ndarray = DEFAULT_FRACTIONS,
) -> float:
    """AUC of :func:`sparsification_curve` (see the module docstring); ``NaN`` without evaluated pixels."""
    curve = sparsification_curve(confidence, bad, known, fractions)
    if np.isnan(curve).any():
        return float("nan")
    return curve_area(curve, fractions)


def coverage_at_error(confidence: np.ndarray, bad: np.ndarray, known: np.ndarray | None = None, target: float = 0.01) -> float:
    """Largest share of the evaluated pixels that a threshold on ``confidence`` keeps with an error rate of at
    most ``target``: the coverage of the best tau chosen *with* the ground truth, the ceiling that any
    calibration of this ranking (any way of picking tau without the ground truth) can reach.

    Args:
        confidence: (H, W) or flat confidence, higher = more trustworthy; a threshold keeps pixels of
            equal confidence together (``-inf`` or ``NaN`` where a pixel can never be kept; such pixels still
            count among the evaluated ones).
        bad: ``bool``, same shape: the pixel's estimate is wrong.
        known: ``bool``, same shape: pixels with ground truth (default: all).
        target: largest error rate of the kept pixels, a fraction (0.01 = 1%).

    Returns:
        The kept share of the evaluated pixels, in [0, 1] (0 when even the most confident group exceeds
        ``target``); ``NaN`` without evaluated pixels.
    """
    confidence = np.asarray(confidence, dtype=np.float64).ravel()
    bad = np.asarray(bad, dtype=bool).ravel()
    mask = np.ones_like(bad) if known is None else np.asarray(known, dtype=bool).ravel()
    values, wrong = confidence[mask], bad[mask]
    if values.size == 0:
        return float("nan")
    order = np.argsort(-values, kind="stable")
    values, wrong = values[order], wrong[order]
    keepable = values > -np.inf  # -inf and NaN (sorted last) are never kept
    # a threshold keeps whole groups of tied pixels: the candidate cuts are the ends of the groups
    ends = np.flatnonzero(np.append(values[1:] != values[:-1], True)) + 1
    ends = ends[keepable[ends - 1]]
    if ends.size == 0:
        return 0.0
    errors = np.cumsum(wrong)[ends - 1]
    allowed = ends[errors / ends <= float(target)]  # a rate, not errors <= target * n (0.29 * 100 < 29)
    return float(allowed.max() / values.size) if allowed.size else 0.0


def image_evaluation(
    confidences: dict[str, np.ndarray],
    disparity: np.ndarray,
    ground_truth: np.ndarray,
    fractions: Sequence[float] | np.ndarray = DEFAULT_FRACTIONS,
    threshold: float = BAD_THRESHOLD,
) -> dict[str, object]:
    """Curves and AUCs of several measures on one image.

    Args:
        confidences: ``{name: (H, W) confidence}``.
        disparity: ``float32`` (H, W) proxy disparity, pixels.
        ground_truth: ``float32`` (H, W), pixels, ``NaN`` where unknown.

    Returns:
        ``{"error_rate": eps, "optimal_auc": float, "pixels": int, "auc": {name: float},
        "curves": {name: float64 (F,)}}``.
    """
    bad, known = error_mask(disparity, ground_truth, threshold)
    pixels = int(known.sum())
    error_rate = float(bad.sum() / pixels) if pixels else float("nan")
    curves = {name: sparsification_curve(values, bad, known, fractions) for name, values in confidences.items()}
    return {
        "error_rate": error_rate,
        "optimal_auc": optimal_auc(error_rate) if pixels else float("nan"),
        "pixels": pixels,
        "auc": {name: (curve_area(curve, fractions) if pixels else float("nan")) for name, curve in curves.items()},
        "curves": curves,
    }
