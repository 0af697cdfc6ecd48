"""Agreement labels (``--labels wild-agree`` / ``wild-soft``): independent matchers vote on each proxy pixel."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pseudolabel.cli.main import main
from pseudolabel.confidence.images import pair_gray_images
from pseudolabel.confidence.measures import MEASURES, compute_measure
from pseudolabel.confidence.targets import agreement_targets, wild_targets
from pseudolabel.confidence.teachers import TEACHERS, parse_teachers, teacher_disparities
from pseudolabel.datasets import discover_pairs, read_ground_truth
from pseudolabel.errors import InputError
from pseudolabel.store.proxies import open_proxies
from tests.fixture_proxies import MIDDLEBURY, middlebury_proxies

pytestmark = pytest.mark.usefixtures("single_torch_thread")

NAN = np.nan


def test_one_teacher_votes_right_within_1_px_wrong_beyond_3_px_and_abstains_between() -> None:
    disparity = np.array([[10.0, 10.0, 10.0, 10.0, 10.0, NAN]], dtype=np.float32)
    teacher = np.array([[10.0, 10.9, 12.0, 13.5, NAN, 10.0]], dtype=np.float32)
    for rule in ("hard", "soft"):
        targets = agreement_targets(disparity, {"sgbm": teacher}, rule=rule)
        assert targets.dtype == np.float32
        # agrees, agrees (0.9 px), abstains (2 px), disagrees (3.5 px), no teacher, no proxy
        np.testing.assert_array_equal(targets, [[1.0, 1.0, NAN, 0.0, NAN, NAN]])


def test_hard_needs_every_voter_for_a_positive_and_any_for_a_negative() -> None:
    disparity = np.full((1, 6), 20.0, dtype=np.float32)
    sgbm = np.array([[20.0, 20.0, 20.0, 30.0, 20.0, 30.0]], dtype=np.float32)
    bm = np.array([[20.5, NAN, 26.0, 30.0, 20.0, 30.0]], dtype=np.float32)
    wild = np.array([[1.0, 1.0, 1.0, 1.0, NAN, 0.0]], dtype=np.float32)
    hard = agreement_targets(disparity, {"sgbm": sgbm, "bm": bm}, wild, rule="hard")
    # all three right; bm abstains (no positive); bm says wrong; both matchers wrong against a wild positive;
    # the wild labels abstain (no positive); everyone wrong
    np.testing.assert_array_equal(hard, [[1.0, NAN, 0.0, 0.0, NAN, 0.0]])
    soft = agreement_targets(disparity, {"sgbm": sgbm, "bm": bm}, wild, rule="soft")
    np.testing.assert_allclose(soft, [[1.0, 1.0, 2.0 / 3.0, 1.0 / 3.0, 1.0, 0.0]], rtol=1e-6)
    confirm = agreement_targets(disparity, {"sgbm": sgbm, "bm": bm}, wild, rule="confirm")
    # negatives only where the wild labels say wrong
    np.testing.assert_array_equal(confirm, [[1.0, NAN, NAN, NAN, NAN, 0.0]])


def test_custom_thresholds() -> None:
    disparity = np.array([[5.0, 5.0, 5.0]], dtype=np.float32)
    teacher = np.array([[5.4, 6.0, 7.5]], dtype=np.float32)
    targets = agreement_targets(disparity, {"t": teacher}, agree=0.5, disagree=2.0)
    np.testing.assert_array_equal(targets, [[1.0, NAN, 0.0]])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rule": "median"}, "rule must be one of hard, soft, confirm"),
        ({"rule": "confirm"}, "rule confirm needs the wild labels"),
        ({"agree": 4.0}, "must be in [0, the disagreement threshold"),
        ({"teachers": {}}, "at least one teacher"),
        ({"teachers": {"sgbm": np.zeros((2, 3), np.float32)}}, "does not match the proxy disparity (2, 2)"),
        ({"wild": np.zeros((3, 2), np.float32)}, "wild labels of shape (3, 2)"),
    ],
)
def test_agreement_targets_refuse_bad_input(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"disparity": np.zeros((2, 2), np.float32), "teachers": {"sgbm": np.zeros((2, 2), np.float32)}, **kwargs}
    with pytest.raises(InputError) as raised:
        agreement_targets(**arguments)  # type: ignore[arg-type]
    assert message in str(raised.value)


def test_parse_teachers() -> None:
    assert parse_teachers("sgbm, bm") == ["sgbm", "bm"] and set(TEACHERS) >= {"sgbm", "bm", "sgm-ad"}
    for text, message in (("", "at least one teacher"), ("sgbm,nope", "unknown teacher 'nope'"), ("bm,bm", "names a teacher twice")):
        with pytest.raises(InputError) as raised:
            parse_teachers(text)
        assert message in str(raised.value)


def test_targets_module_imports_no_torch() -> None:
    code = "import sys, pseudolabel.confidence.targets, pseudolabel.confidence.teachers; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.fixture(scope="module")
def fixture_proxies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Proxies of tsukuba, venus and Baby1 (max_disp 32)."""
    return middlebury_proxies(tmp_path_factory.mktemp("teachers") / "proxies.h5")


