"""Benchmark: choose SGM's smoothness penalties (``p1``, ``p2``, ``p2_gamma``) on one group of scenes, report them on the others.

Run from the repository root (the shared data folder sits next to the repository)::

    python benchmarks/sgm_penalties.py --tune middlebury2006 --json benchmarks/results/sgm_penalties.json

Every combination of the grid is run with the other parameters at their defaults on every scene of
``manifest.json`` (``match``, the scene's own ``max_disp``), and scored as in ``sgm_vs_opencv.py``:
bad-2 (%) of the dense disparity, density (%) and bad-2 of the ``valid`` subset, on non-occluded
ground-truth pixels; means over scenes. The choice reads the ``--tune`` group only: the combination
of lowest dense bad-2 among those whose valid bad-2 is no higher and whose valid density is at most
``--density-slack`` points lower than the current defaults' on that group. The table then gives the
same three figures on the scenes outside the tuning group, which played no part in the choice.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, Scene, load_manifest, load_scene, machine_description, sgm_figures

from pseudolabel.sgm.matcher import match
from pseudolabel.sgm.params import SGMParams

METRICS = ("dense_bad2", "valid_density", "valid_bad2")


def score(params: SGMParams, scenes: list[Scene]) -> list[dict[str, float | str]]:
    """The three figures of ``params`` on every scene (one row per scene)."""
    rows: list[dict[str, float | str]] = []
    for scene in scenes:
        result = match(scene.left, scene.right, params.replace(max_disp=scene.max_disp))
        figures = sgm_figures(result.disparity, result.valid, scene.gt, scene.mask)
        rows.append({"scene": scene.scene_id, "group": scene.group, **{name: round(value, 4) for name, value in figures.items()}})
    return rows


def means(rows: list[dict[str, float | str]], inside: bool, group: str) -> dict[str, float]:
    """Means over the scenes of ``group`` (``inside``) or outside it."""
    selected = [row for row in rows if (row["group"] == group) == inside]
    return {key: float(np.mean([float(row[key]) for row in selected])) for key in METRICS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--tune", default="middlebury2006", help="group of manifest.json the choice reads")
    parser.add_argument("--p1", type=int, nargs="+", default=[6, 8, 10, 14])
    parser.add_argument("--p2", type=int, nargs="+", default=[100, 150, 193, 250, 300, 400])
    parser.add_argument("--p2-gamma", type=float, nargs="+", default=[2.0, 4.0, 8.0])
    parser.add_argument("--density-slack", type=float, default=0.5, help="points of valid density the choice may lose")
    parser.add_argument("--json", type=Path, help="write every row here")
    args = parser.parse_args()

    scenes = [load_scene(entry, args.data) for entry in load_manifest(args.data)]
    defaults = SGMParams()
    grid = [(defaults.p1, defaults.p2, defaults.p2_gamma)]
    grid += [combo for combo in itertools.product(args.p1, args.p2, args.p2_gamma) if combo != grid[0] and combo[0] < combo[1]]
    results = []
    started = time.perf_counter()
    for p1, p2, gamma in grid:
        rows = score(defaults.replace(p1=p1, p2=p2, p2_gamma=gamma), scenes)
        results.append({"p1": p1, "p2": p2, "p2_gamma": gamma, "rows": rows})
        tuned, other = means(rows, True, args.tune), means(rows, False, args.tune)
        print(
            f"p1={p1:3d} p2={p2:4d} gamma={gamma:4.1f}  {args.tune}: {tuned['dense_bad2']:.2f} {tuned['valid_density']:.1f} "
            f"{tuned['valid_bad2']:.2f}   others: {other['dense_bad2']:.2f} {other['valid_density']:.1f} {other['valid_bad2']:.2f}",
            flush=True,
        )
    on_tune = [means(result["rows"], True, args.tune) for result in results]
    reference = on_tune[0]  # the defaults
    admissible = [
        index
        for index, figures in enumerate(on_tune)
        if figures["valid_bad2"] <= reference["valid_bad2"] and figures["valid_density"] >= reference["valid_density"] - args.density_slack
    ]
    chosen = results[min(admissible, key=lambda index: on_tune[index]["dense_bad2"])]
    print(f"\n{machine_description()}; {len(grid)} combinations x {len(scenes)} scenes in {time.perf_counter() - started:.0f} s")
    print(f"chosen on {args.tune}: p1={chosen['p1']} p2={chosen['p2']} p2_gamma={chosen['p2_gamma']}\n")
    print(f"| penalties | {args.tune}: dense bad-2 | valid density | valid bad-2 | other scenes: dense bad-2 | valid density | valid bad-2 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, result in (("defaults", results[0]), ("chosen", chosen)):
        tuned, other = means(result["rows"], True, args.tune), means(result["rows"], False, args.tune)
        print(
            f"| {label}: p1 {result['p1']}, p2 {result['p2']}, gamma {result['p2_gamma']:g} | {tuned['dense_bad2']:.2f} | "
            f"{tuned['valid_density']:.1f} | {tuned['valid_bad2']:.2f} | {other['dense_bad2']:.2f} | {other['valid_density']:.1f} | "
            f"{other['valid_bad2']:.2f} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"machine": machine_description(), "tune": args.tune, "density_slack": args.density_slack, "results": results}
        payload["chosen"] = {key: chosen[key] for key in ("p1", "p2", "p2_gamma")}
        args.json.write_text(json.dumps(payload, separators=(",", ":")))


if __name__ == "__main__":
    main()
