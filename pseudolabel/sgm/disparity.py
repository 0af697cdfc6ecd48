"""Stage 3 of SGM: winner-takes-all in both views, cost features, uniqueness and left-right check.

All functions take the aggregated volume ``S`` (``uint16`` (H, W, D), see
:mod:`pseudolabel.sgm.aggregation`); disparity index ``k`` stands for ``d = min_disp + k`` pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numba import prange

from pseudolabel.sgm._numba_utils import ROW_KERNEL


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
        disparity, disparity_right: ``float32`` sub-pixel disparities (pixels) of both views, set by
            :func:`pseudolabel.sgm.aggregation.aggregate_and_select`; None otherwise.
    """

    index: np.ndarray
    cost_best: np.ndarray
    cost_second: np.ndarray
    cost_second_far: np.ndarray
    cost_second_local: np.ndarray
    cost_mean: np.ndarray
    index_right: np.ndarray
    disparity: np.ndarray | None = None
    disparity_right: np.ndarray | None = None


@numba.njit(cache=True)
def select_row(
    curves: np.ndarray,
    ks: np.ndarray,
    index: np.ndarray,
    best_cost: np.ndarray,
    second: np.ndarray,
    second_far: np.ndarray,
    second_local: np.ndarray,
    mean: np.ndarray,
) -> None:
    """Left-view winner and cost features of the pixels of one row (see :func:`winner_takes_all`).

    Args:
        curves: ``uint16`` (W, D) aggregated costs of the row.
        ks: ``int16`` (D,) table ``0 .. D - 1``.
        index: ``int16`` (W,) output; best_cost, second, second_far, second_local, mean: ``float32`` (W,) outputs.
    """
    padded = np.full(curves.shape[1] + 2, 65535, dtype=np.uint16)
    select_pixels(curves, ks, index, best_cost, second, second_far, second_local, mean, padded)


@numba.njit(**ROW_KERNEL)
def select_pixels(
    curves: np.ndarray,
    ks: np.ndarray,
    index: np.ndarray,
    best_cost: np.ndarray,
    second: np.ndarray,
    second_far: np.ndarray,
    second_local: np.ndarray,
    mean: np.ndarray,
    padded: np.ndarray,
) -> None:
    """:func:`select_row` of any run of pixels (a whole row or a part of it), with a scratch buffer.

    Args:
        curves: ``uint16`` (N, D) aggregated costs of the pixels.
        ks: ``int16`` (D,) table ``0 .. D - 1``.
        index: ``int16`` (N,) output; best_cost, second, second_far, second_local, mean: ``float32`` (N,) outputs.
        padded: ``uint16`` (D + 2,) scratch whose first and last values are 65535.
    """
    width, num_disp = curves.shape
    no_value = np.uint16(65535)
    no_index = np.int16(num_disp)
    # one curve with a 65535 sentinel at both ends; before/after: the curve shifted by -1 and +1
    before = padded[0:num_disp]
    after = padded[2 : num_disp + 2]
    for x in range(width):
        curve = curves[x]
        best = no_value
        largest = np.uint16(0)
        total = np.uint32(0)
        # every operand 16 or 32 bits wide (Numba widens mixed integer arithmetic to 64 bits, which
        # quarters the vector lanes): the casts keep the loops in 16-bit lanes
        for k in range(num_disp):
            value = curve[k]
            best = min(best, value)
            largest = max(largest, value)
            total = np.uint32(total + np.uint32(value))
        winner = no_index
        for k in range(num_disp):
            winner = min(winner, ks[k] if curve[k] == best else no_index)
        k1 = np.int64(winner)
        # far: smallest value with |k - winner| > 1; local: smallest other local minimum, a local
        # minimum being S[k] < S[k-1] and S[k] <= S[k+1] (missing neighbours count as larger: the
        # padding, 65535, can only hide a local minimum of 65535, which would not lower ``local``).
        # One masked pass over all D values in 16-bit lanes: no remainder loops around the winner.
        for k in range(num_disp):  # a loop: a slice assignment checks for overlap and may copy
            padded[k + 1] = curve[k]
        below = np.int16(winner - np.int16(1))
        above = np.int16(winner + np.int16(1))
        far = no_value
        local = no_value
        for k in range(num_disp):
            value = curve[k]
            disparity_index = ks[k]
            is_far = (disparity_index < below) | (disparity_index > above)
            far = min(far, value if is_far else no_value)
            is_local = (value < before[k]) & (value <= after[k]) & (disparity_index != winner)
            local = min(local, value if is_local else no_value)
        other = far
        if k1 > 0:
            other = min(other, curve[k1 - 1])
        if k1 < num_disp - 1:
            other = min(other, curve[k1 + 1])
        has_far = k1 - 1 > 0 or k1 + 2 < num_disp
        index[x] = winner
        best_cost[x] = best
        second[x] = other if num_disp > 1 else best
        second_far[x] = far if has_far else largest
        second_local[x] = local if local != no_value else largest
        mean[x] = np.float32(total) / np.float32(num_disp)


