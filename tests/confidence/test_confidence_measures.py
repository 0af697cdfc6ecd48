"""Conventional confidence measures against values computed by hand on tiny cost curves."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Mapping

import cv2
import numpy as np
import pytest
from scipy import ndimage

from pseudolabel.confidence.measures import (
    LR_CONTEXT_MEASURES,
    MEASURES,
    compute_measure,
    compute_measures,
    features_needed,
    register_measure,
)
from pseudolabel.errors import InputError
from pseudolabel.sgm.params import SGMParams

# A 1x4 "image" with 4 disparities. Aggregated cost curves c(d), d = 0..3, one per pixel:
#   A = [5, 2, 4, 1]    -> c1 = 1 (d=3), c2 = 2, other local minima {d=1: 2}  -> c2m = 2,  mean = 12/4 = 3
#   B = [3, 1, 4, 6]    -> c1 = 1 (d=1), c2 = 3, no other local minimum       -> c2m = 6 (curve max), mean = 3.5
#   D = [2, 3, 6, 4]    -> c1 = 2 (d=0), c2 = 3, other local minima {d=3: 4}  -> c2m = 4,  mean = 3.75
#   E = [4, 9, 4.1, 9]  -> c1 = 4 (d=0), c2 = 4.1, other local minima {d=2}   -> c2m = 4.1, mean = 6.525
C1 = np.array([[1, 1, 2, 4]], np.float32)
C2 = np.array([[2, 3, 3, 4.1]], np.float32)
C2M = np.array([[2, 6, 4, 4.1]], np.float32)
MEAN = np.array([[3, 3.5, 3.75, 6.525]], np.float32)
COSTS = {"cost_best": C1, "cost_second": C2, "cost_second_local": C2M, "cost_mean": MEAN}
PARAMS = SGMParams(min_disp=0, max_disp=4, uniqueness=0.95, lr_max_diff=1.0)
# Per-image cost scale of MSM / MM / MMN: the mean of cost_mean.
S = (3 + 3.5 + 3.75 + 6.525) / 4


def _check(name: str, expected: list[float], features: dict[str, np.ndarray] | None = None, params: SGMParams = PARAMS) -> None:
    result = compute_measure(name, features if features is not None else COSTS, params)
    assert result.dtype == np.float32
    assert result.shape == (1, len(expected))
    np.testing.assert_allclose(result[0], expected, rtol=1e-5, atol=1e-6)
    assert np.all((result >= 0) & (result <= 1))


def test_pkrn_hand_computed() -> None:
    # 1 - (c1 + 0.1) / (c2 + 0.1)
    _check("pkrn", [1 - 1.1 / 2.1, 1 - 1.1 / 3.1, 1 - 2.1 / 3.1, 1 - 4.1 / 4.2])


def test_pkr_hand_computed() -> None:
    # 1 - (c1 + 0.1) / (c2m + 0.1)
    _check("pkr", [1 - 1.1 / 2.1, 1 - 1.1 / 6.1, 1 - 2.1 / 4.1, 1 - 4.1 / 4.2])


def test_msm_hand_computed() -> None:
    _check("msm", [S / (S + 1), S / (S + 1), S / (S + 2), S / (S + 4)])


def test_mm_and_mmn_hand_computed() -> None:
    # margins c2m - c1 = 1, 5, 2, 0.1 and c2 - c1 = 1, 2, 1, 0.1, mapped by m / (m + S)
    _check("mm", [1 / (1 + S), 5 / (5 + S), 2 / (2 + S), 0.1 / (0.1 + S)])
    _check("mmn", [1 / (1 + S), 2 / (2 + S), 1 / (1 + S), 0.1 / (0.1 + S)])


def test_wmn_and_wmnn_hand_computed() -> None:
    # x = (c_other - c1) / mean = (c_other - c1) / sum * num_disp; mapped by x / (1 + x)
    wmn = np.array([1 / 3, 5 / 3.5, 2 / 3.75, 0.1 / 6.525])
    wmnn = np.array([1 / 3, 2 / 3.5, 1 / 3.75, 0.1 / 6.525])
    _check("wmn", list(wmn / (1 + wmn)))
    _check("wmnn", list(wmnn / (1 + wmnn)))


def test_uniqueness_hand_computed() -> None:
    # c1 < 0.95 * c2m: 1 < 1.9, 1 < 5.7, 2 < 3.8 pass; 4 < 3.895 fails
    _check("uniqueness", [1, 1, 1, 0])
    # a looser ratio lets E pass: 4 < 0.99 * 4.1 = 4.059
    _check("uniqueness", [1, 1, 1, 1], params=PARAMS.replace(uniqueness=0.99))


# Left-right: width 6, d_L and d_R (right view, x_left = x_right + d).
#   x=0: x-d=0    -> d_R[0]=0, |0-0| = 0                        lrc 1, lrd 1
#   x=1: x-d=0    -> d_R[0]=0, |1-0| = 1                        lrc 1, lrd 1/2
#   x=2: x-d=-0.6 -> outside the right image                    lrc 0, lrd 0
#   x=3: x-d=2    -> d_R[2]=1, |1-1| = 0                        lrc 1, lrd 1
#   x=4: x-d=0.5  -> nearest d_R[1]=2: |3.5-2|=1.5; interpolated (0+2)/2=1: |3.5-1|=2.5   lrc 0, lrd 1/3.5
#   x=5: x-d=2    -> d_R[2]=1, |3-1| = 2                        lrc 0, lrd 1/3
LR = {
    "disparity": np.array([[0, 1, 2.6, 1, 3.5, 3]], np.float32),
    "disparity_right": np.array([[0, 2, 1, 1, 0, 0]], np.float32),
}
# The LRC threshold is stated here rather than taken from the SGMParams default.
LR_PARAMS = SGMParams(min_disp=0, max_disp=4, lr_max_diff=1.0)


def test_lrc_hand_computed() -> None:
    # |d_L - d_R(nearest)| = 0, 1, outside, 0, 1.5, 2 against lr_max_diff = 1: pass, pass, fail, pass, fail, fail
    _check("lrc", [1, 1, 0, 1, 0, 0], LR, LR_PARAMS)
    # lr_max_diff = 2 lets x=4 (1.5) and x=5 (2, the bound is inclusive) pass; outside the image still fails
    _check("lrc", [1, 1, 0, 1, 1, 1], LR, LR_PARAMS.replace(lr_max_diff=2.0))
    # lr_max_diff = 1.4 keeps x=4 (1.5) out
    _check("lrc", [1, 1, 0, 1, 0, 0], LR, LR_PARAMS.replace(lr_max_diff=1.4))


def test_lrd_hand_computed() -> None:
    _check("lrd", [1, 0.5, 0, 1, 1 / 3.5, 1 / 3], LR, LR_PARAMS)


def test_dbl_hand_computed() -> None:
    # x - d = 0, 0, -0.6, 2, 0.5, 2: inside -> 1; -0.6 -> 1 / (1 + 0.6)
    _check("dbl", [1, 1, 1 / 1.6, 1, 1, 1], LR, LR_PARAMS)


def test_med_outlier_and_edge() -> None:
    # 13x13 constant 10 px with one outlier of 20 px and a quarter-pixel value: medians stay 10.
    disparity = np.full((13, 13), 10.0, np.float32)
    disparity[6, 6] = 20.0
    disparity[0, 12] = 10.25
    params = SGMParams(min_disp=0, max_disp=32)
    result = compute_measure("med", {"disparity": disparity}, params)
    expected = np.ones_like(disparity)
    expected[6, 6] = 1 / (1 + 10)
    expected[0, 12] = 1 / (1 + 0.25)
    np.testing.assert_allclose(result, expected, rtol=1e-6)


def test_med_matches_scipy_reference_on_random_odd_image() -> None:
    rng = np.random.default_rng(3)
    # quarter-pixel disparities (the quantisation of MED is exact for ranges up to 63 px)
    disparity = (rng.integers(0, 48 * 4, size=(37, 53)) / 4.0).astype(np.float32)
    params = SGMParams(min_disp=0, max_disp=48)
    median = ndimage.median_filter(disparity, size=11, mode="nearest")
    expected = 1.0 / (1.0 + np.abs(disparity - median))
    np.testing.assert_allclose(compute_measure("med", {"disparity": disparity}, params), expected, rtol=1e-6)


def test_apkr_is_box_mean_of_pkr_against_reference() -> None:
    rng = np.random.default_rng(5)
    c1 = rng.uniform(0, 50, size=(31, 47)).astype(np.float32)
    c2m = (c1 + rng.uniform(0, 30, size=c1.shape)).astype(np.float32)
    features = {"cost_best": c1, "cost_second_local": c2m}
    pkr = 1 - (c1 + 0.1) / (c2m + 0.1)
    padded = np.pad(pkr, 12, mode="reflect")  # numpy "reflect" == OpenCV BORDER_REFLECT_101
    expected = np.zeros_like(pkr)
    for y in range(pkr.shape[0]):
        for x in range(pkr.shape[1]):
            expected[y, x] = padded[y : y + 25, x : x + 25].mean()
    np.testing.assert_allclose(compute_measure("apkr", features, PARAMS), expected, rtol=1e-4, atol=1e-6)


def _random_left_right(seed: int, shape: tuple[int, int] = (29, 43)) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A random left/right disparity pair of odd size and its lrc map (1 / 0), by the rule of lrc."""
    rng = np.random.default_rng(seed)
    disparity = rng.integers(0, 6, size=shape).astype(np.float32)
    disparity_right = np.where(rng.random(shape) < 0.7, disparity, disparity + 3).astype(np.float32)
    features = {"disparity": disparity, "disparity_right": disparity_right}
    return features, compute_measure("lrc", features, LR_PARAMS)


