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
import os
import subprocess
import sys
import tempfile
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
    sgm_figures,
)
from sgm_profile import simd_flags

from pseudolabel.sgm.matcher import Matcher, match, release_buffers
from pseudolabel.sgm.params import PRESETS, SGMParams

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


SPEED_PAIRS = (("kitti2012-000070", 192), ("middv2-teddy", 80))
AVX2_ENV = {
    # Numba compiles for Haswell (AVX2 + FMA, no AVX-512); OpenCV's runtime dispatch skips its AVX-512 paths
    "NUMBA_CPU_NAME": "haswell",
    "NUMBA_CPU_FEATURES": ",".join(
        ["+64bit", "+avx", "+avx2", "+bmi", "+bmi2", "+cmov", "+cx16", "+cx8", "+f16c", "+fma", "+fsgsbase", "+fxsr", "+lzcnt", "+mmx"]
        + ["+movbe", "+pclmul", "+popcnt", "+rdrnd", "+sahf", "+sse", "+sse2", "+sse3", "+sse4.1", "+sse4.2", "+ssse3", "+xsave"]
        # without these, Numba adds the host's features to the named CPU (AVX-512 included)
        + ["-avx512f", "-avx512bw", "-avx512vl", "-avx512dq", "-avx512cd", "-avx512vpopcntdq", "-avx512bitalg", "-avx512vbmi"]
        + ["-avx512vbmi2", "-avx512vnni", "-avx512bf16", "-avx512fp16", "-avx512ifma", "-evex512"]
    ),
    "NUMBA_CACHE_DIR": os.path.join(tempfile.gettempdir(), "pseudolabel-numba-haswell"),
    "OPENCV_CPU_DISABLE": "AVX512_SKX,AVX512_COMMON,AVX512_KNL,AVX512_KNM,AVX512_CNL,AVX512_CLX,AVX512_ICL,AVX512F",
}


def timing(data_dir: Path, threads: int, runs: int, scene_id: str, max_disp: int) -> dict[str, float]:
    """Median wall time (s) of every method on one gray pair, and the median process CPU time of ``match``."""
    numba.set_num_threads(threads)
    cv2.setNumThreads(threads)
    entry = next(entry for entry in load_manifest(data_dir) if entry["id"] == scene_id)
    scene = load_scene(entry, data_dir)
    left, right = scene.left, scene.right
    if left.ndim == 3:
        left, right = cv2.cvtColor(left, cv2.COLOR_RGB2GRAY), cv2.cvtColor(right, cv2.COLOR_RGB2GRAY)
    matchers = {name: opencv_matcher(name, max_disp, 1) for name in OPENCV_MODES}
    release_buffers()
    methods = {f"OpenCV {name}": (lambda m=m: m.compute(left, right)) for name, m in matchers.items()}
    for preset in ("default", "balanced", "fast"):
        # one Matcher per preset, kept like OpenCV's matcher objects above (what a loop over a dataset does;
        # `match` keeps one per thread, so alternating presets would allocate the volumes on every call)
        preset_matcher = Matcher(SGMParams.preset(preset).replace(max_disp=max_disp))
        methods[f"match, preset {preset}"] = lambda preset_matcher=preset_matcher: preset_matcher(left, right)
    for method in methods.values():  # warm-up (compilation, caches)
        method()
    times: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(runs):
        for name, method in methods.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            method()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    result = {name: float(np.median(values)) for name, values in times.items()}
    result |= {f"{name} (CPU)": float(np.median(values)) for name, values in cpu.items()}
    result["_width"], result["_height"] = float(left.shape[1]), float(left.shape[0])
    return result


def all_timings(data_dir: Path, threads: list[int], runs: int) -> dict[str, dict[str, float]]:
    """:func:`timing` of every pair of :data:`SPEED_PAIRS` at every thread count, keyed ``"scene@max_disp/threads"``."""
    return {
        f"{scene_id}@{max_disp}/{count}": timing(data_dir, count, runs, scene_id, max_disp) for scene_id, max_disp in SPEED_PAIRS for count in threads
    }


def timings_in_subprocess(data_dir: Path, threads: list[int], runs: int, environment: dict[str, str]) -> dict[str, dict[str, float]]:
    """:func:`all_timings` in a fresh process with extra environment variables (e.g. :data:`AVX2_ENV`)."""
    command = [sys.executable, __file__, "--data", str(data_dir), "--runs", str(runs), "--timing-json", "--threads", *map(str, threads)]
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ | environment).stdout
    return json.loads(output.strip().splitlines()[-1])


