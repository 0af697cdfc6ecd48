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
  negative log-likelihood (one parameter; keeps the ranking too);
* ``isotonic-pair`` (:func:`fit_pair_calibration`): the isotonic map, then four *pair terms* that move it
  with how hard the pair is, as read without ground truth from the share ``s`` of its pixels that SGM's
  left-right and uniqueness checks rejected (``1 - mean(valid)``):
  ``sigmoid((a + h s) logit(m) + b + g s)`` with ``m`` the isotonic value, fitted by logistic regression
  with every pair weighing the same. One map fitted on many scenes is right on average and wrong on
  scenes harder or easier than that average (on a held-out synthetic group, with 43% of the pixels
  rejected, labels chosen for 1% expected error had 3-4x that error); the pair terms take the pair's
  difficulty into account. Within a pair the map still keeps the ranking (non-decreasing; strictly
  increasing where the isotonic value lies within :data:`PAIR_EPSILON` of neither 0 nor 1).

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pseudolabel.errors import InputError

#: A proxy disparity is correct when within this many pixels of the ground truth (bad-3's threshold).
CORRECT_THRESHOLD: float = 3.0
#: Calibration methods by name (``"none"`` = no calibration).
METHODS: tuple[str, ...] = ("isotonic", "temperature", "isotonic-pair")
#: Bins of the reliability diagram and of the ECE of ``confidence eval`` (equal width, 0.05 each).
ECE_BINS: int = 20
#: Weight of the raw confidence in the applied isotonic map (keeps it strictly increasing).
ISOTONIC_RAW_WEIGHT: float = 1e-3
#: Resolution of the confidences pooled by :func:`fit_isotonic` (finer differences are merged).
ISOTONIC_RESOLUTION: float = 1.0 / 65535.0
#: Confidences are clipped to ``[EPSILON, 1 - EPSILON]`` before their logit is taken.
EPSILON: float = 1e-6
#: Confidences are clipped to ``[PAIR_EPSILON, 1 - PAIR_EPSILON]`` before the pair terms (logit within +-9.2).
PAIR_EPSILON: float = 1e-4
#: Pixels per pair drawn (at most) to fit the pair terms.
PAIR_SAMPLES: int = 20000
#: Smallest slope ``a + h s`` of the pair terms (keeps the map increasing for any ``s`` in [0, 1]).
PAIR_MIN_SLOPE: float = 0.05


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration map (see the module docstring).

    Attributes:
        method: ``"isotonic"``, ``"temperature"`` or ``"isotonic-pair"``.
        knots: isotonic: ``float64`` (K,) increasing confidences (block centres) ...
        values: ... and the calibrated values there, non-decreasing in [0, 1].
        temperature: temperature ``T > 0`` (1 for isotonic).
        pair_terms: ``isotonic-pair``: ``float64`` (4,) ``(a, b, g, h)`` of the module docstring; empty otherwise.
        fitted_on: ``pixels`` and ``correct_fraction`` of the fitting sample, and free-form notes.
    """

    method: str
    knots: np.ndarray = field(default_factory=lambda: np.zeros(0))
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    temperature: float = 1.0
    fitted_on: dict[str, Any] = field(default_factory=dict)
    pair_terms: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def reads_pair(self) -> bool:
        """Whether :meth:`apply` needs the pair's ``invalid_share`` (an ``isotonic-pair`` map)."""
        return self.pair_terms.size > 0

    def apply(self, confidence: np.ndarray, invalid_share: float | None = None) -> np.ndarray:
        """The calibrated confidence: ``float32``, same shape, in [0, 1]; increasing in ``confidence`` (strictly,
        but for ``isotonic-pair`` within :data:`PAIR_EPSILON` of 0 and 1).

        Args:
            confidence: raw confidence of one pair (any shape), in [0, 1].
            invalid_share: the pair's share of pixels rejected by SGM's checks (``1 - mean(valid)``), in
                [0, 1]; required by an ``isotonic-pair`` map (:attr:`reads_pair`), ignored by the others.
        """
        raw = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
        if self.method == "temperature":
            calibrated = _sigmoid(_logit(raw) / self.temperature)
        elif self.method in ("isotonic", "isotonic-pair"):
            mapped = np.interp(raw, self.knots, self.values) if self.knots.size else raw
            calibrated = (1.0 - ISOTONIC_RAW_WEIGHT) * mapped + ISOTONIC_RAW_WEIGHT * raw
            if self.reads_pair:
                if invalid_share is None or not 0.0 <= invalid_share <= 1.0:
                    raise InputError(f"an isotonic-pair calibration needs the pair's invalid share in [0, 1], got {invalid_share}")
                calibrated = apply_pair_terms(self.pair_terms, calibrated, invalid_share)
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
            **({"pair_terms": [float(value) for value in self.pair_terms]} if self.reads_pair else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """Inverse of :meth:`to_dict`; a foreign dictionary is an :class:`InputError`."""
        try:
            method = str(data["method"])
            knots = np.asarray(data.get("knots", []), dtype=np.float64)
            values = np.asarray(data.get("values", []), dtype=np.float64)
            temperature = float(data.get("temperature", 1.0))
            pair_terms = np.asarray(data.get("pair_terms", []), dtype=np.float64)
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"not a calibration map ({type(error).__name__}: {error})") from None
        if method not in METHODS:
            raise InputError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}")
        if knots.shape != values.shape or (knots.size > 1 and np.any(np.diff(knots) <= 0)) or not temperature > 0:
            raise InputError("calibration map is inconsistent (knots not increasing, sizes differ or temperature <= 0)")
        if (method == "isotonic-pair") != (pair_terms.shape == (4,)):
            raise InputError("calibration map is inconsistent (isotonic-pair needs exactly 4 pair terms, the other methods none)")
        return cls(method, knots, values, temperature, dict(data.get("fitted_on", {})), pair_terms)


