"""``pseudolabel.viz.show.render_proxies`` (the library behind ``pseudolabel show``) and the report's
readers of a pair's files: selection, progress, notes, and nothing written on an error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pseudolabel.errors import InputError
from pseudolabel.io import read_disparity
from pseudolabel.metrics import average_metrics
from pseudolabel.viz.colour import darken
from pseudolabel.viz.report import REPORT_METRICS, read_pair_ground_truth
from pseudolabel.viz.show import SHOW_REPORT_LIMIT, picture_stem, render_proxies
from tests.cli.test_demo import TSUKUBA, _proxies_with_labels


@pytest.fixture(scope="module")
def two_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tsukuba and venus, SGM only (no confidence, no labels)."""
    return _proxies_with_labels(tmp_path_factory.mktemp("two") / "proxies.h5", keys=("tsukuba", "venus"), scored=False)


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def start(self, label: str, total: int, done: int = 0) -> None:
        self.calls.append(("start", label, total, done))

    def advance(self, count: int = 1, status: str = "") -> None:
        self.calls.append(("advance", count, status))

    def finish(self) -> None:
        self.calls.append(("finish",))


def test_render_proxies_selects_keys_and_reports_progress(two_pairs: Path, tmp_path: Path) -> None:
    recorder = _Recorder()
    summary = render_proxies(two_pairs, tmp_path / "all", progress=recorder)
    assert summary.keys == ["tsukuba", "venus"] and summary.shown == 2
    assert recorder.calls == [("start", "pictures", 2, 0), ("advance", 1, "tsukuba"), ("advance", 1, "venus"), ("finish",)]
    assert [path.name for path in summary.pictures] == ["tsukuba_disparity.png", "tsukuba_error.png", "venus_disparity.png", "venus_error.png"]
    assert summary.report == tmp_path / "all" / "index.html" and summary.report.is_file()
    assert summary.warnings == [] and summary.notes == []

    only = render_proxies(two_pairs, tmp_path / "one", include=["v*"], use_gt=False)
    assert only.keys == ["venus"] and [path.name for path in only.pictures] == ["venus_disparity.png"]
    rest = render_proxies(two_pairs, tmp_path / "rest", exclude=["venus"])
    assert rest.keys == ["tsukuba"]
    assert sorted(path.name for path in (tmp_path / "rest").iterdir()) == ["index.html", "tsukuba_disparity.png", "tsukuba_error.png"]


def test_render_proxies_errors_write_nothing(two_pairs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(InputError, match="pseudolabel inspect"):
        render_proxies(two_pairs, out, include=["kitti*"])
    with pytest.raises(InputError, match="select none"):
        render_proxies(two_pairs, out, exclude=["*"])
    with pytest.raises(InputError, match="pseudolabel sgm"):
        render_proxies(tmp_path / "missing.h5", out)
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="not a folder"):
        render_proxies(two_pairs, tmp_path / "file")
    assert not out.exists()


def test_render_proxies_notes_a_missing_measure(tmp_path: Path) -> None:
    path = _proxies_with_labels(tmp_path / "scored.h5", keys=("venus",))
    summary = render_proxies(path, tmp_path / "out", measure="ccnn", use_gt=False)
    assert len(summary.warnings) == 1 and "confidence/ccnn" in summary.warnings[0] and "venus" in summary.warnings[0]
    assert [p.name for p in summary.pictures] == ["venus_disparity.png", "venus_confidence.png", "venus_labels.png"]


def test_picture_stem_and_limit() -> None:
    assert picture_stem("training/000046_10") == "training_000046_10"
    assert picture_stem("a b//c.d") == "a_b_c.d" and picture_stem("///") == "pair"
    assert SHOW_REPORT_LIMIT == 50


def test_read_pair_ground_truth_finds_the_file_next_to_the_proxies(tmp_path: Path) -> None:
    ground_truth_path = TSUKUBA / "groundtruth.png"
    attrs = {"key": "tsukuba", "gt_left": "groundtruth.png", "gt_scale": 16.0}
    fake_proxies = TSUKUBA / "proxies.h5"  # need not exist: only its folder is used
    expected = read_disparity(ground_truth_path, 16.0)
    ground_truth = read_pair_ground_truth(attrs, fake_proxies, expected.shape)
    assert ground_truth is not None and ground_truth.dtype == np.float32
    assert np.array_equal(np.isnan(ground_truth), ~(expected > 0))
    assert read_pair_ground_truth({"key": "x", "gt_left": "missing.png"}, fake_proxies, expected.shape) is None
    assert read_pair_ground_truth({"key": "x"}, fake_proxies, expected.shape) is None
    with pytest.raises(InputError, match="size"):
        read_pair_ground_truth(attrs, fake_proxies, (10, 10))


def test_report_means_are_average_metrics_skipping_nan() -> None:
    rows = [
        {"density": 50.0, "bad3": 10.0, "epe": 1.0, "d1": 5.0, "pixels": 10.0},
        {"density": 100.0, "bad3": float("nan"), "epe": 3.0, "d1": 7.0, "pixels": 0.0},
        {"density": 0.0, "epe": float("nan")},
    ]
    average = average_metrics(rows)
    means = {name: average[name] for name in REPORT_METRICS}
    assert list(means) == ["density", "bad3", "epe", "d1"]
    assert means == {"density": 50.0, "bad3": 10.0, "epe": 2.0, "d1": 6.0}


def test_darken_keeps_a_fraction_of_the_masked_pixels() -> None:
    picture = np.full((2, 3, 3), 200, np.uint8)
    mask = np.array([[True, False, False], [False, False, True]])
    darker = darken(picture, mask)
    assert darker.dtype == np.uint8 and tuple(darker[0, 0]) == (70, 70, 70) and tuple(darker[0, 1]) == (200, 200, 200)
    assert tuple(darker[1, 2]) == (70, 70, 70) and picture[0, 0, 0] == 200  # the input is unchanged
    assert tuple(darken(picture, mask, factor=0.5)[0, 0]) == (100, 100, 100)
    with pytest.raises(InputError):
        darken(picture, np.zeros((3, 3), bool))
