"""Semi-global matching (Hirschmueller, TPAMI 2008) on rectified stereo pairs.

:func:`match` runs the four stages, each a Numba kernel in its own module:

1. :mod:`pseudolabel.cost` -- matching cost volume ``C`` (census, AD, Birchfield-Tomasi, AD-census);
2. :mod:`pseudolabel.aggregation` -- path-wise aggregation along 4, 8 or 16 directions into ``S``;
3. :mod:`pseudolabel.disparity` -- winner-takes-all in both views, uniqueness and left-right check,
   plus the cost features that the confidence stage needs;
4. :mod:`pseudolabel.refinement` -- sub-pixel refinement, optional median filter, hole filling.

Disparity convention: for a left pixel ``(y, x)`` with disparity ``d`` the matching right pixel is
``(y, x - d)``. Searched disparities are ``min_disp <= d < max_disp`` (``max_disp - min_disp`` levels,
like OpenCV's ``numDisparities``).

Memory: the cost volume is ``uint8`` and the aggregated volume ``uint16`` (3 bytes per cell
``H * W * (max_disp - min_disp)``); everything else is per-row or per-image.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from pseudolabel.errors import InputError

CostName = Literal["census", "ad", "bt", "ad_census"]
SubpixelName = Literal["parabola", "equiangular", "none"]


@dataclass(frozen=True)
class SGMParams:
    """Every parameter of :func:`match`. Defaults work on KITTI-like and Middlebury-like images.

    Attributes:
        min_disp: smallest searched disparity in pixels (may be negative).
        max_disp: one past the largest searched disparity in pixels (exclusive), any integer
            ``> min_disp``.
        cost: matching cost: ``census`` (Hamming distance of census transforms), ``ad``
            (absolute difference of intensities), ``bt`` (Birchfield-Tomasi sampling-insensitive AD)
            or ``ad_census`` (robust sum of both).
        census_width, census_height: census window in samples (odd, at most 64 bits in total).
        census_step: spacing of the census samples in pixels; 2 gives a sparse census whose window
            covers ``(2 * census_width - 1) x (2 * census_height - 1)`` pixels with the same bits.
        paths: number of aggregation directions: 4, 8 or 16.
        p1: penalty for a disparity change of one pixel between neighbours (cost units: one census bit).
        p2: penalty for larger disparity changes (``p2 > p1``); with ``p2_adaptive`` (the default) it
            is the penalty inside uniform regions and shrinks across intensity edges.
        p2_adaptive: divide ``p2`` by the intensity step along the path,
            ``p2 / (1 + |I(p) - I(p - r)| / p2_gamma)``, never below ``p1 + 1`` (Hirschmueller 2008).
        p2_gamma: intensity step (8-bit gray levels) that halves ``p2`` when ``p2_adaptive``.
        subpixel: sub-pixel refinement of the winner: ``parabola``, ``equiangular`` or ``none``.
        lr_max_diff: largest allowed difference in pixels between the left disparity and the
            right-view disparity at the matching point; negative disables the check.
        uniqueness: a pixel is unique when ``best_cost < uniqueness * second_best_cost``, the second
            best taken outside ``best +- 1``; 1.0 disables the test.
        median: side of the median filter applied to the disparity (0 or 1 = off, 3 or 5).
        speckle_size: connected regions of at most this many pixels whose disparities differ by at most
            ``speckle_range`` pixels from a neighbour are marked invalid (0 = off).
        speckle_range: disparity step in pixels that separates two speckle regions.
        fill_invalid: fill pixels that fail the checks in the dense ``disparity`` output from their
            left/right valid neighbours (the lower, background value, as in Hirschmueller 2008).
        fill_median_radius: after filling, each filled pixel takes the median of the disparities
            sampled every ``fill_median_step`` pixels in a ``(2 r + 1)^2`` window, among those whose
            left-image intensity is within ``fill_intensity_range`` of its own (an edge-aware median);
            0 = off.
        fill_median_step: sample spacing of that window in pixels.
        fill_intensity_range: intensity tolerance (8-bit gray levels) of that median.
        dense_median: side of a median filter applied to the whole dense output at the end (0, 1 = off,
            3 or 5); ``valid`` pixels keep this smoothed value too.
        ad_truncation: truncation of the AD/BT cost in 8-bit gray levels (``ad``, ``bt``, ``ad_census``).
    """

    min_disp: int = 0
    max_disp: int = 128
    cost: CostName = "census"
    census_width: int = 9
    census_height: int = 7
    census_step: int = 1
    paths: int = 8
    p1: int = 10
    p2: int = 400
    p2_adaptive: bool = True
    p2_gamma: float = 4.0
    subpixel: SubpixelName = "parabola"
    lr_max_diff: float = 2.0
    uniqueness: float = 0.95
    median: int = 3
    speckle_size: int = 50
    speckle_range: float = 1.0
    fill_invalid: bool = True
    fill_median_radius: int = 6
    fill_median_step: int = 3
    fill_intensity_range: float = 16.0
    dense_median: int = 5
    ad_truncation: int = 30

    @property
    def num_disp(self) -> int:
        """Number of searched disparity levels, ``max_disp - min_disp``."""
        return self.max_disp - self.min_disp

    def validate(self) -> None:
        """Raise :class:`InputError` for inconsistent values."""
        if not isinstance(self.min_disp, (int, np.integer)) or not isinstance(self.max_disp, (int, np.integer)):
            raise InputError("min_disp and max_disp must be integers")
        if self.max_disp <= self.min_disp:
            raise InputError(f"max_disp ({self.max_disp}) must be larger than min_disp ({self.min_disp})")
        if self.cost not in ("census", "ad", "bt", "ad_census"):
            raise InputError(f"unknown cost {self.cost!r}; use census, ad, bt or ad_census")
        if self.census_width % 2 == 0 or self.census_height % 2 == 0 or self.census_width < 1 or self.census_height < 1:
            raise InputError("census_width and census_height must be odd and positive")
        if self.census_width * self.census_height - 1 > 64:
            raise InputError("the census window has more than 64 comparisons; use at most 9x7 or 7x9")
        if not 1 <= self.census_step <= 4:
            raise InputError(f"census_step must be 1..4, not {self.census_step}")
        if self.paths not in (4, 8, 16):
            raise InputError(f"paths must be 4, 8 or 16, not {self.paths}")
        if not 0 <= self.p1 < self.p2 <= 1000:
            raise InputError(f"penalties must satisfy 0 <= p1 < p2 <= 1000 (got p1={self.p1}, p2={self.p2})")
        if self.subpixel not in ("parabola", "equiangular", "none"):
            raise InputError(f"unknown subpixel {self.subpixel!r}; use parabola, equiangular or none")
        if not 0.0 < self.uniqueness <= 1.0:
            raise InputError(f"uniqueness must be in (0, 1], got {self.uniqueness}")
        if self.median not in (0, 1, 3, 5):
            raise InputError(f"median must be 0, 1, 3 or 5, not {self.median}")
        if self.dense_median not in (0, 1, 3, 5):
            raise InputError(f"dense_median must be 0, 1, 3 or 5, not {self.dense_median}")
        if not 0 <= self.fill_median_radius <= 15 or not 1 <= self.fill_median_step <= max(1, self.fill_median_radius):
            raise InputError("fill_median_radius must be 0..15 and fill_median_step 1..fill_median_radius")
        if self.speckle_size < 0 or self.speckle_range < 0:
            raise InputError("speckle_size and speckle_range must be >= 0")
        if not 1 <= self.ad_truncation <= 255:
            raise InputError("ad_truncation must be in [1, 255]")

    def to_json(self) -> str:
        """The parameters as a JSON object (stored next to every output)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SGMParams":
        """Inverse of :meth:`to_json`."""
        return cls(**json.loads(text))

    def replace(self, **changes: Any) -> "SGMParams":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


