"""Whole proxies files: scoring every pair, thresholding labels, evaluating measures against ground truth.

One call per command of the command line (which adds only its options and messages):

* :func:`score_proxies` -- ``pseudolabel confidence score``: ``confidence/<name>`` for every pair, from
  the conventional measures of :mod:`pseudolabel.confidence.measures` and a CCNN;
* :func:`evaluate_proxies` -- ``pseudolabel confidence eval``: sparsification curves and AUCs of the
  stored (or requested) measures against ground truth; :func:`format_auc_table` prints them;
* :func:`label_proxies` -- ``pseudolabel labels``: the proxy disparity where a confidence exceeds
  ``tau``; :func:`format_label_table` prints the per-pair statistics.

(``pseudolabel confidence train`` is :func:`pseudolabel.confidence.training.train_confidence_from_proxies`.)

Files are edited in place and crash-safely (:func:`pseudolabel.store.journal.edit_proxies`: only the
new datasets are written): the work is committed every :data:`COMMIT_SECONDS` (a kill loses at most
that much) and a rerun skips what is up to date.
Ground truth (``gt_dir``) is matched to pairs by key (:func:`pseudolabel.datasets.ground_truth_lookup`).

Importing this module does not import torch; :func:`score_proxies` imports it when a network runs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pseudolabel import __version__
from pseudolabel.confidence.calibration import ECE_BINS, calibration_samples, ece_from_bins, reliability_bins
from pseudolabel.confidence.images import IMAGE_CHANNELS, pair_gray_images
from pseudolabel.confidence.labels import DEFAULT_TAU, expected_error, label_statistics, tau_for_target_error, threshold_labels
from pseudolabel.confidence.measures import MEASURES, compute_measure
from pseudolabel.confidence.sparsification import DEFAULT_FRACTIONS, image_evaluation, optimal_curve
from pseudolabel.datasets import ground_truth_lookup, read_ground_truth
from pseudolabel.errors import InputError
from pseudolabel.interrupts import Interrupted
from pseudolabel.outputs import check_editable_file, check_output_file
from pseudolabel.progress import Progress, or_silent
from pseudolabel.selection import select_keys
from pseudolabel.store.journal import edit_proxies
from pseudolabel.store.proxies import ProxyFile, key_to_name, open_proxies

if TYPE_CHECKING:
    from pseudolabel.models.ccnn import ConfidenceScorer

#: Seconds of work between two commits of the edits of :func:`score_proxies` / :func:`label_proxies`
#: (a commit costs a few fsyncs and the changed metadata pages, not a copy of the file).
COMMIT_SECONDS: float = 10.0
#: ``measures`` of :func:`score_proxies` by default: none, because no later stage reads a conventional
#: measure unless told to (labels, adapt, show and the report read the network's ``confidence/ccnn``).
DEFAULT_MEASURES: str = "none"
#: ``model`` of :func:`score_proxies` that selects the CCNN shipped with the package.
SHIPPED_MODEL: str = "shipped"

#: Per-pair result of :func:`pseudolabel.confidence.sparsification.image_evaluation`: ``error_rate``,
#: ``optimal_auc``, ``pixels``, ``auc`` (``{measure: float}``) and ``curves`` (``{measure: float64 (F,)}``);
#: :func:`evaluate_pairs` adds ``reliability`` (``{measure: float64 (bins, 3)}``, :func:`pair_reliability`).
PairEvaluation = dict[str, Any]
#: One row of :func:`label_proxies`: the key and its statistics (``density``; with ground truth also
#: ``gt_coverage``, ``bad1``, ``bad2``, ``bad3``, ``labelled_with_gt``, see
#: :func:`pseudolabel.confidence.labels.label_statistics`), shares in [0, 1].
LabelRow = tuple[str, dict[str, float]]


# ---------------------------------------------------------------------------------------------
# shared steps


def split_names(text: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated list."""
    return [name.strip() for name in text.split(",") if name.strip()]