def test_teachers_find_the_ground_truth_and_add_negatives_where_they_disagree(fixture_proxies: Path) -> None:
    """On the three fixture pairs: every teacher answers on most pixels and is mostly right there (bad-3 0.6-7.6%);
    wild-agree (wild labels and StereoSGBM) keeps only wild positives and adds negatives where StereoSGBM disagrees."""
    fixtures = {pair.key: pair for pair in discover_pairs([MIDDLEBURY])}
    counts = {"wrong valid": 0, "wild": 0, "wild-agree": 0, "extra negatives": 0, "extra wrong": 0}
    with open_proxies(fixture_proxies) as proxies:
        for key in proxies.keys():
            features, params = proxies.read(key), proxies.pair_params(key)
            gt = read_ground_truth(fixtures[key].gt_left, fixtures[key].gt_scale, features["disparity"].shape, key)
            known = np.isfinite(gt) & (gt > 0) & (gt < params.max_disp - 1)  # Baby1 goes beyond max_disp 32
            votes = teacher_disparities(pair_gray_images(fixture_proxies, proxies.pair_attrs(key), key), params, list(TEACHERS))
            for name, disparity in votes.items():
                answered = known & np.isfinite(disparity)
                assert answered.sum() > 0.3 * known.sum(), (key, name)
                assert np.mean(np.abs(disparity[answered] - gt[answered]) > 3) < 0.12, (key, name)
            wild = wild_targets({name: compute_measure(name, features, params) for name in MEASURES})
            agree = agreement_targets(features["disparity"], {"sgbm": votes["sgbm"]}, wild, rule="hard")
            assert np.all((agree == 1) <= (wild == 1)) and np.all((wild == 0) <= (agree == 0))
            wrong = known & (np.abs(features["disparity"] - np.where(known, gt, 0)) > 3)
            wrong_valid = wrong & features["valid"]
            counts["wrong valid"] += int(wrong_valid.sum())
            counts["wild"] += int(np.sum(wrong_valid & (wild == 0)))
            counts["wild-agree"] += int(np.sum(wrong_valid & (agree == 0)))
            extra = known & (agree == 0) & (wild != 0)
            counts["extra negatives"] += int(extra.sum())
            counts["extra wrong"] += int(np.sum(extra & wrong))
    # wild never calls a pixel that passed SGM's checks wrong; the matchers catch some of those errors (250 of 7059) ...
    assert counts["wild"] == 0 and counts["wild-agree"] > 0.02 * counts["wrong valid"], counts
    # ... at a price: most of the negatives they add are right (635 of 2862 wrong), where the matcher erred, not SGM
    assert 0.1 < counts["extra wrong"] / counts["extra negatives"] < 0.4, counts


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


