"""Plain NumPy reference implementations of the SGM kernels (slow, obvious, for the tests only).

Each function mirrors one Numba kernel of :mod:`pseudolabel.sgm.cost`, :mod:`pseudolabel.sgm.aggregation`,
:mod:`pseudolabel.sgm.disparity` or :mod:`pseudolabel.sgm.refinement`, written without any of the kernels'
tricks (ring buffers, reversed rows, line blocks), so that agreement means the tricks are right.
"""

from __future__ import annotations

import numpy as np

SENTINEL = 16000


def census_transform(image: np.ndarray, window_width: int, window_height: int, step: int = 1) -> np.ndarray:
    height, width = image.shape
    half_w, half_h = (window_width // 2) * step, (window_height // 2) * step
    padded = np.full((height + 2 * half_h, width + 2 * half_w), np.inf, dtype=np.float32)
    padded[half_h : half_h + height, half_w : half_w + width] = image
    bits = np.zeros((height, width), dtype=np.uint64)
    for dy in range(-half_h, half_h + 1, step):
        for dx in range(-half_w, half_w + 1, step):
            if dy == 0 and dx == 0:
                continue
            neighbour = padded[half_h + dy : half_h + dy + height, half_w + dx : half_w + dx + width]
            bits = (bits << np.uint64(1)) | (neighbour < image).astype(np.uint64)
    return bits


def shifted_right(right: np.ndarray, min_disp: int, num_disp: int, fill: float) -> tuple[np.ndarray, np.ndarray]:
    """``right[y, x - d]`` for every ``(y, x, k)`` and a mask of where ``x - d`` is inside the image."""
    height, width = right.shape
    x = np.arange(width)[None, :, None]
    d = min_disp + np.arange(num_disp)[None, None, :]
    source = x - d
    inside = (source >= 0) & (source < width)
    gathered = right[:, np.clip(source[0], 0, width - 1)]
    return gathered, np.broadcast_to(inside, gathered.shape)


def census_cost(census_left: np.ndarray, census_right: np.ndarray, min_disp: int, num_disp: int, outside: int) -> np.ndarray:
    gathered, inside = shifted_right(census_right, min_disp, num_disp, 0)
    hamming = np.bitwise_count(census_left[:, :, None] ^ gathered).astype(np.uint8)
    return np.where(inside, hamming, np.uint8(outside)).astype(np.uint8)


def ad_cost(left: np.ndarray, right: np.ndarray, min_disp: int, num_disp: int, truncation: int) -> np.ndarray:
    gathered, inside = shifted_right(right, min_disp, num_disp, 0)
    difference = np.minimum(np.abs(left[:, :, None] - gathered), np.float32(truncation))
    rounded = np.floor(difference + np.float32(0.5)).astype(np.uint8)
    return np.where(inside, rounded, np.uint8(truncation)).astype(np.uint8)


def bt_cost(left: np.ndarray, right: np.ndarray, min_disp: int, num_disp: int, truncation: int) -> np.ndarray:
    def bounds(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        previous = np.concatenate([image[:, :1], image[:, :-1]], axis=1)
        following = np.concatenate([image[:, 1:], image[:, -1:]], axis=1)
        minus = np.float32(0.5) * (image + previous)
        plus = np.float32(0.5) * (image + following)
        return np.minimum(image, np.minimum(minus, plus)), np.maximum(image, np.maximum(minus, plus))

    left_min, left_max = bounds(left)
    right_min, right_max = bounds(right)
    right_value, inside = shifted_right(right, min_disp, num_disp, 0)
    right_low, _ = shifted_right(right_min, min_disp, num_disp, 0)
    right_high, _ = shifted_right(right_max, min_disp, num_disp, 0)
    value = left[:, :, None]
    zero = np.float32(0.0)
    forward = np.maximum(zero, np.maximum(value - right_high, right_low - value))
    backward = np.maximum(zero, np.maximum(right_value - left_max[:, :, None], left_min[:, :, None] - right_value))
    difference = np.minimum(np.minimum(forward, backward), np.float32(truncation))
    rounded = np.floor(difference + np.float32(0.5)).astype(np.uint8)
    return np.where(inside, rounded, np.uint8(truncation)).astype(np.uint8)


def step_penalty(p1: int, p2: int, adaptive: bool, gamma: float, intensity: np.ndarray, previous: np.ndarray) -> np.ndarray:
    if not adaptive:
        return np.full(intensity.shape, p2, dtype=np.int64)
    penalty = (p2 / (1.0 + np.abs(intensity.astype(np.float64) - previous.astype(np.float64)) / gamma)).astype(np.int64)
    return np.maximum(penalty, p1 + 1)


def path_cost(cost: np.ndarray, image: np.ndarray, dx: int, dy: int, p1: int, p2: int, adaptive: bool = False, gamma: float = 16.0) -> np.ndarray:
    """``L_r`` of one direction, by visiting pixels in an order where ``p - r`` always comes first."""
    height, width, num_disp = cost.shape
    path = np.zeros((height, width, num_disp), dtype=np.int64)
    ys = range(height) if dy >= 0 else range(height - 1, -1, -1)
    xs = list(range(width)) if dx >= 0 else list(range(width - 1, -1, -1))
    for y in ys:
        for x in xs:
            py, px = y - dy, x - dx
            if not (0 <= py < height and 0 <= px < width):
                path[y, x] = cost[y, x]
                continue
            previous = path[py, px]
            previous_min = previous.min()
            penalty = int(step_penalty(p1, p2, adaptive, gamma, np.array(image[y, x]), np.array(image[py, px])))
            lower = np.concatenate([[SENTINEL], previous[:-1]]) + p1
            upper = np.concatenate([previous[1:], [SENTINEL]]) + p1
            best = np.minimum(np.minimum(previous, lower), np.minimum(upper, previous_min + penalty))
            path[y, x] = cost[y, x].astype(np.int64) + best - previous_min
    return path


def winner_takes_all(aggregated: np.ndarray) -> tuple[np.ndarray, ...]:
    curve = aggregated.astype(np.int64)
    height, width, num_disp = curve.shape
    index = np.argmin(curve, axis=2)
    best = np.take_along_axis(curve, index[:, :, None], 2)[:, :, 0]
    k = np.arange(num_disp)[None, None, :]
    big = np.int64(1 << 40)
    others = np.where(k == index[:, :, None], big, curve)
    second = others.min(axis=2)
    second = np.where(second == big, best, second)
    far = np.where(np.abs(k - index[:, :, None]) <= 1, big, curve).min(axis=2)
    largest = curve.max(axis=2)
    far = np.where(far == big, largest, far)
    left_neighbour = np.concatenate([np.full((height, width, 1), big), curve[:, :, :-1]], axis=2)
    right_neighbour = np.concatenate([curve[:, :, 1:], np.full((height, width, 1), big)], axis=2)
    is_local = (curve < left_neighbour) & (curve <= right_neighbour) & (k != index[:, :, None])
    local = np.where(is_local, curve, big).min(axis=2)
    local = np.where(local == big, largest, local)
    mean = curve.sum(axis=2) / num_disp
    return index.astype(np.int16), best, second, far, local, mean


def winner_takes_all_right(aggregated: np.ndarray, min_disp: int) -> np.ndarray:
    height, width, num_disp = aggregated.shape
    index = np.full((height, width), -1, dtype=np.int16)
    for x_right in range(width):
        ks = np.arange(num_disp)
        x_left = x_right + min_disp + ks
        ok = (x_left >= 0) & (x_left < width)
        if not ok.any():
            continue
        curves = aggregated[:, x_left[ok], ks[ok]].astype(np.int64)
        index[:, x_right] = ks[ok][np.argmin(curves, axis=1)]
    return index


def subpixel_offset(before: np.ndarray, centre: np.ndarray, after: np.ndarray, mode: str) -> np.ndarray:
    before, centre, after = (np.asarray(a, dtype=np.float64) for a in (before, centre, after))
    if mode == "parabola":
        denominator = before - 2 * centre + after
    elif mode == "equiangular":
        denominator = np.maximum(before - centre, after - centre)
    else:
        return np.zeros_like(centre)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = 2.0 if mode == "parabola" else 2.0
        offset = np.where(denominator > 0, (before - after) / (factor * denominator), 0.0)
    return np.clip(offset, -0.5, 0.5)


def subpixel_left(aggregated: np.ndarray, index: np.ndarray, min_disp: int, mode: str) -> np.ndarray:
    height, width, num_disp = aggregated.shape
    k = index.astype(np.int64)
    inner = (k > 0) & (k < num_disp - 1)
    kc = np.clip(k, 1, num_disp - 2)
    take = lambda kk: np.take_along_axis(aggregated, kk[:, :, None], 2)[:, :, 0].astype(np.float64)  # noqa: E731
    offset = subpixel_offset(take(kc - 1), take(kc), take(kc + 1), mode)
    return (min_disp + k + np.where(inner, offset, 0.0)).astype(np.float32)


def consistency_check(
    disparity: np.ndarray, disparity_right: np.ndarray, best: np.ndarray, far: np.ndarray, lr_max_diff: float, uniqueness: float
) -> np.ndarray:
    height, width = disparity.shape
    valid = np.ones((height, width), dtype=bool)
    if uniqueness < 1.0:
        valid &= best < np.float32(uniqueness) * far
    if lr_max_diff >= 0:
        x_right = np.floor(np.arange(width)[None, :] - disparity.astype(np.float64) + 0.5).astype(np.int64)
        inside = (x_right >= 0) & (x_right < width)
        other = np.take_along_axis(disparity_right, np.clip(x_right, 0, width - 1), 1)
        with np.errstate(invalid="ignore"):
            valid &= inside & (np.abs(disparity - other) <= lr_max_diff)
    return valid


def edge_aware_median(disparity: np.ndarray, guide: np.ndarray, radius: int, intensity_range: float, where: np.ndarray, step: int) -> np.ndarray:
    """For every ``where`` pixel, ``np.median`` of the window samples (every ``step`` pixels, at most ``radius``
    away, inside the image) whose guide intensity is within ``intensity_range`` of the centre's."""
    height, width = disparity.shape
    filtered = disparity.copy()
    reach = radius // step
    for y, x in zip(*np.nonzero(where)):
        ys = [y + step * i for i in range(-reach, reach + 1) if 0 <= y + step * i < height]
        xs = [x + step * i for i in range(-reach, reach + 1) if 0 <= x + step * i < width]
        samples = [disparity[yy, xx] for yy in ys for xx in xs if abs(guide[yy, xx] - guide[y, x]) <= intensity_range]
        filtered[y, x] = np.median(np.array(samples, dtype=np.float32))
    return filtered
