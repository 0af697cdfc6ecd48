"""Stage 1 of SGM: the matching cost volume.

The cost volume ``C`` has shape (H, W, D) and dtype ``uint8``, ``D = max_disp - min_disp``.
``C[y, x, k]`` is the cost of matching left pixel ``(y, x)`` with right pixel ``(y, x - d)``,
``d = min_disp + k``. Where ``x - d`` falls outside the right image the cost is the largest value
of the cost (:func:`max_cost`), so such disparities are never preferred.

Costs (in "cost units", the unit of ``SGMParams.p1``/``p2``):

* ``census``: Hamming distance of the census transforms (``census_width x census_height`` window,
  one bit per neighbour: neighbour < centre; neighbours outside the image give 0), 0..W*H-1.
* ``ad``: ``min(|I_l - I_r|, ad_truncation)`` on gray levels in 8-bit units.
* ``bt``: Birchfield-Tomasi sampling-insensitive dissimilarity, truncated the same way.
* ``ad_census``: ``round(half * (2 - exp(-ad / 10) - exp(-census / 30)))`` with ``half`` chosen so
  that the maximum equals the census maximum (Mei et al. 2011's robust combination).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from pseudolabel.errors import InputError
from pseudolabel.sgm._numba_utils import popcount64
from pseudolabel.sgm.params import SGMParams


def prepare_image(image: np.ndarray) -> np.ndarray:
    """Convert an input image to the gray ``float32`` (H, W) array that the kernels use.

    Colour (H, W, 3) RGB images are converted to gray once (ITU-R BT.601 weights, not rounded). ``uint16``
    images are scaled to 8-bit units (divided by 257) keeping their fractional precision, so that
    ``ad_truncation`` and ``p2_gamma`` keep their meaning.
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 3:
        # Weighted sum in float64 with integer weights: keeps the fractional gray level (census
        # comparisons need it) and gives exactly v for a gray pixel (v, v, v).
        rgb = array[:, :, :3].astype(np.float64)
        array = (299.0 * rgb[:, :, 0] + 587.0 * rgb[:, :, 1] + 114.0 * rgb[:, :, 2]) / 1000.0
    gray = array.astype(np.float32)
    if np.asarray(image).dtype == np.uint16:
        gray /= np.float32(257.0)
    return np.ascontiguousarray(gray)


def max_cost(cost: str, census_width: int, census_height: int, ad_truncation: int) -> int:
    """Largest value of a cost in cost units (also the cost where ``x - d`` falls outside the right image).

    Args:
        cost: ``params.cost`` (``census``, ``ad``, ``bt`` or ``ad_census``).
        census_width, census_height: census window in samples (census costs count differing bits).
        ad_truncation: truncation of the intensity-difference costs, 8-bit intensity units.
    """
    if cost in ("census", "ad_census"):
        return census_width * census_height - 1
    return ad_truncation


