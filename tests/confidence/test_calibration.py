"""Calibration (isotonic, temperature, isotonic-pair), ECE and reliability tables, and tau by a target expected error."""

from __future__ import annotations

import numpy as np
import pytest

from pseudolabel.confidence.calibration import (
    ECE_BINS,
    ISOTONIC_RAW_WEIGHT,
    PAIR_MIN_SLOPE,
    Calibration,
    apply_pair_terms,
    calibration_samples,
    ece_from_bins,
    expected_calibration_error,
    fit_calibration,
    fit_isotonic,
    fit_temperature,
    pool_adjacent_violators,
    reliability_bins,
    reliability_curve,
)
from pseudolabel.confidence.labels import expected_error, tau_for_target_error
from pseudolabel.errors import InputError


def _squared_reliability(seed: int, size: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """Confidences uniform in [0, 1] whose true probability of being correct is c ** 2 (over-confident)."""
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.0, 1.0, size).astype(np.float32)
    correct = rng.uniform(0.0, 1.0, size) < confidence.astype(np.float64) ** 2
    return confidence, correct


def test_pool_adjacent_violators_by_hand() -> None:
    starts, values, weights = pool_adjacent_violators(np.array([1.0, 3.0, 2.0, 4.0, 0.0]), np.array([1.0, 1.0, 1.0, 1.0, 3.0]))
    # 3, 2 pool to 2.5 (weight 2); 4 and 0 (weight 3) pool to 1 (weight 4), which pulls in 2.5: 9 / 6 = 1.5 > 1
    np.testing.assert_array_equal(starts, [0, 1])
    np.testing.assert_allclose(values, [1.0, 1.5])
    np.testing.assert_allclose(weights, [1.0, 6.0])
    starts, values, _ = pool_adjacent_violators(np.array([1.0, 3.0, 2.0, 4.0]), np.ones(4))
    np.testing.assert_array_equal(starts, [0, 1, 3])
    np.testing.assert_allclose(values, [1.0, 2.5, 4.0])


def test_isotonic_recovers_a_known_reliability_and_lowers_the_ece() -> None:
    confidence, correct = _squared_reliability(0)
    calibration = fit_isotonic(confidence, correct)
    grid = np.linspace(0.05, 0.95, 19)
    np.testing.assert_allclose(calibration.apply(grid), grid**2, atol=0.03)
    # ranking kept: strictly increasing on any distinct values
    assert np.all(np.diff(calibration.apply(np.linspace(0, 1, 1001))) > 0)
    fresh_confidence, fresh_correct = _squared_reliability(1)
    raw_ece = expected_calibration_error(fresh_confidence, fresh_correct)
    calibrated_ece = expected_calibration_error(calibration.apply(fresh_confidence), fresh_correct)
    assert raw_ece == pytest.approx(1.0 / 6.0, abs=0.01)  # E|c - c^2| for uniform c
    assert calibrated_ece < 0.01 < raw_ece
    mass_raw = expected_calibration_error(fresh_confidence, fresh_correct, scheme="equal-mass")
    mass_calibrated = expected_calibration_error(calibration.apply(fresh_confidence), fresh_correct, scheme="equal-mass")
    assert mass_calibrated < 0.01 < mass_raw


def test_temperature_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(0.0, 3.0, 100_000)
    correct = rng.uniform(size=logits.size) < 1.0 / (1.0 + np.exp(-logits / 2.0))
    confidence = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    calibration = fit_temperature(confidence, correct)
    assert calibration.temperature == pytest.approx(2.0, rel=0.05)
    assert expected_calibration_error(calibration.apply(confidence), correct) < 0.5 * expected_calibration_error(confidence, correct)
    assert fit_calibration("temperature", confidence, correct).temperature == calibration.temperature


