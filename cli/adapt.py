"""``pseudolabel adapt``: guided-confidence domain adaptation of a stereo network with proxy labels.

Reads the images named in a proxies file, the SGM proxy disparity and a confidence map
(``confidence/<measure>``), and fine-tunes a network trained elsewhere (``pseudolabel train``) with
the losses of :mod:`pseudolabel.learn.losses` and the threshold of :mod:`pseudolabel.learn.tau`, using the
trainer of ``pseudolabel train`` (:class:`pseudolabel.learn.trainer.Trainer`): same device, mixed
precision, JSON-lines log, checkpoints, ``--resume``, Ctrl-C and ``torchrun`` behaviour.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import click

from pseudolabel.cli._trainer import (
    check_output,
    set_threads,
    trainer_config,
    trainer_options,
)
from pseudolabel.errors import InputError

#: Defaults of the command (``pseudolabel adapt --help`` shows them); chosen on the benchmark of
#: ``benchmarks/adaptation.py`` (BENCHMARKS.md, section Adaptation).
DEFAULT_TAU = "learnable"
DEFAULT_LOSS = "guided=1"
#: confidence weighting: as good as mask on the adapted scenes, 4 points better on unseen ones (BENCHMARKS.md).
DEFAULT_WEIGHTING = "confidence"
#: 2,500 steps took 13.5 minutes on the two threads of a 2-core CPU with native bfloat16 (``--amp``);
#: in float32 a step costs 1.6-1.8x as much (there ``--steps 1500`` keeps to about 14 minutes).
DEFAULT_STEPS = 2500
DEFAULT_BATCH = 1
DEFAULT_CROP = "full"
#: 3e-4 reached 13.52% bad-3 at 2,500 steps where 2e-4 reached 13.66% and 1e-4 14.67% (BENCHMARKS.md).
DEFAULT_LR = 3e-4
DEFAULT_TAU_LR_SCALE = 100.0
DEFAULT_SCALE_DECAY = 0.0


def _parse_size(text: str, option: str) -> tuple[int, int] | None:
    """``HEIGHTxWIDTH`` -> (height, width); ``full`` -> None (whole images)."""
    if text.strip().lower() == "full":
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", text)
    if match is None:
        raise InputError(f"{option} {text!r}: write HEIGHTxWIDTH, e.g. 256x320, or full")
    return int(match.group(1)), int(match.group(2))


class _MirroredForward:
    """Forward call that also runs the network on the mirrored pair, in the same batch.

    The ``lr`` loss needs the right-view disparity, i.e. the network's output for the mirrored pair
    ``(flip(right), flip(left))``. Running it as the second half of one batch (instead of a second
    call) keeps one forward pass per step, which DistributedDataParallel requires. The objective's
    ``predict`` then returns that stored half (see :meth:`predict`).
    """

    def __init__(self) -> None:
        self.mirrored: Any = None

    def __call__(self, network: Any, batch: dict[str, Any]) -> Any:
        import torch

        from pseudolabel.models.registry import StereoOutput

        left, right = batch["left"], batch["right"]
        flipped_left, flipped_right = torch.flip(right, dims=[-1]), torch.flip(left, dims=[-1])
        output = network(torch.cat((left, flipped_left)), torch.cat((right, flipped_right)))
        size = left.shape[0]
        self.mirrored = StereoOutput(disparity=output.disparity[size:], multiscale=[level[size:] for level in output.multiscale])
        return StereoOutput(disparity=output.disparity[:size], multiscale=[level[:size] for level in output.multiscale])

    def predict(self, left: Any, right: Any) -> Any:
        """The output for the mirrored pair of the current step (called by the ``lr`` term with exactly that pair)."""
        if self.mirrored is None:  # pragma: no cover - the trainer always runs __call__ first
            raise RuntimeError("the mirrored pass has not run yet")
        return self.mirrored


@click.command("adapt")
@click.option(
    "--proxies",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="proxies file of `pseudolabel sgm` with confidence/<measure> (from `pseudolabel confidence score`).",
)
@click.option(
    "--model", "model_path", required=True, help="source network: checkpoint (.pt) of `pseudolabel train` or a shipped model name (madnet_synth)."
)
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
@click.option("--measure", default="ccnn", show_default=True, help="confidence map to read: confidence/<measure>.")
@click.option(
    "--pairs", "pair_patterns", multiple=True, help="adapt only on the pairs whose key matches this shell pattern (repeatable; default: all)."
)
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
@click.option("--steps", default=DEFAULT_STEPS, show_default=True, type=int, help="optimisation steps.")
@click.option("--batch-size", default=DEFAULT_BATCH, show_default=True, type=int, help="global batch (split over torchrun processes).")
@click.option(
    "--crop",
    default=DEFAULT_CROP,
    show_default=True,
    help="random crop HEIGHTxWIDTH (smaller images are padded), or full: whole images (pairs of different sizes need --batch-size 1 per process).",
)
@click.option("--lr", default=DEFAULT_LR, show_default=True, type=float, help="learning rate of the network (AdamW).")
@trainer_options(warmup=0, checkpoint_every=100, log_every=1, log_help="metrics line (OUT.jsonl, with the current tau) every N steps.")
def adapt(
    proxies: Path,
    model_path: str,
    out: Path,
    tau: str,
    loss_spec: str,
    weighting: str,
    measure: str,
    pair_patterns: tuple[str, ...],
    scale_decay: float,
    use_valid: bool,
    tau_init: float,
    tau_temperature: float,
    tau_penalty: float | None,
    tau_lr_scale: float,
    steps: int,
    batch_size: int,
    crop: str,
    lr: float,
    **run_options: Any,
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
      pseudolabel eval --model adapted.pt --data data/middlebury/2006
      torchrun --nproc_per_node 2 -m pseudolabel.cli.main adapt --proxies target.h5 --model source.pt --out a.pt --batch-size 2
    Ctrl-C saves OUT.partial.pt; rerun with --resume to continue.
    """
    # cheap checks first: a mistake is reported before any file is read or network built
    if steps <= 0 or batch_size <= 0:
        raise InputError("--steps and --batch-size must be positive")
    if not tau_lr_scale > 0:
        raise InputError(f"--tau-lr-scale must be positive; got {tau_lr_scale}")
    crop_size = _parse_size(crop, "--crop")
    if not proxies.is_file():
        raise InputError(f"--proxies {proxies}: no such file; create it with `pseudolabel sgm --in ... --out {proxies}`")
    out_path = Path(out)
    seed = run_options["seed"]
    check_output(out_path, run_options["resume"], run_options["force"])

    import torch

    from pseudolabel.learn.adaptation import AdaptationObjective
    from pseudolabel.learn.adaptation_data import (
        ProxyAdaptationDataset,
        describe_pairs,
        load_adaptation_pairs,
        select_keys,
    )
    from pseudolabel.learn.checkpoint import (
        load_checkpoint,
        network_from_checkpoint,
        resolve_model_path,
    )
    from pseudolabel.learn.losses import build_loss_terms
    from pseudolabel.learn.tau import DEFAULT_PENALTY_WEIGHT, build_tau
    from pseudolabel.learn.trainer import Trainer
    from pseudolabel.store.proxies import open_proxies

    terms = build_loss_terms(loss_spec)
    names = {term.name for term in terms}
    tau_module = build_tau(
        tau,
        init=tau_init,
        temperature=tau_temperature,
        penalty_weight=DEFAULT_PENALTY_WEIGHT if tau_penalty is None else tau_penalty,
    )
    objective = AdaptationObjective(tau_module, terms, weighting=weighting, scale_decay=scale_decay)
    source_path = resolve_model_path(model_path)
    payload = load_checkpoint(source_path)
    arch = str(payload["arch"])
    arch_kwargs = dict(payload.get("arch_kwargs") or {})

    set_threads(run_options["threads"])
    with open_proxies(proxies) as store:
        keys = select_keys(store.keys(), pair_patterns, proxies)
    pairs = load_adaptation_pairs(proxies, measure, keys, use_valid=use_valid, with_ground_truth="l1" in names)
    if crop_size is None and len({pair.proxy.shape for pair in pairs}) > 1 and batch_size > int(os.environ.get("WORLD_SIZE", "1")):
        raise InputError(
            "--crop full: the pairs differ in size, so a batch can hold one pair per process; use --batch-size 1 (per process) or a crop size"
        )
    dataset = ProxyAdaptationDataset(pairs, crop=crop_size, seed=seed)

    torch.manual_seed(seed)
    model = network_from_checkpoint(payload)
    forward_fn = None
    if "lr" in names:
        mirrored = _MirroredForward()
        forward_fn = mirrored
        objective.set_predict(mirrored.predict)

    config = trainer_config(out_path, steps, batch_size, lr, **run_options)
    training_args = {
        "command": "adapt",
        "proxies": str(proxies.resolve()),
        "source_model": str(source_path.resolve()),
        "source_step": int(payload.get("step", 0)),
        "tau": tau,
        "loss": objective.loss_spec(),
        "weighting": weighting,
        "scale_decay": scale_decay,
        "measure": measure,
        "pairs": list(pair_patterns),
        "use_valid": use_valid,
        "tau_init": tau_init,
        "tau_temperature": tau_temperature,
        "tau_penalty": getattr(tau_module, "penalty_weight", None),
        "tau_lr_scale": tau_lr_scale,
        "crop": "full" if crop_size is None else list(crop_size),
        "data": describe_pairs(pairs),
    }
    last_tau: dict[str, float] = {}

    def loss_fn(output: Any, batch: Any) -> Any:
        loss, logs = objective(output, batch)
        if "tau" in logs:
            last_tau.update(tau=logs["tau"], tau_min=logs["tau_min"], tau_max=logs["tau_max"], selected=logs["selected"])
        return loss, logs

    def extra_state() -> dict[str, Any]:
        return {"adaptation": objective.describe(), "tau": dict(last_tau)}

    trainer = Trainer(
        model,
        arch,
        arch_kwargs,
        dataset,
        loss_fn,
        config,
        extra_modules={"tau": objective.tau},
        extra_state=extra_state,
        training_args=training_args,
        forward_fn=forward_fn,
        extra_lr_scale={"tau": tau_lr_scale},
    )
    result = trainer.fit()
    if int(os.environ.get("RANK", "0")) == 0:
        logs = result.last_logs
        shown = ", ".join(f"{name} {logs[name]:.4g}" for name in ("loss", "tau", "selected") if name in logs)
        click.echo(f"adapted {arch} on {len(pairs)} pair(s) for {result.step} steps in {result.wall_seconds:.0f} s -> {out_path} ({shown})")
