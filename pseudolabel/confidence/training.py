"""Training and running CCNN confidence networks (torch).

Two sources of training labels for the proxy disparity ``d`` of each pair:

* ``gt``: 1 where ``|d - gt| <= 3`` px, 0 where it is larger, ignored where the ground truth is unknown;
* ``wild`` (Tosi et al., BMVC 2017, "Learning confidence measures in the wild"): no ground truth. A
  pixel is *positive* when, for every measure of a positive set, it is in that image's top fraction
  ``t`` (continuous measures) or passes the test (measures with a pass threshold: LRC, uniqueness,
  DBL, MED); *negative* when, for every measure of a negative set, it is in the bottom fraction ``t``
  or fails the test; ignored otherwise.

The network is fully convolutional, so training uses random crops of the reflection-padded,
normalised disparity: each output pixel of a crop sees exactly the 9x9 patch it sees at inference,
and one crop trains thousands of patches at the cost of one forward pass.

Checkpoint (``torch.save`` dictionary loadable with ``weights_only=True``): ``format``
(``"pseudolabel-confidence/1"``), ``architecture``, ``arch_kwargs``, ``state_dict``,
``training_args``, ``data_summary``, ``history`` (loss per epoch), ``version``, ``created``.
"""

from __future__ import annotations

import hashlib
import io
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
from pseudolabel.confidence.measures import MEASURES, compute_measure
from pseudolabel.errors import InputError
from pseudolabel.io import atomic_write_bytes
from pseudolabel.models.ccnn import (
    CCNN,
    PADDING,
    ConfidenceScorer,
    build_confidence_network,
    normalise_disparity,
)
from pseudolabel.models.devices import resolve_device

CHECKPOINT_FORMAT = "pseudolabel-confidence/1"
#: A proxy disparity is correct when it is within this many pixels of the ground truth.
GT_THRESHOLD: float = 3.0
#: Defaults of the wild labels (Tosi et al., BMVC 2017).
WILD_FRACTION: float = 0.3
WILD_POSITIVE: tuple[str, ...] = ("lrc", "uniqueness", "dbl", "apkr", "med", "wmn")
WILD_NEGATIVE: tuple[str, ...] = ("lrc", "uniqueness", "apkr", "wmn")


def shipped_ccnn_path() -> Path:
    """Path of the CCNN shipped with the package (``pseudolabel/models/weights/ccnn.pt``)."""
    import pseudolabel.models as models_package

    return Path(models_package.__file__).resolve().parent / "weights" / "ccnn.pt"


# ---------------------------------------------------------------------------------------------
# labels


def ground_truth_targets(disparity: np.ndarray, ground_truth: np.ndarray, threshold: float = GT_THRESHOLD) -> np.ndarray:
    """Training targets from ground truth.

    Args:
        disparity: ``float32`` (H, W) proxy disparity, pixels.
        ground_truth: ``float32`` (H, W), pixels, NaN (or ``<= 0``) where unknown.

    Returns:
        ``float32`` (H, W): 1 (correct, ``|d - gt| <= threshold``), 0 (wrong), NaN (unknown).
    """
    if disparity.shape != ground_truth.shape:
        raise InputError(f"ground truth of shape {ground_truth.shape} does not match the proxy disparity {disparity.shape}")
    known = np.isfinite(ground_truth) & (ground_truth > 0)
    with np.errstate(invalid="ignore"):
        correct = np.abs(disparity - ground_truth) <= threshold
    return np.where(known, correct.astype(np.float32), np.nan).astype(np.float32)