def parse_measures(text: str | Sequence[str]) -> list[str]:
    """Conventional measures by name: ``"all"`` -> every registered one, ``"none"``/``""`` -> none, else a
    comma-separated list (or a sequence of names), each checked against :data:`MEASURES`."""
    if isinstance(text, str):
        if text.strip() == "all":
            return list(MEASURES)
        if text.strip() in ("none", ""):
            return []
        names = split_names(text)
    else:
        names = list(text)
    unknown = [name for name in names if name not in MEASURES]
    if unknown:
        raise InputError(f"--measures: unknown measure(s) {', '.join(unknown)}; choose from {', '.join(MEASURES)} or all/none")
    return names


def selected_keys(path: str | os.PathLike[str], include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[str]:
    """The finished pairs of a proxies file chosen by the ``include`` / ``exclude`` globs (:func:`select_keys`)."""
    with open_proxies(path, "r") as proxies:
        keys = proxies.keys()
    return select_keys(keys, include, exclude, source=str(path))


def require_ground_truth(gt_dir: str | os.PathLike[str], keys: Sequence[str], gt_scale: float | None) -> dict[str, tuple[Path, float | None]]:
    """:func:`pseudolabel.datasets.ground_truth_lookup` that fails when no key has ground truth."""
    lookup = ground_truth_lookup(Path(gt_dir), keys, gt_scale)
    if not lookup:
        raise InputError(
            f"--gt {gt_dir}: no ground truth for any of the {len(keys)} pairs (e.g. {keys[0]!r}); "
            "name files <key>.pfm/.png or point --gt at the dataset root"
        )
    return lookup


def edit_in_batches(
    path: str | os.PathLike[str],
    keys: Sequence[str],
    process: Callable[[ProxyFile, str], None],
    label: str,
    progress: Progress | None = None,
    commit_seconds: float | None = None,
) -> None:
    """Run ``process(proxies, key)`` for every key inside crash-safe in-place edits, committed every
    ``commit_seconds`` (default :data:`COMMIT_SECONDS`): a kill keeps every committed pair.

    ``progress`` gets one phase ``label`` of ``len(keys)`` pairs.

    Raises:
        Interrupted: on Ctrl-C, saying how many pairs were committed (the edit in progress is dropped).
    """
    commit_seconds = COMMIT_SECONDS if commit_seconds is None else commit_seconds
    progress = or_silent(progress)
    progress.start(label, len(keys))
    committed = 0
    try:
        position = 0
        while position < len(keys):
            with edit_proxies(path) as proxies:
                started = time.monotonic()
                while position < len(keys):
                    process(proxies, keys[position])
                    position += 1
                    progress.advance(1, keys[position - 1])
                    if time.monotonic() - started > commit_seconds:
                        break
            committed = position
    except KeyboardInterrupt:
        raise Interrupted(f"{label} of {committed} of {len(keys)} pairs, written to {path} (the other pairs are unchanged)") from None
    finally:
        progress.finish()


def mean_over_pairs(values: Iterable[float]) -> float:
    """Mean of the finite values (every pair weighs the same); NaN when there is none."""
    finite = [float(value) for value in values if np.isfinite(value)]
    return float(np.mean(finite)) if finite else float("nan")


# ---------------------------------------------------------------------------------------------
# score


@dataclass
class ScoreSummary:
    """What :func:`score_proxies` did: the scored ``keys``, the ``written`` dataset names (network first) and
    the requested measures left out as ``unavailable`` (name -> the datasets it needs that some pair lacks,
    e.g. the SGM costs of a file made by ``pseudolabel import``)."""

    keys: list[str]
    written: list[str]
    unavailable: dict[str, list[str]] = field(default_factory=dict)


def _load_network(
    model: str | os.PathLike[str], name: str | None, device: str, precision: str, threads: int | None
) -> tuple[ConfidenceScorer, str, dict[str, Any]]:
    """The scorer, output name and dataset attributes of a checkpoint (or of the shipped CCNN)."""
    from pseudolabel.confidence import training

    shipped = isinstance(model, str) and model == SHIPPED_MODEL
    path = training.shipped_ccnn_path() if shipped else Path(model)
    if shipped and not path.is_file():
        raise InputError(f"the shipped CCNN {path} is missing; reinstall pseudolabel or pass --model")
    if not shipped and not path.is_file():
        from pseudolabel.learn.shipped import shipped_models, shipped_weights_folder

        names = shipped_models("confidence")
        if len(path.parts) == 1 and path.stem in names:
            path = shipped_weights_folder() / f"{path.stem}.pt"
        else:
            listed = f"; shipped confidence models: {', '.join(names)}" if names else ""
            raise InputError(
                f"--model {model}: no such confidence model; give a .pt written by `pseudolabel confidence train`{listed} "
                "(without --model: the shipped ccnn)"
            )
    scorer, checkpoint = training.make_scorer(path, device=device, precision=precision, threads=threads)
    calibration = training.checkpoint_calibration(checkpoint)
    network_name = name or ("ccnn" if shipped else path.stem)
    attrs = {
        "measure": network_name,
        "calibrated": calibration.method if calibration is not None else "none",
        "source": "network",
        "model": str(path),
        "model_sha256": training.file_digest(path),
        "created_by": f"pseudolabel {__version__}",
    }
    return scorer, network_name, attrs


def _up_to_date(proxies: ProxyFile, key: str, dataset: str, attrs: Mapping[str, Any]) -> bool:
    """``dataset`` of ``key`` is stored with every attribute of ``attrs``."""
    if not proxies.has(key, dataset):
        return False
    stored = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in proxies.h5["pairs"][key_to_name(key)][dataset].attrs.items()}
    return all(stored.get(k) == v for k, v in attrs.items())


