"""Training a confidence network (torch): the data, the optimisation and the state of an unfinished training.

Training labels come from :mod:`pseudolabel.confidence.targets` (``gt``: ground truth; ``wild``: the
agreement of conventional measures, no ground truth; ``wild-agree`` / ``wild-soft``: the votes of
independent matchers and the wild labels, the soft ones in [0, 1]). The network is fully convolutional, so training
uses random crops of the reflection-padded, normalised disparity: each output pixel of a crop sees
exactly the 9x9 patch it sees at inference, and one crop trains thousands of patches at the cost of one
forward pass.

This module holds :class:`TrainingPair`, :class:`TrainingConfig`, the crop sampler, :func:`masked_bce`,
:func:`train_ccnn` and the progress file of an unfinished training (:func:`save_training_state`,
``OUT.partial.pt``). The checkpoints a training writes are in :mod:`pseudolabel.confidence.checkpoints`;
``pseudolabel confidence train`` on whole proxies files is
:func:`pseudolabel.confidence.from_proxies.train_confidence_from_proxies`.

Importing this module imports torch (the package :mod:`pseudolabel.confidence` does not).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from pseudolabel.confidence.measures import CCNN_INPUTS
from pseudolabel.errors import InputError
from pseudolabel.io import atomic_write_bytes
from pseudolabel.models.ccnn import PADDING, ConfidenceNetwork, build_confidence_network, normalise_disparity
from pseudolabel.models.devices import resolve_device
from pseudolabel.progress import Progress, or_silent


@dataclass
class TrainingPair:
    """One pair's training data.

    Attributes:
        key: the pair's key in the proxies file.
        inputs: ``float32`` (C, H, W) network input channels (:func:`pseudolabel.models.ccnn.build_inputs`;
            channel 0 is the normalised disparity).
        targets: ``float32`` (H, W): 1, 0 (or a soft target in between) or NaN (ignored).
        invalid_share: the share of the pair's pixels that SGM's checks rejected (``1 - mean(valid)``),
            read by an ``isotonic-pair`` calibration; 0 when unknown.
    """

    key: str
    inputs: np.ndarray
    targets: np.ndarray
    invalid_share: float = 0.0

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
    built with ``filters``, ``fc_filters`` and ``inputs`` (default: :data:`pseudolabel.confidence.measures.CCNN_INPUTS`,
    the disparity and the conventional measures; :func:`default_inputs` gives each architecture's default).
    ``standardise_inputs``: train on input channels of mean 0 and standard deviation 1 over the training pixels
    (:func:`input_standardisation`), then fold that map into the network's first convolutions, so the network
    saved reads the raw channels like any other. Off by default: leave one group out (BENCHMARKS.md, "Training
    recipe") it ranks better with ground-truth labels (2.49x -> 2.33x the optimal AUC) but its isotonic-calibrated
    labels at a 1% target error are further off (2.40% -> 2.92% bad-3), and with wild labels it ruins the ranking (2.70x -> 3.87x).
    ``pair_weighting``: how each crop picks its pair: ``"pairs"`` (every pair alike, the default since 2026-12-01:
    2.56x -> 2.49x optimal with ground truth, the isotonic labels at 1% 56.5% kept at 2.79% -> 57.3% at 2.40%) or ``"pixels"``
    (in proportion to its labelled pixels, the only choice before).
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
    inputs: tuple[str, ...] = CCNN_INPUTS
    range_jitter: float = 0.0
    device: str = "cpu"
    architecture: str = "ccnn"
    standardise_inputs: bool = False
    pair_weighting: str = "pairs"
    extra: dict[str, Any] = field(default_factory=dict)


def default_inputs(architecture: str) -> tuple[str, ...]:
    """Input channels of a network of ``architecture`` unless told otherwise: a CCNN reads
    :data:`pseudolabel.confidence.measures.CCNN_INPUTS` (the disparity and the conventional measures; the
    disparity alone cannot tell the pixels SGM filled), an LFN the disparity and the image channels."""
    if architecture == "lfn":
        from pseudolabel.models.lfn import DEFAULT_INPUTS as LFN_INPUTS

        return LFN_INPUTS
    return CCNN_INPUTS


#: Smallest standard deviation :func:`input_standardisation` divides by: a channel that hardly varies on the training
#: pixels is not blown up where it varies more (on real proxies the smallest deviation, of
#: dbl, is 0.03).
STANDARDISATION_FLOOR: float = 0.02
#: Choices of :attr:`TrainingConfig.pair_weighting`.
PAIR_WEIGHTINGS: tuple[str, ...] = ("pairs", "pixels")


def check_pair_weighting(weighting: str) -> None:
    """Raise :class:`~pseudolabel.errors.InputError` unless ``weighting`` is one of :data:`PAIR_WEIGHTINGS`."""
    if weighting not in PAIR_WEIGHTINGS:
        raise InputError(f"pair weighting (--pair-weighting) must be one of {', '.join(PAIR_WEIGHTINGS)}, got {weighting!r}")


def input_standardisation(pairs: Sequence[TrainingPair]) -> tuple[np.ndarray, np.ndarray]:
    """Per input channel, the ``shift`` and ``scale`` that give ``(x - shift) * scale`` mean 0 and standard deviation 1
    over every pixel of ``pairs`` (``scale = 1 / max(std, STANDARDISATION_FLOOR)``). Channel 0, the normalised
    disparity, keeps shift 0 and scale 1, so the range jitter scales it as before.

    Returns:
        ``(shift, scale)``, each ``float64`` (C,).
    """
    channels = pairs[0].inputs.shape[0]
    count = 0
    total = np.zeros(channels)
    squares = np.zeros(channels)
    for pair in pairs:
        flat = pair.inputs.reshape(channels, -1)
        count += flat.shape[1]
        total += flat.sum(axis=1, dtype=np.float64)
        squares += np.square(flat, dtype=np.float64).sum(axis=1)
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(squares / max(count, 1) - mean * mean, 0.0))
    shift, scale = mean, 1.0 / np.maximum(std, STANDARDISATION_FLOOR)
    shift[0], scale[0] = 0.0, 1.0
    return shift, scale


class _CropSampler:
    """Random crops of padded, normalised disparities with their targets (only crops holding labels), each input
    channel mapped by ``(x - shift) * scale`` (none when ``shift`` is ``None``); each crop's pair is drawn by
    ``weighting`` (:attr:`TrainingConfig.pair_weighting`)."""

    def __init__(
        self,
        pairs: Sequence[TrainingPair],
        crop: int,
        rng: np.random.Generator,
        range_jitter: float = 0.0,
        padding: int = PADDING,
        shift: np.ndarray | None = None,
        scale: np.ndarray | None = None,
        weighting: str = "pairs",
    ) -> None:
        check_pair_weighting(weighting)
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
            padded = np.pad(pair.inputs, ((0, 0), (pad, pad), (pad, pad)), mode="reflect").astype(np.float32, copy=False)
            if shift is not None and scale is not None:
                padded -= shift.astype(np.float32)[:, None, None]
                padded *= scale.astype(np.float32)[:, None, None]
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
            weights.append(labelled if weighting == "pixels" else 1)
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
    on the labelled pixels of ``pairs`` (on standardised inputs, folded into the returned network, when
    ``config.standardise_inputs``; the states given to ``on_epoch`` hold copies of the network's weights before the
    folding, and the optimiser's state as ``state_dict`` gives it, shared with the live optimiser: save it at once).

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
    shift = scale = None
    if config.standardise_inputs:
        model.foldable_input_convolutions()  # refuse now, not after the last epoch
        if pairs:
            shift, scale = input_standardisation(pairs)
    sampler = _CropSampler(pairs, config.crop, rng, config.range_jitter, model.padding, shift, scale, config.pair_weighting)
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
                    "model": {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": json.dumps(rng.bit_generator.state),
                    "torch_rng": torch.get_rng_state(),
                }
            )
    model = model.cpu().eval()
    if shift is not None and scale is not None:
        model.fold_input_affine(shift, scale)
    return model, history


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


def training_config_dict(config: TrainingConfig) -> dict[str, Any]:
    """JSON-like view of a :class:`TrainingConfig`."""
    return asdict(config)


# ---------------------------------------------------------------------------------------------
# the state of an unfinished training


#: ``format`` of the progress file of an unfinished training (``OUT.partial.pt``).
PARTIAL_FORMAT = "pseudolabel-confidence-partial/1"


def partial_training_path(out: str | os.PathLike[str]) -> Path:
    """Where :func:`pseudolabel.confidence.from_proxies.train_confidence_from_proxies` keeps the state of an unfinished training: ``OUT.partial.pt``."""
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