def test_calibration_round_trip_and_refusals() -> None:
    confidence, correct = _squared_reliability(3, 5000)
    for method in ("isotonic", "temperature"):
        calibration = fit_calibration(method, confidence, correct)
        again = Calibration.from_dict(calibration.to_dict())
        np.testing.assert_array_equal(again.apply(confidence), calibration.apply(confidence))
        assert again.fitted_on["pixels"] == 5000
    with pytest.raises(InputError, match="unknown calibration method"):
        fit_calibration("platt", confidence, correct)
    with pytest.raises(InputError, match="unknown calibration method"):
        Calibration.from_dict({"method": "platt"})
    with pytest.raises(InputError, match="not a calibration map"):
        Calibration.from_dict({"knots": []})
    with pytest.raises(InputError, match="inconsistent"):
        Calibration.from_dict({"method": "isotonic", "knots": [0.5, 0.2], "values": [0.1, 0.2]})
    with pytest.raises(InputError, match="no pixel"):
        fit_isotonic(np.array([np.nan]), np.array([1.0]))


def test_ece_and_reliability_tables_by_hand() -> None:
    confidence = np.full(10, 0.8, np.float32)
    correct = np.arange(10) < 5  # half correct at confidence 0.8
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.3)
    assert expected_calibration_error(confidence, correct, scheme="equal-mass") == pytest.approx(0.3)
    table = reliability_bins(confidence, correct)
    assert table.shape == (ECE_BINS, 3) and table[16].tolist() == pytest.approx([10, 8, 5])
    # tables of two images add up to the table of both
    other = reliability_bins(np.array([0.1, 1.0]), np.array([False, True]))
    both = reliability_bins(np.r_[confidence, [0.1, 1.0]], np.r_[correct, [False, True]])
    np.testing.assert_allclose(table + other, both)
    assert ece_from_bins(both) == pytest.approx((3.0 + 0.1 + 0.0) / 12)
    mean_confidence, accuracy, share = reliability_curve(both)
    assert accuracy[16] == pytest.approx(0.5) and mean_confidence[2] == pytest.approx(0.1) and share.sum() == pytest.approx(1.0)
    assert np.isnan(ece_from_bins(np.zeros((4, 3))))
    with pytest.raises(InputError, match="equal-width or equal-mass"):
        expected_calibration_error(confidence, correct, scheme="quantile")


def test_calibration_samples_use_pixels_with_ground_truth() -> None:
    confidence = np.array([[0.9, 0.8, 0.7]], np.float32)
    disparity = np.array([[10.0, 10.0, 10.0]], np.float32)
    truth = np.array([[12.0, 20.0, np.nan]], np.float32)
    values, correct = calibration_samples(confidence, disparity, truth)
    np.testing.assert_array_equal(values, np.array([0.9, 0.8], np.float32))
    np.testing.assert_array_equal(correct, [True, False])


# ---------------------------------------------------------------------------------------------
# tau by target error


@pytest.mark.parametrize(
    "values, target, tau, expected, count",
    [
        ([1.0, 0.75, 0.5, 0.25], 0.25, 0.25, 0.25, 3),  # errors 0, .25, .5, .75: running means 0, .125, .25, .375
        ([1.0, 0.75, 0.5, 0.25], 0.2, 0.5, 0.125, 2),
        ([1.0, 0.75, 0.5, 0.25], 0.5, 0.0, 0.375, 4),  # every pixel: tau 0
        ([1.0, 0.75, 0.75, 0.5], 0.1, 0.75, 0.0, 1),  # a tie group is kept or left whole
        ([1.0, 0.75, 0.75, 0.5], 0.2, 0.5, 0.5 / 3, 3),
        ([0.0, 1.0], 0.6, 0.0, 0.0, 1),  # a zero confidence is never above tau >= 0
    ],
)
def test_tau_for_target_error_on_hand_made_confidences(values: list[float], target: float, tau: float, expected: float, count: int) -> None:
    confidence = np.array(values, np.float32).reshape(2, 2) if len(values) == 4 else np.array([values], np.float32)
    chosen, error, labelled = tau_for_target_error(confidence, target)
    assert chosen == tau and error == pytest.approx(expected) and labelled == count
    # the threshold selects exactly the counted pixels, with that expected error
    assert int((confidence > chosen).sum()) == count
    assert expected_error(confidence, chosen) == (pytest.approx(expected), count)


