"""`pseudolabel sgm` and `pseudolabel inspect` end to end, with the real matcher on small crops of the
shipped Middlebury / KITTI fixtures: layouts, options, user errors, kill -9 and resume, workers."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from pseudolabel.cli.main import main
from pseudolabel.io import read_image, write_image
from pseudolabel.sgm.batch import SLOW_ENV
from pseudolabel.sgm.matcher import match
from pseudolabel.sgm.params import SGMParams
from pseudolabel.store.journal import journal_entries
from pseudolabel.store.names import journal_path
from pseudolabel.store.proxies import open_proxies
from tests.cli.interrupting import PSEUDOLABEL, default_sigint, printed_command, run_printed

DATA = Path(__file__).parents[1] / "data"
REPO = Path(__file__).parents[2]
MAX_DISP = "16"
CROPS = {  # key -> (scene, top, left); 40 x 72 crops keep every match fast
    "a": ("tsukuba", 100, 150),
    "b": ("venus", 200, 40),
    "c": ("tsukuba", 20, 300),
    "seq/d": ("venus", 60, 250),
    "seq/e": ("tsukuba", 230, 10),
}
CROP_SHAPE = (40, 72)


def crop_pair(scene: str, top: int, left: int, shape: tuple[int, int] = CROP_SHAPE) -> tuple[np.ndarray, np.ndarray]:
    folder = DATA / "middlebury" / scene
    window = np.s_[top : top + shape[0], left : left + shape[1]]
    return read_image(folder / "imL.png")[window], read_image(folder / "imR.png")[window]


def make_pairs(root: Path, keys: list[str] | None = None) -> tuple[Path, Path]:
    left_dir, right_dir = root / "left", root / "right"
    for key in keys if keys is not None else list(CROPS):
        left, right = crop_pair(*CROPS[key])
        write_image(left_dir / f"{key}.png", left)
        write_image(right_dir / f"{key}.png", right)
    return left_dir, right_dir


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def sgm(left: Path, right: Path, out: Path, *more: str) -> Result:
    return run("sgm", "--in", left, right, "--out", out, "--max-disp", MAX_DISP, *more)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def content(path: Path) -> dict:
    with open_proxies(path) as proxies:
        return {
            "root": proxies.attrs,
            "pairs": {key: (proxies.pair_attrs(key), proxies.read(key)) for key in proxies.keys()},
        }


def assert_same_content(first: dict, second: dict, ignore: tuple[str, ...] = ()) -> None:
    """Same root attributes, pairs, pair attributes (except ``ignore``) and bit-identical datasets."""
    assert first["root"] == second["root"]
    assert list(first["pairs"]) == list(second["pairs"])
    for key, (attrs, arrays) in first["pairs"].items():
        other_attrs, other_arrays = second["pairs"][key]
        assert {k: v for k, v in attrs.items() if k not in ignore} == {k: v for k, v in other_attrs.items() if k not in ignore}, key
        assert sorted(arrays) == sorted(other_arrays)
        for name, array in arrays.items():
            assert array.dtype == other_arrays[name].dtype and array.tobytes() == other_arrays[name].tobytes(), (key, name)


def assert_user_error(result: Result, pattern: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, result.output
    assert re.search(pattern, error_lines[0]), error_lines[0]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_pairs(tmp_path_factory.mktemp("pairs"))


@pytest.fixture(scope="module")
def reference(dataset: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted single-process run over the whole dataset."""
    out = tmp_path_factory.mktemp("reference") / "proxies.h5"
    result = sgm(*dataset, out)
    assert result.exit_code == 0, result.output
    return out


def test_help_has_examples_and_every_sgm_parameter() -> None:
    text = run("sgm", "--help").output
    assert "Examples:" in text and "pseudolabel sgm --in" in text
    for spec in dataclasses.fields(SGMParams):
        assert "--" + spec.name.replace("_", "-") in text, spec.name
    assert "--no-fill-invalid" in text and "--workers" in text and "--skip-unpaired" in text
    assert "Examples:" in run("inspect", "--help").output


