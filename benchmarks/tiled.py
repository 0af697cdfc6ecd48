"""Tiled matching: peak memory of tiled against untiled matching, and agreement against the overlap.

Writes the ``## Tiled matching`` section of ``BENCHMARKS.md`` (keeping its hand-written summary) and
``benchmarks/results/tiled.json``.

* Memory: each size is matched in a fresh subprocess (``--child``) on a synthetic random-texture pair
  with a constant disparity; the kernels are warmed on a small pair first, then the peak resident
  set size (``ru_maxrss``) of the whole process is read after the match. Untiled rows are skipped
  when the model says they would not fit in this machine's memory (``--max-untiled``).
* Agreement: real scenes (a Middlebury 2014 scene and the KITTI 2012 frame of the shared data) matched
  untiled and in bands of ``--core`` rows with increasing overlap; the share of pixels whose value
  differs is counted per output (any difference in the float disparity counts).

Run: ``python benchmarks/tiled.py`` (about 10 minutes on 2 cores, 6 GB of memory at the largest size).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import DEFAULT_DATA, REPO_ROOT, replace_section

SIZES = [(376, 1241, 192), (1500, 2000, 128), (2000, 3000, 128), (4000, 6000, 256)]
BUDGETS = {(376, 1241, 192): "600M", (1500, 2000, 128): "1G", (2000, 3000, 128): "1.5G", (4000, 6000, 256): "4G"}
OVERLAPS = [0, 16, 32, 64, 96, 128, 192]
SCENES = {
    "Adirondack (Middlebury 2014, 718x496)": ("middlebury/2014/Adirondack/im0.png", "middlebury/2014/Adirondack/im1.png", 80),
    "KITTI 2012 000070 (1241x376)": ("kitti2012/training/colored_0/000070_10.png", "kitti2012/training/colored_1/000070_10.png", 192),
}


def synthetic_pair(height: int, width: int, shift: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random texture (smoothed over 2x2) and the same texture shifted by ``shift`` pixels."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, size=(height, width + shift), dtype=np.uint16)
    texture[:, 1:] += texture[:, :-1]
    texture[1:] += texture[:-1]
    texture //= 4
    left = np.ascontiguousarray(texture[:, shift:].astype(np.uint8))
    right = np.ascontiguousarray(texture[:, :width].astype(np.uint8))
    return left, right


def _resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(height: int, width: int, num_disp: int, budget: str) -> None:
    """Match one synthetic pair and print a JSON line: peak RSS, RSS before matching, seconds, bands."""
    from pseudolabel.sgm import SGMParams, match, release_buffers, tiled

    params = SGMParams(max_disp=num_disp)
    small_left, small_right = synthetic_pair(64, num_disp + 64)
    match(small_left, small_right, params)  # load the compiled kernels, start the threads
    tiny = tiled.match_tiled(small_left, small_right, params, bands=[tiled.Band(0, 32, 0, 40), tiled.Band(32, 64, 24, 64)])
    del tiny
    release_buffers()
    left, right = synthetic_pair(height, width)
    before = _resident_bytes()
    limit = None if budget == "none" else tiled.parse_size(budget)
    bands = 1 if limit is None else len(tiled.plan_bands(height, width, params, limit, image_bytes=left.nbytes + right.nbytes))
    start = time.perf_counter()
    result = match(left, right, params, max_memory=limit)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert result.disparity.shape == (height, width)
    print(json.dumps({"peak": peak, "before": before, "seconds": seconds, "bands": bands}))


def measure(height: int, width: int, num_disp: int, budget: str) -> dict:
    """Run :func:`child` in a fresh interpreter."""
    command = [sys.executable, __file__, "--child", str(height), str(width), str(num_disp), budget]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO_ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_rows(max_untiled: float) -> list[dict]:
    from pseudolabel.sgm import SGMParams, tiled

    rows = []
    for height, width, num_disp in SIZES:
        params = SGMParams(max_disp=num_disp)
        images = 2 * height * width
        model = tiled.required_memory(height, width, params, images)
        row: dict = {
            "size": f"{width}x{height}",
            "disp": num_disp,
            "untiled_model": model,
            "smallest": tiled.smallest_budget(height, width, params, image_bytes=images),
            "budget": BUDGETS[(height, width, num_disp)],
        }
        if model <= max_untiled:
            row["untiled"] = measure(height, width, num_disp, "none")
        row["tiled"] = measure(height, width, num_disp, row["budget"])
        print(row, flush=True)
        rows.append(row)
    return rows


def agreement_rows(core: int, data_dir: Path) -> list[dict]:
    from pseudolabel.io import read_image
    from pseudolabel.sgm import SGMParams, match, tiled

    rows = []
    for name, (left_path, right_path, num_disp) in SCENES.items():
        left, right = read_image(data_dir / left_path), read_image(data_dir / right_path)
        params = SGMParams(max_disp=num_disp)
        height = left.shape[0]
        untiled = match(left, right, params)
        cuts = list(range(0, height, core)) + [height]
        for overlap in OVERLAPS:
            bands = [tiled.Band(a, b, max(0, a - overlap), min(height, b + overlap)) for a, b in zip(cuts[:-1], cuts[1:])]
            result = tiled.match_tiled(left, right, params, bands=bands)
            row = {
                "scene": name,
                "cuts": len(bands) - 1,
                "overlap": overlap,
                "disparity": float(np.mean(result.disparity != untiled.disparity)),
                "over_1px": float(np.mean(np.abs(result.disparity - untiled.disparity) > 1)),
                "wta": float(np.mean(result.disparity_wta != untiled.disparity_wta)),
                "valid": float(np.mean(result.valid != untiled.valid)),
            }
            print(row, flush=True)
            rows.append(row)
    return rows


def _gib(size: float) -> str:
    return f"{size / 2**30:.2f}"


def render(memory: list[dict], agreement: list[dict], core: int) -> str:
    lines = [
        "### Memory: tiled against untiled",
        "",
        "Synthetic random-texture pairs (2x2-smoothed uniform noise, constant disparity 20), default `SGMParams`, "
        "the whole process's peak resident memory (`ru_maxrss`, GiB) after the kernels were loaded; "
        "`model` is what `pseudolabel.sgm.tiled.required_memory` predicts for untiled matching "
        "(the smallest `--max-memory` that does not tile), `smallest` the smallest budget that works "
        "(`pseudolabel.sgm.tiled.smallest_budget`).",
        "",
        "| size | disparities | untiled model | untiled peak | untiled s | smallest | budget | bands | tiled peak | tiled s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in memory:
        untiled = row.get("untiled")
        peak = _gib(untiled["peak"]) if untiled else "not run (does not fit)"
        seconds = f"{untiled['seconds']:.1f}" if untiled else "-"
        tiled_row = row["tiled"]
        lines.append(
            f"| {row['size']} | {row['disp']} | {_gib(row['untiled_model'])} | {peak} | {seconds} | {_gib(row['smallest'])} | {row['budget']} | "
            f"{tiled_row['bands']} | {_gib(tiled_row['peak'])} | {tiled_row['seconds']:.1f} |"
        )
    lines += [
        "",
        f"### Agreement with untiled matching against the overlap (bands of {core} core rows)",
        "",
        "Share of pixels (%) whose output differs from untiled matching, with a cut every "
        f"{core} rows (far more cuts than a budget makes: the differences scale with the number of cuts). "
        "`disparity`: any difference in the dense float disparity; `> 1 px`: differences above one pixel; "
        "`winner`: the integer winner-takes-all disparity; `valid`: the validity mask.",
        "",
        "| scene | cuts | overlap rows | disparity | > 1 px | winner | valid |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in agreement:
        lines.append(
            f"| {row['scene']} | {row['cuts']} | {row['overlap']} | {100 * row['disparity']:.3f} | {100 * row['over_1px']:.3f} | "
            f"{100 * row['wta']:.3f} | {100 * row['valid']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=4, metavar=("H", "W", "D", "BUDGET"), help=argparse.SUPPRESS)
    parser.add_argument("--core", type=int, default=64, help="core rows of the bands in the agreement table")
    parser.add_argument("--max-untiled", type=float, default=4 * 2**30, help="skip untiled runs the model puts above this many bytes")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    if args.child:
        height, width, num_disp, budget = args.child
        child(int(height), int(width), int(num_disp), budget)
        return
    results_path = REPO_ROOT / "benchmarks" / "results" / "tiled.json"
    previous = json.loads(results_path.read_text()) if results_path.exists() else {}
    memory = previous.get("memory", []) if args.skip_memory else memory_rows(args.max_untiled)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps({"memory": memory}, indent=1) + "\n")  # kept if the agreement part fails
    agreement = agreement_rows(args.core, args.data)
    results_path.write_text(json.dumps({"memory": memory, "agreement": agreement, "core": args.core}, indent=1) + "\n")
    replace_section(args.out, "Tiled matching", render(memory, agreement, args.core))


if __name__ == "__main__":
    main()
