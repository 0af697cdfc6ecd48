"""Guided-confidence domain adaptation of a stereo network with proxy labels: :func:`adapt_network`.

Reads the images named in a proxies file, the SGM proxy disparity and a confidence map
(``confidence/<measure>``), and fine-tunes a network trained elsewhere (``pseudolabel train``) with
the losses of :mod:`pseudolabel.learn.losses` and the threshold of :mod:`pseudolabel.learn.tau`
(objective: :class:`pseudolabel.learn.adaptation.AdaptationObjective`), using the same
:class:`~pseudolabel.learn.trainer.Trainer` as supervised training: same device, mixed precision,
JSON-lines log, checkpoints, resume, Ctrl-C and ``torchrun`` behaviour.

``pseudolabel adapt`` is a thin wrapper of :func:`adapt_network`; its defaults are the constants
below. This module imports torch only inside the functions that run networks, so that the command
line can read the defaults without it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pseudolabel.errors import InputError
from pseudolabel.learn.adapt_selection import LABELS_TAU, describe_selection, labels_measure, use_stored_labels
from pseudolabel.learn.run import RunOptions, TrainResult, prepare_output, set_threads

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from pseudolabel.learn.adaptation import AdaptationObjective
    from pseudolabel.learn.networks import NetworkSpec
    from pseudolabel.learn.samples import Batch
    from pseudolabel.learn.trainer import LossFunction
    from pseudolabel.models.registry import StereoOutput
    from pseudolabel.progress import Progress

__all__ = [
    "ADAPT_RUN",
    "DEFAULT_BATCH",
    "DEFAULT_BUDGET",
    "DEFAULT_LOSS",
    "DEFAULT_LR",
    "DEFAULT_REPLAY",
    "DEFAULT_SCALE_DECAY",
    "DEFAULT_STEPS",
    "DEFAULT_TAU",
    "DEFAULT_TAU_LR_SCALE",
    "DEFAULT_WEIGHTING",
    "AdaptResult",
    "MirroredForward",
    "adapt_network",
]

#: Defaults of :func:`adapt_network` and ``pseudolabel adapt``; chosen on the benchmark of
#: ``benchmarks/adaptation.py`` (BENCHMARKS.md, section Adaptation).
DEFAULT_TAU = "learnable"
#: The guided loss plus L2-SP toward the source weights (weight 0.01), with half the samples synthetic
#: pairs of exact ground truth (``DEFAULT_REPLAY``): chosen on Middlebury 2014 (bad-3 on the three scenes
#: not adapted on: 27.8% against 33.4% for the guided loss alone; source network 27.0%) and checked on
#: the KITTI rig (unseen frame: 10.5% against 20.4%; source 28.7%), BENCHMARKS ``## Adaptation on unseen
#: frames of the same rig``. With a source network that knows something, keeping close to it pays.
DEFAULT_LOSS = "guided=1,l2sp=0.01"
#: share of the adaptation samples replaced by synthetic pairs with exact ground truth (see DEFAULT_LOSS).
DEFAULT_REPLAY = 0.5
#: confidence weighting: as good as mask on the adapted scenes, 4 points better on unseen ones (BENCHMARKS.md).
DEFAULT_WEIGHTING = "confidence"
#: 2,500 steps took 13.5 minutes on the two threads of a 2-core CPU with native bfloat16 (``--amp``);
#: in float32 a step costs 1.6-1.8x as much (there ``--steps 1500`` keeps to about 14 minutes).
DEFAULT_STEPS = 2500
#: The default run is fitted to this time budget (``--budget``; ``DEFAULT_STEPS`` is then the most it
#: takes). Chosen on Middlebury 2014 (four scenes adapted on, three held out) and checked on the KITTI
#: rig (51 frames of a drive adapted on, an unseen frame of the same rig), BENCHMARKS ``## Adaptation
#: on unseen frames of the same rig``: on frames adaptation did not see, 2, 4 and 13 minutes gave
#: 40.9/39.8/41.4% bad-3 (Middlebury) and 22.2/23.2/26.0% (KITTI): past a few minutes the network
#: learns the footage it adapts on, not the rig. Longer budgets still help on the frames adapted on
#: (Middlebury 14.3/10.3/8.2%). 4 minutes also keep the default far inside the 15 minutes asked of a
#: 2-core CPU without native bfloat16. The budget counts from the call (loading the pairs and the
#: network included; the evaluations of held-back frames are reserved inside it). Pass
#: ``budget=None`` (``--budget none``) for exactly ``steps`` steps.
#: With the GPU-trained source network and today's loss and replay (2026-11-30), 1, 2 and 4 minutes gave
#: 13.2/15.1/10.5% (KITTI) and 35.6/34.8/27.8% (Middlebury, unseen scenes): 4 minutes stayed then.
#: 2026-12-01, with the calibrated CCNN's labels and budgets that are used to their end (the earlier runs
#: stopped 20-28% early): Middlebury unseen 31.5/29.1% (4m, two seeds), 28.9% (8m), 26.6/26.8% (12m, two
#: seeds); KITTI 12.7/11.1% (4m), 11.5% (8m), 10.7% (12m; 10.4% in float32 with AVX2 only, 699 s). So 12
#: minutes, chosen on Middlebury and checked on KITTI; with SGM and scoring of 51 KITTI frames (about a
#: minute) it stays inside the 15 minutes asked of a 2-core CPU without native bfloat16.
DEFAULT_BUDGET = "12m"
DEFAULT_BATCH = 1
#: whole images (``pseudolabel adapt --crop full``).
DEFAULT_CROP: tuple[int, int] | None = None
#: 3e-4 reached 13.52% bad-3 at 2,500 steps where 2e-4 reached 13.66% and 1e-4 14.67% (BENCHMARKS.md).
DEFAULT_LR = 3e-4
DEFAULT_TAU_LR_SCALE = 100.0
DEFAULT_SCALE_DECAY = 0.0
#: Run settings of an adaptation: no warm-up, a progress checkpoint every 100 steps, a metrics line every step.
ADAPT_RUN = RunOptions(warmup_steps=0, checkpoint_every=100, log_every=1)


@dataclass
class AdaptResult(TrainResult):
    """:class:`~pseudolabel.learn.run.TrainResult` of an adaptation, with the network's name and the pair count."""

    arch: str = ""
    pairs: int = 0
    #: pairs held back from training (``holdout_every``) and their agreement before the first step.
    held_back: int = 0
    holdout_start: dict[str, float] | None = None
    #: the budget's decision (:meth:`pseudolabel.learn.budget.StepBudget.describe`), or ``None``.
    budget: dict[str, Any] | None = None
    #: CPU threads used.
    threads: int = 0


