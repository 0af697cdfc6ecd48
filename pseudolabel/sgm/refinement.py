"""Stage 4 of SGM: sub-pixel refinement, median filtering and filling of invalid pixels."""

from __future__ import annotations

import cv2
import numba
import numpy as np
from numba import prange

SUBPIXEL_MODES = {"none": 0, "parabola": 1, "equiangular": 2}


@numba.njit(cache=True, inline="always")
def _offset(before: float, centre: float, after: float, mode: int) -> float:
    """Sub-pixel offset in [-0.5, 0.5] of the minimum of three costs at k-1, k, k+1."""
    if mode == 1:
        curvature = before - 2.0 * centre + after
        if curvature <= 0.0:
            return 0.0
        offset = (before - after) / (2.0 * curvature)
    elif mode == 2:
        slope = max(before - centre, after - centre)
        if slope <= 0.0:
            return 0.0
        offset = (before - after) / (2.0 * slope)
    else:
        return 0.0
    return min(0.5, max(-0.5, offset))


@numba.njit(cache=True, nogil=True)
def subpixel_left_row(curves: np.ndarray, index: np.ndarray, min_disp: int, mode: int, disparity: np.ndarray) -> None:
    """:func:`subpixel_left` of one row: ``curves`` ``uint16`` (W, D), ``index`` ``int16`` (W,), ``disparity`` ``float32`` (W,) output."""
    width, num_disp = curves.shape
    for x in range(width):
        k = np.int64(index[x])
        value = float(k)
        if 0 < k < num_disp - 1:
            value += _offset(float(curves[x, k - 1]), float(curves[x, k]), float(curves[x, k + 1]), mode)
        disparity[x] = np.float32(min_disp + value)


@numba.njit(cache=True, nogil=True)
def subpixel_right_row(curves: np.ndarray, index: np.ndarray, min_disp: int, mode: int, disparity: np.ndarray) -> None:
    """:func:`subpixel_right` of one row: ``curves`` ``uint16`` (W, D) of the left view, ``index`` ``int16`` (W,)
    right-view winners, ``disparity`` ``float32`` (W,) output."""
    width, num_disp = curves.shape
    for x in range(width):
        k = np.int64(index[x])
        if k < 0:
            disparity[x] = np.nan
            continue
        value = float(k)
        x_before = x + min_disp + k - 1
        x_after = x + min_disp + k + 1
        if 0 < k < num_disp - 1 and x_before >= 0 and x_after < width:
            value += _offset(float(curves[x_before, k - 1]), float(curves[x_before + 1, k]), float(curves[x_after, k + 1]), mode)
        disparity[x] = np.float32(min_disp + value)


@numba.njit(cache=True, parallel=True, nogil=True)
def subpixel_left(aggregated: np.ndarray, index: np.ndarray, min_disp: int, mode: int) -> np.ndarray:
    """Sub-pixel left-view disparity.

    Args:
        aggregated: ``uint16`` (H, W, D).
        index: ``int16`` (H, W) winning indices.
        min_disp: disparity of index 0, pixels.
        mode: 0 none, 1 parabola ``(c- - c+) / (2 (c- - 2 c + c+))``, 2 equiangular
            ``(c- - c+) / (2 max(c- - c, c+ - c))``; no refinement at the ends of the range.

    Returns:
        ``float32`` (H, W) disparity in pixels.
    """
    height, width, num_disp = aggregated.shape
    disparity = np.empty((height, width), dtype=np.float32)
    for y in prange(height):
        subpixel_left_row(aggregated[y], index[y], min_disp, mode, disparity[y])
    return disparity


