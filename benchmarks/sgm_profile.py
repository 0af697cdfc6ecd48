"""Benchmark: where the time of one SGM ``match`` goes, stage by stage, against the memory-bandwidth floor.

Run from the repository root (the shared data folder sits next to the repository)::

    python benchmarks/sgm_profile.py --runs 5 --write-markdown

* Two pairs: a Middlebury-sized one (v2 teddy, 450x375, 80 disparities) and the KITTI 2012 frame
  000070 (1241x376, 192 disparities), gray, default :class:`SGMParams` (and other presets as more
  row sets with ``--presets default fast``; ``fast`` matches at half resolution, so its stages run
  on the reduced pair between "reduce the pair" and "enlarge the maps").
* Each stage is the very kernel call that :class:`pseudolabel.sgm.matcher.Matcher` makes, timed on
  its own (median of ``--runs`` runs after a warm-up, the Matcher's buffers reused), at every thread
  count of ``--threads`` (``numba.set_num_threads``; OpenCV's median filter gets the same count).
  The aggregation stage is the raster schedule that the Matcher uses with one or two threads
  (:func:`pseudolabel.sgm.aggregation.aggregate_raster_and_select`); above two threads it aggregates
  pair by pair, which this profile does not time. Wall time and process CPU time are both recorded: the CPU time is less disturbed by other load.
* Bytes moved: a lower bound on the main-memory traffic of each stage (volumes read and written once;
  per-pixel maps counted too). The floor is those bytes over the measured bandwidth of a large
  ``numpy`` copy (read + write counted) at the same thread count, so ``time / floor`` says how far a
  stage is from being memory-bound. The kernels are compute-bound where that ratio is well above 1.
* The CPU's SIMD flags (from ``/proc/cpuinfo``) and Numba's target CPU name are printed with the tables.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, REPO_ROOT, load_manifest, load_scene, machine_description, replace_section

from pseudolabel.sgm import aggregation, cost, disparity, refinement
from pseudolabel.sgm.downsampled import DISPARITY_MAPS, OTHER_MAPS, enlarge_result, reduce_pair, reduced_params
from pseudolabel.sgm.matcher import Matcher
from pseudolabel.sgm.params import PRESETS, SGMParams

SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16")


def simd_flags() -> str:
    """The SIMD flags of this CPU among :data:`SIMD_FLAGS`, and the CPU name Numba compiles for."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        flags = []
    present = [flag for flag in SIMD_FLAGS if flag in flags]
    import llvmlite.binding as llvm

    target = os.environ.get("NUMBA_CPU_NAME") or llvm.get_host_cpu_name()
    return f"CPU flags: {' '.join(present) or 'none of ' + ' '.join(SIMD_FLAGS)}; Numba target CPU: {target}"


