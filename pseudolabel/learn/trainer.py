"""Generic trainer for stereo networks: supervised training (:mod:`pseudolabel.learn.supervised`) and
adaptation (:mod:`pseudolabel.learn.adapt`).

:class:`Trainer` runs ``steps`` optimisation steps of a network (plus optional extra modules, e.g. a
learnable tau) on an *indexed* dataset with a caller-supplied loss, and takes care of:

* device (``auto``/``cpu``/``cuda``), mixed precision (``torch.autocast``: float16 + ``GradScaler`` on
  CUDA, bfloat16 on CPUs that have it natively);
* distributed data parallel when launched by ``torchrun`` (``RANK``/``WORLD_SIZE`` in the
  environment; ``gloo`` on CPU, ``nccl`` on CUDA): every rank takes its slice of the same global
  batch, so N processes with per-rank batch B/N follow the same trajectory as one process with batch B;
* a fixed seed and exact resumption: sample ``i`` of the run is ``dataset[i]`` (global step ``s`` uses
  indices ``s*B .. s*B+B-1``), so a resumed run sees exactly the samples it would have seen;
* progress through a :class:`pseudolabel.progress.Progress` (loss and throughput), a JSON-lines
  metrics log, a checkpoint every N steps, ``resume``, and a checkpoint on Ctrl-C (SIGINT) before
  :class:`KeyboardInterrupt` propagates.

Dataset protocol: any ``torch.utils.data.Dataset`` whose ``__getitem__(i)`` accepts every
non-negative integer (wrap around or generate on the fly) and returns a dict of tensors. The default
forward call reads ``batch["left"]`` and ``batch["right"]`` ((B, 3, H, W) float in ``[0, 1]``).
The settings are a :class:`~pseudolabel.learn.run.TrainerConfig` (:mod:`pseudolabel.learn.run`).

Why this module is a little over 500 lines: it is one class whose short methods (place, build the
optimiser, restore, wrap for DDP, one step, evaluate between steps, log and checkpoint, save on an
interrupt, finish) share the state of one run; the time budget (:mod:`pseudolabel.learn.budget`), the
run settings (:mod:`pseudolabel.learn.run`), DDP (:mod:`pseudolabel.learn.distributed`) and precision
(:mod:`pseudolabel.learn.precision`) already live apart.
"""

from __future__ import annotations

import json
import math
import signal
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pseudolabel import __version__
from pseudolabel.errors import InputError
from pseudolabel.interrupts import Interrupted
from pseudolabel.learn.budget import StepBudget, format_duration
from pseudolabel.learn.checkpoint import load_checkpoint, save_checkpoint
from pseudolabel.learn.distributed import (
    DistributedContext,
    init_distributed,
    threading_is_main,
)
from pseudolabel.learn.precision import autocast_dtype, precision_name
from pseudolabel.learn.run import TrainerConfig, TrainResult
from pseudolabel.learn.samples import Batch, StepBatchSampler
from pseudolabel.models import devices
from pseudolabel.models.registry import StereoNetwork, StereoOutput
from pseudolabel.progress import Progress, or_silent

__all__ = ["ForwardFunction", "LossFunction", "Trainer", "TrainerConfig", "TrainResult", "lr_factor"]

#: ``loss_fn(output, batch) -> (scalar loss, {name: float})``.
LossFunction = Callable[[StereoOutput, Batch], tuple[torch.Tensor, dict[str, float]]]
#: ``forward_fn(network, batch) -> output``: one call of the network per step (DDP).
ForwardFunction = Callable[[nn.Module, Batch], StereoOutput]
#: ``evaluate_fn(network) -> {name: float}``: measurements between steps (held-back frames), logged with the step.
EvaluateFunction = Callable[[nn.Module], dict[str, float]]