@dataclass
class SGMResult:
    """Output of :func:`match`. All arrays have the left image's shape (H, W).

    Attributes:
        disparity: ``float32`` left-view disparity in pixels, dense (every pixel has a finite value;
            pixels failing the checks are filled when ``params.fill_invalid``).
        valid: ``bool``, True where the pixel passes the left-right check and the uniqueness test.
        disparity_right: ``float32`` right-view disparity in pixels (winner-takes-all on the same
            aggregated volume, sub-pixel refined), for ``x_left = x_right + d``.
        cost_best: ``float32`` aggregated cost of the winner (``c1``).
        cost_second: ``float32`` second smallest aggregated cost over all other disparities (``c2``).
        cost_second_local: ``float32`` smallest aggregated cost among the other *local minima* of the
            cost curve (``c2m``); equals the curve's maximum when there is no other local minimum.
        cost_mean: ``float32`` mean aggregated cost over the disparity range.
        disparity_wta: ``int16`` integer winner in pixels (``min_disp`` based), before refinement and filling.
        params: the parameters used.
    """

    disparity: np.ndarray
    valid: np.ndarray
    disparity_right: np.ndarray
    cost_best: np.ndarray
    cost_second: np.ndarray
    cost_second_local: np.ndarray
    cost_mean: np.ndarray
    disparity_wta: np.ndarray
    params: SGMParams = field(default_factory=SGMParams)

    FEATURES = ("cost_best", "cost_second", "cost_second_local", "cost_mean", "disparity_right")


def _check_images(left: np.ndarray, right: np.ndarray, params: SGMParams) -> None:
    for name, image in (("left", left), ("right", right)):
        if not isinstance(image, np.ndarray):
            raise InputError(f"{name} image must be a numpy array, got {type(image).__name__}")
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise InputError(f"{name} image must be (H, W) gray or (H, W, 3) colour, got shape {image.shape}")
        if image.dtype.kind == "f" and not np.all(np.isfinite(image)):
            raise InputError(f"{name} image contains NaN or inf values")
        if image.dtype.kind not in "uif":
            raise InputError(f"{name} image has unsupported dtype {image.dtype}")
    if left.shape[:2] != right.shape[:2]:
        raise InputError(f"left and right images differ in size: {left.shape[:2]} vs {right.shape[:2]}")
    height, width = left.shape[:2]
    if height < 1 or width < 2:
        raise InputError(f"images of size {height}x{width} are too small")
    if params.max_disp > width or params.min_disp <= -width:
        raise InputError(
            f"disparity range [{params.min_disp}, {params.max_disp}) is wider than the image width {width}; "
            "lower max_disp"
        )


