"""Tests of the synthetic stereo generator (pseudolabel.synth) and the ``pseudolabel synth`` command.

Exactness is checked three ways:

* Warping the right image with the left ground truth (linear interpolation along the row) reproduces
  the left image on every non-occluded pixel whose two interpolated right pixels show the same
  surface: the warped value lies within the range of that surface's texture over +-2 pixels of the
  row (an exact bound for |a| < 0.5, since the right view is the texture resampled at
  ``x_l = (x_r + b y + c) / (1 - a)``); on average the 8-bit error is below 1 gray level.
* The right view rendered by inverse mapping agrees with an independent forward projection of the
  scene (every surface sampled 32 times per pixel and splatted with a z-buffer).
* The occlusion masks agree with a brute-force visibility test on a 1/16-pixel grid and with the two
  disparity maps (left-right consistency).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace as dataclass_replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.ndimage import maximum_filter1d, minimum_filter1d

import pseudolabel.synth.files as synth
import pseudolabel.synth.scene as scene_module
from pseudolabel.cli.main import main
from pseudolabel.cli.synth import object_range
from pseudolabel.errors import InputError
from pseudolabel.io import read_image
from pseudolabel.synth.files import (
    preview_grid,
    read_synth_meta,
    read_synth_pair,
    write_synth_dataset,
    write_synth_preview,
)
from pseudolabel.synth.scene import (
    DATASET_FOLDERS,
    SynthConfig,
    pair_seed,
    pair_stream,
    render_pair,
)
from pseudolabel.viz.colour import darken, disparity_image

SMALL = SynthConfig(width=128, height=80, max_disp=24.0)
EXACT = SMALL.without_photometric()
SEEDS = (0, 1, 2, 3)


def _lerp_rows(image: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample (..., H, W) ``image`` at row positions ``x`` (H, W) by linear interpolation along x.

    Returns the samples and a bool (H, W) telling where both neighbours are inside the image.
    """
    width = image.shape[-1]
    first = np.floor(x).astype(np.int64)
    inside = (first >= 0) & (first + 1 <= width - 1)
    first = np.clip(first, 0, width - 2)
    weight = x - first
    rows = np.arange(x.shape[0])[:, None]
    return image[..., rows, first] * (1 - weight) + image[..., rows, first + 1] * weight, inside


def _same_surface_neighbours(scene: scene_module._Scene) -> np.ndarray:
    """Left pixels, not occluded, whose match falls between two right pixels of the same layer."""
    height, width = scene.labels_left.shape
    x_right = np.arange(width)[None, :] - scene.pair.disp_left.astype(np.float64)
    first = np.clip(np.floor(x_right).astype(np.int64), 0, width - 2)
    rows = np.arange(height)[:, None]
    inside = (x_right >= 0) & (x_right <= width - 1)
    same = (scene.labels_right[rows, first] == scene.labels_left) & (scene.labels_right[rows, first + 1] == scene.labels_left)
    return inside & same & ~scene.pair.occ_left


# ------------------------------------------------------------------------------- config, API


def test_config_round_trip_and_validation() -> None:
    config = SynthConfig(width=200, height=100, max_disp=40.0, texture_mix=(("stripes", 1.0), ("flat", 2.0)))
    assert SynthConfig.from_json(config.to_json()) == config
    assert json.loads(config.to_json())["max_disp"] == 40.0
    for bad in (
        {"max_disp": 0.0},
        {"max_disp": 600.0},
        {"max_slope": 0.5},
        {"min_objects": 5, "max_objects": 2},
        {"texture_mix": (("marble", 1.0),)},
        {"noise_probability": 1.5},
        {"width": 8},
    ):
        with pytest.raises(InputError):
            SynthConfig(**bad)
    with pytest.raises(InputError, match="unknown parameters"):
        SynthConfig.from_dict({"widht": 3})