@numba.njit(cache=True, parallel=True, nogil=True)
def census_transform(image: np.ndarray, window_width: int, window_height: int, step: int = 1) -> np.ndarray:
    """Census transform of a gray image.

    Args:
        image: ``float32`` (H, W).
        window_width, window_height: odd window size in samples; ``window_width * window_height - 1 <= 64``.
        step: spacing of the samples in pixels (2 = a sparse census covering twice the area with the
            same number of bits).

    Returns:
        ``uint64`` (H, W): bit ``i`` is set when the ``i``-th neighbour (row-major over the window,
        the centre skipped) is strictly darker than the centre. Neighbours outside the image give 0.
    """
    height, width = image.shape
    half_w = (window_width // 2) * step
    half_h = (window_height // 2) * step
    # Neighbours outside the image compare as +inf (never darker than the centre): bit 0.
    padded = np.full((height + 2 * half_h, width + 2 * half_w), np.inf, dtype=np.float32)
    padded[half_h : half_h + height, half_w : half_w + width] = image
    result = np.empty((height, width), dtype=np.uint64)
    # The comparisons are shifted into two 32-bit words (8 lanes per AVX2 register instead of 4): the
    # first ``bits - 32`` neighbours into the high word, the last 32 into the low word, which is the
    # same 64-bit code as shifting every bit into one word.
    total = window_width * window_height - 1
    high_count = max(0, total - 32)
    for y in prange(height):
        high = np.zeros(width, dtype=np.uint32)
        low = np.zeros(width, dtype=np.uint32)
        centre = image[y]
        neighbour = 0
        for dy in range(-half_h, half_h + 1, step):
            source = padded[y + half_h + dy]
            for dx in range(-half_w, half_w + 1, step):
                if dy == 0 and dx == 0:
                    continue
                shifted = source[half_w + dx : half_w + dx + width]
                bits = high if neighbour < high_count else low
                for x in range(width):
                    bits[x] = np.uint32((bits[x] << np.uint32(1)) | np.uint32(shifted[x] < centre[x]))
                neighbour += 1
        out = result[y]
        for x in range(width):
            out[x] = (np.uint64(high[x]) << np.uint64(32)) | np.uint64(low[x])
    return result


@numba.njit(cache=True)
def census_cost_volume(census_left: np.ndarray, census_right: np.ndarray, min_disp: int, num_disp: int, outside_cost: int) -> np.ndarray:
    """Hamming-distance cost volume of two census images, in a new ``uint8`` (H, W, D) array.

    See :func:`census_cost_volume_into`.
    """
    height, width = census_left.shape
    volume = np.empty((height, width, num_disp), dtype=np.uint8)
    census_cost_volume_into(census_left, census_right, min_disp, outside_cost, volume)
    return volume


@numba.njit(cache=True, parallel=True, nogil=True)
def census_cost_volume_into(census_left: np.ndarray, census_right: np.ndarray, min_disp: int, outside_cost: int, volume: np.ndarray) -> None:
    """Hamming-distance cost volume of two census images.

    Args:
        census_left, census_right: ``uint64`` (H, W) census transforms.
        min_disp: disparity of index 0, pixels.
        outside_cost: cost where ``x - d`` is outside the right image.
        volume: ``uint8`` (H, W, D) output, overwritten (``D`` disparity levels).
    """
    height, width = census_left.shape
    num_disp = volume.shape[2]
    fill = np.uint8(outside_cost)
    for y in prange(height):
        # The right row reversed, so that the inner loop over disparities reads forward memory
        # (x - min_disp - k decreases with k) and vectorises.
        reversed_right = census_right[y, ::-1].copy()
        for x in range(width):
            code = census_left[y, x]
            # k range where 0 <= x - min_disp - k < width
            k_start = min(max(0, x - min_disp - width + 1), num_disp)
            k_stop = max(min(num_disp, x - min_disp + 1), k_start)
            offset = width - 1 - x + min_disp
            out = volume[y, x]
            for k in range(0, k_start):
                out[k] = fill
            # Slices with loop indices from 0 let LLVM prove the indices non-negative and vectorise.
            source = reversed_right[offset + k_start : offset + k_stop]
            target = out[k_start:k_stop]
            for k in range(k_stop - k_start):
                target[k] = np.uint8(popcount64(code ^ source[k]))  # type: ignore[call-arg]  # a Numba intrinsic: typingctx is implicit
            for k in range(k_stop, num_disp):
                out[k] = fill


@numba.njit(cache=True, parallel=True, nogil=True)
def ad_cost_volume(left: np.ndarray, right: np.ndarray, min_disp: int, num_disp: int, truncation: int) -> np.ndarray:
    """Truncated absolute-difference cost volume.

    Args:
        left, right: ``float32`` (H, W) gray images in 8-bit units.
        truncation: costs are clipped to this value (also used outside the right image).

    Returns:
        ``uint8`` (H, W, D), ``round(min(|I_l(y, x) - I_r(y, x - d)|, truncation))``.
    """
    height, width = left.shape
    volume = np.empty((height, width, num_disp), dtype=np.uint8)
    limit = np.float32(truncation)
    for y in prange(height):
        for x in range(width):
            value = left[y, x]
            for k in range(num_disp):
                xr = x - min_disp - k
                if 0 <= xr < width:
                    difference = min(abs(value - right[y, xr]), limit)
                    volume[y, x, k] = np.uint8(math.floor(difference + np.float32(0.5)))
                else:
                    volume[y, x, k] = np.uint8(truncation)
    return volume


@numba.njit(cache=True, parallel=True, nogil=True)
def bt_cost_volume(left: np.ndarray, right: np.ndarray, min_disp: int, num_disp: int, truncation: int) -> np.ndarray:
    """Birchfield-Tomasi sampling-insensitive dissimilarity, truncated.

    For each pixel the half-way interpolated intensities ``I^-`` and ``I^+`` (mean with the left
    and right neighbour) bound the signal between samples; the dissimilarity is the symmetric
    ``min(max(0, I_l - Rmax, Rmin - I_l), max(0, I_r - Lmax, Lmin - I_r))``.

    Args:
        left, right: ``float32`` (H, W) gray images in 8-bit units.

    Returns:
        ``uint8`` (H, W, D) rounded, clipped to ``truncation``.
    """
    height, width = left.shape
    volume = np.empty((height, width, num_disp), dtype=np.uint8)
    limit = np.float32(truncation)
    half = np.float32(0.5)
    for y in prange(height):
        left_min = np.empty(width, dtype=np.float32)
        left_max = np.empty(width, dtype=np.float32)
        right_min = np.empty(width, dtype=np.float32)
        right_max = np.empty(width, dtype=np.float32)
        for x in range(width):
            xm = max(x - 1, 0)
            xp = min(x + 1, width - 1)
            value = left[y, x]
            minus = half * (value + left[y, xm])
            plus = half * (value + left[y, xp])
            left_min[x] = min(value, min(minus, plus))
            left_max[x] = max(value, max(minus, plus))
            value = right[y, x]
            minus = half * (value + right[y, xm])
            plus = half * (value + right[y, xp])
            right_min[x] = min(value, min(minus, plus))
            right_max[x] = max(value, max(minus, plus))
        for x in range(width):
            value_left = left[y, x]
            for k in range(num_disp):
                xr = x - min_disp - k
                if 0 <= xr < width:
                    value_right = right[y, xr]
                    forward = max(np.float32(0.0), max(value_left - right_max[xr], right_min[xr] - value_left))
                    backward = max(np.float32(0.0), max(value_right - left_max[x], left_min[x] - value_right))
                    difference = min(min(forward, backward), limit)
                    volume[y, x, k] = np.uint8(math.floor(difference + half))
                else:
                    volume[y, x, k] = np.uint8(truncation)
    return volume


@numba.njit(cache=True, parallel=True, nogil=True)
def combine_ad_census(ad_volume: np.ndarray, census_volume: np.ndarray, census_max: int) -> np.ndarray:
    """Robust AD-census combination into a new ``uint8`` volume of the census range.

    Args:
        ad_volume: ``uint8`` (H, W, D) absolute-difference costs, 8-bit intensity units.
        census_volume: ``uint8`` (H, W, D) census costs, differing bits.
        census_max: largest census cost (:func:`max_cost`).

    Returns:
        ``uint8`` (H, W, D), ``round(census_max / 2 * (2 - exp(-ad / 10) - exp(-census / 30)))``.
    """
    height, width, num_disp = ad_volume.shape
    out = np.empty_like(census_volume)
    half = np.float32(census_max) * np.float32(0.5)
    # Lookup tables keep exp() out of the inner loop.
    ad_table = np.empty(256, dtype=np.float32)
    census_table = np.empty(256, dtype=np.float32)
    for value in range(256):
        ad_table[value] = np.float32(1.0 - math.exp(-value / 10.0))
        census_table[value] = np.float32(1.0 - math.exp(-value / 30.0))
    for y in prange(height):
        for x in range(width):
            for k in range(num_disp):
                combined = half * (ad_table[ad_volume[y, x, k]] + census_table[census_volume[y, x, k]])
                out[y, x, k] = np.uint8(math.floor(combined + np.float32(0.5)))
    return out


def compute_cost(left_gray: np.ndarray, right_gray: np.ndarray, params: SGMParams, out: np.ndarray | None = None) -> np.ndarray:
    """Cost volume for a prepared pair (see :func:`prepare_image`).

    Args:
        left_gray, right_gray: ``float32`` (H, W) gray images in 8-bit units.
        params: :class:`pseudolabel.sgm.params.SGMParams`.
        out: optional ``uint8`` (H, W, D) buffer to reuse for the census cost (saves page faults).

    Returns:
        ``uint8`` (H, W, D) cost volume.
    """
    min_disp, num_disp = int(params.min_disp), int(params.num_disp)
    census_max = params.census_width * params.census_height - 1
    if params.cost in ("census", "ad_census"):
        census_left = census_transform(left_gray, params.census_width, params.census_height, params.census_step)
        census_right = census_transform(right_gray, params.census_width, params.census_height, params.census_step)
        if out is None or out.shape != left_gray.shape + (num_disp,) or out.dtype != np.uint8:
            out = np.empty(left_gray.shape + (num_disp,), dtype=np.uint8)
        census_cost_volume_into(census_left, census_right, min_disp, census_max, out)
        census = out
        if params.cost == "census":
            return census
        ad = ad_cost_volume(left_gray, right_gray, min_disp, num_disp, 255)
        return combine_ad_census(ad, census, census_max)
    if params.cost == "ad":
        return ad_cost_volume(left_gray, right_gray, min_disp, num_disp, params.ad_truncation)
    if params.cost == "bt":
        return bt_cost_volume(left_gray, right_gray, min_disp, num_disp, params.ad_truncation)
    raise InputError(f"unknown cost {params.cost!r}; use census, ad, bt or ad_census")
