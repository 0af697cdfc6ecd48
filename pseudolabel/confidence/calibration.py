"""Calibration of a confidence: maps so that, among pixels of confidence about ``c``, a share ``c`` is correct.

A proxy disparity is *correct* when ``|d - gt| <= 3`` px (:data:`CORRECT_THRESHOLD`, the bad-3 threshold
of the sparsification curves). A calibration is fitted on ``(confidence, correct)`` pairs of pixels with
ground truth (:func:`calibration_samples`) and applied to any confidence map afterwards:

* ``isotonic`` (:func:`fit_isotonic`): the non-decreasing step function of least squared error, by
  pool-adjacent-violators over the distinct confidences; applied by linear interpolation between the
  weighted centres of the pooled blocks, plus :data:`ISOTONIC_RAW_WEIGHT` times the raw value, so the
  map is *strictly* increasing: the ranking of the pixels (hence the sparsification curve and its AUC)
  is kept, and the calibration moves by at most that weight;
* ``temperature`` (:func:`fit_temperature`): ``sigmoid(logit(c) / T)`` with the ``T`` of least
  negative log-likelihood (one parameter; keeps the ranking too).

:class:`Calibration` is a plain value (``to_dict`` / ``from_dict`` give JSON-like dictionaries, stored in
a confidence checkpoint under ``calibration``).

Reliability: :func:`reliability_bins` counts pixels, their summed confidence and their correct ones in
bins of confidence; :func:`expected_calibration_error` (ECE) is ``sum_b n_b / N * |acc_b - conf_b|``.
Two binnings: ``equal-width`` (:data:`ECE_BINS` bins of width 1 / bins over [0, 1]; sums over several
images add up exactly, which is what ``confidence eval`` uses) and ``equal-mass`` (bins of as many
pixels each, for one pooled sample).

numpy only (never torch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pseudolabel.errors import InputError

#: A proxy disparity is correct when within this many pixels of the ground truth (bad-3's threshold).
CORRECT_THRESHOLD: float = 3.0
#: Calibration methods by name (``"none"`` = no calibration).
METHODS: tuple[str, ...] = ("isotonic", "temperature")
#: Bins of the reliability diagram and of the ECE of ``confidence eval`` (equal width, 0.05 each).
ECE_BINS: int = 20
#: Weight of the raw confidence in the applied isotonic map (keeps it strictly increasing).
ISOTONIC_RAW_WEIGHT: float = 1e-3
#: Resolution of the confidences pooled by :func:`fit_isotonic` (finer differences are merged).
ISOTONIC_RESOLUTION: float = 1.0 / 65535.0
#: Confidences are clipped to ``[EPSILON, 1 - EPSILON]`` before their logit is taken.
EPSILON: float = 1e-6


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration map (see the module docstring).

    Attributes:
        method: ``"isotonic"`` or ``"temperature"``.
        knots: isotonic: ``float64`` (K,) increasing confidences (block centres) ...
        values: ... and the calibrated values there, non-decreasing in [0, 1].
        temperature: temperature ``T > 0`` (1 for isotonic).
        fitted_on: ``pixels`` and ``correct_fraction`` of the fitting sample, and free-form notes.
    """

    method: str
    knots: np.ndarray = field(default_factory=lambda: np.zeros(0))
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    temperature: float = 1.0
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def apply(self, confidence: np.ndarray) -> np.ndarray:
        """The calibrated confidence: ``float32``, same shape, in [0, 1]; strictly increasing in ``confidence``."""
        raw = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
        if self.method == "temperature":
            calibrated = _sigmoid(_logit(raw) / self.temperature)
        elif self.method == "isotonic":
            mapped = np.interp(raw, self.knots, self.values) if self.knots.size else raw
            calibrated = (1.0 - ISOTONIC_RAW_WEIGHT) * mapped + ISOTONIC_RAW_WEIGHT * raw
        else:
            raise InputError(f"unknown calibration method {self.method!r}; choose from {', '.join(METHODS)}")
        return np.clip(calibrated, 0.0, 1.0).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-like dictionary (lists and plain numbers), the form stored in checkpoints."""
        return {
            "method": self.method,
            "knots": [float(value) for value in self.knots],
            "values": [float(value) for value in self.values],
            "temperature": float(self.temperature),
            "fitted_on": dict(self.fitted_on),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """Inverse of :meth:`to_dict`; a foreign dictionary is an :class:`InputError`."""
        try:
            method = str(data["method"])
            knots = np.asarray(data.get("knots", []), dtype=np.float64)
            values = np.asarray(data.get("values", []), dtype=np.float64)
            temperature = float(data.get("temperature", 1.0))
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"not a calibration map ({type(error).__name__}: {error})") from None
        if method not in METHODS:
            raise InputError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}")
        if knots.shape != values.shape or (knots.size > 1 and np.any(np.diff(knots) <= 0)) or not temperature > 0:
            raise InputError("calibration map is inconsistent (knots not increasing, sizes differ or temperature <= 0)")
        return cls(method, knots, values, temperature, dict(data.get("fitted_on", {})))


def _logit(probability: np.ndarray) -> np.ndarray:
    clipped = np.clip(probability, EPSILON, 1.0 - EPSILON)
    return np.log(clipped) - np.log1p(-clipped)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -60.0, 60.0)))


def _check_sample(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    confidence = np.asarray(confidence, dtype=np.float64).ravel()
    correct = np.asarray(correct, dtype=np.float64).ravel()
    if confidence.shape != correct.shape:
        raise InputError(f"{confidence.size} confidences for {correct.size} correctness values")
    keep = np.isfinite(confidence) & np.isfinite(correct)
    confidence, correct = confidence[keep], correct[keep]
    if confidence.size == 0:
        raise InputError("no pixel to fit a calibration on (no ground truth where the confidence is defined)")
    return np.clip(confidence, 0.0, 1.0), correct


def calibration_samples(confidence: np.ndarray, disparity: np.ndarray, ground_truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``(confidence, correct)`` pairs of the pixels with ground truth.

    Args:
        confidence: ``float32`` (H, W) in [0, 1].
        disparity: ``float32`` (H, W) proxy disparity, px.
        ground_truth: ``float32`` (H, W), px, NaN (or ``<= 0``) where unknown.

    Returns:
        ``float32`` (N,) confidences and ``bool`` (N,) ``|d - gt| <= 3``, of the N pixels with ground truth.
    """
    if not confidence.shape == disparity.shape == ground_truth.shape:
        raise InputError(f"confidence {confidence.shape}, disparity {disparity.shape} and ground truth {ground_truth.shape} differ in shape")
    known = np.isfinite(ground_truth) & (ground_truth > 0)
    with np.errstate(invalid="ignore"):
        correct = np.abs(disparity[known] - ground_truth[known]) <= CORRECT_THRESHOLD
    return np.asarray(confidence[known], dtype=np.float32), correct


