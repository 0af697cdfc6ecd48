"""Confidence benchmarks: proxies of the shared scenes, AUC tables, label quality and scoring speed.

Sub-commands (run from the repository root with the virtual environment active):

``prepare --data ../shared/data --out work/confidence``
    SGM (default parameters, each scene's ``max_disp`` from ``manifest.json``) on every scene of the
    manifest: ``train.h5`` holds the Middlebury 2006 scenes (the training split of the shipped CCNN),
    ``heldout.h5`` every other scene (Middlebury 2001 and v2, KITTI 2012, FlyingThings3D). Keys are
    those of ``pseudolabel.datasets.discover_pairs`` on the data root, so ``--gt ../shared/data``
    finds the ground truth.
``auc --work work/confidence --models ccnn=models/weights/ccnn.pt ccnn_wild=models/weights/ccnn_wild.pt``
    Scores the held-out file with every conventional measure and the given networks, prints and writes
    (``--write``) the AUC table, the label quality at several tau, and the ``## Confidence`` section
    of BENCHMARKS.md. The label tau of the first model is *chosen on the training scenes*
    (``train.h5``, :func:`choose_tau`) and only then reported on the held-out ones.
``speed --data ../shared/data --runs 9 --threads 2``
    Scoring time per KITTI pair against SGM's matching time on it (:func:`speed`): the conventional
    measures, the shipped CCNN and wild CCNN, and an LFN, medians of several runs in one process and the
    median per-run ratio to SGM, with the load average and the CPU flags.
``wild-drive --data ../shared/data --work work/confidence``
    A CCNN trained with wild labels on the 51 frames of the KITTI drive, reading the disparity alone or
    the default inputs (disparity and measures), evaluated on the KITTI 2012 frame (:func:`wild_drive`);
    ``--labels wild,wild-agree`` adds CCNNs trained on labels that independent matchers (``--teachers``) vote on.
``logo --data ../shared/data --work work/confidence/logo``
    Leave-one-group-out (``confidence_logo.py``): for every group (``--groups``; default every group of
    the manifest plus ``--synthetic`` synthetic pairs), train CCNN and LFN with ground-truth, wild or
    agreement labels (``--networks ccnn-wildagree``, matchers ``--teachers``) on the other groups, calibrate every method on them, and report AUC, AUC / optimal, ECE and
    the labels at the default tau and at ``--target-error`` on the group left out; ``--write`` puts the
    table in ``### Leave-one-group-out``. Proxies per group are cached in ``--work``.

``--data`` defaults to ``shared/data`` next to the repository (``../shared/data`` from its root).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from confidence_logo import LOGO_GROUPS

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Confidence"
TRAIN_GROUP = "middlebury2006"
DEFAULT_DATA = REPO.parent / "shared" / "data"
#: Label-quality targets of issue 4: at the default tau, keep >= 50% of the ground-truth pixels ...
TAU_MIN_COVERAGE = 0.5
#: ... with a bad-3 error <= 2%. The tau is chosen on the training scenes against a stricter 1.5%
#: (a margin for scenes the model has not seen).
TAU_MAX_BAD3 = 0.02
TAU_SELECTION_BAD3 = 0.015
TAU_GRID = [round(value, 3) for value in (0.5, 0.7, 0.8, 0.9, 0.95, 0.96, 0.97, 0.975, 0.98, 0.985, 0.99, 0.995)]


def _scenes(data: Path) -> list[dict[str, Any]]:
    manifest = json.loads((data / "manifest.json").read_text())
    return manifest["scenes"]


def prepare(data: Path, out: Path, synthetic: int = 0) -> None:
    """Proxies of every manifest scene into ``out/train.h5`` (group :data:`TRAIN_GROUP`) and ``out/heldout.h5``
    (the others); ``synthetic`` > 0 also renders that many synthetic pairs into ``out/synthetic_pairs/`` and
    their proxies into ``out/synthetic.h5``. Keys are those ``--gt`` folders resolve (``discover_pairs``)."""
    from pseudolabel.datasets import discover_pairs
    from pseudolabel.sgm.params import SGMParams
    from pseudolabel.store.journal import create_or_open_proxies

    by_left = {Path(pair.left).resolve(): pair for pair in discover_pairs([data], skip_unpaired=True)}
    out.mkdir(parents=True, exist_ok=True)
    base = SGMParams()
    files = {name: create_or_open_proxies(out / f"{name}.h5", base) for name in ("train", "heldout")}
    try:
        for scene in _scenes(data):
            left_path = (data / scene["left"]).resolve()
            pair = by_left.get(left_path)
            key = pair.key if pair is not None else scene["id"]
            target = files["train" if scene["group"] == TRAIN_GROUP else "heldout"]
            gt = (data / scene["gt_left"], float(scene["gt_scale"]))
            _match_into(target, key, left_path, (data / scene["right"]).resolve(), gt, base.replace(max_disp=int(scene["max_disp"])))
    finally:
        for handle in files.values():
            handle.close()
    if synthetic > 0:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from confidence_logo import SYNTHETIC_MAX_DISP, SYNTHETIC_SEED, SYNTHETIC_SIZE

        from pseudolabel.synth.config import SynthConfig
        from pseudolabel.synth.files import write_synth_dataset

        folder = out / "synthetic_pairs"
        width, height = SYNTHETIC_SIZE
        write_synth_dataset(folder, SynthConfig(width=width, height=height, max_disp=SYNTHETIC_MAX_DISP), synthetic, seed=SYNTHETIC_SEED)
        params = base.replace(max_disp=int(np.ceil(SYNTHETIC_MAX_DISP / 16) * 16))
        with create_or_open_proxies(out / "synthetic.h5", base) as target:
            for pair in discover_pairs([folder], skip_unpaired=True)[:synthetic]:
                assert pair.gt_left is not None
                _match_into(target, pair.key, Path(pair.left), Path(pair.right), (Path(pair.gt_left), 1.0), params)


def _match_into(target: Any, key: str, left_path: Path, right_path: Path, gt: tuple[Path, float], params: Any) -> None:
    """Match one pair with ``params`` and write it (with its ground-truth path) to the open proxies file ``target``
    unless it is there."""
    from pseudolabel.io import read_image
    from pseudolabel.sgm.matcher import match
    from pseudolabel.store.layout import pair_attributes, result_arrays

    if key in target:
        return
    left, right = read_image(left_path), read_image(right_path)
    started = time.perf_counter()
    result = match(left, right, params)
    seconds = time.perf_counter() - started
    attrs = pair_attributes(key, left_path, right_path, params, result.disparity.shape, result.valid, gt_left=gt[0], gt_scale=gt[1])
    target.write_pair(key, result_arrays(result), {**attrs, "complete": True, "sgm_seconds": seconds})
    print(f"{key:45s} {result.disparity.shape} max_disp {params.max_disp:4d}  {seconds:.2f} s", flush=True)


#: How the shipped models and the figures of the section are produced (written by ``auc --write``).
REPRODUCE = """Proxies, models and evaluation of issue 4 with the final SGM defaults (p1 10, p2 400 adaptive with
gamma 4, lr_max_diff 2, speckle 50 / 1 px, edge-aware fill median, dense median 5). Run from the
repository root with `../shared/data` next to it; every work file goes to `work/confidence/` (git-ignored):

