"""Every SGM kernel against its plain NumPy reference (tests/sgm_reference.py) on random odd-sized images."""

from __future__ import annotations

import numpy as np
import pytest

from pseudolabel.sgm import aggregation, cost, disparity, refinement
from pseudolabel.sgm.params import SGMParams
from tests.sgm import sgm_reference as reference

SIZES = [(7, 13), (17, 29), (1, 9)]


def random_pair(shape: tuple[int, int], seed: int, shift: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A random-texture pair whose right view is the left shifted by ``shift`` pixels, plus noise."""
    rng = np.random.default_rng(seed)
    height, width = shape
    texture = rng.integers(0, 256, size=(height, width + shift)).astype(np.float32)
    left = texture[:, shift:]
    right = np.clip(texture[:, :width] + rng.normal(0, 4, size=(height, width)), 0, 255).astype(np.float32)
    return np.ascontiguousarray(left), np.ascontiguousarray(right)


@pytest.mark.parametrize("shape", SIZES)
@pytest.mark.parametrize("window", [(9, 7), (5, 5), (3, 1)])
def test_census_transform_matches_reference(shape: tuple[int, int], window: tuple[int, int]) -> None:
    left, _ = random_pair(shape, seed=1)
    expected = reference.census_transform(left, *window)
    np.testing.assert_array_equal(cost.census_transform(left, *window), expected)


@pytest.mark.parametrize("shape", SIZES)
@pytest.mark.parametrize("min_disp,num_disp", [(0, 5), (-3, 7), (2, 4), (0, 1)])
def test_census_cost_volume_matches_reference(shape: tuple[int, int], min_disp: int, num_disp: int) -> None:
    left, right = random_pair(shape, seed=2)
    census_left = cost.census_transform(left, 9, 7)
    census_right = cost.census_transform(right, 9, 7)
    volume = cost.census_cost_volume(census_left, census_right, min_disp, num_disp, 62)
    expected = reference.census_cost(census_left, census_right, min_disp, num_disp, 62)
    assert volume.dtype == np.uint8 and volume.shape == shape + (num_disp,)
    np.testing.assert_array_equal(volume, expected)


@pytest.mark.parametrize("shape", SIZES)
@pytest.mark.parametrize("min_disp,num_disp", [(0, 5), (-2, 6)])
def test_ad_and_bt_cost_volumes_match_reference(shape: tuple[int, int], min_disp: int, num_disp: int) -> None:
    left, right = random_pair(shape, seed=3)
    np.testing.assert_array_equal(cost.ad_cost_volume(left, right, min_disp, num_disp, 30), reference.ad_cost(left, right, min_disp, num_disp, 30))
    np.testing.assert_array_equal(cost.bt_cost_volume(left, right, min_disp, num_disp, 30), reference.bt_cost(left, right, min_disp, num_disp, 30))


def test_bt_is_zero_for_a_half_pixel_shift_of_a_linear_ramp() -> None:
    """BT is insensitive to sampling: a ramp shifted by half a pixel costs 0 at both neighbouring disparities."""
    x = np.arange(40, dtype=np.float32)
    left = np.tile(4.0 * x, (3, 1)).astype(np.float32)
    right = np.tile(4.0 * (x + 2.5), (3, 1)).astype(np.float32)  # right(x - 2.5) = left(x): d = 2.5
    volume = cost.bt_cost_volume(left, right, 0, 6, 30)
    inner = volume[:, 8:-8]
    assert np.all(inner[:, :, 2] == 0) and np.all(inner[:, :, 3] == 0)  # d = 2 and d = 3
    assert np.all(inner[:, :, [0, 1, 4, 5]] > 0)
    ad = cost.ad_cost_volume(left, right, 0, 6, 30)
    assert np.all(ad[:, 8:-8, 2:4] == 2)  # plain AD pays the half-pixel offset: 4 * 0.5


def test_ad_census_matches_its_formula() -> None:
    left, right = random_pair((9, 21), seed=4)
    params = SGMParams(cost="ad_census", min_disp=0, max_disp=6)
    combined = cost.compute_cost(left, right, params)
    census = reference.census_cost(reference.census_transform(left, 9, 7), reference.census_transform(right, 9, 7), 0, 6, 62)
    ad = reference.ad_cost(left, right, 0, 6, 255)
    expected = 31.0 * ((1 - np.exp(-ad.astype(np.float64) / 10.0)) + (1 - np.exp(-census.astype(np.float64) / 30.0)))
    assert np.max(np.abs(combined.astype(np.float64) - expected)) <= 0.5 + 1e-4


@pytest.mark.parametrize("shape", [(7, 11), (13, 9), (2, 15), (1, 6)])
@pytest.mark.parametrize("direction", [(0, 1), (1, 1), (-1, 1), (2, 1), (-2, 1), (1, 2), (-1, 2)])
@pytest.mark.parametrize("adaptive", [False, True])
def test_aggregate_direction_pair_matches_reference(shape: tuple[int, int], direction: tuple[int, int], adaptive: bool) -> None:
    rng = np.random.default_rng(abs(hash((shape, direction))) % 2**32)
    num_disp = 6
    volume = rng.integers(0, 63, size=shape + (num_disp,)).astype(np.uint8)
    image = rng.integers(0, 256, size=shape).astype(np.float32)
    out = rng.integers(0, 100, size=volume.shape).astype(np.uint16)  # added to, not overwritten
    start = out.astype(np.int64)
    dx, dy = direction
    aggregation.aggregate_direction_pair(volume, image, dx, dy, 5, 40, adaptive, 8.0, out, True)
    expected = (
        start + reference.path_cost(volume, image, dx, dy, 5, 40, adaptive, 8.0) + reference.path_cost(volume, image, -dx, -dy, 5, 40, adaptive, 8.0)
    )
    np.testing.assert_array_equal(out.astype(np.int64), expected)


@pytest.mark.parametrize("shape", [(5, 11), (1, 7)])
def test_aggregate_horizontal_matches_reference(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(7)
    volume = rng.integers(0, 63, size=shape + (5,)).astype(np.uint8)
    image = rng.integers(0, 256, size=shape).astype(np.float32)
    out = np.full(volume.shape, 999, dtype=np.uint16)
    aggregation.aggregate_horizontal(volume, image, 7, 50, True, 16.0, out, False)  # overwrites
    expected = reference.path_cost(volume, image, 1, 0, 7, 50, True, 16.0) + reference.path_cost(volume, image, -1, 0, 7, 50, True, 16.0)
    np.testing.assert_array_equal(out.astype(np.int64), expected)
    aggregation.aggregate_horizontal(volume, image, 7, 50, True, 16.0, out, True)  # adds
    np.testing.assert_array_equal(out.astype(np.int64), 2 * expected)


@pytest.mark.parametrize("paths", [4, 8, 16])
def test_aggregate_sums_all_directions(paths: int) -> None:
    rng = np.random.default_rng(paths)
    volume = rng.integers(0, 63, size=(9, 15, 7)).astype(np.uint8)
    image = rng.integers(0, 256, size=(9, 15)).astype(np.float32)
    params = SGMParams(paths=paths, p1=6, p2=60, p2_adaptive=True, p2_gamma=4.0, max_disp=7)
    expected = sum(reference.path_cost(volume, image, dx, dy, 6, 60, True, 4.0) for dx, dy in aggregation.DIRECTIONS[paths])
    result = aggregation.aggregate(volume, image, params)
    assert result.dtype == np.uint16
    np.testing.assert_array_equal(result.astype(np.int64), expected)


@pytest.mark.parametrize("paths", [4, 8, 16])
@pytest.mark.parametrize("min_disp", [0, -3])
def test_fused_aggregation_and_selection_equals_the_separate_kernels(paths: int, min_disp: int) -> None:
    rng = np.random.default_rng(paths - min_disp)
    volume = rng.integers(0, 63, size=(11, 19, 8)).astype(np.uint8)
    image = rng.integers(0, 256, size=(11, 19)).astype(np.float32)
    params = SGMParams(paths=paths, min_disp=min_disp, max_disp=min_disp + 8)
    fused, winners = aggregation.aggregate_and_select(volume, image, params)
    separate = aggregation.aggregate(volume, image, params)
    np.testing.assert_array_equal(fused, separate)
    expected = disparity.select(separate, min_disp)
    for name in ("index", "cost_best", "cost_second", "cost_second_far", "cost_second_local", "cost_mean", "index_right"):
        np.testing.assert_array_equal(getattr(winners, name), getattr(expected, name), err_msg=name)
    mode = refinement.SUBPIXEL_MODES[params.subpixel]
    np.testing.assert_array_equal(winners.disparity, refinement.subpixel_left(separate, expected.index, min_disp, mode))
    np.testing.assert_array_equal(winners.disparity_right, refinement.subpixel_right(separate, expected.index_right, min_disp, mode))


RASTER_FORWARD = ((0, 1), (1, 1), (-1, 1))


@pytest.mark.parametrize("shape", [(7, 11), (13, 9), (2, 15), (1, 6), (9, 1), (41, 5)])
@pytest.mark.parametrize("forward", [True, False])
@pytest.mark.parametrize("diagonals", [True, False])
def test_raster_pass_matches_reference(shape: tuple[int, int], forward: bool, diagonals: bool) -> None:
    """One raster pass over all rows, split in two calls (the state carries over), against the reference paths."""
    rng = np.random.default_rng(abs(hash((shape, forward, diagonals))) % 2**32)
    height, width = shape
    num_disp = 7
    volume = rng.integers(0, 63, size=shape + (num_disp,)).astype(np.uint8)
    image = rng.integers(0, 256, size=shape).astype(np.float32)
    out = np.full(volume.shape, 999, dtype=np.uint16)  # overwritten by the first direction
    room = aggregation.RASTER_SHIFT_ROOM
    state = rng.integers(-5, 5, size=(3, width + height - 1, num_disp + 2 + room)).astype(np.int16)  # no need to initialise
    state_min = np.zeros((3, width + height - 1), dtype=np.int16)
    state_base = np.full(1, room, dtype=np.int64)
    penalties = np.zeros((3, width), dtype=np.int32)
    # the winner-takes-all arguments (not used without ``select``)
    ks = np.arange(num_disp, dtype=np.int16)
    unused_maps = [np.zeros(shape, dtype=dtype) for dtype in [np.int16] + [np.float32] * 5 + [np.int16] + [np.float32] * 2]
    keys = np.zeros(width, dtype=np.uint32)
    padded = np.full(num_disp + 2, 65535, dtype=np.uint16)
    moving = np.empty(num_disp + 2, dtype=np.int16)
    rows = list(range(height)) if forward else list(range(height - 1, -1, -1))
    cut = len(rows) // 2
    step = 1 if forward else -1
    for part in (rows[:cut], rows[cut:]):
        if part:
            aggregation._raster_rows(
                volume, image, part[0], part[-1] + step, forward, diagonals, 6, 45, True, 8.0, out, False, state, state_min, state_base, penalties,
                False, ks, 0, 1, *unused_maps, keys, padded, moving,
            )  # fmt: skip
    sign = 1 if forward else -1
    directions = RASTER_FORWARD if diagonals else RASTER_FORWARD[:1]
    expected = sum(reference.path_cost(volume, image, sign * dx, sign * dy, 6, 45, True, 8.0) for dx, dy in directions)
    np.testing.assert_array_equal(out.astype(np.int64), expected)


@pytest.mark.parametrize("shape", [(7, 11), (13, 9), (2, 15), (1, 6), (9, 1), (6, 4), (19, 75)])
@pytest.mark.parametrize("paths", [4, 8])
@pytest.mark.parametrize("accumulate", [False, True])
def test_raster_aggregation_and_selection_match_reference(shape: tuple[int, int], paths: int, accumulate: bool) -> None:
    rng = np.random.default_rng(abs(hash((shape, paths, accumulate))) % 2**32)
    height, width = shape
    num_disp, min_disp = 6, -1
    volume = rng.integers(0, 63, size=shape + (num_disp,)).astype(np.uint8)
    image = rng.integers(0, 256, size=shape).astype(np.float32)
    out = rng.integers(0, 100, size=volume.shape).astype(np.uint16)
    start = out.astype(np.int64) if accumulate else 0
    winners = disparity.allocate_winners(height, width)
    left = np.empty(shape, dtype=np.float32)
    right = np.empty(shape, dtype=np.float32)
    mode = refinement.SUBPIXEL_MODES["parabola"]
    aggregation.aggregate_raster_and_select(
        volume, image, paths == 8, 5, 40, True, 8.0, out, accumulate, min_disp, winners.index, winners.cost_best, winners.cost_second,
        winners.cost_second_far, winners.cost_second_local, winners.cost_mean, winners.index_right, mode, left, right,
    )  # fmt: skip
    expected = start + sum(reference.path_cost(volume, image, dx, dy, 5, 40, True, 8.0) for dx, dy in aggregation.DIRECTIONS[paths])
    np.testing.assert_array_equal(out.astype(np.int64), expected)
    index, c1, c2, far, local, mean = reference.winner_takes_all(out)
    np.testing.assert_array_equal(winners.index, index)
    for got, want in zip((winners.cost_best, winners.cost_second, winners.cost_second_far, winners.cost_second_local), (c1, c2, far, local)):
        np.testing.assert_array_equal(got, want.astype(np.float32))
    np.testing.assert_allclose(winners.cost_mean, mean, rtol=1e-6)
    np.testing.assert_array_equal(winners.index_right, reference.winner_takes_all_right(out, min_disp))
    np.testing.assert_allclose(left, reference.subpixel_left(out, winners.index, min_disp, "parabola"), atol=1e-5)


@pytest.mark.parametrize("paths", [4, 8, 16])
def test_aggregation_paths_agree_and_do_not_depend_on_threads(paths: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The raster passes (one or two threads) and the pair-by-pair kernels (used above RASTER_MAX_THREADS threads) agree exactly."""
    import numba

    rng = np.random.default_rng(40 + paths)
    volume = rng.integers(0, 63, size=(23, 31, 12)).astype(np.uint8)
    image = rng.integers(0, 256, size=(23, 31)).astype(np.float32)
    params = SGMParams(paths=paths, max_disp=12)
    threads = numba.get_num_threads()
    results = []
    try:
        for count in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(count)
            results.append(aggregation.aggregate_and_select(volume, image, params))
            monkeypatch.setattr(aggregation, "RASTER_MAX_THREADS", 0)
            results.append(aggregation.aggregate_and_select(volume, image, params))
            monkeypatch.undo()
    finally:
        numba.set_num_threads(threads)
    first_volume, first = results[0]
    for other_volume, other in results[1:]:
        np.testing.assert_array_equal(other_volume, first_volume)
        for name in ("index", "cost_best", "cost_second", "cost_second_far", "cost_second_local", "cost_mean", "index_right", "disparity"):
            np.testing.assert_array_equal(getattr(other, name), getattr(first, name), err_msg=name)
        np.testing.assert_array_equal(other.disparity_right, first.disparity_right)


@pytest.mark.parametrize("min_disp", [0, -3, 4])
def test_right_view_keys_in_parts_equal_the_whole_row(min_disp: int) -> None:
    rng = np.random.default_rng(8 + min_disp)
    curves = rng.integers(0, 60, size=(45, 9)).astype(np.uint16)  # many ties on purpose
    ks = np.arange(9, dtype=np.int16)
    whole = np.empty(45, dtype=np.int16)
    disparity.select_row_right(curves, ks, min_disp, whole)
    np.testing.assert_array_equal(whole, reference.winner_takes_all_right(curves[None], min_disp)[0])
    keys = np.full(45, 0xFFFFFFFF, dtype=np.uint32)
    for start, stop in ((30, 45), (0, 7), (7, 30)):  # any order
        disparity.right_keys_update(curves, ks, min_disp, keys, start, stop)
    parts = np.empty(45, dtype=np.int16)
    disparity.right_keys_finish(keys, parts)
    np.testing.assert_array_equal(parts, whole)


def test_path_cost_by_hand() -> None:
    """A 1x3 image, 3 disparities, left-to-right path with P1 = 2, P2 = 5."""
    volume = np.array([[[0, 9, 9], [9, 0, 9], [9, 9, 0]]], dtype=np.uint8)
    image = np.zeros((1, 3), dtype=np.float32)
    # x=0: L = C = [0, 9, 9]; min 0
    # x=1: [9 + min(0, 9+2, 0+5) - 0, 0 + min(9, 0+2, 9+2, 5), 9 + min(9, 9+2, 5)] = [9, 2, 14]; min 2
    # x=2: [9 + min(9, 2+2, 7) - 2, 9 + min(2, 9+2, 14+2, 7) - 2, 0 + min(14, 2+2, 7) - 2] = [11, 9, 2]
    expected = np.array([[0, 9, 9], [9, 2, 14], [11, 9, 2]])
    np.testing.assert_array_equal(reference.path_cost(volume, image, 1, 0, 2, 5)[0], expected)
    # the same path run downwards through the transposed image, plus its opposite (right-to-left)
    # x=2: L = C = [9, 9, 0]; min 0
    # x=1: [9 + min(9, 9+2, 0+5), 0 + min(9, 9+2, 0+2, 5), 9 + min(0, 9+2, 5)] = [14, 2, 9]; min 2
    # x=0: [0 + min(14, 2+2, 7) - 2, 9 + min(2, 14+2, 9+2, 7) - 2, 9 + min(9, 2+2, 7) - 2] = [2, 9, 11]
    backward = np.array([[2, 9, 11], [14, 2, 9], [9, 9, 0]])
    out = np.zeros((3, 1, 3), dtype=np.uint16)
    aggregation.aggregate_direction_pair(volume.transpose(1, 0, 2).copy(), image.T.copy(), 0, 1, 2, 5, False, 1.0, out, False)
    np.testing.assert_array_equal(out[:, 0, :], expected + backward)


@pytest.mark.parametrize("shape", [(7, 13), (3, 5)])
def test_winner_takes_all_matches_reference(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(11)
    volume = rng.integers(0, 40, size=shape + (9,)).astype(np.uint16)  # many ties on purpose
    index, c1, c2, far, local, mean = disparity.winner_takes_all(volume)
    expected = reference.winner_takes_all(volume)
    np.testing.assert_array_equal(index, expected[0])
    for got, want in zip((c1, c2, far, local), expected[1:5]):
        np.testing.assert_array_equal(got, want.astype(np.float32))
    np.testing.assert_allclose(mean, expected[5], rtol=1e-6)


def test_cost_features_by_hand() -> None:
    curve = np.array([[[5, 3, 4, 1, 2, 6]]], dtype=np.uint16)
    index, c1, c2, far, local, mean = disparity.winner_takes_all(curve)
    assert index[0, 0] == 3 and c1[0, 0] == 1
    assert c2[0, 0] == 2  # neighbour included
    assert far[0, 0] == 3  # |k - 3| > 1: values 5, 3, 6
    assert local[0, 0] == 3  # other local minima: k=1 (3 < 5, 3 <= 4)
    assert mean[0, 0] == pytest.approx(21 / 6)


@pytest.mark.parametrize("min_disp", [0, -2, 3])
def test_winner_takes_all_right_matches_reference(min_disp: int) -> None:
    rng = np.random.default_rng(5)
    volume = rng.integers(0, 1000, size=(5, 17, 6)).astype(np.uint16)
    np.testing.assert_array_equal(disparity.winner_takes_all_right(volume, min_disp), reference.winner_takes_all_right(volume, min_disp))


@pytest.mark.parametrize("mode", ["parabola", "equiangular", "none"])
def test_subpixel_matches_reference(mode: str) -> None:
    rng = np.random.default_rng(6)
    volume = rng.integers(0, 500, size=(7, 11, 8)).astype(np.uint16)
    index = np.argmin(volume, axis=2).astype(np.int16)
    result = refinement.subpixel_left(volume, index, -1, refinement.SUBPIXEL_MODES[mode])
    np.testing.assert_allclose(result, reference.subpixel_left(volume, index, -1, mode), atol=1e-5)


def test_subpixel_recovers_the_vertex_of_a_parabola_and_a_v() -> None:
    ks = np.arange(8, dtype=np.float64)
    parabola = (10 * (ks - 3.3) ** 2 + 7).round().astype(np.uint16)[None, None, :]
    vee = (40 * np.abs(ks - 4.25) + 7).round().astype(np.uint16)[None, None, :]
    index = np.array([[3]], dtype=np.int16)
    assert refinement.subpixel_left(parabola, index, 0, 1)[0, 0] == pytest.approx(3.3, abs=0.03)
    assert refinement.subpixel_left(vee, np.array([[4]], dtype=np.int16), 0, 2)[0, 0] == pytest.approx(4.25, abs=0.02)


def test_consistency_check_matches_reference() -> None:
    rng = np.random.default_rng(8)
    left = rng.uniform(0, 6, size=(9, 19)).astype(np.float32)
    right = np.round(left + rng.normal(0, 1.0, size=left.shape)).astype(np.float32)
    right[0, 3] = np.nan
    best = rng.uniform(1, 10, size=left.shape).astype(np.float32)
    far = rng.uniform(1, 12, size=left.shape).astype(np.float32)
    for lr_max_diff, uniqueness in [(1.0, 0.9), (-1.0, 0.9), (0.5, 1.0)]:
        np.testing.assert_array_equal(
            disparity.consistency_check(left, right, best, far, lr_max_diff, uniqueness),
            reference.consistency_check(left, right, best, far, lr_max_diff, uniqueness),
        )


def test_fill_invalid_takes_background_in_occlusions_and_median_elsewhere() -> None:
    # one row: background (d=2) on the left, foreground (d=8) on the right, two invalid pixels between
    disparity_left = np.array([[2, 2, 2, 2, 2, 2, 5, 5, 8, 8, 8, 8]], dtype=np.float32)
    valid = disparity_left != 5
    # the right view sees the foreground where the gap pixels land (x - 5 = 1, 2): occlusion
    occluding_right = np.full((1, 12), 8.0, dtype=np.float32)
    filled = refinement.fill_invalid(disparity_left, valid, occluding_right, 1.0)
    np.testing.assert_array_equal(filled[0, 6:8], [2.0, 2.0])  # background
    # the right view agrees with d = 5 there: a mismatch, filled with the median of the neighbours
    agreeing_right = np.full((1, 12), 5.0, dtype=np.float32)
    filled = refinement.fill_invalid(disparity_left, valid, agreeing_right, 1.0)
    np.testing.assert_array_equal(filled[0, 6:8], [5.0, 5.0])  # median of {2, 8}
    # in a taller image the occlusion rule takes the second smallest of the 8 directions
    image = np.tile(disparity_left, (3, 1))
    image[0, 6] = 1.0  # one stray low value above the gap
    mask = image != 5
    filled = refinement.fill_invalid(image, mask, np.full((3, 12), 8.0, np.float32), 1.0)
    assert filled[1, 6] == 2.0  # not the stray 1.0
    assert np.all(filled[mask] == image[mask])


def walked_fill(disparity: np.ndarray, valid: np.ndarray, disparity_right: np.ndarray, lr_max_diff: float) -> np.ndarray:
    """Reference of fill_invalid: walk from every invalid pixel along 8 directions."""
    height, width = disparity.shape
    filled = disparity.copy()
    for y in range(height):
        for x in range(width):
            if valid[y, x]:
                continue
            found = []
            for sx, sy in ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1)):
                xx, yy = x + sx, y + sy
                while 0 <= xx < width and 0 <= yy < height:
                    if valid[yy, xx]:
                        found.append(disparity[yy, xx])
                        break
                    xx, yy = xx + sx, yy + sy
            if not found:
                continue
            values = np.sort(np.array(found, dtype=np.float32))
            d = disparity[y, x]
            x_right = int(np.floor(x - d + 0.5))
            occluded = 0 <= x_right < width and disparity_right[y, x_right] > d + lr_max_diff
            if occluded:
                filled[y, x] = values[1] if len(values) >= 3 else values[0]
            else:
                filled[y, x] = np.float32(np.median(values))
    return filled