def _logit(probability: np.ndarray, epsilon: float = EPSILON) -> np.ndarray:
    clipped = np.clip(probability, epsilon, 1.0 - epsilon)
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


def invalid_share(valid: np.ndarray) -> float:
    """The share of a pair's pixels that SGM's checks rejected, ``1 - mean(valid)`` over the whole pair
    (``valid``: ``bool`` (H, W)): what the pair terms of ``isotonic-pair`` read, when fitted and when applied."""
    return float(1.0 - np.mean(valid))


def apply_pair_terms(pair_terms: np.ndarray, calibrated: np.ndarray, invalid_share: float) -> np.ndarray:
    """``sigmoid((a + h s) logit(m) + b + g s)`` of a confidence ``m`` already mapped by the isotonic part
    (``float64``, same shape); the slope is at least :data:`PAIR_MIN_SLOPE`."""
    a, b, g, h = (float(value) for value in pair_terms)
    share = float(invalid_share)
    logits = _logit(np.asarray(calibrated, dtype=np.float64), PAIR_EPSILON)
    return _sigmoid(max(a + h * share, PAIR_MIN_SLOPE) * logits + b + g * share)


def fit_pair_terms(
    calibrated: Sequence[np.ndarray], correct: Sequence[np.ndarray], invalid_shares: Sequence[float], seed: int = 0, iterations: int = 50
) -> np.ndarray:
    """The pair terms ``(a, b, g, h)`` of ``isotonic-pair``: logistic regression of correctness on
    ``[logit(m), 1, s, s logit(m)]`` over up to :data:`PAIR_SAMPLES` pixels per pair (drawn with ``seed``),
    every pair weighing the same, by Newton's method (with a ridge of 1e-6, so that pairs of one difficulty
    alone, where the share is collinear with the constant, still give a finite answer).

    Args:
        calibrated: per pair, ``float`` (N_i,) confidences already mapped by the isotonic part.
        correct: per pair, (N_i,) 1 / 0 (or booleans).
        invalid_shares: per pair, its share of pixels rejected by SGM's checks, in [0, 1].
    """
    if not len(calibrated) == len(correct) == len(invalid_shares) or not calibrated:
        raise InputError("fitting pair terms needs, for at least one pair, its confidences, correctness and invalid share")
    rng = np.random.default_rng(seed)
    rows, targets, weights = [], [], []
    for values, hits, share in zip(calibrated, correct, invalid_shares):
        values, hits = np.asarray(values, dtype=np.float64).ravel(), np.asarray(hits, dtype=np.float64).ravel()
        keep = np.isfinite(values) & np.isfinite(hits)
        if not keep.any():
            continue  # a pair without ground truth where the confidence is defined adds nothing
        values, hits = _check_sample(values[keep], hits[keep])
        take = rng.choice(values.size, size=min(PAIR_SAMPLES, values.size), replace=False)
        logits = _logit(values[take], PAIR_EPSILON)
        shares = np.full_like(logits, float(share))
        rows.append(np.stack([logits, np.ones_like(logits), shares, shares * logits], axis=1))
        targets.append(hits[take])
        weights.append(np.full(take.size, 1.0 / take.size))
    if not rows:
        raise InputError("no pixel to fit the pair terms on (no ground truth where the confidence is defined)")
    features, target, weight = np.concatenate(rows), np.concatenate(targets), np.concatenate(weights)
    weight /= weight.sum()
    terms = np.array([1.0, 0.0, 0.0, 0.0])
    for _ in range(iterations):
        probability = _sigmoid(features @ terms)
        gradient = features.T @ (weight * (probability - target))
        hessian = (features * (weight * probability * (1.0 - probability))[:, None]).T @ features + 1e-6 * np.eye(4)
        step = np.linalg.solve(hessian, gradient)
        terms = terms - step
        if np.abs(step).max() < 1e-9:
            break
    return terms