```
python benchmarks/confidence.py prepare --data ../shared/data --out work/confidence --synthetic 8
pseudolabel confidence train --proxies work/confidence/train.h5 --gt ../shared/data \\
  --out models/weights/ccnn.pt --filters 24 --fc-filters 48 --crop 32 --epochs 40 --steps-per-epoch 40 \\
  --range-jitter 0.5 --inputs disparity,lrc,lrd,pkrn,pkr,apkr,msm,mm,mmn,wmn,wmnn,uniqueness,dbl,med,alrc15,alrc41,alrc101,dlrc \\
  --threads 1 --seed 0 --overwrite
pseudolabel confidence train --proxies work/confidence/train.h5 --labels wild \\
  --out models/weights/ccnn_wild.pt --filters 32 --fc-filters 64 --crop 32 --epochs 15 --steps-per-epoch 40 \\
  --range-jitter 0.5 --inputs disparity,lrc,lrd,pkrn,pkr,apkr,msm,mm,mmn,wmn,wmnn,uniqueness,dbl,med,alrc15,alrc41,alrc101,dlrc \\
  --threads 1 --seed 0 --overwrite
for model in ccnn ccnn_wild; do  # the calibration they ship with (see their model cards)
  pseudolabel confidence calibrate --proxies work/confidence/heldout.h5 --proxies work/confidence/synthetic.h5 \\
    --gt ../shared/data --gt work/confidence/synthetic_pairs --model models/weights/$model.pt --method isotonic-pair
done
python benchmarks/confidence.py auc --data ../shared/data --work work/confidence \\
  --models ccnn=models/weights/ccnn.pt ccnn_wild=models/weights/ccnn_wild.pt --write
python benchmarks/confidence.py speed --data ../shared/data --runs 9 --threads 2 --write
python benchmarks/confidence.py wild-drive --data ../shared/data --work work/confidence --write
```

