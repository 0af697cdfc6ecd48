"""Conventional confidence measures computed from what :func:`pseudolabel.sgm.matcher.match` stores.

Every measure maps the features of one pair to a ``float32`` (H, W) map in ``[0, 1]``, higher = more
trustworthy, left view. Measures are registered by short name with :func:`register_measure`; a new
measure is one function and one name::

    @register_measure("mine", needs=("cost_best",), description="...")
    def mine(features, params):
        return ...

A measure that reads another one names it in ``uses`` and finds it in ``features`` under its name, computed once per
pair however many measures read it (``alrc15``, ``alrc41``, ``alrc101`` and ``dlrc`` all read ``lrc``).

Inputs (the HDF5 dataset names of issue 3, all (H, W), left view):

* ``disparity`` -- ``float32`` dense disparity in pixels (the proxy that the measures judge);
* ``disparity_right`` -- ``float32`` right-view disparity in pixels, ``x_left = x_right + d``;
* ``valid`` -- ``bool`` left-right check and uniqueness test of SGM;
* ``cost_best`` (``c1``), ``cost_second`` (``c2``, second smallest over all other disparities),
  ``cost_second_local`` (``c2m``, smallest other local minimum), ``cost_mean`` (mean of the curve):
  ``float32`` aggregated SGM costs (non-negative sums over paths).

The full cost curve is not stored, so the measures of Hu and Mordohai (TPAMI 2012) that need it are
computed from these summaries: the sum of the curve is ``cost_mean * num_disp``.

Mappings to ``[0, 1]`` (each is monotonic in the raw measure of the literature, so rankings, hence
sparsification curves, are those of the raw measure; ``eps = 0.1`` as in Hu and Mordohai / Poggi et al.):

========== ================================================ =============================================
name       raw measure                                      mapping to [0, 1]
========== ================================================ =============================================
lrc        ``|d_L(x) - d_R(x - d_L(x))|`` <= ``lr_max_diff`` binary 1 / 0 (0 where ``x - d`` leaves the image)
lrd        ``delta = |d_L(x) - d_R(x - d_L(x))|`` (d_R       ``1 / (1 + delta)``; 0 outside the image
           linearly interpolated)
pkrn       ``(c2 + eps) / (c1 + eps)`` (naive peak ratio)   ``1 - 1 / raw`` = ``(c2 - c1) / (c2 + eps)``
pkr        ``(c2m + eps) / (c1 + eps)`` (peak ratio)        ``1 - 1 / raw``
apkr       mean of ``pkr`` over a 25x25 window (Kim et al.)  mean of the mapped ``pkr`` (reflected borders)
msm        ``-c1`` (matching score)                        ``s / (s + c1)``, ``s`` = mean of ``cost_mean``
                                                            over the image (one constant per image)
mm         ``c2m - c1`` (maximum margin)                    ``m / (m + s)``, same ``s``
mmn        ``c2 - c1`` (naive maximum margin)               ``m / (m + s)``
wmn        ``(c2m - c1) / sum(c)`` (winner margin)          ``x / (1 + x)``, ``x = raw * num_disp``
wmnn       ``(c2 - c1) / sum(c)`` (naive winner margin)     ``x / (1 + x)``, ``x = raw * num_disp``
uniqueness ``c1 < uniqueness * c2m`` (SGM's test against    binary 1 / 0
           the best other local minimum)
dbl        ``m = x - d`` (matching column in the right image) 1 where ``m >= 0``, else ``1 / (1 - m)``
med        ``|d - median_11x11(d)|`` (median deviation)      ``1 / (1 + deviation)``
alrc<k>    share of ``lrc`` passes in a k x k window          the share itself (k = 15, 41, 101)
           (averaged left-right consistency)
dlrc       distance ``r`` to the nearest ``lrc`` failure      ``r / (r + 10)``, ``r`` capped at 512 (1 when none fails)
========== ================================================ =============================================

``binary`` measures (and the pass thresholds used by the wild labels of Tosi et al.) are declared in
the registry: :attr:`MeasureSpec.pass_threshold`.

This module imports numpy, OpenCV and Numba only (never torch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from pseudolabel.errors import InputError

#: Added to costs in ratios (PKR, PKRN), as in Hu and Mordohai (TPAMI 2012) and Poggi et al. (ICCV 2017).
EPSILON: float = 0.1
#: Window side of APKR (Kim et al., 2017), pixels.
APKR_WINDOW: int = 25
#: Window side of MED, pixels.
MED_WINDOW: int = 11
#: Window sides of the averaged left-right consistency measures ``alrc<side>``, pixels.
ALRC_WINDOWS: tuple[int, ...] = (15, 41, 101)
#: Distance (pixels) at which ``dlrc`` reaches 0.5.
DLRC_SCALE: float = 10.0
#: Distances beyond this (pixels) count as this in ``dlrc`` (0.98): a margin below the ~880 px where the rounding that
#: makes it exact stops working.
DLRC_CAP: float = 512.0


class RangeParams(Protocol):
    """What the measures read from the SGM parameters (:class:`pseudolabel.sgm.params.SGMParams` fits)."""

    @property
    def min_disp(self) -> int:
        """Smallest searched disparity, pixels."""

    @property
    def max_disp(self) -> int:
        """One past the largest searched disparity, pixels."""

    @property
    def uniqueness(self) -> float:
        """The uniqueness ratio of the SGM run."""

    @property
    def lr_max_diff(self) -> float:
        """The left-right check's tolerance, pixels."""


