"""Tiled matching (``match(..., max_memory=...)``): bands against untiled matching, the memory model,
the too-small-budget error and size parsing."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from pseudolabel.errors import InputError
from pseudolabel.io import read_image
from pseudolabel.sgm import tiled
from pseudolabel.sgm.matcher import match
from pseudolabel.sgm.params import SGMParams, SGMResult
from tests.sgm.test_sgm_match import textured_pair

DATA = Path(__file__).parents[1] / "data"
FIELDS = ("disparity", "valid", "disparity_right", "cost_best", "cost_second", "cost_second_local", "cost_mean", "disparity_wta")


def kitti() -> tuple[np.ndarray, np.ndarray]:
    folder = DATA / "kitti2012" / "training"
    return read_image(folder / "image_0" / "000070_10.png"), read_image(folder / "image_1" / "000070_10.png")


def assert_identical(first: SGMResult, second: SGMResult) -> None:
    for name in FIELDS:
        a, b = getattr(first, name), getattr(second, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)  # NaN == NaN here


def budget_for_core(height: int, width: int, params: SGMParams, core: int, overlap: int, image_bytes: int) -> int:
    """The budget whose bands have ``core`` rows (the model's bands stage, above its finishing stage)."""
    banded = height * width * tiled.STITCHED_PIXEL_BYTES + tiled._band_bytes(core + 2 * overlap, width, params)
    return max(banded, height * width * tiled.PIXEL_BYTES) + image_bytes + tiled.RUNTIME_RESERVE


def test_a_budget_that_fits_gives_the_untiled_result_bit_for_bit() -> None:
    left, right = kitti()
    params = SGMParams(max_disp=64)
    untiled = match(left, right, params)
    assert tiled.plan_bands(*left.shape, params, tiled.required_memory(*left.shape, params, 2 * left.nbytes)) == [tiled.Band(0, 376, 0, 376)]
    assert_identical(match(left, right, params, max_memory="8G"), untiled)
    assert_identical(match(left, right, params, max_memory=tiled.required_memory(*left.shape, params, 2 * left.nbytes)), untiled)
    # the tiled code path with one band covering the image: the same steps in the same order
    assert_identical(tiled.match_tiled(left, right, params, bands=[tiled.Band(0, 376, 0, 376)]), untiled)


def test_a_tiny_budget_matches_in_bands_that_cover_the_image_and_agree_with_untiled() -> None:
    """KITTI (the slowest to agree of the measured scenes, see BENCHMARKS.md), three cuts at the default
    overlap of 128 rows. Measured when written: 0.68% of the float disparities differ (by 0.04 px in
    the median), 0.003% by more than 1 px, 0.02% of the integer winners and 0.04% of the validity mask."""
    left, right = kitti()
    params = SGMParams(max_disp=64)
    height, width = left.shape
    budget = budget_for_core(height, width, params, 94, tiled.DEFAULT_OVERLAP, 2 * left.nbytes)
    assert budget < tiled.required_memory(height, width, params, 2 * left.nbytes)
    bands = tiled.plan_bands(height, width, params, budget, image_bytes=2 * left.nbytes)
    assert len(bands) == 4
    assert bands[0].start == 0 and bands[-1].stop == height
    assert all(a.stop == b.start for a, b in zip(bands[:-1], bands[1:]))
    assert all(band.top == max(0, band.start - 128) and band.bottom == min(height, band.stop + 128) for band in bands)
    result = match(left, right, params, max_memory=budget)
    assert_identical(result, tiled.match_tiled(left, right, params, bands=bands))
    untiled = match(left, right, params)
    assert (result.bands, untiled.bands) == (4, 1)
    assert np.all(np.isfinite(result.disparity))
    assert np.mean(result.disparity == untiled.disparity) >= 0.985
    assert np.mean(np.abs(result.disparity - untiled.disparity) <= 1.0) >= 0.999
    assert np.mean(result.disparity_wta == untiled.disparity_wta) >= 0.999
    assert np.mean(result.valid == untiled.valid) >= 0.998


def test_agreement_grows_with_the_overlap_and_middlebury_agrees_exactly_at_the_default() -> None:
    """Tsukuba with a cut every 48 rows. Measured when written: the float disparity differs on 46% of
    the pixels without overlap, 25% with 8 rows, 2.1% with 32, 0.05% with 64 and none from 96 rows on."""
    scene = DATA / "middlebury" / "tsukuba"
    left, right = read_image(scene / "imL.png"), read_image(scene / "imR.png")
    params = SGMParams(max_disp=16)
    height = left.shape[0]
    untiled = match(left, right, params)
    cuts = list(range(0, height, 48)) + [height]
    differing = []
    for overlap in (0, 8, 32, 64, tiled.DEFAULT_OVERLAP):
        bands = [tiled.Band(a, b, max(0, a - overlap), min(height, b + overlap)) for a, b in zip(cuts[:-1], cuts[1:])]
        differing.append(np.mean(tiled.match_tiled(left, right, params, bands=bands).disparity != untiled.disparity))
    assert differing[0] > differing[1] > differing[2] > differing[3]
    assert differing[2] < 0.03 and differing[3] < 0.002
    assert differing[4] == 0.0


def test_a_budget_below_one_band_is_a_one_line_error_naming_the_smallest_budget_that_works() -> None:
    left, right = textured_pair(40, 90)
    params = SGMParams(max_disp=16)
    with pytest.raises(InputError) as caught:
        match(left, right, params, max_memory="100M")
    message = str(caught.value)
    assert "\n" not in message
    found = re.search(r"too small to match a 90x40 pair with 16 disparities: the smallest budget that works is (\d+)M \(", message)
    assert found, message
    smallest = int(found.group(1)) * 2**20
    assert_identical(match(left, right, params, max_memory=smallest), match(left, right, params))
    with pytest.raises(InputError, match=r"smallest budget that works is " + found.group(1) + "M"):
        match(left, right, params, max_memory=smallest - 2**20)
    # with little overlap and many disparities, bands of one core row are the smallest that works
    left, right = textured_pair(40, 300)
    params = SGMParams(max_disp=256)
    least = tiled.smallest_budget(40, 300, params, overlap=2, image_bytes=2 * left.nbytes)
    bands = tiled.plan_bands(40, 300, params, least, overlap=2, image_bytes=2 * left.nbytes)
    assert len(bands) == 40 and all(band.stop - band.start == 1 for band in bands)
    with pytest.raises(InputError, match=r"smallest budget that works is"):
        tiled.plan_bands(40, 300, params, least - 1, overlap=2, image_bytes=2 * left.nbytes)
    result = tiled.match_tiled(left, right, params, least, overlap=2)
    assert result.disparity.shape == (40, 300) and np.all(np.isfinite(result.disparity))


def test_memory_model() -> None:
    params = SGMParams(max_disp=256)
    # 3 bytes per cost-volume cell dominate: a 6000x4000 pair at 256 disparities needs about 21 GB untiled
    estimate = tiled.estimate_memory(4000, 6000, params)
    assert 3 * 4000 * 6000 * 256 < estimate < 3.6 * 4000 * 6000 * 256
    assert tiled.estimate_memory(4000, 6000, params.replace(cost="ad_census")) > estimate
    assert tiled.estimate_memory(2000, 6000, params) < estimate
    # ... and within 4 GB it is matched in bands whose modelled peak stays within the budget
    budget = 4 * 2**30
    images = 2 * 4000 * 6000 * 3
    bands = tiled.plan_bands(4000, 6000, params, budget, image_bytes=images)
    assert 5 <= len(bands) <= 40
    most = max(band.rows for band in bands)
    assert tiled._tiled_bytes(4000, 6000, params, most, images) <= budget
    assert tiled.smallest_budget(4000, 6000, params, image_bytes=images) < budget


@pytest.mark.parametrize(
    "text,size",
    [
        ("4G", 4 * 2**30),
        ("512M", 512 * 2**20),
        ("2.5GiB", int(2.5 * 2**30)),
        ("1.5GB", 1_500_000_000),
        ("3000000", 3_000_000),
        (" 64 k", 65536),
        (1024, 1024),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert tiled.parse_size(text) == size


@pytest.mark.parametrize("text", ["4X", "", "G", "-1G", "0", "1.2.3M", "4iB"])
def test_parse_size_refuses_other_text(text: str) -> None:
    with pytest.raises(InputError, match="memory size"):
        tiled.parse_size(text)
