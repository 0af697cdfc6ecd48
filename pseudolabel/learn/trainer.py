"""Generic trainer for stereo networks: supervised training here, adaptation in ``pseudolabel adapt``.

:class:`Trainer` runs ``steps`` optimisation steps of a network (plus optional extra modules, e.g. a
learnable tau) on an *indexed* dataset with a caller-supplied loss, and takes care of:

* device (``auto``/``cpu``/``cuda``), mixed precision (``torch.autocast``: float16 + ``GradScaler`` on
  CUDA, bfloat16 on CPUs that have it natively);
* distributed data parallel when launched by ``torchrun`` (``RANK``/``WORLD_SIZE`` in the
  environment; ``gloo`` on CPU, ``nccl`` on CUDA): every rank takes its slice of the same global
  batch, so N processes with per-rank batch B/N follow the same trajectory as one process with batch B;
* a fixed seed and exact resumption: sample ``i`` of the run is ``dataset[i]`` (global step ``s`` uses
  indices ``s*B .. s*B+B-1``), so a resumed run sees exactly the samples it would have seen;
* a progress line with loss and throughput, a JSON-lines metrics log, a checkpoint every N steps,
  ``resume``, and a checkpoint on Ctrl-C (SIGINT) before :class:`KeyboardInterrupt` propagates.

Dataset protocol: any ``torch.utils.data.Dataset`` whose ``__getitem__(i)`` accepts every
non-negative integer (wrap around or generate on the fly) and returns a dict of tensors. The default
forward call reads ``batch["left"]`` and ``batch["right"]`` ((B, 3, H, W) float in ``[0, 1]``).

Also here: :class:`SyntheticStereoDataset` (pairs rendered on the fly by :mod:`pseudolabel.synth`),
:class:`StereoPairDataset` (pairs on disk with ground truth, from :func:`pseudolabel.datasets.discover_pairs`),
the photometric augmentation, random crops, and :func:`multiscale_l1_loss`.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pseudolabel import __version__
from pseudolabel.errors import InputError
from pseudolabel.learn.checkpoint import load_checkpoint, save_checkpoint
from pseudolabel.learn.distributed import (
    DistributedContext,
    init_distributed,
    threading_is_main,
)
from pseudolabel.learn.precision import autocast_dtype, precision_name
from pseudolabel.learn.samples import Batch, StepBatchSampler
from pseudolabel.models import devices
from pseudolabel.models.registry import StereoNetwork, StereoOutput

LossFunction = Callable[[StereoOutput, Batch], tuple[torch.Tensor, dict[str, float]]]
ForwardFunction = Callable[[nn.Module, Batch], StereoOutput]


# ----------------------------------------------------------------------------------------------
# Samples: crops, augmentation, datasets
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------


def multiscale_l1_loss(
    output: StereoOutput, batch: Batch, weights: Sequence[float] | None = None, max_disparity: float | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Supervised multi-scale L1: ``sum_k w_k mean_valid |d_k - d_gt|`` over pixels with ground truth.

    Args:
        output: network output; ``multiscale`` entries are (B, 1, H, W) in input pixels, finest first.
        batch: ``disparity`` (B, 1, H, W) ground truth in pixels and ``valid`` (B, 1, H, W) bool.
        weights: per level, finest first; default ``0.5 ** k`` (the finest weighs 1).
        max_disparity: ignore ground truth at or above this (pixels), if given.

    Returns:
        (scalar loss, logs: ``loss``, ``epe`` of the finest output, ``bad3`` percent, ``valid`` fraction).
        Under DDP the normaliser is the mean valid count over ranks, so that the averaged gradients
        equal those of one process on the global batch (logs are then this rank's share).
    """
    target = batch["disparity"]
    valid = batch["valid"].bool()
    if max_disparity is not None:
        valid = valid & (target < max_disparity)
    count = valid.sum().clamp(min=1).float()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        # DDP averages gradients over ranks: normalise by the mean valid count over ranks, so that the
        # result equals one process's loss on the whole global batch.
        global_count = valid.sum().float().detach().clone()
        dist.all_reduce(global_count)
        count = (global_count / dist.get_world_size()).clamp(min=1)
    levels = output.multiscale
    if weights is None:
        weights = [0.5**k for k in range(len(levels))]
    total = target.new_zeros(())
    for weight, estimate in zip(weights, levels):
        total = total + weight * ((estimate.float() - target).abs() * valid).sum() / count
    with torch.no_grad():
        error = (levels[0].float() - target).abs()
        epe = float((error * valid).sum() / count)
        bad3 = float(100.0 * ((error > 3.0) & valid).sum() / count)
    return total, {"loss": float(total.detach()), "epe": epe, "bad3": bad3, "valid": float(valid.float().mean())}


