"""Benchmark: pseudolabel's Numba SGM against OpenCV's StereoSGBM, for speed, memory and accuracy.

Run from the repository root (the shared data folder sits next to the repository)::

    python benchmarks/sgm_vs_opencv.py --threads 2 --runs 7 --write-markdown

* Speed, in ONE process on the same KITTI pair (1241x376, 192 disparities): OpenCV modes HH
  (8 paths), SGBM (5 paths) and 3WAY against ``match`` with 8 paths and default parameters; median
  of ``--runs`` runs after a warm-up, the same thread count for both libraries, runs interleaved so
  that background load hits every method alike. Compilation is not counted; a fresh process is timed
  separately to show that it finds the Numba cache.
* Memory: peak resident-memory growth (VmHWM, reset just before the call) during one ``match`` in a
  fresh process, per cost-volume cell.
* Accuracy on every scene of ``manifest.json``: bad-2 (%) of the dense output on non-occluded
  ground-truth pixels, and density (%) and bad-2 of the ``valid`` subset; OpenCV's valid pixels
  (non-negative disparity) are measured the same way. Non-occluded: the ``nonocc`` mask where the
  dataset has one, KITTI's ``disp_noc``, FlyingThings' occlusion mask, and for Middlebury 2001/2006
  an occlusion mask derived from the ground truth (``_common.occlusion_from_disparity``).

OpenCV's settings are those of its own ``stereo_match`` sample: block size 3, P1 = 8 * cn * 9,
P2 = 32 * cn * 9, preFilterCap 63, uniquenessRatio 10, speckle window 100 and range 32, disp12MaxDiff 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    DEFAULT_DATA,
    REPO_ROOT,
    bad_rate,
    load_manifest,
    load_scene,
    machine_description,
    replace_section,
)

from pseudolabel.sgm.matcher import Matcher, match
from pseudolabel.sgm.params import SGMParams

OPENCV_MODES = {"HH": cv2.StereoSGBM_MODE_HH, "SGBM": cv2.StereoSGBM_MODE_SGBM, "3WAY": cv2.StereoSGBM_MODE_SGBM_3WAY}


def opencv_matcher(mode: str, max_disp: int, channels: int) -> cv2.StereoSGBM:
    block = 3
    return cv2.StereoSGBM_create(
        minDisparity=0,
        numDisparities=int(np.ceil(max_disp / 16) * 16),
        blockSize=block,
        P1=8 * channels * block * block,
        P2=32 * channels * block * block,
        disp12MaxDiff=1,
        preFilterCap=63,
        uniquenessRatio=10,
        speckleWindowSize=100,
        speckleRange=32,
        mode=OPENCV_MODES[mode],
    )


def opencv_disparity(mode: str, left: np.ndarray, right: np.ndarray, max_disp: int) -> np.ndarray:
    """OpenCV disparity in pixels, NaN where OpenCV marks the pixel invalid (negative value)."""
    to_bgr = (lambda image: cv2.cvtColor(image, cv2.COLOR_RGB2BGR)) if left.ndim == 3 else (lambda image: image)
    channels = 3 if left.ndim == 3 else 1
    raw = opencv_matcher(mode, max_disp, channels).compute(to_bgr(left), to_bgr(right)).astype(np.float32) / 16.0
    raw[raw < 0] = np.nan
    return raw


def timing(data_dir: Path, threads: int, runs: int) -> dict[str, float]:
    numba.set_num_threads(threads)
    cv2.setNumThreads(threads)
    kitti = next(entry for entry in load_manifest(data_dir) if entry["group"].startswith("kitti"))
    scene = load_scene(kitti, data_dir)
    left, right = scene.left, scene.right
    if left.ndim == 3:
        left, right = cv2.cvtColor(left, cv2.COLOR_RGB2GRAY), cv2.cvtColor(right, cv2.COLOR_RGB2GRAY)
    params = SGMParams(max_disp=192)
    matchers = {name: opencv_matcher(name, 192, 1) for name in OPENCV_MODES}
    reusable = Matcher(params)
    methods = {f"OpenCV {name}": (lambda m=m: m.compute(left, right)) for name, m in matchers.items()}
    methods["match (8 paths)"] = lambda: match(left, right, params)
    methods["Matcher (8 paths, buffers reused)"] = lambda: reusable(left, right)
    for method in methods.values():  # warm-up (compilation, caches)
        method()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(runs):
        for name, method in methods.items():
            start = time.perf_counter()
            method()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(values)) for name, values in times.items()} | {"_shape": left.shape}  # type: ignore[dict-item]


FRESH_PROCESS = r"""
import gc, json, resource, sys, time
t0 = time.perf_counter()
import numba
numba.set_num_threads(int(sys.argv[3]))
from pseudolabel.io import read_image, to_gray
from pseudolabel.sgm.matcher import match, release_buffers
from pseudolabel.sgm.params import SGMParams
left, right = to_gray(read_image(sys.argv[1])), to_gray(read_image(sys.argv[2]))
def status(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
t1 = time.perf_counter()
if sys.argv[4] == "memory":
    # One full call first (anything not yet compiled is compiled here), then free match's buffers and
    # reset the peak (VmHWM), so that the second call's peak is the memory match itself needs.
    match(left, right, SGMParams(max_disp=192))
    release_buffers()
    gc.collect()
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
before = status("VmRSS")
t2 = time.perf_counter()
result = match(left, right, SGMParams(max_disp=192))
t3 = time.perf_counter()
peak = status("VmHWM")
print(json.dumps({"import_s": t1 - t0, "first_match_s": t3 - t2, "rss_before": before, "peak": peak,
                  "cells": left.shape[0] * left.shape[1] * 192}))
"""


def fresh_process(data_dir: Path, threads: int, what: str) -> dict[str, float]:
    """Run ``match`` on the KITTI pair in a new Python process; ``what`` is ``timing`` or ``memory``."""
    kitti = next(entry for entry in load_manifest(data_dir) if entry["group"].startswith("kitti"))
    output = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(data_dir / kitti["left"]), str(data_dir / kitti["right"]), str(threads), what],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def accuracy(data_dir: Path, params: SGMParams) -> list[dict[str, float | str]]:
    rows = []
    for entry in load_manifest(data_dir):
        scene = load_scene(entry, data_dir)
        result = match(scene.left, scene.right, params.replace(max_disp=scene.max_disp))
        hh = opencv_disparity("HH", scene.left, scene.right, scene.max_disp)
        hh_valid = np.isfinite(hh)
        mask = scene.mask
        rows.append(
            {
                "scene": scene.scene_id,
                "dense_bad2": bad_rate(result.disparity, scene.gt, mask, 2.0),
                "valid_density": float(100.0 * result.valid[mask].mean()),
                "valid_bad2": bad_rate(result.disparity, scene.gt, mask & result.valid, 2.0),
                "hh_density": float(100.0 * hh_valid[mask].mean()),
                "hh_bad2": bad_rate(hh, scene.gt, mask & hh_valid, 2.0),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--write-markdown", action="store_true", help="replace the section in BENCHMARKS.md")
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args()

    times = timing(args.data, args.threads, args.runs)
    shape = times.pop("_shape")
    hh = times["OpenCV HH"]
    fresh = fresh_process(args.data, args.threads, "timing")
    memory = fresh_process(args.data, args.threads, "memory")
    lines = [
        f"Machine: {machine_description()}; OpenCV {cv2.__version__}; {args.threads} threads for both libraries.",
        "",
        f"Reproduce: `python benchmarks/sgm_vs_opencv.py --threads {args.threads} --runs {args.runs} --write-markdown`",
        "",
        f"### Speed: KITTI 2012 frame 000070 ({shape[1]}x{shape[0]}), 192 disparities, median of {args.runs} interleaved runs after a warm-up",
        "",
        "| method | time (s) | vs OpenCV HH |",
        "|---|---|---|",
    ]
    for name, seconds in times.items():
        lines.append(f"| {name} | {seconds:.3f} | {seconds / hh:.2f}x |")
    cells = memory["cells"]
    growth = memory["peak"] - memory["rss_before"]
    lines += [
        "",
        f"A fresh process finds the Numba cache: import {fresh['import_s']:.2f} s, first `match` {fresh['first_match_s']:.2f} s "
        f"(steady state {times['match (8 paths)']:.2f} s).",
        "",
        f"Memory: peak resident memory (VmHWM) grows by {growth / 2**20:.0f} MiB during one `match` (fresh process, images loaded, "
        f"match's buffers freed and the peak reset before the call) "
        f"= {growth / cells:.2f} bytes per cost-volume cell ({cells:,} cells).",
    ]
    print("\n".join(lines))
    if not args.skip_accuracy:
        rows = accuracy(args.data, SGMParams())
        lines += [
            "",
            "### Accuracy on every scene of `manifest.json` (bad-2 in %, non-occluded ground-truth pixels)",
            "",
            "| scene | dense bad-2 | valid density | valid bad-2 | OpenCV HH density | OpenCV HH bad-2 |",
            "|---|---|---|---|---|---|",
        ]
        for row in rows:
            lines.append(
                f"| {row['scene']} | {row['dense_bad2']:.2f} | {row['valid_density']:.1f} | {row['valid_bad2']:.2f} | {row['hh_density']:.1f} | {row['hh_bad2']:.2f} |"
            )
        mean = {key: float(np.nanmean([row[key] for row in rows])) for key in rows[0] if key != "scene"}
        lines.append(
            f"| **mean** | **{mean['dense_bad2']:.2f}** | **{mean['valid_density']:.1f}** | **{mean['valid_bad2']:.2f}** | **{mean['hh_density']:.1f}** | **{mean['hh_bad2']:.2f}** |"
        )
        lines += [
            "",
            f"Valid subset: density {mean['valid_density']:.1f}% vs OpenCV HH {mean['hh_density']:.1f}%; "
            f"bad-2 ratio {mean['valid_bad2'] / mean['hh_bad2']:.2f} (target <= 0.75). "
            f"Dense bad-2 {mean['dense_bad2']:.2f}% vs OpenCV HH's bad-2 on its own valid pixels {mean['hh_bad2']:.2f}%.",
        ]
        print("\n".join(lines[-(len(rows) + 8) :]))
    if args.write_markdown:
        replace_section(REPO_ROOT / "BENCHMARKS.md", "SGM vs OpenCV StereoSGBM", "\n".join(lines))


if __name__ == "__main__":
    main()