def test_pair_types_and_disparity_range() -> None:
    default = render_pair(SynthConfig(), 0)
    assert default.left.shape == (256, 512, 3) and default.disp_right.shape == (256, 512)
    assert 0 < default.disp_left.min() and default.disp_left.max() < 96 and default.disp_right.max() < 96
    for seed in SEEDS:
        pair = render_pair(SMALL, seed)
        assert pair.left.shape == pair.right.shape == (80, 128, 3)
        assert pair.left.dtype == pair.right.dtype == np.uint8
        for disparity in (pair.disp_left, pair.disp_right):
            assert disparity.dtype == np.float32 and disparity.shape == (80, 128)
            assert np.isfinite(disparity).all()
            assert disparity.min() > 0 and disparity.max() < SMALL.max_disp
        assert pair.occ_left.dtype == pair.occ_right.dtype == np.bool_
        # the left border of the left view always falls outside the right image
        assert pair.occ_left[:, 0].all() and pair.occ_right[:, -1].all()
        assert 0.01 < pair.occ_left.mean() < 0.6 and 0.01 < pair.occ_right.mean() < 0.6
        # some depth structure: foreground objects in front of the background
        assert pair.disp_left.max() - pair.disp_left.min() > 3.0


def test_import_does_not_pull_torch() -> None:
    code = "import sys, pseudolabel.synth, pseudolabel.cli.synth; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ----------------------------------------------------------------------------------- exactness


def test_warping_right_with_left_ground_truth_reproduces_left() -> None:
    """Per-pixel bound on the float views, and the mean 8-bit error on the written uint8 views."""
    for seed in SEEDS:
        scene = scene_module._render_scene(EXACT, seed)
        pair = scene.pair
        x_right = np.arange(EXACT.width)[None, :] - pair.disp_left.astype(np.float64)
        selected = _same_surface_neighbours(scene)
        assert selected.mean() > 0.6  # most of the image is tested
        warped, _ = _lerp_rows(scene.exact_right.astype(np.float64), x_right)

        # exact bound: within the surface texture's range over x-2 .. x+2 on the same row
        low = np.full(scene.exact_left.shape, np.inf)
        high = np.full(scene.exact_left.shape, -np.inf)
        for index, layer in enumerate(scene.layers):
            h, w = layer.shape
            rows, cols = np.nonzero(scene.labels_left == index)
            window_low = minimum_filter1d(layer.texture, 5, axis=2, mode="nearest")
            window_high = maximum_filter1d(layer.texture, 5, axis=2, mode="nearest")
            low[:, rows, cols] = window_low[:, rows - layer.y0, cols - layer.x0]
            high[:, rows, cols] = window_high[:, rows - layer.y0, cols - layer.x0]
        # sanity of the windows: the left view is the texture itself at integer columns
        assert ((low <= scene.exact_left) & (scene.exact_left <= high)).all()
        inside = (warped >= low - 1e-3) & (warped <= high + 1e-3)
        assert inside[:, selected].all()

        # the written 8-bit images: mean error below one gray level
        warped_u8, _ = _lerp_rows(pair.right.transpose(2, 0, 1).astype(np.float64), x_right)
        error = np.abs(warped_u8 - pair.left.transpose(2, 0, 1))[:, selected]
        assert error.mean() < 1.0
        # the check has teeth: a ground truth off by one pixel is far worse
        shifted, _ = _lerp_rows(pair.right.transpose(2, 0, 1).astype(np.float64), x_right - 1.0)
        wrong = np.abs(shifted - pair.left.transpose(2, 0, 1))[:, selected]
        assert wrong.mean() > 2.5 * error.mean()


def test_smooth_textures_warp_within_rounding_error() -> None:
    """With smooth (gradient) textures, interpolation error vanishes: 8-bit rounding bounds the error."""
    config = dataclass_replace(EXACT, texture_mix=(("gradient", 1.0),), shading_probability=0.0)
    for seed in SEEDS:
        scene = scene_module._render_scene(config, seed)
        pair = scene.pair
        x_right = np.arange(config.width)[None, :] - pair.disp_left.astype(np.float64)
        selected = _same_surface_neighbours(scene)
        warped, _ = _lerp_rows(pair.right.transpose(2, 0, 1).astype(np.float64), x_right)
        error = np.abs(warped - pair.left.transpose(2, 0, 1))[:, selected]
        # rounding both views to 8 bits accounts for 1 level; the clamped raster edges add a little
        assert error.mean() < 0.5
        assert np.percentile(error, 99.5) <= 1.25
        assert error.max() <= 2.0


