"""``confidence train --arch lfn --calibrate``, ``confidence calibrate``, ECE and the reliability diagram of
``confidence eval``, and ``labels --target-error``, on the shipped fixtures."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from pseudolabel.cli.main import main
from pseudolabel.confidence.checkpoints import checkpoint_calibration, load_confidence_checkpoint
from pseudolabel.confidence.labelling import label_proxies
from pseudolabel.errors import InputError
from pseudolabel.store.journal import edit_proxies
from pseudolabel.store.proxies import open_proxies
from tests.fixture_proxies import middlebury_proxies

FIXTURES = Path(__file__).parents[1] / "data" / "middlebury"

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def proxies_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Proxies of tsukuba and venus (Middlebury v2 fixtures)."""
    return middlebury_proxies(tmp_path_factory.mktemp("proxies") / "proxies.h5", ("tsukuba", "venus"))


@pytest.fixture()
def proxies(proxies_master: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "proxies.h5"
    shutil.copyfile(proxies_master, copy)
    return copy


def _run(*args: str) -> object:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_confidence(path: Path, name: str, values: dict[str, np.ndarray], calibrated: str = "isotonic") -> None:
    with edit_proxies(path) as handle:
        for key, array in values.items():
            handle.write(key, f"confidence/{name}", array, attrs={"measure": name, "calibrated": calibrated})


def test_lfn_train_calibrate_score_eval_and_target_error_labels(proxies: Path, tmp_path: Path) -> None:
    model = tmp_path / "lfn.pt"
    small = ["--epochs", "1", "--steps-per-epoch", "3", "--batch-size", "2", "--crop", "16", "--filters", "4", "--fc-filters", "4"]
    result = _run(
        "confidence",
        "train",
        "--proxies",
        str(proxies),
        "--gt",
        str(FIXTURES),
        "--out",
        str(model),
        "--arch",
        "lfn",
        "--calibrate",
        "isotonic",
        *small,
    )
    assert result.exit_code == 0, result.output
    assert "calibrated: isotonic" in result.output
    network, checkpoint = load_confidence_checkpoint(model)
    assert checkpoint["architecture"] == "lfn" and network.inputs == ("disparity", "image", "photometric")
    assert checkpoint_calibration(checkpoint) is not None and checkpoint_calibration(checkpoint).method == "isotonic"

    recalibrated = tmp_path / "lfn_t.pt"
    result = _run(
        "confidence",
        "calibrate",
        "--proxies",
        str(proxies),
        "--gt",
        str(FIXTURES),
        "--model",
        str(model),
        "--method",
        "temperature",
        "--out",
        str(recalibrated),
        "--keys",
        "venus",
    )
    assert result.exit_code == 0, result.output
    assert "temperature calibration fitted on 1 pairs" in result.output and "ECE" in result.output
    assert checkpoint_calibration(load_confidence_checkpoint(recalibrated)[1]).method == "temperature"  # type: ignore[union-attr]

    result = _run("confidence", "score", "--proxies", str(proxies), "--model", str(model), "--measures", "apkr")
    assert result.exit_code == 0, result.output
    with h5py.File(proxies, "r") as handle:
        assert handle["pairs/tsukuba/confidence/lfn"].attrs["calibrated"] == "isotonic"
        assert handle["pairs/tsukuba/confidence/apkr"].attrs.get("calibrated", "none") == "none"

    plot = tmp_path / "curves.svg"
    result = _run("confidence", "eval", "--proxies", str(proxies), "--gt", str(FIXTURES), "--plot", str(plot))
    assert result.exit_code == 0, result.output
    assert "ECE %" in result.output and "expected calibration error" in result.output
    reliability = tmp_path / "curves.reliability.svg"
    assert f"wrote {plot} and {reliability}" in result.output
    assert reliability.read_text().startswith("<svg") and "lfn" in reliability.read_text()

    result = _run("labels", "--proxies", str(proxies), "--measure", "lfn", "--target-error", "20%", "--gt", str(FIXTURES))
    assert result.exit_code == 0, result.output
    assert "tau per pair for an expected error <= 20%" in result.output and "expected err %" in result.output
    with h5py.File(proxies, "r") as handle:
        attrs = handle["pairs/venus/labels"].attrs
        assert attrs["target_error"] == pytest.approx(0.2) and attrs["expected_error"] <= 0.2 and attrs["calibrated"] == "isotonic"
        assert 0.0 <= attrs["tau"] < 1.0
        assert handle.attrs["labels_target_error"] == pytest.approx(0.2) and handle.attrs["labels_expected_error"] <= 0.2


def test_target_error_picks_the_exact_tau_per_pair(proxies: Path) -> None:
    with open_proxies(proxies) as handle:
        shape = {key: (int(handle.pair_attrs(key)["height"]), int(handle.pair_attrs(key)["width"])) for key in ("tsukuba", "venus")}
        disparity = {key: handle.read(key, ["disparity"])["disparity"] for key in shape}
    assert all(np.isfinite(d).all() for d in disparity.values())  # dense proxies: every pixel can be labelled
    values = {}
    for key, (height, width) in shape.items():
        array = np.full((height, width), 0.5, np.float32)
        array.flat[: height * width // 2] = 1.0  # half the pixels certain, half a coin flip
        values[key] = array
    values["venus"].flat[:10] = 0.75
    _write_confidence(proxies, "hand", values)
    rows = dict(label_proxies(proxies, measure="hand", target_error=0.2))
    # tsukuba: the certain half (error 0) plus the 0.5 half gives 0.25 > 0.2, so tau = 0.5 (only the certain half)
    assert rows["tsukuba"]["tau"] == 0.5 and rows["tsukuba"]["expected_error"] == 0.0 and rows["tsukuba"]["density"] == pytest.approx(0.5, abs=1e-3)
    assert rows["venus"]["tau"] == 0.5 and rows["venus"]["expected_error"] == pytest.approx(0.25 * 10 / (shape["venus"][0] * shape["venus"][1] // 2))
    rows = dict(label_proxies(proxies, measure="hand", target_error=0.3))
    assert rows["tsukuba"]["tau"] == 0.0 and rows["tsukuba"]["density"] == 1.0 and rows["tsukuba"]["expected_error"] == pytest.approx(0.25, abs=1e-3)
    with open_proxies(proxies) as handle:
        labels = handle.read("tsukuba", ["labels"])["labels"]
    assert np.isfinite(labels).all()


def test_a_pair_no_tau_brings_to_the_target_gets_no_labels_and_the_others_are_labelled(proxies: Path) -> None:
    from types import SimpleNamespace

    from pseudolabel.learn.adapt_selection import use_stored_labels

    with open_proxies(proxies) as handle:
        shape = {key: (int(handle.pair_attrs(key)["height"]), int(handle.pair_attrs(key)["width"])) for key in ("tsukuba", "venus")}
    values = {key: np.full(size, 0.5, np.float32) for key, size in shape.items()}  # venus: every pixel a coin flip
    values["tsukuba"].flat[: values["tsukuba"].size // 2] = 1.0  # tsukuba: half the pixels certain
    _write_confidence(proxies, "hand", values)
    result = _run("labels", "--proxies", str(proxies), "--measure", "hand", "--target-error", "20%", "--gt", str(FIXTURES))
    assert result.exit_code == 0, result.output
    assert "note: on 1 of 2 pairs (e.g. 'venus') no tau reaches the target: they got no labels (tau -)" in result.output
    venus_row = next(line for line in result.output.splitlines() if line.startswith("venus"))
    # density and ground truth kept 0, no bad-1/2/3 (no labels), no tau, no expected error
    assert venus_row.split()[1:] == ["0.00", "0.00", "-", "-", "-", "-", "-"]
    with open_proxies(proxies) as store:
        labels = {key: store.read(key, ["labels"])["labels"] for key in shape}
    assert np.isnan(labels["venus"]).all() and int(np.isfinite(labels["tsukuba"]).sum()) == values["tsukuba"].size // 2
    with h5py.File(proxies, "r") as handle:
        venus, tsukuba = handle["pairs/venus/labels"].attrs, handle["pairs/tsukuba/labels"].attrs
        assert np.isnan(venus["tau"]) and venus["target_reached"] == 0
        assert tsukuba["tau"] == 0.5 and tsukuba["target_reached"] == 1 and tsukuba["expected_error"] == 0.0
        assert handle.attrs["labels_expected_error"] == 0.0  # over every label of the run: tsukuba's certain half
    # adaptation on these labels names the target, not one tau per pair
    pairs = [SimpleNamespace(key=key, proxy=np.zeros(size, np.float32), confidence=None, valid=None) for key, size in shape.items()]
    assert use_stored_labels(proxies, pairs) == "tau per pair for an expected error <= 20% on confidence/hand"  # type: ignore[arg-type]
    assert pairs[1].confidence.sum() == 0 and pairs[0].confidence.sum() == values["tsukuba"].size // 2


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--measure", "hand", "--target-error", "1%"],
            "--target-error 1%: no tau reaches it on any pair; the lowest expected error of any tau is 50% (pair 'tsukuba')",
        ),
        (["--measure", "hand", "--target-error", "1%", "--tau", "0.5"], "give --tau or --target-error, not both"),
        (["--measure", "hand", "--target-error", "abc"], "--target-error must be a share like 1% or 0.01"),
        (["--measure", "hand", "--target-error", "150%"], "--target-error must be in (0, 1)"),
        (["--measure", "missing", "--target-error", "1%"], "have no confidence/missing"),
    ],
)
def test_target_error_refusals_are_one_line_and_leave_the_file_intact(proxies: Path, args: list[str], message: str) -> None:
    with open_proxies(proxies) as handle:
        values = {
            key: np.full((int(handle.pair_attrs(key)["height"]), int(handle.pair_attrs(key)["width"])), 0.5, np.float32) for key in handle.keys()
        }
    _write_confidence(proxies, "hand", values)
    before = _digest(proxies)
    result = CliRunner().invoke(main, ["labels", "--proxies", str(proxies), *args])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and message in error_lines[0], result.output
    assert _digest(proxies) == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--labels", "wild", "--calibrate", "isotonic", "--out", "x.pt"], "--calibrate needs ground truth"),
        (["train", "--gt", str(FIXTURES), "--arch", "lfn", "--inputs", "disparity,apkr", "--out", "x.pt"], "LFN reads the image"),
        (["train", "--gt", str(FIXTURES), "--inputs", "disparity,bogus", "--out", "x.pt"], "unknown measure(s) bogus"),
        (["calibrate", "--gt", str(FIXTURES), "--model", "missing.pt"], "no such confidence model"),
    ],
)
def test_new_confidence_options_refuse_bad_input(proxies: Path, tmp_path: Path, args: list[str], message: str) -> None:
    before = _digest(proxies)
    result = CliRunner().invoke(main, ["confidence", args[0], "--proxies", str(proxies), *args[1:]])
    assert result.exit_code == 1, result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and message in error_lines[0], result.output
    assert _digest(proxies) == before and not Path("x.pt").exists()


