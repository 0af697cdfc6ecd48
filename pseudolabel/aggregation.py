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

Parallelism without races: directions are aggregated one after the other, and inside one direction
the independent scanlines are split among threads (the horizontal kernel: one thread owns a row and
both horizontal directions; :func:`aggregate_direction`: one thread owns a block of parallel lines).
Each cell of ``S`` is therefore written by exactly one thread at a time.

Values: ``C`` is ``uint8``; ``L_r <= max(C) + P2 < 2**15`` fits ``int16``; ``S`` is ``uint16``
(``paths * (max(C) + P2) < 2**16`` is checked).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from pseudolabel.errors import InputError

_SENTINEL = 16000  # larger than any path cost plus P1, smaller than int16 max

HORIZONTAL = ((1, 0), (-1, 0))
DIRECTIONS: dict[int, tuple[tuple[int, int], ...]] = {
    4: HORIZONTAL + ((0, 1), (0, -1)),
    8: HORIZONTAL + ((0, 1), (1, 1), (-1, 1), (0, -1), (1, -1), (-1, -1)),
    16: HORIZONTAL
    + ((0, 1), (1, 1), (-1, 1), (2, 1), (-2, 1), (1, 2), (-1, 2))
    + ((0, -1), (1, -1), (-1, -1), (2, -1), (-2, -1), (1, -2), (-1, -2)),
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


@numba.njit(cache=True, parallel=True)
def aggregate_horizontal(cost: np.ndarray, image: np.ndarray, p1: int, p2: int, adaptive: bool, gamma: float, out: np.ndarray) -> None:
    """Left-to-right plus right-to-left path costs, written (not added) into ``out``.

    Args:
        cost: ``uint8`` (H, W, D) cost volume.
        image: ``float32`` (H, W) gray left image (for ``adaptive`` penalties).
        out: ``uint16`` (H, W, D), overwritten with ``L_(1,0) + L_(-1,0)``.
    """
    height, width, num_disp = cost.shape
    for y in prange(height):
        previous = np.full(num_disp + 2, _SENTINEL, dtype=np.int16)
        current = np.full(num_disp + 2, _SENTINEL, dtype=np.int16)
        # left to right
        best = np.int32(_SENTINEL)
        for k in range(num_disp):
            previous[k + 1] = np.int16(cost[y, 0, k])
            out[y, 0, k] = np.uint16(cost[y, 0, k])
            best = min(best, np.int32(cost[y, 0, k]))
        for x in range(1, width):
            penalty = _step_penalty(p1, p2, adaptive, gamma, image[y, x], image[y, x - 1])
            best = _path_step(cost[y, x], previous, current, best, p1, penalty)
            for k in range(num_disp):
                out[y, x, k] = np.uint16(current[k + 1])
            previous, current = current, previous
        # right to left
        best = np.int32(_SENTINEL)
        for k in range(num_disp):
            previous[k + 1] = np.int16(cost[y, width - 1, k])
            out[y, width - 1, k] += np.uint16(cost[y, width - 1, k])
            best = min(best, np.int32(cost[y, width - 1, k]))
        for x in range(width - 2, -1, -1):
            penalty = _step_penalty(p1, p2, adaptive, gamma, image[y, x], image[y, x + 1])
            best = _path_step(cost[y, x], previous, current, best, p1, penalty)
            for k in range(num_disp):
                out[y, x, k] += np.uint16(current[k + 1])
            previous, current = current, previous


_LINE_BLOCK = 32  # scanlines processed together by one thread (their path buffers stay in L1)


@numba.njit(cache=True, parallel=True)
def aggregate_direction(cost: np.ndarray, image: np.ndarray, dx: int, dy: int, p1: int, p2: int, adaptive: bool, gamma: float, out: np.ndarray) -> None:
    """Add the path costs of one non-horizontal direction ``(dx, dy)`` to ``out``.

    The image splits into independent scanlines ``p(t) = p(0) + t * (dx, dy)``. A line is
    identified by its phase ``y0 mod |dy|`` and its offset ``c = x - dx * t``; at step ``t`` the lines
    of one phase with consecutive offsets lie at consecutive ``x`` of one row, so a block of
    :data:`_LINE_BLOCK` lines is swept together by one thread. Blocks are independent: each cell of
    ``out`` is updated by exactly one thread.

    Args:
        cost: ``uint8`` (H, W, D) cost volume.
        image: ``float32`` (H, W) gray left image (for adaptive penalties).
        dx: horizontal step of the direction, in ``[-2, 2]``.
        dy: vertical step, ``1``, ``2``, ``-1`` or ``-2`` (negative: the path runs upwards).
        out: ``uint16`` (H, W, D); the path costs are added to it.
    """
    height, width, num_disp = cost.shape
    step_y = abs(dy)
    count_phase = step_y
    steps_max = (height + step_y - 1) // step_y
    if dx >= 0:
        c_min = -dx * (steps_max - 1)
        c_max = width - 1
    else:
        c_min = 0
        c_max = width - 1 - dx * (steps_max - 1)
    num_lines = c_max - c_min + 1
    blocks_per_phase = (num_lines + _LINE_BLOCK - 1) // _LINE_BLOCK
    for job in prange(count_phase * blocks_per_phase):
        phase = job // blocks_per_phase
        c_first = c_min + (job % blocks_per_phase) * _LINE_BLOCK
        lines = min(_LINE_BLOCK, c_max + 1 - c_first)
        buffers = np.full((2, _LINE_BLOCK, num_disp + 2), _SENTINEL, dtype=np.int16)
        minima = np.zeros((2, _LINE_BLOCK), dtype=np.int16)
        active = np.zeros((2, _LINE_BLOCK), dtype=np.bool_)
        steps = (height - phase + step_y - 1) // step_y
        for t in range(steps):
            y_down = phase + step_y * t
            y = y_down if dy > 0 else height - 1 - y_down
            now = t & 1
            before = 1 - now
            # x of the first line of the block at this step, and the range of lines inside the image
            x_first = c_first + dx * t
            j_start = max(0, -x_first)
            j_stop = min(lines, width - x_first)
            for j in range(j_start, j_stop):
                x = x_first + j
                cost_row = cost[y, x]
                current = buffers[now, j]
                if active[before, j]:
                    penalty = _step_penalty(p1, p2, adaptive, gamma, image[y, x], image[y - dy, x - dx])
                    best = _path_step(cost_row, buffers[before, j], current, minima[before, j], p1, penalty)
                else:
                    best = np.int16(_SENTINEL)
                    for k in range(num_disp):
                        value = np.int16(cost_row[k])
                        current[k + 1] = value
                        best = min(best, value)
                minima[now, j] = best
                total = out[y, x]
                for k in range(num_disp):
                    total[k] = np.uint16(total[k] + np.uint16(current[k + 1]))
            for j in range(lines):
                active[now, j] = j_start <= j < j_stop


def aggregate(cost: np.ndarray, image: np.ndarray, params: "SGMParams", out: np.ndarray | None = None) -> np.ndarray:  # noqa: F821
    """Aggregate a cost volume along ``params.paths`` directions.

    Args:
        cost: ``uint8`` (H, W, D) matching cost volume.
        image: ``float32`` (H, W) gray left image in 8-bit units (used by ``p2_adaptive``).
        params: :class:`pseudolabel.sgm.SGMParams` (``paths``, ``p1``, ``p2``, ``p2_adaptive``, ``p2_gamma``).
        out: optional ``uint16`` (H, W, D) buffer to reuse (overwritten).

    Returns:
        ``uint16`` (H, W, D) aggregated volume ``S``.
    """
    if params.paths not in DIRECTIONS:
        raise InputError(f"paths must be 4, 8 or 16, not {params.paths}")
    largest = int(cost.max(initial=0)) + int(params.p2)
    if largest * params.paths >= 2**16:
        raise InputError(f"p2={params.p2} is too large for {params.paths} paths with this cost; lower p2")
    if out is None or out.shape != cost.shape or out.dtype != np.uint16:
        out = np.empty(cost.shape, dtype=np.uint16)
    p1, p2 = int(params.p1), int(params.p2)
    gamma = float(params.p2_gamma)
    adaptive = bool(params.p2_adaptive)
    aggregate_horizontal(cost, image, p1, p2, adaptive, gamma, out)
    for dx, dy in DIRECTIONS[params.paths]:
        if dy != 0:
            aggregate_direction(cost, image, dx, dy, p1, p2, adaptive, gamma, out)
    return out
