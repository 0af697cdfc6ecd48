"""Benchmark (issue 20): would a per-pixel disparity range keep the default matcher's accuracy?

Run from the repository root (the shared data folder sits next to the repository)::

    python benchmarks/sgm_range_restriction.py --json benchmarks/results/sgm_range_restriction.json

The 8-path aggregation is 80% of a default ``match`` and already runs at about OpenCV's time per path,
so the default could only reach OpenCV's 5-path StereoSGBM by visiting fewer cost-volume cells. The
classic way (a hierarchical search range, as in tSGM) matches a reduced pair first and searches each
full-resolution pixel only around what it found there. This measures what that does to accuracy
before anyone writes the kernels for it: each pixel keeps the disparities within ``margin`` pixels of
the minimum and maximum of the ``fast`` preset's dense disparity (the pair matched at half resolution)
over a ``(2 radius + 1)`` square window around it; every other cell of the ``uint8`` cost volume is set
to 255 (four times the 9x7 census maximum, so no path and no winner takes it in practice), and the
default aggregation and checks run unchanged. The share of cells kept is the share of the aggregation's
work a variable-range kernel would still do.

Scored as in ``sgm_penalties.py`` (dense bad-2, density and bad-2 of the valid subset, non-occluded
pixels with ground truth, means over scenes); the figures are reported on Middlebury 2006 and, apart,
on the 19 other scenes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import maximum_filter, minimum_filter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, load_manifest, load_scene, machine_description, sgm_figures

from pseudolabel.sgm import aggregation, cost
from pseudolabel.sgm.matcher import finish_matching, match
from pseudolabel.sgm.params import SGMParams, SGMResult

#: Cost written outside a pixel's range (the census cost of the default 9x7 window is at most 62).
OUTSIDE_COST = 255
METRICS = ("dense_bad2", "valid_density", "valid_bad2", "kept_cells", "winner_outside")


def search_range(coarse: np.ndarray, radius: int, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel ``(low, high)`` disparities in pixels (``float32`` (H, W), inclusive): the window minimum and
    maximum of the coarse dense disparity ``coarse`` (``float32`` (H, W), NaN counted as 0), widened by ``margin``."""
    dense = np.where(np.isfinite(coarse), coarse, 0.0).astype(np.float32)
    size = 2 * radius + 1
    return np.floor(minimum_filter(dense, size=size)) - margin, np.ceil(maximum_filter(dense, size=size)) + margin


def match_in_range(left: np.ndarray, right: np.ndarray, params: SGMParams, low: np.ndarray, high: np.ndarray) -> tuple[SGMResult, float]:
    """The default pipeline with the cost of every cell outside ``[low, high]`` set to :data:`OUTSIDE_COST`;
    returns the result and the share of cells kept."""
    left_gray, right_gray = cost.prepare_image(left), cost.prepare_image(right)
    volume = cost.compute_cost(left_gray, right_gray, params)
    disparities = np.arange(params.min_disp, params.max_disp, dtype=np.float32)
    outside = (disparities[None, None, :] < low[:, :, None]) | (disparities[None, None, :] > high[:, :, None])
    volume[outside] = OUTSIDE_COST
    _, winners = aggregation.aggregate_and_select(volume, left_gray, params)
    assert winners.disparity is not None and winners.disparity_right is not None
    return finish_matching(winners.disparity, winners.disparity_right, winners, left_gray, params), float(1.0 - outside.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--ranges", nargs="+", default=["2,4", "3,8", "3,16", "5,8", "5,16", "7,24"], help="RADIUS,MARGIN pairs (pixels) to try")
    parser.add_argument("--group", default="middlebury2006", help="reported apart from the other scenes")
    parser.add_argument("--json", type=Path, help="write every row here")
    args = parser.parse_args()
    ranges = [tuple(int(value) for value in item.split(",")) for item in args.ranges]

    started = time.perf_counter()
    rows: list[dict[str, object]] = []
    for entry in load_manifest(args.data):
        scene = load_scene(entry, args.data)
        params = SGMParams().replace(max_disp=scene.max_disp)
        reference = match(scene.left, scene.right, params)
        defaults = sgm_figures(reference.disparity, reference.valid, scene.gt, scene.mask)
        row: dict[str, object] = {"scene": scene.scene_id, "group": scene.group, "defaults": defaults}
        coarse = match(scene.left, scene.right, SGMParams.preset("fast").replace(max_disp=scene.max_disp)).disparity
        for radius, margin in ranges:
            low, high = search_range(coarse, radius, margin)
            result, kept = match_in_range(scene.left, scene.right, params, low, high)
            outside = np.isfinite(result.disparity) & ((result.disparity < low - 1) | (result.disparity > high + 1))
            row[f"r{radius}m{margin}"] = {
                **sgm_figures(result.disparity, result.valid, scene.gt, scene.mask),
                "kept_cells": 100.0 * kept,
                "winner_outside": float(100.0 * outside.mean()),
            }
        rows.append(row)
        print(scene.scene_id, json.dumps({key: value for key, value in row.items() if key not in ("scene", "group")}), flush=True)

    print(f"\n{machine_description()}; {len(rows)} scenes in {time.perf_counter() - started:.0f} s\n")
    print(
        f"| search range | {args.group}: dense bad-2 | valid density | valid bad-2 | cells kept % | other scenes: dense bad-2 | valid density | valid bad-2 | cells kept % |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in ["defaults"] + [f"r{radius}m{margin}" for radius, margin in ranges]:
        cells = []
        for inside in (True, False):
            chosen = [row[name] for row in rows if (row["group"] == args.group) == inside]
            means = {metric: float(np.mean([values.get(metric, 100.0) for values in chosen])) for metric in METRICS[:4]}  # type: ignore[attr-defined]
            cells += [f"{means['dense_bad2']:.2f}", f"{means['valid_density']:.1f}", f"{means['valid_bad2']:.2f}", f"{means['kept_cells']:.0f}"]
        if name == "defaults":
            label = "defaults (every disparity)"
        else:
            side = 2 * int(name[1:].split("m")[0]) + 1
            label = f"window {side}x{side}, margin {name.split('m')[1]}"
        print(f"| {label} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine_description(), "outside_cost": OUTSIDE_COST, "rows": rows}, separators=(",", ":")))


if __name__ == "__main__":
    main()
