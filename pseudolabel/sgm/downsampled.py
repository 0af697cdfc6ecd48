"""Matching at a reduced resolution (``SGMParams.downsample``): the ``fast`` preset's speed.

The pair, converted to gray in 8-bit units like every input of the matcher
(:func:`pseudolabel.sgm.cost.prepare_image`), is reduced by an integer factor ``f`` (each output pixel
the mean of an ``f x f`` block; incomplete blocks at the right and bottom repeat the last column and
row), matched with the disparity range divided by ``f``, and every map of the result is brought back
to the input size by
repeating each value over its block (nearest neighbour): disparities are multiplied by ``f``, costs
and validity are copied. The cost volume and the aggregation shrink by ``f**3`` (``f**2`` pixels,
``f`` times fewer disparities), so the matcher is 5-7x faster at ``f = 2``; the price is precision
(a disparity step of ``f`` pixels before sub-pixel refinement) and detail (structures narrower than
a block), stated in BENCHMARKS.md ``## SGM vs OpenCV StereoSGBM``.

Why this is exact about the geometry: block ``i`` of the reduced left image covers input columns
``f i .. f i + f - 1`` and its centre is at ``f i + (f - 1) / 2``; the same holds for the right image,
so a disparity ``d`` between reduced blocks is ``f d`` between input pixels.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

import numba
import numpy as np
from numba import prange

from pseudolabel.sgm.cost import prepare_image
from pseudolabel.sgm.params import SGMParams, SGMResult

#: Maps of :class:`SGMResult` that hold disparities (scaled by the factor when enlarged).
DISPARITY_MAPS = ("disparity", "disparity_right", "disparity_wta")
#: Maps of :class:`SGMResult` copied as they are when enlarged.
OTHER_MAPS = ("valid", "cost_best", "cost_second", "cost_second_local", "cost_mean")


@numba.njit(cache=True, parallel=True, nogil=True)
def reduce_image(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean of every ``factor x factor`` block of a gray image.

    Args:
        image: ``float32`` (H, W) gray image (8-bit intensity units, as from
            :func:`pseudolabel.sgm.cost.prepare_image`).
        factor: block side in pixels (>= 1).

    Returns:
        ``float32`` (ceil(H / factor), ceil(W / factor)); the last row and column are repeated to fill
        incomplete blocks. Each output row is one thread's (rows are independent), summed in float64.
    """
    height, width = image.shape
    rows, cols = (height + factor - 1) // factor, (width + factor - 1) // factor
    out = np.empty((rows, cols), np.float32)
    scale = 1.0 / (factor * factor)
    for row in prange(rows):
        for col in range(cols):
            total = 0.0
            for dy in range(factor):
                y = min(row * factor + dy, height - 1)
                for dx in range(factor):
                    total += image[y, min(col * factor + dx, width - 1)]
            out[row, col] = np.float32(total * scale)
    return out


def enlarge_map(values: np.ndarray, factor: int, height: int, width: int) -> np.ndarray:
    """Each value repeated over its ``factor x factor`` block, cropped to (height, width).

    Args:
        values: (h, w) map at the reduced resolution, ``h * factor >= height``, ``w * factor >= width``.
        factor: block side in pixels.
        height, width: the input's size in pixels.

    Returns:
        (height, width) map of ``values``' dtype.
    """
    return np.repeat(np.repeat(values, factor, axis=0), factor, axis=1)[:height, :width]


def reduced_params(params: SGMParams) -> SGMParams:
    """The parameters of the match at the reduced resolution.

    The disparity range, given at the input resolution, is divided by ``params.downsample`` and
    rounded outward; ``speckle_size`` (an area in pixels) is divided by its square. Every other
    parameter applies as it is at the reduced resolution.
    """
    factor = params.downsample
    return params.replace(
        downsample=1,
        min_disp=math.floor(params.min_disp / factor),
        max_disp=math.ceil(params.max_disp / factor),
        speckle_size=math.ceil(params.speckle_size / factor**2),
    )