`train.h5`: the 21 Middlebury 2006 scenes (the only scenes `ccnn.pt` saw, with ground truth;
`ccnn_wild.pt` saw the same proxies and no ground truth at all). `heldout.h5`: the other scenes of the
manifest (12 before Middlebury 2014 joined it, 19 since), used for the tables of this section and, with
`synthetic.h5`, to fit the calibration the two models ship with. Model cards: `models/weights/ccnn.md`,
`models/weights/ccnn_wild.md`. Caveat: the recipe of `ccnn.pt` (40 epochs, width 24 / 48) was picked
with held-out AUCs in view; seed 1 of the same command gave 1.92x optimal instead of 1.82x (13-input network, 12 held-out scenes; card,
"Variation"). The speed ratio varies with the load of the shared machine: three runs of `speed` on
2026-11-25 gave scoring / SGM = 0.93, 0.89 and 0.80 (the table showed the first); six runs on 2026-11-30, under
load, gave measures + CCNN / SGM = 1.05-1.35 (median of per-run ratios; the table shows the run written by `--write`)."""


def _results(path: Path, models: dict[str, Path], data: Path) -> dict[str, dict[str, Any]]:
    """Per-pair evaluation (AUC of every measure and model, confidences of the models) of one proxies file."""
    from pseudolabel.confidence.checkpoints import make_scorer
    from pseudolabel.confidence.measures import MEASURES, compute_measures
    from pseudolabel.confidence.sparsification import image_evaluation
    from pseudolabel.datasets import ground_truth_lookup, read_ground_truth
    from pseudolabel.store.proxies import open_proxies

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
            confidences = compute_measures(MEASURES, features, params)
            for name, scorer in scorers.items():
                confidences[name] = scorer.confidence_from_features(features, params, confidences)
            gt_path, scale = lookup[key]
            ground_truth = read_ground_truth(gt_path, scale, features["disparity"].shape, key)
            evaluation = image_evaluation(confidences, features["disparity"], ground_truth)
            evaluation["confidences"] = {name: confidences[name] for name in scorers}
            evaluation["disparity"] = features["disparity"]
            evaluation["ground_truth"] = ground_truth
            results[key] = evaluation
    return results


def _label_rows(results: dict[str, dict[str, Any]], measure: str, taus: list[float]) -> list[tuple[float, float, float, float]]:
    from pseudolabel.confidence.labels import (
        label_statistics,
        threshold_labels,
    )

    rows = []
    for tau in taus:
        coverage, bad3, density = [], [], []
        for value in results.values():
            labels = threshold_labels(value["disparity"], value["confidences"][measure], tau)
            stats = label_statistics(labels, value["ground_truth"])
            coverage.append(stats["gt_coverage"])
            bad3.append(stats["bad3"])
            density.append(stats["density"])
        scored = [value for value in bad3 if np.isfinite(value)]
        rows.append((tau, float(np.mean(coverage)), float(np.mean(scored)) if scored else float("nan"), float(np.mean(density))))
    return rows


def choose_tau(
    rows: list[tuple[float, float, float, float]], max_bad3: float = TAU_SELECTION_BAD3, min_coverage: float = TAU_MIN_COVERAGE
) -> float | None:
    """Smallest tau of ``rows`` (``(tau, coverage, bad3, density)``) whose labels have a mean bad-3 of
    at most ``max_bad3`` while keeping at least ``min_coverage`` of the ground-truth pixels; None if none."""
    for tau, coverage, bad3, _ in sorted(rows):
        if np.isfinite(bad3) and bad3 <= max_bad3 and coverage >= min_coverage:
            return tau
    return None


def _label_table(rows: list[tuple[float, float, float, float]], chosen: float | None = None) -> list[str]:
    lines = ["| tau | GT pixels kept | bad-3 | density |", "|---:|---:|---:|---:|"]
    for tau, coverage, bad3, density in rows:
        bad3_text = f"{100 * bad3:.2f}%" if np.isfinite(bad3) else "-"
        tau_text = f"**{tau:g}**" if chosen is not None and tau == chosen else f"{tau:g}"
        lines.append(f"| {tau_text} | {100 * coverage:.1f}% | {bad3_text} | {100 * density:.1f}% |")
    return lines


def auc(work: Path, models: dict[str, Path], data: Path, write: bool) -> str:
    """AUC table of the held-out scenes (+ label quality) as markdown; optionally into BENCHMARKS.md."""
    from pseudolabel.confidence.evaluation import summarise_aucs
    from pseudolabel.confidence.labels import DEFAULT_TAU

    results = _results(work / "heldout.h5", models, data)
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
        lines.append(
            f"{name}: {100 * means[name]:.2f} = {means[name] / optimal:.2f} x optimal; "
            f"beats {sum(means[name] < means[c] for c in conventional)}/{len(conventional)} conventional measures."
        )
    calibrated = [name for name, path in models.items() if _has_calibration(path)]
    if calibrated:
        # a calibration fitted on these held-out scenes makes the tables by tau in-sample: no tau is chosen or judged here
        lines += [
            "",
            f"{', '.join(f'`{name}`' for name in calibrated)} carry a calibration fitted on these held-out scenes (their model cards), "
            "which keeps each pair's ranking (so the AUCs above are held-out figures) but makes any table by tau in-sample. "
            f"No tau is chosen or judged here: the labels at the default tau {DEFAULT_TAU:g} and at a target error are reported "
            "leave one group out (`### Leave-one-group-out`).",
        ]
    else:
        lines += _tau_lines(results, work, models, data)
    text = "\n".join(lines)
    print(text)
    if write:
        command = (
            f"python benchmarks/confidence.py auc --data {data} --work {work} --models "
            + " ".join(f"{n}={p}" for n, p in models.items())
            + " --write"
        )
        _write_section("### Reproduce", REPRODUCE)
        _write_section("### AUC on held-out scenes", f"Command: `{command}`\n\n" + text)
    return text


def _tau_lines(results: dict[str, dict[str, Any]], work: Path, models: dict[str, Path], data: Path) -> list[str]:
    """Markdown of :func:`auc` for uncalibrated models: the label tau of the first model chosen on its training
    scenes, and every model's labels on the held-out scenes by tau."""
    from pseudolabel.confidence.labels import DEFAULT_TAU

    first = next(iter(models))
    training_rows = _label_rows(_results(work / "train.h5", {first: models[first]}, data), first, TAU_GRID)
    chosen = choose_tau(training_rows)
    lines = [
        "",
        f"Choice of the label tau of `{first}` on its **training** scenes (`train.h5`, Middlebury 2006, "
        f"mean over images): the smallest tau whose labels have bad-3 <= {100 * TAU_SELECTION_BAD3:g}% "
        f"(the target is {100 * TAU_MAX_BAD3:g}%; the rest is a margin for unseen scenes) while keeping "
        f">= {100 * TAU_MIN_COVERAGE:g}% of the ground-truth pixels: "
        + (f"**tau = {chosen:g}**." if chosen is not None else "**none of the grid qualifies**.")
        + (
            f" The default of `pseudolabel labels --tau` is {DEFAULT_TAU:g}"
            + (" (the same)." if chosen == DEFAULT_TAU else " (**differs: update DEFAULT_TAU in pseudolabel/confidence/labels.py**).")
        )
        + "",
        "",
    ]
    lines += _label_table(training_rows, chosen)
    for name in models:
        rows = _label_rows(results, name, TAU_GRID)
        lines += [
            "",
            f"Labels from `{name}` on the held-out scenes (mean over images): share of ground-truth pixels "
            "that get a label, bad-3 of the labels, label density:",
            "",
        ]
        lines += _label_table(rows, chosen if name == first else None)
        if name == first and chosen is not None:
            row = next(r for r in rows if r[0] == chosen)
            met = row[1] >= TAU_MIN_COVERAGE and row[2] <= TAU_MAX_BAD3
            lines += [
                "",
                f"Held-out at the chosen tau {chosen:g}: {100 * row[1]:.1f}% of the ground-truth pixels kept, "
                f"bad-3 {100 * row[2]:.2f}% (target >= {100 * TAU_MIN_COVERAGE:g}% with <= {100 * TAU_MAX_BAD3:g}%: "
                f"{'met' if met else 'NOT met'}).",
            ]
    return lines


