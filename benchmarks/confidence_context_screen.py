"""Screening of wide-context features for the confidence, leave one group out (issue 19, 2026-12-01).

Which features, besides the 13 conventional measures, help rank SGM's errors on a group never trained on? A
per-pixel MLP (two hidden layers of 64, inputs standardised on the training pixels, 1500 Adam steps of 4096
pixels drawn from up to 20 000 pixels with ground truth per training pair, seed 0) is trained on every group
of ``confidence_logo.py``'s work folder but one and evaluated on the one left out, with each feature family
added to the measures:

* ``inv``: share of the pixels failing the left-right check in 15, 41 and 101-pixel windows, and the log
  distance to the nearest one (OpenCV's 5x5 approximation). The measures ``alrc15``, ``alrc41``, ``alrc101`` and
  ``dlrc`` came from it: the same information as registered measures (shares of passes, the exact distance mapped
  by ``r / (r + 10)``, reflected borders without the edge pixel repeated);
* ``tex``: log mean absolute horizontal and vertical gradients of the left image over 5, 15 and 41 pixels,
  and the log distance to the nearest textured pixel (horizontal gradient above 0.5 standard deviations);
* ``dsp``: log standard deviation of the disparity over 15x15 (over the range) and log deviation from its 5x5 median;
* ``edge``: log height of the pixel above the minimum and below the maximum disparity of 5, 9 and 15-pixel windows;
* ``dir``: share of the pixels failing the left-right check in bands 7 rows high reaching 15 and 41 pixels to the
  left of the pixel, and as far to its right (occlusions lie on one side of a foreground object);
* ``uniq``: share of the pixels failing the uniqueness test in 15, 41 and 101-pixel windows;
* ``curve`` (2026-12-01, evening): read from SGM's whole aggregated cost curve, which ``pseudolabel sgm`` does not
  store (the pair is matched again from its gray images), at the proxy's disparity rounded to the searched grid,
  ``s`` the image's mean cost: the rise of the curve one disparity below and above it over ``s``; its cost above the
  curve's minimum over ``s``; the share of a softmax of ``-cost / t`` within one disparity of it for ``t = s / 8`` and
  ``s / 32``; the log number of local minima within ``s / 10`` of the minimum; the distance in disparities from it to
  the lowest other local minimum, over the range. Its parts: ``rise`` (the first three maps), ``soft`` (the two
  softmax shares) and ``minima`` (the last two);
* ``softg``, ``softp``, ``softp8``, ``softp32`` (2026-12-01, night): the softmax shares as SGM's own winner-takes-all
  pass could compute them, within one disparity of the winner-takes-all disparity (not the proxy's): temperatures
  ``s / 8`` and ``s / 32`` with ``s`` the image's mean cost (``softg``, and ``softg8`` / ``softg32`` with one temperature
  each) or the pixel's own mean cost (``softp``, ``softp8``, ``softp32``; see :func:`share_features`).

Per group and in the mean over groups: AUC / optimal, and the coverage at a 1% bad-3 target of the labels of the
isotonic-pair calibration (fitted on the training groups) and of the best tau per pair chosen with the ground
truth (the ranking's ceiling). Run after ``confidence.py logo`` has written the group files::

    python benchmarks/confidence_context_screen.py --work work/confidence/logo --json benchmarks/results/confidence_context_screen.json

``--alone softg8,apkr`` ranks single maps instead (AUC / optimal per group and its mean, no training).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import confidence_logo

from pseudolabel.confidence.measures import LITERATURE_MEASURES

#: The conventional measures of the CCNNs before 2026-12 (the base of every variant).
BASE = LITERATURE_MEASURES
GROUPS = tuple(sorted(confidence_logo.LOGO_GROUPS))  # the order the pairs are loaded and trained in
#: The parts of the ``curve`` family: which of its maps each takes.
CURVE_PARTS = {"curve": slice(0, 7), "rise": slice(0, 3), "soft": slice(3, 5), "minima": slice(5, 7)}
#: The parts of the ``share`` maps (softmax shares at the winner-takes-all disparity): which of its maps each takes.
SHARE_PARTS = {
    "softg": slice(0, 2),
    "softg8": slice(0, 1),
    "softg32": slice(1, 2),
    "softp": slice(2, 4),
    "softp8": slice(2, 3),
    "softp32": slice(3, 4),
}
#: The maps read from a pair's re-matched cost volume, by (function name, pair key): each pair is matched once per function.
_volume_maps_cache: dict[tuple[str, str], list[np.ndarray]] = {}
FAMILIES = ("inv", "tex", "dsp", "edge", "dir", "uniq", "curve", "rise", "soft", "minima", *SHARE_PARTS)


def _box(values: np.ndarray, window: int) -> np.ndarray:
    return cv2.blur(values.astype(np.float32), (window, window), borderType=cv2.BORDER_REFLECT)


def _aggregated_volume(pair: confidence_logo.Pair) -> np.ndarray:
    """``float32`` (H, W, D) aggregated cost volume of the pair, matched again with its parameters."""
    from pseudolabel.sgm import aggregation, cost

    params = pair.params
    left = cost.prepare_image(pair.images["left_gray"] * np.float32(255))
    right = cost.prepare_image(pair.images["right_gray"] * np.float32(255))
    return aggregation.aggregate_and_select(cost.compute_cost(left, right, params), left, params)[0].astype(np.float32)


def _near_share(volume: np.ndarray, best: np.ndarray, index: np.ndarray, temperature: float | np.ndarray) -> np.ndarray:
    """(H, W) share of ``exp(-(cost - best) / temperature)`` within one disparity of ``index`` ((H, W) indices);
    ``temperature`` is one value or (H, W, 1)."""
    height, width, count = volume.shape
    rows, columns = np.indices((height, width))
    weights = np.exp(-(volume - best[..., None]) / temperature)
    near = np.zeros((height, width), np.float32)
    for offset in (-1, 0, 1):
        near += weights[rows, columns, np.clip(index + offset, 0, count - 1)] * ((index + offset >= 0) & (index + offset < count))
    return near / weights.sum(axis=2)


def curve_features(pair: confidence_logo.Pair) -> list[np.ndarray]:
    """The ``curve`` family (see the module docstring): ``float32`` (H, W) maps from the aggregated cost volume."""
    params = pair.params
    volume = _aggregated_volume(pair)
    height, width, count = volume.shape
    disparity = np.nan_to_num(pair.disparity.astype(np.float32), nan=float(params.min_disp))
    index = np.clip(np.rint(disparity - params.min_disp).astype(np.int64), 0, count - 1)
    rows, columns = np.indices((height, width))
    scale = float(volume.mean()) + 1e-6
    at = volume[rows, columns, index]
    below = volume[rows, columns, np.maximum(index - 1, 0)]
    above = volume[rows, columns, np.minimum(index + 1, count - 1)]
    best = volume.min(axis=2)
    maps = [(below - at) / scale, (above - at) / scale, (at - best) / scale]
    maps += [_near_share(volume, best, index, temperature) for temperature in (scale / 8, scale / 32)]
    interior = volume[..., 1:-1]
    minima = np.zeros(volume.shape, bool)
    minima[..., 1:-1] = (interior <= volume[..., :-2]) & (interior <= volume[..., 2:])
    minima[..., 0] = volume[..., 0] <= volume[..., 1]
    minima[..., -1] = volume[..., -1] <= volume[..., -2]
    competitive = minima & (volume <= best[..., None] + scale / 10)
    maps.append(np.log(competitive.sum(axis=2).astype(np.float32)))
    winner = volume.argmin(axis=2)
    others = np.where(minima & (np.abs(np.arange(count)[None, None, :] - winner[..., None]) > 1), volume, np.inf)
    second = others.argmin(axis=2)
    has_second = np.isfinite(others.min(axis=2))
    maps.append(np.where(has_second, np.abs(second - index) / count, 0).astype(np.float32))
    return [np.asarray(values, np.float32) for values in maps]


def share_features(pair: confidence_logo.Pair) -> list[np.ndarray]:
    """Softmax shares within one disparity of the winner-takes-all disparity (not the proxy's): temperatures
    ``s / 8`` and ``s / 32`` with ``s`` the image's mean cost (``softg``), then with ``s`` the pixel's own mean
    cost (``softp``): what a pass over SGM's aggregated volume after its winner-takes-all can compute."""
    volume = _aggregated_volume(pair)
    height, width, _ = volume.shape
    index = volume.argmin(axis=2)
    best = volume.min(axis=2)
    image_scale = np.full((height, width), float(volume.mean()) + 1e-6, np.float32)
    maps = [
        _near_share(volume, best, index, scale[..., None] / divisor) for scale in (image_scale, volume.mean(axis=2) + 1e-6) for divisor in (8, 32)
    ]
    return [np.asarray(values, np.float32) for values in maps]


def _volume_maps(pair: confidence_logo.Pair, compute: Callable[[confidence_logo.Pair], list[np.ndarray]]) -> list[np.ndarray]:
    """``compute(pair)`` (:func:`curve_features` or :func:`share_features`), computed once per pair."""
    key = (compute.__name__, pair.key)
    if key not in _volume_maps_cache:
        _volume_maps_cache[key] = compute(pair)
    return _volume_maps_cache[key]


def context_features(pair: confidence_logo.Pair, family: str) -> list[np.ndarray]:
    """The ``float32`` (H, W) maps of one feature family (see the module docstring)."""
    disparity = np.nan_to_num(pair.disparity.astype(np.float32))
    if family == "inv":
        failing = (pair.measures["lrc"] < 0.5).astype(np.float32)
        distance = cv2.distanceTransform((1 - failing).astype(np.uint8), cv2.DIST_L2, 5)
        return [_box(failing, window) for window in (15, 41, 101)] + [np.log1p(distance)]
    if family == "tex":
        gray = pair.images["left_gray"].astype(np.float32)
        gray = (gray - gray.mean()) / (gray.std() + 1e-6)
        gx = np.abs(cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3))
        gy = np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3))
        maps = [np.log(_box(g, window) + 1e-3) for window in (5, 15, 41) for g in (gx, gy)]
        textured = (_box(gx, 3) > 0.5).astype(np.uint8)
        return [*maps, np.log1p(cv2.distanceTransform(1 - textured, cv2.DIST_L2, 5))]
    if family == "dsp":
        span = float(pair.params.max_disp - pair.params.min_disp)
        mean, square = _box(disparity, 15), _box(disparity * disparity, 15)
        deviation = np.sqrt(np.maximum(square - mean * mean, 0)) / span
        return [np.log(deviation + 1e-4), np.log1p(np.abs(disparity - cv2.medianBlur(disparity, 5)))]
    if family == "edge":
        maps = []
        for window in (5, 9, 15):
            kernel = np.ones((window, window), np.uint8)
            low = cv2.erode(disparity, kernel, borderType=cv2.BORDER_REFLECT)
            high = cv2.dilate(disparity, kernel, borderType=cv2.BORDER_REFLECT)
            maps += [np.log1p(disparity - low), np.log1p(high - disparity)]
        return maps
    if family == "dir":
        failing = (pair.measures["lrc"] < 0.5).astype(np.float32)
        maps = []
        for reach in (15, 41):
            size = (reach, 7)  # (width, height) of the band
            maps.append(cv2.boxFilter(failing, -1, size, anchor=(reach - 1, 3), borderType=cv2.BORDER_REFLECT))  # to the left
            maps.append(cv2.boxFilter(failing, -1, size, anchor=(0, 3), borderType=cv2.BORDER_REFLECT))  # to the right
        return maps
    if family in CURVE_PARTS:
        return _volume_maps(pair, curve_features)[CURVE_PARTS[family]]
    if family in SHARE_PARTS:
        return _volume_maps(pair, share_features)[SHARE_PARTS[family]]
    if family == "uniq":
        failing = (pair.measures["uniqueness"] < 0.5).astype(np.float32)
        return [_box(failing, window) for window in (15, 41, 101)]
    raise SystemExit(f"unknown feature family {family!r}; choose from {', '.join(FAMILIES)}")


