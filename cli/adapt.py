"""``pseudolabel adapt``: the command line of :func:`pseudolabel.learn.adapt.adapt_network`.

Options, messages and one library call: guided-confidence domain adaptation of a stereo network with
the proxy labels of a proxies file. The run settings shared with ``pseudolabel train`` come from
:mod:`pseudolabel.cli._trainer`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pseudolabel.cli._network import MODEL_HELP, network_options, network_spec
from pseudolabel.cli._trainer import run_options, trainer_options
from pseudolabel.cli.options import ClickProgress, SizeType, key_options
from pseudolabel.learn.adapt import (
    ADAPT_RUN,
    DEFAULT_BATCH,
    DEFAULT_BUDGET,
    DEFAULT_LOSS,
    DEFAULT_LR,
    DEFAULT_REPLAY,
    DEFAULT_SCALE_DECAY,
    DEFAULT_STEPS,
    DEFAULT_TAU,
    DEFAULT_TAU_LR_SCALE,
    DEFAULT_WEIGHTING,
)

CROP = SizeType("HEIGHTxWIDTH", "256x320", allow_full=True)


@click.command("adapt")
@click.option(
    "--proxies",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="proxies file of `pseudolabel sgm` with confidence/<measure> (from `pseudolabel confidence score`).",
)
@click.option("--model", "model_path", required=True, help=f"source network: {MODEL_HELP}")
@network_options()
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="adapted checkpoint (.pt); OUT.partial.pt and OUT.jsonl are written next to it.",
)
@click.option(
    "--tau",
    default=DEFAULT_TAU,
    show_default=True,
    help="confidence threshold: a number in [0, 1) (fixed), 'learnable' (trained with the network) or 'net' (predicted per image).",
)
@click.option(
    "--loss",
    "loss_spec",
    default=DEFAULT_LOSS,
    show_default=True,
    help="weighted terms name=weight among guided, reconstruction, smooth, lr, wlcn, l1 (l1 uses the pairs' ground truth).",
)
@click.option(
    "--weighting",
    type=click.Choice(["mask", "confidence"]),
    default=DEFAULT_WEIGHTING,
    show_default=True,
    help="guided loss: selected pixels weigh 1 (mask) or their confidence.",
)
@click.option(
    "--measure",
    default="ccnn",
    show_default=True,
    help="confidence map to read: confidence/<measure> (a network scored with `confidence score --model NAME.pt` is stored as NAME).",
)
@click.option(
    "--labels",
    "use_labels",
    is_flag=True,
    help="train on the labels written by `pseudolabel labels` exactly as stored (their tau and measure; each label weighs 1) "
    "instead of thresholding a confidence here.",
)
@key_options
@click.option("--pairs", "pair_patterns", multiple=True, hidden=True, help="deprecated alias of --keys.")
@click.option(
    "--scale-decay",
    default=DEFAULT_SCALE_DECAY,
    show_default=True,
    type=float,
    help="guided and l1 losses also on the coarser outputs of a multi-scale network, level k (finest 0) weighted scale_decay**k; 0 = finest only.",
)
@click.option("--use-valid", is_flag=True, help="also drop proxy pixels that failed SGM's left-right check.")
@click.option("--tau-init", default=0.5, show_default=True, type=float, help="starting tau of 'learnable' and 'net'.")
@click.option("--tau-temperature", default=0.05, show_default=True, type=float, help="temperature T of the soft selection sigmoid((c - tau) / T).")
@click.option(
    "--tau-penalty", default=None, type=float, help="lambda of -lambda log(1 - tau) (default: pseudolabel.learn.tau.DEFAULT_PENALTY_WEIGHT)."
)
@click.option(
    "--tau-lr-scale", default=DEFAULT_TAU_LR_SCALE, show_default=True, type=float, help="learning rate of tau's parameters, as a multiple of --lr."
)
@click.option("--steps", default=DEFAULT_STEPS, show_default=True, type=int, help="optimisation steps (with a --budget: the most steps it may fit).")
@click.option(
    "--budget",
    default=DEFAULT_BUDGET,
    show_default=True,
    help="time for the whole run (90s, 10m, 1h): the steps are fitted to the measured speed and the schedule ends with it; none = exactly --steps.",
)
@click.option(
    "--holdout-every",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="hold back every k-th pair (sorted keys) from training and report the network's agreement with their confident labels (OUT.jsonl, status); 0 = none.",
)
@click.option(
    "--replay",
    default=DEFAULT_REPLAY,
    show_default=True,
    type=float,
    help="share of the samples replaced by synthetic pairs with exact ground truth (pseudolabel synth, rendered on the fly); 0 = none.",
)
@click.option(
    "--augment/--no-augment",
    default=False,
    show_default=True,
    help="photometric augmentation of the adaptation pairs (brightness, contrast, gamma, colour, noise), drawn per sample.",
)
@click.option("--batch-size", default=DEFAULT_BATCH, show_default=True, type=int, help="global batch (split over torchrun processes).")
@click.option(
    "--crop",
    default="full",
    show_default=True,
    help="random crop HEIGHTxWIDTH (smaller images are padded), or full: whole images (pairs of different sizes need --batch-size 1 per process).",
)
@click.option("--lr", default=DEFAULT_LR, show_default=True, type=float, help="learning rate of the network (AdamW).")
@trainer_options(ADAPT_RUN, log_help="metrics line (OUT.jsonl, with the current tau) every N steps.")
def adapt(
    proxies: Path,
    model_path: str,
    model_kwargs: str | None,
    weights: str | None,
    adapter: str | None,
    out: Path,
    tau: str,
    loss_spec: str,
    weighting: str,
    measure: str,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    pair_patterns: tuple[str, ...],
    scale_decay: float,
    use_valid: bool,
    tau_init: float,
    tau_temperature: float,
    tau_penalty: float | None,
    tau_lr_scale: float,
    steps: int,
    budget: str,
    holdout_every: int,
    replay: float,
    augment: bool,
    batch_size: int,
    crop: str,
    lr: float,
    use_labels: bool,
    **trainer: Any,
) -> None:
    """Adapt a stereo network to the pairs of a proxies file with its confident proxy disparities.

    The guided loss is the mean |d_net - d_proxy| over the pixels whose confidence exceeds tau
    (Tonioni et al., ICCV 2017 / TPAMI 2019), each weighted by its confidence (--weighting mask:
    all equally); no ground truth is used (except by --loss l1, the supervised upper bound). The
    learned tau is logged at every step in OUT.jsonl and stored in the checkpoint
    (extra_modules.tau, extra_state.tau).

    \b
    Examples:
      pseudolabel sgm --in data/middlebury/2006 --out target.h5
      pseudolabel confidence score --proxies target.h5
      pseudolabel adapt --proxies target.h5 --model madnet_synth --out adapted.pt --tau learnable
      pseudolabel adapt --proxies target.h5 --model source.pt --out a.pt --tau 0.8 --loss guided=1,reconstruction=0.1
      pseudolabel adapt --proxies seq.h5 --model madnet_synth --out a.pt --budget 10m --holdout-every 10 --loss guided=1,l2sp=1e-3
      PYTHONPATH=. pseudolabel adapt --proxies target.h5 --model mynet:build --weights mynet.pth --out mine.pt
      pseudolabel eval --model adapted.pt --data data/middlebury/2006
      torchrun --nproc_per_node 2 -m pseudolabel.cli.main adapt --proxies target.h5 --model source.pt --out a.pt --batch-size 2
    Before training it prints which confidence map and tau it uses and how many pixels they select.
    By default it thresholds the confidence itself (--tau); --labels uses the `labels` of
    `pseudolabel labels` instead, exactly as written there.
    Ctrl-C saves OUT.partial.pt and prints the command that continues (with --resume).
    """
    from pseudolabel.errors import InputError
    from pseudolabel.learn.adapt import adapt_network
    from pseudolabel.learn.distributed import is_rank_zero

    if use_labels:
        context = click.get_current_context()
        given = [
            f"--{name.replace('_', '-')}"
            for name in ("tau", "weighting", "measure")
            if context.get_parameter_source(name) != click.core.ParameterSource.DEFAULT
        ]
        if given:
            raise InputError(f"--labels trains on the stored labels with their own tau and measure; drop {', '.join(given)}")
    if pair_patterns:
        click.echo("--pairs is deprecated; write --keys (same globs).", err=True)
    result = adapt_network(
        proxies,
        network_spec(model_path, model_kwargs, weights, adapter),
        out,
        tau=tau,
        loss=loss_spec,
        weighting=weighting,
        measure=measure,
        keys=(*include, *pair_patterns),
        exclude=exclude,
        scale_decay=scale_decay,
        use_valid=use_valid,
        tau_init=tau_init,
        tau_temperature=tau_temperature,
        tau_penalty=tau_penalty,
        tau_lr_scale=tau_lr_scale,
        steps=steps,
        batch_size=batch_size,
        crop=CROP.parse(crop, "--crop"),
        learning_rate=lr,
        budget=budget,
        holdout_every=holdout_every,
        replay=replay,
        augment=augment,
        run=run_options(**trainer),
        progress=ClickProgress(),
        labels=use_labels,
        log=lambda line: click.echo(line) if is_rank_zero() else None,
    )
    if is_rank_zero():
        logs = result.last_logs
        shown = ", ".join(f"{name} {logs[name]:.4g}" for name in ("loss", "tau", "selected") if name in logs)
        click.echo(f"adapted {result.arch} on {result.pairs} pair(s) for {result.step} steps in {result.wall_seconds:.0f} s -> {out} ({shown})")
        if result.budget is not None and result.budget.get("decided"):
            fitted = result.budget
            click.echo(
                f"budget {fitted['budget_s']:.0f} s: {fitted['steps']} steps fitted at {fitted['step_time_s']:.2f} s/step"
                + (f", refitted {len(fitted['refits'])} time(s), last at step {int(fitted['refits'][-1]['step'])}" if fitted["refits"] else "")
                + (", stopped over budget" if fitted["stopped_over_budget"] else "")
                + f"; {result.threads} CPU thread(s)"
            )
        if result.held_back and result.holdout_start is not None:
            first, last = result.holdout_start.get("holdout_bad3", float("nan")), logs.get("holdout_bad3", float("nan"))
            click.echo(f"held-back pairs ({result.held_back}): bad-3 against their confident labels {first:.2f}% before, {last:.2f}% after")
