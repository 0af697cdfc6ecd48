"""``pseudolabel export`` (pseudolabel.store.export): hand-made labels in, exact files out, round trip, refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from pseudolabel.cli.main import main
from pseudolabel.datasets import discover_pairs
from pseudolabel.errors import InputError
from pseudolabel.io import read_disparity, read_pfm, write_image
from pseudolabel.sgm.params import SGMParams
from pseudolabel.store.export import encode_kitti_disparity, export_labels, key_from_kitti_name, kitti_name
from pseudolabel.store.journal import create_or_open_proxies
from pseudolabel.store.layout import RESULT_DATASETS, pair_attributes

HEIGHT, WIDTH = 32, 64
KEYS = ("seq1/000000", "seq1/000001", "seq2/000000")
PARAMS = SGMParams(max_disp=16)


def hand_labels(index: int) -> np.ndarray:
    """Labels with every case: NaN (none), exactly 0 and 0.001 px (clamped in KITTI), quarter pixels, a
    value that is not a multiple of 1/256, and a large one."""
    labels = np.full((HEIGHT, WIDTH), np.nan, dtype=np.float32)
    labels[::2, ::3] = 4.25 + index
    labels[1, :4] = [0.0, 0.001, 1.5, 3.14159]
    labels[2, 0] = 200.0
    return labels


def hand_confidence(index: int) -> np.ndarray:
    ramp = np.linspace(0.0, 1.0, HEIGHT * WIDTH, dtype=np.float32).reshape(HEIGHT, WIDTH)
    return np.roll(ramp, index, axis=1)


def make_proxies(root: Path, keys: tuple[str, ...] = KEYS, labels: bool = True, scored: bool = True) -> Path:
    """Images under ``root/rig/{left,right}/<key>.png`` and a proxies file ``root/p.h5`` with hand-made labels."""
    path = root / "p.h5"
    rng = np.random.default_rng(0)
    with create_or_open_proxies(path, PARAMS) as proxies:
        for index, key in enumerate(keys):
            left, right = root / "rig" / "left" / f"{key}.png", root / "rig" / "right" / f"{key}.png"
            write_image(left, rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8))
            write_image(right, rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8))
            arrays = {name: np.zeros((HEIGHT, WIDTH), dtype=dtype) for name, dtype in RESULT_DATASETS.items()}
            arrays["disparity"] = np.full((HEIGHT, WIDTH), 5.0, dtype=np.float32)
            attrs = pair_attributes(key, left, right, PARAMS, (HEIGHT, WIDTH), arrays["valid"])
            proxies.write_pair(key, arrays, attrs)
            if scored:
                proxies.write(key, "confidence/ccnn", hand_confidence(index), attrs={"measure": "ccnn"})
            if labels:
                proxies.write(key, "labels", hand_labels(index), attrs={"tau": 0.5, "measure": "ccnn"})
    return path


def run(*args: str) -> object:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def read_png16(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.dtype == np.uint16
    return image


def expected_kitti(labels: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(labels), np.maximum(np.round(np.nan_to_num(labels) * 256), 1), 0).astype(np.uint16)


# ---------------------------------------------------------------------------------------------
# file names


def test_kitti_names_are_flat_and_reversible() -> None:
    assert kitti_name("seq1/000001") == "seq1__000001"
    assert kitti_name("000046_10") == "000046_10"
    for key in ("a/b/c", "000046_10", "x.y/z"):
        assert key_from_kitti_name(kitti_name(key)) == key


def test_encode_kitti_clamps_tiny_labels_and_refuses_what_does_not_fit() -> None:
    labels = np.array([[np.nan, 0.0, 0.001, 0.002, 1 / 256, 255.99]], dtype=np.float32)
    encoded, clamped = encode_kitti_disparity(labels)
    assert encoded.tolist() == [[0, 1, 1, 1, 1, 65533]]
    assert clamped == 2  # 0 and 0.001 round to 0; 0.002 * 256 = 0.512 rounds to 1 by itself
    with pytest.raises(InputError, match="negative"):
        encode_kitti_disparity(np.array([[-0.5]], dtype=np.float32), "k")
    with pytest.raises(InputError, match="256 px"):
        encode_kitti_disparity(np.array([[256.0]], dtype=np.float32), "k")


# ---------------------------------------------------------------------------------------------
# each format, exact files


def test_kitti_layout_exact_files(tmp_path: Path) -> None:
    proxies = make_proxies(tmp_path)
    out = tmp_path / "kitti"
    summary = export_labels(proxies, out, format="kitti", with_confidence=True, command="pseudolabel export --test")
    assert summary.names == {key: key.replace("/", "__") for key in KEYS}
    assert summary.clamped == 2 * len(KEYS)
    assert sorted(os.listdir(out)) == ["README.txt", "confidence_0", "disp_occ_0", "filenames.txt", "image_2", "image_3", "keys.txt"]
    for index, key in enumerate(KEYS):
        name = key.replace("/", "__")
        left = out / "image_2" / f"{name}.png"
        assert left.is_symlink() and Path(os.readlink(left)) == (tmp_path / "rig" / "left" / f"{key}.png").resolve()
        assert (out / "image_3" / f"{name}.png").is_symlink()
        np.testing.assert_array_equal(read_png16(out / "disp_occ_0" / f"{name}.png"), expected_kitti(hand_labels(index)))
        expected_confidence = np.round(hand_confidence(index).astype(np.float64) * 65535).astype(np.uint16)
        np.testing.assert_array_equal(read_png16(out / "confidence_0" / f"{name}.png"), expected_confidence)
    names = [key.replace("/", "__") for key in KEYS]
    assert (out / "filenames.txt").read_text() == "".join(f"image_2/{n}.png image_3/{n}.png disp_occ_0/{n}.png\n" for n in names)
    assert (out / "keys.txt").read_text() == "".join(f"{k}\t{n}\n" for k, n in zip(KEYS, names))
    readme = (out / "README.txt").read_text()
    assert f"source: {proxies.resolve()}" in readme
    assert "tau: 0.5; measure: ccnn" in readme
    assert f"SGM parameters: {json.dumps(json.loads(PARAMS.to_json()), sort_keys=True)}" in readme
    assert "command: pseudolabel export --test" in readme
    assert not list(tmp_path.glob("kitti.*"))  # no .partial, .lock or .old left


def test_readme_names_the_target_error_of_labels_with_a_tau_per_pair(tmp_path: Path) -> None:
    proxies = make_proxies(tmp_path)
    with create_or_open_proxies(proxies, PARAMS) as handle:
        for key, tau in zip(KEYS, (0.91, float("nan"), 0.875)):  # the second pair reached no tau: no labels
            labels = np.full((HEIGHT, WIDTH), np.nan, np.float32) if np.isnan(tau) else hand_labels(0)
            handle.write(key, "labels", labels, attrs={"tau": tau, "measure": "ccnn", "target_error": 0.01, "target_reached": int(tau == tau)})
    export_labels(proxies, tmp_path / "out", format="pfm")
    readme = (tmp_path / "out" / "README.txt").read_text()
    assert "tau: per pair for an expected error <= 1% (from 0.875 to 0.91), 1 pair(s) reach no tau and have no labels; measure: ccnn" in readme
    # one pair labelled again with a fixed tau: both kinds are named, each with its pairs
    with create_or_open_proxies(proxies, PARAMS) as handle:
        handle.write(KEYS[1], "labels", hand_labels(1), attrs={"tau": 0.5, "measure": "ccnn"})
    export_labels(proxies, tmp_path / "mixed", format="pfm")
    readme = (tmp_path / "mixed" / "README.txt").read_text()
    assert "tau: per pair for an expected error <= 1% (from 0.875 to 0.91) on 2 pair(s); 0.5 on 1 pair(s); measure: ccnn" in readme


def test_pfm_layout_exact_files_and_copies(tmp_path: Path) -> None:
    proxies = make_proxies(tmp_path)
    out = tmp_path / "pfm"
    export_labels(proxies, out, format="pfm", with_confidence=True, link_images=False)
    for index, key in enumerate(KEYS):
        labels = read_pfm(out / "disp_left" / f"{key}.pfm")
        expected = hand_labels(index)
        np.testing.assert_array_equal(labels, np.where(np.isfinite(expected), expected, np.inf))
        np.testing.assert_array_equal(read_pfm(out / "confidence_left" / f"{key}.pfm"), hand_confidence(index))
        copy = out / "left" / f"{key}.png"
        assert not copy.is_symlink() and copy.read_bytes() == (tmp_path / "rig" / "left" / f"{key}.png").read_bytes()
    assert (out / "filenames.txt").read_text().splitlines()[0] == "left/seq1/000000.png right/seq1/000000.png disp_left/seq1/000000.pfm"
    assert "copies of the original images" in (out / "README.txt").read_text()


def test_npz_layout_exact_arrays(tmp_path: Path) -> None:
    proxies = make_proxies(tmp_path)
    out = tmp_path / "npz"
    export_labels(proxies, out, format="npz", include=["seq1/*"])
    assert sorted(p.relative_to(out / "labels").as_posix() for p in (out / "labels").rglob("*.npz")) == ["seq1/000000.npz", "seq1/000001.npz"]
    for index, key in enumerate(KEYS[:2]):
        with np.load(out / "labels" / f"{key}.npz") as arrays:
            assert sorted(arrays.files) == ["confidence", "disparity", "valid"]
            expected = hand_labels(index)
            np.testing.assert_array_equal(arrays["valid"], np.isfinite(expected))
            np.testing.assert_array_equal(arrays["disparity"], np.nan_to_num(expected, nan=0.0))
            assert arrays["disparity"].dtype == np.float32
            np.testing.assert_array_equal(arrays["confidence"], hand_confidence(index))


# ---------------------------------------------------------------------------------------------
# round trip through the dataset reader (and `pseudolabel train --data`)


@pytest.mark.parametrize("format_name", ["kitti", "pfm"])
def test_round_trip_through_discover_pairs(tmp_path: Path, format_name: str) -> None:
    proxies = make_proxies(tmp_path)
    out = tmp_path / format_name
    export_labels(proxies, out, format=format_name)
    pairs = discover_pairs([out])
    names = [key.replace("/", "__") for key in KEYS] if format_name == "kitti" else list(KEYS)
    assert [pair.key for pair in pairs] == names
    for index, pair in enumerate(pairs):
        assert pair.gt_left is not None
        read_back = read_disparity(pair.gt_left, pair.gt_scale)
        labels = hand_labels(index)
        np.testing.assert_array_equal(np.isfinite(read_back), np.isfinite(labels))  # the same pixels labelled
        known = np.isfinite(labels)
        assert np.abs(read_back[known] - labels[known]).max() <= 1 / 256


def test_round_trip_through_train_command(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    proxies = make_proxies(tmp_path)
    out = tmp_path / "kitti"
    assert run("export", "--proxies", str(proxies), "--out", str(out)).exit_code == 0
    model = tmp_path / "tiny.pt"
    args = ["train", "--data", str(out), "--arch", "tiny", "--steps", "1", "--batch-size", "1", "--crop", "32x64"]
    result = run(*args, "--out", str(model), "--device", "cpu", "--threads", "1", "--quiet", "--no-amp")
    assert result.exit_code == 0, result.output
    assert model.is_file()


# ---------------------------------------------------------------------------------------------
# command line and refusals: one line, exit 1, nothing half-written


def test_command_writes_readme_with_the_command_and_overwrite_replaces(tmp_path: Path) -> None:
    proxies = make_proxies(tmp_path)
    out = tmp_path / "kitti"
    result = run("export", "--proxies", str(proxies), "--out", str(out), "--keys", "seq1/*")
    assert result.exit_code == 0, result.output
    assert "wrote 2 pairs" in result.output
    assert f"command: pseudolabel export --proxies {proxies} --out {out} --format kitti --keys 'seq1/*'" in (out / "README.txt").read_text()
    result = run("export", "--proxies", str(proxies), "--out", str(out), "--overwrite", "--format", "pfm")
    assert result.exit_code == 0, result.output
    assert (out / "disp_left").is_dir() and not (out / "disp_occ_0").exists()
    assert not list(tmp_path.glob("kitti.*"))


def _refused(args: list[str], fragment: str) -> None:
    result = run("export", *args)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.strip().splitlines() if not line.startswith("export: ")]  # progress lines aside
    assert len(errors) == 1 and errors[0].startswith("Error: ") and fragment in errors[0], result.output


def test_refusals_are_one_line_and_leave_nothing(tmp_path: Path) -> None:
    proxies = make_proxies(tmp_path)
    out = tmp_path / "out"
    base = ["--proxies", str(proxies), "--out", str(out)]
    _refused([*base, "--format", "png"], "choose one of kitti, pfm, npz")
    assert not out.exists()
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    _refused(base, "exists and is not empty; pass --overwrite")
    assert os.listdir(out) == ["mine.txt"]
    unlabelled = make_proxies(tmp_path / "bare", labels=False)
    _refused(["--proxies", str(unlabelled), "--out", str(tmp_path / "o2")], "run `pseudolabel labels --proxies")
    assert not (tmp_path / "o2").exists()
    unscored = make_proxies(tmp_path / "unscored", scored=False)
    _refused(["--proxies", str(unscored), "--out", str(tmp_path / "o3"), "--with-confidence"], "has no confidence/ccnn")
    assert not (tmp_path / "o3").exists()


def test_collision_is_refused(tmp_path: Path) -> None:
    proxies = make_proxies(tmp_path, keys=("a/b", "a__b"))
    out = tmp_path / "out"
    _refused(["--proxies", str(proxies), "--out", str(out)], "pair keys 'a/b' and 'a__b' both give the KITTI file name 'a__b'")
    assert not out.exists()
    assert run("export", "--proxies", str(proxies), "--out", str(out), "--format", "pfm").exit_code == 0  # sub-folders keep them apart


def test_a_label_kitti_cannot_hold_stops_after_writing_and_leaves_nothing(tmp_path: Path) -> None:
    proxies = make_proxies(tmp_path)
    with create_or_open_proxies(proxies, PARAMS) as store:
        bad = hand_labels(2)
        bad[0, 0] = -1.0
        store.write(KEYS[2], "labels", bad, attrs={"tau": 0.5, "measure": "ccnn"})
    out = tmp_path / "out"
    _refused(["--proxies", str(proxies), "--out", str(out)], "negative labels")
    assert not out.exists() and not list(tmp_path.glob("out.*"))
    assert run("export", "--proxies", str(proxies), "--out", str(out), "--format", "pfm").exit_code == 0