MeasureFunction = Callable[[Mapping[str, np.ndarray], RangeParams], np.ndarray]


@dataclass(frozen=True)
class MeasureSpec:
    """A registered measure.

    Attributes:
        name: short name, also the HDF5 dataset name ``confidence/<name>``.
        function: ``function(features, params) -> float32 (H, W)`` in [0, 1].
        needs: feature names (HDF5 dataset names) the measure reads, directly or through ``uses``.
        binary: the measure only takes the values 0 and 1.
        pass_threshold: a pixel *passes* the measure when its value is ``>= pass_threshold``
            (used for the binary tests of the wild labels); ``None`` for measures ranked by quantiles.
        description: one line for ``--help`` and the docs.
        uses: other measures the function reads: :func:`compute_measures` computes each of them once per pair and
            hands them to the function in ``features`` under their names.
    """

    name: str
    function: MeasureFunction
    needs: tuple[str, ...]
    binary: bool
    pass_threshold: float | None
    description: str
    uses: tuple[str, ...] = ()


#: Every registered measure, by short name, in registration order.
MEASURES: dict[str, MeasureSpec] = {}

#: The conventional measures of the literature (Hu and Mordohai, TPAMI 2012; Kim et al. 2017), the CCNN inputs until 2026-12.
LITERATURE_MEASURES: tuple[str, ...] = ("lrc", "lrd", "pkrn", "pkr", "apkr", "msm", "mm", "mmn", "wmn", "wmnn", "uniqueness", "dbl", "med")
#: The measures of the wider left-right context (registered last, after :data:`LITERATURE_MEASURES`).
LR_CONTEXT_MEASURES: tuple[str, ...] = (*(f"alrc{window}" for window in ALRC_WINDOWS), "dlrc")