def cpu_seconds() -> float:
    """CPU time of this process (user + system, all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@numba.njit(parallel=True, nogil=True, cache=True)
def _parallel_copy(source: np.ndarray, target: np.ndarray) -> None:
    for index in numba.prange(source.shape[0]):
        target[index] = source[index]


def copy_bandwidth(threads: int, megabytes: int = 256, runs: int = 5) -> float:
    """Bytes per second of a large array copy (read + write counted), best of ``runs``, on ``threads``
    Numba threads (``np.copyto`` with one thread)."""
    source = np.ones(megabytes * 2**20 // 8, dtype=np.float64)
    target = np.empty_like(source)
    numba.set_num_threads(threads)
    _parallel_copy(source, target)
    best = np.inf
    for _ in range(runs):
        start = time.perf_counter()
        if threads == 1:
            np.copyto(target, source)
        else:
            _parallel_copy(source, target)
        best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best


def pipeline_stages(matcher: Matcher, left: np.ndarray, right: np.ndarray) -> list[tuple[str, Callable[[], Any], float]]:
    """The stages of ``matcher(left, right)`` as ``(name, call, bytes moved)``, each call runnable alone.

    Every call repeats what :meth:`Matcher.__call__` does at that point, on the outputs of the stages
    before it (computed once here and bound to the call).
    """
    params = matcher.params
    stages: list[tuple[str, Callable[[], Any], float]] = []
    if params.downsample > 1:
        # the `fast` preset: reduce the pair, run the stages below on it, enlarge the result
        full, full_height, full_width = params, left.shape[0], left.shape[1]
        stages.append(("reduce the pair", lambda: reduce_pair(left, right, full.downsample), 2 * 4 * full_height * full_width))
        left, right = reduce_pair(left, right, full.downsample)
        params = reduced_params(full)
        reduced = Matcher(params)(left, right)
        enlarged_bytes = sum(getattr(reduced, name).itemsize for name in (*DISPARITY_MAPS, *OTHER_MAPS)) * full_height * full_width
        enlarge = lambda: enlarge_result(reduced, full, full_height, full_width)  # noqa: E731
    height, width = left.shape[:2]
    num_disp = params.num_disp
    cells = height * width * num_disp
    pixels = height * width
    left_gray, right_gray = cost.prepare_image(left), cost.prepare_image(right)
    min_disp, census_max = int(params.min_disp), params.census_width * params.census_height - 1
    penalties = (int(params.p1), int(params.p2), bool(params.p2_adaptive), float(params.p2_gamma))

    def census() -> tuple[np.ndarray, np.ndarray]:
        return (
            cost.census_transform(left_gray, params.census_width, params.census_height, params.census_step),
            cost.census_transform(right_gray, params.census_width, params.census_height, params.census_step),
        )

    stages.append(("prepare images", lambda: (cost.prepare_image(left), cost.prepare_image(right)), 2 * pixels * 5))
    stages.append(("census (both images)", census, 2 * pixels * (4 + 8)))
    census_left, census_right = census()
    volume = np.empty((height, width, num_disp), dtype=np.uint8)
    stages.append(("cost volume", lambda: cost.census_cost_volume_into(census_left, census_right, min_disp, census_max, volume), cells))
    out = aggregation._check_and_prepare(volume, params, None)
    accumulate = False
    for dx, dy in aggregation.DIRECTIONS[params.paths]:
        if dy > 0 and (dy > 1 or abs(dx) > 1):
            # 16 paths only: the directions with a step of 2, pair by pair, before the raster passes
            moved = cells * (1 + 2 + (2 if accumulate else 0))
            stages.append(
                (
                    f"aggregate paths ({dx},{dy}) + ({-dx},{-dy})",
                    lambda dx=dx, dy=dy, acc=accumulate: aggregation.aggregate_direction_pair(
                        volume, left_gray, dx, dy, *penalties, out, acc, aggregation._LINE_BLOCK, numba.get_num_threads()
                    ),
                    moved,
                )
            )
            accumulate = True
    for _, call, _ in stages[2:]:  # the cost volume, then any step-2 direction pairs in the Matcher's order
        call()
    mode = refinement.SUBPIXEL_MODES[params.subpixel]

    def raster(target: np.ndarray, winners: disparity.Winners, left_out: np.ndarray, right_out: np.ndarray) -> None:
        aggregation.aggregate_raster_and_select(
            volume,
            left_gray,
            params.paths > 4,
            *penalties,
            target,
            accumulate,
            min_disp,
            winners.index,
            winners.cost_best,
            winners.cost_second,
            winners.cost_second_far,
            winners.cost_second_local,
            winners.cost_mean,
            winners.index_right,
            mode,
            left_out,
            right_out,
        )

    # timed on scratch copies (S keeps accumulating there with 16 paths: wrapping values cost the same
    # time), so that the later stages get the true outputs. Bytes: C read by both passes and by the
    # horizontal sweep (3), S written by the first pass over a row and read and written by the second (6).
    scratch = (out.copy(), disparity.allocate_winners(height, width), np.empty((height, width), np.float32), np.empty((height, width), np.float32))
    stages.append(("aggregate: raster passes + horizontal + winner-takes-all + sub-pixel", lambda: raster(*scratch), cells * 9 + pixels * 32))
    winners = disparity.allocate_winners(height, width)
    left_disparity = np.empty((height, width), dtype=np.float32)
    right_disparity = np.empty((height, width), dtype=np.float32)
    raster(out, winners, left_disparity, right_disparity)
    stages.append(("median", lambda d=left_disparity: refinement.median_filter(d, params.median), pixels * 8))
    left_disparity = refinement.median_filter(left_disparity, params.median)
    check = (winners.cost_best, winners.cost_second_far, float(params.lr_max_diff), float(params.uniqueness))
    stages.append(("left-right + uniqueness", lambda d=left_disparity: disparity.consistency_check(d, right_disparity, *check), pixels * 17))
    valid = disparity.consistency_check(left_disparity, right_disparity, *check)
    speckle = (params.speckle_size, params.speckle_range)
    stages.append(("speckles", lambda v=valid: refinement.remove_speckles(left_disparity, v, *speckle), pixels * 10))
    valid = refinement.remove_speckles(left_disparity, valid, *speckle)
    dense = left_disparity
    if params.fill_invalid:
        lr = float(max(params.lr_max_diff, 0.0))
        # bytes: disparity and validity read by both sweeps (10), the filled copy read and written (8)
        stages.append(("fill", lambda v=valid: refinement.fill_invalid(left_disparity, v, right_disparity, lr), pixels * 18))
        dense = refinement.fill_invalid(left_disparity, valid, right_disparity, lr)
        if params.fill_median_radius > 0:
            invalid = ~valid
            edge = (params.fill_median_radius, float(params.fill_intensity_range), invalid, params.fill_median_step)
            stages.append(("edge-aware median", lambda d=dense: refinement.edge_aware_median(d, left_gray, *edge), pixels * 13))
            dense = refinement.edge_aware_median(dense, left_gray, *edge)
    stages.append(("dense median", lambda d=dense: refinement.median_filter(d, params.dense_median), pixels * 8))
    if matcher.params.downsample > 1:
        stages.append(("enlarge the maps", enlarge, enlarged_bytes))
    return stages


def profile(matcher: Matcher, left: np.ndarray, right: np.ndarray, runs: int) -> list[dict[str, Any]]:
    stages = pipeline_stages(matcher, left, right)
    rows = []
    for name, call, moved in stages:
        call()  # warm-up
        walls, cpus = [], []
        for _ in range(runs):
            wall, cpu = time.perf_counter(), cpu_seconds()
            call()
            walls.append(time.perf_counter() - wall)
            cpus.append(cpu_seconds() - cpu)
        rows.append({"stage": name, "wall": float(np.median(walls)), "cpu": float(np.median(cpus)), "bytes": moved})
    walls, cpus = [], []
    matcher(left, right)
    for _ in range(runs):
        wall, cpu = time.perf_counter(), cpu_seconds()
        matcher(left, right)
        walls.append(time.perf_counter() - wall)
        cpus.append(cpu_seconds() - cpu)
    rows.append({"stage": "whole match", "wall": float(np.median(walls)), "cpu": float(np.median(cpus)), "bytes": sum(r["bytes"] for r in rows)})
    return rows


ASM_SCRIPT = r"""
import collections, json, re
import numpy as np
from pseudolabel.sgm import aggregation, cost, disparity
from pseudolabel.sgm.matcher import Matcher
from pseudolabel.sgm.params import SGMParams
left = (np.arange(40 * 80) % 251).reshape(40, 80).astype(np.uint8)
Matcher(SGMParams(max_disp=16))(left, np.roll(left, 3, axis=1))
kernels = {"_direction_row": aggregation, "_horizontal_rows": aggregation, "census_transform": cost,
           "census_cost_volume_into": cost, "select_pixels": disparity, "right_keys_update": disparity}