def test_tau_for_target_error_skips_unusable_pixels_and_refuses_the_impossible() -> None:
    confidence = np.array([[0.99, 0.2, 0.9, 0.8]], np.float32)
    usable = np.array([[True, False, True, True]])
    tau, error, count = tau_for_target_error(confidence, 0.11, usable)
    assert count == 3 and tau == 0.0 and error == pytest.approx((0.01 + 0.1 + 0.2) / 3, abs=1e-6)
    tau, error, count = tau_for_target_error(confidence, 0.1, usable)  # the 0.8 pixel would bring it to 0.103
    assert count == 2 and tau == np.float32(0.8) and error == pytest.approx(0.055, abs=1e-6)
    with pytest.raises(InputError, match=r"--target-error 1%: no tau reaches it; the lowest expected error of any tau is 50%"):
        tau_for_target_error(np.full((3, 3), 0.5, np.float32), 0.01)
    with pytest.raises(InputError, match=r"--target-error must be in \(0, 1\)"):
        tau_for_target_error(confidence, 1.5)
    with pytest.raises(InputError, match="no pixel can be labelled"):
        tau_for_target_error(confidence, 0.1, np.zeros_like(usable))


def _pairs_of_known_difficulty(seed: int, shares: tuple[float, ...], size: int = 60_000) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per pair: confidences uniform in [0, 1] whose true probability of being correct is
    ``sigmoid(logit(c) + 1 - 6 s)``: the same confidence is right less often on a harder pair (larger ``s``)."""
    rng = np.random.default_rng(seed)
    confidences, correct = [], []
    for share in shares:
        confidence = rng.uniform(0.01, 0.99, size)
        truth = 1.0 / (1.0 + np.exp(-(np.log(confidence / (1 - confidence)) + 1.0 - 6.0 * share)))
        confidences.append(confidence.astype(np.float32))
        correct.append(rng.uniform(size=size) < truth)
    return confidences, correct


def test_pair_terms_by_hand() -> None:
    terms = np.array([2.0, 0.5, -1.0, 1.0])
    # slope 2 + 1 * 0.25 = 2.25, offset 0.5 - 1 * 0.25 = 0.25, logit(0.8) = ln 4
    expected = 1.0 / (1.0 + np.exp(-(2.25 * np.log(4.0) + 0.25)))
    assert apply_pair_terms(terms, np.array([0.8]), 0.25)[0] == pytest.approx(expected, rel=1e-12)
    # the slope never falls below PAIR_MIN_SLOPE: a = 0.1, h = -1, s = 0.5 would give -0.4
    flat = apply_pair_terms(np.array([0.1, 0.0, 0.0, -1.0]), np.array([0.2, 0.8]), 0.5)
    assert flat[1] > flat[0] and flat[1] == pytest.approx(1.0 / (1.0 + np.exp(-PAIR_MIN_SLOPE * np.log(4.0))), rel=1e-12)


def test_isotonic_pair_follows_the_difficulty_of_each_pair() -> None:
    shares = (0.05, 0.2, 0.35, 0.5)
    confidences, correct = _pairs_of_known_difficulty(0, shares)
    calibration = fit_calibration("isotonic-pair", confidences, correct, list(shares))
    assert calibration.method == "isotonic-pair" and calibration.reads_pair and calibration.fitted_on["pairs"] == 4
    plain = fit_calibration("isotonic", confidences, correct)
    # on fresh pairs of the easiest and the hardest kind, one pooled map is off, the pair terms are not
    for share in (0.05, 0.5):
        fresh, hits = _pairs_of_known_difficulty(1, (share,))
        paired_ece = expected_calibration_error(calibration.apply(fresh[0], share), hits[0])
        plain_ece = expected_calibration_error(plain.apply(fresh[0]), hits[0])
        assert paired_ece < 0.015 and plain_ece > 0.06, (share, paired_ece, plain_ece)
    # within a pair the map keeps the ranking (strictly inside the fitted range); harder pairs get less confidence
    grid = np.linspace(0.0, 1.0, 2001)
    assert np.all(np.diff(calibration.apply(grid, 0.3).astype(np.float64)) >= 0)
    inside = np.linspace(0.02, 0.98, 2001)
    assert np.all(np.diff(calibration.apply(inside, 0.3).astype(np.float64)) > 0)
    # the fitted difficulty term is the one the pairs were drawn with (-6 per unit of invalid share)
    assert calibration.pair_terms[2] == pytest.approx(-6.0, abs=0.5)
    assert np.all(calibration.apply(grid[1:-1], 0.5) < calibration.apply(grid[1:-1], 0.05))
    # stored and read back, it gives the same values; without the pair's share it refuses
    again = Calibration.from_dict(calibration.to_dict())
    np.testing.assert_array_equal(again.apply(grid, 0.3), calibration.apply(grid, 0.3))
    with pytest.raises(InputError, match="invalid share"):
        calibration.apply(grid)
    with pytest.raises(InputError, match="invalid share"):
        fit_calibration("isotonic-pair", confidences, correct)
    with pytest.raises(InputError, match="4 pair terms"):
        Calibration.from_dict({**calibration.to_dict(), "pair_terms": [1.0, 0.0]})
    with pytest.raises(InputError, match="4 pair terms"):
        Calibration.from_dict({**plain.to_dict(), "pair_terms": [1.0, 0.0, 0.0, 0.0]})


def test_isotonic_pair_on_pairs_of_one_difficulty_stays_finite() -> None:
    # one share for every pair: the pair terms cannot be told from the constant; the ridge keeps them near 0,
    # so other shares change little, and a pair without any usable pixel is skipped
    confidences, correct = _pairs_of_known_difficulty(2, (0.2, 0.2), size=5000)
    calibration = fit_calibration("isotonic-pair", [*confidences, np.array([np.nan])], [*correct, np.array([1.0])], [0.2, 0.2, 0.7])
    assert np.all(np.isfinite(calibration.pair_terms)) and abs(calibration.pair_terms[2]) < 0.1 and abs(calibration.pair_terms[3]) < 0.1
    grid = np.linspace(0.05, 0.95, 19)
    assert np.abs(calibration.apply(grid, 0.6) - calibration.apply(grid, 0.2)).max() < 0.03
    with pytest.raises(InputError, match="no pixel"):
        fit_calibration("isotonic-pair", [np.array([np.nan])], [np.array([1.0])], [0.3])


def test_shipped_maps_on_a_whole_image_are_the_exact_maps() -> None:
    """Both shipped calibrations on an image: the isotonic map and the pair terms computed by hand, NaN kept,
    the order of the pixels kept (the wild CCNN's map is steep next to 1, where its confidences crowd)."""
    import torch

    from pseudolabel.confidence.checkpoints import shipped_ccnn_path

    rng = np.random.default_rng(5)
    image = rng.uniform(size=(300, 301)).astype(np.float32)
    image[:, :40] = 1.0 - rng.uniform(0, 1e-3, size=(300, 40))  # the steep end near 1
    image[0, 0] = np.nan
    for path in (shipped_ccnn_path(), shipped_ccnn_path().with_name("ccnn_wild.pt")):
        shipped = Calibration.from_dict(torch.load(path, map_location="cpu", weights_only=False)["calibration"])
        assert shipped.method == "isotonic-pair"
        for share in (0.02, 0.17, 0.6):
            calibrated = shipped.apply(image, share)
            raw = np.clip(image.astype(np.float64), 0.0, 1.0)
            mapped = (1.0 - ISOTONIC_RAW_WEIGHT) * np.interp(raw, shipped.knots, shipped.values) + ISOTONIC_RAW_WEIGHT * raw
            by_hand = np.clip(apply_pair_terms(shipped.pair_terms, mapped, share), 0.0, 1.0).astype(np.float32)
            assert calibrated.dtype == np.float32 and calibrated.shape == image.shape and np.isnan(calibrated[0, 0])
            np.testing.assert_array_equal(calibrated, by_hand)
            order = np.argsort(image[1:].ravel(), kind="stable")
            assert np.all(np.diff(calibrated[1:].ravel()[order].astype(np.float64)) >= 0)
