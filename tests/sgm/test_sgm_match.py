"""The public SGM entry point: inputs, parameters, and accuracy on a real Middlebury pair."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pseudolabel.errors import InputError
from pseudolabel.io import read_disparity, read_image, to_gray
from pseudolabel.sgm import cost, refinement
from pseudolabel.sgm.matcher import Matcher, match
from pseudolabel.sgm.params import SGMParams, SGMResult
from tests.sgm import sgm_reference as reference

DATA = Path(__file__).parents[1] / "data"


def textured_pair(height: int = 31, width: int = 57, disparity: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random texture seen with a constant disparity: ``right(x - d) = left(x)``."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, size=(height, width + disparity)).astype(np.float32)
    texture = (texture + np.roll(texture, 1, axis=1) + np.roll(texture, 1, axis=0)) / 3.0
    left = texture[:, :width].astype(np.uint8)
    right = texture[:, disparity:].astype(np.uint8)
    return np.ascontiguousarray(left), np.ascontiguousarray(right)


def test_result_fields_have_the_documented_shapes_and_dtypes() -> None:
    left, right = textured_pair()
    result = match(left, right, max_disp=12)
    assert isinstance(result, SGMResult)
    for name in ("disparity", "disparity_right", "cost_best", "cost_second", "cost_second_local", "cost_mean"):
        array = getattr(result, name)
        assert array.shape == left.shape and array.dtype == np.float32, name
    assert result.valid.dtype == np.bool_ and result.valid.shape == left.shape
    assert result.disparity_wta.dtype == np.int16
    assert np.all(np.isfinite(result.disparity))  # dense
    assert np.all(result.cost_best <= result.cost_second) and np.all(result.cost_second <= result.cost_second_local)


def test_constant_shift_is_recovered() -> None:
    left, right = textured_pair(disparity=5)
    result = match(left, right, max_disp=12)
    inner = result.valid[:, 16:-5]
    assert inner.mean() > 0.9
    np.testing.assert_allclose(result.disparity[:, 16:-5][inner], 5.0, atol=0.3)
    assert not result.valid[:, :3].any()  # x - 5 < 0: no match in the right image
    # the right view sees the same shift
    np.testing.assert_allclose(np.nanmedian(result.disparity_right[:, 5:-16]), 5.0, atol=0.3)


@pytest.mark.parametrize("shape", [(23, 41), (24, 40), (1, 30)])
def test_odd_and_tiny_sizes_work(shape: tuple[int, int]) -> None:
    left, right = textured_pair(*shape)
    result = match(left, right, max_disp=7)
    assert result.disparity.shape == shape


def test_negative_min_disp_and_max_disp_not_a_multiple_of_16() -> None:
    left, right = textured_pair(disparity=3)
    # swap the views: the disparity becomes -3 in this convention
    result = match(right, left, min_disp=-9, max_disp=2)
    inner = result.valid[:, 12:-5]
    assert inner.mean() > 0.8
    np.testing.assert_allclose(np.median(result.disparity[:, 12:-5][inner]), -3.0, atol=0.3)
    assert result.disparity_wta.min() >= -9 and result.disparity_wta.max() <= 1


def test_uint16_and_colour_inputs_give_the_same_answer() -> None:
    left, right = textured_pair()
    base = match(left, right, max_disp=12)
    wide = match(left.astype(np.uint16) * 257, right.astype(np.uint16) * 257, max_disp=12)
    np.testing.assert_array_equal(base.disparity, wide.disparity)
    colour = match(np.repeat(left[:, :, None], 3, axis=2), np.repeat(right[:, :, None], 3, axis=2), max_disp=12)
    np.testing.assert_array_equal(base.disparity, colour.disparity)


def test_matcher_reuses_buffers_and_matches_the_function() -> None:
    left, right = textured_pair()
    matcher = Matcher(SGMParams(max_disp=12))
    first = matcher(left, right)
    buffer = matcher._aggregated_buffer
    second = matcher(right[:, ::-1].copy(), left[:, ::-1].copy())
    assert matcher._aggregated_buffer is buffer
    again = matcher(left, right)
    np.testing.assert_array_equal(first.disparity, again.disparity)
    np.testing.assert_array_equal(first.disparity, match(left, right, max_disp=12).disparity)
    assert not np.array_equal(first.disparity, second.disparity)


@pytest.mark.parametrize(
    "left_shape,right_shape,kwargs,message",
    [
        ((10, 20), (10, 21), {}, "differ in size"),
        ((2, 10, 20, 3), (2, 10, 20, 3), {}, "must be (H, W)"),
        ((10, 20), (10, 20), {"max_disp": 32}, "wider than the image"),
        ((10, 20), (10, 20), {"max_disp": 5, "min_disp": 5}, "larger than min_disp"),
        ((10, 20), (10, 20), {"paths": 6}, "paths must be"),
        ((10, 20), (10, 20), {"p1": 50, "p2": 10}, "penalties"),
        ((10, 20), (10, 20), {"cost": "sad"}, "unknown cost"),
        ((10, 20), (10, 20), {"p2_gamma": 0.0}, "p2_gamma must be a positive"),
        ((10, 20), (10, 20), {"p2_gamma": float("nan")}, "p2_gamma must be a positive"),
    ],
)
def test_bad_input_raises_a_clear_value_error(left_shape: tuple, right_shape: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        match(np.zeros(left_shape, np.uint8), np.zeros(right_shape, np.uint8), **({"max_disp": 8} | kwargs))


def test_nan_images_are_refused() -> None:
    image = np.zeros((10, 20), np.float32)
    image[3, 4] = np.nan
    with pytest.raises(InputError, match="NaN"):
        match(image, np.zeros((10, 20), np.float32), max_disp=8)


def test_parameters_round_trip_through_json() -> None:
    params = SGMParams(max_disp=77, min_disp=-3, paths=16, cost="bt", subpixel="equiangular")
    assert SGMParams.from_json(params.to_json()) == params


def test_importing_the_sgm_code_does_not_import_torch() -> None:
    code = "import sys, pseudolabel.sgm, pseudolabel.sgm.cost, pseudolabel.sgm.aggregation, pseudolabel.sgm.disparity, pseudolabel.sgm.refinement, pseudolabel.io; print('torch' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    assert output == "False"


@pytest.mark.parametrize("step", [1, 2])
def test_census_step_matches_reference(step: int) -> None:
    rng = np.random.default_rng(step)
    image = rng.integers(0, 256, size=(15, 23)).astype(np.float32)
    expected = reference.census_transform(image, 5, 3, step)
    np.testing.assert_array_equal(cost.census_transform(image, 5, 3, step), expected)


@pytest.mark.parametrize("radius,step", [(2, 1), (6, 3), (4, 2), (4, 1), (3, 1)])  # 49 and 81 samples: the selection path
def test_edge_aware_median_matches_reference(radius: int, step: int) -> None:
    rng = np.random.default_rng(3)
    disparity = rng.uniform(0, 20, size=(13, 17)).astype(np.float32)
    guide = rng.integers(0, 4, size=(13, 17)).astype(np.float32) * 40
    where = rng.random((13, 17)) < 0.5
    result = refinement.edge_aware_median(disparity, guide, radius, 16.0, where, step)
    expected = disparity.copy()
    for y, x in zip(*np.nonzero(where)):
        ys = [yy for yy in range(y - radius, y + radius + 1, step) if 0 <= yy < 13 and (yy - y) % step == 0]
        xs = [xx for xx in range(x - radius, x + radius + 1, step) if 0 <= xx < 17 and (xx - x) % step == 0]
        window = disparity[np.ix_(ys, xs)]
        same = np.abs(guide[np.ix_(ys, xs)] - guide[y, x]) <= 16.0
        expected[y, x] = np.median(window[same])
    np.testing.assert_allclose(result, expected, rtol=1e-6)


def test_accuracy_on_middlebury_tsukuba() -> None:
    """Tsukuba (Middlebury v2), non-occluded pixels: the figures measured when this test was written
    were dense bad-2 about 3%, valid density about 94% with bad-2 about 2%; the bounds leave margin."""
    scene = DATA / "middlebury" / "tsukuba"
    left, right = read_image(scene / "imL.png"), read_image(scene / "imR.png")
    truth = read_disparity(scene / "groundtruth.png", scale=16)
    nonocc = to_gray(read_image(scene / "nonocc.png")) > 127
    mask = nonocc & np.isfinite(truth)
    result = match(left, right, max_disp=16)
    dense_bad2 = np.mean(np.abs(result.disparity[mask] - truth[mask]) > 2)
    valid = mask & result.valid
    valid_bad2 = np.mean(np.abs(result.disparity[valid] - truth[valid]) > 2)
    density = valid.sum() / mask.sum()
    assert dense_bad2 < 0.05
    assert valid_bad2 < 0.03
    assert density > 0.85


def test_presets() -> None:
    assert SGMParams.preset() == SGMParams() == SGMParams.preset("default")
    fast = SGMParams.preset("fast")
    fast.validate()
    assert fast.paths < SGMParams().paths and fast.fill_median_radius == 0 and fast.downsample == 2
    balanced = SGMParams.preset("balanced")
    assert balanced.paths == fast.paths and balanced.downsample == 1
    with pytest.raises(InputError, match="unknown preset"):
        SGMParams.preset("slow")


@pytest.mark.parametrize("preset", ["default", "fast"])
def test_results_do_not_depend_on_the_thread_count(preset: str) -> None:
    """Every parallel kernel splits independent rows or lines among threads: 1 and 2 threads agree bit for bit."""
    import numba

    left, right = textured_pair(height=45, width=97, disparity=6, seed=4)
    params = SGMParams.preset(preset).replace(max_disp=24, paths=16 if preset == "default" else 4)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = Matcher(params)(left, right)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        double = Matcher(params)(left, right)
    finally:
        numba.set_num_threads(threads)
    for name in ("disparity", "valid", "disparity_right", "cost_best", "cost_second", "cost_second_local", "cost_mean", "disparity_wta"):
        np.testing.assert_array_equal(getattr(single, name), getattr(double, name), err_msg=name)
