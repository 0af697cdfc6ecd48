"""Sparsification curves and AUC against closed-form and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pseudolabel.confidence.labels import label_statistics, threshold_labels
from pseudolabel.confidence.sparsification import (
    DEFAULT_FRACTIONS,
    coverage_at_error,
    curve_area,
    error_mask,
    image_evaluation,
    optimal_auc,
    sparsification_auc,
    sparsification_curve,
)
from pseudolabel.errors import InputError


def _random_bad(error_rate: float, size: int = 20000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bad = np.zeros(size, dtype=bool)
    bad[rng.choice(size, int(round(error_rate * size)), replace=False)] = True
    return bad


def test_default_fractions_are_five_percent_steps() -> None:
    assert len(DEFAULT_FRACTIONS) == 20
    assert DEFAULT_FRACTIONS[0] == pytest.approx(0.05) and DEFAULT_FRACTIONS[-1] == pytest.approx(1.0)


def test_optimal_auc_closed_form() -> None:
    assert optimal_auc(0.0) == 0.0
    assert optimal_auc(1.0) == 1.0
    assert optimal_auc(0.5) == pytest.approx(0.5 + 0.5 * math.log(0.5))
    assert optimal_auc(0.2) == pytest.approx(0.2 + 0.8 * math.log(0.8))


@pytest.mark.parametrize("error_rate", [0.05, 0.2, 0.37])
def test_constant_measure_gives_the_error_rate(error_rate: float) -> None:
    bad = _random_bad(error_rate)
    auc = sparsification_auc(np.full(bad.shape, 0.7), bad)
    assert auc == pytest.approx(bad.mean(), abs=1e-12)
    curve = sparsification_curve(np.zeros(bad.shape), bad)
    np.testing.assert_allclose(curve, bad.mean())


@pytest.mark.parametrize("error_rate", [0.1, 0.25, 0.4])
def test_perfect_measure_gives_the_optimal_auc(error_rate: float) -> None:
    bad = _random_bad(error_rate, seed=1)
    rng = np.random.default_rng(2)
    # correct pixels all more confident than wrong ones, random order inside each group
    confidence = np.where(bad, rng.uniform(0, 0.5, bad.shape), rng.uniform(0.5, 1, bad.shape))
    fine = np.linspace(0.0005, 1.0, 2000)
    assert sparsification_auc(confidence, bad, fractions=fine) == pytest.approx(optimal_auc(error_rate), abs=2e-4)
    # the standard 5% sampling is a trapezoid approximation of the same concave curve (error < h^2 / 12 * |f'| range)
    assert sparsification_auc(confidence, bad) == pytest.approx(optimal_auc(error_rate), abs=3e-3)
    # the worst measure (wrong pixels first): 1 up to eps, then eps / p -> eps * (1 - ln eps)
    worst = error_rate * (1 - math.log(error_rate))
    assert sparsification_auc(-confidence, bad, fractions=fine) == pytest.approx(worst, abs=2e-4)


def test_hand_computed_curve_and_area() -> None:
    confidence = np.array([0.9, 0.8, 0.7, 0.6])
    bad = np.array([False, True, False, True])
    fractions = [0.25, 0.5, 0.75, 1.0]
    curve = sparsification_curve(confidence, bad, fractions=fractions)
    np.testing.assert_allclose(curve, [0, 1 / 2, 1 / 3, 2 / 4])
    # 0.25 * 0 + 0.25 * (0 + 1/2) / 2 + 0.25 * (1/2 + 1/3) / 2 + 0.25 * (1/3 + 1/2) / 2
    assert curve_area(curve, fractions) == pytest.approx(0.0625 + 2 * 0.25 * (1 / 2 + 1 / 3) / 2)


def test_ties_count_in_expectation() -> None:
    confidence = np.array([1.0, 1.0, 0.0, 0.0])
    bad = np.array([True, False, False, False])
    curve = sparsification_curve(confidence, bad, fractions=[0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve, [0.5, 0.5, 1 / 3, 1 / 4])
    # memory order does not matter
    curve_swapped = sparsification_curve(confidence[::-1].copy(), bad[::-1].copy(), fractions=[0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve_swapped, curve)


def test_error_mask_and_image_evaluation() -> None:
    disparity = np.array([[1.0, 5.0, 9.0], [2.0, 2.0, 2.0]], np.float32)
    ground_truth = np.array([[1.0, 1.0, np.nan], [5.5, 2.0, 0.0]], np.float32)
    bad, known = error_mask(disparity, ground_truth)
    np.testing.assert_array_equal(known, [[True, True, False], [True, True, False]])
    np.testing.assert_array_equal(bad, [[False, True, False], [True, False, False]])
    evaluation = image_evaluation({"const": np.ones_like(disparity)}, disparity, ground_truth)
    assert evaluation["error_rate"] == pytest.approx(0.5)
    assert evaluation["pixels"] == 4
    assert evaluation["auc"]["const"] == pytest.approx(0.5)
    assert evaluation["optimal_auc"] == pytest.approx(optimal_auc(0.5))


def test_labels_threshold_and_statistics() -> None:
    disparity = np.array([[1.0, 5.0, 9.0, 4.0]], np.float32)
    confidence = np.array([[0.9, 0.6, 0.2, 0.5]], np.float32)
    labels = threshold_labels(disparity, confidence, tau=0.5)
    np.testing.assert_array_equal(np.isfinite(labels), [[True, True, False, False]])
    ground_truth = np.array([[2.5, 1.5, 9.0, np.nan]], np.float32)
    stats = label_statistics(labels, ground_truth)
    assert stats["density"] == pytest.approx(0.5)
    assert stats["gt_coverage"] == pytest.approx(2 / 3)
    # errors of the two labelled pixels: 1.5 and 3.5
    assert stats["bad1"] == pytest.approx(1.0) and stats["bad2"] == pytest.approx(0.5) and stats["bad3"] == pytest.approx(0.5)
    with pytest.raises(InputError, match="--tau"):
        threshold_labels(disparity, confidence, tau=1.5)


def test_coverage_at_error_hand_computed() -> None:
    confidence = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    bad = np.array([False, False, True, False, False])
    assert coverage_at_error(confidence, bad, target=0.0) == pytest.approx(0.4)
    assert coverage_at_error(confidence, bad, target=0.19) == pytest.approx(0.4)  # 1/4 and 1/5 are too many, 1/3 too
    assert coverage_at_error(confidence, bad, target=0.2) == pytest.approx(1.0)
    # the pixel without ground truth is left out of the share and of the ranking
    known = np.array([True, True, True, True, False])
    assert coverage_at_error(confidence, bad, known, target=0.25) == pytest.approx(1.0)
    assert coverage_at_error(confidence, bad, known, target=0.24) == pytest.approx(0.5)


def test_coverage_at_error_compares_rates_not_rounded_products() -> None:
    # 29 wrong of 100 at a target of 0.29: 0.29 * 100 is 28.999... in floating point, the rate is exactly 0.29
    bad = np.zeros(100, dtype=bool)
    bad[-29:] = True
    assert coverage_at_error(np.linspace(1.0, 0.0, 100), bad, target=0.29) == pytest.approx(1.0)


def test_coverage_at_error_keeps_ties_together_and_never_keeps_minus_infinity() -> None:
    confidence = np.array([1.0, 1.0, 0.5])
    bad = np.array([False, True, False])
    assert coverage_at_error(confidence, bad, target=0.4) == pytest.approx(1.0)  # the tied pair alone is 1/2
    assert coverage_at_error(confidence, bad, target=0.3) == 0.0
    never = np.array([0.9, 0.8, -np.inf])
    assert coverage_at_error(never, np.zeros(3, dtype=bool), target=0.0) == pytest.approx(2 / 3)
    assert coverage_at_error(np.array([0.9, np.nan, 0.8]), np.zeros(3, dtype=bool), target=0.0) == pytest.approx(2 / 3)
    assert np.isnan(coverage_at_error(confidence, bad, np.zeros(3, dtype=bool)))


def test_coverage_at_error_matches_every_threshold_tried() -> None:
    rng = np.random.default_rng(5)
    for _ in range(20):
        confidence = np.round(rng.random((13, 7)), 1)  # many ties
        bad = rng.random((13, 7)) < rng.uniform(0.0, 0.3)
        known = rng.random((13, 7)) < 0.8
        target = float(rng.choice([0.0, 0.05, 0.1, 0.2]))
        best = 0.0
        for tau in np.unique(confidence[known]):
            kept = known & (confidence >= tau)
            if bad[kept].sum() <= target * kept.sum():
                best = max(best, kept.sum() / known.sum())
        assert coverage_at_error(confidence, bad, known, target) == pytest.approx(best)
