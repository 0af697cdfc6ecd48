"""How a training run executes, apart from what it optimises: the settings ``pseudolabel train`` and
``pseudolabel adapt`` share, the trainer's configuration and result, and the checks of the output path.

:class:`RunOptions` holds the shared settings (schedule, device, precision, checkpoints, resume,
logging) as plain values; :meth:`RunOptions.trainer_config` adds what a run optimises for how long
(output path, steps, batch, learning rate) and gives the :class:`TrainerConfig` of
:class:`pseudolabel.learn.trainer.Trainer`. This module does not import torch, so the command line
can read the defaults without it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from pseudolabel.errors import InputError
from pseudolabel.outputs import check_output_file

__all__ = ["RunOptions", "TrainResult", "TrainerConfig", "prepare_output", "set_threads"]


@dataclass(frozen=True)
class RunOptions:
    """The settings of a training run that do not change what is optimised (see :class:`TrainerConfig`).

    Attributes:
        schedule: ``cosine``, ``step`` or ``constant`` learning-rate schedule.
        warmup_steps: linear warm-up steps.
        weight_decay: AdamW weight decay.
        grad_clip: gradient norm clip; ``None`` or 0 = off.
        device: ``auto``, ``cpu`` or ``cuda``.
        amp: mixed precision (float16 on CUDA, bfloat16 on CPUs that have it natively).
        workers: data-loader worker processes per rank.
        threads: torch, OpenCV (and Numba) CPU threads; ``None`` = chosen from the usable cores and the
            machine's load (:mod:`pseudolabel.threads`).
        seed: seed of the data order, crops, augmentation and torch generator.
        checkpoint_every: progress checkpoint every N steps (0 = only at the end and on Ctrl-C).
        log_every: metrics line in ``OUT.jsonl`` every N steps.
        resume: continue from ``OUT.partial.pt`` (or extend ``OUT`` to more steps).
        overwrite: replace an existing ``OUT`` (and its ``.partial.pt`` and ``.jsonl``) instead of refusing.
        time_limit_s: stop after this many seconds of training; ``None`` = no limit.
        progress: report progress (to the ``progress`` object given to the run).
    """

    schedule: str = "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float | None = 10.0
    device: str = "auto"
    amp: bool = True
    workers: int = 0
    threads: int | None = None
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    resume: bool = False
    overwrite: bool = False
    time_limit_s: float | None = None
    progress: bool = True

    def trainer_config(self, out: str | Path, steps: int, batch_size: int, learning_rate: float) -> TrainerConfig:
        """The :class:`TrainerConfig` of a run of ``steps`` steps of ``batch_size`` pairs into ``out``."""
        settings = {field.name: getattr(self, field.name) for field in dataclasses.fields(RunOptions)}
        settings["grad_clip"] = self.grad_clip or None
        return TrainerConfig(out=Path(out), steps=steps, batch_size=batch_size, learning_rate=learning_rate, **settings)


@dataclass(frozen=True, kw_only=True)
class TrainerConfig(RunOptions):
    """Settings of a :class:`~pseudolabel.learn.trainer.Trainer` run: what to optimise for how long, on top
    of every :class:`RunOptions` field (schedule, device, precision, seed, checkpoints, resume, ...).

    Attributes:
        out: final checkpoint path. Progress checkpoints go to :attr:`progress_path`
            (``OUT`` with suffix ``.partial.pt``), the metrics log to :attr:`log_path` (``.jsonl``).
        steps: total optimisation steps (a resumed run continues up to it).
        batch_size: *global* batch (split evenly over the processes).
        learning_rate: peak Adam learning rate (``schedule``: ``cosine`` to 5% of the peak, ``step``
            x0.5 at 60% and 80% of the steps, or ``constant``). ``amp`` is
            :func:`pseudolabel.learn.precision.autocast_dtype`'s choice: float16 with gradient scaling on
            CUDA, bfloat16 on a CPU that runs it natively (AVX512-BF16 or AMX), float32 elsewhere;
            parameters and optimiser state stay float32. ``time_limit_s`` stops the run (the final
            checkpoint records the step reached; the schedule still assumes ``steps``).
    """

    out: Path
    steps: int
    batch_size: int = 4
    learning_rate: float = 1e-4

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
    """Outcome of :meth:`pseudolabel.learn.trainer.Trainer.fit` and of the library's training calls.

    Attributes:
        step: the step reached (``steps``, or fewer after a time limit).
        wall_seconds: training time, seconds.
        last_logs: the values of the last step (``loss``, ``lr``, ``tau``, ...).
        checkpoint: the final checkpoint written.
    """

    step: int
    wall_seconds: float
    last_logs: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None


def prepare_output(out_path: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to overwrite a finished or interrupted run unless ``resume`` or ``overwrite`` says so, and
    check that ``out_path`` can be written (:func:`pseudolabel.outputs.check_output_file`) before any work.

    Creates ``out_path``'s folder. With ``overwrite`` (and no ``resume``) the old ``OUT.partial.pt``
    and ``OUT.jsonl`` are removed.

    Raises:
        InputError: ``out_path`` or its ``.partial.pt`` exists, or its folder cannot be created or written.
    """
    partial_path = out_path.with_suffix(".partial.pt")
    if partial_path.exists() and not (resume or overwrite):
        raise InputError(f"{partial_path} holds an interrupted run; add --resume to continue it or --overwrite to start over")
    check_output_file(out_path, "--out", overwrite=resume or overwrite, what="checkpoint", resume_hint="add --resume to continue it, ")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if overwrite and not resume:
        partial_path.unlink(missing_ok=True)
        out_path.with_suffix(".jsonl").unlink(missing_ok=True)


def set_threads(threads: int | str | None) -> int:
    """Use ``threads`` CPU threads in torch, OpenCV and Numba; ``None``, 0 or ``"auto"``: the count that
    :func:`pseudolabel.threads.resolve_threads` chooses from the usable cores and the machine's load.
    Returns the count used."""
    import torch  # noqa: F401  (loaded, so that apply_threads sets it)

    from pseudolabel.threads import apply_threads

    return apply_threads(threads).threads
