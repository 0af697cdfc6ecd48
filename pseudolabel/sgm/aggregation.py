"""Stage 2 of SGM: path-wise cost aggregation (Hirschmueller, TPAMI 2008).

Along every direction ``r`` the path cost is

    L_r(p, d) = C(p, d) + min(L_r(p - r, d), L_r(p - r, d +- 1) + P1, min_k L_r(p - r, k) + P2)
                - min_k L_r(p - r, k)

and the aggregated volume is ``S(p, d) = sum_r L_r(p, d)``. Paths start at the image border with
``L_r = C``. With ``p2_adaptive`` the ``P2`` of each step is ``max(P1 + 1, P2 / (1 + |I(p) - I(p - r)| / gamma))``.

Directions ``r = (dx, dy)`` (the path arrives at ``p`` from ``p - r``):

* 4 paths: (1, 0), (-1, 0), (0, 1), (0, -1);
* 8 paths: the 4 above and the diagonals (1, 1), (-1, 1), (1, -1), (-1, -1);
* 16 paths: the 8 above and (2, 1), (-2, 1), (1, 2), (-1, 2) and their opposites.

Two schedules, with identical results:

* At most :data:`RASTER_MAX_THREADS` (two) threads, the directions with ``|dx|, |dy| <= 1`` run as two
  raster passes over the volume (:func:`aggregate_raster_and_select`): a forward pass (rows top to
  bottom) computes ``(0, 1)``, ``(1, 1)``, ``(-1, 1)``, a backward pass their opposites, each keeping
  only the last path costs of every scanline (a state that fits in L2), so the cost volume is read and
  ``S`` written once per pass instead of once per direction pair. The horizontal pair of a row goes
  with the pass that reaches the row first, and the winners of a row are selected by the pass that
  completes it. The passes run in two phases (forward over the top half while backward covers the
  bottom half, then each continues into the other half), one thread per pass: the two passes of a
  phase write disjoint rows.
* With more threads, pairs of opposite directions are aggregated one pair after the other, and
  inside one pair the independent scanlines are split among threads (the horizontal kernels: one
  thread owns a block of rows and both horizontal directions; :func:`aggregate_direction_pair`: one
  thread owns a block of parallel lines and both directions along them).

Either way each cell of ``S`` is written by exactly one thread at a time, and the results do not
depend on the thread count. Directions with a step of 2 (16 paths) always run pair by pair.

Speed: every loop over disparities is branch-free with 16-bit operands, so that LLVM vectorises it
(``vpminsw``/``vpaddw`` on ``ymm`` registers with AVX2 and AVX-512 alike); independent scanlines are
swept side by side so that one's reduction overlaps another's work.

Values: ``C`` is ``uint8``; ``L_r <= max(C) + P2 < 2**15`` fits ``int16``; ``S`` is ``uint16``
(``paths * (max(C) + P2) < 2**16`` is checked).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from pseudolabel.errors import InputError
from pseudolabel.sgm._numba_utils import ROW_KERNEL, prefetch
from pseudolabel.sgm.cost import max_cost
from pseudolabel.sgm.disparity import (
    Winners,
    allocate_winners,
    right_keys_finish,
    right_keys_update,
    select_pixels,
    select_row,
    select_row_right,
)
from pseudolabel.sgm.params import SGMParams
from pseudolabel.sgm.refinement import SUBPIXEL_MODES, subpixel_left_row, subpixel_right_row

_SENTINEL = 16000  # larger than any path cost plus P1, smaller than int16 max

HORIZONTAL = ((1, 0), (-1, 0))
DIRECTIONS: dict[int, tuple[tuple[int, int], ...]] = {
    4: HORIZONTAL + ((0, 1), (0, -1)),
    8: HORIZONTAL + ((0, 1), (1, 1), (-1, 1), (0, -1), (1, -1), (-1, -1)),
    16: HORIZONTAL + ((0, 1), (1, 1), (-1, 1), (2, 1), (-2, 1), (1, 2), (-1, 2)) + ((0, -1), (1, -1), (-1, -1), (2, -1), (-2, -1), (1, -2), (-1, -2)),
}


@numba.njit(cache=True, inline="always")
def _step_penalty(p1: int, p2: int, adaptive: bool, gamma: float, intensity: float, previous_intensity: float) -> int:
    if not adaptive:
        return p2
    step = abs(intensity - previous_intensity)
    penalty = int(p2 / (1.0 + step / gamma))
    return max(penalty, p1 + 1)


@numba.njit(cache=True, inline="always")
def _path_step(cost_row: np.ndarray, previous: np.ndarray, current: np.ndarray, previous_min: int, p1: int, p2: int) -> int:
    """One step of the path recursion over all disparities.

    ``previous``/``current`` are ``int16`` (D + 2,) buffers padded with a sentinel at both ends;
    ``cost_row`` is the ``uint8`` (D,) cost of the pixel. Returns the minimum of ``current``.
    """
    num_disp = cost_row.shape[0]
    jump = np.int16(previous_min + p2)
    smooth = np.int16(p1)
    base = np.int16(previous_min)
    best = np.int16(_SENTINEL)
    for k in range(num_disp):
        same = previous[k + 1]
        lower = np.int16(previous[k] + smooth)
        upper = np.int16(previous[k + 2] + smooth)
        value = np.int16(np.int16(cost_row[k]) + np.int16(min(min(same, lower), min(upper, jump)) - base))
        current[k + 1] = value
        best = min(best, value)
    return best


@numba.njit(cache=True, inline="always")
def _path_start(cost_row: np.ndarray, current: np.ndarray) -> int:
    """First pixel of a path: ``L_r = C``. Fills the padded ``int16`` (D + 2,) ``current`` and returns its minimum."""
    best = np.int16(_SENTINEL)
    for k in range(cost_row.shape[0]):
        value = np.int16(cost_row[k])
        current[k + 1] = value
        best = min(best, value)
    return best


_ROW_BLOCK = 4  # rows swept together by one thread in the horizontal kernels


@numba.njit(**ROW_KERNEL)
def _horizontal_rows(
    cost: np.ndarray,
    image: np.ndarray,
    p1: int,
    p2: int,
    adaptive: bool,
    gamma: float,
    out: np.ndarray,
    accumulate: bool,
    previous: np.ndarray,
    current: np.ndarray,
    best: np.ndarray,
) -> None:
    """Left-to-right plus right-to-left path costs of a block of rows, swept together.

    The rows advance in lock-step, one pixel of each row per step: their recursions are independent,
    so the out-of-order core overlaps one row's minimum (a reduction on the critical path) with the
    next row's work, and a path buffer is read back several steps after it was written (no
    store-forwarding stall). The rows of ``out`` stay in cache between the two sweeps.

    Args:
        cost: ``uint8`` (R, W, D) costs of the rows.
        image: ``float32`` (R, W) gray intensities of the rows.
        out: ``uint16`` (R, W, D); receives ``L_(1,0) + L_(-1,0)``, added to it when ``accumulate``.
        previous, current: ``int16`` (>= R, D + 2) scratch buffers, sentinel-padded at both ends.
        best: ``int16`` (>= R,) scratch.
    """
    rows, width, num_disp = cost.shape
    for backward in (False, True):
        for i in range(width):
            x = width - 1 - i if backward else i
            x_previous = x + 1 if backward else x - 1
            for r in range(rows):
                step = current[r]
                if i == 0:
                    best[r] = _path_start(cost[r, x], step)
                else:
                    penalty = _step_penalty(p1, p2, adaptive, gamma, image[r, x], image[r, x_previous])
                    best[r] = _path_step(cost[r, x], previous[r], step, best[r], p1, penalty)
                total = out[r, x]
                if accumulate or backward:
                    for k in range(num_disp):
                        total[k] = np.uint16(total[k] + np.uint16(step[k + 1]))
                else:
                    for k in range(num_disp):
                        total[k] = np.uint16(step[k + 1])
            previous, current = current, previous


@numba.njit(cache=True, parallel=True, nogil=True)
def aggregate_horizontal(
    cost: np.ndarray, image: np.ndarray, p1: int, p2: int, adaptive: bool, gamma: float, out: np.ndarray, accumulate: bool
) -> None:
    """Left-to-right plus right-to-left path costs; one thread owns a block of rows and both directions.

    Args:
        cost: ``uint8`` (H, W, D) cost volume.
        image: ``float32`` (H, W) gray left image (for ``adaptive`` penalties).
        out: ``uint16`` (H, W, D); receives ``L_(1,0) + L_(-1,0)``, added to it when ``accumulate``.
    """
    height, width, num_disp = cost.shape
    for block in prange((height + _ROW_BLOCK - 1) // _ROW_BLOCK):
        y0 = block * _ROW_BLOCK
        y1 = min(height, y0 + _ROW_BLOCK)
        previous = np.full((_ROW_BLOCK, num_disp + 2), _SENTINEL, dtype=np.int16)
        current = np.full((_ROW_BLOCK, num_disp + 2), _SENTINEL, dtype=np.int16)
        best = np.zeros(_ROW_BLOCK, dtype=np.int16)
        _horizontal_rows(cost[y0:y1], image[y0:y1], p1, p2, adaptive, gamma, out[y0:y1], accumulate, previous, current, best)


@numba.njit(cache=True, parallel=True, nogil=True)
def aggregate_horizontal_and_select(
    cost: np.ndarray,
    image: np.ndarray,
    p1: int,
    p2: int,
    adaptive: bool,
    gamma: float,
    out: np.ndarray,
    min_disp: int,
    index: np.ndarray,
    best_cost: np.ndarray,
    second: np.ndarray,
    second_far: np.ndarray,
    second_local: np.ndarray,
    mean: np.ndarray,
    index_right: np.ndarray,
    subpixel_mode: int,
    disparity_left: np.ndarray,
    disparity_right: np.ndarray,
) -> None:
    """The last aggregation pass fused with winner-takes-all and sub-pixel refinement.

    Adds the horizontal path costs to ``out`` for a block of rows (one thread per block); those rows
    are then final, so the same thread selects their winners in both views
    (:func:`pseudolabel.sgm.disparity.select_row`, :func:`pseudolabel.sgm.disparity.select_row_right`)
    and refines them (:func:`pseudolabel.sgm.refinement.subpixel_left_row`,
    :func:`pseudolabel.sgm.refinement.subpixel_right_row`) while the rows are still in cache.
    Results are identical to :func:`aggregate_horizontal` followed by the winner-takes-all and
    sub-pixel kernels.

    Args:
        out: ``uint16`` (H, W, D) holding the sum of all other directions; completed in place.
        index ... index_right: (H, W) outputs as in :class:`pseudolabel.sgm.disparity.Winners`.
        subpixel_mode: :data:`pseudolabel.sgm.refinement.SUBPIXEL_MODES` value.
        disparity_left, disparity_right: ``float32`` (H, W) sub-pixel disparities (outputs).
    """
    height, width, num_disp = cost.shape
    ks = np.arange(num_disp).astype(np.int16)
    for block in prange((height + _ROW_BLOCK - 1) // _ROW_BLOCK):
        y0 = block * _ROW_BLOCK
        y1 = min(height, y0 + _ROW_BLOCK)
        previous = np.full((_ROW_BLOCK, num_disp + 2), _SENTINEL, dtype=np.int16)
        current = np.full((_ROW_BLOCK, num_disp + 2), _SENTINEL, dtype=np.int16)
        best = np.zeros(_ROW_BLOCK, dtype=np.int16)
        _horizontal_rows(cost[y0:y1], image[y0:y1], p1, p2, adaptive, gamma, out[y0:y1], True, previous, current, best)
        for y in range(y0, y1):
            select_row(out[y], ks, index[y], best_cost[y], second[y], second_far[y], second_local[y], mean[y])
            select_row_right(out[y], ks, min_disp, index_right[y])
            subpixel_left_row(out[y], index[y], min_disp, subpixel_mode, disparity_left[y])
            subpixel_right_row(out[y], index_right[y], min_disp, subpixel_mode, disparity_right[y])


@numba.njit(cache=True, inline="always")
def _path_step_into(
    cost_row: np.ndarray, previous: np.ndarray, current: np.ndarray, previous_min: int, p1: int, p2: int, total: np.ndarray, accumulate: bool
) -> int:
    """:func:`_path_step` that also stores (or, with ``accumulate``, adds) the new path costs into ``total``.

    ``total`` is the ``uint16`` (D,) aggregated cost of the pixel. Returns the minimum of ``current``.
    """
    num_disp = cost_row.shape[0]
    jump = np.int16(previous_min + p2)
    smooth = np.int16(p1)
    base = np.int16(previous_min)
    best = np.int16(_SENTINEL)
    if accumulate:
        for k in range(num_disp):
            # min(L[k - 1] + P1, L[k + 1] + P1) as min(L[k - 1], L[k + 1]) + P1: one addition less, same value
            neighbours = np.int16(min(previous[k], previous[k + 2]) + smooth)
            value = np.int16(np.int16(cost_row[k]) + np.int16(min(min(previous[k + 1], neighbours), jump) - base))
            current[k + 1] = value
            best = min(best, value)
            total[k] = np.uint16(total[k] + np.uint16(value))
    else:
        for k in range(num_disp):
            # min(L[k - 1] + P1, L[k + 1] + P1) as min(L[k - 1], L[k + 1]) + P1: one addition less, same value
            neighbours = np.int16(min(previous[k], previous[k + 2]) + smooth)
            value = np.int16(np.int16(cost_row[k]) + np.int16(min(min(previous[k + 1], neighbours), jump) - base))
            current[k + 1] = value
            best = min(best, value)
            total[k] = np.uint16(value)
    return best


@numba.njit(cache=True, inline="always")
def _path_start_into(cost_row: np.ndarray, current: np.ndarray, total: np.ndarray, accumulate: bool) -> int:
    """:func:`_path_start` that also stores (or, with ``accumulate``, adds) ``C`` into the ``uint16`` (D,) ``total``."""
    best = np.int16(_SENTINEL)
    if accumulate:
        for k in range(cost_row.shape[0]):
            value = np.int16(cost_row[k])
            current[k + 1] = value
            best = min(best, value)
            total[k] = np.uint16(total[k] + np.uint16(value))
    else:
        for k in range(cost_row.shape[0]):
            value = np.int16(cost_row[k])
            current[k + 1] = value
            best = min(best, value)
            total[k] = np.uint16(value)
    return best


_RASTER_CHUNK = 32  # pixels of a row that the raster passes sweep direction by direction


@numba.njit(cache=True, inline="always")
def _path_step_in_place(cost_row: np.ndarray, window: np.ndarray, previous_min: int, p1: int, p2: int, total: np.ndarray, accumulate: bool) -> int:
    """:func:`_path_step_into` with the new curve written over the old one, shifted down by one place.

    ``window`` is the ``int16`` (D + 2,) padded old curve; the new values go to ``window[0 : D]``
    (each is written after the last read of that place: value ``k`` reads places ``k .. k + 2``), so
    the padded new curve starts one place before ``window``; the caller writes its two sentinels.
    Stores (or, with ``accumulate``, adds) the new values into the ``uint16`` (D,) ``total``; returns
    their minimum.
    """
    num_disp = cost_row.shape[0]
    jump = np.int16(previous_min + p2)
    smooth = np.int16(p1)
    base = np.int16(previous_min)
    best = np.int16(_SENTINEL)
    if accumulate:
        for k in range(num_disp):
            neighbours = np.int16(min(window[k], window[k + 2]) + smooth)
            value = np.int16(np.int16(cost_row[k]) + np.int16(min(min(window[k + 1], neighbours), jump) - base))
            window[k] = value
            best = min(best, value)
            total[k] = np.uint16(total[k] + np.uint16(value))
    else:
        for k in range(num_disp):
            neighbours = np.int16(min(window[k], window[k + 2]) + smooth)
            value = np.int16(np.int16(cost_row[k]) + np.int16(min(min(window[k + 1], neighbours), jump) - base))
            window[k] = value
            best = min(best, value)
            total[k] = np.uint16(value)
    return best


RASTER_SHIFT_ROOM = 16  # spare places per scanline curve: the curves move down one place per row, back up every this many rows


@numba.njit(**ROW_KERNEL)
def _row_penalties(
    p1: int, p2: int, adaptive: bool, gamma: float, image_row: np.ndarray, image_before: np.ndarray, shift: int, penalties: np.ndarray
) -> None:
    """Penalty ``P2`` of the step into every pixel ``x`` of a row from pixel ``x + shift`` of the row before.

    Args:
        image_row, image_before: ``float32`` (W,) gray intensities of the row and of the row before.
        penalties: ``int32`` (W,) output; entries whose ``x + shift`` is outside the row are left as they are.
    """
    width = image_row.shape[0]
    for x in range(max(0, -shift), min(width, width - shift)):
        penalties[x] = _step_penalty(p1, p2, adaptive, gamma, image_row[x], image_before[x + shift])


@numba.njit(**ROW_KERNEL)
def _direction_row(
    cost_row: np.ndarray,
    out_row: np.ndarray,
    curves: np.ndarray,
    minima: np.ndarray,
    base: int,
    penalties: np.ndarray,
    shift: int,
    line_offset: int,
    starts: bool,
    p1: int,
    add: bool,
    x_start: int,
    x_stop: int,
) -> None:
    """Path costs of one direction for the pixels ``x_start <= x < x_stop`` of a row, arriving from pixel
    ``x + shift`` of the row before (a path starts where that pixel is outside the image, or everywhere
    when ``starts``). Stores the costs into ``out_row`` (adds them when ``add``).

    The scanline through pixel ``x`` keeps its last padded curve in ``curves[x + line_offset, base : base + D + 2]``;
    the new one replaces it at ``base - 1`` (:func:`_path_step_in_place`).

    Args:
        cost_row: ``uint8`` (W, D) costs of the row.
        out_row: ``uint16`` (W, D) aggregated costs of the row.
        curves: ``int16`` (lines, D + 2 + room) path-cost curves, one per scanline.
        minima: ``int16`` (lines,) the minimum of each curve.
        base: place of the old curves' first (sentinel) value, at least 1.
        penalties: ``int32`` (W,) ``P2`` of each pixel's step (:func:`_row_penalties`).
    """
    width, num_disp = cost_row.shape
    low = x_stop if starts else min(x_stop, max(x_start, -shift))
    high = x_stop if starts else max(low, min(x_stop, width - shift))
    sentinel = np.int16(_SENTINEL)
    # every branch below has its own loop with a constant ``add``: the pixel loops stay simple enough
    # for LLVM to keep the array addresses in registers
    if add:
        for x in range(x_start, low):
            minima[x + line_offset] = _path_start_into(cost_row[x], curves[x + line_offset, base - 1 : base + num_disp + 1], out_row[x], True)
        for x in range(low, high):
            line = curves[x + line_offset]
            minima[x + line_offset] = _path_step_in_place(
                cost_row[x], line[base : base + num_disp + 2], minima[x + line_offset], p1, penalties[x], out_row[x], True
            )
            line[base - 1] = sentinel
            line[base + num_disp] = sentinel
        for x in range(high, x_stop):
            minima[x + line_offset] = _path_start_into(cost_row[x], curves[x + line_offset, base - 1 : base + num_disp + 1], out_row[x], True)
    else:
        for x in range(x_start, low):
            minima[x + line_offset] = _path_start_into(cost_row[x], curves[x + line_offset, base - 1 : base + num_disp + 1], out_row[x], False)
        for x in range(low, high):
            line = curves[x + line_offset]
            minima[x + line_offset] = _path_step_in_place(
                cost_row[x], line[base : base + num_disp + 2], minima[x + line_offset], p1, penalties[x], out_row[x], False
            )
            line[base - 1] = sentinel
            line[base + num_disp] = sentinel
        for x in range(high, x_stop):
            minima[x + line_offset] = _path_start_into(cost_row[x], curves[x + line_offset, base - 1 : base + num_disp + 1], out_row[x], False)
    if starts or low > x_start or high < x_stop:
        for x in range(x_start, x_stop):
            if starts or x < low or x >= high:
                curves[x + line_offset, base - 1] = sentinel
                curves[x + line_offset, base + num_disp] = sentinel


@numba.njit(**ROW_KERNEL)
def _raster_rows(
    cost: np.ndarray,
    image: np.ndarray,
    y_first: int,
    y_stop: int,
    forward: bool,
    diagonals: bool,
    p1: int,
    p2: int,
    adaptive: bool,
    gamma: float,
    out: np.ndarray,
    accumulate: bool,
    state: np.ndarray,
    state_min: np.ndarray,
    state_base: np.ndarray,
    penalties: np.ndarray,
    select: bool,
    ks: np.ndarray,
    min_disp: int,
    subpixel_mode: int,
    index: np.ndarray,
    best_cost: np.ndarray,
    second: np.ndarray,
    second_far: np.ndarray,
    second_local: np.ndarray,
    mean: np.ndarray,
    index_right: np.ndarray,
    disparity_left: np.ndarray,
    disparity_right: np.ndarray,
    keys: np.ndarray,
    padded: np.ndarray,
    moving: np.ndarray,
) -> None:
    """One raster pass over rows ``y_first, y_first + s, ...`` (excluding ``y_stop``), ``s = 1`` when ``forward``, else -1.

    The pass computes, row after row, the path costs of every direction arriving from the row before
    (``r = (dx, s)``, ``dx`` in ``{-1, 0, 1}``, or only ``dx = 0`` without ``diagonals``) and stores
    their sum into ``out`` (adds it when ``accumulate``). The last path costs of every scanline live
    in ``state``, so a pass can stop after any row and continue later from the next one.

    ``state`` holds one curve per scanline, updated in place: the vertical line through ``x`` at
    index ``x``, the line of ``(s, s)`` through ``(x, y)`` at ``x - y + H - 1`` and that of
    ``(-s, s)`` at ``x + y`` (each constant along its line). A row reads and writes the same ``W``
    curves of each direction, about ``3 W (D + 2)`` values, which fit in the L2 cache for KITTI-sized
    rows (two rows of curves would not, and from L3 this loop runs at about half the speed). A new
    curve is written one place below the old one (no copy); every :data:`RASTER_SHIFT_ROOM` rows the
    curves of the row are moved back up.

    Args:
        cost: ``uint8`` (H, W, D) cost volume.
        image: ``float32`` (H, W) gray left image (adaptive penalties).
        out: ``uint16`` (H, W, D) aggregated volume; only the pass's rows are written.
        state: ``int16`` (3, W + H - 1, D + 2 + room) last path costs of each scanline of the directions
            ``(0, s)``, ``(s, s)``, ``(-s, s)``; the padded curves start at place ``state_base[0]``.
        state_min: ``int16`` (3, W + H - 1) minimum of each of those curves.
        state_base: ``int64`` (1,) place of the curves in ``state`` (updated); ``room`` at the start.
        penalties: ``int32`` (3, W) scratch.
        select: the pass completes the rows: select the winners of both views and refine them
            (:func:`pseudolabel.sgm.disparity.select_pixels` and :func:`pseudolabel.sgm.refinement.subpixel_left_row`
            chunk by chunk while the chunk is in L1, the right view's
            :func:`pseudolabel.sgm.disparity.right_keys_update` too, then per row
            :func:`pseudolabel.sgm.disparity.right_keys_finish` and :func:`pseudolabel.sgm.refinement.subpixel_right_row`).
        ks: ``int16`` (D,) table ``0 .. D - 1``.
        min_disp, subpixel_mode: disparity of index 0 (pixels) and the
            :data:`pseudolabel.sgm.refinement.SUBPIXEL_MODES` value.
        index ... disparity_right: (H, W) outputs as in :class:`pseudolabel.sgm.disparity.Winners`
            (written only when ``select``).
        keys: ``uint32`` (W,) scratch; padded: ``uint16`` (D + 2,) scratch, 65535 at both ends;
            moving: ``int16`` (D + 2,) scratch.
    """
    height, width, num_disp = cost.shape
    s = 1 if forward else -1
    first_row = 0 if forward else height - 1
    directions = 3 if diagonals else 1
    room = state.shape[2] - num_disp - 2
    for y in range(y_first, y_stop, s):
        starts = y == first_row
        base = state_base[0]
        if select:
            keys[:] = 0xFFFFFFFF
        # slot 0: the vertical direction; slot 1: (s, s), arriving from x - s; slot 2: (-s, s), from x + s
        if not starts:
            for slot in range(directions):
                shift = 0 if slot == 0 else (-s if slot == 1 else s)
                _row_penalties(p1, p2, adaptive, gamma, image[y], image[y - s], shift, penalties[slot])
        # one direction at a time over a chunk of the row (the chunk's costs and sums stay in L1)
        for chunk in range(0, width, _RASTER_CHUNK):
            chunk_stop = min(width, chunk + _RASTER_CHUNK)
            for slot in range(directions):
                shift = 0 if slot == 0 else (-s if slot == 1 else s)
                line_offset = 0 if slot == 0 else (height - 1 - y if slot == 1 else y)
                _direction_row(
                    cost[y],
                    out[y],
                    state[slot],
                    state_min[slot],
                    base,
                    penalties[slot],
                    shift,
                    line_offset,
                    starts,
                    p1,
                    accumulate or slot > 0,
                    chunk,
                    chunk_stop,
                )
            if select:
                curves = out[y, chunk:chunk_stop]
                select_pixels(
                    curves,
                    ks,
                    index[y, chunk:chunk_stop],
                    best_cost[y, chunk:chunk_stop],
                    second[y, chunk:chunk_stop],
                    second_far[y, chunk:chunk_stop],
                    second_local[y, chunk:chunk_stop],
                    mean[y, chunk:chunk_stop],
                    padded,
                )
                right_keys_update(out[y], ks, min_disp, keys, chunk, chunk_stop)
                subpixel_left_row(curves, index[y, chunk:chunk_stop], min_disp, subpixel_mode, disparity_left[y, chunk:chunk_stop])
        if select:
            right_keys_finish(keys, index_right[y])
            subpixel_right_row(out[y], index_right[y], min_disp, subpixel_mode, disparity_right[y])
        base -= 1
        if base == 0:
            # move the row's curves back up by ``room`` places, through a copy (the ranges overlap;
            # forward loops over distinct arrays vectorise, a backward copy in place does not)
            for slot in range(directions):
                line_offset = 0 if slot == 0 else (height - 1 - y if slot == 1 else y)
                for x in range(width):
                    line = state[slot, x + line_offset]
                    for k in range(num_disp + 2):
                        moving[k] = line[k]
                    target = line[room : room + num_disp + 2]
                    for k in range(num_disp + 2):
                        target[k] = moving[k]
            base = room
        state_base[0] = base


@numba.njit(cache=True, parallel=True, nogil=True)
def aggregate_raster_and_select(
    cost: np.ndarray,
    image: np.ndarray,
    diagonals: bool,
    p1: int,
    p2: int,
    adaptive: bool,
    gamma: float,
    out: np.ndarray,
    accumulate: bool,
    min_disp: int,
    index: np.ndarray,
    best_cost: np.ndarray,
    second: np.ndarray,
    second_far: np.ndarray,
    second_local: np.ndarray,
    mean: np.ndarray,
    index_right: np.ndarray,
    subpixel_mode: int,
    disparity_left: np.ndarray,
    disparity_right: np.ndarray,
) -> None:
    """The 8 (or, without ``diagonals``, 4) directions of ``|dx|, |dy| <= 1`` in two raster passes, fused
    with winner-takes-all and sub-pixel refinement of both views.

    A forward pass (top to bottom, each row left to right) computes the directions ``(0, 1)``,
    ``(1, 1)``, ``(-1, 1)``; a backward pass (bottom to top, right to left) their opposites. Each cell
    of the cost volume is read once per pass and each cell of ``out`` written once per pass, the path
    costs of the row before kept in a small state (two rows of path costs per pass). The two horizontal
    directions of a row go with whichever pass reaches the row first, a few rows at a time
    (:func:`_horizontal_rows`).

    The passes run in two phases, each pass on one thread: first the forward pass over the top half of
    the rows while the backward pass covers the bottom half; then each pass continues into the other
    half, where it completes the sums and selects the winners of each row as soon as it is final. The
    two passes of a phase write disjoint rows, so results do not depend on the thread count (with one
    thread the four parts run one after the other). Results are identical to :func:`aggregate`
    followed by the winner-takes-all and sub-pixel kernels.

    Args:
        cost: ``uint8`` (H, W, D) cost volume.
        image: ``float32`` (H, W) gray left image in 8-bit units (adaptive penalties).
        diagonals: include the four diagonal directions (8 paths) or not (4 paths).
        out: ``uint16`` (H, W, D); receives the sum of the path costs, added to it when ``accumulate``.
        index ... index_right: (H, W) outputs as in :class:`pseudolabel.sgm.disparity.Winners`.
        subpixel_mode: :data:`pseudolabel.sgm.refinement.SUBPIXEL_MODES` value.
        disparity_left, disparity_right: ``float32`` (H, W) sub-pixel disparities (outputs).
    """
    height, width, num_disp = cost.shape
    middle = height // 2
    states = np.empty((2, 3, width + height - 1, num_disp + 2 + RASTER_SHIFT_ROOM), dtype=np.int16)
    state_minima = np.zeros((2, 3, width + height - 1), dtype=np.int16)
    state_bases = np.full((2, 1), RASTER_SHIFT_ROOM, dtype=np.int64)
    ks = np.arange(num_disp).astype(np.int16)
    for phase in range(2):
        for task in prange(2):
            forward = task == 0
            step = 1 if forward else -1
            previous = np.full((_ROW_BLOCK, num_disp + 2), _SENTINEL, dtype=np.int16)
            current = np.full((_ROW_BLOCK, num_disp + 2), _SENTINEL, dtype=np.int16)
            best = np.zeros(_ROW_BLOCK, dtype=np.int16)
            penalties = np.zeros((3, width), dtype=np.int32)
            keys = np.empty(width, dtype=np.uint32)
            padded = np.full(num_disp + 2, 65535, dtype=np.uint16)
            moving = np.empty(num_disp + 2, dtype=np.int16)
            if phase == 0:
                y_first, y_stop = (0, middle) if forward else (height - 1, middle - 1)
            else:
                y_first, y_stop = (middle, height) if forward else (middle - 1, -1)
            for y in range(y_first, y_stop, step):
                if phase == 0 and (y - y_first) % _ROW_BLOCK == 0:
                    # the horizontal directions of the next rows of the half, a few rows swept together
                    y0, y1 = (y, min(y + _ROW_BLOCK, y_stop)) if forward else (max(y - _ROW_BLOCK, y_stop) + 1, y + 1)
                    _horizontal_rows(cost[y0:y1], image[y0:y1], p1, p2, adaptive, gamma, out[y0:y1], accumulate, previous, current, best)
                _raster_rows(
                    cost,
                    image,
                    y,
                    y + step,
                    forward,
                    diagonals,
                    p1,
                    p2,
                    adaptive,
                    gamma,
                    out,
                    True,
                    states[task],
                    state_minima[task],
                    state_bases[task],
                    penalties,
                    phase == 1,
                    ks,
                    min_disp,
                    subpixel_mode,
                    index,
                    best_cost,
                    second,
                    second_far,
                    second_local,
                    mean,
                    index_right,
                    disparity_left,
                    disparity_right,
                    keys,
                    padded,
                    moving,
                )


RASTER_MAX_THREADS = 2
"""Thread counts up to this use the two raster passes of :func:`aggregate_raster_and_select` (which use at
most two threads); more threads aggregate direction pair by direction pair, every pair on all threads."""

_LINE_BLOCK = 16  # parallel scanlines swept together (measured fastest on KITTI-sized images: 8-16)
_JOBS = 64  # default number of jobs of aggregate_direction_pair (buffers are allocated once per job)


@numba.njit(cache=True, inline="always")
def _prefetch_pixels(volume: np.ndarray, y: int, x_first: int, count: int, width: int, num_disp: int) -> None:
    """Prefetch the cells of pixels ``(y, x_first .. x_first + count - 1)`` (clipped to the row) of a
    C-contiguous (H, W, D) volume, one hint per 64-byte line."""
    x_start = max(0, x_first)
    x_stop = min(width, x_first + count)
    if x_stop <= x_start:
        return
    first = (y * width + x_start) * num_disp
    last = (y * width + x_stop) * num_disp
    step = max(1, 64 // volume.itemsize)
    for index in range(first, last, step):
        prefetch(volume, index)  # type: ignore[call-arg]  # a Numba intrinsic: typingctx is implicit


@numba.njit(cache=True, parallel=True, nogil=True)
def aggregate_direction_pair(
    cost: np.ndarray,
    image: np.ndarray,
    dx: int,
    dy: int,
    p1: int,
    p2: int,
    adaptive: bool,
    gamma: float,
    out: np.ndarray,
    accumulate: bool,
    line_block: int = _LINE_BLOCK,
    workers: int = _JOBS,
) -> None:
    """Add the path costs of the direction ``r = (dx, dy)`` (``dy`` = 1 or 2) and of its opposite ``-r``.

    Both directions run along the same independent scanlines ``p(t) = p(0) + t * r``. A line is
    identified by its phase ``y0 mod dy`` and its offset ``c = x - dx * t``; the lines of one phase
    with consecutive offsets lie at consecutive ``x`` of one row, so a block of ``line_block``
    lines is swept together by one thread: first along ``r`` (keeping the path costs of the whole
    block, which fit in L2), then back along ``-r``, adding both path costs to ``out`` in one
    read-modify-write. Blocks are independent: each cell of ``out`` is updated by exactly one thread.

    Args:
        cost: ``uint8`` (H, W, D) cost volume.
        image: ``float32`` (H, W) gray left image (for adaptive penalties).
        dx: horizontal step of the direction, in ``[-2, 2]``.
        dy: vertical step, 1 or 2.
        out: ``uint16`` (H, W, D); receives ``L_r + L_-r``, added to it when ``accumulate``.
        line_block: number of neighbouring lines one thread sweeps together.
        workers: number of jobs the blocks are dealt to (round robin); pass the thread count
            (``numba.get_num_threads()``, which a cached kernel cannot call itself).
    """
    height, width, num_disp = cost.shape
    steps_max = (height + dy - 1) // dy
    if dx >= 0:
        c_min = -dx * (steps_max - 1)
        c_max = width - 1
    else:
        c_min = 0
        c_max = width - 1 - dx * (steps_max - 1)
    num_lines = c_max - c_min + 1
    blocks_per_phase = (num_lines + line_block - 1) // line_block
    num_blocks = dy * blocks_per_phase
    # One job per thread, each sweeping every workers-th block with its own buffers: a buffer is
    # allocated once per thread and call (not once per block group), and only its sentinel padding
    # is initialised (every other cell is written before it is read).
    workers = max(1, min(workers, num_blocks))
    for job in prange(workers):
        down = np.empty((steps_max, line_block, num_disp + 2), dtype=np.int16)
        down[:, :, 0] = _SENTINEL
        down[:, :, num_disp + 1] = _SENTINEL
        down_min = np.zeros((steps_max, line_block), dtype=np.int16)
        penalties = np.zeros((steps_max, line_block), dtype=np.int32)
        up = np.full((2, line_block, num_disp + 2), _SENTINEL, dtype=np.int16)
        up_min = np.zeros((2, line_block), dtype=np.int16)
        for block in range(job, num_blocks, workers):
            phase = block // blocks_per_phase
            c_first = c_min + (block % blocks_per_phase) * line_block
            lines = min(line_block, c_max + 1 - c_first)
            steps = (height - phase + dy - 1) // dy
            # along r: t increasing
            for t in range(steps):
                y = phase + dy * t
                x_first = c_first + dx * t
                j_start = max(0, -x_first)
                j_stop = min(lines, width - x_first)
                if t + 1 < steps:
                    # the next step's costs lie one image row further: ask for them now
                    _prefetch_pixels(cost, y + dy, x_first + dx, lines, width, num_disp)
                for j in range(j_start, j_stop):
                    x = x_first + j
                    cost_row = cost[y, x]
                    current = down[t, j]
                    x_previous = x - dx
                    if t > 0 and 0 <= x_previous < width:
                        penalty = _step_penalty(p1, p2, adaptive, gamma, image[y, x], image[y - dy, x_previous])
                        penalties[t, j] = penalty
                        best = _path_step(cost_row, down[t - 1, j], current, down_min[t - 1, j], p1, penalty)
                    else:
                        best = _path_start(cost_row, current)
                    down_min[t, j] = best
            # along -r: t decreasing; add both path costs
            for t in range(steps - 1, -1, -1):
                y = phase + dy * t
                x_first = c_first + dx * t
                j_start = max(0, -x_first)
                j_stop = min(lines, width - x_first)
                now = t & 1
                before = 1 - now
                if t > 0:
                    _prefetch_pixels(cost, y - dy, x_first - dx, lines, width, num_disp)
                    _prefetch_pixels(out, y - dy, x_first - dx, lines, width, num_disp)
                for j in range(j_start, j_stop):
                    x = x_first + j
                    cost_row = cost[y, x]
                    current = up[now, j]
                    x_next = x + dx
                    if t < steps - 1 and 0 <= x_next < width:
                        # the same intensity pair as the forward step into (t + 1, j)
                        best = _path_step(cost_row, up[before, j], current, up_min[before, j], p1, penalties[t + 1, j])
                    else:
                        best = _path_start(cost_row, current)
                    up_min[now, j] = best
                    total = out[y, x]
                    forward = down[t, j]
                    if accumulate:
                        for k in range(num_disp):
                            total[k] = np.uint16(total[k] + np.uint16(forward[k + 1]) + np.uint16(current[k + 1]))
                    else:
                        for k in range(num_disp):
                            total[k] = np.uint16(np.uint16(forward[k + 1]) + np.uint16(current[k + 1]))


def _check_and_prepare(cost: np.ndarray, params: SGMParams, out: np.ndarray | None) -> np.ndarray:
    if params.paths not in DIRECTIONS:
        raise InputError(f"paths must be 4, 8 or 16, not {params.paths}")
    # the largest value of the cost (what fills out-of-image disparities) bounds every entry: no scan
    largest = max_cost(params.cost, params.census_width, params.census_height, params.ad_truncation) + int(params.p2)
    if largest * params.paths >= 2**16:
        raise InputError(f"p2={params.p2} is too large for {params.paths} paths with this cost; lower p2")
    if out is None or out.shape != cost.shape or out.dtype != np.uint16:
        out = np.empty(cost.shape, dtype=np.uint16)
    return out


def _aggregate_vertical_pairs(cost: np.ndarray, image: np.ndarray, params: SGMParams, out: np.ndarray) -> None:
    """All non-horizontal directions, in pairs of opposites; the first pair writes ``out``."""
    accumulate = False
    for dx, dy in DIRECTIONS[params.paths]:
        if dy > 0:
            aggregate_direction_pair(
                cost,
                image,
                dx,
                dy,
                int(params.p1),
                int(params.p2),
                bool(params.p2_adaptive),
                float(params.p2_gamma),
                out,
                accumulate,
                _LINE_BLOCK,
                numba.get_num_threads(),
            )
            accumulate = True


def aggregate(cost: np.ndarray, image: np.ndarray, params: SGMParams, out: np.ndarray | None = None) -> np.ndarray:
    """Aggregate a cost volume along ``params.paths`` directions.

    Args:
        cost: ``uint8`` (H, W, D) matching cost volume.
        image: ``float32`` (H, W) gray left image in 8-bit units (used by ``p2_adaptive``).
        params: :class:`pseudolabel.sgm.params.SGMParams` (``paths``, ``p1``, ``p2``, ``p2_adaptive``, ``p2_gamma``).
        out: optional ``uint16`` (H, W, D) buffer to reuse (overwritten).

    Returns:
        ``uint16`` (H, W, D) aggregated volume ``S``.
    """
    out = _check_and_prepare(cost, params, out)
    _aggregate_vertical_pairs(cost, image, params, out)
    aggregate_horizontal(cost, image, int(params.p1), int(params.p2), bool(params.p2_adaptive), float(params.p2_gamma), out, True)
    return out


def aggregate_and_select(cost: np.ndarray, image: np.ndarray, params: SGMParams, out: np.ndarray | None = None) -> tuple[np.ndarray, Winners]:
    """:func:`aggregate`, :func:`pseudolabel.sgm.disparity.select` and the sub-pixel refinement of both
    views in one go, the winner-takes-all and the refinement fused into the last aggregation pass
    (saves two reads of ``S``). Same results as the separate calls.

    With at most :data:`RASTER_MAX_THREADS` Numba threads the directions with ``|dx|, |dy| <= 1`` run as
    two raster passes (:func:`aggregate_raster_and_select`), which use at most two threads; with more
    threads every direction pair runs on all of them (:func:`aggregate_direction_pair`,
    :func:`aggregate_horizontal_and_select`). Both give the same results.

    Returns:
        ``(S, winners)``: the ``uint16`` (H, W, D) aggregated volume and the :class:`Winners`, with
        ``disparity`` and ``disparity_right`` set (``params.subpixel`` refinement).
    """
    out = _check_and_prepare(cost, params, out)
    height, width = image.shape
    winners = allocate_winners(height, width)
    winners.disparity = np.empty((height, width), dtype=np.float32)
    winners.disparity_right = np.empty((height, width), dtype=np.float32)
    p1, p2, adaptive, gamma = int(params.p1), int(params.p2), bool(params.p2_adaptive), float(params.p2_gamma)
    min_disp, mode = int(params.min_disp), SUBPIXEL_MODES[params.subpixel]
    if numba.get_num_threads() <= RASTER_MAX_THREADS:
        # directions with a step of 2 (16 paths) first, in pairs; then the raster passes
        accumulate = False
        for dx, dy in DIRECTIONS[params.paths]:
            if dy > 0 and (dy > 1 or abs(dx) > 1):
                aggregate_direction_pair(cost, image, dx, dy, p1, p2, adaptive, gamma, out, accumulate, _LINE_BLOCK, numba.get_num_threads())
                accumulate = True
        aggregate_raster_and_select(
            cost,
            image,
            params.paths > 4,
            p1,
            p2,
            adaptive,
            gamma,
            out,
            accumulate,
            min_disp,
            winners.index,
            winners.cost_best,
            winners.cost_second,
            winners.cost_second_far,
            winners.cost_second_local,
            winners.cost_mean,
            winners.index_right,
            mode,
            winners.disparity,
            winners.disparity_right,
        )
        return out, winners
    _aggregate_vertical_pairs(cost, image, params, out)
    aggregate_horizontal_and_select(
        cost,
        image,
        p1,
        p2,
        adaptive,
        gamma,
        out,
        min_disp,
        winners.index,
        winners.cost_best,
        winners.cost_second,
        winners.cost_second_far,
        winners.cost_second_local,
        winners.cost_mean,
        winners.index_right,
        mode,
        winners.disparity,
        winners.disparity_right,
    )
    return out, winners