class MirroredForward:
    """Forward call that also runs the network on the mirrored pair, in the same batch.

    The ``lr`` loss needs the right-view disparity, i.e. the network's output for the mirrored pair
    ``(flip(right), flip(left))``. Running it as the second half of one batch (instead of a second
    call) keeps one forward pass per step, which DistributedDataParallel requires. The objective's
    ``predict`` then returns that stored half (see :meth:`predict`).
    """

    def __init__(self) -> None:
        self.mirrored: StereoOutput | None = None

    def __call__(self, network: nn.Module, batch: Batch) -> StereoOutput:
        """The output for ``batch["left"], batch["right"]`` ((B, 3, H, W) each); the mirrored half is kept for :meth:`predict`."""
        import torch

        from pseudolabel.models.registry import StereoOutput

        left, right = batch["left"], batch["right"]
        flipped_left, flipped_right = torch.flip(right, dims=[-1]), torch.flip(left, dims=[-1])
        output = network(torch.cat((left, flipped_left)), torch.cat((right, flipped_right)))
        size = left.shape[0]
        self.mirrored = StereoOutput(disparity=output.disparity[size:], multiscale=[level[size:] for level in output.multiscale])
        return StereoOutput(disparity=output.disparity[:size], multiscale=[level[:size] for level in output.multiscale])

    def predict(self, left: torch.Tensor | None, right: torch.Tensor | None) -> StereoOutput:
        """The output for the mirrored pair of the current step (called by the ``lr`` term with exactly that pair)."""
        if self.mirrored is None:  # pragma: no cover - the trainer always runs __call__ first
            raise RuntimeError("the mirrored pass has not run yet")
        return self.mirrored