def test_stored_results_equal_match(dataset: tuple[Path, Path], reference: Path) -> None:
    with open_proxies(reference) as proxies:
        assert proxies.keys() == sorted(CROPS)
        assert proxies.sgm_params == SGMParams(max_disp=int(MAX_DISP))
        for key in ("a", "seq/d"):
            left, right = crop_pair(*CROPS[key])
            expected = match(left, right, SGMParams(max_disp=int(MAX_DISP)))
            stored = proxies.read(key)
            for name in stored:
                np.testing.assert_array_equal(stored[name], getattr(expected, name), err_msg=f"{key} {name}")
            attrs = proxies.pair_attrs(key)
            assert (attrs["height"], attrs["width"]) == CROP_SHAPE
            assert (attrs["min_disp"], attrs["max_disp"]) == (0, int(MAX_DISP))
            assert attrs["left"] == str(dataset[0] / f"{key}.png") and attrs["right"] == str(dataset[1] / f"{key}.png")
            assert attrs["valid_fraction"] == pytest.approx(expected.valid.mean())


def test_rerun_skips_finished_pairs_and_leaves_file_alone(dataset: tuple[Path, Path], reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "proxies.h5"
    shutil.copyfile(reference, out)
    before = digest(out)
    result = sgm(*dataset, out)
    assert result.exit_code == 0, result.output
    assert f"{len(CROPS)} already done, 0 to match" in result.output
    assert digest(out) == before and not journal_path(out).exists()


def test_workers_give_identical_content(dataset: tuple[Path, Path], reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "proxies.h5"
    result = sgm(*dataset, out, "--workers", "2")
    assert result.exit_code == 0, result.output
    assert "with 2 workers" in result.output
    assert_same_content(content(out), content(reference))


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_kill_mid_run_then_resume(dataset: tuple[Path, Path], reference: Path, tmp_path: Path, stop: signal.Signals) -> None:
    """An existing output with two pairs; a run adding three more is killed (SIGKILL, or Ctrl-C) after
    its first new pair; the old output is untouched; a rerun finishes with exactly the uninterrupted content."""
    out = tmp_path / "proxies.h5"
    left_dir, right_dir = make_pairs(tmp_path / "data", ["a", "b"])
    assert sgm(left_dir, right_dir, out).exit_code == 0
    before = digest(out)
    make_pairs(tmp_path / "data", ["c", "seq/d", "seq/e"])
    env = dict(os.environ, **{SLOW_ENV: "3"})
    command = [sys.executable, "-m", "pseudolabel.cli.main", "sgm", "--in", str(left_dir), str(right_dir), "--out", str(out), "--max-disp", MAX_DISP]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=default_sigint)
    journal = journal_path(out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and not journal_entries(journal):
        time.sleep(0.05)
    assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
    process.send_signal(stop)
    output = process.communicate(timeout=60)[0].decode()
    if stop == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
    else:
        assert process.returncode == 130 and f"Interrupted; kept: 1 finished pair(s) in the journal {journal} ({out} is unchanged" in output, output
        assert printed_command(output) == [*PSEUDOLABEL, *command[3:]]  # the same command continues
        assert "Traceback" not in output
        assert not Path(str(out) + ".lock").exists()
    assert digest(out) == before
    assert len(journal_entries(journal)) == 1
    if stop == signal.SIGKILL:
        result = sgm(left_dir, right_dir, out)
        assert result.exit_code == 0, result.output
        rerun_output = result.output
    else:
        rerun_output = run_printed(output).stderr
    assert "3 already done, 2 to match" in rerun_output
    assert not journal.exists()
    resumed = content(out)
    assert_same_content(resumed, content(reference), ignore=("left", "right"))
    assert all(attrs["left"] == str(left_dir / f"{key}.png") for key, (attrs, _) in resumed["pairs"].items())


def test_other_parameters_refused_then_overwrite(dataset: tuple[Path, Path], reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "proxies.h5"
    shutil.copyfile(reference, out)
    before = digest(out)
    assert_user_error(sgm(*dataset, out, "--p2", "120"), rf"different SGM parameters \(p2 {SGMParams().p2} in the file, 120 now\).*--overwrite")
    assert digest(out) == before
    small = make_pairs(tmp_path / "small", ["a"])
    result = sgm(*small, out, "--p2", "120", "--overwrite")
    assert result.exit_code == 0, result.output
    with open_proxies(out) as proxies:
        assert proxies.sgm_params.p2 == 120 and proxies.keys() == ["a"]


def test_every_option_reaches_the_matcher(tmp_path: Path) -> None:
    left_dir, right_dir = make_pairs(tmp_path, ["b"])
    options = {
        "--min-disp": "-2",
        "--cost": "ad_census",
        "--census-width": "7",
        "--census-height": "5",
        "--paths": "4",
        "--p1": "5",
        "--p2": "90",
        "--p2-gamma": "12",
        "--subpixel": "equiangular",
        "--lr-max-diff": "2",
        "--uniqueness": "0.9",
        "--median": "0",
        "--ad-truncation": "20",
    }
    out = tmp_path / "proxies.h5"
    args = [item for pair in options.items() for item in pair] + ["--p2-adaptive", "--no-fill-invalid"]
    result = sgm(left_dir, right_dir, out, *args)
    assert result.exit_code == 0, result.output
    expected_params = SGMParams(
        min_disp=-2,
        max_disp=16,
        cost="ad_census",
        census_width=7,
        census_height=5,
        paths=4,
        p1=5,
        p2=90,
        p2_adaptive=True,
        p2_gamma=12.0,
        subpixel="equiangular",
        lr_max_diff=2.0,
        uniqueness=0.9,
        median=0,
        fill_invalid=False,
        ad_truncation=20,
    )
    expected = match(*crop_pair(*CROPS["b"]), expected_params)
    with open_proxies(out) as proxies:
        assert proxies.sgm_params == expected_params
        assert proxies.pair_attrs("b")["min_disp"] == -2
        np.testing.assert_array_equal(proxies.read("b", ["disparity"])["disparity"], expected.disparity)
    assert_user_error(sgm(left_dir, right_dir, tmp_path / "x.h5", "--p1", "100", "--p2", "50"), r"p1 < p2.*--help")


def test_readme_quick_start_runs_on_shipped_pairs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (REPO / "README.md").read_text()
    line = next(line for line in readme.splitlines() if "pseudolabel sgm --in" in line)
    commands = [shlex.split(part.strip()) for part in line.split("&&") if part.strip().startswith("pseudolabel")]
    assert [c[1] for c in commands] == ["sgm", "inspect"]
    monkeypatch.chdir(REPO)
    out_arg = commands[0][commands[0].index("--out") + 1]
    out = tmp_path / out_arg
    commands[0][commands[0].index("--out") + 1] = str(out)
    commands[1][2] = str(out)
    assert run(*commands[0][1:]).exit_code == 0
    report = run(*commands[1][1:])
    assert report.exit_code == 0, report.output
    assert "3 pairs" in report.output
    for key, size in (("Baby1", "413x370"), ("tsukuba", "384x288"), ("venus", "434x383")):
        assert re.search(rf"{key}\s+{size}\s+\[0, 128\)", report.output), report.output
    with open_proxies(out) as proxies:
        attrs = proxies.pair_attrs("tsukuba")
        assert attrs["gt_scale"] == 16 and attrs["masks"]["nonocc"].endswith("nonocc.png")
        assert attrs["left"] == "tests/data/middlebury/tsukuba/imL.png"


def test_kitti_layout(tmp_path: Path) -> None:
    source = DATA / "kitti2012" / "training"
    root = tmp_path / "training"
    for folder in ("image_0", "image_1", "disp_noc"):
        image = read_image(source / folder / "000070_10.png")
        write_image(root / folder / "000070_10.png", image[200:240, 400:500])
    out = tmp_path / "kitti.h5"
    result = run("sgm", "--in", root, "--out", out, "--max-disp", "32")
    assert result.exit_code == 0, result.output
    with open_proxies(out) as proxies:
        assert proxies.keys() == ["000070_10"]
        attrs = proxies.pair_attrs("000070_10")
        assert attrs["gt_scale"] == 256 and attrs["gt_left"] == str(root / "disp_noc" / "000070_10.png")
        assert (attrs["height"], attrs["width"]) == (40, 100)


def test_middlebury_calib_range_is_used_per_pair(tmp_path: Path) -> None:
    scene = tmp_path / "scene"
    left, right = crop_pair("tsukuba", 100, 150)
    write_image(scene / "im0.png", left)
    write_image(scene / "im1.png", right)
    (scene / "calib.txt").write_text("ndisp=12\n")
    out = tmp_path / "m.h5"
    assert run("sgm", "--in", tmp_path, "--out", out).exit_code == 0
    with open_proxies(out) as proxies:
        assert proxies.max_disp_from_calib and proxies.pair_params("scene").max_disp == 12
        expected = match(left, right, SGMParams(max_disp=12))
        np.testing.assert_array_equal(proxies.read("scene", ["disparity"])["disparity"], expected.disparity)


# ---------------------------------------------------------------------------------------------
# user errors: one line, exit code 1, existing output intact


@pytest.fixture()
def existing(reference: Path, tmp_path: Path) -> tuple[Path, str]:
    out = tmp_path / "out" / "proxies.h5"
    out.parent.mkdir()
    shutil.copyfile(reference, out)
    return out, digest(out)


def test_missing_folder(existing: tuple[Path, str], tmp_path: Path) -> None:
    out, before = existing
    assert_user_error(run("sgm", "--in", tmp_path / "nope", "--out", out), r"nope: no such folder")
    assert digest(out) == before


def test_unpaired_left_images_listed(existing: tuple[Path, str], tmp_path: Path) -> None:
    out, before = existing
    left_dir, right_dir = make_pairs(tmp_path / "data", ["a", "b"])
    for key in ("b", "a"):
        (right_dir / f"{key}.png").rename(tmp_path / f"{key}.png")
    assert_user_error(sgm(left_dir, right_dir, out), r"2 left image\(s\) without a right partner: .*a.png, .*b.png.*--skip-unpaired")
    assert digest(out) == before
    shutil.move(str(tmp_path / "a.png"), right_dir / "a.png")
    result = sgm(left_dir, right_dir, out, "--skip-unpaired")
    assert result.exit_code == 0 and "skipping 1 left image(s)" in result.output
    assert "1 already done" in result.output


def test_sizes_differ_keeps_finished_pairs(existing: tuple[Path, str], tmp_path: Path) -> None:
    out, before = existing
    left_dir, right_dir = make_pairs(tmp_path / "data", ["a", "b"])
    left, right = crop_pair("venus", 10, 10)
    write_image(left_dir / "z_bad.png", left)
    write_image(right_dir / "z_bad.png", right[:, :-3])
    result = sgm(left_dir, right_dir, out, "--p2", "80", "--overwrite")
    assert_user_error(result, r"z_bad.png is 72x40 but .*z_bad.png is 69x40; .*fix or remove this pair.*2 finished pairs are kept")
    assert digest(out) == before
    assert len(journal_entries(journal_path(out))) == 2
    write_image(right_dir / "z_bad.png", right)
    result = sgm(left_dir, right_dir, out, "--p2", "80", "--overwrite")
    assert result.exit_code == 0, result.output
    assert "2 already done, 1 to match" in result.output


def test_truncated_image(existing: tuple[Path, str], tmp_path: Path) -> None:
    out, before = existing
    left_dir, right_dir = make_pairs(tmp_path / "data", ["a"])
    payload = (left_dir / "a.png").read_bytes()
    (left_dir / "new.png").write_bytes(payload[: len(payload) // 2])
    shutil.copyfile(right_dir / "a.png", right_dir / "new.png")
    assert_user_error(sgm(left_dir, right_dir, out), r"new.png: cannot be read as an image .*truncated")
    assert digest(out) == before


def test_range_wider_than_image(existing: tuple[Path, str], tmp_path: Path) -> None:
    out, before = existing
    left_dir, right_dir = make_pairs(tmp_path / "data", ["a"])
    result = run("sgm", "--in", left_dir, right_dir, "--out", out, "--max-disp", "100", "--overwrite")
    assert_user_error(result, r"a.png: the disparity range \[0, 100\) is wider than the image width 72; lower --max-disp")
    assert digest(out) == before


def test_output_cannot_be_written(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    assert_user_error(sgm(*dataset, blocker / "proxies.h5"), r"--out .*proxies.h5: .*file is a file, not a folder; choose another path")
    assert blocker.read_text() == "a file, not a folder"
    assert_user_error(sgm(*dataset, tmp_path), r"--out .* is a folder; give a file name")


def test_corrupt_output_is_reported_not_replaced(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "proxies.h5"
    out.write_bytes(b"definitely not HDF5")
    assert_user_error(sgm(*dataset, out), r"proxies.h5: is corrupt or not an HDF5 file .*--overwrite")
    assert out.read_bytes() == b"definitely not HDF5"
    assert_user_error(run("inspect", out), r"is corrupt or not an HDF5 file")
    small = make_pairs(tmp_path / "small", ["b"])
    assert sgm(*small, out, "--overwrite").exit_code == 0
    with open_proxies(out) as proxies:
        assert proxies.keys() == ["b"]


def test_inspect_reports_unfinished_run(tmp_path: Path) -> None:
    out = tmp_path / "proxies.h5"
    journal_path(out).mkdir()
    (journal_path(out) / "0123.h5").write_bytes(b"")
    assert_user_error(run("inspect", out), r"does not exist yet; .*1 finished pairs .*rerun the same command")


def test_max_memory_that_fits_changes_nothing_and_a_small_one_tiles(dataset: tuple[Path, Path], reference: Path, tmp_path: Path) -> None:
    from pseudolabel.sgm import tiled

    out = tmp_path / "fits.h5"
    assert sgm(*dataset, out, "--max-memory", "2G").exit_code == 0
    assert_same_content(content(out), content(reference))
    # a whole Tsukuba pair with a budget between the smallest that works and the untiled one: bands
    folder = DATA / "middlebury" / "tsukuba"
    left, right = read_image(folder / "imL.png"), read_image(folder / "imR.png")
    write_image(tmp_path / "left" / "t.png", left)
    write_image(tmp_path / "right" / "t.png", right)
    params = SGMParams(max_disp=int(MAX_DISP))
    height, width = left.shape[:2]
    images = left.nbytes + right.nbytes
    budget_mib = (tiled.smallest_budget(height, width, params, image_bytes=images) + tiled.required_memory(height, width, params, images)) // 2**21
    bands = len(tiled.plan_bands(height, width, params, budget_mib * 2**20, image_bytes=images))
    assert bands > 1
    tiled_out = tmp_path / "tiled.h5"
    assert sgm(tmp_path / "left", tmp_path / "right", tiled_out, "--max-memory", f"{budget_mib}M").exit_code == 0
    expected = match(left, right, params, max_memory=budget_mib * 2**20)
    with open_proxies(tiled_out) as proxies:
        stored = proxies.read("t")
        for name in stored:
            np.testing.assert_array_equal(stored[name], getattr(expected, name), err_msg=name)
        # the pair says it was cut; a pair matched whole does not carry the attribute
        assert expected.bands == bands and proxies.pair_attrs("t")["bands"] == bands
    with open_proxies(out) as proxies:
        assert all("bands" not in proxies.pair_attrs(key) for key in proxies.keys())


def test_max_memory_errors_are_one_line(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    assert_user_error(sgm(*dataset, tmp_path / "a.h5", "--max-memory", "4X"), r"--max-memory: memory size '4X': write a number with K, M, G or T")
    result = sgm(*dataset, tmp_path / "b.h5", "--max-memory", "100M")
    assert_user_error(
        result, r"a.png: max_memory 100M is too small to match a 72x40 pair with 16 disparities: the smallest budget that works is \d+M"
    )


def test_preset_fast_with_an_override(tmp_path: Path) -> None:
    left_dir, right_dir = make_pairs(tmp_path, ["b"])
    out = tmp_path / "proxies.h5"
    result = sgm(left_dir, right_dir, out, "--preset", "fast", "--paths", "8")
    assert result.exit_code == 0, result.output
    expected_params = SGMParams.preset("fast").replace(max_disp=16, paths=8)
    with open_proxies(out) as proxies:
        assert proxies.sgm_params == expected_params
        np.testing.assert_array_equal(proxies.read("b", ["disparity"])["disparity"], match(*crop_pair(*CROPS["b"]), expected_params).disparity)
    assert "--preset" in run("sgm", "--help").output


def test_a_rerun_with_another_preset_names_the_fields_that_differ(tmp_path: Path) -> None:
    left_dir, right_dir = make_pairs(tmp_path, ["b"])
    out = tmp_path / "proxies.h5"
    assert sgm(left_dir, right_dir, out, "--preset", "fast").exit_code == 0
    before = out.read_bytes()
    assert_user_error(sgm(left_dir, right_dir, out), r"proxies.h5: was computed with different SGM parameters \(.*downsample 2 in the file, 1 now")
    assert out.read_bytes() == before


def test_a_bad_downsample_factor_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    left_dir, right_dir = make_pairs(tmp_path, ["b"])
    out = tmp_path / "proxies.h5"
    assert_user_error(sgm(left_dir, right_dir, out, "--downsample", "3"), r"downsample must be 1, 2 or 4, not 3 \(check the SGM options")
    assert not out.exists()
