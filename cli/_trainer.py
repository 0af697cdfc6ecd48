"""What ``pseudolabel train`` and ``pseudolabel adapt`` share: the trainer's options and sizes given as text.

Both commands call a library function that drives :class:`pseudolabel.learn.trainer.Trainer`; the
options that configure how the run executes (schedule, device, precision, checkpoints, resume,
logging) are declared once here, with the command's defaults taken from a
:class:`~pseudolabel.learn.run.RunOptions`, and turned back into one by :func:`run_options`. This
module never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from pseudolabel.cli.options import THREADS_HELP, ThreadsType
from pseudolabel.learn.run import RunOptions

F = TypeVar("F", bound=Callable[..., object])


def trainer_options(defaults: RunOptions, log_help: str) -> Callable[[F], F]:
    """Click decorator adding the trainer's options, with ``defaults``; :func:`run_options` reads them back."""
    options = [
        click.option("--schedule", type=click.Choice(["cosine", "step", "constant"]), default=defaults.schedule, show_default=True),
        click.option("--warmup", default=defaults.warmup_steps, show_default=True, type=int, help="linear warm-up steps."),
        click.option("--weight-decay", default=defaults.weight_decay, show_default=True, type=float),
        click.option("--grad-clip", default=defaults.grad_clip or 0.0, show_default=True, type=float, help="gradient norm clip (0 = off)."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=defaults.device, show_default=True),
        click.option(
            "--amp/--no-amp",
            default=defaults.amp,
            show_default=True,
            help="mixed precision: float16 on CUDA, bfloat16 on CPUs that have it natively (AVX512-BF16, AMX), else float32.",
        ),
        click.option("--workers", default=defaults.workers, show_default=True, type=int, help="data-loader worker processes per rank."),
        click.option("--threads", default=defaults.threads or "auto", show_default=True, type=ThreadsType(), help=THREADS_HELP),
        click.option("--seed", default=defaults.seed, show_default=True, type=int),
        click.option("--checkpoint-every", default=defaults.checkpoint_every, show_default=True, type=int, help="progress checkpoint every N steps."),
        click.option("--log-every", default=defaults.log_every, show_default=True, type=int, help=log_help),
        click.option("--resume", is_flag=True, help="continue from OUT.partial.pt (or extend OUT to --steps)."),
        click.option("--time-limit", default=None, type=float, help="stop after this many minutes (the final checkpoint records the step reached)."),
        click.option("--overwrite", is_flag=True, help="replace an existing OUT (and its .partial.pt and .jsonl) instead of refusing."),
        click.option("--force", is_flag=True, hidden=True, help="old name of --overwrite."),
        click.option("--quiet", is_flag=True, help="no progress line."),
    ]

    def decorate(function: F) -> F:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def run_options(
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
    overwrite: bool,
    force: bool,
    quiet: bool,
) -> RunOptions:
    """The :class:`~pseudolabel.learn.run.RunOptions` of the options of :func:`trainer_options` (``time_limit`` in minutes)."""
    return RunOptions(
        schedule=schedule,
        warmup_steps=warmup,
        weight_decay=weight_decay,
        grad_clip=grad_clip or None,
        device=device,
        amp=amp,
        workers=workers,
        threads=threads,
        seed=seed,
        checkpoint_every=checkpoint_every,
        log_every=log_every,
        resume=resume,
        overwrite=overwrite or force,
        time_limit_s=None if time_limit is None else 60.0 * time_limit,
        progress=not quiet,
    )