def pool_adjacent_violators(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted isotonic (non-decreasing) regression of ``values`` in the given order.

    Args:
        values: ``float64`` (N,) targets, in the order of the regressor.
        weights: ``float64`` (N,) positive weights.

    Returns:
        ``(starts, block_values, block_weights)``: the first index of every pooled block, the block's
        fitted value (weighted mean of its targets; strictly increasing from block to block) and its
        total weight. The fit of element ``i`` is the value of the block holding it.
    """
    values = np.asarray(values, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    means: list[float] = []
    totals: list[float] = []
    starts: list[int] = []
    for index in range(values.size):
        mean, total, start = float(values[index]), float(weights[index]), index
        # Merge with the previous blocks while they are not below the new one.
        while means and means[-1] >= mean:
            previous_total = totals.pop()
            mean = (means.pop() * previous_total + mean * total) / (previous_total + total)
            total += previous_total
            start = starts.pop()
        means.append(mean)
        totals.append(total)
        starts.append(start)
    return np.asarray(starts, dtype=np.int64), np.asarray(means), np.asarray(totals)


def fit_isotonic(confidence: np.ndarray, correct: np.ndarray, resolution: float = ISOTONIC_RESOLUTION) -> Calibration:
    """Isotonic calibration of ``confidence`` against ``correct`` (1 / 0 or booleans), any shapes of equal size.

    Confidences are first pooled on a grid of ``resolution`` (identical values share one fit); each
    pooled block of the regression becomes one knot at its weighted mean confidence.
    """
    confidence, correct = _check_sample(confidence, correct)
    cells = np.rint(confidence / resolution).astype(np.int64)
    unique, inverse, counts = np.unique(cells, return_inverse=True, return_counts=True)
    hits = np.bincount(inverse, weights=correct, minlength=unique.size)
    sums = np.bincount(inverse, weights=confidence, minlength=unique.size)
    starts, block_values, block_weights = pool_adjacent_violators(hits / counts, counts.astype(np.float64))
    block_confidence = np.add.reduceat(sums, starts) / block_weights
    return Calibration(
        "isotonic",
        knots=block_confidence,
        values=np.clip(block_values, 0.0, 1.0),
        fitted_on={"pixels": int(confidence.size), "correct_fraction": float(correct.mean())},
    )


def fit_temperature(confidence: np.ndarray, correct: np.ndarray, bounds: tuple[float, float] = (0.02, 50.0)) -> Calibration:
    """Temperature scaling: the ``T`` in ``bounds`` minimising the mean negative log-likelihood of
    ``sigmoid(logit(confidence) / T)`` (golden-section search on ``log T``; the likelihood is unimodal in it)."""
    confidence, correct = _check_sample(confidence, correct)
    logits = _logit(confidence)

    def loss(log_t: float) -> float:
        scaled = logits / np.exp(log_t)
        # -log sigmoid(z) = softplus(-z); -log(1 - sigmoid(z)) = softplus(z)
        return float(np.mean(np.where(correct > 0.5, np.logaddexp(0.0, -scaled), np.logaddexp(0.0, scaled))))

    low, high = np.log(bounds[0]), np.log(bounds[1])
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = loss(a), loss(b)
    for _ in range(60):
        if loss_a < loss_b:
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = loss(a)
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = loss(b)
    temperature = float(np.exp((low + high) / 2.0))
    return Calibration("temperature", temperature=temperature, fitted_on={"pixels": int(confidence.size), "correct_fraction": float(correct.mean())})


def fit_calibration(method: str, confidence: np.ndarray, correct: np.ndarray) -> Calibration:
    """:func:`fit_isotonic` or :func:`fit_temperature` by name."""
    if method == "isotonic":
        return fit_isotonic(confidence, correct)
    if method == "temperature":
        return fit_temperature(confidence, correct)
    raise InputError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}")


# ---------------------------------------------------------------------------------------------
# reliability


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """Per equal-width bin of confidence: pixel count, summed confidence, correct pixels.

    Bin ``b`` holds ``b / bins <= c < (b + 1) / bins`` (the last one includes 1). Arrays of several
    images add up (``sum`` of the results), so pooled reliability needs no pixel kept.

    Returns:
        ``float64`` (bins, 3): ``count``, ``confidence_sum``, ``correct_sum``.
    """
    confidence, correct = np.asarray(confidence, dtype=np.float64).ravel(), np.asarray(correct, dtype=np.float64).ravel()
    if confidence.shape != correct.shape:
        raise InputError(f"{confidence.size} confidences for {correct.size} correctness values")
    index = np.clip((np.clip(confidence, 0.0, 1.0) * bins).astype(np.int64), 0, bins - 1)
    table = np.zeros((bins, 3), dtype=np.float64)
    table[:, 0] = np.bincount(index, minlength=bins)
    table[:, 1] = np.bincount(index, weights=confidence, minlength=bins)
    table[:, 2] = np.bincount(index, weights=correct, minlength=bins)
    return table


def ece_from_bins(table: np.ndarray) -> float:
    """ECE of a :func:`reliability_bins` table (possibly summed over images); NaN when it counts no pixel."""
    table = np.asarray(table, dtype=np.float64)
    total = table[:, 0].sum()
    if total <= 0:
        return float("nan")
    return float(np.sum(np.abs(table[:, 2] - table[:, 1])) / total)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS, scheme: str = "equal-width") -> float:
    """Expected calibration error, in [0, 1]: ``sum_b n_b / N * |accuracy_b - mean confidence_b|``.

    Args:
        confidence, correct: one pooled sample (any shapes of equal size).
        bins: number of bins.
        scheme: ``"equal-width"`` (bins of width ``1 / bins`` over [0, 1]) or ``"equal-mass"`` (the
            pixels sorted by confidence, cut into ``bins`` runs of about equal count; equal confidences
            are never split, so a bin can hold more).
    """
    confidence, correct = _check_sample(confidence, correct)
    if scheme == "equal-width":
        return ece_from_bins(reliability_bins(confidence, correct, bins))
    if scheme != "equal-mass":
        raise InputError(f"ECE scheme must be equal-width or equal-mass, not {scheme!r}")
    # Cut at the confidences of ranks N/bins, 2N/bins, ...; equal confidences always share a bin.
    cuts = np.unique(np.sort(confidence)[(np.arange(1, bins) * confidence.size) // bins])
    index = np.searchsorted(cuts, confidence, side="right")
    errors = np.bincount(index, weights=correct, minlength=cuts.size + 1) - np.bincount(index, weights=confidence, minlength=cuts.size + 1)
    return float(np.abs(errors).sum() / confidence.size)


def reliability_curve(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean confidence, accuracy, pixel share)`` of every bin of a table (NaN for empty bins)."""
    table = np.asarray(table, dtype=np.float64)
    counts = table[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.where(counts > 0, table[:, 1] / counts, np.nan)
        accuracy = np.where(counts > 0, table[:, 2] / counts, np.nan)
    share = counts / counts.sum() if counts.sum() > 0 else counts
    return mean_confidence, accuracy, share