def _has_calibration(path: Path) -> bool:
    """Whether a confidence checkpoint carries a calibration."""
    from pseudolabel.confidence.checkpoints import load_confidence_checkpoint

    return bool(load_confidence_checkpoint(path)[1].get("calibration"))


#: The networks timed by :func:`speed`: name -> (architecture, checkpoint or None, width). CCNN and wild
#: CCNN are the shipped checkpoints; LFN has the inputs and width of the leave-one-group-out networks and
#: random weights (no LFN is shipped; the time of a forward pass does not depend on the weights).
SPEED_NETWORKS: dict[str, tuple[str, str | None, dict[str, int]]] = {
    "CCNN (shipped)": ("ccnn", "models/weights/ccnn.pt", {}),
    "CCNN wild (shipped)": ("ccnn", "models/weights/ccnn_wild.pt", {}),
    "LFN (LOGO width, image + photometric channels)": ("lfn", None, {"filters": 24, "fc_filters": 48}),
}


def speed(data: Path, runs: int, write: bool, threads: int = 2, checkpoints: dict[str, str] | None = None) -> str:
    """Scoring time per KITTI pair against SGM's matching time on it, in one process.

    Every run times, one after the other on the same pair: SGM ``match`` (manifest ``max_disp``), the
    conventional measures (all of them), and each network of :data:`SPEED_NETWORKS` from the stored
    features (the networks reuse the measures of the run; the LFN also builds its image channels from the
    gray images). Reported: the median seconds over ``runs`` runs (after one warm-up run) and the median
    of the per-run ratios step / SGM (both timed within seconds of each other, so a load change on the
    shared machine moves both). ``threads``: torch, Numba and OpenCV threads. The 1-minute load average
    before and after, the CPU's SIMD flags and the network arithmetic are printed with the table.
    ``checkpoints``: name -> confidence checkpoint to time instead of :data:`SPEED_NETWORKS` (e.g. two releases
    side by side; ``--write`` keeps to the default set).
    """
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import machine_description
    from sgm_profile import simd_flags

    from pseudolabel.confidence.checkpoints import make_scorer
    from pseudolabel.confidence.images import IMAGE_CHANNELS, LEFT_GRAY, RIGHT_GRAY, gray_float
    from pseudolabel.confidence.measures import MEASURES, compute_measures
    from pseudolabel.io import read_image
    from pseudolabel.models.ccnn import ConfidenceScorer, build_confidence_network
    from pseudolabel.models.devices import bfloat16_supported
    from pseudolabel.sgm.matcher import match
    from pseudolabel.sgm.params import SGMParams
    from pseudolabel.threads import apply_threads

    scene = next(s for s in _scenes(data) if s["group"] == "kitti2012")
    left, right = read_image(data / scene["left"]), read_image(data / scene["right"])
    params = SGMParams(max_disp=int(scene["max_disp"]))
    torch.manual_seed(0)
    scorers: dict[str, ConfidenceScorer] = {}
    networks = {name: ("ccnn", path, {}) for name, path in checkpoints.items()} if checkpoints else SPEED_NETWORKS
    for name, (arch, checkpoint, width) in networks.items():
        if checkpoint is not None:
            scorers[name] = make_scorer(REPO / checkpoint, device="cpu", precision="auto", threads=threads)[0]
        else:
            inputs = ["disparity", *MEASURES, "image", "photometric"]
            scorers[name] = ConfidenceScorer(build_confidence_network(arch, inputs=inputs, **width), "cpu", precision="auto")
    apply_threads(threads)
    load_before = os.getloadavg()[0]

    def one_run() -> dict[str, float]:
        seconds: dict[str, float] = {}
        started = time.perf_counter()
        result = match(left, right, params)
        seconds["SGM `match`"] = time.perf_counter() - started
        features = {
            name: getattr(result, name)
            for name in ("disparity", "disparity_right", "valid", "cost_best", "cost_second", "cost_second_local", "cost_mean")
        }
        started = time.perf_counter()
        measures = compute_measures(MEASURES, features, params)
        seconds[f"{len(MEASURES)} conventional measures"] = time.perf_counter() - started
        for name, scorer in scorers.items():
            started = time.perf_counter()
            if any(channel in IMAGE_CHANNELS for channel in scorer.inputs):
                features = {**features, LEFT_GRAY: gray_float(left), RIGHT_GRAY: gray_float(right)}
            scorer.confidence_from_features(features, params, measures)
            seconds[name] = time.perf_counter() - started
        started = time.perf_counter()
        for name in MEASURES:  # each from scratch, as scoring computed them before they shared what they read (lrc)
            compute_measures([name], features, params)
        seconds[f"{len(MEASURES)} measures, each computed alone (before 2026-12-01)"] = time.perf_counter() - started
        return seconds

    one_run()  # warm-up: Numba compilation, oneDNN primitives, buffers
    timings = [one_run() for _ in range(runs)]
    load_after = os.getloadavg()[0]
    steps = list(timings[0])
    sgm = steps[0]
    lines = [
        f"KITTI 2012 pair {scene['id']} ({left.shape[1]}x{left.shape[0]}, max_disp {params.max_disp}), median of {runs} runs after "
        f"a warm-up, every step timed in each run; {threads} threads (torch, Numba, OpenCV); 1-minute load average "
        f"{load_before:.2f} before, {load_after:.2f} after (2 logical cores, shared).",
        f"{machine_description()}. {simd_flags()}; torch {torch.__version__}, native bfloat16: {'yes' if bfloat16_supported() else 'no'}.",
        "Network arithmetic: " + ", ".join(f"{name} {scorer.precision}" for name, scorer in scorers.items()) + ".",
        "",
        "| step | median seconds | median per-run ratio to SGM | ratio range |",
        "|---|---:|---:|---:|",
    ]
    for step in steps:
        ratios = [run[step] / run[sgm] for run in timings]
        lines.append(
            f"| {step} | {statistics.median(run[step] for run in timings):.3f} | {statistics.median(ratios):.2f} | {min(ratios):.2f}-{max(ratios):.2f} |"
        )
    measures_step = steps[1]
    for name in scorers:
        ratios = [(run[measures_step] + run[name]) / run[sgm] for run in timings]
        total = statistics.median(run[measures_step] + run[name] for run in timings)
        lines.append(f"| scoring total: measures + {name} | {total:.3f} | {statistics.median(ratios):.2f} | {min(ratios):.2f}-{max(ratios):.2f} |")
    text = "\n".join(lines)
    print(text)
    if write:
        command = f"python benchmarks/confidence.py speed --data {_shown(data)} --runs {runs} --threads {threads} --write"
        _write_section("### Scoring speed", f"Command: `{command}`\n\n" + text)
    return text