ops = r"^\s+(vpmin[su]w|vpmax[su]w|vpadd[wd]|vpsubw|vpcmp\w*w|vpblend\w*|vpopcnt\w|vpshufb|vpsadbw)\b"
rows = {}
for name, module in kernels.items():
    asm = "\n".join(getattr(module, name).inspect_asm().values())
    registers = collections.Counter(re.findall(r"%(xmm|ymm|zmm)\d+", asm))
    rows[name] = [registers.get("xmm", 0), registers.get("ymm", 0), registers.get("zmm", 0),
                  ", ".join(f"{op} {count}" for op, count in collections.Counter(re.findall(ops, asm, re.M)).most_common(6))]
print(json.dumps(rows))
"""


def assembly_table(environment: dict[str, str]) -> list[str]:
    """Register and instruction counts in the assembly of the hot kernels, compiled afresh in a new process
    (an empty Numba cache: cached code cannot be inspected) with extra ``environment`` variables."""
    import json
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        output = subprocess.run(
            [sys.executable, "-c", ASM_SCRIPT],
            check=True,
            capture_output=True,
            text=True,
            env=os.environ | environment | {"NUMBA_CACHE_DIR": cache},
        ).stdout
    rows = json.loads(output.strip().splitlines()[-1])
    lines = ["| kernel | xmm | ymm | zmm | packed 16-bit min/add/compare, popcount (count) |", "|---|---:|---:|---:|---|"]
    lines += [f"| `{name}` | {xmm} | {ymm} | {zmm} | {ops} |" for name, (xmm, ymm, zmm, ops) in rows.items()]
    return lines


def load_pairs(data_dir: Path) -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    entries = {entry["id"]: entry for entry in load_manifest(data_dir)}
    pairs = []
    for scene_id, max_disp in (("middv2-teddy", 80), ("kitti2012-000070", 192)):
        scene = load_scene(entries[scene_id], data_dir)
        left, right = scene.left, scene.right
        if left.ndim == 3:
            left, right = cv2.cvtColor(left, cv2.COLOR_RGB2GRAY), cv2.cvtColor(right, cv2.COLOR_RGB2GRAY)
        pairs.append((f"{scene_id} ({left.shape[1]}x{left.shape[0]}), {max_disp} disparities", left, right, max_disp))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--presets", nargs="+", default=["default"], choices=list(PRESETS))
    parser.add_argument("--write-markdown", action="store_true", help="replace the `## SGM profile` section of BENCHMARKS.md")
    parser.add_argument(
        "--asm", action="store_true", help="add register/instruction counts of the hot kernels, native and AVX2-only (slow: compiles twice)"
    )
    args = parser.parse_args()

    pairs = load_pairs(args.data)
    lines = [
        f"Machine: {machine_description()}.",
        "",
        simd_flags() + ".",
        "",
        f"Reproduce: `python benchmarks/sgm_profile.py --runs {args.runs} --threads {' '.join(map(str, args.threads))}"
        f" --presets {' '.join(args.presets)}{' --asm' if args.asm else ''} --write-markdown`",
    ]
    bandwidths = {}
    for threads in args.threads:
        numba.set_num_threads(threads)
        cv2.setNumThreads(threads)
        bandwidths[threads] = copy_bandwidth(threads)
    lines += [
        "",
        "Memory bandwidth (copy of 256 MiB, read + write; `np.copyto` at 1 thread, a Numba `prange` copy above): "
        + ", ".join(f"{bandwidths[t] / 1e9:.1f} GB/s at {t} thread{'s' if t > 1 else ''}" for t in args.threads)
        + ".",
    ]
    print("\n".join(lines), flush=True)
    for title, left, right, max_disp in pairs:
        for preset in args.presets:
            params = SGMParams.preset(preset).replace(max_disp=max_disp)
            matcher = Matcher(params)
            results = {}
            for threads in args.threads:
                numba.set_num_threads(threads)
                cv2.setNumThreads(threads)
                results[threads] = profile(matcher, left, right, args.runs)
            header = "| stage | MB moved | " + " | ".join(f"{t} thr: ms (CPU ms) | x floor" for t in args.threads) + " |"
            table = [
                "",
                f"### {title}, preset `{preset}`, median of {args.runs} runs per stage",
                "",
                header,
                "|---|---:|" + "---:|---:|" * len(args.threads),
            ]
            for index, row in enumerate(results[args.threads[0]]):
                cells = [row["stage"] if row["stage"] != "whole match" else "**whole match**", f"{row['bytes'] / 1e6:.1f}"]
                for threads in args.threads:
                    measured = results[threads][index]
                    floor = measured["bytes"] / bandwidths[threads]
                    cells.append(f"{1e3 * measured['wall']:.1f} ({1e3 * measured['cpu']:.0f})")
                    cells.append(f"{measured['wall'] / floor:.1f}" if floor > 0 else "")
                table.append("| " + " | ".join(cells) + " |")
            print("\n".join(table), flush=True)
            lines += table
    if args.asm:
        from sgm_vs_opencv import AVX2_ENV

        avx2 = {key: value for key, value in AVX2_ENV.items() if key.startswith("NUMBA_CPU")}
        table = [
            "",
            "### Vector registers and instructions in the assembly of the hot kernels",
            "",
            "Operand counts in the whole kernel (every loop version LLVM emitted), compiled for this CPU, then AVX2-only "
            "(`NUMBA_CPU_NAME=haswell` with AVX-512 removed from `NUMBA_CPU_FEATURES`).",
            "",
            "This CPU:",
            "",
            *assembly_table({}),
            "",
            "AVX2 only:",
            "",
            *assembly_table(avx2),
        ]
        print("\n".join(table), flush=True)
        lines += table
    if args.write_markdown:
        replace_section(REPO_ROOT / "BENCHMARKS.md", "SGM profile", "\n".join(lines))


if __name__ == "__main__":
    main()