def _row_intervals(scene: scene_module._Scene, y: int, view: str) -> np.ndarray:
    """Every layer's footprint on image row ``y`` as intervals of ``view`` x coordinates (pixels).

    Independent of the renderer's per-pixel lookups: the runs of each mask row, as the pixel squares
    ``[start - 0.5, stop - 0.5)`` of the left-view canvas, are projected to the right view as whole
    intervals (``x_r = (1 - a) x_l - b y - c``). Returns rows ``(low, high, layer, a, b, c)``.
    """
    rows = []
    for index, layer in enumerate(scene.layers):
        h, w = layer.shape
        if not layer.y0 <= y < layer.y0 + h:
            continue
        covered = np.ones(w, bool) if layer.mask is None else layer.mask[y - layer.y0]
        padded = np.concatenate([[False], covered, [False]])
        starts = np.nonzero(padded[1:-1] & ~padded[:-2])[0]
        stops = np.nonzero(padded[1:-1] & ~padded[2:])[0] + 1
        low, high = layer.x0 + starts - 0.5, layer.x0 + stops - 0.5
        if view == "right":
            low = (1 - layer.a) * low - layer.b * y - layer.c
            high = (1 - layer.a) * high - layer.b * y - layer.c
        rows += [(lo, hi, index, layer.a, layer.b, layer.c) for lo, hi in zip(low, high)]
    return np.array(rows)


def _nearest_layer(scene: scene_module._Scene, y: int, positions: np.ndarray, view: str) -> tuple[np.ndarray, np.ndarray]:
    """Layer seen at continuous x ``positions`` of row ``y`` in ``view``, and its disparity (pixels)."""
    low, high, index, a, b, c = _row_intervals(scene, y, view).T
    query = positions[:, None]
    covered = (query >= low) & (query < high)
    if view == "right":
        disparity = (query + b * y + c) / (1 - a) - query
    else:
        disparity = a * query + b * y + c
    disparity = np.where(covered, disparity, -np.inf)
    best = disparity.argmax(axis=1)  # ties: the earlier layer, as the renderer's strict z-test
    return index[best].astype(int), disparity[np.arange(len(positions)), best]


def test_both_views_match_exact_interval_projection() -> None:
    for seed in SEEDS:
        scene = scene_module._render_scene(EXACT, seed)
        columns = np.arange(EXACT.width, dtype=np.float64)
        for y in range(EXACT.height):
            for view, labels, disparity in (
                ("left", scene.labels_left, scene.pair.disp_left),
                ("right", scene.labels_right, scene.pair.disp_right),
            ):
                expected_labels, expected_disparity = _nearest_layer(scene, y, columns, view)
                assert np.array_equal(expected_labels, labels[y]), (seed, y, view)
                assert np.abs(expected_disparity - disparity[y]).max() < 1e-4


def test_occlusion_masks_match_exact_visibility() -> None:
    """A point is visible in the other view iff it is inside it and the nearest surface there."""
    mismatches, in_frame_occluded, total = 0, 0, 0
    for seed in SEEDS:
        scene = scene_module._render_scene(EXACT, seed)
        pair = scene.pair
        width = EXACT.width
        for y in range(EXACT.height):
            for labels, disparity, occluded, sign, other in (
                (scene.labels_left, pair.disp_left, pair.occ_left, -1.0, "right"),
                (scene.labels_right, pair.disp_right, pair.occ_right, 1.0, "left"),
            ):
                target = np.arange(width) + sign * disparity[y].astype(np.float64)
                in_frame = (target >= -0.5) & (target < width - 0.5)
                seen, _ = _nearest_layer(scene, y, target, other)
                visible = in_frame & (seen == labels[y])
                mismatches += int((visible == occluded[y]).sum())
                in_frame_occluded += int((occluded[y] & in_frame).sum())
                total += width
    assert in_frame_occluded > 0.02 * total  # real occlusions, not only the image borders
    assert mismatches <= 1e-4 * total  # float32 disparities may flip a point exactly on an edge


