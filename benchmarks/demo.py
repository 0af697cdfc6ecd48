"""Run time of ``pseudolabel demo`` on this machine: the ``## Demo`` section of BENCHMARKS.md.

Each run is the whole command in a fresh subprocess with a fresh output folder (nothing reused
between runs): SGM, confidence, labels, the two evaluations, the adaptation and the report. The
Numba kernels come from the on-disk cache as they do after the first run on a machine; ``--cold``
adds one run with an empty Numba cache (what the very first run after ``pip install`` pays).

Reported per run: wall time, CPU time of the process and its children (user + system), the
seconds of every step (from the demo's ``results.json``) and the machine's load average, since the
machine may be shared; the table the demo printed (from the last run) is copied too.

Usage::

    python benchmarks/demo.py --runs 3 --write
    python benchmarks/demo.py --runs 1 --cold --model /path/to/source.pt
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_description, replace_section

REPO = Path(__file__).resolve().parents[1]
SECTION = "Demo"
STEPS = ("sgm", "confidence", "labels", "predict_before", "adapt", "predict_after", "report")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(out: Path, extra: list[str], cold: bool) -> dict[str, Any]:
    """One ``pseudolabel demo`` in a subprocess; wall/CPU seconds, step seconds and the printed table."""
    env = dict(os.environ)
    if cold:
        env["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="numba-cold-")
    load_before = os.getloadavg()[0]
    cpu_before = _children_cpu()
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "pseudolabel.cli.main", "demo", "--out", str(out), *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    cpu = _children_cpu() - cpu_before
    if completed.returncode != 0:
        raise SystemExit(f"pseudolabel demo failed ({completed.returncode}):\n{completed.stderr[-3000:]}\n{completed.stdout[-2000:]}")
    results = json.loads((out / "results.json").read_text())
    table = completed.stdout[completed.stdout.index("Mean over") :].strip() if "Mean over" in completed.stdout else completed.stdout.strip()
    return {
        "wall": wall,
        "cpu": cpu,
        "steps": results["seconds"],
        "table": table,
        "load": (load_before, os.getloadavg()[0]),
        "cold": cold,
        "mean": results["mean"],
    }


def markdown(runs: list[dict[str, Any]], command: str) -> str:
    warm = [run for run in runs if not run["cold"]]
    lines = [
        f"Command: `{command}` ({machine_description()}).",
        "",
        (
            "Each run: `pseudolabel demo` in a fresh process with a fresh `--out` folder (SGM, CCNN, labels, the network "
            "on the 4 shipped scenes before and after adaptation, the adaptation, the report). CPU time is user + system "
            "of the process and its threads; the machine is shared, so wall time includes waiting for the CPU "
            "(load average before / after each run is given). Target: under 5 minutes on this 2-core CPU."
        ),
        "",
        "| run | wall s | CPU s | load before / after | " + " | ".join(STEPS) + " |",
        "|---|---:|---:|---|" + "---:|" * len(STEPS),
    ]
    for index, run in enumerate(runs, 1):
        kind = "cold Numba cache" if run["cold"] else "warm"
        steps = " | ".join(f"{run['steps'].get(step, float('nan')):.1f}" for step in STEPS)
        lines.append(f"| {index} ({kind}) | {run['wall']:.0f} | {run['cpu']:.0f} | {run['load'][0]:.1f} / {run['load'][1]:.1f} | {steps} |")
    if warm:
        lines += [
            "",
            (
                f"Median of the {len(warm)} warm run(s): **{statistics.median(r['wall'] for r in warm):.0f} s wall**, "
                f"{statistics.median(r['cpu'] for r in warm):.0f} s CPU."
            ),
        ]
    lines += ["", "The table the demo printed (last run):", "", "```", runs[-1]["table"], "```"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="warm runs")
    parser.add_argument("--cold", action="store_true", help="one more run with an empty Numba cache, first")
    parser.add_argument("--model", default=None, help="source network (default: the demo's, madnet_synth)")
    parser.add_argument("--steps", type=int, default=None, help="adaptation steps (default: the demo's)")
    parser.add_argument("--write", action="store_true", help="write the ## Demo section of BENCHMARKS.md")
    parser.add_argument("--keep", default=None, help="copy the last run's output folder (report.html, ...) here")
    args = parser.parse_args()
    extra: list[str] = []
    if args.model:
        extra += ["--model", args.model]
    if args.steps:
        extra += ["--steps", str(args.steps)]
    command = "python benchmarks/demo.py " + " ".join(a for a in sys.argv[1:] if not a.startswith("--keep") and a != args.keep)
    runs = []
    with tempfile.TemporaryDirectory(prefix="demo-bench-") as work:
        plan = ([True] if args.cold else []) + [False] * args.runs
        for index, cold in enumerate(plan):
            run = run_once(Path(work) / f"run{index}", extra, cold)
            print(
                f"run {index + 1}/{len(plan)}{' (cold)' if cold else ''}: {run['wall']:.0f} s wall, {run['cpu']:.0f} s CPU, steps {run['steps']}",
                flush=True,
            )
            runs.append(run)
        if args.keep:
            import shutil

            shutil.rmtree(args.keep, ignore_errors=True)
            shutil.copytree(Path(work) / f"run{len(plan) - 1}", args.keep)
    text = markdown(runs, command.strip())
    print(text)
    if args.write:
        replace_section(REPO / "BENCHMARKS.md", SECTION, text)


if __name__ == "__main__":
    main()