def _shown(path: Path) -> str:
    """``path`` relative to the repository root where it can be (as the commands in BENCHMARKS.md are written)."""
    try:
        return os.path.relpath(path.resolve(), REPO)
    except ValueError:
        return str(path)


#: The unlabeled drive of :func:`wild_drive` (``manifest.json`` ``unlabeled``) and the features the measures need.
DRIVE = Path("sequences") / "kitti_odometry_b"
FEATURES = ("disparity", "disparity_right", "valid", "cost_best", "cost_second", "cost_second_local", "cost_mean")


def wild_drive(
    data: Path,
    work: Path,
    epochs: int,
    steps: int,
    write: bool,
    labels: Sequence[str] = ("wild",),
    teachers: Sequence[str] = ("sgbm",),
    disparity_only: bool = True,
    seed: int = 0,
) -> str:
    """A CCNN trained with wild labels (no ground truth) on the 51 frames of a KITTI drive, evaluated on
    the KITTI 2012 frame with ground truth: once reading the disparity alone (``disparity_only``), once
    the default inputs (the disparity and the conventional measures), and once more with the default
    inputs for every other label source of ``labels`` (``wild-agree``, ``wild-soft``: the wild labels
    and the independent matchers ``teachers`` vote); ``seed``: of every training. AUC x100 against the optimal and the conventional
    measures, and the spread of the confidence (percentiles) on the evaluated frame.

    The drive's proxies (SGM defaults, ``max_disp`` 128) are cached in ``work/kitti_drive.h5``. Training:
    :class:`pseudolabel.confidence.training.TrainingConfig` defaults (the widths of ``confidence train``)
    but ``epochs`` x ``steps`` steps.
    """
    import torch

    from pseudolabel.confidence.images import pair_gray_images
    from pseudolabel.confidence.measures import CCNN_INPUTS, MEASURES, compute_measures
    from pseudolabel.confidence.sparsification import error_mask, optimal_auc, sparsification_auc
    from pseudolabel.confidence.targets import TEACHER_LABELS, agreement_targets, wild_targets
    from pseudolabel.confidence.teachers import teacher_disparities
    from pseudolabel.confidence.training import TrainingConfig, TrainingPair, train_ccnn
    from pseudolabel.datasets import read_ground_truth
    from pseudolabel.io import read_image
    from pseudolabel.models.ccnn import ConfidenceScorer, build_inputs
    from pseudolabel.sgm.matcher import match
    from pseudolabel.sgm.params import SGMParams
    from pseudolabel.store.journal import create_or_open_proxies
    from pseudolabel.store.layout import pair_attributes, result_arrays
    from pseudolabel.store.proxies import open_proxies

    params = SGMParams(max_disp=128)
    path = work / "kitti_drive.h5"
    work.mkdir(parents=True, exist_ok=True)
    lefts = sorted((data / DRIVE / "left").glob("*.png"))
    with create_or_open_proxies(path, params) as proxies:
        for left_path in lefts:
            key = left_path.stem
            if key in proxies:
                continue
            right_path = data / DRIVE / "right" / left_path.name
            result = match(read_image(left_path), read_image(right_path), params)
            attrs = pair_attributes(key, left_path, right_path, params, result.disparity.shape, result.valid)
            proxies.write_pair(key, result_arrays(result), {**attrs, "complete": True})
    measures: list[dict[str, np.ndarray]] = []
    features: list[dict[str, np.ndarray]] = []
    images: list[dict[str, np.ndarray]] = []
    extra = [name for name in labels if name != "wild"]
    with open_proxies(path, "r") as proxies:
        for key in proxies.keys():
            features.append(proxies.read(key, list(FEATURES)))
            measures.append(compute_measures(MEASURES, features[-1], params))
            if extra:
                images.append(pair_gray_images(path, proxies.pair_attrs(key), key))
    targets = [wild_targets(values) for values in measures]
    votes = [teacher_disparities(pair_images, params, teachers) for pair_images in images]
    positives = sum(int(np.sum(t == 1)) for t in targets)
    negatives = sum(int(np.sum(t == 0)) for t in targets)
    filled = sum(int(np.sum((t == 0) & ~f["valid"])) for t, f in zip(targets, features))
    scene = next(s for s in _scenes(data) if s["group"] == "kitti2012")
    result = match(read_image(data / scene["left"]), read_image(data / scene["right"]), params)
    test = {name: getattr(result, name) for name in FEATURES}
    test_measures = compute_measures(MEASURES, test, params)
    ground_truth = read_ground_truth(data / scene["gt_left"], float(scene["gt_scale"]), result.disparity.shape, scene["id"])
    bad, known = error_mask(result.disparity, ground_truth)
    error_rate = float(bad.sum() / known.sum())
    optimal = optimal_auc(error_rate)
    rows: list[tuple[str, float, str]] = []
    runs: list[tuple[str, tuple[str, ...], list[np.ndarray]]] = []
    if "wild" in labels:
        if disparity_only:
            runs.append(("CCNN wild, disparity only (the old default)", ("disparity",), targets))
        runs.append((f"CCNN wild, disparity + {len(CCNN_INPUTS) - 1} measures (default)", CCNN_INPUTS, targets))
    for name in extra:
        agreed = [agreement_targets(f["disparity"], v, t, TEACHER_LABELS[name]) for f, v, t in zip(features, votes, targets)]
        share = sum(float(np.nansum(a)) for a in agreed) / max(sum(int(np.isfinite(a).sum()) for a in agreed), 1)
        runs.append(
            (f"CCNN {name} ({'+'.join(teachers)}; mean target {share:.3f}), disparity + {len(CCNN_INPUTS) - 1} measures", CCNN_INPUTS, agreed)
        )
    for label, inputs, run_targets in runs:
        config = TrainingConfig(epochs=epochs, steps_per_epoch=steps, inputs=inputs, seed=seed, pair_weighting="pixels")  # as its tables were made
        pairs = [TrainingPair(str(i), build_inputs(f, params, inputs, m), t) for i, (f, m, t) in enumerate(zip(features, measures, run_targets))]
        started = time.perf_counter()
        model, history = train_ccnn(pairs, config)
        seconds = time.perf_counter() - started
        with torch.inference_mode():
            confidence = ConfidenceScorer(model, "cpu", precision="float32").confidence_from_features(test, params, test_measures)
        spread = " / ".join(f"{value:.3f}" for value in np.percentile(confidence, [1, 10, 50, 90, 99]))
        rows.append(
            (f"**{label}**", sparsification_auc(confidence, bad, known), f"{spread}; loss {history[0]:.3f} -> {history[-1]:.4f}, {seconds:.0f} s")
        )
        print(rows[-1], flush=True)
    for name in MEASURES:
        rows.append((name, sparsification_auc(test_measures[name], bad, known), ""))
    rows.sort(key=lambda row: row[1])
    lines = [
        f"Wild labels on the {len(features)} frames of `{DRIVE}` (SGM defaults, max_disp 128, no ground truth): "
        f"{positives} positive and {negatives} negative pixels ({100 * positives / (positives + negatives):.1f}% positive); "
        f"{100 * filled / max(negatives, 1):.1f}% of the negatives are pixels SGM invalidated and filled. CCNN width "
        f"{TrainingConfig.filters} / {TrainingConfig.fc_filters} (the `confidence train` defaults), {epochs} x {steps} steps. "
        f"Evaluated on {scene['id']} ({scene['gt_left'].split('/')[-2]}; bad-3 of the proxies {100 * error_rate:.2f}%, "
        f"so a random ranking has AUC x100 about {100 * error_rate:.2f}).",
        "",
        "| confidence | AUC x100 | / optimal | confidence percentiles 1 / 10 / 50 / 90 / 99; training |",
        "|---|---:|---:|---|",
    ]
    lines += [f"| {label} | {100 * auc:.3f} | {auc / optimal:.2f} | {note} |" for label, auc, note in rows]
    lines += ["", f"Optimal AUC x100: {100 * optimal:.3f}."]
    text = "\n".join(lines)
    print(text)
    if write:
        options = f" --labels {','.join(labels)} --teachers {','.join(teachers)}" if extra else ""
        options += ("" if disparity_only else " --no-disparity-only") + (f" --seed {seed}" if seed else "")
        command = (
            f"python benchmarks/confidence.py wild-drive --data {_shown(data)} --work {_shown(work)} --epochs {epochs} "
            f"--steps-per-epoch {steps}{options} --write"
        )
        _write_section("### Wild CCNN on a KITTI drive", f"Command: `{command}` ({machine_line()})\n\n" + text)
    return text


