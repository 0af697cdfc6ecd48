"""Sequences as input (``left/``, ``right/``, ``calib.txt``), the hold-back split, and the thread choice
from a given affinity and load, and the load read from the machine (nothing is timed here)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pseudolabel.datasets import discover_pairs, read_projection_focal_baseline
from pseudolabel.errors import InputError
from pseudolabel.io import write_image
from pseudolabel.learn.holdout import label_agreement, split_holdout
from pseudolabel.threads import busy_cores_between, choose_threads, measure_other_load, parse_threads, read_cpu_ticks, resolve_threads

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


PROC_STAT_BEFORE = """cpu  300 0 100 1000 10 0 0 0 0 0
cpu0 100 0 50 500 5 0 0 0 0 0
cpu1 200 0 50 500 5 0 0 0 0 0
intr 12345
procs_running 3
"""
# 100 ticks later: cpu0 busy for 25 of them (user 20, system 3, irq 1, softirq 1), cpu1 for all 100
# (steal 10 counts as busy: another guest holds the core); iowait counts as idle.
PROC_STAT_AFTER = """cpu  420 0 110 1075 15 1 1 10 0 0
cpu0 120 0 53 570 10 1 1 0 0 0
cpu1 290 0 50 500 5 0 0 10 0 0
intr 12400
procs_running 2
"""


def test_busy_cores_from_proc_stat_ticks() -> None:
    before, after = read_cpu_ticks(PROC_STAT_BEFORE), read_cpu_ticks(PROC_STAT_AFTER)
    assert before == {0: (150, 655), 1: (250, 755)}  # the aggregate "cpu" line is not a core
    assert after == {0: (175, 755), 1: (350, 855)}
    assert busy_cores_between(before, after) == pytest.approx(0.25 + 1.0)
    assert busy_cores_between(before, after, cpus={0}) == pytest.approx(0.25)  # only the cores we may use
    assert busy_cores_between(before, before) == 0.0  # no ticks passed
    assert busy_cores_between({}, after) == 0.0
    assert read_cpu_ticks("not a stat file") == {}


def test_a_busy_process_counts_as_load_and_this_process_does_not() -> None:
    """A competitor that spins is seen at once (the 1-minute load average would take a minute)."""
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 30\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.3)
        assert measure_other_load(window_s=0.5) >= 0.5
    finally:
        spinner.kill()
        spinner.wait()


def test_a_given_count_wins_and_auto_measures() -> None:
    given = resolve_threads("3", cores=lambda: 2, other_load=lambda: 1.0)
    assert given.threads == 3 and not given.automatic
    auto = resolve_threads("auto", cores=lambda: 2, other_load=lambda: 1.0)
    assert auto.threads == 1 and auto.automatic and "auto" in auto.describe()
    assert resolve_threads(None, cores=lambda: 4, other_load=lambda: 0.0).threads == 4
    assert parse_threads("0") is None and parse_threads(2) == 2
    with pytest.raises(InputError, match="--threads"):
        parse_threads("many")