def _check_settings(steps: int, batch_size: int, tau_lr_scale: float, proxies: Path) -> None:
    """The cheap checks, made before any file is read or network built."""
    if steps <= 0 or batch_size <= 0:
        raise InputError("--steps and --batch-size must be positive")
    if not tau_lr_scale > 0:
        raise InputError(f"--tau-lr-scale must be positive; got {tau_lr_scale}")
    if not proxies.is_file():
        raise InputError(f"--proxies {proxies}: no such file; create it with `pseudolabel sgm --in ... --out {proxies}`")


def _fixed_tau(tau: str | float) -> float | None:
    """``tau`` as a number when it is one (``0.8``), else ``None`` (``learnable``, ``net``)."""
    try:
        return float(tau)
    except (TypeError, ValueError):
        return None


def _tau_logger(objective: AdaptationObjective) -> tuple[LossFunction, Callable[[], dict[str, Any]]]:
    """The trainer's ``loss_fn`` (the objective, remembering the last tau) and ``extra_state`` (settings and that tau)."""
    last_tau: dict[str, float] = {}

    def loss_fn(output: StereoOutput, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        loss, logs = objective(output, batch)
        if "tau" in logs:
            last_tau.update(tau=logs["tau"], tau_min=logs["tau_min"], tau_max=logs["tau_max"], selected=logs["selected"])
        return loss, logs

    def extra_state() -> dict[str, Any]:
        return {"adaptation": objective.describe(), "tau": dict(last_tau)}

    return loss_fn, extra_state


def adapt_network(
    proxies: str | os.PathLike[str],
    model: str | os.PathLike[str] | NetworkSpec,
    out: str | os.PathLike[str],
    *,
    tau: str | float = DEFAULT_TAU,
    loss: str = DEFAULT_LOSS,
    weighting: str = DEFAULT_WEIGHTING,
    measure: str = "ccnn",
    keys: Sequence[str] = (),
    exclude: Sequence[str] = (),
    scale_decay: float = DEFAULT_SCALE_DECAY,
    use_valid: bool = False,
    tau_init: float = 0.5,
    tau_temperature: float = 0.05,
    tau_penalty: float | None = None,
    tau_lr_scale: float = DEFAULT_TAU_LR_SCALE,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH,
    crop: tuple[int, int] | None = DEFAULT_CROP,
    learning_rate: float = DEFAULT_LR,
    budget: str | float | None = DEFAULT_BUDGET,
    holdout_every: int = 0,
    replay: float = DEFAULT_REPLAY,
    augment: bool = False,
    run: RunOptions = ADAPT_RUN,
    progress: Progress | None = None,
    labels: bool = False,
    log: Callable[[str], None] | None = None,
) -> AdaptResult:
    """Adapt a stereo network to the pairs of a proxies file with its confident proxy disparities.

    The guided loss is the mean |d_net - d_proxy| over the pixels whose confidence exceeds tau
    (Tonioni et al., ICCV 2017 / TPAMI 2019), each weighted by its confidence (``weighting="mask"``:
    all equally); no ground truth is used (except by the ``l1`` term, the supervised upper bound).

    Args:
        proxies: HDF5 file of ``pseudolabel sgm`` with ``confidence/<measure>`` in every pair.
        model: source network: a checkpoint (``.pt``), a shipped model name (``madnet_synth``), or
            ``package.module:factory`` of a network of your own; a :class:`~pseudolabel.learn.networks.NetworkSpec`
            adds the factory's arguments, weights and adapter (:mod:`pseudolabel.models.external`).
        out: adapted checkpoint (``.pt``); ``OUT.partial.pt`` and ``OUT.jsonl`` are written next to it.
        tau: a number in [0, 1) (fixed), ``"learnable"`` or ``"net"`` (:func:`pseudolabel.learn.tau.build_tau`).
        loss: weighted terms ``name=weight`` (:func:`pseudolabel.learn.losses.build_loss_terms`).
        weighting: guided loss: selected pixels weigh 1 (``"mask"``) or their confidence.
        measure: confidence map to read.
        keys, exclude: globs choosing the pairs (:func:`pseudolabel.selection.select_keys`; empty ``keys`` = all).
        scale_decay: guided and l1 also on the coarser outputs, level k weighted ``scale_decay ** k``.
        use_valid: also drop proxy pixels that failed SGM's left-right check.
        tau_init, tau_temperature, tau_penalty: start, temperature and penalty weight of a learned tau
            (``tau_penalty`` ``None``: :data:`pseudolabel.learn.tau.DEFAULT_PENALTY_WEIGHT`).
        tau_lr_scale: learning rate of tau's parameters, as a multiple of ``learning_rate``.
        steps, batch_size, learning_rate: optimisation steps, global batch (pairs), AdamW peak rate.
        crop: ``(height, width)`` random crops, or ``None`` for whole images.
        budget: time for the whole call, ``"10m"``, ``"90s"``, ``"1h"`` or seconds: the number of steps
            is fitted to the measured speed (at most ``steps``) and the schedule ends with it
            (:mod:`pseudolabel.learn.budget`); ``None`` = exactly ``steps`` steps.
        holdout_every: hold back every k-th pair (sorted keys) from training and report the network's
            agreement with their confident labels during the run (:mod:`pseudolabel.learn.holdout`; labels =
            confidence above a fixed ``tau``, else above ``pseudolabel labels``' default); 0 = none.
        replay: share of the samples replaced by synthetic pairs with exact ground truth
            (:mod:`pseudolabel.learn.replay`); 0 = none; default ``DEFAULT_REPLAY``.
        augment: photometric augmentation of the adaptation pairs (brightness, contrast, gamma, colour,
            noise; :class:`pseudolabel.learn.samples.AugmentConfig`), drawn per sample from the seed.
        run: how the run executes (device, precision, checkpoints, resume, ...).
        progress: receives the trainer's progress (``None``: nothing shown).
        labels: train on the stored ``labels`` of ``pseudolabel labels`` exactly as written (each labelled
            pixel weighing 1; ``tau``, ``weighting`` and ``measure`` are then not used;
            :func:`pseudolabel.learn.adapt_selection.use_stored_labels`).
        log: told, before training, which confidence map and tau the run uses and how many pixels
            they select (:func:`pseudolabel.learn.adapt_selection.describe_selection`).

    Returns:
        An :class:`AdaptResult`; the learned tau is in ``last_logs`` and in the checkpoint
        (``extra_modules.tau``, ``extra_state.tau``).

    Raises:
        InputError: a setting out of range, a missing file, a pair or measure not found, an
            existing ``out`` without ``run.resume``/``run.overwrite``.
        KeyboardInterrupt: after saving ``OUT.partial.pt`` on Ctrl-C.
    """
    started = time.perf_counter()
    proxies_path, out_path = Path(proxies), Path(out)
    _check_settings(steps, batch_size, tau_lr_scale, proxies_path)
    from pseudolabel.learn.budget import StepBudget, parse_duration
    from pseudolabel.learn.holdout import HoldoutEvaluator, split_holdout

    budget_s = parse_duration(budget)
    if not 0.0 <= replay < 1.0:
        raise InputError(f"--replay {replay}: give the share of synthetic samples, in [0, 1)")
    prepare_output(out_path, run.resume, run.overwrite)
    if labels:
        if use_valid:
            raise InputError("--labels trains on the stored labels as they are; drop --use-valid")
        tau, weighting = LABELS_TAU, "mask"

    import torch

    from pseudolabel.learn.adaptation import AdaptationObjective
    from pseudolabel.learn.adaptation_data import ProxyAdaptationDataset, describe_pairs, load_adaptation_pairs
    from pseudolabel.learn.losses import build_loss_terms
    from pseudolabel.learn.networks import open_network, probe_network
    from pseudolabel.learn.samples import AugmentConfig
    from pseudolabel.learn.tau import DEFAULT_PENALTY_WEIGHT, build_tau
    from pseudolabel.learn.trainer import Trainer
    from pseudolabel.models.devices import resolve_device
    from pseudolabel.selection import select_keys
    from pseudolabel.store.proxies import open_proxies

    terms = build_loss_terms(loss)
    names = {term.name for term in terms}
    penalty_weight = DEFAULT_PENALTY_WEIGHT if tau_penalty is None else tau_penalty
    tau_module = build_tau(tau, init=tau_init, temperature=tau_temperature, penalty_weight=penalty_weight)
    objective = AdaptationObjective(tau_module, terms, weighting=weighting, scale_decay=scale_decay)
    torch.manual_seed(run.seed)
    opened = open_network(model)

    threads = set_threads(run.threads)
    with open_proxies(proxies_path) as store:
        chosen = select_keys(store.keys(), keys, exclude, source=str(proxies_path))
    chosen, held_keys = split_holdout(chosen, holdout_every)
    if not chosen:
        raise InputError(f"--holdout-every {holdout_every}: no pair is left to adapt on")
    if labels:
        measure = labels_measure(proxies_path, chosen)
    pairs = load_adaptation_pairs(proxies_path, measure, chosen, use_valid=use_valid, with_ground_truth="l1" in names)
    labels_info = use_stored_labels(proxies_path, pairs) if labels else ""
    # labels of the held-back pairs: the run's own threshold when it is fixed, else that of `pseudolabel labels`
    fixed_tau = _fixed_tau(tau)
    evaluator = HoldoutEvaluator(load_adaptation_pairs(proxies_path, measure, held_keys), tau=fixed_tau) if held_keys else None
    if crop is None and len({pair.proxy.shape for pair in pairs}) > 1 and batch_size > int(os.environ.get("WORLD_SIZE", "1")):
        raise InputError(
            "--crop full: the pairs differ in size, so a batch can hold one pair per process; use --batch-size 1 (per process) or a crop size"
        )
    dataset: torch.utils.data.Dataset = ProxyAdaptationDataset(pairs, crop=crop, seed=run.seed, augment=AugmentConfig() if augment else None)
    if replay > 0:
        from pseudolabel.learn.replay import ReplayDataset

        dataset = ReplayDataset(dataset, replay, seed=run.seed)  # type: ignore[arg-type]
    if "l2sp" in names:
        from pseudolabel.learn.regularisers import L2SP

        objective.set_regulariser("l2sp", L2SP(opened.network))  # the source weights, before any step

    # a network of the user's runs once on the first sample: a protocol break stops here, before any output
    first = dataset[0]
    probe_network(
        opened.network, first["left"], first["right"], training=True, device=resolve_device(run.device, int(os.environ.get("LOCAL_RANK", "0")))
    )
    if log is not None:  # what will be learnt from, once the network is known to work
        log(describe_selection(pairs, tau, tau_init, f"confidence/{measure}", labels_info))
    forward_fn = None
    if "lr" in names:
        mirrored = MirroredForward()
        forward_fn = mirrored
        objective.set_predict(mirrored.predict)

    training_args = {
        "command": "adapt",
        "proxies": str(proxies_path.resolve()),
        "source_model": opened.source,
        "source_step": opened.step,
        "tau": tau,
        "loss": objective.loss_spec(),
        "weighting": weighting,
        "scale_decay": scale_decay,
        "measure": measure,
        "labels": labels_info or None,
        "pairs": list(keys),
        "exclude": list(exclude),
        "use_valid": use_valid,
        "tau_init": tau_init,
        "tau_temperature": tau_temperature,
        "tau_penalty": getattr(tau_module, "penalty_weight", None),
        "tau_lr_scale": tau_lr_scale,
        "crop": "full" if crop is None else list(crop),
        "data": describe_pairs(pairs),
        "budget_s": budget_s,
        "holdout_every": holdout_every,
        "held_back": list(held_keys),
        "replay": replay,
        "augment": augment,
        "threads": threads,
    }
    loss_fn, extra_state = _tau_logger(objective)
    trainer = Trainer(
        opened.network,
        opened.arch,
        opened.arch_kwargs,
        dataset,
        loss_fn,
        run.trainer_config(out_path, steps, batch_size, learning_rate),
        extra_modules={"tau": objective.tau},
        extra_state=extra_state,
        training_args=training_args,
        forward_fn=forward_fn,
        extra_lr_scale={"tau": tau_lr_scale},
        progress=progress,
        budget=StepBudget(budget_s, steps, started=started) if budget_s else None,
        evaluate_fn=evaluator,
    )
    result = trainer.fit()
    return AdaptResult(
        result.step,
        result.wall_seconds,
        result.last_logs,
        result.checkpoint,
        arch=opened.label,
        pairs=len(pairs),
        held_back=len(held_keys),
        holdout_start=trainer.initial_evaluation,
        budget=trainer.budget.describe() if trainer.budget is not None else None,
        threads=threads,
    )
