"""Matching at a reduced resolution (``SGMParams.downsample``, the ``fast`` preset)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pseudolabel.errors import InputError
from pseudolabel.io import read_disparity, read_image, to_gray
from pseudolabel.sgm import cost
from pseudolabel.sgm.downsampled import enlarge_map, reduce_image, reduced_params
from pseudolabel.sgm.matcher import Matcher, match
from pseudolabel.sgm.params import SGMParams
from tests.sgm.test_sgm_match import textured_pair

DATA = Path(__file__).parents[1] / "data"


def reduce_reference(image: np.ndarray, factor: int) -> np.ndarray:
    """Plain loops: each output pixel the mean of its block, the image extended by its last row/column."""
    height, width = image.shape
    rows, cols = -(-height // factor), -(-width // factor)
    out = np.zeros((rows, cols), np.float64)
    for row in range(rows):
        for col in range(cols):
            total = 0.0
            for dy in range(factor):
                for dx in range(factor):
                    total += float(image[min(row * factor + dy, height - 1), min(col * factor + dx, width - 1)])
            out[row, col] = total / factor**2
    return out


@pytest.mark.parametrize(("height", "width", "factor"), [(13, 29, 2), (17, 11, 4), (9, 7, 1), (1, 5, 2)])
def test_reduce_image_matches_the_plain_loop(height: int, width: int, factor: int) -> None:
    image = np.random.default_rng(height * width).uniform(0, 255, size=(height, width)).astype(np.float32)
    reduced = reduce_image(image, factor)
    assert reduced.dtype == np.float32 and reduced.shape == (-(-height // factor), -(-width // factor))
    np.testing.assert_allclose(reduced, reduce_reference(image, factor), rtol=0, atol=1e-4)


def test_reduce_image_does_not_depend_on_the_thread_count() -> None:
    import numba

    image = np.random.default_rng(5).uniform(0, 255, size=(77, 131)).astype(np.float32)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = reduce_image(image, 2)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        double = reduce_image(image, 2)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(single, double)


def test_enlarge_map_repeats_each_value_over_its_block() -> None:
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    enlarged = enlarge_map(values, 2, 5, 7)
    assert enlarged.shape == (5, 7) and enlarged.dtype == np.float32
    for y in range(5):
        for x in range(7):
            assert enlarged[y, x] == values[y // 2, x // 2]


def test_reduced_params_scale_the_range_outward_and_the_speckle_area() -> None:
    params = SGMParams(min_disp=-3, max_disp=61, speckle_size=50, downsample=2)
    reduced = reduced_params(params)
    assert (reduced.min_disp, reduced.max_disp, reduced.speckle_size, reduced.downsample) == (-2, 31, 13, 1)
    assert reduced.replace(min_disp=-3, max_disp=61, speckle_size=50, downsample=2) == params


def test_result_is_the_reduced_match_enlarged() -> None:
    """Exactly the matcher on the block means of the gray pair, every map repeated over its block, disparities x2."""
    left, right = textured_pair(height=37, width=83, disparity=8, seed=3)
    params = SGMParams.preset("fast").replace(max_disp=24)
    result = match(left, right, params)
    reduced = match(reduce_image(cost.prepare_image(left), 2), reduce_image(cost.prepare_image(right), 2), reduced_params(params))
    for name in ("disparity", "disparity_right", "disparity_wta"):
        expected = enlarge_map(getattr(reduced, name) * 2, 2, 37, 83)
        assert getattr(result, name).dtype == getattr(reduced, name).dtype
        np.testing.assert_array_equal(getattr(result, name), expected, err_msg=name)
    for name in ("valid", "cost_best", "cost_second", "cost_second_local", "cost_mean"):
        np.testing.assert_array_equal(getattr(result, name), enlarge_map(getattr(reduced, name), 2, 37, 83), err_msg=name)
    assert result.params == params and result.disparity.shape == left.shape
    np.testing.assert_array_equal(Matcher(params)(left, right).disparity, result.disparity)


@pytest.mark.parametrize("shift", [8, 7])
def test_a_constant_shift_is_found_in_input_pixels(shift: int) -> None:
    left, right = textured_pair(height=41, width=101, disparity=shift, seed=shift)
    result = match(left, right, SGMParams.preset("fast").replace(max_disp=20))
    inside = np.zeros_like(result.valid)
    inside[4:-4, 24:-4] = True
    assert result.valid[inside].mean() > 0.8
    error = np.abs(result.disparity[inside & result.valid] - shift)
    assert np.median(error) < 0.5 and np.mean(error < 1.0) > 0.9


def test_uint16_and_colour_inputs_are_reduced_in_8_bit_gray_units() -> None:
    left, right = textured_pair(height=21, width=45, disparity=4, seed=9)
    params = SGMParams.preset("fast").replace(max_disp=12)
    base = match(left, right, params)
    wide = match(left.astype(np.uint16) * 257, right.astype(np.uint16) * 257, params)
    colour = match(np.repeat(left[..., None], 3, axis=2), np.repeat(right[..., None], 3, axis=2), params)
    np.testing.assert_array_equal(wide.disparity, base.disparity)
    np.testing.assert_array_equal(colour.disparity, base.disparity)


def test_a_memory_budget_applies_to_the_reduced_pair() -> None:
    """A budget too small for the full-resolution volume but enough for the reduced one matches without bands."""
    from pseudolabel.sgm import tiled

    left, right = textured_pair(height=120, width=301, disparity=6, seed=1)
    params = SGMParams.preset("fast").replace(max_disp=64)
    reduced = reduced_params(params)
    budget = tiled.required_memory(60, 151, reduced, 2 * 4 * 60 * 151)
    assert budget < tiled.required_memory(120, 301, reduced.replace(max_disp=64), 2 * left.nbytes)
    result = match(left, right, params, max_memory=budget)
    assert result.bands == 1
    np.testing.assert_array_equal(result.disparity, match(left, right, params).disparity)


def test_fast_preset_on_real_pairs() -> None:
    """Middlebury v2 venus and tsukuba, non-occluded pixels. Measured when this test was written (dense
    bad-2 %, valid density %, valid bad-2 %): venus default 0.7 / 98.0 / 0.3, fast 1.5 / 98.8 / 1.0;
    tsukuba default 2.3 / 95.7 / 1.7, fast 4.0 / 98.9 / 3.7. The half resolution roughly doubles the
    errors and stays dense; the bounds leave margin."""
    for scene_name, scale, max_disp, dense_bound, valid_bound in (("venus", 8, 32, 0.025, 0.02), ("tsukuba", 16, 16, 0.06, 0.055)):
        scene = DATA / "middlebury" / scene_name
        left, right = read_image(scene / "imL.png"), read_image(scene / "imR.png")
        truth = read_disparity(scene / "groundtruth.png", scale=scale)
        mask = (to_gray(read_image(scene / "nonocc.png")) > 127) & np.isfinite(truth)
        result = match(left, right, SGMParams.preset("fast").replace(max_disp=max_disp))
        valid = mask & result.valid
        assert np.mean(np.abs(result.disparity[mask] - truth[mask]) > 2) < dense_bound, scene_name
        assert np.mean(np.abs(result.disparity[valid] - truth[valid]) > 2) < valid_bound, scene_name
        assert valid.sum() / mask.sum() > 0.9, scene_name


def test_bad_factor_is_refused_and_the_identity_of_full_resolution_runs_is_unchanged() -> None:
    with pytest.raises(InputError, match="downsample must be 1, 2 or 4"):
        SGMParams(downsample=3).validate()
    assert "downsample" not in json.loads(SGMParams().to_json())
    fast = SGMParams.preset("fast")
    assert json.loads(fast.to_json())["downsample"] == 2
    assert SGMParams.from_json(fast.to_json()) == fast
    assert SGMParams.preset("balanced").replace(downsample=2) == fast


def test_scale_disparities_multiplies_only_the_disparity_maps_at_the_reduced_size() -> None:
    from pseudolabel.sgm.downsampled import scale_disparities
    from pseudolabel.sgm.params import SGMResult

    maps = {
        name: np.full((2, 3), 1.5, np.float32)
        for name in ("disparity", "disparity_right", "cost_best", "cost_second", "cost_second_local", "cost_mean")
    }
    reduced = SGMResult(valid=np.ones((2, 3), bool), disparity_wta=np.array([[3, -2, 0], [1, 1, 1]], np.int16), params=SGMParams(), **maps)
    params = SGMParams.preset("fast")
    scaled = scale_disparities(reduced, params)
    np.testing.assert_array_equal(scaled.disparity, np.full((2, 3), 3.0, np.float32))
    np.testing.assert_array_equal(scaled.disparity_right, np.full((2, 3), 3.0, np.float32))
    np.testing.assert_array_equal(scaled.disparity_wta, np.array([[6, -4, 0], [2, 2, 2]], np.int16))
    assert scaled.disparity_wta.dtype == np.int16 and scaled.disparity.dtype == np.float32
    assert scaled.cost_best is reduced.cost_best and scaled.valid is reduced.valid
    assert scaled.params == params and reduced.disparity[0, 0] == 1.5  # the input is not modified


@pytest.mark.parametrize("max_memory", [None, "1G"])
def test_match_reduced_enlarged_is_match(max_memory: str | None) -> None:
    """On the shipped KITTI pair (1241 wide: the last block is incomplete), every map of match_reduced repeated over
    its 2x2 block is match's map, bit for bit; at full resolution match_reduced is match."""
    from pseudolabel.sgm.matcher import match_reduced

    folder = DATA / "kitti2012" / "training"
    left, right = read_image(folder / "image_0" / "000070_10.png"), read_image(folder / "image_1" / "000070_10.png")
    params = SGMParams.preset("fast").replace(max_disp=64)
    full = match(left, right, params, max_memory=max_memory)
    reduced = match_reduced(left, right, params, max_memory=max_memory)
    height, width = left.shape
    assert reduced.disparity.shape == (188, 621) and reduced.params == params
    for name in ("disparity", "disparity_right", "disparity_wta", "valid", "cost_best", "cost_second", "cost_second_local", "cost_mean"):
        enlarged = enlarge_map(getattr(reduced, name), 2, height, width)
        assert enlarged.dtype == getattr(full, name).dtype
        np.testing.assert_array_equal(enlarged, getattr(full, name), err_msg=name)
    small_left, small_right = textured_pair(height=21, width=45, disparity=4, seed=2)
    plain = SGMParams(max_disp=12)
    np.testing.assert_array_equal(match_reduced(small_left, small_right, plain).disparity, match(small_left, small_right, plain).disparity)