#: Input channels of a CCNN unless told otherwise (``confidence train``, :class:`pseudolabel.confidence.training.TrainingConfig`)
#: and of the shipped CCNNs: the normalised disparity and every conventional measure of this module. The disparity
#: alone is not enough: the proxies are dense (SGM fills the pixels that fail its left-right and uniqueness checks
#: from their neighbours), so a filled, wrong disparity looks as smooth as a matched one; with wild labels, whose
#: negatives are exactly such filled pixels, a disparity-only CCNN learns nothing but the share of positives.
#: The averaged left-right consistency and the distance to a failure (``alrc15``, ``alrc41``, ``alrc101``, ``dlrc``) came
#: last (2026-12): they give a 9x9 network what lies up to 50 pixels away, where SGM's propagation went astray (leave one
#: group out, a CCNN trained with ground truth goes from 3.10x to 2.56x the optimal AUC; BENCHMARKS.md).
CCNN_INPUTS: tuple[str, ...] = ("disparity", *LITERATURE_MEASURES, *LR_CONTEXT_MEASURES)


def register_measure(
    name: str,
    *,
    needs: Sequence[str],
    description: str,
    binary: bool = False,
    pass_threshold: float | None = None,
    uses: Sequence[str] = (),
) -> Callable[[MeasureFunction], MeasureFunction]:
    """Decorator: register ``function(features, params) -> float32 (H, W) in [0, 1]`` under ``name``.

    ``uses`` names measures registered earlier that the function reads from ``features`` (their ``needs`` must be
    among ``needs``); :func:`compute_measures` computes each once per pair, however many measures read it."""

    def decorator(function: MeasureFunction) -> MeasureFunction:
        if name in MEASURES and MEASURES[name].function is not function:
            raise ValueError(f"confidence measure {name!r} is already registered")
        for used in uses:
            if used not in MEASURES or not set(MEASURES[used].needs) <= set(needs):
                raise ValueError(f"measure {name!r} uses {used!r}, which must be registered before it and need only features among {tuple(needs)}")
        threshold = 0.5 if binary and pass_threshold is None else pass_threshold
        MEASURES[name] = MeasureSpec(name, function, tuple(needs), binary, threshold, description, tuple(uses))
        return function

    return decorator


def measure_names() -> list[str]:
    """Names of the registered measures, in registration order."""
    return list(MEASURES)


def features_needed(names: Iterable[str]) -> list[str]:
    """Union of the feature (HDF5 dataset) names that the measures ``names`` read, sorted."""
    needed: set[str] = set()
    for name in names:
        needed.update(_spec(name).needs)
    return sorted(needed)


def compute_measure(name: str, features: Mapping[str, np.ndarray], params: RangeParams) -> np.ndarray:
    """Compute one registered measure (:func:`compute_measures` for one name)."""
    return compute_measures([name], features, params)[name]