def test_left_right_consistency_of_ground_truth() -> None:
    """Only the public outputs: disparities and occlusion masks agree with each other."""
    for seed in SEEDS:
        scene = scene_module._render_scene(SMALL, seed)
        pair = scene.pair
        height, width = pair.disp_left.shape
        rows = np.arange(height)[:, None]
        for disparity, other, occluded, sign in (
            (pair.disp_left, pair.disp_right, pair.occ_left, -1.0),
            (pair.disp_right, pair.disp_left, pair.occ_right, 1.0),
        ):
            target = np.arange(width)[None, :] + sign * disparity.astype(np.float64)
            in_frame = (target >= -0.5) & (target < width - 0.5)
            nearest = np.clip(np.floor(target + 0.5).astype(np.int64), 0, width - 1)
            matched = other[rows, nearest]
            # visible pixels: the other view's disparity at the match is the same surface
            assert (np.abs(matched - disparity) <= 1.0)[~occluded].mean() > 0.99
            # occluded pixels inside the frame: something nearer is seen there instead
            assert (matched > disparity + 0.5)[occluded & in_frame].mean() > 0.9
        # exact interior agreement: linear interpolation of the right disparity along a plane
        selected = _same_surface_neighbours(scene)
        x_right = np.arange(width)[None, :] - pair.disp_left.astype(np.float64)
        interpolated, _ = _lerp_rows(pair.disp_right.astype(np.float64), x_right)
        assert np.abs(interpolated - pair.disp_left)[selected].max() < 1e-3


def test_photometric_changes_keep_the_geometry() -> None:
    for seed in SEEDS:
        with_photometry = render_pair(dataclass_replace(SMALL, gain_probability=1.0, noise_probability=1.0), seed)
        without = render_pair(EXACT, seed)
        assert np.array_equal(with_photometry.disp_left, without.disp_left)
        assert np.array_equal(with_photometry.occ_right, without.occ_right)
        assert np.abs(with_photometry.right.astype(int) - without.right).mean() > 1.0


# ------------------------------------------------------------------------------ reproducibility


def test_same_seed_same_pair_different_seed_different_scene() -> None:
    first, again, other = render_pair(SMALL, 7), render_pair(SMALL, 7), render_pair(SMALL, 8)
    for name in ("left", "right", "disp_left", "disp_right", "occ_left", "occ_right"):
        assert np.array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.disp_left, other.disp_left)
    assert np.abs(first.left.astype(int) - other.left).mean() > 5


def test_pair_stream_workers_are_disjoint_and_reproducible() -> None:
    single = pair_stream(EXACT, 3)
    sequence = [next(single) for _ in range(4)]
    worker0 = pair_stream(EXACT, 3, worker_id=0, num_workers=2)
    worker1 = pair_stream(EXACT, 3, worker_id=1, num_workers=2)
    interleaved = [next(worker0), next(worker1), next(worker0), next(worker1)]
    for expected, got in zip(sequence, interleaved):
        assert np.array_equal(expected.left, got.left)
        assert np.array_equal(expected.disp_right, got.disp_right)
    assert not np.array_equal(sequence[0].disp_left, sequence[1].disp_left)
    assert np.array_equal(sequence[2].left, render_pair(EXACT, pair_seed(3, 2)).left)
    assert len({pair_seed(seed, index) for seed in range(20) for index in range(50)}) == 1000
    with pytest.raises(InputError):
        next(pair_stream(EXACT, 0, worker_id=2, num_workers=2))


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_dataset_files_are_bit_identical_for_a_seed(tmp_path: Path) -> None:
    tiny = SynthConfig(width=64, height=48, max_disp=12.0)
    write_synth_dataset(tmp_path / "a", tiny, 3, seed=5)
    write_synth_dataset(tmp_path / "b", tiny, 3, seed=5)
    write_synth_dataset(tmp_path / "c", tiny, 3, seed=6)
    first, second, third = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b"), _tree_bytes(tmp_path / "c")
    assert first == second
    assert len(first) == 6 * 3 + 1
    assert first["left/000000.png"] != third["left/000000.png"]
    assert first["disp_left/000002.pfm"] != third["disp_left/000002.pfm"]
    # the files hold exactly the rendered arrays
    on_disk = read_synth_pair(tmp_path / "a", 2)
    rendered = render_pair(tiny, pair_seed(5, 2))
    for name in ("left", "right", "disp_left", "disp_right", "occ_left", "occ_right"):
        assert np.array_equal(getattr(on_disk, name), getattr(rendered, name)), name


