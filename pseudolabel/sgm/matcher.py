"""Semi-global matching (Hirschmueller, TPAMI 2008) on rectified stereo pairs.

:func:`match` runs the four stages, each a Numba kernel in its own module:

1. :mod:`pseudolabel.sgm.cost` -- matching cost volume ``C`` (census, AD, Birchfield-Tomasi, AD-census);
2. :mod:`pseudolabel.sgm.aggregation` -- path-wise aggregation along 4, 8 or 16 directions into ``S``;
3. :mod:`pseudolabel.sgm.disparity` -- winner-takes-all in both views, uniqueness and left-right check,
   plus the cost features that the confidence stage needs;
4. :mod:`pseudolabel.sgm.refinement` -- sub-pixel refinement, optional median filter, hole filling.

The winner-takes-all of stage 3 and the sub-pixel refinement of stage 4 run inside the last
aggregation pass, row by row (row block by row block above two threads), while the aggregated rows
are in cache.

Disparity convention: for a left pixel ``(y, x)`` with disparity ``d`` the matching right pixel is
``(y, x - d)``. Searched disparities are ``min_disp <= d < max_disp`` (``max_disp - min_disp`` levels,
like OpenCV's ``numDisparities``).

Memory: the cost volume is ``uint8`` and the aggregated volume ``uint16`` (3 bytes per cell
``H * W * (max_disp - min_disp)``); everything else is per-row or per-image. ``match(..., max_memory=...)``
bounds it by matching in bands (:mod:`pseudolabel.sgm.tiled`). ``params.downsample`` (the ``fast``
preset) matches at a reduced resolution and enlarges the result (:mod:`pseudolabel.sgm.downsampled`).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from pseudolabel.errors import InputError
from pseudolabel.sgm import aggregation, cost, disparity, downsampled, refinement
from pseudolabel.sgm.params import SGMParams, SGMResult


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
        raise InputError(f"disparity range [{params.min_disp}, {params.max_disp}) is wider than the image width {width}; lower max_disp")


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
        self._reduced: Matcher | None = None

    def __call__(self, left: np.ndarray, right: np.ndarray) -> SGMResult:
        """Match one rectified pair; see :func:`match`."""
        params = self.params
        _check_images(left, right, params)
        if params.downsample > 1:
            if self._reduced is None:
                self._reduced = Matcher(downsampled.reduced_params(params))
            return downsampled.match_downsampled(left, right, params, self._reduced)
        left_gray = cost.prepare_image(left)
        right_gray = cost.prepare_image(right)
        cost_volume = cost.compute_cost(left_gray, right_gray, params, out=self._cost_buffer)
        aggregated, winners = aggregation.aggregate_and_select(cost_volume, left_gray, params, out=self._aggregated_buffer)
        if params.cost == "census":
            self._cost_buffer = cost_volume
        self._aggregated_buffer = aggregated
        # sub-pixel refinement of both views, fused into the last aggregation pass
        left_disparity, right_disparity = winners.disparity, winners.disparity_right
        assert left_disparity is not None and right_disparity is not None
        return finish_matching(left_disparity, right_disparity, winners, left_gray, params)

    def release(self) -> None:
        """Free the reusable buffers."""
        self._cost_buffer = None
        self._aggregated_buffer = None
        self._reduced = None


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


def match(
    left: np.ndarray, right: np.ndarray, params: SGMParams | None = None, *, max_memory: int | str | None = None, **overrides: Any
) -> SGMResult:
    """Semi-global matching of a rectified pair.

    Args:
        left: left image, (H, W) or (H, W, 3) RGB, ``uint8`` or ``uint16`` (floats in [0, 255] accepted).
        right: right image, same shape and dtype as ``left``.
        params: parameters; keyword ``overrides`` replace single fields (``match(l, r, max_disp=64)``).
        max_memory: peak memory budget in bytes (or a size such as ``"4G"``): a pair whose cost volume
            does not fit is matched in horizontal bands with overlap (:mod:`pseudolabel.sgm.tiled`,
            which says what differs); ``None`` = no limit.

    Returns:
        :class:`SGMResult` with the dense left disparity, the validity mask and the cost features.

    Raises:
        InputError: (a ``ValueError``) for images of different sizes, wrong dimensions, NaNs, or a
        disparity range wider than the image, or a ``max_memory`` too small for even one band (the
        message names the smallest budget that works).

    Like OpenCV's matcher objects, ``match`` keeps its cost and aggregation buffers (about 3 bytes per
    cost-volume cell) for the calling thread, so that the next pair of the same size and parameters
    does not allocate them again; :func:`release_buffers` frees them. Use a :class:`Matcher` per
    thread to control this explicitly.
    """
    base = params or SGMParams()
    chosen = base.replace(**overrides) if overrides else base
    if chosen.downsample > 1:
        scaled = match_reduced(left, right, chosen, max_memory=max_memory)
        return downsampled.enlarge_scaled(scaled, left.shape[0], left.shape[1])
    if max_memory is not None:
        from pseudolabel.sgm import tiled

        chosen.validate()
        _check_images(left, right, chosen)
        height, width = left.shape[:2]
        budget = tiled.parse_size(max_memory)
        if tiled.required_memory(height, width, chosen, left.nbytes + right.nbytes) > budget:
            release_buffers()
            return tiled.match_tiled(left, right, chosen, budget)
    return _thread_matcher(chosen)(left, right)


def match_reduced(left: np.ndarray, right: np.ndarray, params: SGMParams, *, max_memory: int | str | None = None) -> SGMResult:
    """:func:`match` without the final enlargement of a reduced-resolution match (``params.downsample > 1``).

    Args:
        left, right: images as :func:`match` takes them, (H, W) or (H, W, 3).
        params: parameters at the input resolution.
        max_memory: as for :func:`match` (applies to the reduced pair).

    Returns:
        :class:`SGMResult` of size (ceil(H / f), ceil(W / f)), ``f = params.downsample``, disparities in input
        pixels (:func:`pseudolabel.sgm.downsampled.scale_disparities`); repeating every map over its
        ``f x f`` block (:func:`pseudolabel.sgm.downsampled.enlarge_map`) gives exactly ``match``'s result.
        With ``f = 1`` this is ``match``'s result.

    Raises:
        InputError: as :func:`match`.
    """
    if params.downsample <= 1:
        return match(left, right, params, max_memory=max_memory)
    params.validate()
    _check_images(left, right, params)
    reduced = match(*downsampled.reduce_pair(left, right, params.downsample), downsampled.reduced_params(params), max_memory=max_memory)
    return downsampled.scale_disparities(reduced, params)


def finish_matching(
    left_disparity: np.ndarray, right_disparity: np.ndarray, winners: disparity.Winners, left_gray: np.ndarray, params: SGMParams
) -> SGMResult:
    """The steps after sub-pixel refinement, on full-size maps: median, left-right and uniqueness check,
    speckle removal, hole filling, edge-aware and dense medians. Shared by :class:`Matcher` and the
    banded :func:`pseudolabel.sgm.tiled.match_tiled`, so both finish alike.

    Args:
        left_disparity: ``float32`` (H, W) sub-pixel left-view disparity, pixels.
        right_disparity: ``float32`` (H, W) sub-pixel right-view disparity, pixels.
        winners: the winner-takes-all features of the whole image (:class:`pseudolabel.sgm.disparity.Winners`).
        left_gray: ``uint8`` (H, W) left image as matched.
        params: the matcher's parameters.
    """
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
