"""Confidence benchmarks: proxies of the shared scenes, AUC tables, label quality and scoring speed.

Sub-commands (run from the repository root with the virtual environment active):

``prepare --data /work/shared/data --out work/confidence``
    SGM (default parameters, each scene's ``max_disp`` from ``manifest.json``) on every scene of the
    manifest: ``train.h5`` holds the Middlebury 2006 scenes (the training split of the shipped CCNN),
    ``heldout.h5`` every other scene (Middlebury 2001 and v2, KITTI 2012, FlyingThings3D). Keys are
    those of ``pseudolabel.dataset.discover_pairs`` on the data root, so ``--gt /work/shared/data``
    finds the ground truth.
``auc --work work/confidence --models ccnn=models/weights/ccnn.pt wild=work/confidence/ccnn_wild.pt``
    Scores the held-out file with every conventional measure and the given networks, prints and writes
    (``--write``) the AUC table, the label quality at several tau, and the ``## Confidence`` section
    of BENCHMARKS.md.
``speed --data /work/shared/data``
    Median time of SGM on the KITTI pair and of scoring it (CCNN + every conventional measure), in the
    same run (ratio).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Confidence"
TRAIN_GROUP = "middlebury2006"


def _scenes(data: Path) -> list[dict[str, Any]]:
    manifest = json.loads((data / "manifest.json").read_text())
    return manifest["scenes"]


def prepare(data: Path, out: Path) -> None:
    """Proxies of every manifest scene into ``out/train.h5`` and ``out/heldout.h5``."""
    from pseudolabel.dataset import discover_pairs
    from pseudolabel.io import read_image
    from pseudolabel.sgm import SGMParams, match
    from pseudolabel.store import create_or_open_proxies, pair_attributes, result_arrays

    by_left = {Path(pair.left).resolve(): pair for pair in discover_pairs([data], skip_unpaired=True)}
    out.mkdir(parents=True, exist_ok=True)
    base = SGMParams()
    files = {name: create_or_open_proxies(out / f"{name}.h5", base) for name in ("train", "heldout")}
    try:
        for scene in _scenes(data):
            left_path = (data / scene["left"]).resolve()
            right_path = (data / scene["right"]).resolve()
            pair = by_left.get(left_path)
            key = pair.key if pair is not None else scene["id"]
            target = files["train" if scene["group"] == TRAIN_GROUP else "heldout"]
            if key in target:
                continue
            params = base.replace(max_disp=int(scene["max_disp"]))
            left, right = read_image(left_path), read_image(right_path)
            started = time.perf_counter()
            result = match(left, right, params)
            seconds = time.perf_counter() - started
            attrs = pair_attributes(key, left_path, right_path, params, result.disparity.shape, result.valid,
                                    gt_left=data / scene["gt_left"], gt_scale=scene["gt_scale"])
            target.write_pair(key, result_arrays(result), {**attrs, "complete": True, "sgm_seconds": seconds})
            print(f"{key:45s} {result.disparity.shape} max_disp {params.max_disp:4d}  {seconds:.2f} s", flush=True)
    finally:
        for handle in files.values():
            handle.close()


def _heldout_results(work: Path, models: dict[str, Path], data: Path) -> dict[str, dict[str, Any]]:
    from pseudolabel.cli.confidence import evaluate_file, ground_truth_lookup
    from pseudolabel.confidence import MEASURES, compute_measure
    from pseudolabel.confidence_training import make_scorer
    from pseudolabel.sparsification import image_evaluation
    from pseudolabel.store import open_proxies

    path = work / "heldout.h5"
    scorers = {name: make_scorer(model, device="cpu", precision="auto")[0] for name, model in models.items()}
    with open_proxies(path, "r") as proxies:
        keys = proxies.keys()
        lookup = ground_truth_lookup(data, keys, None)
        results: dict[str, dict[str, Any]] = {}
        for key in keys:
            if key not in lookup:
                continue
            features = proxies.read(key, ["disparity", "disparity_right", "valid", "cost_best", "cost_second", "cost_second_local", "cost_mean"])
            params = proxies.pair_params(key)
            confidences = {name: compute_measure(name, features, params) for name in MEASURES}
            for name, scorer in scorers.items():
                confidences[name] = scorer.confidence_from_features(features, params, confidences)
            from pseudolabel.cli.confidence import read_ground_truth

            gt_path, scale = lookup[key]
            ground_truth = read_ground_truth(gt_path, scale, features["disparity"].shape, key)
            evaluation = image_evaluation(confidences, features["disparity"], ground_truth)
            evaluation["confidences"] = {name: confidences[name] for name in scorers}
            evaluation["disparity"] = features["disparity"]
            evaluation["ground_truth"] = ground_truth
            results[key] = evaluation
    del evaluate_file
    return results


def _label_rows(results: dict[str, dict[str, Any]], measure: str, taus: list[float]) -> list[tuple[float, float, float, float]]:
    from pseudolabel.labels import label_statistics, threshold_labels

    rows = []
    for tau in taus:
        coverage, bad3, density = [], [], []
        for value in results.values():
            labels = threshold_labels(value["disparity"], value["confidences"][measure], tau)
            stats = label_statistics(labels, value["ground_truth"])
            coverage.append(stats["gt_coverage"])
            bad3.append(stats["bad3"])
            density.append(stats["density"])
        rows.append((tau, float(np.mean(coverage)), float(np.nanmean(bad3)), float(np.mean(density))))
    return rows


def auc(work: Path, models: dict[str, Path], data: Path, write: bool) -> str:
    """AUC table of the held-out scenes (+ label quality) as markdown; optionally into BENCHMARKS.md."""
    from pseudolabel.cli.confidence import summarise_aucs

    results = _heldout_results(work, models, data)
    means, optimal, error = summarise_aucs(results)
    groups: dict[str, list[str]] = {}
    for key in results:
        groups.setdefault(key.split("/")[0] if not key.startswith("middlebury") else "/".join(key.split("/")[:2]), []).append(key)
    group_names = sorted(groups)
    lines = [
        f"Held-out scenes ({len(results)}: {', '.join(f'{g} {len(groups[g])}' for g in group_names)}); "
        f"mean SGM bad-3 {100 * error:.2f}%. AUC x100 of the bad-3 sparsification curve (lower is better), "
        "mean over images, and per group:",
        "",
        "| measure | mean AUC | / optimal | " + " | ".join(group_names) + " |",
        "|---|---:|---:|" + "---:|" * len(group_names),
    ]

    def group_mean(name: str, group: str) -> float:
        return float(np.mean([results[k]["auc"][name] for k in groups[group]]))

    for name, value in sorted(means.items(), key=lambda item: item[1]):
        label = f"**{name}**" if name in models else name
        cells = " | ".join(f"{100 * group_mean(name, g):.2f}" for g in group_names)
        lines.append(f"| {label} | {100 * value:.2f} | {value / optimal:.2f} | {cells} |")
    optimal_cells = " | ".join(f"{100 * float(np.mean([results[k]['optimal_auc'] for k in groups[g]])):.2f}" for g in group_names)
    lines.append(f"| optimal | {100 * optimal:.2f} | 1.00 | {optimal_cells} |")
    conventional = [name for name in means if name not in models]
    best = min(conventional, key=means.get)  # type: ignore[arg-type]
    lines += ["", f"Best conventional measure: {best} ({100 * means[best]:.2f})."]
    for name in models:
        lines.append(f"{name}: {100 * means[name]:.2f} = {means[name] / optimal:.2f} x optimal; "
                     f"beats {sum(means[name] < means[c] for c in conventional)}/{len(conventional)} conventional measures.")
    taus = [0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99]
    for name in models:
        lines += ["", f"Labels from `{name}` on the held-out scenes (mean over images): share of ground-truth pixels "
                      "that get a label, bad-3 of the labels, label density:", "",
                  "| tau | GT pixels kept | bad-3 | density |", "|---:|---:|---:|---:|"]
        for tau, coverage, bad3, density in _label_rows(results, name, taus):
            lines.append(f"| {tau:.2f} | {100 * coverage:.1f}% | {100 * bad3:.2f}% | {100 * density:.1f}% |")
    text = "\n".join(lines)
    print(text)
    if write:
        command = "python benchmarks/confidence.py auc --work " + str(work) + " --models " + " ".join(f"{n}={p}" for n, p in models.items())
        _write_section("### AUC on held-out scenes", f"Command: `{command}`\n\n" + text)
    return text


def speed(data: Path, runs: int, write: bool) -> str:
    """Median seconds of SGM vs scoring (CCNN + all measures) on the KITTI pair, same process."""
    import torch

    from pseudolabel.confidence import MEASURES, compute_measure
    from pseudolabel.confidence_training import make_scorer, shipped_ccnn_path
    from pseudolabel.io import read_image
    from pseudolabel.sgm import SGMParams, match

    scene = next(s for s in _scenes(data) if s["group"] == "kitti2012")
    left, right = read_image(data / scene["left"]), read_image(data / scene["right"])
    params = SGMParams(max_disp=128)
    scorer, checkpoint = make_scorer(shipped_ccnn_path(), device="cpu", precision="auto")
    threads = torch.get_num_threads()
    result = match(left, right, params)
    features = {name: getattr(result, name) for name in ("disparity", "disparity_right", "valid", "cost_best", "cost_second", "cost_second_local", "cost_mean")}
    scorer.confidence_from_features(features, params)  # warm-up
    sgm_times, measure_times, ccnn_times = [], [], []
    for _ in range(runs):
        started = time.perf_counter()
        match(left, right, params)
        sgm_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        computed = {name: compute_measure(name, features, params) for name in MEASURES}
        measure_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        scorer.confidence_from_features(features, params, computed)
        ccnn_times.append(time.perf_counter() - started)
    sgm_s, measures_s, ccnn_s = (statistics.median(t) for t in (sgm_times, measure_times, ccnn_times))
    arch = checkpoint["arch_kwargs"]
    text = "\n".join([
        f"KITTI 2012 pair {left.shape[1]}x{left.shape[0]}, max_disp 128, median of {runs} interleaved runs, "
        f"torch threads {threads}, CCNN {arch} in {scorer.precision}:",
        "",
        "| step | seconds | / SGM |",
        "|---|---:|---:|",
        f"| SGM `match` | {sgm_s:.3f} | 1.00 |",
        f"| {len(MEASURES)} conventional measures | {measures_s:.3f} | {measures_s / sgm_s:.2f} |",
        f"| CCNN | {ccnn_s:.3f} | {ccnn_s / sgm_s:.2f} |",
        f"| scoring total | {measures_s + ccnn_s:.3f} | {(measures_s + ccnn_s) / sgm_s:.2f} |",
    ])
    print(text)
    if write:
        _write_section("### Scoring speed", f"Command: `python benchmarks/confidence.py speed --runs {runs}` (2-core CPU)\n\n" + text)
    return text


def _write_section(subsection: str, body: str) -> None:
    """Replace ``subsection`` inside the ``## Confidence`` section of BENCHMARKS.md (creating either)."""
    path = REPO / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(SECTION + "\n")
    if start < 0:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n"
        start = text.find(SECTION + "\n")
    end_match = re.search(r"^## ", text[start + len(SECTION) :], flags=re.MULTILINE)
    end = start + len(SECTION) + end_match.start() if end_match else len(text)
    section = text[start:end]
    sub_start = section.find(subsection + "\n")
    block = f"{subsection}\n\n{body.strip()}\n\n"
    if sub_start < 0:
        section = section.rstrip("\n") + "\n\n" + block
    else:
        sub_end_match = re.search(r"^### ", section[sub_start + len(subsection) :], flags=re.MULTILINE)
        sub_end = sub_start + len(subsection) + sub_end_match.start() if sub_end_match else len(section)
        section = section[:sub_start] + block + section[sub_end:]
    path.write_text(text[:start] + section.rstrip("\n") + "\n\n" + text[end:].lstrip("\n"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare")
    p.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    p.add_argument("--out", type=Path, default=Path("work/confidence"))
    a = commands.add_parser("auc")
    a.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    a.add_argument("--work", type=Path, default=Path("work/confidence"))
    a.add_argument("--models", nargs="+", default=[f"ccnn={REPO / 'models/weights/ccnn.pt'}"], help="NAME=CHECKPOINT")
    a.add_argument("--write", action="store_true", help="Write the section of BENCHMARKS.md.")
    s = commands.add_parser("speed")
    s.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    s.add_argument("--runs", type=int, default=5)
    s.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.data, args.out)
    elif args.command == "auc":
        models = dict(item.split("=", 1) for item in args.models)
        auc(args.work, {name: Path(path) for name, path in models.items()}, args.data, args.write)
    else:
        speed(args.data, args.runs, args.write)


if __name__ == "__main__":
    sys.exit(main())
