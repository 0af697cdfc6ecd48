"""Pair discovery (pseudolabel.datasets) on every supported layout, using the shipped fixtures and
small layouts built in a temporary folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pseudolabel.datasets import discover_pairs
from pseudolabel.errors import InputError
from pseudolabel.io import read_disparity, read_image, write_image, write_pfm

DATA = Path(__file__).parent / "data"


def small_image(path: Path, seed: int, shape: tuple[int, ...] = (12, 20)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, rng.integers(0, 255, shape, dtype=np.uint8))
    return path


def test_middlebury_fixtures_with_ground_truth_scales() -> None:
    pairs = discover_pairs([DATA / "middlebury"])
    assert [p.key for p in pairs] == ["Baby1", "tsukuba", "venus"]
    by_key = {p.key: p for p in pairs}
    assert by_key["Baby1"].left.name == "view1.png" and by_key["Baby1"].right.name == "view5.png"
    assert by_key["tsukuba"].left.name == "imL.png" and by_key["tsukuba"].right.name == "imR.png"
    assert set(by_key["tsukuba"].masks) == {"nonocc", "all", "disc"}
    # Largest ground-truth disparities listed by the data's manifest (gt_max): the scales are right.
    for key, gt_max in (("Baby1", 45.33), ("tsukuba", 14.0), ("venus", 19.75)):
        pair = by_key[key]
        gt = read_disparity(pair.gt_left, pair.gt_scale)
        assert np.nanmax(gt) == pytest.approx(gt_max, abs=0.01)
        assert gt.shape == read_image(pair.left).shape[:2]


def test_paths_are_kept_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(DATA)
    pairs = discover_pairs(["middlebury"])
    assert pairs[0].left == Path("middlebury/Baby1/view1.png") and pairs[0].gt_left == Path("middlebury/Baby1/disp1.png")


def test_scene_folder_itself_as_root() -> None:
    pairs = discover_pairs([DATA / "middlebury" / "venus"])
    assert [p.key for p in pairs] == ["venus"]


def test_kitti_fixture_keys_and_ground_truth() -> None:
    training = DATA / "kitti2012" / "training"
    pairs = discover_pairs([training])
    assert [p.key for p in pairs] == ["000070_10"]
    pair = pairs[0]
    assert pair.left == training / "image_0" / "000070_10.png" and pair.right == training / "image_1" / "000070_10.png"
    assert pair.gt_left == training / "disp_noc" / "000070_10.png" and pair.gt_scale == 256.0
    gt = read_disparity(pair.gt_left, pair.gt_scale)
    assert 0 < np.nanmax(gt) < 256
    # one level up, the layout's folder prefixes the key
    assert [p.key for p in discover_pairs([DATA / "kitti2012"])] == ["training/000070_10"]


def test_kitti_prefers_colour_and_falls_back_to_disp_occ(tmp_path: Path) -> None:
    root = tmp_path / "kitti"
    for folder in ("image_0", "image_1", "colored_0", "colored_1"):
        for frame in ("000001_10", "000000_10"):
            small_image(root / folder / f"{frame}.png", 0)
    small_image(root / "disp_occ" / "000000_10.png", 1)
    pairs = discover_pairs([root])
    assert [p.key for p in pairs] == ["000000_10", "000001_10"]
    assert all(p.left.parent.name == "colored_0" and p.right.parent.name == "colored_1" for p in pairs)
    assert pairs[0].gt_left == root / "disp_occ" / "000000_10.png" and pairs[1].gt_left is None


def test_kitti_2015_layout(tmp_path: Path) -> None:
    root = tmp_path / "training"
    for folder in ("image_2", "image_3"):
        small_image(root / folder / "000005_10.png", 0)
    small_image(root / "disp_noc_0" / "000005_10.png", 1)
    small_image(root / "disp_occ_0" / "000005_10.png", 2)
    (pair,) = discover_pairs([root])
    assert pair.key == "000005_10" and pair.gt_left == root / "disp_noc_0" / "000005_10.png" and pair.gt_scale == 256


def test_kitti_missing_right_frame_is_unpaired(tmp_path: Path) -> None:
    root = tmp_path / "kitti"
    small_image(root / "image_0" / "000000_10.png", 0)
    small_image(root / "image_0" / "000001_10.png", 0)
    small_image(root / "image_1" / "000000_10.png", 0)
    with pytest.raises(InputError, match=r"1 left image\(s\) without a right partner: .*000001_10.png.*--skip-unpaired"):
        discover_pairs([root])
    assert [p.key for p in discover_pairs([root], skip_unpaired=True)] == ["000000_10"]


def test_middlebury_2014_calib_2001_and_2003(tmp_path: Path) -> None:
    scene = tmp_path / "Adirondack"
    small_image(scene / "im0.png", 0)
    small_image(scene / "im1.png", 1)
    (scene / "calib.txt").write_text("cam0=[1 0 0; 0 1 0; 0 0 1]\ndoffs=0\nbaseline=100\nwidth=20\nheight=12\nndisp=14\nvmin=2\nvmax=11\n")
    write_pfm(scene / "disp0GT.pfm", np.full((12, 20), 5.5, np.float32))
    small_image(scene / "mask0nocc.png", 2)
    barn = tmp_path / "barn1"
    small_image(barn / "im2.ppm", 0, (12, 20, 3))
    small_image(barn / "im6.ppm", 1, (12, 20, 3))
    small_image(barn / "disp2.pgm", 2)
    teddy = tmp_path / "teddy"
    small_image(teddy / "im2.png", 0)
    small_image(teddy / "im6.png", 1)
    small_image(teddy / "disp2.png", 2)
    by_key = {p.key: p for p in discover_pairs([tmp_path])}
    assert set(by_key) == {"Adirondack", "barn1", "teddy"}
    assert by_key["Adirondack"].max_disp == 14 and by_key["Adirondack"].gt_scale is None
    assert np.nanmax(read_disparity(by_key["Adirondack"].gt_left, by_key["Adirondack"].gt_scale)) == 5.5
    assert by_key["Adirondack"].masks == {"nonocc": scene / "mask0nocc.png"}
    assert by_key["barn1"].gt_scale == 8 and by_key["barn1"].left.suffix == ".ppm"
    assert by_key["teddy"].gt_scale == 4 and by_key["teddy"].max_disp is None


def test_middlebury_bad_calib_is_reported(tmp_path: Path) -> None:
    small_image(tmp_path / "s" / "im0.png", 0)
    small_image(tmp_path / "s" / "im1.png", 1)
    (tmp_path / "s" / "calib.txt").write_text("ndisp=abc\n")
    with pytest.raises(InputError, match=r"calib.txt: ndisp='abc'.*--max-disp"):
        discover_pairs([tmp_path])


def test_middlebury_scene_without_partner_is_unpaired(tmp_path: Path) -> None:
    shutil.copytree(DATA / "middlebury" / "Baby1", tmp_path / "Baby1")
    (tmp_path / "Baby1" / "view5.png").unlink()
    shutil.copytree(DATA / "middlebury" / "venus", tmp_path / "venus")
    with pytest.raises(InputError, match="Baby1/view1.png"):
        discover_pairs([tmp_path])
    assert [p.key for p in discover_pairs([tmp_path], skip_unpaired=True)] == ["venus"]


def test_synth_layout_and_nested_prefix(tmp_path: Path) -> None:
    root = tmp_path / "synth"
    for index in range(3):
        stem = f"{index:06d}"
        small_image(root / "left" / f"{stem}.png", index, (12, 20, 3))
        small_image(root / "right" / f"{stem}.png", index + 10, (12, 20, 3))
        write_pfm(root / "disp_left" / f"{stem}.pfm", np.full((12, 20), index + 1.0, np.float32))
        write_pfm(root / "disp_right" / f"{stem}.pfm", np.full((12, 20), index + 1.0, np.float32))
        small_image(root / "occ_left" / f"{stem}.png", 0)
        small_image(root / "occ_right" / f"{stem}.png", 0)
    pairs = discover_pairs([root])
    assert [p.key for p in pairs] == ["000000", "000001", "000002"]
    for index, pair in enumerate(pairs):
        assert pair.gt_left == root / "disp_left" / f"{index:06d}.pfm" and pair.gt_scale is None
        assert pair.masks == {"occlusion": root / "occ_left" / f"{index:06d}.png"}
        assert float(np.nanmax(read_disparity(pair.gt_left))) == index + 1.0
    assert [p.key for p in discover_pairs([tmp_path])] == ["synth/000000", "synth/000001", "synth/000002"]


def test_left_right_folders_recursive_with_mixed_extensions(tmp_path: Path) -> None:
    left, right = tmp_path / "L", tmp_path / "R"
    small_image(left / "b.png", 0)
    small_image(right / "b.jpg", 1)
    small_image(left / "seq1" / "a.tif", 2)
    small_image(right / "seq1" / "a.tif", 3)
    small_image(left / "c.ppm", 4, (12, 20, 3))
    small_image(right / "c.pgm", 5)
    (left / "notes.txt").write_text("not an image")
    small_image(left / ".hidden.png", 6)
    small_image(right / "extra.png", 7)  # right images without a left partner are ignored
    pairs = discover_pairs([left, right])
    assert [p.key for p in pairs] == ["b", "c", "seq1/a"]
    assert pairs[0].right == right / "b.jpg" and pairs[2].left == left / "seq1" / "a.tif"
    assert all(p.gt_left is None and p.max_disp is None for p in pairs)


def test_left_right_folder_errors(tmp_path: Path) -> None:
    left, right = tmp_path / "L", tmp_path / "R"
    for index in range(8):
        small_image(left / f"{index}.png", index)
    small_image(right / "0.png", 0)
    with pytest.raises(InputError, match=r"7 left image\(s\) without a right partner: .*1.png.* and 2 more; .*--skip-unpaired"):
        discover_pairs([left, right])
    assert [p.key for p in discover_pairs([left, right], skip_unpaired=True)] == ["0"]
    with pytest.raises(InputError, match="no such folder"):
        discover_pairs([left, tmp_path / "nope"])
    with pytest.raises(InputError, match="same folder"):
        discover_pairs([left, left])
    small_image(left / "0.jpg", 9)
    with pytest.raises(InputError, match="same name without extension"):
        discover_pairs([left, right])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty2").mkdir()
    with pytest.raises(InputError, match="no images found"):
        discover_pairs([tmp_path / "empty", tmp_path / "empty2"])
    with pytest.raises(InputError, match="no stereo layout found.*LEFT_DIR RIGHT_DIR"):
        discover_pairs([tmp_path / "empty"])
    with pytest.raises(InputError, match="not a folder"):
        discover_pairs([left / "0.png"])
    with pytest.raises(InputError, match="got 3 paths"):
        discover_pairs([left, right, left])


def test_evaluation_masks_select_white_pixels_only(tmp_path: Path) -> None:
    """Middlebury 2014's mask0nocc marks occluded pixels 128: they are not evaluated as non-occluded."""
    import cv2

    from pseudolabel.datasets import evaluation_mask, occlusion_free

    mask = np.array([[0, 128, 255], [255, 128, 0]], dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "mask0nocc.png"), mask)
    np.testing.assert_array_equal(evaluation_mask(tmp_path / "mask0nocc.png"), mask == 255)
    occlusion = np.array([[255, 0, 0], [0, 255, 0]], dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "occ.png"), np.dstack([occlusion] * 3))  # a colour occlusion mask reads as gray
    np.testing.assert_array_equal(occlusion_free(tmp_path / "occ.png"), occlusion == 0)
