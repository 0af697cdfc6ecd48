"""A user's mistakes and a user's disk, through the real commands (issue 21): outputs checked before any
work, --overwrite, Ctrl-C messages whose printed command continues, swapped or unrectified pairs,
mistyped measures and models, and a walk-through whose steps connect (adapt's selection line,
adapt --labels, eval against a folder of <key>.pfm)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner, Result

from pseudolabel.cli.main import main
from pseudolabel.confidence.checkpoints import load_confidence_checkpoint
from pseudolabel.datasets import discover_pairs
from pseudolabel.io import read_disparity, read_image, write_image, write_pfm
from pseudolabel.learn.checkpoint import load_checkpoint
from pseudolabel.store.proxies import open_proxies
from tests.cli.interrupting import interrupt_when, printed_command, run_printed
from tests.cli.test_cli_adapt import FAST, base_args, state_equal, workspace  # noqa: F401 - fixture
from tests.cli.test_cli_confidence import proxies_master  # noqa: F401 - fixture

DATA = Path(__file__).parents[1] / "data"
KITTI = DATA / "kitti2012" / "training"
TINY_CCNN = ["--batch-size", "2", "--crop", "16", "--filters", "8", "--fc-filters", "8", "--threads", "1"]

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def assert_one_line_error(result: Result, *fragments: str) -> str:
    """Exit status 1, no traceback, one ``Error:`` line holding every fragment; returns that line."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture()
def proxies(proxies_master: Path, tmp_path: Path) -> Path:  # noqa: F811 - the imported fixture
    copy = tmp_path / "proxies.h5"
    shutil.copyfile(proxies_master, copy)
    return copy


@pytest.fixture()
def blocker(tmp_path: Path) -> Path:
    """A file standing where an output folder should be (unwritable even for root)."""
    path = tmp_path / "blocker"
    path.write_text("a file, not a folder")
    return path


# ---------------------------------------------------------------------------------------------
# outputs checked before any work


def test_every_command_checks_its_outputs_first(
    proxies: Path,
    workspace: dict[str, Path],  # noqa: F811
    blocker: Path,
    tmp_path: Path,
) -> None:
    """Each command given an output under a file stops at once with one line naming the path."""
    pair = [str(KITTI / "image_0"), str(KITTI / "image_1")]
    commands = {
        "sgm": ["sgm", "--in", *pair, "--out", f"{blocker}/p.h5"],
        "confidence train": ["confidence", "train", "--proxies", str(proxies), "--labels", "wild", "--out", f"{blocker}/c.pt", *TINY_CCNN],
        "confidence eval": ["confidence", "eval", "--proxies", str(proxies), "--gt", str(DATA / "middlebury"), "--plot", f"{blocker}/c.png"],
        "adapt": ["adapt", *base_args(workspace, blocker / "a.pt"), "--steps", "2", *FAST],
        "train": ["train", "--synth", "--arch", "tiny", "--out", f"{blocker}/t.pt", "--steps", "2", "--device", "cpu"],
        "predict": ["predict", "--model", str(workspace["source"]), "--in", *pair, "--out", f"{blocker}/pred"],
        "eval": ["eval", "--model", str(workspace["source"]), "--data", str(KITTI), "--json", f"{blocker}/e.json"],
        "show": ["show", str(proxies), "--out", f"{blocker}/pictures"],
        "synth": ["synth", "--out", f"{blocker}/synth", "--n", "1"],
    }
    for name, arguments in commands.items():
        line = assert_one_line_error(run(*arguments), str(blocker))
        assert "is a file, not a folder" in line, (name, line)
    assert blocker.read_text() == "a file, not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "proxies.h5"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only folders")
def test_labels_in_a_read_only_folder_names_the_file(proxies: Path) -> None:
    assert run("confidence", "score", "--proxies", str(proxies), "--model", "none", "--measures", "lrc").exit_code == 0
    proxies.parent.chmod(0o555)
    try:
        line = assert_one_line_error(run("labels", "--proxies", str(proxies), "--measure", "lrc"), f"--proxies {proxies}")
        assert "--out" not in line
    finally:
        proxies.parent.chmod(0o755)


