"""End-to-end throughput of `pseudolabel sgm` against `match` alone on KITTI-sized pairs.

Not a test. In one process, on the same pairs (crops of 1232x368 at different offsets of the
shipped KITTI 2012 frame, so every pair differs), interleaved over ``--repeats`` rounds:

* ``match`` alone: images already in memory, all cores (Numba's default thread count);
* the ``pseudolabel sgm`` command (in this process, as a user runs it: discovery, reading, matching,
  journal writes with compression, final assembly), with ``--workers 1`` (the default ``fast`` compression, ``lzf`` and
  gzip) and ``--workers 2`` (spawned processes, ``cores // 2`` Numba threads each).

Overhead = command / ``match`` - 1, from medians; both wall-clock and CPU time (this process plus
its worker processes) are reported, because the machine may be shared: CPU time is the cost, wall
time includes waiting for the CPU. One extra instrumented run splits the single-worker time into
reading, matching, journal writing and assembly.

Usage::

    python benchmarks/sgm_pipeline.py [--pairs 8] [--repeats 3] [--max-disp 128] [--preset fast] [--write-markdown]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import REPO_ROOT, machine_description, replace_section
from sgm_profile import simd_flags

from pseudolabel.cli.sgm import sgm
from pseudolabel.datasets import discover_pairs
from pseudolabel.io import read_image, write_image
from pseudolabel.sgm.batch import available_cores, init_worker, make_tasks, run_tasks
from pseudolabel.sgm.matcher import match
from pseudolabel.sgm.params import PRESETS, SGMParams
from pseudolabel.store.journal import ProxyRun
from pseudolabel.store.layout import run_identity

KITTI = REPO_ROOT / "tests" / "data" / "kitti2012" / "training"
CROP = (368, 1232)  # KITTI frames are 1224..1242 x 370..376


def make_dataset(folder: Path, count: int) -> tuple[Path, Path]:
    """``count`` KITTI-sized pairs cropped at different offsets of the shipped frame (left/ and right/)."""
    left = read_image(KITTI / "image_0" / "000070_10.png")
    right = read_image(KITTI / "image_1" / "000070_10.png")
    spare_y, spare_x = left.shape[0] - CROP[0], left.shape[1] - CROP[1]
    for index in range(count):
        dy, dx = index % (spare_y + 1), (3 * index) % (spare_x + 1)
        window = np.s_[dy : dy + CROP[0], dx : dx + CROP[1]]
        write_image(folder / "left" / f"{index:06d}_10.png", left[window])
        write_image(folder / "right" / f"{index:06d}_10.png", right[window])
    return folder / "left", folder / "right"


def cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(function) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    cpu, wall = cpu_seconds(), time.perf_counter()
    function()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def _warm_up_worker() -> None:
    """Load the matcher in a worker (imports and Numba cache), then linger so the next task goes elsewhere."""
    match(np.zeros((20, 40), np.uint8), np.zeros((20, 40), np.uint8), max_disp=8)
    time.sleep(0.3)


def start_workers(workers: int) -> None:
    """Start ``workers`` spawned processes as `sgm --workers` does, load the matcher in each, stop them."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=init_worker,
        initargs=(max(1, available_cores() // workers), os.getpid()),
    ) as executor:
        for future in [executor.submit(_warm_up_worker) for _ in range(workers)]:
            future.result()


def run_command(left: Path, right: Path, out: Path, max_disp: int, workers: int, compression: str, preset: str = "default") -> None:
    args = ["--in", str(left), str(right), "--out", str(out), "--max-disp", str(max_disp), "--workers", str(workers), "--compression", compression]
    args += ["--preset", preset]
    sgm.main(args, standalone_mode=False)


def breakdown(left: Path, right: Path, out: Path, params: SGMParams) -> dict[str, float]:
    """Seconds spent per phase in one single-worker run with the ``fast`` compression (sum over pairs)."""
    pairs = discover_pairs([left, right])
    phases = {"read": 0.0, "match": 0.0, "journal write": 0.0, "assembly": 0.0}
    with ProxyRun(out, params) as run:
        tasks = make_tasks(pairs, params, False, run.journal, run_identity(params, False), "fast")

        def on_done(done) -> None:  # type: ignore[no-untyped-def]
            run.record(done.key, Path(done.entry))  # as the command does: else finish() assembles nothing
            phases["read"] += done.read_s
            phases["match"] += done.match_s
            phases["journal write"] += done.write_s

        run_tasks(tasks, 1, on_done)
        start = time.perf_counter()
        run.finish()
        phases["assembly"] = time.perf_counter() - start
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-disp", type=int, default=128)
    parser.add_argument("--preset", default="default", choices=list(PRESETS), help="SGM preset of every run.")
    parser.add_argument("--write-markdown", action="store_true", help="write the table into BENCHMARKS.md")
    args = parser.parse_args()
    params = SGMParams.preset(args.preset).replace(max_disp=args.max_disp)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="sgm-pipeline-") as temporary:
        root = Path(temporary)
        left_dir, right_dir = make_dataset(root / "data", args.pairs)
        images = [(read_image(p.left), read_image(p.right)) for p in discover_pairs([left_dir, right_dir])]
        match(*images[0], params)  # compile / load the Numba cache
        modes = [
            "match alone",
            "sgm --workers 1",
            "sgm --workers 1 --compression lzf",
            "sgm --workers 1 --compression gzip",
            "sgm --workers 2",
            "start 2 workers",
        ]
        wall: dict[str, list[float]] = {mode: [] for mode in modes}
        cpu: dict[str, list[float]] = {mode: [] for mode in modes}
        sizes: dict[str, int] = {}
        for repeat in range(args.repeats):
            for mode in modes:
                out = root / f"{repeat}-{len(wall[mode])}-{mode.replace(' ', '_')}.h5"
                if mode == "match alone":
                    seconds = timed(lambda: [match(left, right, params) for left, right in images])
                elif mode == "start 2 workers":
                    seconds = timed(lambda: start_workers(2))
                else:
                    workers = 2 if "--workers 2" in mode else 1
                    compression = mode.split("--compression ")[1] if "--compression" in mode else "fast"
                    seconds = timed(lambda: run_command(left_dir, right_dir, out, args.max_disp, workers, compression, args.preset))
                    sizes[mode] = out.stat().st_size
                    out.unlink()
                wall[mode].append(seconds[0])
                cpu[mode].append(seconds[1])
                print(f"repeat {repeat}: {mode}: {seconds[0]:.2f} s wall, {seconds[1]:.2f} s CPU", file=sys.stderr)
        phases = breakdown(left_dir, right_dir, root / "breakdown.h5", params)
    load_after = os.getloadavg()[0]

    base_wall, base_cpu = statistics.median(wall["match alone"]), statistics.median(cpu["match alone"])
    rows = [
        "| run | pairs/s (wall) | wall vs match | CPU s per pair | CPU vs match | file MiB per pair |",
        "|---|---|---|---|---|---|",
    ]
    startup_wall, startup_cpu = statistics.median(wall["start 2 workers"]), statistics.median(cpu["start 2 workers"])
    wall["sgm --workers 2, minus start-up"] = [w - startup_wall for w in wall["sgm --workers 2"]]
    cpu["sgm --workers 2, minus start-up"] = [c - startup_cpu for c in cpu["sgm --workers 2"]]
    for mode in [m for m in modes if m != "start 2 workers"] + ["sgm --workers 2, minus start-up"]:
        med_wall, med_cpu = statistics.median(wall[mode]), statistics.median(cpu[mode])
        size = f"{sizes[mode] / args.pairs / 2**20:.2f}" if mode in sizes else "-"
        wall_ratio = "1 (reference)" if mode == "match alone" else f"{med_wall / base_wall - 1:+.1%}"
        cpu_ratio = "1 (reference)" if mode == "match alone" else f"{med_cpu / base_cpu - 1:+.1%}"
        rows.append(f"| `{mode}` | {args.pairs / med_wall:.3f} | {wall_ratio} | {med_cpu / args.pairs:.3f} | {cpu_ratio} | {size} |")
    rows.append(
        f"\nStarting 2 spawned workers and loading the matcher in each (paid once per command): "
        f"{startup_wall:.2f} s wall, {startup_cpu:.2f} s CPU; the last row subtracts it."
    )
    total = sum(phases.values())
    phase_rows = ["| phase (one `--workers 1` run, `--compression fast`, wall) | s per pair | share |", "|---|---|---|"]
    phase_rows += [f"| {name} | {value / args.pairs:.3f} | {value / total:.1%} |" for name, value in phases.items()]
    preset = f" --preset {args.preset}" if args.preset != "default" else ""
    command = f"python benchmarks/sgm_pipeline.py --pairs {args.pairs} --repeats {args.repeats} --max-disp {args.max_disp}{preset} --write-markdown"
    body = f"""Command: `{command}`
({machine_description()}; {simd_flags()}; {available_cores()} cores usable; 1-minute load average {load_before:.1f} before,
{load_after:.1f} after: the machine is shared, so wall-clock figures include waiting for the CPU and
CPU time is the cost.) {args.pairs} KITTI-sized pairs (gray crops {CROP[1]}x{CROP[0]} of the shipped KITTI
2012 frame at different offsets), `SGMParams` of the `{args.preset}` preset with max_disp {args.max_disp}. Medians of
{args.repeats} interleaved rounds. `match alone` has the images in memory and uses all cores; the
`sgm` runs are the whole command (discovery, PNG reading, matching, journal writes with compression,
assembly of the HDF5 file) in one process, `--workers 2` includes starting the two worker processes.
Target: overhead of the command over the kernel at most 15%.

{chr(10).join(rows)}

{chr(10).join(phase_rows)}
"""
    print(body)
    if args.write_markdown:
        replace_section(REPO_ROOT / "BENCHMARKS.md", "pseudolabel sgm pipeline", body)


if __name__ == "__main__":
    main()