def _pooled(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The per-pair arrays flattened into one sample (an empty one for no pair)."""
    return np.concatenate([np.ravel(part) for part in parts]) if len(parts) else np.zeros(0)


def fit_pair_calibration(confidence: Sequence[np.ndarray], correct: Sequence[np.ndarray], invalid_shares: Sequence[float]) -> Calibration:
    """``isotonic-pair``: :func:`fit_isotonic` on every pair's pixels pooled, then :func:`fit_pair_terms`.

    Args:
        confidence: per pair, raw confidences (any shape) of the pixels with ground truth.
        correct: per pair, the matching 1 / 0 (or booleans).
        invalid_shares: per pair, ``1 - mean(valid)`` of the whole pair (not only of its ground-truth pixels).
    """
    if not len(confidence) == len(correct) == len(invalid_shares) or not confidence:
        raise InputError("an isotonic-pair calibration needs, for at least one pair, its confidences, correctness and invalid share")
    isotonic = fit_isotonic(_pooled(confidence), _pooled(correct))
    terms = fit_pair_terms([isotonic.apply(c) for c in confidence], correct, invalid_shares)
    fitted_on = {**isotonic.fitted_on, "pairs": len(confidence), "invalid_share_range": [float(min(invalid_shares)), float(max(invalid_shares))]}
    return Calibration("isotonic-pair", isotonic.knots, isotonic.values, fitted_on=fitted_on, pair_terms=terms)


def fit_calibration(
    method: str,
    confidence: np.ndarray | Sequence[np.ndarray],
    correct: np.ndarray | Sequence[np.ndarray],
    invalid_shares: Sequence[float] | None = None,
) -> Calibration:
    """:func:`fit_isotonic`, :func:`fit_temperature` (on every pair's pixels pooled) or
    :func:`fit_pair_calibration` (which needs ``invalid_shares``) by name; ``confidence`` and ``correct``:
    one array per pair, or one array for a single pooled sample."""
    if isinstance(confidence, np.ndarray):
        confidence = [confidence]
    if isinstance(correct, np.ndarray):
        correct = [correct]
    if method == "isotonic-pair":
        if invalid_shares is None:
            raise InputError("an isotonic-pair calibration needs every pair's invalid share (its SGM validity mask)")
        return fit_pair_calibration(confidence, correct, invalid_shares)
    if method == "isotonic":
        return fit_isotonic(_pooled(confidence), _pooled(correct))
    if method == "temperature":
        return fit_temperature(_pooled(confidence), _pooled(correct))
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