def machine_line() -> str:
    """The machine, the 1-minute load average now and the CPU flags, for a command line in BENCHMARKS.md."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import machine_description
    from sgm_profile import simd_flags

    return f"{machine_description()}; 1-minute load average {os.getloadavg()[0]:.2f} at the end; {simd_flags()}"


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
    # the heading at the start of a line only (the hand-written summary may name it in its text)
    heading = re.search(rf"^{re.escape(subsection)}\n", section, flags=re.MULTILINE)
    sub_start = heading.start() if heading else -1
    block = f"{subsection}\n\n{body.strip()}\n\n"
    if sub_start < 0:
        section = section.rstrip("\n") + "\n\n" + block
    else:
        sub_end_match = re.search(r"^### ", section[sub_start + len(subsection) :], flags=re.MULTILINE)
        sub_end = sub_start + len(subsection) + sub_end_match.start() if sub_end_match else len(section)
        section = section[:sub_start] + block + section[sub_end:]
    path.write_text(text[:start] + section.rstrip("\n") + "\n\n" + text[end:].lstrip("\n"))


def _checkpoint_items(text: str) -> list[tuple[str, str, list[str]]]:
    """``NAME=PATH:GROUP+GROUP,...`` -> ``[(name, path, groups)]``."""
    items = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, rest = item.partition("=")
        path, _, groups = rest.partition(":")
        if not name or not path:
            raise SystemExit(f"--checkpoints {item}: expected NAME=PATH:GROUP+GROUP")
        items.append((name, path, [group for group in groups.split("+") if group]))
    return items


def logo(args: argparse.Namespace) -> str:
    """Run the leave-one-group-out evaluation and print (and optionally write) its table."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from confidence_logo import format_logo, run_logo

    groups = [group.strip() for group in args.groups.split(",") if group.strip()]
    networks = [name.strip() for name in args.networks.split(",") if name.strip()]
    started = time.perf_counter()
    teachers = [name.strip() for name in args.teachers.split(",") if name.strip()]
    results = run_logo(
        args.data,
        args.work,
        groups,
        args.synthetic,
        args.epochs,
        args.steps_per_epoch,
        args.tau,
        args.target_error,
        networks,
        teachers=teachers,
        measures_too=not args.networks_only,
        seed=args.seed,
        checkpoints={name: (Path(path), trained_on) for name, path, trained_on in _checkpoint_items(args.checkpoints)},
    )
    minutes = (time.perf_counter() - started) / 60
    text = format_logo(results, args.tau, args.target_error, networks)
    print(text)
    print(f"\n{minutes:.1f} min")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    if args.write:
        command = (
            f"python benchmarks/confidence.py logo --data {args.data} --work {args.work} --groups {args.groups} --synthetic {args.synthetic} "
            f"--epochs {args.epochs} --steps-per-epoch {args.steps_per_epoch} --networks {args.networks} --teachers {args.teachers} --seed {args.seed}"
            + (f" --checkpoints {args.checkpoints}" if args.checkpoints else "")
            + (" --networks-only" if args.networks_only else "")
            + " --write"
        )
        _write_section("### Leave-one-group-out", f"Command: `{command}` ({minutes:.0f} min, 2-core CPU)\n\n" + text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=Path("work/confidence"))
    p.add_argument("--synthetic", type=int, default=0, help="Also render this many synthetic pairs (out/synthetic_pairs, out/synthetic.h5).")
    a = commands.add_parser("auc")
    a.add_argument("--data", type=Path, default=DEFAULT_DATA)
    a.add_argument("--work", type=Path, default=Path("work/confidence"))
    a.add_argument(
        "--models",
        nargs="+",
        default=["ccnn=models/weights/ccnn.pt", "ccnn_wild=models/weights/ccnn_wild.pt"],
        help="NAME=CHECKPOINT (the first one's label tau is chosen on train.h5)",
    )
    a.add_argument("--write", action="store_true", help="Write the section of BENCHMARKS.md.")
    s = commands.add_parser("speed")
    s.add_argument("--data", type=Path, default=DEFAULT_DATA)
    s.add_argument("--runs", type=int, default=9)
    s.add_argument("--threads", type=int, default=2, help="torch, Numba and OpenCV threads.")
    s.add_argument("--write", action="store_true")
    s.add_argument(
        "--checkpoints",
        default="",
        help="NAME=PATH;NAME=PATH... confidence checkpoints (paths from the current folder) to time instead of the shipped CCNNs and the LFN (not with --write).",
    )
    w = commands.add_parser("wild-drive")
    w.add_argument("--data", type=Path, default=DEFAULT_DATA)
    w.add_argument("--work", type=Path, default=Path("work/confidence"))
    w.add_argument("--epochs", type=int, default=4)
    w.add_argument("--steps-per-epoch", type=int, default=30)
    w.add_argument("--write", action="store_true", help="Write ### Wild CCNN on a KITTI drive of BENCHMARKS.md.")
    w.add_argument("--labels", default="wild", help="Label sources trained on (wild, wild-agree, wild-soft, wild-confirm), comma-separated.")
    w.add_argument("--teachers", default="sgbm", help="Independent matchers of the wild-* agreement labels.")
    w.add_argument("--no-disparity-only", action="store_true", help="Skip the CCNN that reads the disparity alone.")
    w.add_argument("--seed", type=int, default=0, help="Seed of every training.")
    g = commands.add_parser("logo")
    g.add_argument("--data", type=Path, default=DEFAULT_DATA)
    g.add_argument("--work", type=Path, default=Path("work/confidence/logo"))
    g.add_argument("--groups", default=",".join(LOGO_GROUPS), help="Comma-separated groups (manifest groups and 'synthetic').")
    g.add_argument("--synthetic", type=int, default=8, help="Synthetic pairs of the group 'synthetic'.")
    g.add_argument(
        "--networks",
        default="ccnn-gt,ccnn-wild,lfn-gt,lfn-wild",
        help="ARCH-LABELS items (arch ccnn/lfn, labels gt/wild/wildagree/wildsoft/wildconfirm/agree/agreesoft; "
        "a suffix +test also trains on the held-out group's pairs, @test on them alone, labels without ground truth only).",
    )
    g.add_argument("--teachers", default="sgbm", help="Independent matchers of the agreement labels (pseudolabel.confidence.teachers).")
    g.add_argument("--networks-only", action="store_true", help="Skip the conventional measures (evaluate the networks only).")
    g.add_argument(
        "--checkpoints",
        default="",
        help="Trained networks evaluated as they are, NAME=PATH:GROUP+GROUP (the groups it was trained on never calibrate it), comma-separated.",
    )
    g.add_argument("--seed", type=int, default=0, help="Seed of every training.")
    g.add_argument("--epochs", type=int, default=8)
    g.add_argument("--steps-per-epoch", type=int, default=30)
    g.add_argument("--tau", type=float, default=0.9, help="The default fixed tau reported.")
    g.add_argument("--target-error", type=float, default=0.01, help="The target expected error reported (a share).")
    g.add_argument("--json", type=Path, default=None, help="Write every figure as JSON.")
    g.add_argument("--write", action="store_true", help="Write ### Leave-one-group-out of BENCHMARKS.md.")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.data, args.out, args.synthetic)
    elif args.command == "logo":
        logo(args)
    elif args.command == "wild-drive":
        wild_drive(
            args.data,
            args.work,
            args.epochs,
            args.steps_per_epoch,
            args.write,
            [name.strip() for name in args.labels.split(",") if name.strip()],
            [name.strip() for name in args.teachers.split(",") if name.strip()],
            not args.no_disparity_only,
            args.seed,
        )
    elif args.command == "auc":
        models = dict(item.split("=", 1) for item in args.models)
        auc(args.work, {name: Path(path) for name, path in models.items()}, args.data, args.write)
    else:
        if args.checkpoints and args.write:
            raise SystemExit("speed: --checkpoints times other networks than the section's; drop --write")
        items = [item for item in args.checkpoints.split(";") if item.strip()]
        if any("=" not in item for item in items):
            raise SystemExit(f"speed: --checkpoints {args.checkpoints!r}: expected NAME=PATH;NAME=PATH...")
        chosen = {name.strip(): str(Path(path.strip()).resolve()) for name, path in (item.split("=", 1) for item in items)} or None
        speed(args.data, args.runs, args.write, args.threads, chosen)


if __name__ == "__main__":
    sys.exit(main())