def compute_measures(
    names: Iterable[str],
    features: Mapping[str, np.ndarray],
    params: RangeParams,
    computed: MutableMapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Compute registered measures, each once, the measures they use included.

    Args:
        names: keys of :data:`MEASURES`.
        features: (H, W) arrays by HDF5 dataset name (see the module docstring); must hold the ``needs`` of every
            measure of ``names``.
        params: the pair's SGM parameters (``min_disp``, ``max_disp`` of the pair, ``uniqueness``,
            ``lr_max_diff``), e.g. :class:`pseudolabel.sgm.params.SGMParams`.
        computed: measures of this pair computed before, as this function returns them (never altered); reused,
            and given every measure computed here (those of ``uses`` too). ``None``: start afresh.

    Returns:
        ``{name: float32 (H, W)}`` in [0, 1], higher = more trustworthy, for every name of ``names``. The arrays
        are shared with ``computed``: copy one before changing it.

    Raises:
        InputError: unknown measure name or a missing feature.
    """
    memo: MutableMapping[str, np.ndarray] = {} if computed is None else computed
    wanted = list(names)
    for name in wanted:
        _compute_into(name, features, params, memo)
    return {name: memo[name] for name in wanted}


def _compute_into(name: str, features: Mapping[str, np.ndarray], params: RangeParams, memo: MutableMapping[str, np.ndarray]) -> None:
    if name in memo:
        return
    spec = _spec(name)
    missing = [need for need in spec.needs if need not in features]
    if missing:
        raise InputError(
            f"confidence measure {name!r} needs {', '.join(missing)}, which the proxies file does not hold; "
            "recompute the proxies with `pseudolabel sgm`"
        )
    for used in spec.uses:
        _compute_into(used, features, params, memo)
    inputs = {**features, **{used: memo[used] for used in spec.uses}} if spec.uses else features
    result = np.asarray(spec.function(inputs, params), dtype=np.float32)
    shape = features[spec.needs[0]].shape
    if result.shape != shape:
        raise AssertionError(f"measure {name} returned shape {result.shape}, expected {shape}")
    memo[name] = result


def _spec(name: str) -> MeasureSpec:
    if name not in MEASURES:
        raise InputError(f"unknown confidence measure {name!r}; choose from {', '.join(MEASURES)}")
    return MEASURES[name]


# ---------------------------------------------------------------------------------------------
# helpers


def _costs(features: Mapping[str, np.ndarray], *names: str) -> list[np.ndarray]:
    return [np.asarray(features[name], dtype=np.float32) for name in names]


def _cost_scale(cost_mean: np.ndarray) -> np.float32:
    """One positive cost scale per image: the mean of the per-pixel mean cost."""
    scale = float(np.mean(cost_mean, dtype=np.float64))
    return np.float32(scale if scale > 0 else 1.0)


def _num_disp(params: RangeParams) -> int:
    return int(params.max_disp) - int(params.min_disp)


def right_disparity_at_match(disparity: np.ndarray, disparity_right: np.ndarray, interpolate: bool) -> tuple[np.ndarray, np.ndarray]:
    """The right-view disparity at each left pixel's match ``x - d``.

    Args:
        disparity: ``float32`` (H, W) left disparity, pixels.
        disparity_right: ``float32`` (H, W) right disparity, pixels (``x_left = x_right + d``).
        interpolate: linear interpolation between the two nearest right pixels, else nearest.

    Returns:
        ``(d_right, inside)``: ``float32`` (H, W) right disparity at the match (0 where outside) and
        ``bool`` (H, W), True where the match falls inside the right image.
    """
    height, width = disparity.shape
    columns = np.arange(width, dtype=np.float32)[None, :] - disparity
    rows = np.broadcast_to(np.arange(height)[:, None], (height, width))
    if interpolate:
        inside = (columns >= 0) & (columns <= width - 1)
        clipped = np.clip(columns, 0, width - 1)
        left_index = np.floor(clipped).astype(np.intp)
        right_index = np.minimum(left_index + 1, width - 1)
        weight = clipped - left_index
        values = (1 - weight) * disparity_right[rows, left_index] + weight * disparity_right[rows, right_index]
    else:
        rounded = np.floor(columns + 0.5)
        inside = (rounded >= 0) & (rounded <= width - 1)
        index = np.clip(rounded, 0, width - 1).astype(np.intp)
        values = disparity_right[rows, index]
    values = np.where(inside, values, 0).astype(np.float32)
    return values, inside


def _ratio_confidence(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``1 - (denominator + eps) / (numerator + eps)`` clipped to [0, 1] (a ratio ``>= 1`` mapped by ``1 - 1/r``)."""
    eps = np.float32(EPSILON)
    value = 1.0 - (denominator + eps) / (numerator + eps)
    return np.clip(value, 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# left-right consistency


@register_measure(
    "lrc",
    needs=("disparity", "disparity_right"),
    binary=True,
    description="left-right consistency: 1 where |d_L(x) - d_R(x - d_L)| <= lr_max_diff (a parameter of the pair), else 0",
)
def left_right_consistency(features: Mapping[str, np.ndarray], params: RangeParams) -> np.ndarray:
    """Binary left-right check on the dense disparity, nearest right pixel."""
    disparity, disparity_right = _costs(features, "disparity", "disparity_right")
    threshold = float(getattr(params, "lr_max_diff", 1.0))
    threshold = 1.0 if threshold < 0 else threshold
    matched, inside = right_disparity_at_match(disparity, disparity_right, interpolate=False)
    return (inside & (np.abs(disparity - matched) <= threshold)).astype(np.float32)


@register_measure(
    "lrd",
    needs=("disparity", "disparity_right"),
    description="left-right difference 1 / (1 + |d_L(x) - d_R(x - d_L)|), interpolated right disparity",
)
def left_right_difference(features: Mapping[str, np.ndarray], params: RangeParams) -> np.ndarray:
    """Continuous left-right consistency (0 where the match leaves the image)."""
    disparity, disparity_right = _costs(features, "disparity", "disparity_right")
    matched, inside = right_disparity_at_match(disparity, disparity_right, interpolate=True)
    confidence = 1.0 / (1.0 + np.abs(disparity - matched))
    return np.where(inside, confidence, 0.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# curvature / peak ratios / margins


@register_measure(
    "pkrn",
    needs=("cost_best", "cost_second"),
    description="naive peak ratio (c2 + eps) / (c1 + eps), mapped by 1 - 1/ratio",
)
def peak_ratio_naive(features: Mapping[str, np.ndarray], params: RangeParams) -> np.ndarray:
    """PKRN of Hu and Mordohai with the second smallest cost ``c2``."""
    cost_best, cost_second = _costs(features, "cost_best", "cost_second")
    return _ratio_confidence(cost_second, cost_best)


@register_measure(
    "pkr",
    needs=("cost_best", "cost_second_local"),
    description="peak ratio (c2m + eps) / (c1 + eps) with the best other local minimum, mapped by 1 - 1/ratio",
)
def peak_ratio(features: Mapping[str, np.ndarray], params: RangeParams) -> np.ndarray:
    """PKR of Hu and Mordohai with the second local minimum ``c2m``."""
    cost_best, cost_local = _costs(features, "cost_best", "cost_second_local")
    return _ratio_confidence(cost_local, cost_best)


@register_measure(
    "apkr",
    needs=("cost_best", "cost_second_local"),
    description=f"average peak ratio: mapped PKR averaged over {APKR_WINDOW}x{APKR_WINDOW} pixels",
)
def average_peak_ratio(features: Mapping[str, np.ndarray], params: RangeParams) -> np.ndarray:
    """APKR (Kim et al., 2017): box mean of :func:`peak_ratio`, reflected borders."""
    return box_mean(peak_ratio(features, params), APKR_WINDOW)


@register_measure(
    "msm",
    needs=("cost_best", "cost_mean"),
    description="matching score -c1, mapped by s / (s + c1) with s the image's mean cost",
)
def matching_score(features: Mapping[str, np.ndarray], params: RangeParams) -> np.ndarray:
    """MSM: the lower the winning aggregated cost, the higher the confidence."""
    cost_best, cost_mean = _costs(features, "cost_best", "cost_mean")
    scale = _cost_scale(cost_mean)
    return (scale / (scale + np.maximum(cost_best, 0))).astype(np.float32)


@register_measure(
    "mm",
    needs=("cost_best", "cost_second_local", "cost_mean"),
    description="maximum margin c2m - c1, mapped by m / (m + s) with s the image's mean cost",
)
def maximum_margin(features: Mapping[str, np.ndarray], params: RangeParams) -> np.ndarray:
    """MM of Hu and Mordohai (margin to the best other local minimum)."""
    cost_best, cost_local, cost_mean = _costs(features, "cost_best", "cost_second_local", "cost_mean")
    margin = np.maximum(cost_local - cost_best, 0)
    return (margin / (margin + _cost_scale(cost_mean))).astype(np.float32)


@register_measure(
    "mmn",
    needs=("cost_best", "cost_second", "cost_mean"),
    description="naive maximum margin c2 - c1, mapped by m / (m + s) with s the image's mean cost",
)
def maximum_margin_naive(features: Mapping[str, np.ndarray], params: RangeParams) -> np.ndarray:
    """MMN of Hu and Mordohai (margin to the second smallest cost)."""
    cost_best, cost_second, cost_mean = _costs(features, "cost_best", "cost_second", "cost_mean")
    margin = np.maximum(cost_second - cost_best, 0)
    return (margin / (margin + _cost_scale(cost_mean))).astype(np.float32)


def _winner_margin(cost_best: np.ndarray, cost_other: np.ndarray, cost_mean: np.ndarray) -> np.ndarray:
    # raw = (c_other - c1) / (num_disp * cost_mean); x = raw * num_disp.
    margin = np.maximum(cost_other - cost_best, 0)
    ratio = margin / np.maximum(cost_mean, np.float32(1e-6))
    return (ratio / (1.0 + ratio)).astype(np.float32)


@register_measure(
    "wmn",
    needs=("cost_best", "cost_second_local", "cost_mean"),
    description="winner margin (c2m - c1) / sum of the curve, x = raw * num_disp mapped by x / (1 + x)",
)
def winner_margin(features: Mapping[str, np.ndarray], params: RangeParams) -> np.ndarray:
    """WMN of Hu and Mordohai; the curve's sum is ``cost_mean * num_disp``."""
    cost_best, cost_local, cost_mean = _costs(features, "cost_best", "cost_second_local", "cost_mean")
    return _winner_margin(cost_best, cost_local, cost_mean)


@register_measure(
    "wmnn",
    needs=("cost_best", "cost_second", "cost_mean"),
    description="naive winner margin (c2 - c1) / sum of the curve, mapped like wmn",
)
def winner_margin_naive(features: Mapping[str, np.ndarray], params: RangeParams) -> np.ndarray:
    """WMNN of Hu and Mordohai (second smallest cost instead of the second local minimum)."""
    cost_best, cost_second, cost_mean = _costs(features, "cost_best", "cost_second", "cost_mean")
    return _winner_margin(cost_best, cost_second, cost_mean)


@register_measure(
    "uniqueness",
    needs=("cost_best", "cost_second_local"),
    binary=True,
    description="uniqueness: 1 where c1 < uniqueness * c2m (SGM's ratio, default 0.95), else 0",
)
def uniqueness(features: Mapping[str, np.ndarray], params: RangeParams) -> np.ndarray:
    """Binary uniqueness test of the winner against the best other local minimum."""
    cost_best, cost_local = _costs(features, "cost_best", "cost_second_local")
    ratio = np.float32(getattr(params, "uniqueness", 0.95))
    if ratio >= 1.0:  # the test is disabled in SGM: use the strictest non-trivial version
        ratio = np.float32(0.95)
    return (cost_best < ratio * cost_local).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# disparity-map based


@register_measure(
    "dbl",
    needs=("disparity",),
    pass_threshold=1.0,
    description="distance to the left border: 1 where the match x - d is inside the right image, else 1 / (1 + d - x)",
)
def distance_to_left_border(features: Mapping[str, np.ndarray], params: RangeParams) -> np.ndarray:
    """DBL: pixels whose match falls left of the right image cannot be matched."""
    disparity = np.asarray(features["disparity"], dtype=np.float32)
    column = np.arange(disparity.shape[1], dtype=np.float32)[None, :] - disparity
    return np.where(column >= 0, 1.0, 1.0 / (1.0 - np.minimum(column, 0))).astype(np.float32)


@register_measure(
    "med",
    needs=("disparity",),
    pass_threshold=0.5,
    description=f"median deviation |d - median_{MED_WINDOW}x{MED_WINDOW}(d)|, mapped by 1 / (1 + deviation)",
)
def median_deviation(features: Mapping[str, np.ndarray], params: RangeParams) -> np.ndarray:
    """MED: disparities that differ from their neighbourhood's median are suspicious.

    The median is taken on the disparity quantised to 8 bits over the pair's range
    (``min(4, 255 / num_disp)`` levels per pixel, so 1/4 px for ranges up to 64 and 1/2 px up to 128),
    which lets OpenCV's constant-time median filter run.
    """
    disparity = np.asarray(features["disparity"], dtype=np.float32)
    median = median_filter_disparity(disparity, int(params.min_disp), _num_disp(params), MED_WINDOW)
    return (1.0 / (1.0 + np.abs(disparity - median))).astype(np.float32)


def median_filter_disparity(disparity: np.ndarray, min_disp: int, num_disp: int, window: int) -> np.ndarray:
    """Median of ``disparity`` over ``window`` x ``window`` pixels (replicated borders), quantised.

    Args:
        disparity: ``float32`` (H, W), pixels, inside ``[min_disp, min_disp + num_disp]``.
        min_disp, num_disp: the searched range, pixels.
        window: odd window side, pixels.

    Returns:
        ``float32`` (H, W) median in pixels, resolution ``1 / min(4, 255 / num_disp)`` px.
    """
    levels_per_pixel = min(4.0, 255.0 / max(num_disp, 1))
    quantised = np.clip(np.rint((disparity - min_disp) * levels_per_pixel), 0, 255).astype(np.uint8)
    filtered = cv2.medianBlur(quantised, window)
    return (filtered.astype(np.float32) / np.float32(levels_per_pixel) + np.float32(min_disp)).astype(np.float32)


def box_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean over ``window`` x ``window`` pixels with reflected borders (``float32`` (H, W) in and out)."""
    return cv2.blur(np.asarray(values, dtype=np.float32), (window, window), borderType=cv2.BORDER_REFLECT_101)


# ---------------------------------------------------------------------------------------------
# left-right consistency in a wider context (registered last: the order of `--measures all` and of CCNN_INPUTS)


def _register_average_lrc(window: int) -> None:
    @register_measure(
        f"alrc{window}",
        needs=("disparity", "disparity_right"),
        uses=("lrc",),
        description=f"averaged left-right consistency: share of the pixels of a {window}x{window} window that pass lrc",
    )
    def average_left_right_consistency(features: Mapping[str, np.ndarray], params: RangeParams) -> np.ndarray:
        """Box mean of :func:`left_right_consistency` (``features["lrc"]``; reflected borders): a wrong disparity that
        passes the check usually lies among pixels that fail it, where SGM's propagation went astray."""
        return box_mean(features["lrc"], window)


for _window in ALRC_WINDOWS:
    _register_average_lrc(_window)


@register_measure(
    "dlrc",
    needs=("disparity", "disparity_right"),
    uses=("lrc",),
    description=f"distance r (pixels, capped at {DLRC_CAP:g}) to the nearest pixel that fails lrc, mapped by r / (r + {DLRC_SCALE:g})",
)
def distance_to_left_right_inconsistency(features: Mapping[str, np.ndarray], params: RangeParams) -> np.ndarray:
    """Euclidean distance ``r`` (pixels) to the nearest pixel failing :func:`left_right_consistency`, capped at
    :data:`DLRC_CAP`, mapped by ``r / (r + DLRC_SCALE)``: ``float32`` (H, W) in [0, 1], 0 on the failing pixels, 1
    everywhere when no pixel fails. Reads ``features["lrc"]``."""
    consistent = features["lrc"] > 0.5
    if consistent.all():
        return np.ones(consistent.shape, dtype=np.float32)
    distance = cv2.distanceTransform(consistent.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    # OpenCV's float32 result moves in the last bits with its thread count; the squared distance is an integer
    # (dx^2 + dy^2), so rounding it gives the exact distance whatever the threads, as long as the float32 error
    # stays below half a unit of the square: true up to about 800 pixels, hence the cap
    distance = np.sqrt(np.rint(np.minimum(distance.astype(np.float64), DLRC_CAP) ** 2))
    return (distance / (distance + DLRC_SCALE)).astype(np.float32)