# ------------------------------------------------------------------------------ CLI and resume


def test_cli_writes_layout_and_meta(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    preview = tmp_path / "preview.png"
    arguments = ["synth", "--out", str(out), "--n", "2", "--size", "72x40", "--max-disp", "16", "--seed", "4"]
    result = CliRunner().invoke(main, arguments + ["--preview", str(preview), "--preview-count", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    for folder in DATASET_FOLDERS:
        suffix = ".pfm" if folder.startswith("disp") else ".png"
        assert sorted(path.name for path in (out / folder).iterdir()) == [f"00000{i}{suffix}" for i in range(2)]
    occlusion = read_image(out / "occ_left" / "000000.png")
    assert occlusion.dtype == np.uint8 and set(np.unique(occlusion)) <= {0, 255} and (occlusion == 255).any()
    meta = read_synth_meta(out)
    assert meta["seed"] == 4 and meta["n"] == 2 and meta["complete"] is True
    config = SynthConfig.from_dict(meta["config"])
    assert (config.width, config.height, config.max_disp) == (72, 40, 16.0)
    pair = read_synth_pair(out, 1)
    assert np.array_equal(pair.disp_left, render_pair(config, pair_seed(4, 1)).disp_left)
    picture = read_image(preview)
    assert picture.shape == (2 * 20 + 4, 4 * 36 + 3 * 4, 3)  # --preview-scale 0.5 by default

    # a different seed in the same folder is refused with a one-line error and exit code 1
    refused = CliRunner().invoke(main, arguments[:-1] + ["5", "--quiet"])
    assert refused.exit_code == 1 and "Error:" in refused.output and "--seed" in refused.output
    bad_size = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "x"), "--size", "72by40"])
    assert bad_size.exit_code == 1 and "--size" in bad_size.output
    assert "Example" in CliRunner().invoke(main, ["synth", "--help"]).output