def model_of(module: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (or the module itself)."""
    inner = getattr(module, "module", None)
    return inner if isinstance(module, nn.parallel.DistributedDataParallel) and isinstance(inner, nn.Module) else module


#: under a time budget, the evaluations between steps take at most this share of it (the last one is always made).
EVALUATION_SHARE = 0.1


class _ParameterHolder(nn.Module):
    """Wraps a bare ``nn.Parameter`` so that it has a state dict."""

    def __init__(self, parameter: nn.Parameter) -> None:
        super().__init__()
        self.value = parameter


def lr_factor(step: int, total_steps: int, schedule: str, warmup_steps: int, progress: float | None = None) -> float:
    """Learning-rate multiplier at ``step`` (0-based); ``progress`` in [0, 1] replaces the schedule's
    straight ``(step - warmup) / (total - warmup)`` (a :class:`~pseudolabel.learn.budget.SchedulePlan`)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if progress is None:
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


def advance_schedule(scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """Advance the learning-rate schedule by one optimisation step, also when that step's update was skipped.

    With float16 on CUDA the gradient scaler skips the updates whose gradients overflowed while it
    calibrates its scale, so the first steps may pass without an ``optimizer.step()``. The schedule
    still follows the step count; torch's warning that the scheduler stepped before the optimiser
    says nothing the user could act on, and is silenced here (only that warning).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`")
        scheduler.step()


@dataclass
class _Optimisation:
    """What one run optimises with: the optimiser, its schedule, the gradient scaler, the trained parameters."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    parameters: list[nn.Parameter]


@dataclass
class _Placement:
    """Where and in which arithmetic a run executes."""

    context: DistributedContext
    device: torch.device
    amp_dtype: torch.dtype | None

    @property
    def scaled(self) -> bool:
        """Gradient scaling (float16 only)."""
        return self.amp_dtype == torch.float16


@dataclass
class _Window:
    """Timing of the run: its start, and the pairs seen since the last metrics line (throughput)."""

    started: float
    window_start: float
    window_pairs: int = 0

    def pairs_per_second(self, now: float) -> float:
        """Throughput since the last metrics line."""
        return self.window_pairs / max(now - self.window_start, 1e-9)


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
        progress: where the progress goes (rank 0, when ``config.progress``): :meth:`fit` calls
            ``start(label, steps left, steps done)`` and, after every step,
            ``advance(1, "loss 0.1234, 3.1 pairs/s")``; ``None`` = nothing shown.
        budget: a :class:`~pseudolabel.learn.budget.StepBudget`: the run's length is fitted to a time
            budget (``config.steps`` is then the most steps); the schedule ends at the fitted step, the
            decision goes to the metrics log and the checkpoint (``budget``), the status shows the ETA.
        evaluate_fn: ``evaluate_fn(network) -> {name: float}``, run on rank 0 before the first step and
            ``evaluations`` times over the run (the last at the end); its values join the metrics line
            of that step and the status (e.g. agreement on held-back frames). Its time is kept out of
            the budget's step times and reserved from the budget.
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
        progress: Progress | None = None,
        budget: StepBudget | None = None,
        evaluate_fn: EvaluateFunction | None = None,
        evaluations: int = 10,
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
        self.progress = or_silent(progress)
        self.step = 0
        self.budget = budget
        self.evaluate_fn = evaluate_fn
        self.evaluations = max(int(evaluations), 1)
        self._evaluation_s = 0.0  # time of the last evaluation
        self._last_evaluation: dict[str, float] = {}
        #: values of ``evaluate_fn`` before the first step (``None`` without one).
        self.initial_evaluation: dict[str, float] | None = None
        #: arithmetic of the training step (``float32``, ``bfloat16`` or ``float16``), set by :meth:`fit`.
        self.precision = "float32"

    # -- checkpoints ------------------------------------------------------------------------

    def _payload(self, optimisation: _Optimisation, logs: Mapping[str, float]) -> dict[str, Any]:
        """The checkpoint dictionary of the current state (see :mod:`pseudolabel.learn.checkpoint`)."""
        optimizer, scheduler, scaler = optimisation.optimizer, optimisation.scheduler, optimisation.scaler
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
            "budget": self.budget.state_dict() if self.budget is not None else None,
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

    # -- the run, step by step ----------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Run (or resume) training up to ``config.steps``; returns a :class:`TrainResult`.

        Raises:
            KeyboardInterrupt: after saving a progress checkpoint on Ctrl-C.
        """
        place = self._place()
        model = self.model.to(place.device)
        self.extras.to(place.device)
        optimisation = self._build_optimiser(model, place)
        if self.config.resume:
            self._restore(model, optimisation, place)
        train_model = self._wrap_for_ddp(model, place)
        loader = self._loader(place)
        logs, wall_seconds = self._run_steps(train_model, loader, optimisation, place)
        self._finish(model, optimisation, place, logs)
        return TrainResult(step=self.step, wall_seconds=wall_seconds, last_logs=logs, checkpoint=Path(self.config.out))

    def _place(self) -> _Placement:
        """Threads, process group, device, precision and the seed of this rank."""
        config = self.config
        if config.threads:
            torch.set_num_threads(int(config.threads))
        device_kind = devices.resolve_device(config.device).type
        context = init_distributed(device_kind)
        device = devices.resolve_device(config.device, context.local_rank)
        amp_dtype = autocast_dtype(device, bool(config.amp))
        self.precision = precision_name(amp_dtype)
        torch.manual_seed(config.seed + context.rank)
        return _Placement(context, device, amp_dtype)

    def _build_optimiser(self, model: nn.Module, place: _Placement) -> _Optimisation:
        """AdamW over the parameter groups, the learning-rate schedule and the gradient scaler."""
        config = self.config
        parameters = [p for p in list(model.parameters()) + list(self.extras.parameters()) if p.requires_grad]
        optimizer = torch.optim.AdamW(self._parameter_groups(model), lr=config.learning_rate, weight_decay=config.weight_decay)
        budget = self.budget
        if budget is not None:
            budget.set_schedule_start(config.warmup_steps)

        def factor(step: int) -> float:
            progress = budget.plan.progress(step) if budget is not None else None
            return lr_factor(step, config.steps, config.schedule, config.warmup_steps, progress)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        scaler = torch.amp.GradScaler("cuda", enabled=place.scaled)
        return _Optimisation(optimizer, scheduler, scaler, parameters)

    def _restore(self, model: nn.Module, optimisation: _Optimisation, place: _Placement) -> None:
        """Continue from the progress checkpoint (or ``out``) when there is one: weights, optimiser, schedule, RNG, step."""
        resume_from = self._resume_source()
        if resume_from is None:
            return
        payload = load_checkpoint(resume_from)
        if payload["arch"] != self.arch:
            raise InputError(f"--resume: {resume_from} holds a {payload['arch']!r} network, not {self.arch!r}; use the same --arch or another --out")
        model.load_state_dict(payload["model"])
        for name, state in (payload.get("extra_modules") or {}).items():
            if name in self.extras:
                self.extras[name].load_state_dict(state)
        if payload.get("optimizer") is not None:
            optimisation.optimizer.load_state_dict(payload["optimizer"])
        if payload.get("scheduler") is not None:
            optimisation.scheduler.load_state_dict(payload["scheduler"])
        if payload.get("scaler") is not None and place.scaled:
            optimisation.scaler.load_state_dict(payload["scaler"])
        if "rng" in payload and "torch" in payload["rng"]:
            torch.set_rng_state(payload["rng"]["torch"])
        self.step = int(payload["step"])
        if self.budget is not None and payload.get("budget") and resume_from == self.config.progress_path:
            self.budget.load_state_dict(payload["budget"])

    def _wrap_for_ddp(self, model: nn.Module, place: _Placement) -> nn.Module:
        """The network as trained: wrapped in DistributedDataParallel under ``torchrun`` (extras synchronised from rank 0)."""
        if place.context.world_size <= 1:
            return model
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=[place.device.index] if place.device.type == "cuda" else None)
        for parameter in self.extras.parameters():
            dist.broadcast(parameter.data, src=0)
        return wrapped

    def _loader(self, place: _Placement) -> DataLoader:
        """This rank's batches of the remaining steps."""
        config = self.config
        sampler = StepBatchSampler(self.step, config.steps, config.batch_size, place.context.rank, place.context.world_size)
        return DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=config.workers,
            pin_memory=place.device.type == "cuda",
            persistent_workers=False,
        )

    def _run_steps(
        self, train_model: nn.Module, loader: DataLoader, optimisation: _Optimisation, place: _Placement
    ) -> tuple[dict[str, float], float]:
        """The step loop, with progress, metrics log and checkpoints; saves and re-raises on Ctrl-C.

        Returns:
            The logs of the last step and the training time in seconds.
        """
        config, context = self.config, place.context
        progress = self.progress if config.progress and context.is_main else or_silent(None)
        log_handle = open(config.log_path, "a", encoding="utf-8") if context.is_main else None
        logs: dict[str, float] = {}
        now = time.perf_counter()
        window = _Window(started=now, window_start=now)
        start_step = self.step
        sigint_previous = None
        label = Path(config.out).name
        progress.start(label, self._total_steps() - self.step, done=self.step)
        try:
            if context.is_main and threading_is_main():
                # Make SIGINT raise KeyboardInterrupt even if a caller installed another handler.
                sigint_previous = signal.signal(signal.SIGINT, signal.default_int_handler)
            if self.evaluate_fn is not None and self.step < self._total_steps():
                self._evaluate(model_of(train_model), log_handle, context, initial=True)
            if self.budget is not None:
                self._evaluation_s = 0.0  # the first evaluation is before the steps' clock starts
                self.budget.begin(self.step)
            train_model.train()
            for batch in loader:
                step_logs = self._step(train_model, batch, optimisation, place)
                logs = {**step_logs, "lr": optimisation.optimizer.param_groups[0]["lr"]}
                stop = self._after_step(progress, label, context)
                if self._evaluation_due():
                    logs.update(self._evaluate(model_of(train_model), None, context))
                    train_model.train()
                now = self._log_and_checkpoint(logs, window, progress, log_handle, optimisation, context)
                if stop or (config.time_limit_s is not None and self._time_is_up(now - window.started, context)):
                    break
        except KeyboardInterrupt:
            progress.finish()
            raise self._save_interrupted(optimisation, logs, context, start_step) from None
        finally:
            if sigint_previous is not None:
                signal.signal(signal.SIGINT, sigint_previous)
            if log_handle is not None:
                log_handle.close()
        progress.finish()
        return logs, time.perf_counter() - window.started

    def _total_steps(self) -> int:
        """The step the run ends at: ``config.steps``, or the budget's fitted count."""
        return self.budget.total_steps if self.budget is not None else self.config.steps

    def _after_step(self, progress: Progress, label: str, context: DistributedContext) -> bool:
        """The budget's bookkeeping after a step (all ranks agree with rank 0); whether the run stops here."""
        budget = self.budget
        if budget is None:
            return False
        excluded, self._evaluation_s = self._evaluation_s, 0.0
        before = budget.total_steps
        if self.evaluate_fn is not None:
            # the evaluations still to come, at the last measured cost, are not time for steps
            budget.reserved_s = self._last_evaluation.get("evaluation_s", 0.0) * self._evaluations_left()
        budget.step_done(self.step, excluded_s=excluded)
        stop = budget.should_stop(self.step)
        if context.world_size > 1:
            decision = torch.tensor([float(budget.total_steps), 1.0 if stop else 0.0], dtype=torch.float64)
            dist.broadcast(decision, src=0)
            budget.adopt(int(decision[0].item()), self.step)
            stop = bool(decision[1].item() > 0)
        if budget.total_steps != before:  # the bar's new length; this step is advanced next
            progress.start(label, max(budget.total_steps - self.step + 1, 1), done=self.step - 1)
        return stop

    def _evaluations_left(self) -> int:
        every = self._evaluation_every()
        return max(self._total_steps() - self.step, 0) // every + 1

    def _evaluation_count(self) -> int:
        """``evaluations``, fewer under a budget where they would take more than :data:`EVALUATION_SHARE` of it."""
        cost = self._last_evaluation.get("evaluation_s", 0.0)
        if self.budget is None or cost <= 0:
            return self.evaluations
        return max(1, min(self.evaluations, int(EVALUATION_SHARE * self.budget.budget_s / cost) - 1))  # the first one included

    def _evaluation_every(self) -> int:
        return max(math.ceil(self._total_steps() / self._evaluation_count()), 1)

    def _evaluation_due(self) -> bool:
        if self.evaluate_fn is None or (self.budget is not None and not self.budget.decided and self.step < self._total_steps()):
            return False
        return self.step % self._evaluation_every() == 0 or self.step >= self._total_steps()

    def _evaluate(self, model: nn.Module, log_handle: TextIO | None, context: DistributedContext, initial: bool = False) -> dict[str, float]:
        """Run ``evaluate_fn`` on rank 0 (timed); before the first step its values get a metrics line of their own."""
        if self.evaluate_fn is None or not context.is_main:
            return {}
        clock = self.budget.clock if self.budget is not None else time.perf_counter  # the budget's time
        started = clock()
        values = dict(self.evaluate_fn(model))
        seconds = clock() - started
        self._evaluation_s += seconds
        values["evaluation_s"] = seconds
        if initial:
            self.initial_evaluation = dict(values)
            if log_handle is not None:
                log_handle.write(json.dumps({"step": self.step, **values, "time": time.time()}) + "\n")
                log_handle.flush()
        self._last_evaluation = values
        return values

    def _status(self, logs: Mapping[str, float], pairs_per_second: float) -> str:
        """The progress status: loss, throughput, the budget's ETA and the last evaluation."""
        text = f"loss {logs.get('loss', float('nan')):.4f}, {pairs_per_second:.2f} pairs/s"
        if self.budget is not None:
            fitting = "" if self.budget.decided else " (fitting the steps to the budget)"
            text += f", eta {format_duration(self.budget.eta_s(self.step))}{fitting}"
        evaluation = self._last_evaluation
        if "holdout_bad3" in evaluation:
            first = (self.initial_evaluation or {}).get("holdout_bad3")
            since = f" (start {first:.1f}%)" if first is not None else ""
            text += f", held-back bad-3 {evaluation['holdout_bad3']:.1f}%{since}"
        return text

    def _step(self, train_model: nn.Module, batch: Batch, optimisation: _Optimisation, place: _Placement) -> dict[str, float]:
        """One optimisation step on ``batch`` (forward and loss under autocast, backward, clip, update); returns the loss logs."""
        config, device = self.config, place.device
        batch = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
        with torch.autocast(device_type=device.type, dtype=place.amp_dtype or torch.float32, enabled=place.amp_dtype is not None):
            output = self.forward_fn(train_model, batch)
            loss, step_logs = self.loss_fn(output, batch)
        optimizer, scaler = optimisation.optimizer, optimisation.scaler
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if place.context.world_size > 1:
            for parameter in self.extras.parameters():
                if parameter.grad is not None:
                    dist.all_reduce(parameter.grad)
                    parameter.grad /= place.context.world_size
        if config.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(optimisation.parameters, config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        advance_schedule(optimisation.scheduler)
        self.step += 1
        return step_logs

    def _log_and_checkpoint(
        self,
        logs: dict[str, float],
        window: _Window,
        progress: Progress,
        log_handle: TextIO | None,
        optimisation: _Optimisation,
        context: DistributedContext,
    ) -> float:
        """After a step: progress, the metrics line every ``log_every`` steps, the progress checkpoint every
        ``checkpoint_every`` steps. Returns the time (``time.perf_counter``) of the step's end."""
        config = self.config
        window.window_pairs += config.batch_size
        now = time.perf_counter()
        pairs_per_second = window.pairs_per_second(now)
        progress.advance(1, self._status(logs, pairs_per_second))
        decision = self.budget.take_pending() if self.budget is not None and context.is_main else None
        total = self._total_steps()
        if log_handle is not None and (self.step % config.log_every == 0 or self.step >= total or decision is not None or "evaluation_s" in logs):
            record: dict[str, Any] = {
                "step": self.step,
                **logs,
                "pairs_per_s": pairs_per_second,
                "elapsed_s": now - window.started,
                "time": time.time(),
            }
            if decision is not None:
                record["budget"] = decision
            log_handle.write(json.dumps(record) + "\n")
            log_handle.flush()
            window.window_start, window.window_pairs = now, 0
        if context.is_main and config.checkpoint_every and self.step % config.checkpoint_every == 0 and self.step < total:
            save_checkpoint(config.progress_path, self._payload(optimisation, logs))
        return now

    def _save_interrupted(self, optimisation: _Optimisation, logs: Mapping[str, float], context: DistributedContext, start_step: int) -> Interrupted:
        """On Ctrl-C: the progress checkpoint (when a step was made), and what was kept and how to continue."""
        config = self.config
        partial = config.progress_path
        if context.is_main and self.step > start_step:
            save_checkpoint(partial, self._payload(optimisation, logs))
            kept = f"steps 1-{self.step} of {config.steps} in {partial}"
        elif partial.is_file():
            kept = f"{partial} as it was (no step finished since the start)"
        else:
            return Interrupted("nothing (no step had finished)", resumes=False)
        return Interrupted(kept, add=("--resume",), drop=("--overwrite", "--force"))

    def _finish(self, model: nn.Module, optimisation: _Optimisation, place: _Placement, logs: Mapping[str, float]) -> None:
        """The final checkpoint (rank 0; the progress checkpoint goes), the process group's end, eval mode."""
        config, context = self.config, place.context
        if context.is_main:
            save_checkpoint(config.out, self._payload(optimisation, logs))
            if config.progress_path.exists():
                config.progress_path.unlink()
        if context.world_size > 1:
            dist.barrier()
            if context.initialized_here:
                dist.destroy_process_group()
        model.eval()