def features(pair: confidence_logo.Pair, families: tuple[str, ...]) -> np.ndarray:
    """(H, W, F) ``float32``: the base measures, then each family's maps."""
    maps = [np.asarray(pair.measures[name], np.float32) for name in BASE]
    for family in families:
        maps += context_features(pair, family)
    return np.stack(maps, -1).astype(np.float32)


def screen(pairs: list[confidence_logo.Pair], families: tuple[str, ...], seed: int = 0, steps: int = 1500) -> dict[str, dict[str, float]]:
    """Leave-one-group-out figures of the MLP over the base measures and ``families``."""
    import torch

    from pseudolabel.confidence.calibration import fit_pair_calibration
    from pseudolabel.confidence.sparsification import coverage_at_error, error_mask, optimal_auc, sparsification_auc

    inputs = [features(pair, families) for pair in pairs]
    results: dict[str, dict[str, float]] = {}
    for held in sorted({pair.group for pair in pairs}):
        rng = np.random.default_rng(seed)
        training = [index for index, pair in enumerate(pairs) if pair.group != held]
        samples, labels = [], []
        for index in training:
            pair = pairs[index]
            known_inputs = inputs[index][pair.known]
            drawn = rng.choice(len(pair.correct), min(len(pair.correct), 20000), replace=False)
            samples.append(known_inputs[drawn])
            labels.append(pair.correct[drawn])
        x = torch.tensor(np.concatenate(samples))
        y = torch.tensor(np.concatenate(labels).astype(np.float32))
        mean, std = x.mean(0), x.std(0) + 1e-6
        x = (x - mean) / std
        torch.manual_seed(seed)
        network = torch.nn.Sequential(
            torch.nn.Linear(x.shape[1], 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1)
        )
        optimiser = torch.optim.Adam(network.parameters(), 3e-3)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
        for _ in range(steps):
            batch = torch.randint(0, len(y), (4096,))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(network(x[batch])[:, 0], y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()

        def predict(index: int) -> np.ndarray:
            with torch.no_grad():
                flat = torch.tensor(inputs[index].reshape(-1, inputs[index].shape[-1]))
                return torch.sigmoid(network((flat - mean) / std)[:, 0]).numpy().reshape(inputs[index].shape[:2])

        training_confidence = [predict(index) for index in training]
        calibration = fit_pair_calibration(
            [c[pairs[i].known] for i, c in zip(training, training_confidence)],
            [pairs[i].correct for i in training],
            [pairs[i].invalid_share for i in training],
        )
        rows = []
        for index, pair in enumerate(pairs):
            if pair.group != held:
                continue
            confidence = predict(index)
            bad, known = error_mask(pair.disparity, pair.ground_truth)
            labels_at_target = confidence_logo.labels_at_target(pair, calibration.apply(confidence, pair.invalid_share), 0.01)
            rows.append(
                (
                    sparsification_auc(confidence, bad, known),
                    optimal_auc(float(bad.sum() / max(known.sum(), 1))),
                    labels_at_target["gt_coverage"],
                    coverage_at_error(np.where(np.isfinite(pair.disparity), confidence, -np.inf), bad, known, 0.01),
                )
            )
        table = np.array(rows, dtype=float)
        results[held] = {
            "auc": float(table[:, 0].mean()),
            "ratio": float(table[:, 0].mean() / table[:, 1].mean()),
            "target_coverage": float(table[:, 2].mean()),
            "ranking_target_coverage": float(table[:, 3].mean()),
        }
    return results


def rank_alone(pairs: list[confidence_logo.Pair], names: list[str]) -> dict[str, dict[str, float]]:
    """``{name: {group: AUC / optimal}}`` of single maps used as the confidence, no training: the first map of a feature
    family, or a stored measure by name."""
    from pseudolabel.confidence.sparsification import error_mask, optimal_auc, sparsification_auc

    sums: dict[str, dict[str, list[tuple[float, float]]]] = {name: {} for name in names}
    for pair in pairs:
        bad, known = error_mask(pair.disparity, pair.ground_truth)
        optimal = optimal_auc(float(bad.sum() / max(known.sum(), 1)))
        for name in names:
            confidence = pair.measures[name] if name in pair.measures else context_features(pair, name)[0]
            sums[name].setdefault(pair.group, []).append((sparsification_auc(confidence, bad, known), optimal))
    return {
        name: {group: float(np.mean([a for a, _ in rows]) / np.mean([o for _, o in rows])) for group, rows in groups.items()}
        for name, groups in sums.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("work/confidence/logo"), help="confidence_logo.py's work folder (its group files)")
    parser.add_argument("--variants", default="none,inv,tex,dsp,edge", help="comma-separated: none (the measures alone) or FAMILY[+FAMILY]")
    parser.add_argument("--json", type=Path, default=None, help="JSON file the figures are merged into (by variant)")
    parser.add_argument(
        "--alone", default="", help="comma-separated families (their first map) or measures ranked alone, no training, instead of --variants"
    )
    args = parser.parse_args()
    files = {group: args.work / f"{group}.h5" for group in GROUPS}
    missing = [str(path) for path in files.values() if not path.exists()]
    if missing:
        raise SystemExit(f"{', '.join(missing)} missing: run `python benchmarks/confidence.py logo --data ../shared/data --work {args.work}` first")
    pairs = confidence_logo.load_pairs(files)
    if args.alone:
        for name, ratios in rank_alone(pairs, args.alone.split(",")).items():
            per_group = " ".join(f"{group}:{ratio:.2f}" for group, ratio in ratios.items())
            print(f"{name} alone: / optimal {np.mean(list(ratios.values())):.2f} | {per_group}", flush=True)
        return
    report: dict[str, dict[str, dict[str, float]]] = {}
    for variant in args.variants.split(","):
        families = () if variant == "none" else tuple(variant.split("+"))
        started = time.perf_counter()
        results = screen(pairs, families)
        report[variant] = results
        mean = {name: float(np.mean([r[name] for r in results.values()])) for name in ("auc", "ratio", "target_coverage", "ranking_target_coverage")}
        per_group = " ".join(f"{group}:{r['ratio']:.2f}/{100 * r['ranking_target_coverage']:.0f}" for group, r in results.items())
        print(
            f"measures{'' if variant == 'none' else ' + ' + variant}: AUC x100 {100 * mean['auc']:.2f}, / optimal {mean['ratio']:.2f}, "
            f"kept at 1% {100 * mean['target_coverage']:.1f}%, ranking ceiling {100 * mean['ranking_target_coverage']:.1f}% "
            f"({time.perf_counter() - started:.0f} s) | {per_group}",
            flush=True,
        )
    if args.json:  # merged into what the file holds: a run of other variants adds to it
        merged = json.loads(args.json.read_text()) if args.json.exists() else {}
        args.json.write_text(json.dumps({**merged, **report}, indent=1) + "\n")


if __name__ == "__main__":
    main()