@numba.njit(cache=True)
def select_row_right(curves: np.ndarray, ks: np.ndarray, min_disp: int, index_right: np.ndarray) -> None:
    """Right-view winners of one row (see :func:`winner_takes_all_right`).

    Args:
        curves: ``uint16`` (W, D) aggregated costs of the row (left view).
        ks: ``int16`` (D,) table ``0 .. D - 1``.
        min_disp: disparity of index 0, pixels.
        index_right: ``int16`` (W,) output, -1 where no disparity maps inside the image.
    """
    keys = np.full(curves.shape[0], 0xFFFFFFFF, dtype=np.uint32)
    right_keys_update(curves, ks, min_disp, keys, 0, curves.shape[0])
    right_keys_finish(keys, index_right)


@numba.njit(**ROW_KERNEL)
def right_keys_update(curves: np.ndarray, ks: np.ndarray, min_disp: int, keys: np.ndarray, x_start: int, x_stop: int) -> None:
    """The part of :func:`select_row_right` that reads the left pixels ``x_start <= x < x_stop`` of a row.

    Position ``j`` of ``keys`` stands for right pixel ``W - 1 - j`` and keeps the smallest key
    ``cost << 16 | k`` over the left pixels that see it (the smallest cost, then the smallest ``k``:
    the first minimum, like an argmin). The order of the updates does not matter.

    Args:
        curves: ``uint16`` (W, D) aggregated costs of the row (left view).
        keys: ``uint32`` (W,), ``0xFFFFFFFF`` before the first update of a row.
    """
    width, num_disp = curves.shape
    for x in range(x_start, x_stop):
        k_start = max(0, x - min_disp - width + 1)
        k_stop = min(num_disp, x - min_disp + 1)
        if k_stop <= k_start:
            continue
        offset = width - 1 - x + min_disp
        values = curves[x, k_start:k_stop]
        indices = ks[k_start:k_stop]
        key_slice = keys[offset + k_start : offset + k_stop]
        for j in range(k_stop - k_start):
            key = np.uint32((np.uint32(values[j]) << np.uint32(16)) | np.uint32(np.uint16(indices[j])))
            key_slice[j] = min(key_slice[j], key)


@numba.njit(**ROW_KERNEL)
def right_keys_finish(keys: np.ndarray, index_right: np.ndarray) -> None:
    """Right-view winners ``int16`` (W,) from the ``keys`` of :func:`right_keys_update` (all pixels done)."""
    width = keys.shape[0]
    for x in range(width):
        key = keys[width - 1 - x]
        # a cost of 65535 never wins (as with a strict comparison against that initial value)
        index_right[x] = np.int16(-1) if key >> np.uint32(16) == np.uint32(65535) else np.int16(key & np.uint32(0xFFFF))