@pytest.mark.parametrize("window", [15, 41, 101])
def test_alrc_is_the_share_of_lrc_passes_in_its_window(window: int) -> None:
    features, lrc = _random_left_right(window, (window + 2, window + 6))
    padded = np.pad(lrc, window // 2, mode="reflect")  # numpy "reflect" == OpenCV BORDER_REFLECT_101
    expected = np.zeros_like(lrc)
    for y in range(lrc.shape[0]):
        for x in range(lrc.shape[1]):
            expected[y, x] = padded[y : y + window, x : x + window].mean()
    np.testing.assert_allclose(compute_measure(f"alrc{window}", features, LR_PARAMS), expected, rtol=1e-5, atol=1e-6)
    assert MEASURES[f"alrc{window}"].needs == ("disparity", "disparity_right")


@pytest.mark.parametrize("shape", [(5, 7), (1, 9), (3, 60)])
def test_alrc101_on_images_smaller_than_its_window(shape: tuple[int, int]) -> None:
    features, lrc = _random_left_right(3, shape)
    padded = np.pad(lrc, 50, mode="reflect")  # repeated reflection, as OpenCV's BORDER_REFLECT_101
    expected = np.array([[padded[y : y + 101, x : x + 101].mean() for x in range(shape[1])] for y in range(shape[0])], np.float32)
    np.testing.assert_allclose(compute_measure("alrc101", features, LR_PARAMS), expected, rtol=1e-5, atol=1e-6)


def test_dlrc_is_the_distance_to_the_nearest_lrc_failure() -> None:
    features, lrc = _random_left_right(7)
    failing = np.argwhere(lrc < 0.5)
    assert len(failing) > 0
    expected = np.zeros_like(lrc)
    for y in range(lrc.shape[0]):
        for x in range(lrc.shape[1]):
            distance = np.sqrt(((failing - (y, x)) ** 2).sum(axis=1)).min()
            expected[y, x] = distance / (distance + 10.0)
    np.testing.assert_allclose(compute_measure("dlrc", features, LR_PARAMS), expected, rtol=1e-6, atol=1e-7)


def _dlrc_with_opencv_threads(features: dict[str, np.ndarray], counts: tuple[int, ...]) -> list[np.ndarray]:
    """``dlrc`` computed once with each of OpenCV's thread ``counts`` (its setting restored afterwards)."""
    threads = cv2.getNumThreads()
    try:
        results = []
        for count in counts:
            cv2.setNumThreads(count)
            results.append(compute_measure("dlrc", features, LR_PARAMS))
    finally:
        cv2.setNumThreads(threads)
    return results


def test_dlrc_does_not_depend_on_opencv_threads() -> None:
    rng = np.random.default_rng(11)
    disparity_right = np.where(rng.random((301, 415)) < 0.001, 5.0, 0.0).astype(np.float32)  # a few failures, far apart
    features = {"disparity": np.zeros((301, 415), np.float32), "disparity_right": disparity_right}
    results = _dlrc_with_opencv_threads(features, (1, 2, 4))
    np.testing.assert_array_equal(results[1], results[0])
    np.testing.assert_array_equal(results[2], results[0])


def _one_lrc_failure(shape: tuple[int, int], row: int, col: int) -> dict[str, np.ndarray]:
    """Zero disparities of ``shape`` whose only pixel failing lrc is (``row``, ``col``)."""
    disparity_right = np.zeros(shape, np.float32)
    disparity_right[row, col] = 5.0
    return {"disparity": np.zeros(shape, np.float32), "disparity_right": disparity_right}


def test_dlrc_far_from_any_failure_does_not_depend_on_opencv_threads() -> None:
    # one failing corner pixel of a 951x951 image: uncapped, OpenCV's distances past ~880 px round differently
    # with 1 and 2 threads; the cap keeps every value exact
    results = _dlrc_with_opencv_threads(_one_lrc_failure((951, 951), 0, 0), (1, 2))
    np.testing.assert_array_equal(results[1], results[0])


def test_dlrc_is_exact_and_capped_far_from_any_failure() -> None:
    # one failing pixel at the left end of a 1400-pixel band: distances up to 1399 px, capped at 512
    results = _dlrc_with_opencv_threads(_one_lrc_failure((3, 1400), 1, 0), (1, 2))
    np.testing.assert_array_equal(results[1], results[0])
    rows, cols = np.indices((3, 1400))
    distance = np.minimum(np.sqrt((rows - 1.0) ** 2 + cols.astype(np.float64) ** 2), 512.0)
    np.testing.assert_allclose(results[0], distance / (distance + 10.0), rtol=1e-6, atol=1e-7)


def test_dlrc_hand_computed_and_without_failures() -> None:
    # lrc of LR is 1, 1, 0, 1, 0, 0: distances 2, 1, 0, 1, 0, 0
    _check("dlrc", [2 / 12, 1 / 11, 0, 1 / 11, 0, 0], LR, LR_PARAMS)
    consistent = {"disparity": np.zeros((3, 5), np.float32), "disparity_right": np.zeros((3, 5), np.float32)}
    np.testing.assert_array_equal(compute_measure("dlrc", consistent, LR_PARAMS), np.ones((3, 5), np.float32))


def test_every_measure_is_in_unit_range_and_registered_needs_suffice() -> None:
    rng = np.random.default_rng(0)
    shape = (21, 33)
    c1 = rng.uniform(0, 100, shape).astype(np.float32)
    features = {
        "disparity": rng.uniform(0, 31, shape).astype(np.float32),
        "disparity_right": rng.uniform(0, 31, shape).astype(np.float32),
        "valid": rng.uniform(size=shape) > 0.3,
        "cost_best": c1,
        "cost_second": c1 + rng.uniform(0, 20, shape).astype(np.float32),
        "cost_second_local": c1 + rng.uniform(0, 50, shape).astype(np.float32),
        "cost_mean": c1 + rng.uniform(10, 80, shape).astype(np.float32),
    }
    params = SGMParams(min_disp=0, max_disp=32)
    for name, spec in MEASURES.items():
        only_needed = {need: features[need] for need in spec.needs}
        values = compute_measure(name, only_needed, params)
        assert values.shape == shape and values.dtype == np.float32, name
        assert np.all(np.isfinite(values)) and values.min() >= 0 and values.max() <= 1, name
        if spec.binary:
            assert set(np.unique(values)) <= {0.0, 1.0}, name
    assert set(features_needed(["pkr", "lrc"])) == {"cost_best", "cost_second_local", "disparity", "disparity_right"}
    assert set(compute_measures(["pkr", "msm"], features, params)) == {"pkr", "msm"}


def test_more_separated_minimum_gives_higher_confidence() -> None:
    # Monotonicity: raising c2m (or c2) with c1 fixed never lowers the cost-based measures.
    c1 = np.full((1, 5), 10, np.float32)
    others = np.array([[10.5, 12, 15, 30, 100]], np.float32)
    features = {"cost_best": c1, "cost_second": others, "cost_second_local": others, "cost_mean": np.full((1, 5), 40, np.float32)}
    for name in ("pkrn", "pkr", "mm", "mmn", "wmn", "wmnn"):
        values = compute_measure(name, features, PARAMS)[0]
        assert np.all(np.diff(values) > 0), name


def test_unknown_measure_and_missing_feature_are_input_errors() -> None:
    with pytest.raises(InputError, match="unknown confidence measure 'nope'"):
        compute_measure("nope", COSTS, PARAMS)
    with pytest.raises(InputError, match="needs cost_second_local"):
        compute_measure("pkr", {"cost_best": C1}, PARAMS)


def test_a_new_measure_is_one_function_and_one_name() -> None:
    @register_measure("test_only_valid", needs=("valid",), binary=True, description="SGM's validity mask")
    def valid_measure(features, params):  # type: ignore[no-untyped-def]
        return features["valid"].astype(np.float32)

    try:
        mask = np.array([[True, False]])
        np.testing.assert_array_equal(compute_measure("test_only_valid", {"valid": mask}, PARAMS), [[1, 0]])
        assert MEASURES["test_only_valid"].pass_threshold == 0.5
    finally:
        del MEASURES["test_only_valid"]


def test_a_measure_read_by_others_is_computed_once_per_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    """``alrc15``, ``alrc41``, ``alrc101`` and ``dlrc`` read ``lrc``: computing them all calls ``lrc`` once, gives what
    each gives alone, and reuses a map the caller computed before (without changing it)."""
    features, lrc = _random_left_right(12, (37, 53))
    names = ["lrc", *LR_CONTEXT_MEASURES]
    alone = {name: compute_measure(name, features, LR_PARAMS) for name in names}
    calls: list[int] = []
    spec = MEASURES["lrc"]

    def counting(features: Mapping[str, np.ndarray], params: SGMParams) -> np.ndarray:
        calls.append(1)
        return spec.function(features, params)

    monkeypatch.setitem(MEASURES, "lrc", dataclasses.replace(spec, function=counting))
    together = compute_measures(list(reversed(names)), features, LR_PARAMS)
    assert len(calls) == 1
    for name in names:
        np.testing.assert_array_equal(together[name], alone[name], err_msg=name)
    computed = {"lrc": lrc.copy()}
    assert set(compute_measures(["dlrc"], features, LR_PARAMS, computed)) == {"dlrc"}
    assert len(calls) == 1 and set(computed) == {"lrc", "dlrc"}
    np.testing.assert_array_equal(computed["lrc"], lrc)
    np.testing.assert_array_equal(computed["dlrc"], alone["dlrc"])


def test_a_measure_may_only_use_measures_registered_before_it_on_its_features() -> None:
    def ones(features: Mapping[str, np.ndarray], params: SGMParams) -> np.ndarray:
        return np.ones(features["disparity"].shape, np.float32)

    with pytest.raises(ValueError, match="uses 'test_later'"):
        register_measure("test_uses", needs=("disparity",), uses=("test_later",), description="x")(ones)
    with pytest.raises(ValueError, match="uses 'lrc'"):
        register_measure("test_uses", needs=("disparity",), uses=("lrc",), description="x")(ones)
    assert "test_uses" not in MEASURES


def test_importing_measures_does_not_import_torch() -> None:
    code = "import sys, pseudolabel.confidence.measures, pseudolabel.confidence.sparsification, pseudolabel.confidence.labels; print('torch' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    assert output == "False"