# ----------------------------------------------------------------------------------------------
# Distributed helpers
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------


@dataclass
class TrainerConfig:
    """Settings of a :class:`Trainer` run.

    Attributes:
        out: final checkpoint path. Progress checkpoints go to :attr:`progress_path`
            (``OUT`` with suffix ``.partial.pt``), the metrics log to :attr:`log_path` (``.jsonl``).
        steps: total optimisation steps (a resumed run continues up to it).
        batch_size: *global* batch (split evenly over the processes).
        learning_rate: peak Adam learning rate.
        schedule: ``cosine`` (to 5% of the peak), ``step`` (x0.5 at 60% and 80% of the steps) or ``constant``.
        warmup_steps: linear warm-up steps.
        weight_decay: Adam(W) weight decay.
        grad_clip: gradient norm clip (``None``/0 = off).
        device: ``auto``, ``cpu`` or ``cuda``.
        amp: mixed precision (:func:`autocast_dtype`): float16 autocast with gradient scaling on CUDA,
            bfloat16 autocast on a CPU that runs bfloat16 natively (AVX512-BF16 or AMX: about 1.7x
            faster per step), float32 on other CPUs. Parameters and optimiser state stay float32.
        workers: data-loader worker processes per rank.
        seed: seed of the data order, augmentation and torch generator.
        checkpoint_every: save a progress checkpoint every N steps (0 = only at the end / on Ctrl-C).
        log_every: write a metrics line every N steps.
        resume: continue from the progress checkpoint (or from ``out``) when there is one.
        threads: torch CPU threads (``None`` = torch's default).
        progress: show a progress line on stderr.
        time_limit_s: stop after this many seconds of training (the final checkpoint records the step
            reached; the schedule still assumes ``steps``). ``None`` = no limit.
    """

    out: Path
    steps: int
    batch_size: int = 4
    learning_rate: float = 1e-4
    schedule: str = "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float | None = 10.0
    device: str = "auto"
    amp: bool = True
    workers: int = 0
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    resume: bool = False
    threads: int | None = None
    progress: bool = True
    time_limit_s: float | None = None

    @property
    def progress_path(self) -> Path:
        """Where intermediate checkpoints go (``OUT.partial.pt``)."""
        return Path(self.out).with_suffix(".partial.pt")

    @property
    def log_path(self) -> Path:
        """The JSON-lines metrics log (``OUT.jsonl``)."""
        return Path(self.out).with_suffix(".jsonl")


@dataclass
class TrainResult:
    """Outcome of :meth:`Trainer.fit`: final step, wall time in seconds, last logged values, checkpoint path."""

    step: int
    wall_seconds: float
    last_logs: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None


class _ParameterHolder(nn.Module):
    """Wraps a bare ``nn.Parameter`` so that it has a state dict."""

    def __init__(self, parameter: nn.Parameter) -> None:
        super().__init__()
        self.value = parameter