class Matcher:
    """A reusable semi-global matcher.

    It keeps its cost and aggregation buffers between calls on images of the same size (like
    libSGM's and OpenCV's matcher objects), which saves allocating and page-faulting about
    3 bytes per cost-volume cell on every pair of a dataset. Not thread-safe: use one per thread.

    Example:
        >>> matcher = Matcher(SGMParams(max_disp=128))
        >>> results = [matcher(left, right) for left, right in pairs]  # doctest: +SKIP
    """

    def __init__(self, params: SGMParams | None = None, **overrides: Any) -> None:
        base = params or SGMParams()
        self.params = base.replace(**overrides) if overrides else base
        self.params.validate()
        self._cost_buffer: np.ndarray | None = None
        self._aggregated_buffer: np.ndarray | None = None

    def __call__(self, left: np.ndarray, right: np.ndarray) -> SGMResult:
        """Match one rectified pair; see :func:`match`."""
        from pseudolabel import aggregation, cost, disparity, refinement

        params = self.params
        _check_images(left, right, params)
        left_gray = cost.prepare_image(left)
        right_gray = cost.prepare_image(right)
        cost_volume = cost.compute_cost(left_gray, right_gray, params, out=self._cost_buffer)
        aggregated, winners = aggregation.aggregate_and_select(cost_volume, left_gray, params, out=self._aggregated_buffer)
        if params.cost == "census":
            self._cost_buffer = cost_volume
        self._aggregated_buffer = aggregated
        mode = refinement.SUBPIXEL_MODES[params.subpixel]
        left_disparity = refinement.subpixel_left(aggregated, winners.index, params.min_disp, mode)
        right_disparity = refinement.subpixel_right(aggregated, winners.index_right, params.min_disp, mode)
        left_disparity = refinement.median_filter(left_disparity, params.median)
        valid = disparity.consistency_check(
            left_disparity, right_disparity, winners.cost_best, winners.cost_second_far, float(params.lr_max_diff), float(params.uniqueness)
        )
        valid = refinement.remove_speckles(left_disparity, valid, params.speckle_size, params.speckle_range)
        dense = left_disparity
        if params.fill_invalid:
            dense = refinement.fill_invalid(left_disparity, valid, right_disparity, float(max(params.lr_max_diff, 0.0)))
            if params.fill_median_radius > 0:
                dense = refinement.edge_aware_median(
                    dense, left_gray, params.fill_median_radius, float(params.fill_intensity_range), ~valid, params.fill_median_step
                )
        dense = refinement.median_filter(dense, params.dense_median)
        return SGMResult(
            disparity=dense,
            valid=valid,
            disparity_right=right_disparity,
            cost_best=winners.cost_best,
            cost_second=winners.cost_second,
            cost_second_local=winners.cost_second_local,
            cost_mean=winners.cost_mean,
            disparity_wta=(winners.index.astype(np.int16) + np.int16(params.min_disp)).astype(np.int16),
            params=params,
        )

    def release(self) -> None:
        """Free the reusable buffers."""
        self._cost_buffer = None
        self._aggregated_buffer = None


_thread_local = threading.local()


def _thread_matcher(params: SGMParams) -> Matcher:
    """This thread's cached :class:`Matcher` for ``params`` (one per thread: buffers are not shared)."""
    cached: Matcher | None = getattr(_thread_local, "matcher", None)
    if cached is None or cached.params != params:
        cached = Matcher(params)
        _thread_local.matcher = cached
    return cached


def release_buffers() -> None:
    """Free the buffers that :func:`match` keeps for the calling thread."""
    _thread_local.matcher = None


def match(left: np.ndarray, right: np.ndarray, params: SGMParams | None = None, **overrides: Any) -> SGMResult:
    """Semi-global matching of a rectified pair.

    Args:
        left: left image, (H, W) or (H, W, 3) RGB, ``uint8`` or ``uint16`` (floats in [0, 255] accepted).
        right: right image, same shape and dtype as ``left``.
        params: parameters; keyword ``overrides`` replace single fields (``match(l, r, max_disp=64)``).

    Returns:
        :class:`SGMResult` with the dense left disparity, the validity mask and the cost features.

    Raises:
        InputError: (a ``ValueError``) for images of different sizes, wrong dimensions, NaNs, or a
        disparity range wider than the image.

    Like OpenCV's matcher objects, ``match`` keeps its cost and aggregation buffers (about 3 bytes per
    cost-volume cell) for the calling thread, so that the next pair of the same size and parameters
    does not allocate them again; :func:`release_buffers` frees them. Use a :class:`Matcher` per
    thread to control this explicitly.
    """
    base = params or SGMParams()
    return _thread_matcher(base.replace(**overrides) if overrides else base)(left, right)
