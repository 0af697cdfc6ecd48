"""The HTML report's reliability diagram and expected calibration error, next to the sparsification curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pseudolabel.io import read_disparity
from pseudolabel.store.proxies import open_proxies
from pseudolabel.viz.report import proxy_scene, render_report
from tests.cli.test_demo import TSUKUBA, _proxies_with_labels


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tsukuba with confidence/apkr and confidence/lrc and labels."""
    return _proxies_with_labels(tmp_path_factory.mktemp("report") / "proxies.h5")


def _ece_by_hand(confidence: np.ndarray, disparity: np.ndarray, ground_truth: np.ndarray) -> float:
    """sum over 20 bins of width 0.05 of |correct pixels - summed confidence|, over the pixels with ground truth."""
    known = np.isfinite(ground_truth) & (ground_truth > 0)
    values = confidence[known].astype(np.float64)
    correct = np.abs(disparity[known] - ground_truth[known]) <= 3.0
    bins = np.minimum((values * 20).astype(int), 19)
    gaps = [abs(correct[bins == b].sum() - values[bins == b].sum()) for b in range(20)]
    return float(sum(gaps) / values.size)


def test_report_shows_the_reliability_diagram_and_the_ece_of_each_measure(scored: Path) -> None:
    with open_proxies(scored) as proxies:
        section = proxy_scene(proxies, "tsukuba", measure="apkr")
        arrays = proxies.read("tsukuba", ["disparity", "confidence/apkr", "confidence/lrc"])
    ground_truth = read_disparity(TSUKUBA / "groundtruth.png", 16.0)
    ground_truth[ground_truth <= 0] = np.nan
    eces = {name: _ece_by_hand(arrays[f"confidence/{name}"], arrays["disparity"], ground_truth) for name in ("apkr", "lrc")}
    # Real, distinct miscalibrations: lrc is 1 on most pixels, far more than are within 3 px at 32 disparities.
    assert 0.01 < eces["apkr"] < 0.9 and 0.01 < eces["lrc"] < 0.9 and abs(eces["apkr"] - eces["lrc"]) > 0.005

    assert len(section.svgs) == 2
    curves, reliability = section.svgs
    assert 'aria-label="sparsification of the SGM proxies: tsukuba"' in curves
    assert 'aria-label="reliability: tsukuba"' in reliability
    for name, ece in eces.items():
        assert f">{name} {100 * ece:.2f}<" in reliability  # the legend of the diagram
    html = render_report("r", [section])
    assert html.index("sparsification of the SGM proxies") < html.index("reliability: tsukuba")  # next to the curves
    assert f"apkr {100 * eces['apkr']:.2f}%, lrc {100 * eces['lrc']:.2f}%" in html


def test_report_has_no_reliability_diagram_without_ground_truth(scored: Path) -> None:
    with open_proxies(scored) as proxies:
        section = proxy_scene(proxies, "tsukuba", measure="apkr", ground_truth=None)
    assert section.svgs == [] and section.plot_notes == []
    assert "calibration" not in render_report("r", [section])


@pytest.mark.parametrize(
    "attrs, caption",
    [
        ({"tau": 0.9, "measure": "ccnn"}, "confidence/ccnn > 0.9"),
        ({"tau": 0.912345, "measure": "ccnn", "target_error": 0.01}, "confidence/ccnn > 0.9123 (tau per pair for an expected error <= 1%)"),
        (
            {"tau": float("nan"), "measure": "ccnn", "target_error": 0.01},
            "no labels: no tau on confidence/ccnn reaches the target (tau per pair for an expected error <= 1%)",
        ),
        ({"measure": "ccnn"}, ""),
    ],
)
def test_labels_caption_names_a_fixed_tau_a_target_and_a_pair_without_labels(attrs: dict[str, object], caption: str) -> None:
    from pseudolabel.viz.report import _labels_caption

    assert _labels_caption(attrs) == caption