@pytest.mark.parametrize("shape", [(9, 14), (1, 11), (13, 1), (17, 23)])
def test_fill_invalid_matches_walking_reference(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    disparity = rng.uniform(0, 8, size=shape).astype(np.float32)
    valid = rng.random(shape) < 0.3
    right = rng.uniform(0, 10, size=shape).astype(np.float32)
    np.testing.assert_allclose(refinement.fill_invalid(disparity, valid, right, 1.0), walked_fill(disparity, valid, right, 1.0), rtol=1e-6)


@pytest.mark.parametrize("height", [1, 2, 7, 10])
def test_interleaved_rows_visit_every_row_once(height: int) -> None:
    rows = [refinement._interleaved_row(i, height) for i in range(height)]
    assert sorted(rows) == list(range(height))
    assert rows[: (height + 1) // 2] == list(range(0, height, 2))  # the even rows first


@pytest.mark.parametrize("shape", [(9, 14), (1, 11), (13, 1), (17, 23), (31, 45)])
@pytest.mark.parametrize("radius,step", [(6, 3), (2, 1), (4, 2), (3, 3)])
def test_edge_aware_median_matches_reference(shape: tuple[int, int], radius: int, step: int) -> None:
    rng = np.random.default_rng(shape[0] * 1000 + shape[1] * 10 + radius)
    disparity = rng.integers(0, 12, size=shape).astype(np.float32) / np.float32(2.0)  # many ties
    disparity[rng.random(shape) < 0.3] += np.float32(0.25)
    guide = rng.integers(0, 40, size=shape).astype(np.float32)
    where = rng.random(shape) < 0.5
    got = refinement.edge_aware_median(disparity, guide, radius, 12.0, where, step)
    np.testing.assert_array_equal(got, reference.edge_aware_median(disparity, guide, radius, 12.0, where, step))


def test_edge_aware_median_of_large_windows_matches_reference() -> None:
    """Windows of more than _RANK_LIMIT values take the selection path."""
    rng = np.random.default_rng(5)
    disparity = rng.uniform(0, 30, size=(21, 27)).astype(np.float32)
    guide = np.zeros((21, 27), dtype=np.float32)
    where = rng.random((21, 27)) < 0.4
    got = refinement.edge_aware_median(disparity, guide, 4, 16.0, where, 1)
    np.testing.assert_array_equal(got, reference.edge_aware_median(disparity, guide, 4, 16.0, where, 1))


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 9, 12, 14])
def test_selection_network_sorts_every_zero_one_input(size: int) -> None:
    """0-1 principle: a comparator network that places the first ``needed`` outputs of every 0/1 input places them for any input."""
    network = refinement.selection_network(size, size // 2 + 1)
    inputs = (np.arange(2**size)[:, None] >> np.arange(size)[None, :]) & 1
    values = inputs.copy()
    for i, j in network:
        low, high = np.minimum(values[:, i], values[:, j]), np.maximum(values[:, i], values[:, j])
        values[:, i], values[:, j] = low, high
    np.testing.assert_array_equal(values[:, : size // 2 + 1], np.sort(inputs, axis=1)[:, : size // 2 + 1])


@pytest.mark.parametrize("size", [17, 25, 31, 32])
def test_selection_network_places_the_median_of_random_inputs(size: int) -> None:
    rng = np.random.default_rng(size)
    network = refinement.selection_network(size, size // 2 + 1)
    inputs = rng.integers(0, 6, size=(2000, size)).astype(np.float32)
    inputs[rng.random(inputs.shape) < 0.3] = np.inf  # the padding of samples that do not take part
    values = inputs.copy()
    for i, j in network:
        low, high = np.minimum(values[:, i], values[:, j]), np.maximum(values[:, i], values[:, j])
        values[:, i], values[:, j] = low, high
    np.testing.assert_array_equal(values[:, : size // 2 + 1], np.sort(inputs, axis=1)[:, : size // 2 + 1])


def test_sorting_lanes_sorts_every_column() -> None:
    rng = np.random.default_rng(11)
    lanes = rng.integers(0, 9, size=(25, 16)).astype(np.float32)
    expected = np.sort(lanes, axis=0)
    refinement._sort_lanes(lanes, refinement.selection_network(25, 25))
    np.testing.assert_array_equal(lanes, expected)


@pytest.mark.parametrize("jobs", [1, 3, 8])
def test_edge_aware_median_network_does_not_depend_on_jobs(jobs: int) -> None:
    rng = np.random.default_rng(jobs)
    shape = (23, 37)
    disparity = rng.integers(0, 20, size=shape).astype(np.float32) / np.float32(4.0)
    guide = rng.integers(0, 30, size=shape).astype(np.float32)
    where = rng.random(shape) < 0.6
    got = refinement._edge_aware_median_network(disparity, guide, 2, 3, 10.0, where, refinement.selection_network(25, 13), jobs)
    np.testing.assert_array_equal(got, reference.edge_aware_median(disparity, guide, 6, 10.0, where, 3))


@pytest.mark.parametrize("shape", [(37, 53), (2, 19), (61, 7)])
def test_fill_invalid_with_bands_and_blobs_matches_walking_reference(shape: tuple[int, int]) -> None:
    """Long invalid runs (a left band as next to the left border of a pair, blobs) and NaN right-view disparities."""
    rng = np.random.default_rng(shape[1])
    disparity = rng.integers(0, 16, size=shape).astype(np.float32) / np.float32(2.0)
    valid = rng.random(shape) < 0.8
    valid[:, : shape[1] // 4] = False
    valid[shape[0] // 3 : shape[0] // 2, shape[1] // 2 :] = False
    right = rng.uniform(0, 10, size=shape).astype(np.float32)
    right[rng.random(shape) < 0.2] = np.nan
    np.testing.assert_array_equal(refinement.fill_invalid(disparity, valid, right, 1.0), walked_fill(disparity, valid, right, 1.0))


def numpy_speckle_codes(disparity: np.ndarray, valid: np.ndarray) -> np.ndarray | None:
    """Reference of speckle_codes (the NumPy expression remove_speckles used before the kernel)."""
    fixed_point = np.round(np.where(valid, disparity, 0.0) * 16.0).astype(np.int32)
    offset = int(fixed_point.min(initial=0))
    if fixed_point.max(initial=0) - offset + 16 >= 32767:
        return None
    encoded = (fixed_point - offset + 16).astype(np.int16)
    encoded[~valid] = 0
    return encoded


@pytest.mark.parametrize("low,high", [(0.0, 40.0), (-20.0, 20.0), (-3000.0, 1.0), (0.0, 2100.0)])
def test_speckle_codes_match_reference(low: float, high: float) -> None:
    rng = np.random.default_rng(int(high))
    shape = (19, 31)
    disparity = rng.uniform(low, high, size=shape).astype(np.float32)
    disparity[0, :8] = np.array([0.03125, 0.09375, -0.03125, 2.53125, 1.5, -1.5, 0.5, 2.5], dtype=np.float32)  # ties of rint
    valid = rng.random(shape) < 0.7
    encoded = np.empty(shape, dtype=np.int16)
    expected = numpy_speckle_codes(disparity, valid)
    assert refinement.speckle_codes(disparity, valid, encoded) == (expected is not None)
    if expected is not None:
        np.testing.assert_array_equal(encoded, expected)
