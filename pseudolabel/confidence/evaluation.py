"""``pseudolabel confidence eval``: confidence measures of whole proxies files against ground truth.

:func:`evaluate_proxies` computes the sparsification curves and AUCs (bad-3) of the stored (or
requested) measures of every pair with ground truth, and their reliability tables;
:func:`format_auc_table` prints them, :func:`plot_evaluation` draws the mean curves and the reliability
diagram, :func:`write_evaluation_json` writes the per-pair results. Ground truth (``gt_dir``) is matched
to pairs by key (:func:`pseudolabel.datasets.ground_truth_lookup`).

The other whole-file calls are :func:`pseudolabel.confidence.scoring.score_proxies` (``confidence score``),
:func:`pseudolabel.confidence.labelling.label_proxies` (``labels``) and
:func:`pseudolabel.confidence.from_proxies.train_confidence_from_proxies` (``confidence train``).

Importing this module does not import torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pseudolabel.confidence.calibration import ECE_BINS, calibration_samples, ece_from_bins, reliability_bins
from pseudolabel.confidence.files import mean_over_pairs, require_ground_truth, selected_keys, split_names
from pseudolabel.confidence.measures import MEASURES, compute_measures
from pseudolabel.confidence.sparsification import DEFAULT_FRACTIONS, image_evaluation, optimal_curve
from pseudolabel.datasets import read_ground_truth
from pseudolabel.errors import InputError
from pseudolabel.outputs import check_output_file
from pseudolabel.store.proxies import ProxyFile, open_proxies

#: Per-pair result of :func:`pseudolabel.confidence.sparsification.image_evaluation`: ``error_rate``,
#: ``optimal_auc``, ``pixels``, ``auc`` (``{measure: float}``) and ``curves`` (``{measure: float64 (F,)}``);
#: :func:`evaluate_pairs` adds ``reliability`` (``{measure: float64 (bins, 3)}``, :func:`pair_reliability`).
PairEvaluation = dict[str, Any]


@dataclass
class ProxiesEvaluation:
    """What :func:`evaluate_proxies` found: per-pair :data:`PairEvaluation` and the keys without ground truth."""

    results: dict[str, PairEvaluation]
    skipped: list[str] = field(default_factory=list)


def _pair_confidences(proxies: ProxyFile, key: str, measures: Sequence[str] | None) -> dict[str, np.ndarray]:
    """The stored confidences of ``key`` (``measures`` None), or the requested ones (computing unstored conventional ones)."""
    stored = proxies.list_confidences(key)
    names = stored if measures is None else list(measures)
    if not names:
        raise InputError(f"{proxies.path}: pair {key!r} has no confidence; run `pseudolabel confidence score` first")
    confidences: dict[str, np.ndarray] = {}
    features: dict[str, np.ndarray] = {}
    computed: dict[str, np.ndarray] = {}
    params = proxies.pair_params(key)
    for name in names:
        if name in stored:
            confidences[name] = proxies.read(key, [f"confidence/{name}"])[f"confidence/{name}"]
        elif name in MEASURES:
            missing = [need for need in MEASURES[name].needs if need not in features]
            features.update(proxies.read(key, missing))
            confidences[name] = compute_measures([name], features, params, computed)[name]
        else:
            raise InputError(f"pair {key!r} has no confidence/{name}; score it first or choose from {', '.join(stored)}")
    return confidences


def evaluate_pairs(
    path: str | os.PathLike[str], keys: Sequence[str], lookup: Mapping[str, tuple[Path, float | None]], measures: Sequence[str] | None = None
) -> dict[str, PairEvaluation]:
    """Per-pair :func:`pseudolabel.confidence.sparsification.image_evaluation` of the stored (``measures``
    None) or requested measures of ``keys``, against the ground truth of ``lookup`` (every key in it)."""
    results: dict[str, PairEvaluation] = {}
    with open_proxies(path, "r") as proxies:
        for key in keys:
            confidences = _pair_confidences(proxies, key, measures)
            disparity = proxies.read(key, ["disparity"])["disparity"]
            gt_path, scale = lookup[key]
            ground_truth = read_ground_truth(gt_path, scale, disparity.shape, key)
            results[key] = image_evaluation(confidences, disparity, ground_truth)
            results[key]["reliability"] = pair_reliability(confidences, disparity, ground_truth)
    return results


def pair_reliability(confidences: Mapping[str, np.ndarray], disparity: np.ndarray, ground_truth: np.ndarray) -> dict[str, np.ndarray]:
    """``{measure: reliability table}`` of one pair (:func:`pseudolabel.confidence.calibration.reliability_bins`:
    equal-width bins of confidence, pixel count / summed confidence / correct pixels; tables of several pairs add up)."""
    result: dict[str, np.ndarray] = {}
    for name, confidence in confidences.items():
        values, correct = calibration_samples(confidence, disparity, ground_truth)
        result[name] = reliability_bins(values, correct)
    return result


def summarise_ece(results: Mapping[str, PairEvaluation]) -> dict[str, float]:
    """Expected calibration error per measure, in [0, 1], over every pixel with ground truth of every pair
    (reliability tables summed over the pairs; :data:`pseudolabel.confidence.calibration.ECE_BINS`
    equal-width bins). Measures without tables are left out."""
    tables: dict[str, np.ndarray] = {}
    for value in results.values():
        for name, table in value.get("reliability", {}).items():
            tables[name] = tables.get(name, 0) + np.asarray(table, dtype=np.float64)
    return {name: ece_from_bins(table) for name, table in tables.items()}


def evaluate_proxies(
    path: str | os.PathLike[str],
    gt_dir: str | os.PathLike[str],
    measures: str | Sequence[str] = "stored",
    keys: Sequence[str] = (),
    exclude: Sequence[str] = (),
    gt_scale: float | None = None,
    plot_path: str | os.PathLike[str] | None = None,
    json_path: str | os.PathLike[str] | None = None,
) -> ProxiesEvaluation:
    """Sparsification curves and AUCs (bad-3) of confidence measures against ground truth.

    Args:
        path: proxies file (read only).
        gt_dir: ground truth: a folder of ``<key>.pfm/.png`` or the root of a native dataset layout.
        measures: ``"stored"`` (every ``confidence/<name>`` of each pair), ``"all"`` (every conventional
            measure), or a comma-separated list / sequence of names (conventional ones that are not
            stored are computed on the fly).
        keys, exclude: globs choosing pairs; selected pairs without ground truth are skipped.
        gt_scale: divisor of stored PNG/PGM ground truth (see :func:`pseudolabel.datasets.ground_truth_lookup`).
        plot_path: write the mean curves there (:func:`plot_evaluation`: PNG, or SVG for ``.svg``), and the
            reliability diagram next to it (:func:`reliability_plot_path`).
        json_path: write the per-pair results there (:func:`write_evaluation_json`).

    Returns:
        The per-pair results (print with :func:`format_auc_table`) and the skipped keys.
    """
    for option, output in (("--plot", plot_path), ("--json", json_path)):
        if output is not None:
            check_output_file(output, option)
    chosen = selected_keys(path, keys, exclude)
    lookup = require_ground_truth(gt_dir, chosen, gt_scale)
    if isinstance(measures, str):
        text = measures.strip()
        requested = None if text == "stored" else (list(MEASURES) if text == "all" else split_names(measures))
    else:
        requested = list(measures)
    results = evaluate_pairs(path, [key for key in chosen if key in lookup], lookup, requested)
    if plot_path is not None:
        plot_evaluation(plot_path, results)
    if json_path is not None:
        write_evaluation_json(json_path, results)
    return ProxiesEvaluation(results, [key for key in chosen if key not in lookup])


def summarise_aucs(results: Mapping[str, PairEvaluation]) -> tuple[dict[str, float], float, float]:
    """Means over the pairs with ground-truth pixels: AUC per measure, optimal AUC and bad-3 rate (all in [0, 1])."""
    evaluated = [value for value in results.values() if value["pixels"] > 0]
    names = sorted({name for value in evaluated for name in value["auc"]})
    means = {name: mean_over_pairs(v["auc"][name] for v in evaluated if name in v["auc"]) for name in names}
    optimal = mean_over_pairs(v["optimal_auc"] for v in evaluated)
    error = mean_over_pairs(v["error_rate"] for v in evaluated)
    return means, optimal, error


def format_auc_table(results: Mapping[str, PairEvaluation], per_pair: bool = False) -> str:
    """Text table: measures sorted by mean AUC (x100), their ratio to the optimal AUC and their expected
    calibration error (ECE %, :func:`summarise_ece`, when the results hold reliability tables); optionally every pair."""
    means, optimal, error = summarise_aucs(results)
    eces = summarise_ece(results)
    lines = [f"{len(results)} pairs, mean bad-3 {100 * error:.2f}%, mean optimal AUC x100 {100 * optimal:.3f}", ""]
    lines.append(f"{'measure':<14}{'AUC x100':>10}{'/ optimal':>11}" + (f"{'ECE %':>9}" if eces else ""))
    for name, mean in sorted(means.items(), key=lambda item: item[1]):
        line = f"{name:<14}{100 * mean:>10.3f}{mean / optimal if optimal > 0 else float('nan'):>11.2f}"
        if eces:
            line += f"{100 * eces.get(name, float('nan')):>9.2f}"
        lines.append(line)
    if eces:
        lines += ["", f"ECE: expected calibration error over every pixel with ground truth ({ECE_BINS} equal-width bins; correct = |d - gt| <= 3 px)"]
    if per_pair:
        names = sorted(means, key=lambda name: means[name])
        lines += ["", "per pair (AUC x100): " + "  ".join(["key", "bad3", "optimal", *names])]
        for key, value in results.items():
            cells = [f"{100 * value['auc'][n]:.2f}" if n in value["auc"] else "-" for n in names]
            lines.append("  ".join([key, f"{100 * value['error_rate']:.2f}", f"{100 * value['optimal_auc']:.2f}", *cells]))
    return "\n".join(lines)


def plot_evaluation(path: str | os.PathLike[str], results: Mapping[str, PairEvaluation]) -> None:
    """Mean sparsification curves of the pairs with ground truth, best mean AUC first, with the optimal curve
    (:func:`pseudolabel.viz.plots.write_sparsification_plot`: SVG for ``.svg``, else an image)."""
    from pseudolabel.viz.plots import write_sparsification_plot

    evaluated = [value for value in results.values() if value["pixels"] > 0]
    if not evaluated:
        raise InputError(f"{path}: no pair has ground-truth pixels; nothing to plot")
    means, optimal_auc, _ = summarise_aucs(results)
    order = sorted(means, key=lambda name: means[name])
    curves = {name: np.mean([v["curves"][name] for v in evaluated if name in v["curves"]], axis=0) for name in order}
    optimal = np.mean([optimal_curve(v["error_rate"], DEFAULT_FRACTIONS) for v in evaluated], axis=0)
    aucs = {**means, "optimal": optimal_auc}
    title = f"mean of {len(evaluated)} pairs"
    write_sparsification_plot(path, curves, DEFAULT_FRACTIONS, aucs, optimal, title, width=460, height=max(300, 80 + 16 * (len(curves) + 2)))
    eces = summarise_ece(results)
    if eces:
        from pseudolabel.viz.plots import write_reliability_plot

        tables: dict[str, np.ndarray] = {}
        for value in evaluated:
            for name, table in value.get("reliability", {}).items():
                tables[name] = tables.get(name, 0) + np.asarray(table, dtype=np.float64)
        shown = [name for name in order if name in tables][:RELIABILITY_MEASURES]
        write_reliability_plot(reliability_plot_path(path), {name: tables[name] for name in shown}, {name: eces[name] for name in shown}, title)


#: Measures drawn in the reliability diagram of :func:`plot_evaluation` (the best by AUC).
RELIABILITY_MEASURES: int = 6


def reliability_plot_path(path: str | os.PathLike[str]) -> Path:
    """Where :func:`plot_evaluation` writes the reliability diagram next to the curves: ``curves.png`` ->
    ``curves.reliability.png`` (same format)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.reliability{path.suffix}")


def write_evaluation_json(path: str | os.PathLike[str], results: Mapping[str, PairEvaluation]) -> None:
    """Per-pair results as JSON (curves as lists), written atomically."""
    from pseudolabel.io import atomic_write_bytes

    serialisable = {
        key: {
            **value,
            "curves": {m: c.tolist() for m, c in value["curves"].items()},
            **({"reliability": {m: np.asarray(t).tolist() for m, t in value["reliability"].items()}} if "reliability" in value else {}),
        }
        for key, value in results.items()
    }
    atomic_write_bytes(path, json.dumps(serialisable, indent=1).encode())
