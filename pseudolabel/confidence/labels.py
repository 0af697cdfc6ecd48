"""Sparse disparity labels: the proxy disparity where a confidence measure exceeds ``tau``.

numpy only (never torch).
"""

from __future__ import annotations

import numpy as np

from pseudolabel.errors import InputError


class TargetUnreachable(InputError):
    """No tau gives a pair's labels an expected error within the target; ``lowest_expected_error`` is the
    lowest expected error any tau gives there (NaN when no pixel can be labelled)."""

    def __init__(self, message: str, lowest_expected_error: float) -> None:
        super().__init__(message)
        self.lowest_expected_error = lowest_expected_error


def describe_target(target_error: float) -> str:
    """How tables, reports and READMEs name labels made with a target error (``tau <this>``)."""
    return f"per pair for an expected error <= {100 * target_error:g}%"


#: Default tau of ``pseudolabel labels`` / :func:`pseudolabel.confidence.labelling.label_proxies` for the
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


def expected_error(confidence: np.ndarray, tau: float, usable: np.ndarray | None = None) -> tuple[float, int]:
    """Expected error rate of the labels ``confidence > tau`` for a calibrated confidence: the mean of
    ``1 - c`` over the selected pixels (of ``usable``, default all), and their count (NaN, 0 when none)."""
    values = np.asarray(confidence, dtype=np.float64)
    selected = values > tau if usable is None else (values > tau) & usable
    count = int(selected.sum())
    return (float(np.mean(1.0 - values[selected])) if count else float("nan")), count


def tau_for_target_error(confidence: np.ndarray, target_error: float, usable: np.ndarray | None = None) -> tuple[float, float, int]:
    """The smallest tau whose labels ``confidence > tau`` have an expected error rate of at most ``target_error``.

    The expected error of the selected pixels is the mean of ``1 - c`` over them (:func:`expected_error`;
    it assumes a calibrated confidence). It only grows when tau falls, so the smallest such tau gives
    the largest labelled set that meets the target. The candidates are 0 and the distinct confidences
    below 1: the answer is exact, ``confidence > tau`` selects precisely the pixels counted.

    Args:
        confidence: ``float32`` (H, W) in [0, 1], calibrated.
        target_error: in (0, 1).
        usable: ``bool`` (H, W): pixels that can carry a label (a finite disparity); default all.

    Returns:
        ``(tau, expected_error, labelled pixels)``.

    Raises:
        InputError: the target is out of (0, 1); :class:`TargetUnreachable` (an ``InputError``) when no tau
        in [0, 1) reaches it (the message and the exception give the best expected error there is).
    """
    if not 0.0 < target_error < 1.0:
        raise InputError(f"--target-error must be in (0, 1) (e.g. 1% or 0.01), got {target_error}")
    values = np.asarray(confidence, dtype=np.float32)
    if usable is not None:
        values = values[np.asarray(usable, dtype=bool)]
    values = np.sort(values[np.isfinite(values)].ravel())[::-1].astype(np.float64)  # decreasing
    if values.size == 0:
        raise TargetUnreachable("no pixel can be labelled (no finite disparity with a confidence)", float("nan"))
    # Candidate k (k = 1..N) keeps the k most confident pixels; it is a threshold set only where the k-th
    # and (k+1)-th values differ (or k = N), with tau = the (k+1)-th value (0 for k = N).
    mean_error = np.cumsum(1.0 - values) / np.arange(1, values.size + 1)
    next_value = np.r_[values[1:], -1.0]
    is_cut = next_value < values
    taus = np.where(next_value >= 0.0, next_value, 0.0)
    feasible = is_cut & (mean_error <= target_error) & (taus < 1.0) & ((next_value >= 0.0) | (values[-1] > 0.0))
    if not feasible.any():
        cuts = is_cut & (taus < 1.0)
        best = float(mean_error[cuts].min()) if cuts.any() else float("nan")
        raise TargetUnreachable(
            f"--target-error {100 * target_error:g}%: no tau reaches it; the lowest expected error of any tau is {100 * best:.3g}%", best
        )
    k = int(np.flatnonzero(feasible)[-1])
    return float(taus[k]), float(mean_error[k]), k + 1