def speed_table(timings: dict[str, dict[str, float]]) -> list[str]:
    """Markdown rows: one line per pair and thread count, times in ms, ``match`` also as a ratio to OpenCV SGBM / 3WAY."""
    lines = [
        "| pair | threads | OpenCV HH | OpenCV SGBM | OpenCV 3WAY | `match` default | default / SGBM | `match` balanced | `match` fast | fast / 3WAY "
        "| default CPU ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, row in timings.items():
        pair, count = key.split("/")
        scene_id, max_disp = pair.split("@")
        default, fast = row["match, preset default"], row["match, preset fast"]
        lines.append(
            f"| {scene_id} ({row['_width']:.0f}x{row['_height']:.0f}) @ {max_disp} | {count} | {1e3 * row['OpenCV HH']:.0f} | "
            f"{1e3 * row['OpenCV SGBM']:.0f} | {1e3 * row['OpenCV 3WAY']:.0f} | {1e3 * default:.0f} | {default / row['OpenCV SGBM']:.2f}x | "
            f"{1e3 * row['match, preset balanced']:.0f} | {1e3 * fast:.0f} | {fast / row['OpenCV 3WAY']:.2f}x | "
            f"{1e3 * row['match, preset default (CPU)']:.0f} |"
        )
    return lines


FRESH_PROCESS = r"""
import gc, json, resource, sys, time
t0 = time.perf_counter()
import numba
numba.set_num_threads(int(sys.argv[3]))
from pseudolabel.io import read_image, to_gray
from pseudolabel.sgm.matcher import match, release_buffers
from pseudolabel.sgm.params import PRESETS, SGMParams
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


#: Presets scored besides the defaults in the accuracy tables, with the prefix of their keys.
ACCURACY_PRESETS = (("fast_", "fast"), ("balanced_", "balanced"))
#: OpenCV modes scored in the accuracy tables, with the prefix of their keys.
ACCURACY_OPENCV = (("hh_", "HH"), ("3way_", "3WAY"))


def accuracy(data_dir: Path, params: SGMParams) -> list[dict[str, float | str]]:
    """Bad-2 (%) of every method on every scene: ``dense_bad2``, ``valid_density`` and ``valid_bad2`` of
    ``match`` with ``params`` (no prefix) and with each preset of :data:`ACCURACY_PRESETS` (prefixed),
    ``density`` and ``bad2`` of each OpenCV mode of :data:`ACCURACY_OPENCV` on the pixels it keeps."""
    rows: list[dict[str, float | str]] = []
    for entry in load_manifest(data_dir):
        scene = load_scene(entry, data_dir)
        mask = scene.mask
        row: dict[str, float | str] = {"scene": scene.scene_id, "group": scene.group}
        for prefix, method_params in (("", params), *((prefix, SGMParams.preset(name)) for prefix, name in ACCURACY_PRESETS)):
            result = match(scene.left, scene.right, method_params.replace(max_disp=scene.max_disp))
            row.update({prefix + name: value for name, value in sgm_figures(result.disparity, result.valid, scene.gt, mask).items()})
        for prefix, mode in ACCURACY_OPENCV:
            disparity = opencv_disparity(mode, scene.left, scene.right, scene.max_disp)
            valid = np.isfinite(disparity)
            row[f"{prefix}density"] = float(100.0 * valid[mask].mean())
            row[f"{prefix}bad2"] = bad_rate(disparity, scene.gt, mask & valid, 2.0)
        rows.append(row)
    return rows


def kept_accuracy_tables(markdown_path: Path) -> str:
    """The ``### Accuracy ...`` part of this benchmark's section in ``markdown_path`` as it stands ("" if none)."""
    text = markdown_path.read_text() if markdown_path.exists() else ""
    start = text.find("## SGM vs OpenCV StereoSGBM\n")
    if start < 0:
        return ""
    following = text.find("\n## ", start + 1)
    section = text[start : following if following >= 0 else len(text)]
    accuracy_start = section.find("### Accuracy")
    return section[accuracy_start:].strip() if accuracy_start >= 0 else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--write-markdown", action="store_true", help="replace the section in BENCHMARKS.md")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-avx2", action="store_true", help="skip the run with AVX2-only code generation (a fresh process)")
    parser.add_argument("--timing-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.timing_json:
        print(json.dumps(all_timings(args.data, args.threads, args.runs)))
        return

    timings = all_timings(args.data, args.threads, args.runs)
    fresh = fresh_process(args.data, args.threads[-1], "timing")
    memory = fresh_process(args.data, args.threads[-1], "memory")
    threads = " ".join(map(str, args.threads))
    lines = [
        f"Machine: {machine_description()}; OpenCV {cv2.__version__}; the same thread count for both libraries.",
        "",
        simd_flags() + ".",
        "",
        f"Reproduce: `python benchmarks/sgm_vs_opencv.py --threads {threads} --runs {args.runs} --write-markdown`",
        "",
        f"### Speed (ms, median of {args.runs} interleaved runs after a warm-up, gray images)",
        "",
        "Presets: `default` (8 paths, 9x7 census, edge-aware fill), `balanced` "
        f"({', '.join(f'{name}={value}' for name, value in PRESETS['balanced'].items())}) and `fast` (the same with downsample=2: "
        "half resolution). "
        "OpenCV: HH = 8 paths, SGBM = 5 paths, 3WAY = 3-way single pass.",
        "",
        *speed_table(timings),
    ]
    if not args.skip_avx2:
        avx2 = timings_in_subprocess(args.data, args.threads, args.runs, AVX2_ENV)
        lines += [
            "",
            "### Same machine, AVX2-only code (no AVX-512): the figure for a CPU without AVX-512",
            "",
            "A fresh process with `NUMBA_CPU_NAME=haswell` and `NUMBA_CPU_FEATURES` = Haswell's list with every AVX-512 feature "
            "removed (Numba emits AVX2 + FMA code, no zmm register) and OpenCV's "
            "AVX-512 dispatch disabled (`OPENCV_CPU_DISABLE=AVX512_SKX,...`).",
            "",
            *speed_table(avx2),
        ]
    cells = memory["cells"]
    growth = memory["peak"] - memory["rss_before"]
    default_kitti = timings[f"kitti2012-000070@192/{args.threads[-1]}"]["match, preset default"]
    lines += [
        "",
        f"A fresh process finds the Numba cache: import {fresh['import_s']:.2f} s, first `match` on the KITTI pair {fresh['first_match_s']:.2f} s "
        f"(steady state {default_kitti:.2f} s, {args.threads[-1]} threads).",
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
            f"<details><summary>per scene, defaults ({len(rows)} scenes and the mean)</summary>",
            "",
            "| scene | dense bad-2 | valid density | valid bad-2 | OpenCV HH density | OpenCV HH bad-2 |",
            "|---|---|---|---|---|---|",
        ]
        for row in rows:
            lines.append(
                f"| {row['scene']} | {row['dense_bad2']:.2f} | {row['valid_density']:.1f} | {row['valid_bad2']:.2f} | {row['hh_density']:.1f} | {row['hh_bad2']:.2f} |"
            )

        def means(selected: list[dict[str, float | str]]) -> dict[str, float]:
            return {key: float(np.nanmean([float(row[key]) for row in selected])) for key in rows[0] if key not in ("scene", "group")}

        mean = means(rows)
        lines.append(
            f"| **mean** | **{mean['dense_bad2']:.2f}** | **{mean['valid_density']:.1f}** | **{mean['valid_bad2']:.2f}** | **{mean['hh_density']:.1f}** | **{mean['hh_bad2']:.2f}** |"
        )
        lines += ["", "</details>", ""]
        # the scenes of the manifest before middlebury/2014 was added (older figures cover those only)
        older = [row for row in rows if row["group"] != "middlebury2014"]
        lines += [
            "Means (bad-2 in %):",
            "",
            "| scenes | method | dense bad-2 | valid density | valid bad-2 |",
            "|---|---|---:|---:|---:|",
        ]
        for label, selected in ((f"all {len(rows)}", rows), (f"the first {len(older)} (before middlebury/2014)", older)):
            values = means(selected)
            for prefix, name in (("", "default"), ("balanced_", "balanced"), ("fast_", "fast")):
                lines.append(
                    f"| {label} | `match` {name} | {values[prefix + 'dense_bad2']:.2f} | {values[prefix + 'valid_density']:.1f} | "
                    f"{values[prefix + 'valid_bad2']:.2f} |"
                )
            lines += [
                f"| {label} | OpenCV {mode} | | {values[prefix + 'density']:.1f} | {values[prefix + 'bad2']:.2f} |"
                for prefix, mode in ACCURACY_OPENCV
            ]
        lines += [
            "",
            f"Valid subset, all scenes: density {mean['valid_density']:.1f}% vs OpenCV HH {mean['hh_density']:.1f}%; "
            f"bad-2 ratio {mean['valid_bad2'] / mean['hh_bad2']:.2f} (target <= 0.75; fast preset {mean['fast_valid_bad2'] / mean['hh_bad2']:.2f}). "
            f"Dense bad-2 {mean['dense_bad2']:.2f}% vs OpenCV HH's bad-2 on its own valid pixels {mean['hh_bad2']:.2f}%. "
            f"`fast` against OpenCV 3WAY (all scenes): density {mean['fast_valid_density']:.1f}% vs {mean['3way_density']:.1f}%, "
            f"valid bad-2 {mean['fast_valid_bad2']:.2f}% vs {mean['3way_bad2']:.2f}%.",
        ]
        print("\n".join(lines[-(len(rows) + 20) :]))
    if args.skip_accuracy:
        # keep the accuracy tables of the last full run (timing-only reruns must not delete them)
        lines += ["", kept_accuracy_tables(REPO_ROOT / "BENCHMARKS.md")]
    if args.write_markdown:
        replace_section(REPO_ROOT / "BENCHMARKS.md", "SGM vs OpenCV StereoSGBM", "\n".join(lines))


if __name__ == "__main__":
    main()