def test_calibration_needs_ground_truth_in_python(proxies: Path, tmp_path: Path) -> None:
    from pseudolabel.confidence.checkpoints import shipped_ccnn_path
    from pseudolabel.confidence.from_proxies import calibrate_confidence_model

    with pytest.raises(InputError, match="--method must be one of isotonic, temperature"):
        calibrate_confidence_model(shipped_ccnn_path(), proxies, FIXTURES, method="platt", out=tmp_path / "x.pt")
    with pytest.raises(InputError, match="calibration needs ground truth"):
        calibrate_confidence_model(shipped_ccnn_path(), proxies, [], out=tmp_path / "x.pt")


def test_isotonic_pair_calibration_is_applied_with_each_pairs_invalid_share(proxies: Path, tmp_path: Path) -> None:
    from pseudolabel.confidence.checkpoints import shipped_ccnn_path
    from pseudolabel.confidence.measures import compute_measure
    from pseudolabel.models.ccnn import ConfidenceScorer

    model = tmp_path / "ccnn_pair.pt"
    result = _run(
        "confidence", "calibrate", "--proxies", str(proxies), "--gt", str(FIXTURES), "--model", str(shipped_ccnn_path()),
        "--method", "isotonic-pair", "--out", str(model),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "isotonic-pair calibration fitted on 2 pairs" in result.output
    network, checkpoint = load_confidence_checkpoint(model)
    calibration = checkpoint_calibration(checkpoint)
    assert calibration is not None and calibration.method == "isotonic-pair" and calibration.pair_terms.shape == (4,)
    result = _run("confidence", "score", "--proxies", str(proxies), "--model", str(model))
    assert result.exit_code == 0, result.output
    raw_scorer = ConfidenceScorer(network, "cpu", precision="float32")
    shares = {}
    with open_proxies(proxies, "r") as handle:
        for key in ("tsukuba", "venus"):
            stored = handle.read(key, ["confidence/ccnn_pair"])["confidence/ccnn_pair"]
            features = handle.read(key, ["disparity", "disparity_right", "valid", "cost_best", "cost_second", "cost_second_local", "cost_mean"])
            params = handle.pair_params(key)
            measures = {name: compute_measure(name, features, params) for name in network.inputs[1:]}
            logits = raw_scorer.logits_from_features(features, params, measures)
            shares[key] = float(1.0 - features["valid"].mean())
            raw = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
            by_hand = calibration.apply(raw, shares[key])
            # the scorer runs in bfloat16 where the CPU has it: close to the hand-made map with this pair's share,
            # and closer than with a share of 0 or 0.6
            error = np.mean(np.abs(stored - by_hand))
            assert error < 0.02
            assert all(error < np.mean(np.abs(stored - calibration.apply(raw, other))) for other in (0.0, 0.6))
    assert shares["tsukuba"] != shares["venus"]
    with pytest.raises(InputError, match="invalid share"):
        calibration.apply(np.array([0.5]))
