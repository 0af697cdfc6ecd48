"""Training and calibrating a confidence network on whole proxies files (torch).

:func:`train_confidence_from_proxies` is ``pseudolabel confidence train``: it loads the pairs of one or
more proxies files (:func:`load_training_pairs`), trains
(:func:`pseudolabel.confidence.training.train_ccnn`) and writes the checkpoint
(:func:`pseudolabel.confidence.checkpoints.save_confidence_checkpoint`).
:func:`calibrate_confidence_model` is ``pseudolabel confidence calibrate``: it fits a calibration of a
checkpoint on proxies with ground truth and stores it in the checkpoint.

Importing this module imports torch (the package :mod:`pseudolabel.confidence` does not).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pseudolabel.confidence.calibration import METHODS, Calibration, fit_calibration, invalid_share
from pseudolabel.confidence.checkpoints import load_confidence_checkpoint, save_confidence_checkpoint
from pseudolabel.confidence.files import require_ground_truth, selected_keys, split_names
from pseudolabel.confidence.images import IMAGE_CHANNELS, pair_gray_images
from pseudolabel.confidence.measures import MEASURES
from pseudolabel.confidence.scoring import parse_measures
from pseudolabel.confidence.targets import (
    LABEL_SOURCES,
    TEACHER_LABELS,
    WILD_FRACTION,
    WILD_NEGATIVE,
    WILD_POSITIVE,
    agreement_targets,
    ground_truth_targets,
    measures_for_wild,
    wild_targets,
)
from pseudolabel.confidence.teachers import DEFAULT_TEACHERS, parse_teachers, teacher_disparities
from pseudolabel.confidence.training import (
    TrainingConfig,
    TrainingPair,
    check_pair_weighting,
    load_training_state,
    partial_training_path,
    save_training_state,
    summarise_training_data,
    train_ccnn,
    training_config_dict,
)
from pseudolabel.datasets import read_ground_truth
from pseudolabel.errors import InputError
from pseudolabel.interrupts import Interrupted
from pseudolabel.models.ccnn import ConfidenceNetwork, ConfidenceScorer, build_confidence_network, build_inputs
from pseudolabel.outputs import check_output_file
from pseudolabel.progress import Progress
from pseudolabel.store.proxies import open_proxies

PathLike = str | os.PathLike[str]


@dataclass
class TrainingData:
    """The training data of :func:`train_confidence_from_proxies`, once loaded.

    Attributes:
        pairs: every labelled pair of every file, in file then key order.
        summary: :func:`summarise_training_data` plus ``proxies`` (file names), ``labels`` (one of
            :data:`pseudolabel.confidence.targets.LABEL_SOURCES`), ``sgm_params`` (JSON text of each file's SGM parameters; one text for one file)
            and ``gt`` (the ground-truth folders, None without).
        skipped: ``(proxies file, key)`` of the selected pairs without ground truth (not trained on).
    """

    pairs: list[TrainingPair]
    summary: dict[str, Any]
    skipped: list[tuple[Path, str]] = field(default_factory=list)


@dataclass
class ConfidenceTraining:
    """What :func:`train_confidence_from_proxies` wrote: the checkpoint ``out``, its ``training_args``,
    ``data_summary`` and loss ``history`` (mean per epoch), and the training time in ``seconds``."""

    out: Path
    training_args: dict[str, Any]
    data_summary: dict[str, Any]
    history: list[float]
    seconds: float


def _paths(value: PathLike | Sequence[PathLike] | None) -> list[Path]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    return [Path(item) for item in value]


def _names(value: str | Sequence[str]) -> list[str]:
    return split_names(value) if isinstance(value, str) else list(value)


def load_training_pairs(
    proxies_path: PathLike,
    labels: str,
    gt_dir: PathLike | None = None,
    gt_scale: float | None = None,
    keys: Sequence[str] = (),
    exclude: Sequence[str] = (),
    inputs: Sequence[str] = ("disparity",),
    wild_fraction: float = WILD_FRACTION,
    positive: Sequence[str] = WILD_POSITIVE,
    negative: Sequence[str] = WILD_NEGATIVE,
    teachers: Sequence[str] = DEFAULT_TEACHERS,
) -> tuple[list[TrainingPair], str, list[str]]:
    """The training pairs of one proxies file.

    Args:
        proxies_path: proxies file (read only).
        labels: ``"gt"`` (:func:`pseudolabel.confidence.targets.ground_truth_targets`, needs ``gt_dir``),
            ``"wild"`` (:func:`pseudolabel.confidence.targets.wild_targets`), ``"wild-agree"``, ``"wild-soft"`` or
            ``"wild-confirm"`` (:func:`pseudolabel.confidence.targets.agreement_targets` of the wild labels and
            the ``teachers``, rule hard, soft or confirm; reads the pair's images).
        gt_dir, gt_scale: ground truth of the pairs (:func:`pseudolabel.datasets.ground_truth_lookup`).
        keys, exclude: globs choosing pairs.
        inputs: network input channels (:func:`pseudolabel.models.ccnn.build_inputs`).
        wild_fraction, positive, negative: settings of the wild labels.
        teachers: independent matchers of the agreement labels (:data:`pseudolabel.confidence.teachers.TEACHERS`).

    Returns:
        ``(pairs, sgm_params, skipped)``: the labelled pairs, the file's SGM parameters (JSON text) and the
        selected keys that have no ground truth (``gt`` labels only).
    """
    if labels not in LABEL_SOURCES or (labels == "gt") != (gt_dir is not None):
        raise InputError(f"labels {labels!r} with gt_dir {gt_dir}: gt labels need a ground-truth folder, the others take none")
    teacher_names = parse_teachers(teachers) if labels in TEACHER_LABELS else []
    chosen = selected_keys(proxies_path, keys, exclude)
    lookup = require_ground_truth(gt_dir, chosen, gt_scale) if gt_dir is not None else {}
    wild_names = [*positive, *negative] if labels != "gt" else []
    measure_inputs = [name for name in inputs[1:] if name not in IMAGE_CHANNELS]
    reads_images = any(name in IMAGE_CHANNELS for name in inputs) or bool(teacher_names)
    needed = sorted({need for name in [*measure_inputs, *wild_names] for need in MEASURES[name].needs} | {"disparity", "valid"})
    pairs: list[TrainingPair] = []
    skipped: list[str] = []
    with open_proxies(proxies_path, "r") as proxies:
        sgm_params = proxies.sgm_params.to_json()
        for key in chosen:
            if labels == "gt" and key not in lookup:
                skipped.append(key)
                continue
            params = proxies.pair_params(key)
            features = proxies.read(key, needed)
            if reads_images:
                features.update(pair_gray_images(proxies_path, proxies.pair_attrs(key), key))
            disparity = features["disparity"]
            measures: dict[str, np.ndarray] = {}  # every measure computed for this pair, shared by the labels and the inputs
            if labels == "gt":
                gt_path, scale = lookup[key]
                targets = ground_truth_targets(disparity, read_ground_truth(gt_path, scale, disparity.shape, key))
            else:
                targets = wild_targets(measures_for_wild(features, params, positive, negative, measures), wild_fraction, positive, negative)
                if teacher_names:
                    votes = teacher_disparities(features, params, teacher_names)
                    targets = agreement_targets(disparity, votes, targets, TEACHER_LABELS[labels])
            pairs.append(TrainingPair(key, build_inputs(features, params, inputs, measures), targets, invalid_share(features["valid"])))
    return pairs, sgm_params, skipped


def _check_label_source(labels: str | None, gt_dirs: Sequence[Path], proxies_count: int) -> str:
    """The label source (``gt`` when ``labels`` is None and there is ground truth), checked against ``gt_dirs``."""
    if len(gt_dirs) > 1 and len(gt_dirs) != proxies_count:
        raise InputError(
            f"{len(gt_dirs)} --gt folders for {proxies_count} --proxies files; give one --gt, or one per --proxies file in the same order"
        )
    if labels is None:
        if not gt_dirs:
            raise InputError("give --gt GT_DIR (labels from ground truth) or --labels wild (no ground truth)")
        return "gt"
    if labels == "gt" and not gt_dirs:
        raise InputError("--labels gt needs --gt GT_DIR; use --labels wild to train without ground truth")
    if labels not in LABEL_SOURCES:
        raise InputError(f"--labels must be one of {', '.join(LABEL_SOURCES)}, got {labels!r}")
    if labels != "gt" and gt_dirs:
        raise InputError(f"--labels {labels} uses no ground truth; drop --gt")
    return labels


def train_confidence_from_proxies(
    proxies: PathLike | Sequence[PathLike],
    out: PathLike,
    gt: PathLike | Sequence[PathLike] | None = None,
    labels: str | None = None,
    keys: Sequence[str] = (),
    exclude: Sequence[str] = (),
    gt_scale: float | None = None,
    config: TrainingConfig | None = None,
    wild_fraction: float = WILD_FRACTION,
    positive: str | Sequence[str] = WILD_POSITIVE,
    negative: str | Sequence[str] = WILD_NEGATIVE,
    teachers: str | Sequence[str] = DEFAULT_TEACHERS,
    threads: int | None = None,
    progress: Progress | None = None,
    on_loaded: Callable[[TrainingData], None] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    calibrate: str = "none",
) -> ConfidenceTraining:
    """Train a CCNN on the proxies of one or more files and write its checkpoint.

    Args:
        proxies: proxies file(s) written by ``pseudolabel sgm``; the pairs of every file are pooled.
        out: checkpoint to write (``.pt``, atomically; :func:`load_confidence_checkpoint` reads it).
        gt: ground truth: one folder (for every file) or one per file, in order; none for wild labels.
        labels: ``"gt"`` (1 where ``|d - gt| <= 3`` px), ``"wild"`` (agreement of conventional measures, no
            ground truth), ``"wild-agree"`` / ``"wild-soft"`` / ``"wild-confirm"`` (the wild labels and independent
            matchers vote: hard, soft or confirming targets, no ground truth) or None (``gt`` when ``gt`` is given).
        keys, exclude: globs choosing the pairs of every file.
        gt_scale: divisor of stored PNG/PGM ground truth.
        config: hyper-parameters (``inputs`` must start with ``"disparity"``); default :class:`TrainingConfig`.
        wild_fraction, positive, negative: wild labels: share ``t`` and the two sets of measures (names or
            comma-separated text).
        teachers: the independent matchers of the ``wild-*`` agreement labels (names or comma-separated text).
        threads: CPU threads of torch (None: chosen from the usable cores and the machine's load).
        progress: told of every training step (:func:`train_ccnn`).
        on_loaded: called once the data is loaded, before the first epoch (to report its size).
        resume: continue the training saved in ``OUT.partial.pt`` (:func:`partial_training_path`), which
            every finished epoch updates, instead of refusing to start.
        overwrite: replace an existing ``out`` (and drop an ``OUT.partial.pt``) instead of refusing.
        calibrate: ``"none"``, ``"isotonic"`` or ``"temperature"``: fit that calibration on the training
            pairs (``gt`` labels only: the network's confidence against ``|d - gt| <= 3``) and store it in
            the checkpoint. Fitted on the pixels the network was trained on, it can be optimistic; for an
            honest one, fit it on other pairs with :func:`calibrate_confidence_model`.

    Returns:
        What was written.

    Raises:
        InputError: bad settings or data, ``out`` exists (without ``overwrite``), ``OUT.partial.pt``
            exists (without ``resume`` or ``overwrite``), ``out`` cannot be written.
        Interrupted: on Ctrl-C, saying which epochs ``OUT.partial.pt`` keeps.
    """
    config = config or TrainingConfig()
    partial = partial_training_path(out)
    if partial.exists() and not (resume or overwrite):
        raise InputError(f"{partial} holds an unfinished training; add --resume to continue it or --overwrite to start over")
    check_output_file(out, "--out", overwrite=overwrite, what="confidence model")
    proxies_paths, gt_dirs = _paths(proxies), _paths(gt)
    label_source = _check_label_source(labels, gt_dirs, len(proxies_paths))
    check_pair_weighting(config.pair_weighting)  # before the pairs are loaded
    positive_set, negative_set = _names(positive), _names(negative)
    parse_measures(",".join(positive_set + negative_set))
    teacher_set = parse_teachers(teachers)
    inputs = list(config.inputs)
    if not inputs or inputs[0] != "disparity":
        raise InputError(f"--inputs must start with disparity, got {','.join(inputs)!r}")
    parse_measures(",".join(name for name in inputs[1:] if name not in IMAGE_CHANNELS) or "none")
    build_confidence_network(config.architecture, filters=config.filters, fc_filters=config.fc_filters, inputs=config.inputs)
    if calibrate not in ("none", *METHODS):
        raise InputError(f"--calibrate must be none or one of {', '.join(METHODS)}, got {calibrate!r}")
    if calibrate != "none" and label_source != "gt":
        raise InputError("--calibrate needs ground truth (--labels gt); calibrate a wild-trained model with `pseudolabel confidence calibrate --gt`")
    from pseudolabel.threads import apply_threads

    threads = apply_threads(threads).threads
    data = TrainingData([], {})
    sgm_params: list[str] = []
    for index, proxies_path in enumerate(proxies_paths):
        file_gt = (gt_dirs[index] if len(gt_dirs) > 1 else gt_dirs[0]) if gt_dirs else None
        pairs, params, skipped = load_training_pairs(
            proxies_path, label_source, file_gt, gt_scale, keys, exclude, inputs, wild_fraction, positive_set, negative_set, teacher_set
        )
        data.pairs += pairs
        data.skipped += [(proxies_path, key) for key in skipped]
        sgm_params.append(params)
    if not data.pairs:
        raise InputError(f"--gt {', '.join(map(str, gt_dirs))}: none of the selected pairs has ground truth")
    data.summary = {
        **summarise_training_data(data.pairs),
        "proxies": [str(path) for path in proxies_paths],
        "labels": label_source,
        "sgm_params": sgm_params[0] if len(sgm_params) == 1 else sgm_params,
        "gt": [str(path) for path in gt_dirs] if gt_dirs else None,
    }
    if on_loaded is not None:
        on_loaded(data)
    started = time.perf_counter()
    keys = [pair.key for pair in data.pairs]
    start = load_training_state(partial, config, keys) if resume and partial.is_file() else None
    if start is None:
        partial.unlink(missing_ok=True)
    finished = {"epoch": int(start["epoch"]) if start is not None else 0}

    def keep(state: dict[str, Any]) -> None:
        save_training_state(partial, state, config, keys)
        finished["epoch"] = int(state["epoch"])

    try:
        model, history = train_ccnn(data.pairs, config, progress, on_epoch=keep, start=start)
    except KeyboardInterrupt:
        if finished["epoch"] == 0:
            raise Interrupted("nothing (no epoch had finished)", resumes=False) from None
        raise Interrupted(f"epochs 1-{finished['epoch']} of {config.epochs} in {partial}", add=("--resume",), drop=("--overwrite",)) from None
    arguments = {
        **training_config_dict(config),
        "labels": label_source,
        "gt_scale": gt_scale,
        "keys": list(keys),
        "exclude": list(exclude),
        "wild_fraction": wild_fraction,
        "positive": positive_set,
        "negative": negative_set,
        **({"teachers": teacher_set} if label_source in TEACHER_LABELS else {}),
        "threads": threads,
        "seconds": round(time.perf_counter() - started, 1),
    }
    calibration = None
    if calibrate != "none":
        calibration = _fit_on_pairs(model, data.pairs, calibrate)
        arguments["calibrate"] = calibrate
    save_confidence_checkpoint(out, model, arguments, data.summary, history, calibration)
    partial.unlink(missing_ok=True)
    return ConfidenceTraining(Path(out), arguments, data.summary, history, arguments["seconds"])


def _raw_samples(model: ConfidenceNetwork, pairs: Sequence[TrainingPair]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per pair, ``model``'s raw confidence (``float32`` arithmetic, no calibration) and ``target > 0.5`` at
    the pixels whose target is known."""
    scorer = ConfidenceScorer(model, "cpu", precision="float32")
    confidences, correct = [], []
    for pair in pairs:
        known = np.isfinite(pair.targets)
        confidences.append(scorer.raw_confidence_from_inputs(pair.inputs)[known])
        correct.append(pair.targets[known] > 0.5)
    return confidences, correct


def _fit_on_pairs(model: ConfidenceNetwork, pairs: Sequence[TrainingPair], method: str) -> Calibration:
    """A calibration of ``model``'s raw confidence against the targets (1 / 0 / NaN) of ``pairs``."""
    return fit_calibration(method, *_raw_samples(model, pairs), [pair.invalid_share for pair in pairs])


@dataclass
class CalibrationResult:
    """What :func:`calibrate_confidence_model` wrote: the checkpoint ``out``, the fitted ``calibration``, the
    ``pairs`` it was fitted on and the ECE (equal-width bins) of the raw and calibrated confidence there."""

    out: Path
    calibration: Calibration
    pairs: int
    ece_raw: float
    ece_calibrated: float


def calibrate_confidence_model(
    model: PathLike,
    proxies: PathLike | Sequence[PathLike],
    gt: PathLike | Sequence[PathLike],
    method: str = "isotonic",
    out: PathLike | None = None,
    keys: Sequence[str] = (),
    exclude: Sequence[str] = (),
    gt_scale: float | None = None,
) -> CalibrationResult:
    """Fit a calibration of a confidence checkpoint on proxies with ground truth and store it in the checkpoint.

    The network's raw confidence (any calibration already stored is ignored) is compared with
    ``|d - gt| <= 3`` on every pixel with ground truth of the selected pairs of every file.

    Args:
        model: confidence checkpoint (``.pt``).
        proxies: proxies file(s) (read only); pairs the network was *not* trained on give an honest fit.
        gt: ground truth: one folder for every file, or one per file in order.
        method: ``"isotonic"`` or ``"temperature"``.
        out: checkpoint to write (default: replace ``model``, atomically).
        keys, exclude, gt_scale: as for training.

    Returns:
        What was written.
    """
    from pseudolabel.confidence.calibration import ECE_BINS, expected_calibration_error

    if method not in METHODS:
        raise InputError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    network, checkpoint = load_confidence_checkpoint(model)
    proxies_paths, gt_dirs = _paths(proxies), _paths(gt)
    if not gt_dirs:
        raise InputError("calibration needs ground truth: give --gt GT_DIR")
    _check_label_source("gt", gt_dirs, len(proxies_paths))
    pairs: list[TrainingPair] = []
    for index, proxies_path in enumerate(proxies_paths):
        file_gt = gt_dirs[index] if len(gt_dirs) > 1 else gt_dirs[0]
        pairs += load_training_pairs(proxies_path, "gt", file_gt, gt_scale, keys, exclude, network.inputs)[0]
    if not pairs:
        raise InputError(f"--gt {', '.join(map(str, gt_dirs))}: none of the selected pairs has ground truth")
    raw_parts, correct_parts = _raw_samples(network, pairs)  # the network runs once: for the fit and the ECE
    calibration = fit_calibration(method, raw_parts, correct_parts, [pair.invalid_share for pair in pairs])
    raw, correct = np.concatenate(raw_parts), np.concatenate(correct_parts)
    calibrated = np.concatenate([calibration.apply(part, pair.invalid_share) for part, pair in zip(raw_parts, pairs)])
    target = Path(out) if out is not None else Path(model)
    save_confidence_checkpoint(
        target,
        network,
        {**checkpoint.get("training_args", {}), "calibrated_on": [str(path) for path in proxies_paths]},
        checkpoint.get("data_summary", {}),
        checkpoint.get("history", []),
        calibration,
    )
    return CalibrationResult(
        target,
        calibration,
        len(pairs),
        expected_calibration_error(raw, correct, ECE_BINS),
        expected_calibration_error(calibrated, correct, ECE_BINS),
    )
