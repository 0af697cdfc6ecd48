"""Training and running CCNN confidence networks (torch).

Training labels come from :mod:`pseudolabel.confidence.targets` (``gt``: ground truth; ``wild``: the
agreement of conventional measures, no ground truth). The network is fully convolutional, so training
uses random crops of the reflection-padded, normalised disparity: each output pixel of a crop sees
exactly the 9x9 patch it sees at inference, and one crop trains thousands of patches at the cost of one
forward pass.

:func:`train_confidence_from_proxies` is ``pseudolabel confidence train``: it loads the pairs of one or
more proxies files (:func:`load_training_pairs`), trains (:func:`train_ccnn`) and writes the checkpoint
(:func:`save_confidence_checkpoint`).

Checkpoint (``torch.save`` dictionary loadable with ``weights_only=True``): ``format``
(``"pseudolabel-confidence/1"``), ``architecture``, ``arch_kwargs``, ``state_dict``,
``training_args``, ``data_summary``, ``history`` (loss per epoch), ``version``, ``created``.

Importing this module imports torch (the rest of :mod:`pseudolabel.confidence` does not). It runs a little
over 500 lines on purpose: the one torch module of the stage keeps the network's training, its checkpoints
and the proxies-file entry point together, so that nothing else has to import torch.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from pseudolabel import __version__
from pseudolabel.confidence.calibration import METHODS, Calibration, fit_calibration
from pseudolabel.confidence.evaluation import parse_measures, require_ground_truth, selected_keys, split_names
from pseudolabel.confidence.images import IMAGE_CHANNELS, pair_gray_images
from pseudolabel.confidence.measures import MEASURES
from pseudolabel.confidence.targets import (
    WILD_FRACTION,
    WILD_NEGATIVE,
    WILD_POSITIVE,
    ground_truth_targets,
    measures_for_wild,
    wild_targets,
)
from pseudolabel.datasets import read_ground_truth
from pseudolabel.errors import InputError
from pseudolabel.interrupts import Interrupted
from pseudolabel.io import atomic_write_bytes
from pseudolabel.models.ccnn import (
    PADDING,
    ConfidenceNetwork,
    ConfidenceScorer,
    build_confidence_network,
    build_inputs,
    normalise_disparity,
)
from pseudolabel.models.devices import resolve_device
from pseudolabel.outputs import check_output_file
from pseudolabel.progress import Progress, or_silent
from pseudolabel.store.proxies import open_proxies

#: ``format`` of a confidence checkpoint.
CHECKPOINT_FORMAT = "pseudolabel-confidence/1"


def shipped_ccnn_path() -> Path:
    """Path of the CCNN shipped with the package (``pseudolabel/models/weights/ccnn.pt``)."""
    import pseudolabel.models as models_package

    return Path(models_package.__file__).resolve().parent / "weights" / "ccnn.pt"


# ---------------------------------------------------------------------------------------------
# training


@dataclass
class TrainingPair:
    """One pair's training data.

    Attributes:
        key: the pair's key in the proxies file.
        inputs: ``float32`` (C, H, W) network input channels (:func:`pseudolabel.models.ccnn.build_inputs`;
            channel 0 is the normalised disparity).
        targets: ``float32`` (H, W): 1, 0 or NaN (ignored).
    """

    key: str
    inputs: np.ndarray
    targets: np.ndarray

    @classmethod
    def from_disparity(cls, key: str, disparity: np.ndarray, targets: np.ndarray, min_disp: float, max_disp: float) -> TrainingPair:
        """A disparity-only pair (the paper's CCNN input): ``disparity`` ``float32`` (H, W) in pixels."""
        return cls(key, normalise_disparity(disparity, min_disp, max_disp)[None], targets)


@dataclass
class TrainingConfig:
    """Hyper-parameters of :func:`train_ccnn` (stored in the checkpoint's ``training_args``).

    ``range_jitter`` ``j``: the normalised disparity channel of each crop is multiplied by
    ``exp(U(-j, j))`` (robustness to the searched range, which sets the normalisation); 0 = off.
    ``architecture``: a name of :data:`pseudolabel.models.ccnn.CONFIDENCE_NETWORKS` (``ccnn``, ``lfn``),
    built with ``filters``, ``fc_filters`` and ``inputs``.
    """

    epochs: int = 12
    steps_per_epoch: int = 40
    batch_size: int = 16
    crop: int = 48
    learning_rate: float = 3e-3  # the same as `confidence train --lr`
    weight_decay: float = 0.0
    seed: int = 0
    filters: int = 64
    fc_filters: int = 100
    inputs: tuple[str, ...] = ("disparity",)
    range_jitter: float = 0.0
    device: str = "cpu"
    architecture: str = "ccnn"
    extra: dict[str, Any] = field(default_factory=dict)


class _CropSampler:
    """Random crops of padded, normalised disparities with their targets (only crops holding labels)."""

    def __init__(self, pairs: Sequence[TrainingPair], crop: int, rng: np.random.Generator, range_jitter: float = 0.0, padding: int = PADDING) -> None:
        self.crop = crop
        self.padding = int(padding)
        self.range_jitter = float(range_jitter)
        self.rng = rng
        self.inputs: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        weights = []
        self.channels = pairs[0].inputs.shape[0] if pairs else 1
        for pair in pairs:
            if pair.inputs.shape[0] != self.channels or pair.inputs.shape[1:] != pair.targets.shape:
                raise InputError(f"pair {pair.key}: inputs {pair.inputs.shape} do not match the others or the targets {pair.targets.shape}")
            pad = self.padding
            padded = np.pad(pair.inputs, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
            targets = pair.targets
            # Pad small images so that one crop fits.
            extra_rows = max(0, crop - targets.shape[0])
            extra_cols = max(0, crop - targets.shape[1])
            if extra_rows or extra_cols:
                padded = np.pad(padded, ((0, 0), (0, extra_rows), (0, extra_cols)), mode="edge")
                targets = np.pad(targets, ((0, extra_rows), (0, extra_cols)), constant_values=np.nan)
            labelled = int(np.isfinite(targets).sum())
            if labelled == 0:
                continue
            self.inputs.append(padded)
            self.targets.append(targets)
            weights.append(labelled)
        if not self.inputs:
            raise InputError("no labelled pixel in the training data; check --gt or the wild label settings")
        self.probabilities = np.asarray(weights, dtype=np.float64) / np.sum(weights)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, crop + 2p, crop + 2p) inputs (p: the network's padding) and (B, 1, crop, crop) targets (NaN = ignored)."""
        side = self.crop + 2 * self.padding
        inputs = np.empty((size, self.channels, side, side), dtype=np.float32)
        targets = np.empty((size, 1, self.crop, self.crop), dtype=np.float32)
        chosen = self.rng.choice(len(self.inputs), size=size, p=self.probabilities)
        for index, image in enumerate(chosen):
            target = self.targets[image]
            top = int(self.rng.integers(0, target.shape[0] - self.crop + 1))
            left = int(self.rng.integers(0, target.shape[1] - self.crop + 1))
            inputs[index] = self.inputs[image][:, top : top + side, left : left + side]
            targets[index, 0] = target[top : top + self.crop, left : left + self.crop]
        if self.range_jitter > 0:
            # Augmentation: as if the pair had been matched with a range (1 / s) times as wide.
            scales = np.exp(self.rng.uniform(-self.range_jitter, self.range_jitter, size=size)).astype(np.float32)
            inputs[:, 0] *= scales[:, None, None]
        return torch.from_numpy(inputs), torch.from_numpy(targets)


def masked_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the pixels whose target is not NaN (0 when there is none)."""
    known = torch.isfinite(targets)
    if not bool(known.any()):
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[known], targets[known])


def train_ccnn(
    pairs: Sequence[TrainingPair],
    config: TrainingConfig,
    progress: Progress | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    start: Mapping[str, Any] | None = None,
) -> tuple[ConfidenceNetwork, list[float]]:
    """Train a confidence network (``config.architecture``, a CCNN by default) with binary cross-entropy
    on the labelled pixels of ``pairs``.

    Args:
        pairs: training data (targets 1 / 0 / NaN).
        config: hyper-parameters; ``seed`` fixes the initialisation and the crops.
        progress: one phase ``"epoch e/n"`` of ``steps_per_epoch`` steps per epoch; each step's status is
            the mean loss of the epoch so far (``"loss 0.1234"``).
        on_epoch: called after every epoch with the training state (``epoch`` finished, ``history``,
            ``model``, ``optimizer``, ``scheduler``, ``rng``): what :func:`save_training_state` stores.
        start: such a state to continue from (the run then gives the same network as an uninterrupted one).

    Returns:
        The trained network (on the CPU, eval mode) and the mean loss of every epoch.
    """
    progress = or_silent(progress)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = resolve_device(config.device)
    model = build_confidence_network(config.architecture, filters=config.filters, fc_filters=config.fc_filters, inputs=config.inputs)
    sampler = _CropSampler(pairs, config.crop, rng, config.range_jitter, model.padding)
    model = model.to(device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    total_steps = config.epochs * config.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1), eta_min=config.learning_rate * 0.05)
    history: list[float] = []
    first_epoch = 0
    if start is not None:
        model.load_state_dict(start["model"])
        optimizer.load_state_dict(start["optimizer"])
        scheduler.load_state_dict(start["scheduler"])
        rng.bit_generator.state = json.loads(start["rng"])
        torch.set_rng_state(start["torch_rng"])
        history = [float(value) for value in start["history"]]
        first_epoch = int(start["epoch"])
    for epoch in range(first_epoch, config.epochs):
        losses: list[float] = []
        progress.start(f"epoch {epoch + 1}/{config.epochs}", config.steps_per_epoch)
        try:
            for _ in range(config.steps_per_epoch):
                inputs, targets = sampler.batch(config.batch_size)
                inputs, targets = inputs.to(device), targets.to(device)
                loss = masked_bce(model(inputs), targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(float(loss.detach()))
                progress.advance(1, f"loss {np.mean(losses):.4f}")
        finally:
            progress.finish()
        history.append(float(np.mean(losses)) if losses else float("nan"))
        if on_epoch is not None:
            on_epoch(
                {
                    "epoch": epoch + 1,
                    "history": list(history),
                    "model": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": json.dumps(rng.bit_generator.state),
                    "torch_rng": torch.get_rng_state(),
                }
            )
    return model.cpu().eval(), history


def summarise_training_data(pairs: Sequence[TrainingPair]) -> dict[str, Any]:
    """Counts stored in the checkpoint: pairs, keys, labelled pixels and the positive share."""
    labelled = [np.isfinite(pair.targets) for pair in pairs]
    positives = [int(np.sum(pair.targets[mask] > 0.5)) for pair, mask in zip(pairs, labelled)]
    total = int(sum(int(mask.sum()) for mask in labelled))
    return {
        "pairs": len(pairs),
        "keys": [pair.key for pair in pairs],
        "pixels": int(sum(pair.targets.size for pair in pairs)),
        "labelled_pixels": total,
        "positive_fraction": float(sum(positives) / total) if total else float("nan"),
    }


# ---------------------------------------------------------------------------------------------
# checkpoints


def save_confidence_checkpoint(
    path: str | os.PathLike[str],
    model: ConfidenceNetwork,
    training_args: Mapping[str, Any],
    data_summary: Mapping[str, Any],
    history: Sequence[float] = (),
    calibration: Calibration | None = None,
) -> None:
    """Write a self-contained confidence checkpoint atomically (an existing file is replaced only when complete).

    ``training_args`` and ``data_summary`` are JSON-like dictionaries; ``history`` the mean loss of every
    epoch; ``calibration`` (stored as ``calibration``, :meth:`Calibration.to_dict`; None when absent) is
    applied by the scorer of :func:`make_scorer`.
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "architecture": model.architecture,
        "arch_kwargs": model.config(),
        "state_dict": {name: tensor.detach().cpu().float() for name, tensor in model.state_dict().items()},
        "training_args": dict(training_args),
        "data_summary": dict(data_summary),
        "history": [float(value) for value in history],
        "calibration": calibration.to_dict() if calibration is not None else None,
        "version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


#: ``format`` of the progress file of an unfinished training (``OUT.partial.pt``).
PARTIAL_FORMAT = "pseudolabel-confidence-partial/1"


def partial_training_path(out: str | os.PathLike[str]) -> Path:
    """Where :func:`train_confidence_from_proxies` keeps the state of an unfinished training: ``OUT.partial.pt``."""
    return Path(out).with_suffix(".partial.pt")


def _config_identity(config: TrainingConfig) -> str:
    """The settings a saved state must share with the run that continues it (all but the device)."""
    settings = training_config_dict(config)
    settings.pop("device", None)
    return json.dumps(settings, sort_keys=True)


def save_training_state(path: str | os.PathLike[str], state: Mapping[str, Any], config: TrainingConfig, data_keys: Sequence[str]) -> None:
    """Write the state of :func:`train_ccnn` after an epoch (atomically), with the settings it belongs to."""
    payload = {"format": PARTIAL_FORMAT, **state, "config": _config_identity(config), "keys": list(data_keys)}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_training_state(path: str | os.PathLike[str], config: TrainingConfig, data_keys: Sequence[str]) -> dict[str, Any]:
    """The state saved by :func:`save_training_state`, checked against the settings and pairs of this run.

    Raises:
        InputError: unreadable, or saved by a run with other settings or pairs.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InputError(f"{path}: cannot be read ({type(error).__name__}); add --overwrite to start over") from None
    if not isinstance(payload, dict) or payload.get("format") != PARTIAL_FORMAT:
        raise InputError(f"{path}: not the progress file of `pseudolabel confidence train`; remove it or add --overwrite to start over")
    if payload["config"] != _config_identity(config) or list(payload["keys"]) != list(data_keys):
        raise InputError(
            f"{path}: was saved by a training with other settings or pairs; rerun with those options to continue it, or add --overwrite to start over"
        )
    return dict(payload)


def load_confidence_checkpoint(path: str | os.PathLike[str]) -> tuple[ConfidenceNetwork, dict[str, Any]]:
    """Rebuild a confidence network from a checkpoint.

    Returns:
        ``(model, checkpoint)`` with the model in eval mode on the CPU and the checkpoint dictionary.

    Raises:
        InputError: missing or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such confidence model; train one with `pseudolabel confidence train`")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InputError(f"{path}: not a readable confidence checkpoint ({type(error).__name__}); retrain it") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a pseudolabel confidence checkpoint (format {CHECKPOINT_FORMAT!r} expected)")
    model = build_confidence_network(checkpoint["architecture"], **checkpoint["arch_kwargs"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint


def file_digest(path: str | os.PathLike[str]) -> str:
    """First 16 hex digits of the file's SHA-256 (identifies a model in HDF5 attributes)."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return digest[:16]


def make_scorer(
    path: str | os.PathLike[str], device: str = "auto", precision: str = "auto", threads: int | None = None
) -> tuple[ConfidenceScorer, dict[str, Any]]:
    """Load a checkpoint into a :class:`ConfidenceScorer` (``threads``: torch's CPU threads; ``None``:
    chosen from the usable cores and the machine's load, :mod:`pseudolabel.threads`) that applies the
    checkpoint's calibration (:func:`checkpoint_calibration`), if it has one."""
    from pseudolabel.threads import apply_threads

    apply_threads(threads)
    model, checkpoint = load_confidence_checkpoint(path)
    calibration = checkpoint_calibration(checkpoint)
    scorer = ConfidenceScorer(model, resolve_device(device), precision=precision, calibration=calibration.apply if calibration else None)
    return scorer, checkpoint


def checkpoint_calibration(checkpoint: Mapping[str, Any]) -> Calibration | None:
    """The calibration map stored in a checkpoint dictionary (None when it has none)."""
    stored = checkpoint.get("calibration")
    return Calibration.from_dict(stored) if stored else None


def training_config_dict(config: TrainingConfig) -> dict[str, Any]:
    """JSON-like view of a :class:`TrainingConfig`."""
    return asdict(config)


# ---------------------------------------------------------------------------------------------
# from proxies files (``pseudolabel confidence train``)

PathLike = str | os.PathLike[str]


@dataclass
class TrainingData:
    """The training data of :func:`train_confidence_from_proxies`, once loaded.

    Attributes:
        pairs: every labelled pair of every file, in file then key order.
        summary: :func:`summarise_training_data` plus ``proxies`` (file names), ``labels`` (``gt`` or
            ``wild``), ``sgm_params`` (JSON text of each file's SGM parameters; one text for one file)
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
) -> tuple[list[TrainingPair], str, list[str]]:
    """The training pairs of one proxies file.

    Args:
        proxies_path: proxies file (read only).
        labels: ``"gt"`` (:func:`ground_truth_targets`, needs ``gt_dir``) or ``"wild"`` (:func:`wild_targets`).
        gt_dir, gt_scale: ground truth of the pairs (:func:`pseudolabel.datasets.ground_truth_lookup`).
        keys, exclude: globs choosing pairs.
        inputs: network input channels (:func:`pseudolabel.models.ccnn.build_inputs`).
        wild_fraction, positive, negative: settings of the wild labels.

    Returns:
        ``(pairs, sgm_params, skipped)``: the labelled pairs, the file's SGM parameters (JSON text) and the
        selected keys that have no ground truth (``gt`` labels only).
    """
    if labels not in ("gt", "wild") or (labels == "gt") != (gt_dir is not None):
        raise InputError(f"labels {labels!r} with gt_dir {gt_dir}: gt labels need a ground-truth folder, wild labels take none")
    chosen = selected_keys(proxies_path, keys, exclude)
    lookup = require_ground_truth(gt_dir, chosen, gt_scale) if gt_dir is not None else {}
    wild_names = [*positive, *negative] if labels == "wild" else []
    measure_inputs = [name for name in inputs[1:] if name not in IMAGE_CHANNELS]
    reads_images = any(name in IMAGE_CHANNELS for name in inputs)
    needed = sorted({need for name in [*measure_inputs, *wild_names] for need in MEASURES[name].needs} | {"disparity"})
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
            measures: dict[str, np.ndarray] = {}
            if labels == "gt":
                gt_path, scale = lookup[key]
                targets = ground_truth_targets(disparity, read_ground_truth(gt_path, scale, disparity.shape, key))
            else:
                measures = measures_for_wild(features, params, positive, negative)
                targets = wild_targets(measures, wild_fraction, positive, negative)
            pairs.append(TrainingPair(key, build_inputs(features, params, inputs, measures), targets))
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
    if labels == "wild" and gt_dirs:
        raise InputError("--labels wild uses no ground truth; drop --gt")
    if labels not in ("gt", "wild"):
        raise InputError(f"--labels must be gt or wild, got {labels!r}")
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
            ground truth) or None (``gt`` when ``gt`` is given).
        keys, exclude: globs choosing the pairs of every file.
        gt_scale: divisor of stored PNG/PGM ground truth.
        config: hyper-parameters (``inputs`` must start with ``"disparity"``); default :class:`TrainingConfig`.
        wild_fraction, positive, negative: wild labels: share ``t`` and the two sets of measures (names or
            comma-separated text).
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
    positive_set, negative_set = _names(positive), _names(negative)
    parse_measures(",".join(positive_set + negative_set))
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
            proxies_path, label_source, file_gt, gt_scale, keys, exclude, inputs, wild_fraction, positive_set, negative_set
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


def _fit_on_pairs(model: ConfidenceNetwork, pairs: Sequence[TrainingPair], method: str) -> Calibration:
    """A calibration of ``model``'s raw confidence against the targets (1 / 0 / NaN) of ``pairs``."""
    scorer = ConfidenceScorer(model, "cpu", precision="float32")
    confidences, correct = [], []
    for pair in pairs:
        known = np.isfinite(pair.targets)
        confidence = 1.0 / (1.0 + np.exp(-np.clip(scorer.logits_from_inputs(pair.inputs), -60, 60)))
        confidences.append(confidence[known])
        correct.append(pair.targets[known] > 0.5)
    return fit_calibration(method, np.concatenate(confidences), np.concatenate(correct))


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
    calibration = _fit_on_pairs(network, pairs, method)
    scorer = ConfidenceScorer(network, "cpu", precision="float32")
    raw_parts, correct_parts = [], []
    for pair in pairs:
        known = np.isfinite(pair.targets)
        raw_parts.append(1.0 / (1.0 + np.exp(-np.clip(scorer.logits_from_inputs(pair.inputs)[known], -60, 60))))
        correct_parts.append(pair.targets[known] > 0.5)
    raw, correct = np.concatenate(raw_parts), np.concatenate(correct_parts)
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
        expected_calibration_error(calibration.apply(raw), correct, ECE_BINS),
    )