@numba.njit(cache=True, parallel=True, nogil=True)
def subpixel_right(aggregated: np.ndarray, index: np.ndarray, min_disp: int, mode: int) -> np.ndarray:
    """Sub-pixel right-view disparity from the curve ``S[y, xr + min_disp + k, k]``.

    Args:
        aggregated: ``uint16`` (H, W, D).
        index: ``int16`` (H, W) right-view winning indices (-1 = none).

    Returns:
        ``float32`` (H, W) right-view disparity in pixels, NaN where the index is -1. No refinement
        where a neighbour of the curve falls outside the image.
    """
    height, width, num_disp = aggregated.shape
    disparity = np.empty((height, width), dtype=np.float32)
    for y in prange(height):
        subpixel_right_row(aggregated[y], index[y], min_disp, mode, disparity[y])
    return disparity


def median_filter(disparity: np.ndarray, size: int) -> np.ndarray:
    """``size`` x ``size`` median of a ``float32`` (H, W) map (size 0 or 1: unchanged). Borders replicate."""
    if size <= 1:
        return disparity
    return cv2.medianBlur(np.ascontiguousarray(disparity, dtype=np.float32), size)


def remove_speckles(disparity: np.ndarray, valid: np.ndarray, max_size: int, max_diff: float) -> np.ndarray:
    """Invalidate small connected regions of similar disparity (speckles).

    Neighbouring valid pixels belong to one region when their disparities differ by at most
    ``max_diff`` pixels; regions of at most ``max_size`` pixels are marked invalid.

    Args:
        disparity: ``float32`` (H, W), pixels.
        valid: ``bool`` (H, W).

    Returns:
        ``bool`` (H, W) new validity mask.
    """
    if max_size <= 0:
        return valid
    fixed_point = np.round(np.where(valid, disparity, 0.0) * 16.0).astype(np.int32)
    offset = int(fixed_point.min(initial=0))
    encoded = (fixed_point - offset + 16).astype(np.int16) if fixed_point.max(initial=0) - offset + 16 < 32767 else None
    if encoded is None:
        return valid
    encoded[~valid] = 0
    cv2.filterSpeckles(encoded, 0, int(max_size), int(round(max_diff * 16.0)))
    return valid & (encoded != 0)


