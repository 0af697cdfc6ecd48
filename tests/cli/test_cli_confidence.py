"""``pseudolabel confidence train | score | eval`` and ``pseudolabel labels`` on the shipped fixtures."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from pseudolabel.cli.main import main
from pseudolabel.confidence.checkpoints import load_confidence_checkpoint, shipped_ccnn_path
from pseudolabel.confidence.measures import MEASURES
from pseudolabel.datasets import discover_pairs
from pseudolabel.io import read_disparity, read_image, write_pfm
from pseudolabel.store.proxies import open_proxies
from tests.fixture_proxies import middlebury_proxies

FIXTURES = Path(__file__).parents[1] / "data" / "middlebury"


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def proxies_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Proxies of the Middlebury fixtures (tsukuba, venus: v2; Baby1: 2006), left halves to stay fast."""
    return middlebury_proxies(tmp_path_factory.mktemp("proxies") / "proxies.h5")


@pytest.fixture()
def proxies(proxies_master: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "proxies.h5"
    shutil.copyfile(proxies_master, copy)
    return copy


def _run(*args: str) -> object:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_score_measures_then_rerun_skips_and_eval_plots(proxies: Path, tmp_path: Path) -> None:
    result = _run("confidence", "score", "--proxies", str(proxies), "--model", "none", "--measures", "all")
    assert result.exit_code == 0, result.output
    with open_proxies(proxies) as handle:
        keys = handle.keys()
        assert keys == ["Baby1", "tsukuba", "venus"]
        for key in keys:
            assert handle.list_confidences(key) == sorted(MEASURES)
            values = handle.read(key, ["confidence/pkr"])["confidence/pkr"]
            assert values.dtype == np.float32 and 0 <= values.min() and values.max() <= 1
        stamp = handle.h5["pairs/venus/confidence/pkr"].attrs["measure"]
        assert stamp == "pkr"
    with h5py.File(proxies, "r") as raw:
        before = raw["pairs/venus/confidence/apkr"].id.get_chunk_info(0).byte_offset
    size = proxies.stat().st_size
    # a rerun finds everything up to date and rewrites nothing
    assert _run("confidence", "score", "--proxies", str(proxies), "--model", "none", "--measures", "all").exit_code == 0
    with h5py.File(proxies, "r") as raw:
        assert raw["pairs/venus/confidence/apkr"].id.get_chunk_info(0).byte_offset == before
    assert proxies.stat().st_size == size
    # without a network, the conventional measures are stored only when asked for
    result = _run("confidence", "score", "--proxies", str(proxies), "--model", "none")
    assert result.exit_code == 1 and "pass --measures all" in result.output

    plot = tmp_path / "curves.png"
    report = tmp_path / "auc.json"
    result = _run("confidence", "eval", "--proxies", str(proxies), "--gt", str(FIXTURES), "--plot", str(plot), "--json", str(report))
    assert result.exit_code == 0, result.output
    assert "3 pairs" in result.output and "apkr" in result.output and "/ optimal" in result.output
    image = read_image(plot)
    assert image.ndim == 3 and image.shape[0] > 100
    import json

    per_pair = json.loads(report.read_text())
    assert set(per_pair) == {"Baby1", "tsukuba", "venus"}
    # a measure can never beat the optimal AUC
    for value in per_pair.values():
        assert all(auc >= value["optimal_auc"] - 1e-9 for auc in value["auc"].values())


def test_train_then_score_with_the_model_and_labels(proxies: Path, tmp_path: Path) -> None:
    model = tmp_path / "mine.pt"
    result = _run(
        "confidence",
        "train",
        "--proxies",
        str(proxies),
        "--gt",
        str(FIXTURES),
        "--out",
        str(model),
        "--epochs",
        "2",
        "--steps-per-epoch",
        "5",
        "--batch-size",
        "4",
        "--crop",
        "24",
        "--filters",
        "8",
        "--fc-filters",
        "8",
        "--keys",
        "tsukuba",
        "--keys",
        "Baby1",
    )
    assert result.exit_code == 0, result.output
    assert "epoch 2/2" in result.output and "loss" in result.output
    network, checkpoint = load_confidence_checkpoint(model)
    assert checkpoint["data_summary"]["keys"] == ["Baby1", "tsukuba"]
    assert checkpoint["training_args"]["epochs"] == 2 and checkpoint["training_args"]["labels"] == "gt"
    assert checkpoint["version"] and checkpoint["architecture"] == "ccnn"
    assert checkpoint["training_args"]["standardise_inputs"] is False and checkpoint["training_args"]["pair_weighting"] == "pairs"

    result = _run("confidence", "score", "--proxies", str(proxies), "--model", str(model), "--measures", "pkr", "--device", "cpu")
    assert result.exit_code == 0, result.output
    with open_proxies(proxies) as handle:
        assert handle.list_confidences("venus") == ["mine", "pkr"]
    result = _run("confidence", "score", "--proxies", str(proxies), "--model", str(model), "--name", "other", "--measures", "none")
    assert result.exit_code == 0, result.output

    result = _run("labels", "--proxies", str(proxies), "--tau", "0.4", "--measure", "pkr", "--gt", str(FIXTURES))
    assert result.exit_code == 0, result.output
    assert "bad3 %" in result.output and "venus" in result.output
    with open_proxies(proxies) as handle:
        arrays = handle.read("venus", ["labels", "disparity", "confidence/pkr"])
        kept = arrays["confidence/pkr"] > 0.4
        np.testing.assert_array_equal(np.isfinite(arrays["labels"]), kept)
        np.testing.assert_array_equal(arrays["labels"][kept], arrays["disparity"][kept])
        attrs = handle.h5["pairs/venus/labels"].attrs
        assert float(attrs["tau"]) == 0.4 and attrs["measure"] == "pkr"


def test_train_recipe_options_are_stored_and_their_choices_are_the_library_s(proxies: Path, tmp_path: Path) -> None:
    from pseudolabel.cli.confidence_train import train
    from pseudolabel.confidence.training import PAIR_WEIGHTINGS

    choices = next(option.type.choices for option in train.params if option.name == "pair_weighting")  # type: ignore[attr-defined]
    assert tuple(choices) == PAIR_WEIGHTINGS
    model = tmp_path / "raw.pt"
    small = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--crop", "16", "--filters", "4", "--fc-filters", "4"]
    common = ["confidence", "train", "--proxies", str(proxies), "--gt", str(FIXTURES), "--keys", "tsukuba", *small]
    result = _run(*common, "--out", str(model), "--standardise", "--pair-weighting", "pixels")
    assert result.exit_code == 0, result.output
    args = load_confidence_checkpoint(model)[1]["training_args"]
    assert args["standardise_inputs"] is True and args["pair_weighting"] == "pixels"
    result = _run(*common, "--out", str(tmp_path / "bad.pt"), "--pair-weighting", "rows")
    assert result.exit_code != 0 and "rows" in result.output and not (tmp_path / "bad.pt").exists()


def test_wild_training_uses_no_ground_truth(proxies: Path, tmp_path: Path) -> None:
    model = tmp_path / "wild.pt"
    result = _run(
        "confidence",
        "train",
        "--proxies",
        str(proxies),
        "--labels",
        "wild",
        "--out",
        str(model),
        "--epochs",
        "1",
        "--steps-per-epoch",
        "3",
        "--batch-size",
        "2",
        "--crop",
        "16",
        "--filters",
        "8",
        "--fc-filters",
        "8",
    )
    assert result.exit_code == 0, result.output
    _, checkpoint = load_confidence_checkpoint(model)
    assert checkpoint["training_args"]["labels"] == "wild" and checkpoint["data_summary"]["gt"] is None
    assert 0 < checkpoint["data_summary"]["positive_fraction"] < 1


def test_train_pools_several_proxies_files(proxies: Path, tmp_path: Path) -> None:
    second = tmp_path / "second.h5"
    shutil.copyfile(proxies, second)
    flat = tmp_path / "gt"
    for pair in discover_pairs([FIXTURES]):
        write_pfm(flat / f"{pair.key}.pfm", read_disparity(pair.gt_left, pair.gt_scale))
    tiny = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--crop", "16", "--filters", "8", "--fc-filters", "8"]
    for index, gt_args in enumerate((["--gt", str(FIXTURES)], ["--gt", str(FIXTURES), "--gt", str(flat)])):
        model = tmp_path / f"pooled{index}.pt"
        result = _run(
            "confidence",
            "train",
            "--proxies",
            str(proxies),
            "--proxies",
            str(second),
            *gt_args,
            "--out",
            str(model),
            "--keys",
            "tsukuba",
            "--keys",
            "venus",
            *tiny,
        )
        assert result.exit_code == 0, result.output
        assert "training on 4 pairs" in result.output
        _, checkpoint = load_confidence_checkpoint(model)
        summary = checkpoint["data_summary"]
        assert summary["keys"] == ["tsukuba", "venus", "tsukuba", "venus"]
        assert summary["proxies"] == [str(proxies), str(second)] and summary["gt"] == gt_args[1::2]


def test_ground_truth_found_as_flat_files(proxies: Path, tmp_path: Path) -> None:
    flat = tmp_path / "gt"
    for pair in discover_pairs([FIXTURES]):
        write_pfm(flat / f"{pair.key}.pfm", read_disparity(pair.gt_left, pair.gt_scale))
    result = _run("confidence", "eval", "--proxies", str(proxies), "--gt", str(flat), "--measures", "pkr,msm")
    assert result.exit_code == 0, result.output
    assert "3 pairs" in result.output and "msm" in result.output


def test_default_score_writes_the_shipped_ccnn(proxies: Path) -> None:
    # a wheel or a clone without the shipped weights is a bug: this must fail, never skip
    assert shipped_ccnn_path().is_file(), f"the shipped CCNN {shipped_ccnn_path()} is missing from the package"
    result = _run("confidence", "score", "--proxies", str(proxies), "--keys", "tsukuba", "--measures", "lrc")
    assert result.exit_code == 0, result.output
    with open_proxies(proxies) as handle:
        assert handle.list_confidences("tsukuba") == ["ccnn", "lrc"]
        assert handle.list_confidences("venus") == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["labels", "--tau", "0.5", "--measure", "ccnn"], "have no confidence/ccnn"),
        (["labels", "--tau", "1.5"], "--tau must be in [0, 1)"),
        (["confidence", "train", "--out", "x.pt"], "give --gt GT_DIR"),
        (["confidence", "train", "--gt", "a", "--gt", "b", "--out", "x.pt"], "2 --gt folders for 1 --proxies files"),
        (["confidence", "score", "--measures", "pkr,bogus", "--model", "none"], "unknown measure(s) bogus"),
        (["confidence", "score", "--model", "missing.pt"], "no such confidence model"),
        (["confidence", "score", "--keys", "nothing*"], "--keys 'nothing*': no pair of"),
        (["confidence", "score", "--exclude", "*"], "select none of the 3 pairs"),
        (["confidence", "eval", "--gt", "/nonexistent"], "no such folder"),
    ],
)
def test_errors_are_one_line_and_leave_the_file_intact(proxies: Path, args: list[str], message: str) -> None:
    before = _digest(proxies)
    result = CliRunner().invoke(
        main, [*args[:2], "--proxies", str(proxies), *args[2:]] if args[0] == "confidence" else [args[0], "--proxies", str(proxies), *args[1:]]
    )
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and message in error_lines[0], result.output
    assert _digest(proxies) == before


def test_help_has_examples() -> None:
    for command in (["confidence", "train"], ["confidence", "score"], ["confidence", "eval"], ["labels"]):
        result = CliRunner().invoke(main, [*command, "--help"])
        assert result.exit_code == 0 and "Example" in result.output