def wild_targets(
    measures: Mapping[str, np.ndarray],
    fraction: float = WILD_FRACTION,
    positive: Sequence[str] = WILD_POSITIVE,
    negative: Sequence[str] = WILD_NEGATIVE,
) -> np.ndarray:
    """Training targets from the agreement of conventional measures (Tosi et al., BMVC 2017).

    Args:
        measures: ``{name: float32 (H, W) confidence}`` holding every name of both sets.
        fraction: ``t`` in (0, 1): top / bottom share of each continuous measure (per image).
        positive, negative: measure names of the positive and negative sets.

    Returns:
        ``float32`` (H, W): 1 (positive), 0 (negative), NaN (neither).
    """
    if not 0.0 < fraction < 1.0:
        raise InputError(f"--wild-fraction must be in (0, 1), got {fraction}")
    shape = next(iter(measures.values())).shape
    is_positive = np.ones(shape, dtype=bool)
    is_negative = np.ones(shape, dtype=bool)
    for names, target, top in ((positive, is_positive, True), (negative, is_negative, False)):
        for name in names:
            if name not in MEASURES:
                raise InputError(f"unknown measure {name!r} in the wild label sets; choose from {', '.join(MEASURES)}")
            values = measures[name]
            threshold = MEASURES[name].pass_threshold
            if threshold is not None:
                target &= (values >= threshold) if top else (values < threshold)
            elif top:
                target &= values >= np.quantile(values, 1.0 - fraction)
            else:
                target &= values <= np.quantile(values, fraction)
    targets = np.full(shape, np.nan, dtype=np.float32)
    targets[is_negative] = 0.0
    targets[is_positive] = 1.0
    return targets


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
    """

    epochs: int = 12
    steps_per_epoch: int = 40
    batch_size: int = 16
    crop: int = 48
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    filters: int = 64
    fc_filters: int = 100
    inputs: tuple[str, ...] = ("disparity",)
    range_jitter: float = 0.0
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)


class _CropSampler:
    """Random crops of padded, normalised disparities with their targets (only crops holding labels)."""

    def __init__(self, pairs: Sequence[TrainingPair], crop: int, rng: np.random.Generator, range_jitter: float = 0.0) -> None:
        self.crop = crop
        self.range_jitter = float(range_jitter)
        self.rng = rng
        self.inputs: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        weights = []
        self.channels = pairs[0].inputs.shape[0] if pairs else 1
        for pair in pairs:
            if pair.inputs.shape[0] != self.channels or pair.inputs.shape[1:] != pair.targets.shape:
                raise InputError(f"pair {pair.key}: inputs {pair.inputs.shape} do not match the others or the targets {pair.targets.shape}")
            padded = np.pad(pair.inputs, ((0, 0), (PADDING, PADDING), (PADDING, PADDING)), mode="reflect")
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
        """(B, C, crop + 8, crop + 8) inputs and (B, 1, crop, crop) targets (NaN = ignored)."""
        inputs = np.empty((size, self.channels, self.crop + 2 * PADDING, self.crop + 2 * PADDING), dtype=np.float32)
        targets = np.empty((size, 1, self.crop, self.crop), dtype=np.float32)
        chosen = self.rng.choice(len(self.inputs), size=size, p=self.probabilities)
        for index, image in enumerate(chosen):
            target = self.targets[image]
            top = int(self.rng.integers(0, target.shape[0] - self.crop + 1))
            left = int(self.rng.integers(0, target.shape[1] - self.crop + 1))
            inputs[index] = self.inputs[image][:, top : top + self.crop + 2 * PADDING, left : left + self.crop + 2 * PADDING]
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


ProgressCallback = Callable[[int, int, float], None]


def train_ccnn(
    pairs: Sequence[TrainingPair],
    config: TrainingConfig,
    on_step: ProgressCallback | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[CCNN, list[float]]:
    """Train a CCNN with binary cross-entropy on the labelled pixels of ``pairs``.

    Args:
        pairs: training data (targets 1 / 0 / NaN).
        config: hyper-parameters; ``seed`` fixes the initialisation and the crops.
        on_step: called after each step with ``(epoch, step, loss)``.
        on_epoch: called after each epoch with ``(epoch, mean loss)``.

    Returns:
        The trained network (on the CPU, eval mode) and the mean loss of every epoch.
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = resolve_device(config.device)
    sampler = _CropSampler(pairs, config.crop, rng, config.range_jitter)
    model = CCNN(config.filters, config.fc_filters, config.inputs).to(device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    total_steps = config.epochs * config.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1), eta_min=config.learning_rate * 0.05)
    history: list[float] = []
    for epoch in range(config.epochs):
        losses = []
        for step in range(config.steps_per_epoch):
            inputs, targets = sampler.batch(config.batch_size)
            inputs, targets = inputs.to(device), targets.to(device)
            loss = masked_bce(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(epoch, step, losses[-1])
        history.append(float(np.mean(losses)) if losses else float("nan"))
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
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


def save_checkpoint(
    path: str | Path,
    model: CCNN,
    training_args: Mapping[str, Any],
    data_summary: Mapping[str, Any],
    history: Sequence[float] = (),
) -> None:
    """Write a self-contained checkpoint atomically (an existing file is replaced only when complete)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "architecture": model.architecture,
        "arch_kwargs": model.config(),
        "state_dict": {name: tensor.detach().cpu().float() for name, tensor in model.state_dict().items()},
        "training_args": dict(training_args),
        "data_summary": dict(data_summary),
        "history": [float(value) for value in history],
        "version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> tuple[CCNN, dict[str, Any]]:
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


def file_digest(path: str | Path) -> str:
    """First 16 hex digits of the file's SHA-256 (identifies a model in HDF5 attributes)."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return digest[:16]


def make_scorer(
    path: str | Path, device: str = "auto", precision: str = "auto", threads: int | None = None
) -> tuple[ConfidenceScorer, dict[str, Any]]:
    """Load a checkpoint into a :class:`ConfidenceScorer` (``threads`` sets torch's CPU threads)."""
    if threads is not None and threads > 0:
        torch.set_num_threads(threads)
    model, checkpoint = load_checkpoint(path)
    return ConfidenceScorer(model, resolve_device(device), precision=precision), checkpoint


def training_config_dict(config: TrainingConfig) -> dict[str, Any]:
    """JSON-like view of a :class:`TrainingConfig`."""
    return asdict(config)


def timed(function: Callable[[], Any]) -> tuple[Any, float]:
    """``(result, seconds)`` of one call (perf_counter)."""
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def measures_for_wild(features: Mapping[str, np.ndarray], params: Any, positive: Sequence[str], negative: Sequence[str]) -> dict[str, np.ndarray]:
    """Every measure of the two wild sets, computed from the pair's stored features."""
    names = list(dict.fromkeys([*positive, *negative]))
    return {name: compute_measure(name, features, params) for name in names}
