"""Disparity error metrics on pixels with ground truth (NumPy only; no torch).

Definitions (``e = |d_pred - d_gt|`` in pixels, over *evaluated* pixels: ground truth finite and
``> 0``, inside the optional mask):

* ``epe``: mean of ``e`` over evaluated pixels where the prediction is finite (end-point error);
* ``bad1``/``bad2``/``bad3``: percentage of evaluated pixels with ``e > 1, 2, 3`` px;
* ``d1``: KITTI 2015 D1, percentage of evaluated pixels with ``e > 3`` px **and** ``e > 5%`` of ``d_gt``;
* ``density``: percentage of evaluated pixels with a finite prediction.

Pixels where the prediction is missing (``NaN``) count as wrong in the percentages (a sparse
prediction cannot win by abstaining) and are left out of ``epe``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pseudolabel.errors import InputError

METRIC_NAMES: tuple[str, ...] = ("epe", "bad1", "bad2", "bad3", "d1", "density")


def disparity_metrics(prediction: np.ndarray, ground_truth: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Errors of one left-view disparity map.

    Args:
        prediction: (H, W) float disparity in pixels; ``NaN`` = no prediction.
        ground_truth: (H, W) float disparity in pixels; ``NaN``, ``inf`` or ``<= 0`` = unknown.
        mask: optional (H, W) bool, ``True`` = evaluate (e.g. non-occluded pixels).

    Returns:
        ``{"epe", "bad1", "bad2", "bad3", "d1", "density"}`` (epe in pixels, the others in percent)
        plus ``"pixels"``, the number of evaluated pixels. Values are ``NaN`` when no pixel is evaluated.

    Raises:
        InputError: the shapes differ.
    """
    prediction = np.asarray(prediction, dtype=np.float64)
    ground_truth = np.asarray(ground_truth, dtype=np.float64)
    if prediction.shape != ground_truth.shape:
        raise InputError(
            f"prediction {prediction.shape} and ground truth {ground_truth.shape} differ in size; predict at the ground truth's resolution"
        )
    evaluated = np.isfinite(ground_truth) & (ground_truth > 0)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != ground_truth.shape:
            raise InputError(f"mask {mask.shape} and ground truth {ground_truth.shape} differ in size")
        evaluated &= mask
    count = int(evaluated.sum())
    if count == 0:
        return {**{name: float("nan") for name in METRIC_NAMES}, "pixels": 0.0}
    gt = ground_truth[evaluated]
    pred = prediction[evaluated]
    predicted = np.isfinite(pred)
    error = np.full(gt.shape, np.inf)
    error[predicted] = np.abs(pred[predicted] - gt[predicted])
    result = {
        "epe": float(error[predicted].mean()) if predicted.any() else float("nan"),
        "bad1": 100.0 * float((error > 1.0).mean()),
        "bad2": 100.0 * float((error > 2.0).mean()),
        "bad3": 100.0 * float((error > 3.0).mean()),
        "d1": 100.0 * float(((error > 3.0) & (error > 0.05 * gt)).mean()),
        "density": 100.0 * float(predicted.mean()),
        "pixels": float(count),
    }
    return result


def average_metrics(per_pair: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean of every metric over pairs (each pair weighs the same; NaN entries are skipped).

    Returns:
        ``{name: mean}`` for the metrics of :data:`METRIC_NAMES` and ``"pairs"``, the number of pairs.
    """
    result: dict[str, float] = {}
    for name in METRIC_NAMES:
        values = np.array([float(row[name]) for row in per_pair if name in row], dtype=np.float64)
        values = values[np.isfinite(values)]
        result[name] = float(values.mean()) if values.size else float("nan")
    result["pairs"] = float(len(per_pair))
    return result
