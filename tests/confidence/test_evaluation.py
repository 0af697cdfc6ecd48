"""The Python calls behind ``confidence score | eval`` and ``labels``, their progress reports, the plot, and
the promise that the numpy side of :mod:`pseudolabel.confidence` never imports torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pseudolabel.confidence.evaluation import evaluate_proxies, format_auc_table
from pseudolabel.confidence.files import mean_over_pairs
from pseudolabel.confidence.labelling import format_label_table, label_proxies
from pseudolabel.confidence.scoring import parse_measures, score_proxies
from pseudolabel.confidence.sparsification import DEFAULT_FRACTIONS, curve_area, optimal_auc, optimal_curve
from pseudolabel.errors import InputError
from pseudolabel.io import read_image
from pseudolabel.store.proxies import open_proxies
from pseudolabel.viz.plots import CURVE_COLOURS, sparsification_image, write_sparsification_plot
from tests.fixture_proxies import middlebury_proxies

FIXTURES = Path(__file__).parents[1] / "data" / "middlebury"


class Recorder:
    """A :class:`pseudolabel.progress.Progress` that remembers every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def start(self, label: str, total: int, done: int = 0) -> None:
        self.calls.append(("start", label, str(total)))

    def advance(self, count: int = 1, status: str = "") -> None:
        self.calls.append(("advance", str(count), status))

    def finish(self) -> None:
        self.calls.append(("finish",))


@pytest.fixture(scope="module")
def proxies_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Proxies of two Middlebury fixtures (tsukuba, venus)."""
    return middlebury_proxies(tmp_path_factory.mktemp("proxies") / "proxies.h5", ("tsukuba", "venus"))


@pytest.fixture()
def proxies(proxies_master: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "proxies.h5"
    shutil.copyfile(proxies_master, copy)
    return copy


def test_confidence_modules_do_not_import_torch() -> None:
    code = (
        "import sys, pseudolabel.confidence, pseudolabel.confidence.evaluation, pseudolabel.confidence.scoring, "
        "pseudolabel.confidence.labelling, pseudolabel.confidence.files, pseudolabel.confidence.targets, "
        "pseudolabel.viz.plots; print('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_score_evaluate_and_label_from_python(proxies: Path, tmp_path: Path) -> None:
    recorder = Recorder()
    summary = score_proxies(proxies, measures="pkr,apkr", model=None, progress=recorder)
    assert summary.keys == ["tsukuba", "venus"] and summary.written == ["pkr", "apkr"]
    assert recorder.calls == [("start", "scoring", "2"), ("advance", "1", "tsukuba"), ("advance", "1", "venus"), ("finish",)]
    with open_proxies(proxies) as handle:
        assert handle.list_confidences("venus") == ["apkr", "pkr"]

    plot, report = tmp_path / "curves.svg", tmp_path / "auc.json"
    evaluation = evaluate_proxies(proxies, FIXTURES, keys=["venus"], plot_path=plot, json_path=report)
    assert list(evaluation.results) == ["venus"] and evaluation.skipped == []
    assert plot.read_text().startswith("<svg") and plot.read_text().count("<polyline") == 3
    assert set(json.loads(report.read_text())["venus"]["auc"]) == {"apkr", "pkr"}
    table = format_auc_table(evaluation.results, per_pair=True)
    assert "1 pairs" in table and "apkr" in table and "per pair" in table
    # a conventional measure that is not stored is computed on the fly
    assert set(evaluate_proxies(proxies, FIXTURES, measures=["msm"]).results["tsukuba"]["auc"]) == {"msm"}

    rows = label_proxies(proxies, 0.4, "pkr", gt_dir=FIXTURES)
    assert [key for key, _ in rows] == ["tsukuba", "venus"] and all("bad3" in stats for _, stats in rows)
    assert "bad3 %" in format_label_table(rows, 0.4, "pkr")
    rows = label_proxies(proxies, 0.4, "pkr", exclude=["venus"])
    assert [key for key, _ in rows] == ["tsukuba"] and set(rows[0][1]) == {"density", "tau", "expected_error", "calibrated"}
    assert rows[0][1]["tau"] == 0.4 and rows[0][1]["calibrated"] == 0.0 and 0.0 <= rows[0][1]["expected_error"] <= 0.6


def test_python_calls_check_their_arguments(proxies: Path) -> None:
    with pytest.raises(InputError, match="nothing to score"):
        score_proxies(proxies, measures="none", model=None)
    with pytest.raises(InputError, match="unknown measure"):
        parse_measures(["pkr", "bogus"])
    with pytest.raises(InputError, match="no pair of"):
        label_proxies(proxies, 0.5, "pkr", keys=["nothing*"])
    with pytest.raises(InputError, match="have no confidence/ccnn"):
        label_proxies(proxies, 0.5, "ccnn")


def test_mean_over_pairs_skips_missing_values() -> None:
    assert mean_over_pairs([0.1, float("nan"), 0.3]) == pytest.approx(0.2)
    assert np.isnan(mean_over_pairs([float("nan")])) and np.isnan(mean_over_pairs([]))


def test_optimal_curve_has_the_optimal_auc() -> None:
    curve = optimal_curve(0.2, DEFAULT_FRACTIONS)
    assert curve[0] == 0.0 and curve[-1] == pytest.approx(0.2)
    fine = np.linspace(0.0005, 1.0, 4000)
    assert curve_area(optimal_curve(0.2, fine), fine) == pytest.approx(optimal_auc(0.2), abs=1e-3)


def test_one_plot_as_png_or_svg(tmp_path: Path) -> None:
    curves = {"ccnn": np.linspace(0.0, 0.1, 20), "apkr": np.linspace(0.02, 0.1, 20)}
    image = sparsification_image(curves, DEFAULT_FRACTIONS, aucs={"ccnn": 0.03}, optimal=np.zeros(20), width=460, height=300, scale=2)
    assert image.shape == (600, 920, 3) and image.dtype == np.uint8
    first = tuple(int(CURVE_COLOURS[0][i : i + 2], 16) for i in (1, 3, 5))
    assert np.all(image == first, axis=-1).sum() > 100  # the thick first curve in its fixed colour
    write_sparsification_plot(tmp_path / "plot.png", curves, DEFAULT_FRACTIONS)
    write_sparsification_plot(tmp_path / "plot.svg", curves, DEFAULT_FRACTIONS)
    assert read_image(tmp_path / "plot.png").shape == (600, 920, 3)
    assert (tmp_path / "plot.svg").read_text().count("<polyline") == 2