def lr_factor(step: int, total_steps: int, schedule: str, warmup_steps: int) -> float:
    """Learning-rate multiplier at ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(max(step - warmup_steps, 0) / max(total_steps - warmup_steps, 1), 1.0)
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return 1.0 if progress < 0.6 else (0.5 if progress < 0.8 else 0.25)
    if schedule == "cosine":
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise InputError(f"--schedule {schedule!r}: use cosine, step or constant")


def _json_safe(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


class ProgressLine:
    """A one-line progress display on stderr (rewritten in place on a terminal, every ``every`` steps otherwise)."""

    def __init__(self, total: int, enabled: bool, every: int = 10) -> None:
        self.total = total
        self.enabled = enabled
        self.every = max(every, 1)
        self.tty = sys.stderr.isatty()

    def update(self, step: int, logs: Mapping[str, float], pairs_per_second: float, eta_seconds: float) -> None:
        """Show step ``step`` of ``total`` with the loss, throughput and estimated time left."""
        if not self.enabled or (not self.tty and step % self.every and step != self.total):
            return
        width = 24
        filled = int(width * step / max(self.total, 1))
        text = (
            f"[{'#' * filled}{'.' * (width - filled)}] {step}/{self.total} loss {logs.get('loss', float('nan')):.4f} "
            f"{pairs_per_second:.2f} pairs/s eta {int(eta_seconds // 60)}m{int(eta_seconds % 60):02d}s"
        )
        if self.tty:
            sys.stderr.write("\r" + text + " " * 4)
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        """End the line on a terminal."""
        if self.enabled and self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


class Trainer:
    """Optimise a stereo network (and optional extra modules) with a given loss; see the module docstring.

    Args:
        model: the network (its weights are trained in place).
        arch: registry name of the network and ``arch_kwargs`` its constructor arguments (stored in checkpoints).
        dataset: indexed dataset following the dataset protocol of this module.
        loss_fn: ``loss_fn(output, batch) -> (scalar loss, {name: float})``.
        config: :class:`TrainerConfig`.
        extra_modules: ``{name: module or parameter}`` trained with the network and saved/restored
            in checkpoints under ``extra_modules`` (e.g. ``{"tau": learnable_tau}``).
        extra_state: dictionary, or a function returning one at save time, stored as ``extra_state``.
        training_args: the command's arguments, stored as ``training_args``.
        forward_fn: ``forward_fn(model, batch) -> StereoOutput``; default
            ``model(batch["left"], batch["right"])``. Call the model once per step (DDP).
        extra_lr_scale: ``{name: factor}``: the parameters of extra module ``name`` get their own
            optimiser group with ``factor`` times the learning rate (and no weight decay), e.g.
            ``{"tau": 30.0}`` for a learnable threshold; the other extras share the network's group.
        init_from: checkpoint dictionary whose weights initialise the model (fine-tuning); its
            optimiser state is not used.
    """

    def __init__(
        self,
        model: StereoNetwork,
        arch: str,
        arch_kwargs: Mapping[str, Any],
        dataset: Dataset,
        loss_fn: LossFunction,
        config: TrainerConfig,
        extra_modules: Mapping[str, nn.Module | nn.Parameter] | None = None,
        extra_state: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
        training_args: Mapping[str, Any] | None = None,
        forward_fn: ForwardFunction | None = None,
        extra_lr_scale: Mapping[str, float] | None = None,
    ) -> None:
        self.model = model
        self.arch = arch
        self.arch_kwargs = dict(arch_kwargs)
        self.dataset = dataset
        self.loss_fn = loss_fn
        self.config = config
        self.extras = nn.ModuleDict(
            {name: (_ParameterHolder(item) if isinstance(item, nn.Parameter) else item) for name, item in (extra_modules or {}).items()}
        )
        self.extra_state = extra_state
        self.training_args = dict(training_args or {})
        self.forward_fn = forward_fn or (lambda network, batch: network(batch["left"], batch["right"]))
        self.extra_lr_scale = {str(name): float(factor) for name, factor in (extra_lr_scale or {}).items()}
        unknown = sorted(set(self.extra_lr_scale) - set(self.extras))
        if unknown:
            raise ValueError(f"extra_lr_scale names {unknown} that are not extra modules ({sorted(self.extras)})")
        self.step = 0
        #: arithmetic of the training step (``float32``, ``bfloat16`` or ``float16``), set by :meth:`fit`.
        self.precision = "float32"

    # -- checkpoints ------------------------------------------------------------------------

    def _payload(self, optimizer: torch.optim.Optimizer | None, scheduler: Any, scaler: Any, logs: Mapping[str, float]) -> dict[str, Any]:
        extra_state = self.extra_state() if callable(self.extra_state) else (self.extra_state or {})
        return {
            "arch": self.arch,
            "arch_kwargs": _json_safe(self.arch_kwargs),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "step": int(self.step),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
            "extra_modules": {name: {k: v.detach().cpu() for k, v in module.state_dict().items()} for name, module in self.extras.items()},
            "extra_state": _json_safe(dict(extra_state)),
            "training_args": _json_safe({**self.training_args, "trainer": asdict(self.config), "precision": self.precision}),
            "last_logs": {k: float(v) for k, v in logs.items()},
            "rng": {"torch": torch.get_rng_state()},
            "version": __version__,
        }

    def _time_is_up(self, elapsed: float, context: DistributedContext) -> bool:
        """All ranks agree on stopping (rank 0's clock decides)."""
        flag = torch.tensor([1.0 if elapsed >= float(self.config.time_limit_s or 0) else 0.0])
        if context.world_size > 1:
            dist.broadcast(flag, src=0)
        return bool(flag.item() > 0)

    def _resume_source(self) -> Path | None:
        for candidate in (self.config.progress_path, Path(self.config.out)):
            if candidate.is_file():
                return candidate
        return None

    def _parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Optimiser groups: the network with the extras not in ``extra_lr_scale``, then one group per scaled extra."""
        scaled = {name for name in self.extra_lr_scale if any(p.requires_grad for p in self.extras[name].parameters())}
        shared = list(model.parameters()) + [p for name, module in self.extras.items() if name not in scaled for p in module.parameters()]
        groups: list[dict[str, Any]] = [{"params": [p for p in shared if p.requires_grad]}]
        for name in sorted(scaled):
            groups.append(
                {
                    "params": [p for p in self.extras[name].parameters() if p.requires_grad],
                    "lr": self.config.learning_rate * self.extra_lr_scale[name],
                    "weight_decay": 0.0,
                }
            )
        return groups

    # -- main loop --------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Run (or resume) training up to ``config.steps``; returns a :class:`TrainResult`.

        Raises:
            KeyboardInterrupt: after saving a progress checkpoint on Ctrl-C.
        """
        config = self.config
        if config.threads:
            torch.set_num_threads(int(config.threads))
        device_kind = devices.resolve_device(config.device).type
        context = init_distributed(device_kind)
        device = devices.resolve_device(config.device, context.local_rank)
        amp_dtype = autocast_dtype(device, bool(config.amp))
        use_amp = amp_dtype == torch.float16  # gradient scaling: float16 only
        self.precision = precision_name(amp_dtype)
        torch.manual_seed(config.seed + context.rank)

        model = self.model.to(device)
        self.extras.to(device)
        parameters = [p for p in list(model.parameters()) + list(self.extras.parameters()) if p.requires_grad]
        optimizer = torch.optim.AdamW(self._parameter_groups(model), lr=config.learning_rate, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config.steps, config.schedule, config.warmup_steps))
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

        resume_from = self._resume_source() if config.resume else None
        if resume_from is not None:
            payload = load_checkpoint(resume_from)
            if payload["arch"] != self.arch:
                raise InputError(
                    f"--resume: {resume_from} holds a {payload['arch']!r} network, not {self.arch!r}; use the same --arch or another --out"
                )
            model.load_state_dict(payload["model"])
            for name, state in (payload.get("extra_modules") or {}).items():
                if name in self.extras:
                    self.extras[name].load_state_dict(state)
            if payload.get("optimizer") is not None:
                optimizer.load_state_dict(payload["optimizer"])
            if payload.get("scheduler") is not None:
                scheduler.load_state_dict(payload["scheduler"])
            if payload.get("scaler") is not None and use_amp:
                scaler.load_state_dict(payload["scaler"])
            if "rng" in payload and "torch" in payload["rng"]:
                torch.set_rng_state(payload["rng"]["torch"])
            self.step = int(payload["step"])

        train_model: nn.Module = model
        if context.world_size > 1:
            train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
            if len(list(self.extras.parameters())):
                for parameter in self.extras.parameters():
                    dist.broadcast(parameter.data, src=0)

        sampler = StepBatchSampler(self.step, config.steps, config.batch_size, context.rank, context.world_size)
        loader = DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=config.workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
        progress = ProgressLine(config.steps, enabled=config.progress and context.is_main, every=config.log_every)
        log_handle = open(config.log_path, "a", encoding="utf-8") if context.is_main else None
        logs: dict[str, float] = {}
        started = time.perf_counter()
        window_start, window_pairs = started, 0
        start_step = self.step
        sigint_previous = None
        try:
            if context.is_main and threading_is_main():
                # Make SIGINT raise KeyboardInterrupt even if a caller installed another handler.
                sigint_previous = signal.signal(signal.SIGINT, signal.default_int_handler)
            train_model.train()
            for batch in loader:
                batch = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
                with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    output = self.forward_fn(train_model, batch)
                    loss, step_logs = self.loss_fn(output, batch)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if context.world_size > 1:
                    for parameter in self.extras.parameters():
                        if parameter.grad is not None:
                            dist.all_reduce(parameter.grad)
                            parameter.grad /= context.world_size
                if config.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                self.step += 1
                window_pairs += config.batch_size
                now = time.perf_counter()
                pairs_per_second = window_pairs / max(now - window_start, 1e-9)
                logs = {**step_logs, "lr": optimizer.param_groups[0]["lr"]}
                eta = (config.steps - self.step) * config.batch_size / max(pairs_per_second, 1e-9)
                progress.update(self.step, logs, pairs_per_second, eta)
                if log_handle is not None and (self.step % config.log_every == 0 or self.step == config.steps):
                    record = {"step": self.step, **logs, "pairs_per_s": pairs_per_second, "elapsed_s": now - started, "time": time.time()}
                    log_handle.write(json.dumps(record) + "\n")
                    log_handle.flush()
                    window_start, window_pairs = now, 0
                if context.is_main and config.checkpoint_every and self.step % config.checkpoint_every == 0 and self.step < config.steps:
                    save_checkpoint(config.progress_path, self._payload(optimizer, scheduler, scaler, logs))
                if config.time_limit_s is not None and self._time_is_up(now - started, context):
                    break
        except KeyboardInterrupt:
            progress.close()
            if context.is_main and self.step > start_step:
                save_checkpoint(config.progress_path, self._payload(optimizer, scheduler, scaler, logs))
                sys.stderr.write(f"Interrupted at step {self.step}: saved {config.progress_path}; rerun with --resume to continue.\n")
            raise
        finally:
            if sigint_previous is not None:
                signal.signal(signal.SIGINT, sigint_previous)
            if log_handle is not None:
                log_handle.close()
        progress.close()
        wall = time.perf_counter() - started
        if context.is_main:
            save_checkpoint(config.out, self._payload(optimizer, scheduler, scaler, logs))
            if config.progress_path.exists():
                config.progress_path.unlink()
        if context.world_size > 1:
            dist.barrier()
            if context.initialized_here:
                dist.destroy_process_group()
        model.eval()
        return TrainResult(step=self.step, wall_seconds=wall, last_logs=logs, checkpoint=Path(config.out))


# ----------------------------------------------------------------------------------------------
# Inference
# ----------------------------------------------------------------------------------------------
