"""Sequences as input (``left/``, ``right/``, ``calib.txt``), the hold-back split, and the thread choice
from a given affinity and load (pure functions: nothing is timed here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pseudolabel.datasets import discover_pairs, read_projection_focal_baseline
from pseudolabel.errors import InputError
from pseudolabel.io import write_image
from pseudolabel.learn.holdout import label_agreement, split_holdout
from pseudolabel.threads import choose_threads, own_load_share, parse_threads, resolve_threads

KITTI_P0 = "7.188560e+02 0 6.071928e+02 0 0 7.188560e+02 1.852157e+02 0 0 0 1 0"
KITTI_P1 = "7.188560e+02 0 6.071928e+02 -3.861448e+02 0 7.188560e+02 1.852157e+02 0 0 0 1 0"


def sequence(root: Path, frames: int, calib: str | None) -> Path:
    rng = np.random.default_rng(0)
    for index in range(frames):
        for side in ("left", "right"):
            (root / side).mkdir(parents=True, exist_ok=True)
            write_image(root / side / f"{index:06d}.png", rng.integers(0, 255, (8, 12), dtype=np.uint8))
    (root / "poses.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 0\n")
    if calib is not None:
        (root / "calib.txt").write_text(calib)
    return root


def test_a_sequence_folder_gives_its_frames_in_order_with_the_rigs_focal_baseline(tmp_path: Path) -> None:
    root = sequence(tmp_path / "seq", 12, f"{KITTI_P0}\n{KITTI_P1}\n")
    pairs = discover_pairs([root])
    assert [pair.key for pair in pairs] == [f"{index:06d}" for index in range(12)]
    assert all(pair.gt_left is None for pair in pairs)
    assert pairs[0].focal_baseline == pytest.approx(386.1448)  # fx 718.856 px x baseline 0.537 m


def test_named_projection_rows_and_no_calibration(tmp_path: Path) -> None:
    named = tmp_path / "named.txt"
    named.write_text(f"P0: {KITTI_P0}\nP1: {KITTI_P1}\nP2: {KITTI_P0}\n")
    assert read_projection_focal_baseline(named) == pytest.approx(386.1448)
    other = tmp_path / "middlebury.txt"
    other.write_text("cam0=[1 0 2; 0 1 3; 0 0 1]\nndisp=64\n")
    assert read_projection_focal_baseline(other) is None
    assert discover_pairs([sequence(tmp_path / "plain", 2, None)])[0].focal_baseline is None
    wrong = tmp_path / "wrong.txt"
    wrong.write_text(f"{KITTI_P0}\n{KITTI_P0.replace(' 0 0 7', ' 5 0 7', 1)}\n")
    with pytest.raises(InputError, match="P1"):
        read_projection_focal_baseline(wrong)


def test_the_shared_kitti_sequence_if_present() -> None:
    candidates = [folder / "shared" / "data" / "sequences" / "kitti_odometry_b" for folder in Path(__file__).resolve().parents]
    root = next((candidate for candidate in candidates if candidate.is_dir()), None)
    if root is None:
        pytest.skip("shared data not here")
    pairs = discover_pairs([root])
    assert len(pairs) == 51 and pairs[0].focal_baseline == pytest.approx(386.1448)


def test_every_kth_frame_in_sorted_order_is_held_back() -> None:
    keys = [f"{index:06d}" for index in range(11)][::-1]
    training, held = split_holdout(keys, 5)
    assert held == ["000004", "000009"]
    assert training == [key for key in sorted(keys) if key not in held]
    assert split_holdout(keys, 0) == (sorted(keys), [])
    with pytest.raises(InputError, match="--holdout-every 1"):
        split_holdout(keys, 1)
    with pytest.raises(InputError, match="none is held back"):
        split_holdout(keys[:3], 5)


def test_label_agreement_by_hand() -> None:
    labels = np.array([[1.0, np.nan, 10.0], [5.0, np.nan, 20.0]])
    prediction = np.array([[1.5, 0.0, 14.0], [5.0, 7.0, 20.0]])
    bad, epe, count = label_agreement(prediction, labels)
    assert count == 4
    assert bad == pytest.approx(25.0)  # only |14 - 10| > 3
    assert epe == pytest.approx((0.5 + 4.0 + 0.0 + 0.0) / 4)
    assert label_agreement(prediction, np.full((2, 3), np.nan))[2] == 0


@pytest.mark.parametrize(
    ("cores", "load", "threads"),
    [
        (2, 0.0, 2),  # idle 2-core machine: both cores
        (2, 0.4, 2),  # a little background noise is no competitor
        (2, 1.0, 1),  # one CPU-bound competitor on 2 cores: 1 thread (2 threads would wait for each other)
        (2, 1.6, 1),
        (2, 5.0, 1),  # never fewer than 1
        (8, 3.0, 5),
        (4, 2.5, 1),  # 2.5 rounds half up: 3 busy cores
        (1, 0.0, 1),
        (2, -1.0, 2),  # a nonsensical load counts as none
        (2, float("nan"), 2),
    ],
)
def test_threads_are_the_usable_cores_less_the_others_load(cores: int, load: float, threads: int) -> None:
    assert choose_threads(cores, load) == threads


def test_own_share_of_the_load_average() -> None:
    assert own_load_share(0.0, 10.0) == 0.0
    assert own_load_share(60.0, 60.0) == pytest.approx(1 - np.exp(-1))  # one busy thread for a minute
    assert own_load_share(600.0, 600.0) == pytest.approx(1.0, abs=1e-4)  # long-running: its whole thread
    assert own_load_share(1.0, 20.0) == pytest.approx(0.05 * (1 - np.exp(-20 / 60)))


def test_a_given_count_wins_and_auto_measures() -> None:
    given = resolve_threads("3", cores=lambda: 2, other_load=lambda: 1.0)
    assert given.threads == 3 and not given.automatic
    auto = resolve_threads("auto", cores=lambda: 2, other_load=lambda: 1.0)
    assert auto.threads == 1 and auto.automatic and "auto" in auto.describe()
    assert resolve_threads(None, cores=lambda: 4, other_load=lambda: 0.0).threads == 4
    assert parse_threads("0") is None and parse_threads(2) == 2
    with pytest.raises(InputError, match="--threads"):
        parse_threads("many")
