"""Speed of the synthetic stereo generator (pseudolabel.synth) on ONE CPU core.

Measures, for the default 512x256 configuration (max_disp 96):

* rendering throughput (pairs/s): median over repeats of wall-clock and CPU time per pair, the
  process pinned to one core with OpenCV and BLAS limited to one thread;
* the CPU time of each stage (scene + textures, left view, right view, both occlusion masks,
  photometric changes), median per pair;
* ``write_synth_dataset`` throughput including PNG/PFM encoding and atomic writes (to a temporary folder).

Usage::

    python benchmarks/synth_speed.py                      # print the table
    python benchmarks/synth_speed.py --write-markdown     # also replace the "## Synthetic generator"
                                                          # section of BENCHMARKS.md

The command writes nothing else.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import pseudolabel.synth as synth  # noqa: E402
from pseudolabel.synth import photometry, scene  # noqa: E402

SECTION = "## Synthetic generator"
ROOT = Path(__file__).resolve().parents[1]


def pin_to_one_core() -> str:
    """Restrict this process to one CPU and OpenCV to one thread; returns a description."""
    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to CPU {core}"
    return "not pinned (no sched_setaffinity)"


def render_throughput(config: synth.SynthConfig, pairs: int, repeats: int) -> tuple[list[float], list[float]]:
    """Per-repeat wall and CPU seconds per pair for ``pairs`` renders (seeds pair_seed(0, i))."""
    for index in range(3):  # warm-up: imports, allocator, OpenCV dispatch
        synth.render_pair(config, synth.pair_seed(99, index))
    wall, cpu = [], []
    for repeat in range(repeats):
        seeds = [synth.pair_seed(repeat, index) for index in range(pairs)]
        started_wall, started_cpu = time.perf_counter(), time.process_time()
        for seed in seeds:
            synth.render_pair(config, seed)
        wall.append((time.perf_counter() - started_wall) / pairs)
        cpu.append((time.process_time() - started_cpu) / pairs)
    return wall, cpu


def stage_times(config: synth.SynthConfig, pairs: int) -> dict[str, float]:
    """Median CPU milliseconds per pair of each stage of ``_render_scene``."""
    stages: dict[str, list[float]] = {}

    def timed(name: str, function, *arguments):  # type: ignore[no-untyped-def]
        started = time.process_time()
        result = function(*arguments)
        stages.setdefault(name, []).append(1e3 * (time.process_time() - started))
        return result

    for index in range(pairs):
        rng = np.random.default_rng(synth.pair_seed(7, index))
        layers = timed("scene and textures", scene._build_layers, config, rng)
        left = timed("left view (z-buffer)", scene._render_left, layers, config.height, config.width)
        right = timed("right view (inverse maps)", scene._render_right, layers, config.height, config.width)
        timed("occlusion, left", scene._occlusion_left, layers, left[1], left[2], config.max_disp)
        timed("occlusion, right", scene._occlusion_right, layers, right[1], right[2], config.max_disp)
        timed("photometry and 8-bit", photometry.apply_photometry, config, rng, left[0], right[0], left[1])
        stages.setdefault("layers per scene", []).append(float(len(layers)))
    return {name: statistics.median(values) for name, values in stages.items()}


def write_throughput(config: synth.SynthConfig, pairs: int) -> float:
    """Pairs per second of write_synth_dataset (render + encode + atomic writes) into a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        synth.write_synth_dataset(Path(folder) / "synth", config, pairs, seed=0)
        return pairs / (time.perf_counter() - started)


def replace_section(path: Path, body: str) -> None:
    """Replace (or append) this script's own ``## `` section of BENCHMARKS.md, leaving the rest untouched."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == SECTION), None)
    if start is None:
        if not text.endswith("\n"):
            text += "\n"
        path.write_text(text + "\n" + body)
        return
    stop = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    tail = "".join(lines[stop:])
    path.write_text("".join(lines[:start]) + body + ("\n" + tail if tail else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=40, help="pairs per repeat (default 40)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats; medians are reported (default 5)")
    parser.add_argument("--write-pairs", type=int, default=40, help="pairs for the write_synth_dataset figure (default 40)")
    parser.add_argument("--write-markdown", action="store_true", help="update the section in BENCHMARKS.md")
    arguments = parser.parse_args()

    pinning = pin_to_one_core()
    config = synth.SynthConfig()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    wall, cpu = render_throughput(config, arguments.pairs, arguments.repeats)
    stages = stage_times(config, arguments.pairs)
    written = write_throughput(config, arguments.write_pairs)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    median_wall, median_cpu = statistics.median(wall), statistics.median(cpu)
    layers = stages.pop("layers per scene")
    command = "python benchmarks/synth_speed.py --write-markdown"
    rows = [
        "| measure | value |",
        "|---|---|",
        f"| render, CPU time per pair (median of {arguments.repeats} x {arguments.pairs}) | {1e3 * median_cpu:.1f} ms = **{1 / median_cpu:.1f} pairs/s** |",
        f"| render, wall time per pair (median of {arguments.repeats} x {arguments.pairs}) | {1e3 * median_wall:.1f} ms = {1 / median_wall:.1f} pairs/s |",
        f"| render, slowest repeat (wall) | {1e3 * max(wall):.1f} ms per pair |",
        f"| `write_synth_dataset` incl. PNG/PFM encoding and atomic writes ({arguments.write_pairs} pairs, wall) | {written:.1f} pairs/s |",
    ]
    stage_rows = ["| stage (CPU ms per pair, median) | ms |", "|---|---|"]
    stage_rows += [f"| {name} | {value:.2f} |" for name, value in stages.items()]
    body = "\n".join(
        [
            SECTION,
            "",
            f"Command: `{command}` (numpy {np.__version__}, OpenCV {cv2.__version__}, Python "
            f"{platform.python_version()}, {platform.machine()}; one core: process {pinning}, OpenCV and "
            f"BLAS one thread). Default `SynthConfig` (512x256, max_disp 96, {layers:.0f} layers per scene "
            "in the median, photometric differences on). Target: 20 pairs/s on one core.",
            "",
            *rows,
            "",
            *stage_rows,
            "",
            f"The machine is shared (1-minute load average {load_before:.1f} before, {load_after:.1f} after "
            "the run on 2 cores), so wall-clock figures include waiting for the CPU; CPU time is the cost "
            "of a pair on one core.",
            "",
        ]
    )
    print(body)
    if arguments.write_markdown:
        replace_section(ROOT / "BENCHMARKS.md", body)
        print(f"updated {ROOT / 'BENCHMARKS.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