_FILL_STEPS = np.array([[0, 1], [0, -1], [1, 0], [-1, 0], [1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=np.int64)


@numba.njit(cache=True, parallel=True, nogil=True)
def _nearest_valid_all(disparity: np.ndarray, valid: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """:func:`_nearest_valid_along` for every direction of ``steps`` ((N, 2) ``int64``), one thread per direction.

    Returns:
        ``float32`` (N, H, W).
    """
    height, width = disparity.shape
    neighbours = np.empty((steps.shape[0], height, width), dtype=np.float32)
    for direction in prange(steps.shape[0]):
        neighbours[direction] = _nearest_valid_along(disparity, valid, steps[direction, 0], steps[direction, 1])
    return neighbours


@numba.njit(cache=True, nogil=True)
def _nearest_valid_along(disparity: np.ndarray, valid: np.ndarray, step_x: int, step_y: int) -> np.ndarray:
    """For every pixel ``p``, the disparity of the first valid pixel ``p + t (step_x, step_y)``, ``t >= 1``.

    One sweep over the rows against the ray direction, carrying the answer of the previous row
    (``step_y`` = +-1, ``step_x`` in -1, 0, 1), or along each row when ``step_y`` = 0.

    Returns:
        ``float32`` (H, W), NaN where the ray leaves the image without meeting a valid pixel.
    """
    height, width = disparity.shape
    nearest = np.full((height, width), np.nan, dtype=np.float32)
    if step_y == 0:
        for y in range(height):
            carried = np.float32(np.nan)
            for i in range(width):
                x = width - 1 - i if step_x > 0 else i
                nearest[y, x] = carried
                if valid[y, x]:
                    carried = disparity[y, x]
        return nearest
    # inclusive[x]: the answer for the row below (step_y > 0) or above, counting the pixel itself
    inclusive = np.full(width, np.nan, dtype=np.float32)
    for i in range(height):
        y = height - 1 - i if step_y > 0 else i
        if i > 0:
            for x in range(max(0, -step_x), min(width, width - step_x)):
                nearest[y, x] = inclusive[x + step_x]
        for x in range(width):
            inclusive[x] = disparity[y, x] if valid[y, x] else nearest[y, x]
    return nearest


@numba.njit(cache=True, inline="always")
def _interleaved_row(i: int, height: int) -> int:
    """Row of the ``i``-th iteration of a ``prange`` over ``height`` rows: the even rows first, then the odd
    ones, so that the equal contiguous chunks of iterations that the threads get cover rows spread over
    the whole image (balanced work when only some pixels, clustered in a few regions, are processed)."""
    half = (height + 1) // 2
    return 2 * i if i < half else 2 * (i - half) + 1


@numba.njit(cache=True, parallel=True, nogil=True)
def _fill_from_neighbours(
    disparity: np.ndarray, valid: np.ndarray, neighbours: np.ndarray, disparity_right: np.ndarray, lr_max_diff: float
) -> np.ndarray:
    height, width = disparity.shape
    filled = disparity.copy()
    for row_index in prange(height):
        y = _interleaved_row(row_index, height)
        found = np.empty(8, dtype=np.float32)
        for x in range(width):
            if valid[y, x]:
                continue
            count = 0
            for direction in range(8):
                value = neighbours[direction, y, x]
                if not np.isnan(value):
                    found[count] = value
                    count += 1
            if count == 0:
                continue
            # insertion sort of the (at most 8) values in place: no allocation per pixel
            for i in range(1, count):
                value = found[i]
                j = i - 1
                while j >= 0 and found[j] > value:
                    found[j + 1] = found[j]
                    j -= 1
                found[j + 1] = value
            values = found
            d = disparity[y, x]
            x_right = int(np.floor(x - d + 0.5))
            occluded = False
            if 0 <= x_right < width:
                occluded = disparity_right[y, x_right] > d + lr_max_diff
            if occluded:
                filled[y, x] = values[1] if count >= 3 else values[0]
            elif count % 2 == 1:
                filled[y, x] = values[count // 2]
            else:
                filled[y, x] = np.float32(0.5) * (values[count // 2 - 1] + values[count // 2])
    return filled


def fill_invalid(disparity: np.ndarray, valid: np.ndarray, disparity_right: np.ndarray, lr_max_diff: float) -> np.ndarray:
    """Dense disparity from the valid pixels (after Hirschmueller 2008, section 3.4).

    For every invalid pixel the nearest valid disparities along 8 directions are collected. A pixel is
    an *occlusion* when its match in the right view belongs to a nearer surface
    (``d_right(x - d) > d + lr_max_diff``): it takes the second smallest of the collected values (the
    background, robust to one stray value; the smallest when fewer than 3 were found). Otherwise it
    is a *mismatch* and takes their median. Pixels with no valid pixel in any direction stay unchanged.
    The nearest valid values come from one sweep per direction, not from walking from every pixel.

    Args:
        disparity: ``float32`` (H, W) left disparity, pixels.
        valid: ``bool`` (H, W).
        disparity_right: ``float32`` (H, W) right-view disparity (NaN = none).
        lr_max_diff: tolerance of the left-right check, pixels.

    Returns:
        ``float32`` (H, W) filled copy.
    """
    disparity = np.ascontiguousarray(disparity, dtype=np.float32)
    valid = np.ascontiguousarray(valid, dtype=np.bool_)
    neighbours = _nearest_valid_all(disparity, valid, _FILL_STEPS)
    return _fill_from_neighbours(disparity, valid, neighbours, np.ascontiguousarray(disparity_right, dtype=np.float32), float(lr_max_diff))


@numba.njit(cache=True, inline="always")
def _select(values: np.ndarray, count: int, rank: int) -> float:
    """The ``rank``-th smallest of ``values[:count]`` (Hoare's selection, in place, average O(count)).

    On return ``values[:rank]`` holds the smaller elements and ``values[rank]`` the selected one.
    """
    low = 0
    high = count - 1
    while low < high:
        pivot = values[(low + high) // 2]
        i = low
        j = high
        while i <= j:
            while values[i] < pivot:
                i += 1
            while values[j] > pivot:
                j -= 1
            if i <= j:
                values[i], values[j] = values[j], values[i]
                i += 1
                j -= 1
        if rank <= j:
            high = j
        elif rank >= i:
            low = i
        else:
            break
    return values[rank]


_RANK_LIMIT = 32  # up to this many values the median is found by ranking (no data-dependent branches)


@numba.njit(cache=True, inline="always")
def _median_by_rank(values: np.ndarray, count: int) -> float:
    """Median of ``values[:count]`` (mean of the two middle ones for an even count), by counting for
    every value how many others sort before it (equal values ordered by position, so that the ranks
    are 0 .. count - 1 once each). O(count^2) comparisons without unpredictable branches: faster
    than a selection for the few dozen values of a sparse window; the same values as :func:`_select`."""
    middle = count // 2
    upper = np.float32(0.0)
    lower = np.float32(0.0)
    for i in range(count):
        value = values[i]
        rank = 0
        for j in range(i):
            rank += 1 if values[j] <= value else 0
        for j in range(i + 1, count):
            rank += 1 if values[j] < value else 0
        if rank == middle:
            upper = value
        if rank == middle - 1:
            lower = value
    return upper if count % 2 == 1 else np.float32(0.5) * (lower + upper)


@numba.njit(cache=True, parallel=True, nogil=True)
def edge_aware_median(disparity: np.ndarray, guide: np.ndarray, radius: int, intensity_range: float, where: np.ndarray, step: int = 1) -> np.ndarray:
    """Median of the disparities sampled every ``step`` pixels in a ``(2 radius + 1)^2`` window,
    restricted to the samples whose guide intensity is within ``intensity_range`` of the centre's (a
    binary-weight weighted median, so that the filter does not cross object edges).

    Args:
        disparity: ``float32`` (H, W) dense disparity, pixels.
        guide: ``float32`` (H, W) gray left image in 8-bit units.
        radius: window radius in pixels (0 = unchanged copy).
        intensity_range: largest intensity difference (8-bit gray levels) of a pixel that takes part.
        where: ``bool`` (H, W): filter these pixels only (the others are copied).
        step: sample spacing in pixels (a sparse window: ``radius=6, step=3`` takes 5 x 5 samples
            spread over 13 x 13 pixels).

    Returns:
        ``float32`` (H, W) filtered disparity; for an even number of values, the mean of the two
        middle ones. The centre always takes part, so the window is never empty.
    """
    height, width = disparity.shape
    filtered = disparity.copy()
    reach = radius // step
    size = (2 * reach + 1) * (2 * reach + 1)
    for row_index in prange(height):
        y = _interleaved_row(row_index, height)
        window = np.empty(size, dtype=np.float32)
        y_first = y - step * min(reach, y // step)
        y_last = y + step * min(reach, (height - 1 - y) // step)
        for x in range(width):
            if not where[y, x]:
                continue
            centre = guide[y, x]
            count = 0
            x_first = x - step * min(reach, x // step)
            x_last = x + step * min(reach, (width - 1 - x) // step)
            for yy in range(y_first, y_last + 1, step):
                for xx in range(x_first, x_last + 1, step):
                    # branch-free: always store, advance only when the pixel takes part
                    window[count] = disparity[yy, xx]
                    count += 1 if abs(guide[yy, xx] - centre) <= intensity_range else 0
            if count <= _RANK_LIMIT:
                filtered[y, x] = _median_by_rank(window, count)
                continue
            upper = _select(window, count, count // 2)
            if count % 2 == 1:
                filtered[y, x] = upper
            else:
                lower = window[0]
                for i in range(1, count // 2):
                    lower = max(lower, window[i])
                filtered[y, x] = np.float32(0.5) * (lower + upper)
    return filtered
