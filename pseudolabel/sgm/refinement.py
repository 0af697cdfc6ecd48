"""Stage 4 of SGM: sub-pixel refinement, median filtering and filling of invalid pixels."""

from __future__ import annotations

import cv2
import numba
import numpy as np
from numba import prange

from pseudolabel.sgm._numba_utils import ROW_KERNEL

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


@numba.njit(**ROW_KERNEL)
def subpixel_left_row(curves: np.ndarray, index: np.ndarray, min_disp: int, mode: int, disparity: np.ndarray) -> None:
    """:func:`subpixel_left` of one row: ``curves`` ``uint16`` (W, D), ``index`` ``int16`` (W,), ``disparity`` ``float32`` (W,) output."""
    width, num_disp = curves.shape
    for x in range(width):
        k = np.int64(index[x])
        value = float(k)
        if 0 < k < num_disp - 1:
            value += _offset(float(curves[x, k - 1]), float(curves[x, k]), float(curves[x, k + 1]), mode)
        disparity[x] = np.float32(min_disp + value)


@numba.njit(**ROW_KERNEL)
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
    disparity = np.ascontiguousarray(disparity, dtype=np.float32)
    valid = np.ascontiguousarray(valid, dtype=np.bool_)
    encoded = np.empty(disparity.shape, dtype=np.int16)
    if not speckle_codes(disparity, valid, encoded):
        return valid
    cv2.filterSpeckles(encoded, 0, int(max_size), int(round(max_diff * 16.0)))
    return valid & (encoded != 0)


@numba.njit(cache=True, nogil=True)
def speckle_codes(disparity: np.ndarray, valid: np.ndarray, encoded: np.ndarray) -> bool:
    """The ``int16`` codes that :func:`remove_speckles` hands to OpenCV's ``filterSpeckles``, in two passes.

    With ``f = rint(16 d)`` (``float32``, ties to even) of the valid pixels and 0 elsewhere, and
    ``offset = min(f, 0)``: ``f - offset + 16`` at valid pixels (always >= 16) and 0 (OpenCV's "no
    disparity") elsewhere, so that 16 code units are one pixel.

    Args:
        disparity: ``float32`` (H, W), pixels (finite where valid).
        valid: ``bool`` (H, W).
        encoded: ``int16`` (H, W) output; left unspecified when the codes do not fit.

    Returns:
        False when ``max(f, 0) - offset + 16`` does not fit below 32767 (no codes written).
    """
    height, width = disparity.shape
    sixteen = np.float32(16.0)
    zero = np.float32(0.0)
    low = zero
    high = zero
    for y in range(height):
        for x in range(width):
            value = np.rint(disparity[y, x] * sixteen) if valid[y, x] else zero
            low = min(low, value)
            high = max(high, value)
    offset = np.int64(low)
    if np.int64(high) - offset + 16 >= 32767:
        return False
    for y in range(height):
        for x in range(width):
            value = np.int64(np.rint(disparity[y, x] * sixteen)) - offset + 16
            encoded[y, x] = np.int16(value) if valid[y, x] else np.int16(0)
    return True


@numba.njit(cache=True, inline="always")
def _interleaved_row(i: int, height: int) -> int:
    """Row of the ``i``-th iteration of a ``prange`` over ``height`` rows: the even rows first, then the odd
    ones, so that the equal contiguous chunks of iterations that the threads get cover rows spread over
    the whole image (balanced work when only some pixels, clustered in a few regions, are processed)."""
    half = (height + 1) // 2
    return 2 * i if i < half else 2 * (i - half) + 1