def allocate_winners(height: int, width: int) -> Winners:
    """Uninitialised output arrays for the winner-takes-all kernels of an (H, W) image: ``int16`` (H, W)
    indices and ``float32`` (H, W) cost features, as described in :class:`Winners`."""

    def plane(dtype: type[np.generic]) -> np.ndarray:
        return np.empty((height, width), dtype=dtype)

    return Winners(
        index=plane(np.int16),
        cost_best=plane(np.float32),
        cost_second=plane(np.float32),
        cost_second_far=plane(np.float32),
        cost_second_local=plane(np.float32),
        cost_mean=plane(np.float32),
        index_right=plane(np.int16),
    )


@numba.njit(cache=True, parallel=True, nogil=True)
def winner_takes_all(aggregated: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Left-view winner and cost features of every pixel.

    Every loop over disparities is branch-free with 16-bit operands (disparity indices come from an
    ``int16`` table), so that it vectorises.

    Args:
        aggregated: ``uint16`` (H, W, D) aggregated costs.

    Returns:
        ``(index, c1, c2, c2_far, c2m, mean)``: ``int16`` (H, W) winner index (the first one on ties)
        and five ``float32`` (H, W) features, as described in :class:`Winners`.
    """
    height, width, num_disp = aggregated.shape
    index = np.empty((height, width), dtype=np.int16)
    best_cost = np.empty((height, width), dtype=np.float32)
    second = np.empty((height, width), dtype=np.float32)
    second_far = np.empty((height, width), dtype=np.float32)
    second_local = np.empty((height, width), dtype=np.float32)
    mean = np.empty((height, width), dtype=np.float32)
    ks = np.arange(num_disp).astype(np.int16)
    for y in prange(height):
        select_row(aggregated[y], ks, index[y], best_cost[y], second[y], second_far[y], second_local[y], mean[y])
    return index, best_cost, second, second_far, second_local, mean


@numba.njit(cache=True, parallel=True, nogil=True)
def winner_takes_all_right(aggregated: np.ndarray, min_disp: int) -> np.ndarray:
    """Right-view winner from the same aggregated volume.

    The right pixel ``(y, xr)`` at disparity index ``k`` is the left pixel ``(y, xr + min_disp + k)``,
    so its cost curve is ``S[y, xr + min_disp + k, k]``. Each left pixel of a row votes for the right
    pixels ``x - min_disp - k`` (a scatter-minimum, one thread per row); the accumulators are kept in
    reversed order so that the votes of one pixel form a contiguous, vectorisable slice. Visiting
    ``x`` in increasing order gives each right pixel its smallest ``k`` first, so the strict comparison
    keeps the first minimum, like an argmin.

    Args:
        aggregated: ``uint16`` (H, W, D).
        min_disp: disparity of index 0, pixels.

    Returns:
        ``int16`` (H, W) winning index, ``-1`` where no ``k`` maps inside the left image.
    """
    height, width, num_disp = aggregated.shape
    index = np.empty((height, width), dtype=np.int16)
    ks = np.arange(num_disp).astype(np.int16)
    for y in prange(height):
        select_row_right(aggregated[y], ks, min_disp, index[y])
    return index


@numba.njit(cache=True, parallel=True, nogil=True)
def consistency_check(
    disparity: np.ndarray, disparity_right: np.ndarray, cost_best: np.ndarray, cost_second_far: np.ndarray, lr_max_diff: float, uniqueness: float
) -> np.ndarray:
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
        aggregated: ``uint16`` (H, W, D) aggregated costs.
        min_disp: disparity of index 0, pixels.

    Returns:
        The left- and right-view winners and cost features, (H, W) each (see :class:`Winners`).
    """
    index, c1, c2, c2_far, c2m, mean = winner_takes_all(aggregated)
    return Winners(index, c1, c2, c2_far, c2m, mean, winner_takes_all_right(aggregated, int(min_disp)))
