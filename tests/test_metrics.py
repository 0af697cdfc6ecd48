"""Disparity metrics against hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pseudolabel.errors import InputError
from pseudolabel.metrics import average_metrics, disparity_metrics


def test_hand_made_errors() -> None:
    gt = np.array([[10.0, 10.0, 100.0, 100.0], [50.0, np.nan, 0.0, 20.0]], dtype=np.float32)
    pred = np.array([[10.5, 12.5, 104.0, 106.0], [53.5, 7.0, 9.0, np.nan]], dtype=np.float32)
    # evaluated: 6 pixels (gt NaN and gt 0 skipped); errors 0.5, 2.5, 4, 6, 3.5, missing
    metrics = disparity_metrics(pred, gt)
    assert metrics["pixels"] == 6
    assert metrics["epe"] == pytest.approx((0.5 + 2.5 + 4 + 6 + 3.5) / 5)
    assert metrics["bad1"] == pytest.approx(100 * 5 / 6)
    assert metrics["bad2"] == pytest.approx(100 * 5 / 6)
    assert metrics["bad3"] == pytest.approx(100 * 4 / 6)  # 4, 6, 3.5 and the missing one
    # D1: > 3 px and > 5 %: 104 vs 100 (4 < 5) no; 106 vs 100 (6 > 5) yes; 53.5 vs 50 (3.5 > 2.5) yes; missing yes
    assert metrics["d1"] == pytest.approx(100 * 3 / 6)
    assert metrics["density"] == pytest.approx(100 * 5 / 6)


def test_mask_restricts_the_evaluation() -> None:
    gt = np.full((2, 3), 20.0, dtype=np.float32)
    pred = gt.copy()
    pred[0, 0] = 30.0
    mask = np.ones_like(gt, dtype=bool)
    assert disparity_metrics(pred, gt, mask)["bad3"] == pytest.approx(100 / 6)
    mask[0, 0] = False
    masked = disparity_metrics(pred, gt, mask)
    assert masked["bad3"] == 0.0 and masked["epe"] == 0.0 and masked["pixels"] == 5


def test_no_ground_truth_gives_nan_and_shape_mismatch_is_an_input_error() -> None:
    result = disparity_metrics(np.ones((2, 2)), np.full((2, 2), np.nan))
    assert math.isnan(result["epe"]) and result["pixels"] == 0
    with pytest.raises(InputError, match="differ in size"):
        disparity_metrics(np.ones((2, 3)), np.ones((3, 2)))


def test_average_weighs_pairs_equally_and_skips_nan() -> None:
    rows = [
        {"epe": 1.0, "bad1": 10.0, "bad2": 5.0, "bad3": 2.0, "d1": 1.0, "density": 100.0},
        {"epe": 3.0, "bad1": 30.0, "bad2": 15.0, "bad3": 6.0, "d1": 3.0, "density": 50.0},
        {"epe": float("nan"), "bad1": float("nan"), "bad2": float("nan"), "bad3": float("nan"), "d1": float("nan"), "density": float("nan")},
    ]
    mean = average_metrics(rows)
    assert mean["epe"] == pytest.approx(2.0) and mean["bad3"] == pytest.approx(4.0) and mean["density"] == pytest.approx(75.0)
    assert mean["pairs"] == 3