def score_proxies(
    path: str | os.PathLike[str],
    measures: str | Sequence[str] = DEFAULT_MEASURES,
    model: str | os.PathLike[str] | None = SHIPPED_MODEL,
    name: str | None = None,
    keys: Sequence[str] = (),
    exclude: Sequence[str] = (),
    device: str = "auto",
    precision: str = "auto",
    threads: int | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ScoreSummary:
    """Write ``confidence/<name>`` ((H, W) in [0, 1], read back as ``float32``) for every selected pair of a proxies file.

    Args:
        path: proxies HDF5 file written by ``pseudolabel sgm``; edited crash-safely.
        measures: conventional measures to store (:func:`parse_measures`: ``"all"``, ``"none"`` (the default:
            only the network, whose input measures are computed in memory), ``"lrc,apkr"`` or names).
        model: confidence network checkpoint (``.pt``), :data:`SHIPPED_MODEL` (the CCNN shipped with the
            package, written as ``confidence/ccnn``) or ``None`` (no network, torch is not imported). A
            checkpoint with a calibration map writes the calibrated confidence (dataset attribute
            ``calibrated``: the method, ``"none"`` without); a network reading the image (``lfn``) reads
            the pair's images (pair attributes ``left``/``right``).
        name: dataset name of the network's output (default: the checkpoint's file stem).
        keys, exclude: globs choosing pairs (:func:`pseudolabel.selection.select_keys`).
        device, precision, threads: where and how the network runs
            (:class:`pseudolabel.models.ccnn.ConfidenceScorer`; ``threads`` sets torch's CPU threads).
        overwrite: recompute datasets already stored by the same measure / model.
        progress: told of each scored pair (phase ``"scoring"``).

    Returns:
        The scored keys, the written dataset names, and the requested measures left out because some
        selected pair lacks a dataset they need (a file of ``pseudolabel import`` has no SGM costs;
        :func:`unavailable_note` words them in one line; a network reading such measures is left out the
        same way, under its name). Where an imported ``disparity`` is NaN the
        confidences are 0.

    Raises:
        InputError: unknown measure, missing model, no pair selected, nothing (available) to score, name collision.
    """
    check_editable_file(path, "--proxies")
    conventional = parse_measures(measures)
    chosen = selected_keys(path, keys, exclude)
    unavailable = _unavailable_measures(path, chosen, conventional)
    conventional = [m for m in conventional if m not in unavailable]
    scorer: ConfidenceScorer | None = None
    network_name: str | None = None
    network_attrs: dict[str, Any] = {}
    if model is not None:
        scorer, network_name, network_attrs = _load_network(model, name, device, precision, threads)
    elif name is not None:
        raise InputError("--name names the network's output; it needs a --model")
    if scorer is not None and network_name is not None:
        blocked = _unavailable_measures(path, chosen, [m for m in scorer.inputs[1:] if m in MEASURES])
        if blocked:  # its input measures cannot be computed: the network is unavailable like them
            unavailable[network_name] = sorted({need for needs in blocked.values() for need in needs})
            scorer, network_name = None, None
    if scorer is None and not conventional:
        if unavailable:
            raise InputError(f"{path}: nothing to score: {', '.join(unavailable)} need {_listing(unavailable)}, which the file lacks")
        raise InputError("nothing to score: --model none stores only the --measures asked for; pass --measures all (or a list)")
    if network_name is not None and network_name in conventional:
        raise InputError(f"--name {network_name} collides with the conventional measure of that name; choose another --name")
    conventional_attrs = {"source": "conventional", "created_by": f"pseudolabel {__version__}"}

    def process(proxies: ProxyFile, key: str) -> None:
        params = proxies.pair_params(key)
        todo = [m for m in conventional if overwrite or not _up_to_date(proxies, key, f"confidence/{m}", {"measure": m, **conventional_attrs})]
        run_network = scorer is not None and (overwrite or not _up_to_date(proxies, key, f"confidence/{network_name}", network_attrs))
        network_inputs = [m for m in scorer.inputs[1:] if m not in IMAGE_CHANNELS] if scorer is not None and run_network else []
        needed = sorted({need for m in [*todo, *network_inputs] for need in MEASURES[m].needs} | ({"disparity"} if run_network else set()))
        features = proxies.read(key, needed) if needed else {}
        # an imported disparity is NaN where its matcher gave none: score a filled copy, confidence 0 there
        unknown = ~np.isfinite(features["disparity"]) if "disparity" in features else None
        if unknown is not None and unknown.any():
            features["disparity"] = np.where(unknown, 0.0, features["disparity"]).astype(np.float32)
        else:
            unknown = None
        if run_network and scorer is not None and any(m in IMAGE_CHANNELS for m in scorer.inputs):
            features.update(pair_gray_images(path, proxies.pair_attrs(key), key))
        computed: dict[str, np.ndarray] = {}
        for measure in todo:
            computed[measure] = compute_measure(measure, features, params)
            if unknown is not None:
                computed[measure][unknown] = 0.0
            proxies.write(key, f"confidence/{measure}", computed[measure], attrs={"measure": measure, **conventional_attrs})
        if scorer is not None and run_network:
            confidence = scorer.confidence_from_features(features, params, computed)
            if unknown is not None:
                confidence[unknown] = 0.0
            proxies.write(key, f"confidence/{network_name}", confidence, attrs=network_attrs)

    edit_in_batches(path, chosen, process, "scoring", progress)
    return ScoreSummary(chosen, ([network_name] if network_name else []) + conventional, unavailable)


def _unavailable_measures(path: str | os.PathLike[str], keys: Sequence[str], measures: Sequence[str]) -> dict[str, list[str]]:
    """The ``measures`` some pair of ``keys`` lacks a needed dataset for, with the datasets missing."""
    with open_proxies(path, "r") as proxies:
        present = set.intersection(*(set(proxies.datasets(key)) for key in keys)) if keys else set()
    return {m: [need for need in MEASURES[m].needs if need not in present] for m in measures if not set(MEASURES[m].needs) <= present}


def _listing(unavailable: Mapping[str, Sequence[str]]) -> str:
    """``cost_best, cost_mean`` -- the datasets that the ``unavailable`` measures miss, each once."""
    return ", ".join(sorted({need for needs in unavailable.values() for need in needs}))


def unavailable_note(path: str | os.PathLike[str], summary: ScoreSummary) -> str:
    """One line naming the measures :func:`score_proxies` left out and the datasets they need ("" when none)."""
    if not summary.unavailable:
        return ""
    return f"note: not available for {path} (it lacks {_listing(summary.unavailable)}, e.g. no SGM costs): {', '.join(summary.unavailable)}"


# ---------------------------------------------------------------------------------------------
# labels


def label_proxies(
    path: str | os.PathLike[str],
    tau: float = DEFAULT_TAU,
    measure: str = "ccnn",
    keys: Sequence[str] = (),
    exclude: Sequence[str] = (),
    gt_dir: str | os.PathLike[str] | None = None,
    gt_scale: float | None = None,
    progress: Progress | None = None,
    target_error: float | None = None,
) -> list[LabelRow]:
    """Write ``labels`` (``float32`` (H, W) proxy disparity in pixels where ``confidence/<measure> > tau``,
    NaN elsewhere; attributes ``tau``, ``measure``) for every selected pair of a proxies file.

    Args:
        path: proxies file holding ``confidence/<measure>`` for every selected pair; edited crash-safely.
        tau: threshold in [0, 1).
        measure: the stored confidence to threshold.
        keys, exclude: globs choosing pairs.
        gt_dir, gt_scale: optional ground truth (:func:`pseudolabel.datasets.ground_truth_lookup`) for
            the accuracy of the labels.
        progress: told of each labelled pair (phase ``"labels"``).
        target_error: instead of ``tau``, choose per pair the smallest tau whose labels have an expected
            error rate (mean of ``1 - c`` over them, :func:`pseudolabel.confidence.labels.tau_for_target_error`)
            of at most this, in (0, 1); meant for a calibrated confidence. Every pair is checked before
            anything is written: a target no tau reaches on some pair leaves the file untouched.

    Every ``labels`` dataset also gets ``expected_error`` (mean ``1 - c`` of its labels, NaN without
    labels) and ``calibrated`` (the confidence's own attribute, ``"none"`` without), plus
    ``target_error`` when given. The file's root gets ``labels_measure``, ``labels_target_error``
    (NaN for a fixed tau) and ``labels_expected_error`` (over every label of the run).

    Returns:
        One :data:`LabelRow` per pair, in the order of the file (print with :func:`format_label_table`);
        its statistics also hold ``tau``, ``expected_error`` and ``calibrated`` (1.0 or 0.0).
    """
    if target_error is None and not 0.0 <= tau < 1.0:
        raise InputError(f"--tau must be in [0, 1), got {tau}")
    check_editable_file(path, "--proxies")
    if target_error is not None and not 0.0 < target_error < 1.0:
        raise InputError(f"--target-error must be in (0, 1) (e.g. 1% or 0.01), got {target_error}")
    chosen = selected_keys(path, keys, exclude)
    dataset = f"confidence/{measure}"
    with open_proxies(path, "r") as proxies:
        lacking = [key for key in chosen if not proxies.has(key, dataset)]
        if lacking:
            stored = sorted(set().union(*(proxies.list_confidences(key) for key in chosen)))
            listed = f"; stored measures: {', '.join(stored)}" if stored else ""
            raise InputError(
                f"--measure {measure}: {len(lacking)} of {len(chosen)} pairs (e.g. {lacking[0]!r}) have no {dataset}{listed}; "
                f"choose one of those, or run `pseudolabel confidence score --proxies {path}` first"
            )
        calibration = {key: str(_dataset_attrs(proxies, key, dataset).get("calibrated", "none")) for key in chosen}
        taus = {key: float(tau) for key in chosen}
        if target_error is not None:
            for key in chosen:
                arrays = proxies.read(key, ["disparity", dataset])
                try:
                    taus[key] = tau_for_target_error(arrays[dataset], target_error, np.isfinite(arrays["disparity"]))[0]
                except InputError as error:
                    raise InputError(f"pair {key!r}: {error}") from None
    lookup = require_ground_truth(gt_dir, chosen, gt_scale) if gt_dir is not None else {}
    rows: list[LabelRow] = []
    totals = [0.0, 0]  # summed expected error and count of every label of the run

    def process(proxies: ProxyFile, key: str) -> None:
        arrays = proxies.read(key, ["disparity", dataset])
        result = threshold_labels(arrays["disparity"], arrays[dataset], taus[key])
        expected, count = expected_error(arrays[dataset], taus[key], np.isfinite(arrays["disparity"]))
        attrs: dict[str, Any] = {
            "tau": taus[key],
            "measure": measure,
            "expected_error": expected,
            "calibrated": calibration[key],
            "created_by": f"pseudolabel {__version__}",
        }
        if target_error is not None:
            attrs["target_error"] = float(target_error)
        proxies.write(key, "labels", result, attrs=attrs)
        if count:
            totals[0] += expected * count
            totals[1] += count
        extra = {"tau": taus[key], "expected_error": expected, "calibrated": float(calibration[key] != "none")}
        if key in lookup:
            gt_path, scale = lookup[key]
            rows.append((key, {**label_statistics(result, read_ground_truth(gt_path, scale, result.shape, key)), **extra}))
        else:
            rows.append((key, {"density": float(np.isfinite(result).mean()), **extra}))
        if proxies.shard_size is None:  # a sharded index is not edited: each labels dataset carries the same attributes
            proxies.h5.attrs["labels_measure"] = measure
            proxies.h5.attrs["labels_target_error"] = float("nan") if target_error is None else float(target_error)
            proxies.h5.attrs["labels_expected_error"] = totals[0] / totals[1] if totals[1] else float("nan")

    edit_in_batches(path, chosen, process, "labels", progress)
    return rows


def _dataset_attrs(proxies: ProxyFile, key: str, dataset: str) -> dict[str, Any]:
    """Attributes of one dataset of a pair, bytes decoded."""
    stored = proxies.h5["pairs"][key_to_name(key)][dataset].attrs
    return {name: (value.decode() if isinstance(value, bytes) else value) for name, value in stored.items()}


def format_label_table(rows: Sequence[LabelRow], tau: float, measure: str, target_error: float | None = None) -> str:
    """Per-pair density (and, with ground truth, coverage of the ground truth and bad-1/2/3) in %, and their means.

    Rows holding ``tau`` / ``expected_error`` (:func:`label_proxies`) also show the pair's tau and the
    expected error rate of its labels (mean ``1 - c``); the header names the ``target_error`` when given.
    """
    with_gt = any("bad3" in stats for _, stats in rows)
    with_expected = any("expected_error" in stats for _, stats in rows)
    header = f"{'pair':<40}{'density %':>10}" + (f"{'gt kept %':>10}{'bad1 %':>8}{'bad2 %':>8}{'bad3 %':>8}" if with_gt else "")
    if with_expected:
        header += f"{'tau':>9}{'expected err %':>16}"
    if target_error is not None:
        title = f"labels: confidence/{measure}, tau per pair for an expected error <= {100 * target_error:g}%"
    else:
        title = f"labels: confidence/{measure} > {tau}"
    lines = [title]
    if with_expected and any(stats.get("calibrated", 1.0) == 0.0 for _, stats in rows):
        lines.append(f"note: confidence/{measure} is not calibrated; the expected error is its raw belief, not a measured rate")
    lines.append(header)

    def expected_cells(stats: Mapping[str, float]) -> str:
        if not with_expected:
            return ""
        value = stats.get("expected_error", float("nan"))
        return f"{stats.get('tau', float('nan')):>9.4f}" + (f"{100 * value:>16.2f}" if np.isfinite(value) else f"{'-':>16}")

    for key, stats in rows:
        line = f"{key:<40}{100 * stats['density']:>10.2f}"
        if with_gt:
            if "bad3" in stats:
                line += f"{100 * stats['gt_coverage']:>10.2f}{100 * stats['bad1']:>8.2f}{100 * stats['bad2']:>8.2f}{100 * stats['bad3']:>8.2f}"
            else:
                line += f"{'-':>10}{'-':>8}{'-':>8}{'-':>8}"
        lines.append(line + expected_cells(stats))
    line = f"{'mean':<40}{100 * mean_over_pairs(s['density'] for _, s in rows):>10.2f}"
    if with_gt:
        scored = [s for _, s in rows if "bad3" in s]
        columns = (("gt_coverage", 10), ("bad1", 8), ("bad2", 8), ("bad3", 8))
        line += "".join(f"{100 * mean_over_pairs(s[k] for s in scored):>{w}.2f}" for k, w in columns)
    if with_expected:
        line += f"{mean_over_pairs(s.get('tau', float('nan')) for _, s in rows):>9.4f}"
        line += f"{100 * mean_over_pairs(s.get('expected_error', float('nan')) for _, s in rows):>16.2f}"
    lines.append(line)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# eval


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
    params = proxies.pair_params(key)
    for name in names:
        if name in stored:
            confidences[name] = proxies.read(key, [f"confidence/{name}"])[f"confidence/{name}"]
        elif name in MEASURES:
            missing = [need for need in MEASURES[name].needs if need not in features]
            features.update(proxies.read(key, missing))
            confidences[name] = compute_measure(name, features, params)
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