TINY = ["--epochs", "1", "--steps-per-epoch", "3", "--batch-size", "2", "--crop", "16", "--filters", "8", "--fc-filters", "8"]


def test_confidence_train_with_wild_agree_labels(fixture_proxies: Path, tmp_path: Path) -> None:
    from pseudolabel.confidence.checkpoints import load_confidence_checkpoint

    model = tmp_path / "agree.pt"
    arguments = ["confidence", "train", "--proxies", str(fixture_proxies), "--labels", "wild-soft", "--teachers", "sgbm,bm", "--out", str(model)]
    result = CliRunner().invoke(main, [*arguments, *TINY], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "labels: wild-soft" in result.output
    _, checkpoint = load_confidence_checkpoint(model)
    assert checkpoint["training_args"]["labels"] == "wild-soft" and checkpoint["training_args"]["teachers"] == ["sgbm", "bm"]
    assert checkpoint["data_summary"]["gt"] is None and 0 < checkpoint["data_summary"]["positive_fraction"] < 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--labels", "wild-agree", "--teachers", "sgbm,nope"], "unknown teacher 'nope'"),
        (["--labels", "wild-agree", "--teachers", ""], "at least one teacher"),
        (["--labels", "wild-soft", "--gt", str(MIDDLEBURY)], "--labels wild-soft uses no ground truth; drop --gt"),
        (["--labels", "wild-agree", "--teachers", "bm,bm"], "names a teacher twice"),
    ],
)
def test_train_refusals_are_one_line_and_touch_no_file(fixture_proxies: Path, tmp_path: Path, args: list[str], message: str) -> None:
    proxies = tmp_path / "proxies.h5"
    shutil.copyfile(fixture_proxies, proxies)
    before = _digest(proxies)
    out = tmp_path / "model.pt"
    result = CliRunner().invoke(main, ["confidence", "train", "--proxies", str(proxies), *args, "--out", str(out), *TINY])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and message in error_lines[0], result.output
    assert _digest(proxies) == before and sorted(path.name for path in tmp_path.iterdir()) == ["proxies.h5"]


def test_training_pairs_of_every_teacher_label_source(fixture_proxies: Path) -> None:
    """``load_training_pairs`` (what ``confidence train`` reads) against the rule applied by hand on tsukuba."""
    from pseudolabel.confidence.from_proxies import load_training_pairs

    with open_proxies(fixture_proxies) as proxies:
        features, params = proxies.read("tsukuba"), proxies.pair_params("tsukuba")
        images = pair_gray_images(fixture_proxies, proxies.pair_attrs("tsukuba"), "tsukuba")
    wild = wild_targets({name: compute_measure(name, features, params) for name in MEASURES})
    sgbm = teacher_disparities(images, params, ["sgbm"])
    targets = {}
    for labels, rule in (("wild-agree", "hard"), ("wild-soft", "soft"), ("wild-confirm", "confirm")):
        pairs, _, skipped = load_training_pairs(fixture_proxies, labels, keys=["tsukuba"], teachers=["sgbm"])
        assert [pair.key for pair in pairs] == ["tsukuba"] and skipped == []
        targets[labels] = pairs[0].targets
        np.testing.assert_array_equal(targets[labels], agreement_targets(features["disparity"], sgbm, wild, rule))
    # confirm: the wild negatives as they are, fewer positives (those StereoSGBM agrees with)
    confirm = targets["wild-confirm"]
    np.testing.assert_array_equal(confirm == 0, wild == 0)
    assert np.all((confirm == 1) <= (wild == 1)) and 0.5 * np.sum(wild == 1) < np.sum(confirm == 1) < np.sum(wild == 1)
    # soft: 1 where both vote right, 0.5 where they split, 0 where both vote wrong
    soft = targets["wild-soft"]
    assert set(np.unique(soft[np.isfinite(soft)]).tolist()) <= {0.0, 0.5, 1.0} and np.any(soft == 0.5)