def reduce_pair(left: np.ndarray, right: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Both images as the reduced matcher sees them: gray in 8-bit units (:func:`pseudolabel.sgm.cost.prepare_image`), block means.

    Args:
        left, right: (H, W) or (H, W, 3) images of equal size, as :func:`pseudolabel.sgm.matcher.match` takes them.
        factor: block side in pixels.

    Returns:
        ``float32`` (ceil(H / factor), ceil(W / factor)) left and right gray images.
    """
    return reduce_image(prepare_image(left), factor), reduce_image(prepare_image(right), factor)


def scale_disparities(reduced: SGMResult, params: SGMParams) -> SGMResult:
    """A result of the reduced pair in input pixels, still at the reduced size: disparity maps times the factor.

    Args:
        reduced: the match of :func:`reduce_pair`'s images with :func:`reduced_params`; not modified.
        params: parameters at the input resolution (``params.downsample`` is the factor); stored in the result.

    Returns:
        :class:`SGMResult` of the reduced size (ceil(H / factor), ceil(W / factor)): the maps of
        :data:`DISPARITY_MAPS` multiplied by the factor in their own dtype, the others as they are.
        :func:`enlarge_map` of each map gives :func:`enlarge_result`'s.
    """
    factor = params.downsample
    scaled = dataclasses.replace(reduced, params=params)
    for name in DISPARITY_MAPS:
        values = getattr(reduced, name)
        setattr(scaled, name, values * values.dtype.type(factor))
    return scaled


def enlarge_maps(maps: Mapping[str, np.ndarray], factors: Mapping[str, int], height: int, width: int) -> dict[str, np.ndarray]:
    """Every map at (height, width): those with a block factor above 1 repeated over their blocks (:func:`enlarge_map`).

    Args:
        maps: maps by name; one with factor ``f`` is (ceil(height / f), ceil(width / f)), the others (height, width).
        factors: block factor by name (missing = 1).
        height, width: the input's size in pixels.

    Returns:
        The maps in the same order, each (height, width) of its own dtype (full-size ones as given, not copied).
    """
    return {name: enlarge_map(values, factors[name], height, width) if factors.get(name, 1) > 1 else values for name, values in maps.items()}


def enlarge_scaled(scaled: SGMResult, height: int, width: int) -> SGMResult:
    """A result of :func:`scale_disparities` at the input size: every map repeated over its ``scaled.params.downsample`` block.

    Args:
        scaled: a reduced-size result whose disparities are already in input pixels (``scaled.params`` at the input resolution).
        height, width: the input's size in pixels.

    Returns:
        :class:`SGMResult` of size (height, width); ``scaled`` itself, its maps replaced.
    """
    factor = scaled.params.downsample
    for name in DISPARITY_MAPS + OTHER_MAPS:
        setattr(scaled, name, enlarge_map(getattr(scaled, name), factor, height, width))
    return scaled


def enlarge_result(reduced: SGMResult, params: SGMParams, height: int, width: int) -> SGMResult:
    """A result of the reduced pair at the input size: every map repeated over its block, disparities times the factor.

    Args:
        reduced: the match of :func:`reduce_pair`'s images with :func:`reduced_params`.
        params: parameters at the input resolution (``params.downsample`` is the factor); stored in the result.
        height, width: the input's size in pixels.

    Returns:
        :class:`SGMResult` of size (height, width), disparities in input pixels (``x_right = x_left - d``).
    """
    return enlarge_scaled(scale_disparities(reduced, params), height, width)


def match_downsampled(
    left: np.ndarray, right: np.ndarray, params: SGMParams, match_reduced: Callable[[np.ndarray, np.ndarray], SGMResult]
) -> SGMResult:
    """Match a pair at ``1 / params.downsample`` of its resolution and enlarge the result.

    Args:
        left, right: (H, W) or (H, W, 3) images of equal size, as :func:`pseudolabel.sgm.matcher.match` takes them.
        params: parameters at the input resolution, ``params.downsample >= 2``.
        match_reduced: the matcher of the reduced pair, set up with :func:`reduced_params` (a
            :class:`pseudolabel.sgm.matcher.Matcher` of them; ``match`` goes through :func:`pseudolabel.sgm.matcher.match_reduced`).

    Returns:
        :class:`SGMResult` of size (H, W): disparities in input pixels (``x_right = x_left - d``),
        ``params`` as given; disparities outside ``[min_disp, max_disp)`` by less than the factor can
        occur where the range is not a multiple of it.
    """
    reduced = match_reduced(*reduce_pair(left, right, params.downsample))
    return enlarge_result(reduced, params, left.shape[0], left.shape[1])