def test_resume_after_interruption(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = SynthConfig(width=64, height=48, max_disp=12.0)
    write_synth_dataset(tmp_path / "reference", tiny, 4, seed=2)
    reference = _tree_bytes(tmp_path / "reference")

    out = tmp_path / "resumed"
    real_write_pfm = synth.write_pfm
    calls = {"count": 0}

    def failing_write_pfm(path: os.PathLike[str], array: np.ndarray) -> None:
        calls["count"] += 1
        if calls["count"] == 5:  # pair 2's left disparity
            raise KeyboardInterrupt
        real_write_pfm(path, array)

    monkeypatch.setattr(synth, "write_pfm", failing_write_pfm)
    with pytest.raises(KeyboardInterrupt):
        write_synth_dataset(out, tiny, 4, seed=2)
    monkeypatch.setattr(synth, "write_pfm", real_write_pfm)
    partial = _tree_bytes(out)
    assert not [name for name in partial if name.endswith(".tmp")]
    assert json.loads(partial["meta.json"])["complete"] is False
    for name, payload in partial.items():
        if name != "meta.json":
            assert payload == reference[name]  # whatever was written is final
    kept = (out / "left" / "000000.png").stat().st_mtime_ns

    assert write_synth_dataset(out, tiny, 4, seed=2) == 2  # pairs 2 and 3 only
    assert _tree_bytes(out) == reference
    assert (out / "left" / "000000.png").stat().st_mtime_ns == kept
    (out / "occ_right" / "000001.png").unlink()
    assert write_synth_dataset(out, tiny, 4, seed=2) == 1
    assert _tree_bytes(out) == reference
    with pytest.raises(InputError, match="other parameters"):
        write_synth_dataset(out, SynthConfig(width=64, height=48, max_disp=13.0), 4, seed=2)


def test_preview_grid_layout() -> None:
    pairs = [render_pair(SMALL, seed) for seed in (0, 1)]
    grid = preview_grid(pairs, SMALL.max_disp, gap=2)
    assert grid.shape == (2 * 80 + 2, 4 * 128 + 3 * 2, 3) and grid.dtype == np.uint8
    assert np.array_equal(grid[:80, :128], pairs[0].left)
    assert np.array_equal(grid[82:, 130:258], pairs[1].right)
    half = preview_grid(pairs, SMALL.max_disp, gap=2, scale=0.5)
    assert half.shape == (2 * 40 + 2, 4 * 64 + 3 * 2, 3)
    assert abs(float(half[:40, :64].mean()) - float(pairs[0].left.mean())) < 2.0

    # the disparity tiles are the package's disparity colours over [0, max_disp], occluded pixels darkened
    expected = darken(disparity_image(pairs[0].disp_left, 0.0, SMALL.max_disp), pairs[0].occ_left)
    assert np.array_equal(grid[:80, 2 * 130 : 2 * 130 + 128], expected)
    assert np.array_equal(grid[82:, 3 * 130 :], darken(disparity_image(pairs[1].disp_right, 0.0, SMALL.max_disp), pairs[1].occ_right))


class _Recorder:
    """A :class:`pseudolabel.progress.Progress` that records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def start(self, label: str, total: int, done: int = 0) -> None:
        self.calls.append(("start", label, total, done))

    def advance(self, count: int = 1, status: str = "") -> None:
        self.calls.append(("advance", count, status))

    def finish(self) -> None:
        self.calls.append(("finish",))


def test_write_synth_dataset_reports_progress_and_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny = SynthConfig(width=48, height=32, max_disp=8.0)
    recorder = _Recorder()
    assert write_synth_dataset(tmp_path / "d", tiny, 3, seed=1, progress=recorder) == 3
    assert recorder.calls == [
        ("start", "synth", 3, 0),
        ("advance", 1, "pair 1/3"),
        ("advance", 1, "pair 2/3"),
        ("advance", 1, "pair 3/3"),
        ("finish",),
    ]
    (tmp_path / "d" / "right" / "000001.png").unlink()
    resumed = _Recorder()
    assert write_synth_dataset(tmp_path / "d", tiny, 3, seed=1, progress=resumed) == 1
    assert resumed.calls == [("start", "synth", 1, 2), ("advance", 1, "pair 2/3"), ("finish",)]
    assert write_synth_dataset(tmp_path / "d", tiny, 3, seed=1) == 0  # no progress object: silent
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_write_synth_preview_is_the_grid_of_the_first_pairs(tmp_path: Path) -> None:
    tiny = SynthConfig(width=48, height=32, max_disp=8.0)
    path = write_synth_preview(tmp_path / "sub" / "p.png", tiny, seed=3, count=2, scale=1.0)
    expected = preview_grid([render_pair(tiny, pair_seed(3, index)) for index in range(2)], tiny.max_disp)
    assert np.array_equal(read_image(path), expected)
    with pytest.raises(InputError, match="--preview-count"):
        write_synth_preview(tmp_path / "q.png", tiny, seed=3, count=0)
    with pytest.raises(InputError, match=r"\.png"):
        write_synth_preview(tmp_path / "q.jpg", tiny, seed=3)
    assert not (tmp_path / "q.png").exists() and not (tmp_path / "q.jpg").exists()


def test_cli_size_and_object_options(tmp_path: Path) -> None:
    runner = CliRunner()
    for text in ("72by40", "72x", "x40"):
        result = runner.invoke(main, ["synth", "--preview", str(tmp_path / "p.png"), "--size", text])
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert "--size" in result.output and "WIDTHxHEIGHT" in result.output and "512x256" in result.output
    result = runner.invoke(main, ["synth", "--preview", str(tmp_path / "p.png"), "--size", "64x40", "--max-disp", "8", "--preview-count", "1"])
    assert result.exit_code == 0, result.output
    assert read_image(tmp_path / "p.png").shape == (20, 4 * 32 + 3 * 4, 3)  # width first, scale 0.5
    assert "preview of 1 pairs written" in result.output
    assert object_range(None, None) == (SynthConfig.min_objects, SynthConfig.max_objects)
    assert object_range(20, None) == (20, 20) and object_range(2, None) == (2, SynthConfig.max_objects)
    assert object_range(None, 3) == (3, 3) and object_range(None, 9) == (SynthConfig.min_objects, 9)
    assert object_range(1, 2) == (1, 2)
