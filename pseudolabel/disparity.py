"""Stage 3 of SGM: winner-takes-all in both views, cost features, uniqueness and left-right check.

All functions take the aggregated volume ``S`` (``uint16`` (H, W, D), see
:mod:`pseudolabel.aggregation`); disparity index ``k`` stands for ``d = min_disp + k`` pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numba import prange


@dataclass
class Winners:
    """Winner-takes-all results and cost features of the left view. Arrays are (H, W).

    Attributes:
        index: ``int16`` winning disparity index ``k1`` (left view).
        cost_best: ``float32`` ``c1 = S[k1]``.
        cost_second: ``float32`` ``c2``, the smallest ``S[k]`` over ``k != k1``.
        cost_second_far: ``float32`` the smallest ``S[k]`` over ``|k - k1| > 1`` (uniqueness test).
        cost_second_local: ``float32`` ``c2m``, the smallest other local minimum (the curve's maximum
            if there is none). A local minimum is ``S[k] < S[k - 1]`` and ``S[k] <= S[k + 1]``
            (missing neighbours at the ends count as larger).
        cost_mean: ``float32`` mean of ``S`` over the D disparities.
        index_right: ``int16`` winning index of the right view, ``-1`` where no disparity of the
            range maps inside the left image.
    """

    index: np.ndarray
    cost_best: np.ndarray
    cost_second: np.ndarray
    cost_second_far: np.ndarray
    cost_second_local: np.ndarray
    cost_mean: np.ndarray
    index_right: np.ndarray


@numba.njit(cache=True, parallel=True)
def winner_takes_all(aggregated: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Left-view winner and cost features of every pixel.

    Args:
        aggregated: ``uint16`` (H, W, D) aggregated costs.

    Returns:
        ``(index, c1, c2, c2_far, c2m, mean)``: ``int16`` (H, W) winner index (the first one on
        ties) and five ``float32`` (H, W) features, as described in :class:`Winners`.
    """
    height, width, num_disp = aggregated.shape
    index = np.empty((height, width), dtype=np.int16)
    best_cost = np.empty((height, width), dtype=np.float32)
    second = np.empty((height, width), dtype=np.float32)
    second_far = np.empty((height, width), dtype=np.float32)
    second_local = np.empty((height, width), dtype=np.float32)
    mean = np.empty((height, width), dtype=np.float32)
    no_value = 1 << 30
    for y in prange(height):
        for x in range(width):
            curve = aggregated[y, x]
            best = no_value
            winner = 0
            largest = 0
            total = 0
            for k in range(num_disp):
                value = np.int64(curve[k])
                total += value
                if value < best:
                    best = value
                    winner = k
                if value > largest:
                    largest = value
            other = no_value
            far = no_value
            local = no_value
            for k in range(num_disp):
                if k == winner:
                    continue
                value = np.int64(curve[k])
                if value < other:
                    other = value
                if (k < winner - 1 or k > winner + 1) and value < far:
                    far = value
                left_higher = k == 0 or value < np.int64(curve[k - 1])
                right_higher = k == num_disp - 1 or value <= np.int64(curve[k + 1])
                if left_higher and right_higher and value < local:
                    local = value
            index[y, x] = winner
            best_cost[y, x] = best
            second[y, x] = other if other != no_value else best
            second_far[y, x] = far if far != no_value else largest
            second_local[y, x] = local if local != no_value else largest
            mean[y, x] = total / num_disp
    return index, best_cost, second, second_far, second_local, mean


@numba.njit(cache=True, parallel=True)
def winner_takes_all_right(aggregated: np.ndarray, min_disp: int) -> np.ndarray:
    """Right-view winner from the same aggregated volume.

    The right pixel ``(y, xr)`` at disparity index ``k`` corresponds to the left pixel
    ``(y, xr + min_disp + k)``, so its cost curve is ``S[y, xr + min_disp + k, k]``.

    Args:
        aggregated: ``uint16`` (H, W, D).
        min_disp: disparity of index 0, pixels.

    Returns:
        ``int16`` (H, W) winning index, ``-1`` where no ``k`` maps inside the left image.
    """
    height, width, num_disp = aggregated.shape
    index = np.empty((height, width), dtype=np.int16)
    for y in prange(height):
        for x_right in range(width):
            best = 1 << 30
            winner = -1
            for k in range(num_disp):
                x_left = x_right + min_disp + k
                if 0 <= x_left < width:
                    value = np.int64(aggregated[y, x_left, k])
                    if value < best:
                        best = value
                        winner = k
            index[y, x_right] = winner
    return index


@numba.njit(cache=True, parallel=True)
def consistency_check(disparity: np.ndarray, disparity_right: np.ndarray, cost_best: np.ndarray, cost_second_far: np.ndarray, lr_max_diff: float, uniqueness: float) -> np.ndarray:
    """Validity mask: left-right consistency and uniqueness.

    Args:
        disparity: ``float32`` (H, W) left-view disparity, pixels.
        disparity_right: ``float32`` (H, W) right-view disparity, pixels (NaN = none).
        cost_best, cost_second_far: ``float32`` (H, W) features from :func:`winner_takes_all`.
        lr_max_diff: largest allowed ``|d_left(x) - d_right(round(x - d_left(x)))|``, pixels;
            negative disables the check.
        uniqueness: the test is ``cost_best < uniqueness * cost_second_far``; ``>= 1`` disables it.

    Returns:
        ``bool`` (H, W), True where both tests pass.
    """
    height, width = disparity.shape
    valid = np.empty((height, width), dtype=np.bool_)
    for y in prange(height):
        for x in range(width):
            ok = True
            if uniqueness < 1.0 and not cost_best[y, x] < uniqueness * cost_second_far[y, x]:
                ok = False
            if ok and lr_max_diff >= 0.0:
                d = disparity[y, x]
                x_right = int(np.floor(x - d + 0.5))
                if x_right < 0 or x_right >= width:
                    ok = False
                else:
                    other = disparity_right[y, x_right]
                    if not abs(d - other) <= lr_max_diff:
                        ok = False
            valid[y, x] = ok
    return valid


def select(aggregated: np.ndarray, min_disp: int) -> Winners:
    """Run both winner-takes-all kernels on an aggregated volume.

    Args:
        aggregated: ``uint16`` (H, W, D).
        min_disp: disparity of index 0, pixels.
    """
    index, c1, c2, c2_far, c2m, mean = winner_takes_all(aggregated)
    index_right = winner_takes_all_right(aggregated, int(min_disp))
    return Winners(index, c1, c2, c2_far, c2m, mean, index_right)
