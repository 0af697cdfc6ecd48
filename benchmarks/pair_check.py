"""Cost of the pair check of ``pseudolabel sgm`` (pseudolabel.sgm.pair_check) against one full match.

Usage: python benchmarks/pair_check.py [LEFT_DIR RIGHT_DIR] [--pairs N]
Prints, per pair, the seconds of the row test, of the order test and of the full match (median of 3
runs each, after a warm-up), and the median share of the check in a match.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from pseudolabel.datasets import discover_pairs
from pseudolabel.io import read_image
from pseudolabel.sgm.matcher import match
from pseudolabel.sgm.pair_check import check_pair, disparity_signs, vertical_offset
from pseudolabel.sgm.params import SGMParams

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "sequences" / "kitti_odometry_b"


def _median_seconds(function, repeats: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folders", nargs="*", default=[str(DEFAULT / "left"), str(DEFAULT / "right")])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--max-disp", type=int, default=192)
    args = parser.parse_args()
    params = SGMParams(max_disp=args.max_disp)
    shares = []
    for pair in discover_pairs([Path(folder) for folder in args.folders])[: args.pairs]:
        left, right = read_image(pair.left), read_image(pair.right)
        check_pair(left, right, params)  # warm-up (Numba compilation)
        match(left, right, params)
        rows = _median_seconds(lambda: vertical_offset(left, right))
        order = _median_seconds(lambda: disparity_signs(left, right, params))
        full = _median_seconds(lambda: match(left, right, params))
        shares.append((rows + order) / full)
        print(f"{pair.key}: {left.shape[1]}x{left.shape[0]} rows {rows:.3f} s, order {order:.3f} s, match {full:.3f} s ({100 * shares[-1]:.1f}%)")
    print(f"median share of the check in one match: {100 * statistics.median(shares):.1f}%")


if __name__ == "__main__":
    main()
