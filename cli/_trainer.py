"""What ``pseudolabel train`` and ``pseudolabel adapt`` share: the trainer's options and their checks.

Both commands drive :class:`pseudolabel.learn.trainer.Trainer`; the options that configure it (schedule,
device, precision, checkpoints, resume, logging) are declared once here, with per-command defaults,
and turned into a :class:`~pseudolabel.learn.trainer.TrainerConfig` by :func:`trainer_config`. This module
imports torch only inside the functions that need it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pseudolabel.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from pseudolabel.learn.trainer import TrainerConfig


def trainer_options(*, warmup: int, checkpoint_every: int, log_every: int, log_help: str) -> Callable[[Any], Any]:
    """Click decorator adding the trainer's options with these defaults: the keyword arguments of :func:`trainer_config` after ``lr``."""
    options = [
        click.option("--schedule", type=click.Choice(["cosine", "step", "constant"]), default="cosine", show_default=True),
        click.option("--warmup", default=warmup, show_default=True, type=int, help="linear warm-up steps."),
        click.option("--weight-decay", default=0.0, show_default=True, type=float),
        click.option("--grad-clip", default=10.0, show_default=True, type=float, help="gradient norm clip (0 = off)."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
        click.option(
            "--amp/--no-amp",
            default=True,
            show_default=True,
            help="mixed precision: float16 on CUDA, bfloat16 on CPUs that have it natively (AVX512-BF16, AMX), else float32.",
        ),
        click.option("--workers", default=0, show_default=True, type=int, help="data-loader worker processes per rank."),
        click.option("--threads", default=None, type=int, help="torch CPU threads (default: torch's choice)."),
        click.option("--seed", default=0, show_default=True, type=int),
        click.option("--checkpoint-every", default=checkpoint_every, show_default=True, type=int, help="progress checkpoint every N steps."),
        click.option("--log-every", default=log_every, show_default=True, type=int, help=log_help),
        click.option("--resume", is_flag=True, help="continue from OUT.partial.pt (or extend OUT to --steps)."),
        click.option("--time-limit", default=None, type=float, help="stop after this many minutes (the final checkpoint records the step reached)."),
        click.option("--force", is_flag=True, help="overwrite an existing OUT instead of refusing."),
        click.option("--quiet", is_flag=True, help="no progress line."),
    ]

    def decorate(function: Any) -> Any:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def check_output(out_path: Path, resume: bool, force: bool) -> None:
    """Refuse to overwrite a finished or interrupted run unless ``--resume`` or ``--force`` says so.

    Creates ``out_path``'s folder. With ``--force`` (and no ``--resume``) the old ``OUT.partial.pt``
    and ``OUT.jsonl`` are removed.

    Raises:
        InputError: ``out_path`` or its ``.partial.pt`` exists, or its folder cannot be created.
    """
    if out_path.exists() and not (resume or force):
        raise InputError(f"--out {out_path} exists; add --resume to continue it, --force to overwrite it, or pick another path")
    partial_path = out_path.with_suffix(".partial.pt")
    if partial_path.exists() and not (resume or force):
        raise InputError(f"{partial_path} holds an interrupted run; add --resume to continue it or --force to start over")
    for folder in (out_path.parent, *out_path.parent.parents):
        if folder.exists() and not folder.is_dir():
            raise InputError(f"--out {out_path}: {folder} is a file, not a folder; pick another path")
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"--out {out_path}: cannot create the folder {out_path.parent} ({error.strerror}); pick a writable path") from None
    if force and not resume:
        partial_path.unlink(missing_ok=True)
        out_path.with_suffix(".jsonl").unlink(missing_ok=True)


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads in torch and OpenCV (``None``: leave their defaults)."""
    if not threads:
        return
    import torch

    torch.set_num_threads(threads)
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:  # pragma: no cover
        pass


def trainer_config(
    out_path: Path,
    steps: int,
    batch_size: int,
    lr: float,
    *,
    schedule: str,
    warmup: int,
    weight_decay: float,
    grad_clip: float,
    device: str,
    amp: bool,
    workers: int,
    threads: int | None,
    seed: int,
    checkpoint_every: int,
    log_every: int,
    resume: bool,
    time_limit: float | None,
    force: bool,
    quiet: bool,
) -> TrainerConfig:
    """The :class:`~pseudolabel.learn.trainer.TrainerConfig` of a command's options (``time_limit`` in minutes)."""
    from pseudolabel.learn.trainer import TrainerConfig

    del force  # handled by check_output
    return TrainerConfig(
        out=out_path,
        steps=steps,
        batch_size=batch_size,
        learning_rate=lr,
        schedule=schedule,
        warmup_steps=warmup,
        weight_decay=weight_decay,
        grad_clip=grad_clip or None,
        device=device,
        amp=amp,
        workers=workers,
        seed=seed,
        checkpoint_every=checkpoint_every,
        log_every=log_every,
        resume=resume,
        threads=threads,
        progress=not quiet,
        time_limit_s=None if time_limit is None else 60.0 * time_limit,
    )