def test_no_model_is_replaced_without_overwrite(proxies: Path, tmp_path: Path) -> None:
    out = tmp_path / "ccnn_rig.pt"
    arguments = ["confidence", "train", "--proxies", str(proxies), "--labels", "wild", "--out", str(out), "--epochs", "1", "--steps-per-epoch", "2"]
    assert run(*arguments, *TINY_CCNN).exit_code == 0
    before = out.read_bytes()
    assert_one_line_error(run(*arguments, *TINY_CCNN), f"--out {out}", "--overwrite")
    assert out.read_bytes() == before
    assert run(*arguments, *TINY_CCNN, "--seed", "1", "--overwrite").exit_code == 0
    assert out.read_bytes() != before


def test_adapt_and_train_take_overwrite(workspace: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "adapted.pt"
    assert run("adapt", *base_args(workspace, out), "--steps", "1", *FAST).exit_code == 0
    assert_one_line_error(run("adapt", *base_args(workspace, out), "--steps", "1", *FAST), "--resume", "--overwrite")
    assert run("adapt", *base_args(workspace, out), "--steps", "1", "--overwrite", *FAST).exit_code == 0


# ---------------------------------------------------------------------------------------------
# Ctrl-C: what was kept, and the printed command continues


def _epoch_two_started(output: str) -> bool:
    return "epoch 2/3" in output


def test_ctrl_c_confidence_train_then_printed_command_resumes_exactly(proxies: Path, tmp_path: Path) -> None:
    settings = ["--labels", "wild", "--epochs", "3", "--steps-per-epoch", "150", *TINY_CCNN]
    straight = tmp_path / "straight.pt"
    assert run("confidence", "train", "--proxies", str(proxies), "--out", str(straight), *settings).exit_code == 0
    out = tmp_path / "ccnn_rig.pt"
    status, output = interrupt_when(["confidence", "train", "--proxies", str(proxies), "--out", str(out), *settings], _epoch_two_started)
    assert status == 130 and "Traceback" not in output, output
    partial = out.with_suffix(".partial.pt")
    assert f"Interrupted; kept: epochs 1-1 of 3 in {partial}." in output
    assert printed_command(output)[-1] == "--resume"
    assert not out.exists() and partial.is_file()
    refused = run("confidence", "train", "--proxies", str(proxies), "--out", str(out), *settings)
    assert_one_line_error(refused, str(partial), "--resume", "--overwrite")
    run_printed(output)
    assert not partial.exists()
    (_, first), (_, second) = load_confidence_checkpoint(straight), load_confidence_checkpoint(out)
    assert first["history"] == second["history"] and len(second["history"]) == 3
    assert state_equal(first["state_dict"], second["state_dict"])


def test_ctrl_c_adapt_then_printed_command_resumes(workspace: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "adapted.pt"
    fast = [option for option in FAST if option != "--quiet"]
    arguments = ["adapt", *base_args(workspace, out), "--steps", "600", "--checkpoint-every", "0", *fast]
    status, output = interrupt_when(arguments, lambda text: "adapted.pt: " in text)
    assert status == 130 and "Traceback" not in output, output
    partial = out.with_suffix(".partial.pt")
    kept = re.search(rf"Interrupted; kept: steps 1-(\d+) of 600 in {re.escape(str(partial))}\.", output)
    assert kept is not None, output
    assert int(kept.group(1)) == load_checkpoint(partial)["step"] >= 1
    assert "rerun" not in output.split("Interrupted;")[1].splitlines()[0]  # one way to continue, the printed one
    assert printed_command(output)[-1] == "--resume"
    assert_one_line_error(run(*arguments), "--resume")  # a plain rerun is refused, as the message implies
    run_printed(output)
    assert load_checkpoint(out)["step"] == 600 and not partial.exists()


def test_ctrl_c_sgm_with_overwrite_keeps_pairs_and_the_same_command_continues(tmp_path: Path) -> None:
    out = tmp_path / "rig.h5"
    middlebury = str(DATA / "middlebury")
    assert run("sgm", "--in", middlebury, "--out", str(out), "--max-disp", "32", "--keys", "tsukuba").exit_code in (0, 2)
    arguments = ["sgm", "--in", middlebury, "--out", str(out), "--max-disp", "48", "--overwrite"]
    status, output = interrupt_when(arguments, lambda text: "sgm: 1/3 pairs" in text)
    assert status == 130 and "Traceback" not in output, output
    assert "Interrupted; kept: " in output and "finished pair(s) in the journal" in output
    assert printed_command(output)[3:] == arguments
    run_printed(output)
    with open_proxies(out) as store:
        assert sorted(store.keys()) == ["Baby1", "tsukuba", "venus"]
        assert store.sgm_params.max_disp == 48


# ---------------------------------------------------------------------------------------------
# swapped and unrectified pairs


def test_swapped_folders_are_caught_on_a_real_pair(tmp_path: Path) -> None:
    out = tmp_path / "swapped.h5"
    line = assert_one_line_error(
        run("sgm", "--in", str(KITTI / "image_1"), str(KITTI / "image_0"), "--out", str(out)), "look swapped", "--no-pair-check"
    )
    assert re.search(r"(\d+)% of the pixels match the right image to the right", line)
    assert not out.exists()
    result = run("sgm", "--in", str(KITTI / "image_1"), str(KITTI / "image_0"), "--out", str(out), "--no-pair-check")
    assert result.exit_code == 0, result.output
    right = run("sgm", "--in", str(KITTI / "image_0"), str(KITTI / "image_1"), "--out", str(tmp_path / "right.h5"))
    assert right.exit_code == 0, right.output


def test_swapped_middlebury_scene_is_caught(tmp_path: Path) -> None:
    pair = next(p for p in discover_pairs([DATA / "middlebury"]) if p.key == "tsukuba")
    left_dir, right_dir = tmp_path / "left", tmp_path / "right"
    for folder, image in ((left_dir, pair.right), (right_dir, pair.left)):  # swapped on purpose
        folder.mkdir()
        write_image(folder / "tsukuba.png", read_image(image))
    assert_one_line_error(run("sgm", "--in", str(left_dir), str(right_dir), "--out", str(tmp_path / "p.h5")), "look swapped")


def test_rows_that_do_not_line_up_are_caught(tmp_path: Path) -> None:
    left_dir, right_dir = tmp_path / "left", tmp_path / "right"
    left_dir.mkdir()
    right_dir.mkdir()
    shutil.copyfile(KITTI / "image_0" / "000070_10.png", left_dir / "000070.png")
    right = read_image(KITTI / "image_1" / "000070_10.png")
    shifted = cv2.warpAffine(right, np.float32([[1, 0, 0], [0, 1, 6]]), (right.shape[1], right.shape[0]), borderMode=cv2.BORDER_REFLECT)
    write_image(right_dir / "000070.png", shifted)
    assert_one_line_error(
        run("sgm", "--in", str(left_dir), str(right_dir), "--out", str(tmp_path / "p.h5")), "shifted +6", "rectified", "--no-pair-check"
    )


# ---------------------------------------------------------------------------------------------
# mistyped names list the ones that exist, of the right kind


def test_mistyped_measure_lists_the_stored_ones(proxies: Path) -> None:
    assert run("confidence", "score", "--proxies", str(proxies), "--model", "none", "--measures", "lrc,apkr").exit_code == 0
    assert_one_line_error(run("labels", "--proxies", str(proxies), "--measure", "ccnn_rig"), "--measure ccnn_rig", "stored measures: apkr, lrc")
    assert_one_line_error(run("confidence", "score", "--proxies", str(proxies), "--measures", "aprk"), "aprk", "apkr")


def test_mistyped_models_list_models_of_the_right_kind(proxies: Path, workspace: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    line = assert_one_line_error(
        run("adapt", *base_args(workspace, tmp_path / "a.pt")[:2], "--model", "madnet_synt", "--out", str(tmp_path / "a.pt")), "madnet_synth"
    )
    assert "ccnn" not in line
    line = assert_one_line_error(run("confidence", "score", "--proxies", str(proxies), "--model", "ccnn_rig.pt"), "ccnn_rig.pt", "ccnn, ccnn_wild")
    assert "madnet" not in line
    assert run("confidence", "score", "--proxies", str(proxies), "--model", "ccnn_wild", "--measures", "none").exit_code == 0
    with open_proxies(proxies) as store:
        assert all(store.has(key, "confidence/ccnn_wild") for key in store.keys())


# ---------------------------------------------------------------------------------------------
# the walk-through connects


def test_adapt_says_first_what_it_selects_and_labels_are_used_as_stored(workspace: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    proxies = tmp_path / "proxies.h5"
    shutil.copyfile(workspace["proxies"], proxies)
    shutil.copytree(workspace["root"] / "images", tmp_path / "images")
    arguments = ["--proxies", str(proxies), "--model", str(workspace["source"])]
    result = run("adapt", *arguments, "--out", str(tmp_path / "a.pt"), "--tau", "0.5", "--steps", "1", *FAST)
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("adapt: confidence confidence/ccnn, fixed tau 0.5: selects ")
    with open_proxies(proxies) as store:
        total = sum(store.read(key, ["disparity"])["disparity"].size for key in store.keys())
    # the fixture's confidence is 0.9 except on a 12-column band of each pair
    assert f"{total - 3 * 12 * 48:,} of {total:,} pixels" in first
    missing = run("adapt", *arguments, "--out", str(tmp_path / "b.pt"), "--labels", "--steps", "1", *FAST)
    assert_one_line_error(missing, "--labels", "pseudolabel labels")
    assert run("labels", "--proxies", str(proxies), "--tau", "0.95", "--measure", "ccnn").exit_code == 0  # 0.9 < 0.95: nothing
    assert run("labels", "--proxies", str(proxies), "--tau", "0.05", "--measure", "apkr").exit_code == 0  # 0.5 > 0.05: everything
    with open_proxies(proxies) as store:
        labelled = sum(int(np.isfinite(store.read(key, ["labels"])["labels"]).sum()) for key in store.keys())
    result = run("adapt", *arguments, "--out", str(tmp_path / "b.pt"), "--labels", "--steps", "1", *FAST)
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("adapt: training on the stored labels (tau 0.05 on confidence/apkr)")
    assert f"{labelled:,} of {total:,} pixels" in first
    assert load_checkpoint(tmp_path / "b.pt")["training_args"]["labels"] == "tau 0.05 on confidence/apkr"
    assert_one_line_error(run("adapt", *arguments, "--out", str(tmp_path / "c.pt"), "--labels", "--tau", "0.9", *FAST), "drop --tau")


def test_eval_takes_a_folder_of_key_files(workspace: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    pair_dirs = [tmp_path / "rig" / "left", tmp_path / "rig" / "right"]
    gt_dir = tmp_path / "lab_gt"
    for folder in (*pair_dirs, gt_dir):
        folder.mkdir(parents=True)
    for key in ("a", "b"):
        shutil.copyfile(KITTI / "image_0" / "000070_10.png", pair_dirs[0] / f"{key}.png")
        shutil.copyfile(KITTI / "image_1" / "000070_10.png", pair_dirs[1] / f"{key}.png")
    shutil.copyfile(KITTI / "disp_noc" / "000070_10.png", gt_dir / "a.png")  # 16-bit, disparity x 256
    write_pfm(gt_dir / "b.pfm", read_disparity(KITTI / "disp_noc" / "000070_10.png"))
    predictions = tmp_path / "disparities"
    assert (
        run("predict", "--model", str(workspace["source"]), "--in", *map(str, pair_dirs), "--out", str(predictions), "--device", "cpu").exit_code == 0
    )
    by_pred = run("eval", "--pred", str(predictions), "--gt", str(gt_dir))
    assert by_pred.exit_code == 0, by_pred.output
    by_model = run("eval", "--model", str(workspace["source"]), "--data", *map(str, pair_dirs), "--gt", str(gt_dir), "--device", "cpu")
    assert by_model.exit_code == 0, by_model.output
    rows = [line.split() for line in by_pred.output.splitlines() if line.startswith(("a ", "b "))]
    assert [row[0] for row in rows] == ["a", "b"] and rows[0][1:] == rows[1][1:]  # png and pfm ground truth agree
    wrong = run("eval", "--model", str(workspace["source"]), "--data", str(tmp_path / "nowhere"))
    assert "--in" not in wrong.output