@numba.njit(cache=True, inline="always")
def _fill_value(found: np.ndarray, count: int, d: float, x: int, right_row: np.ndarray, lr_max_diff: float) -> float:
    """The fill value of an invalid pixel from the ``count`` (1 .. 8) nearest valid disparities in
    ``found[:count]`` (sorted in place): the second smallest (the smallest below 3 values) in an
    occlusion, where ``right_row[x_right] > d + lr_max_diff`` at ``x_right = floor(x - d + 0.5)``,
    else their median."""
    # insertion sort of the (at most 8) values in place: no allocation per pixel
    for i in range(1, count):
        value = found[i]
        j = i - 1
        while j >= 0 and found[j] > value:
            found[j + 1] = found[j]
            j -= 1
        found[j + 1] = value
    width = right_row.shape[0]
    x_right = int(np.floor(x - d + 0.5))
    occluded = False
    if 0 <= x_right < width:
        occluded = right_row[x_right] > d + lr_max_diff
    if occluded:
        return found[1] if count >= 3 else found[0]
    if count % 2 == 1:
        return found[count // 2]
    return np.float32(0.5) * (found[count // 2 - 1] + found[count // 2])


@numba.njit(cache=True, nogil=True)
def _sweep_row(disparity_row: np.ndarray, valid_row: np.ndarray, before: np.ndarray, after: np.ndarray, shift: int) -> None:
    """One row of a sweep for the direction ``(shift, -s)`` of a sweep moving ``s`` rows at a time.

    ``before`` and ``after`` are ``float32`` (W + 2,) with NaN at both ends: ``before[x + 1]`` is the
    disparity of the nearest valid pixel at or beyond ``x`` (the pixel itself counts) of the row before,
    along the direction; ``after`` receives the same for this row, whose pixel ``x`` sees
    ``before[x + 1 + shift]``. Branch-free, vectorised."""
    width = disparity_row.shape[0]
    source = before[1 + shift : 1 + shift + width]
    target = after[1 : 1 + width]
    for x in range(width):
        target[x] = disparity_row[x] if valid_row[x] else source[x]


@numba.njit(cache=True, parallel=True, nogil=True)
def _fill_sweeps(disparity: np.ndarray, valid: np.ndarray, disparity_right: np.ndarray, lr_max_diff: float) -> np.ndarray:
    """:func:`fill_invalid` in two sweeps over the rows, fused with the filling.

    A forward sweep (top to bottom) carries for every column the nearest valid disparity looking up along
    ``(-1, -1)``, ``(0, -1)``, ``(1, -1)`` (one ``float32`` row per direction), a backward sweep the
    same looking down. The sweeps run in two phases like the raster aggregation: first the forward
    sweep over the top half while the backward sweep covers the bottom half, each storing its three
    values of every invalid pixel (compactly, invalid pixel by invalid pixel); then each continues into
    the other half and fills each invalid pixel from its own three values, the three stored by the other
    sweep and the two horizontal neighbours (the valid pixels at both ends of the pixel's run of invalid
    pixels). The two tasks of a phase touch disjoint rows, so the result does not depend on the thread
    count.

    Args:
        disparity: ``float32`` (H, W), pixels.
        valid: ``bool`` (H, W).
        disparity_right: ``float32`` (H, W) right-view disparity (NaN = none).
        lr_max_diff: tolerance of the left-right check, pixels.

    Returns:
        ``float32`` (H, W) filled copy.
    """
    height, width = disparity.shape
    filled = disparity.copy()
    offsets = np.zeros(height + 1, dtype=np.int64)
    for y in range(height):
        invalid = 0
        row = valid[y]
        for x in range(width):
            invalid += 0 if row[x] else 1
        offsets[y + 1] = offsets[y] + invalid
    stored = np.empty((offsets[height], 3), dtype=np.float32)
    # task, row parity, direction: the carried rows (NaN at both ends)
    carried = np.full((2, 2, 3, width + 2), np.nan, dtype=np.float32)
    middle = height // 2
    for phase in range(2):
        for task in prange(2):
            forward = task == 0
            s = 1 if forward else -1
            if phase == 0:
                y_first, y_stop = (0, middle) if forward else (height - 1, middle - 1)
            else:
                y_first, y_stop = (middle, height) if forward else (middle - 1, -1)
            found = np.empty(8, dtype=np.float32)
            for y in range(y_first, y_stop, s):
                before = carried[task, (y + 1) % 2]
                after = carried[task, y % 2]
                for direction in range(3):
                    _sweep_row(disparity[y], valid[y], before[direction], after[direction], direction - 1)
                if offsets[y + 1] == offsets[y]:
                    continue
                row_valid = valid[y]
                row = disparity[y]
                ordinal = offsets[y]
                if phase == 0:
                    for x in range(width):
                        if not row_valid[x]:
                            for direction in range(3):
                                stored[ordinal, direction] = before[direction, x + direction]
                            ordinal += 1
                    continue
                left = np.float32(np.nan)
                right = np.float32(np.nan)
                run_end = 0
                for x in range(width):
                    if row_valid[x]:
                        left = row[x]
                        continue
                    if run_end <= x:
                        # a new run of invalid pixels: its right neighbour is the first valid pixel after it
                        run_end = x + 1
                        while run_end < width and not row_valid[run_end]:
                            run_end += 1
                        right = row[run_end] if run_end < width else np.float32(np.nan)
                    count = 0
                    for value in (left, right):
                        if not np.isnan(value):
                            found[count] = value
                            count += 1
                    for direction in range(3):
                        value = before[direction, x + direction]
                        if not np.isnan(value):
                            found[count] = value
                            count += 1
                        value = stored[ordinal, direction]
                        if not np.isnan(value):
                            found[count] = value
                            count += 1
                    ordinal += 1
                    if count > 0:
                        filled[y, x] = _fill_value(found, count, row[x], x, disparity_right[y], lr_max_diff)
    return filled


def fill_invalid(disparity: np.ndarray, valid: np.ndarray, disparity_right: np.ndarray, lr_max_diff: float) -> np.ndarray:
    """Dense disparity from the valid pixels (after Hirschmueller 2008, section 3.4).

    For every invalid pixel the nearest valid disparities along 8 directions are collected. A pixel is
    an *occlusion* when its match in the right view belongs to a nearer surface
    (``d_right(x - d) > d + lr_max_diff``): it takes the second smallest of the collected values (the
    background, robust to one stray value; the smallest when fewer than 3 were found). Otherwise it
    is a *mismatch* and takes their median. Pixels with no valid pixel in any direction stay unchanged.
    The nearest valid values come from two sweeps over the rows (:func:`_fill_sweeps`), not from
    walking from every pixel.

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
    return _fill_sweeps(disparity, valid, np.ascontiguousarray(disparity_right, dtype=np.float32), float(lr_max_diff))


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
def _edge_aware_median_select(
    disparity: np.ndarray, guide: np.ndarray, radius: int, intensity_range: float, where: np.ndarray, step: int = 1
) -> np.ndarray:
    """:func:`edge_aware_median` of windows of more than :data:`NETWORK_LIMIT` samples, pixel by pixel.

    Arguments, result and units as :func:`edge_aware_median`: the median of the disparities sampled
    every ``step`` pixels in a ``(2 radius + 1)^2`` window, restricted to the samples whose guide
    intensity is within ``intensity_range`` of the centre's, at the pixels of ``where``.
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


NETWORK_LIMIT = 32
"""Windows of at most this many samples are filtered by a sorting network over :data:`_LANES` pixels at once."""

_LANES = 16  # pixels whose windows one sorting network sorts side by side (one AVX-512 or two AVX2 registers of float32)


def selection_network(size: int, needed: int) -> np.ndarray:
    """Comparators of a network that sorts ``size`` values far enough to place the ``needed`` smallest.

    Batcher's odd-even merge sort over the next power of two, keeping only the comparators that can
    change one of the first ``needed`` outputs of ``size`` inputs: a comparator ``(i, j)``, ``i < j``,
    puts the smaller value at ``i``, so the (virtual) inputs past ``size``, as large as anything, never
    move and every comparator that touches them is a no-op; walking backwards, a comparator neither of
    whose outputs feeds one of the first ``needed`` places is dropped.

    Args:
        size: number of inputs (1 .. :data:`NETWORK_LIMIT`).
        needed: number of leading sorted outputs that must be exact.

    Returns:
        ``int64`` (N, 2) comparators ``(i, j)``, ``i < j``, applied in order: ``min`` to ``i``, ``max`` to ``j``.
    """
    length = 1
    while length < size:
        length *= 2
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < length:
        k = p
        while k >= 1:
            for j in range(k % p, length - k, 2 * k):
                for i in range(min(k, length - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    kept: list[tuple[int, int]] = []
    live = set(range(min(needed, size)))
    for i, j in reversed([pair for pair in pairs if pair[1] < size]):
        if i in live or j in live:
            kept.append((i, j))
            live.update((i, j))
    return np.array(kept[::-1], dtype=np.int64).reshape(-1, 2)


@numba.njit(cache=True, nogil=True)
def _sort_lanes(lanes: np.ndarray, network: np.ndarray) -> None:
    """Apply the comparators ``network`` ((N, 2) ``int64``) to every column of ``lanes`` (``float32`` (size, L)),
    all columns side by side (the loop over columns vectorises: ``vminps``/``vmaxps``)."""
    count = lanes.shape[1]
    for c in range(network.shape[0]):
        low = lanes[network[c, 0]]
        high = lanes[network[c, 1]]
        for lane in range(count):
            a = low[lane]
            b = high[lane]
            smaller = a < b
            low[lane] = a if smaller else b
            high[lane] = b if smaller else a


@numba.njit(cache=True, parallel=True, nogil=True)
def _edge_aware_median_network(
    disparity: np.ndarray, guide: np.ndarray, reach: int, step: int, intensity_range: float, where: np.ndarray, network: np.ndarray, jobs: int
) -> np.ndarray:
    """:func:`edge_aware_median` of windows of at most :data:`NETWORK_LIMIT` samples.

    The samples of :data:`_LANES` pixels to filter are gathered side by side into a ``(size, _LANES)``
    table, the taking-part samples of each pixel first and ``+inf`` after them, and one sorting network
    (:func:`selection_network`) sorts all columns at once; the median of a pixel with ``n`` samples is
    then at place ``n // 2`` (and ``n // 2 - 1``). Job ``j`` of ``jobs`` takes the rows ``y = j (mod jobs)``,
    so that pixels of consecutive rows fill the lanes; each pixel's value depends only on its own window,
    so the result does not depend on ``jobs`` or the thread count.

    Args:
        disparity: ``float32`` (H, W) finite disparities, pixels.
        guide: ``float32`` (H, W) gray left image, 8-bit units.
        reach: samples on each side of the centre (``radius // step``).
        step: sample spacing, pixels.
        intensity_range: largest guide difference of a sample that takes part, 8-bit gray levels.
        where: ``bool`` (H, W) pixels to filter.
        network: ``int64`` (N, 2) comparators sorting at least the first ``size // 2 + 1`` of ``size = (2 reach + 1)^2`` values.
        jobs: number of row sets (work items of the parallel loop).

    Returns:
        ``float32`` (H, W) filtered copy of ``disparity``.
    """
    height, width = disparity.shape
    filtered = disparity.copy()
    side = 2 * reach + 1
    size = side * side
    infinity = np.float32(np.inf)
    for job in prange(jobs):
        lanes = np.empty((size, _LANES), dtype=np.float32)
        counts = np.zeros(_LANES, dtype=np.int64)
        rows = np.zeros(_LANES, dtype=np.int64)
        columns = np.zeros(_LANES, dtype=np.int64)
        used = 0
        for y in range(job, height, jobs):
            y_first = y - step * min(reach, y // step)
            y_last = y + step * min(reach, (height - 1 - y) // step)
            for x in range(width):
                if where[y, x]:
                    centre = guide[y, x]
                    count = 0
                    x_first = x - step * min(reach, x // step)
                    x_last = x + step * min(reach, (width - 1 - x) // step)
                    for yy in range(y_first, y_last + 1, step):
                        for xx in range(x_first, x_last + 1, step):
                            # branch-free: always store, advance only when the sample takes part
                            lanes[count, used] = disparity[yy, xx]
                            count += 1 if abs(guide[yy, xx] - centre) <= intensity_range else 0
                    for i in range(count, size):
                        lanes[i, used] = infinity
                    counts[used] = count
                    rows[used] = y
                    columns[used] = x
                    used += 1
                last = y + jobs >= height and x == width - 1
                if used == _LANES or (last and used > 0):
                    _sort_lanes(lanes, network)
                    for lane in range(used):
                        count = counts[lane]
                        upper = lanes[count // 2, lane]
                        if count % 2 == 1:
                            value = upper
                        elif count == 0:
                            value = np.float32(0.0)
                        else:
                            value = np.float32(0.5) * (lanes[count // 2 - 1, lane] + upper)
                        filtered[rows[lane], columns[lane]] = value
                    used = 0
    return filtered


def edge_aware_median(disparity: np.ndarray, guide: np.ndarray, radius: int, intensity_range: float, where: np.ndarray, step: int = 1) -> np.ndarray:
    """Median of the disparities sampled every ``step`` pixels in a ``(2 radius + 1)^2`` window,
    restricted to the samples whose guide intensity is within ``intensity_range`` of the centre's (a
    binary-weight weighted median, so that the filter does not cross object edges).

    Windows of at most :data:`NETWORK_LIMIT` samples (the default ``radius=6, step=3``: 25) go through
    a sorting network applied to :data:`_LANES` pixels at once (:func:`_edge_aware_median_network`),
    larger ones through a selection per pixel; both give exactly the median of the same values.

    Args:
        disparity: ``float32`` (H, W) dense disparity, pixels (finite).
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
    reach = radius // step
    size = (2 * reach + 1) * (2 * reach + 1)
    if size > NETWORK_LIMIT:
        return _edge_aware_median_select(disparity, guide, radius, intensity_range, where, step)
    jobs = 4 * numba.get_num_threads()
    return _edge_aware_median_network(disparity, guide, reach, step, float(intensity_range), where, _network(size), jobs)


_NETWORKS: dict[int, np.ndarray] = {}


def _network(size: int) -> np.ndarray:
    """The cached :func:`selection_network` for the median of up to ``size`` values."""
    if size not in _NETWORKS:
        _NETWORKS[size] = selection_network(size, size // 2 + 1)
    return _NETWORKS[size]
