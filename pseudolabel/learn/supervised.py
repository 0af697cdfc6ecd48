"""Supervised training of a stereo network on labelled pairs: :func:`train_network`.

The loss is the multi-scale L1 of :func:`pseudolabel.learn.losses.multiscale_l1_loss` on the pixels
with ground truth; the samples come from labelled pairs on disk (KITTI, Middlebury, synth folders) or
are rendered on the fly (:mod:`pseudolabel.synth`). ``pseudolabel train`` is a thin wrapper of
:func:`train_network`. This module imports torch only inside :func:`train_network`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pseudolabel.errors import InputError
from pseudolabel.learn.run import RunOptions, TrainResult, prepare_output, set_threads

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from pseudolabel.learn.networks import OpenedNetwork
    from pseudolabel.learn.samples import Batch
    from pseudolabel.models.registry import StereoOutput
    from pseudolabel.progress import Progress

__all__ = ["DEFAULT_ARCH", "DEFAULT_CROP", "DEFAULT_SYNTH_SIZE", "TRAIN_RUN", "train_network"]

DEFAULT_ARCH = "madnet"
#: random crop (height, width) of the training samples.
DEFAULT_CROP = (256, 512)
#: (height, width) of the rendered synthetic pairs.
DEFAULT_SYNTH_SIZE = (256, 512)
#: Run settings of supervised training: 100 warm-up steps, a progress checkpoint every 500 steps, a metrics line every 10.
TRAIN_RUN = RunOptions(warmup_steps=100, checkpoint_every=500, log_every=10)


def _network(
    arch: str, arch_kwargs: Mapping[str, Any], init: str | os.PathLike[str] | None, weights: str | None, adapter: Mapping[str, Any] | None
) -> OpenedNetwork:
    """The network to train: ``init``'s network with ``arch_kwargs`` over its arguments, a network of the
    user's (``arch`` = ``package.module:factory``, optional ``weights``), or a fresh registry network."""
    from pseudolabel.learn.networks import NetworkSpec, OpenedNetwork, open_network
    from pseudolabel.models.external import is_factory_spec
    from pseudolabel.models.registry import build_network

    external = is_factory_spec(arch)
    if not external and (weights is not None or adapter):
        raise InputError("--weights and --adapter are for a network of your own (--arch package.module:factory)")
    if init is not None:
        if weights is not None:
            raise InputError("give --init (a checkpoint of this package) or --weights (a state dict of your network), not both")
        opened = open_network(NetworkSpec(str(init), kwargs=arch_kwargs, adapter=adapter), option="--init", kwargs_option="--arch-kwargs")
        if opened.label != arch:
            raise InputError(f"--init {init} is a {opened.label!r} network; use --arch {opened.label}")
        return opened
    if external:
        # a network trained from a random start has no sign convention yet: only its shape is checked
        spec = NetworkSpec(arch, kwargs=arch_kwargs, weights=weights, adapter=adapter)
        return open_network(spec, option="--arch", kwargs_option="--arch-kwargs", check_sign=weights is not None)
    kwargs = dict(arch_kwargs)
    try:
        model = build_network(arch, **kwargs)
    except (TypeError, ValueError) as error:
        raise InputError(f"--arch-kwargs {json.dumps(kwargs)}: {error}") from None
    return OpenedNetwork(model, arch, kwargs, arch, arch)


def train_network(
    out: str | os.PathLike[str],
    *,
    data: Sequence[str | os.PathLike[str]] = (),
    synth: bool = False,
    synth_size: tuple[int, int] = DEFAULT_SYNTH_SIZE,
    synth_max_disp: int = 96,
    arch: str = DEFAULT_ARCH,
    arch_kwargs: Mapping[str, Any] | None = None,
    init: str | os.PathLike[str] | None = None,
    weights: str | None = None,
    adapter: Mapping[str, Any] | None = None,
    steps: int = 20000,
    batch_size: int = 4,
    crop: tuple[int, int] = DEFAULT_CROP,
    learning_rate: float = 1e-4,
    max_disp: float | None = None,
    augment: bool = True,
    run: RunOptions = TRAIN_RUN,
    progress: Progress | None = None,
) -> TrainResult:
    """Train a stereo network with supervised multi-scale L1 on the pixels with ground truth.

    Args:
        out: final checkpoint (``.pt``); ``OUT.partial.pt`` and ``OUT.jsonl`` are written next to it.
        data: labelled pairs: dataset folders (KITTI, Middlebury, synth) or ``[LEFT_DIR, RIGHT_DIR]``.
        synth: train on synthetic pairs rendered on the fly instead (exactly one of ``data`` and ``synth``).
        synth_size: (height, width) of the rendered pairs; ``synth_max_disp`` their largest disparity, pixels.
        arch: network name in the registry (``madnet``, ``tiny``), or ``package.module:factory`` of a
            network of your own (:mod:`pseudolabel.models.external`); ``arch_kwargs`` its constructor
            (or factory) arguments.
        init: start from these weights (checkpoint or shipped name); its constructor arguments are
            kept under ``arch_kwargs``.
        weights: a state dict file to start a network of your own from (``--weights``).
        adapter: adapter fields of a network of your own over those it declares (``--adapter``).
        steps, batch_size, learning_rate: optimisation steps, global batch (pairs), AdamW peak rate.
        crop: (height, width) of the random crops.
        max_disp: ignore ground truth at or above this disparity (pixels).
        augment: photometric augmentation (:class:`pseudolabel.learn.samples.AugmentConfig`).
        run: how the run executes (device, precision, schedule, checkpoints, resume, ...).
        progress: receives the trainer's progress (``None``: nothing shown).

    Returns:
        The :class:`~pseudolabel.learn.run.TrainResult`.

    Raises:
        InputError: both or neither of ``data`` and ``synth``, a non-positive count, an unknown
            network or bad arguments, weights that do not fit, no pairs, an existing ``out``.
        KeyboardInterrupt: after saving ``OUT.partial.pt`` on Ctrl-C.
    """
    import torch

    from pseudolabel.learn.losses import multiscale_l1_loss
    from pseudolabel.learn.networks import probe_network
    from pseudolabel.learn.samples import AugmentConfig, StereoPairDataset, SyntheticStereoDataset, find_pairs
    from pseudolabel.learn.trainer import Trainer
    from pseudolabel.models.devices import resolve_device
    from pseudolabel.models.external import is_factory_spec
    from pseudolabel.models.registry import available_networks

    data = [str(path) for path in data]
    if synth == bool(data):
        raise InputError("give exactly one of --data DIR and --synth")
    if steps <= 0 or batch_size <= 0:
        raise InputError("--steps and --batch-size must be positive")
    if not is_factory_spec(arch) and arch not in available_networks():
        raise InputError(f"--arch {arch!r}: unknown network; choose one of {', '.join(available_networks())}, or package.module:factory")
    out_path = Path(out)
    prepare_output(out_path, run.resume, run.overwrite)
    set_threads(run.threads)
    augmentation = AugmentConfig() if augment else None
    dataset: SyntheticStereoDataset | StereoPairDataset
    if synth:
        from pseudolabel.synth.scene import SynthConfig

        synth_config = SynthConfig(width=synth_size[1], height=synth_size[0], max_disp=synth_max_disp)
        dataset = SyntheticStereoDataset(synth_config, seed=run.seed, crop=crop, augment=augmentation)
    else:
        dataset = StereoPairDataset(find_pairs(data), seed=run.seed, crop=crop, augment=augmentation)

    torch.manual_seed(run.seed)
    opened = _network(arch, arch_kwargs or {}, init, weights, adapter)
    first = dataset[0]
    probe_network(
        opened.network, first["left"], first["right"], training=True, device=resolve_device(run.device, int(os.environ.get("LOCAL_RANK", "0")))
    )
    training_args = {
        "command": "train",
        "data": data,
        "synth": synth,
        "synth_size": f"{synth_size[0]}x{synth_size[1]}",
        "synth_max_disp": synth_max_disp,
        "crop": list(crop),
        "max_disp": max_disp,
        "augment": None if augmentation is None else augmentation.__dict__,
        "init": None if init is None else str(init),
        "weights": None if weights is None else str(Path(weights).resolve()),
    }

    def loss_fn(output: StereoOutput, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        return multiscale_l1_loss(output, batch, max_disparity=max_disp)

    config = run.trainer_config(out_path, steps, batch_size, learning_rate)
    trainer = Trainer(opened.network, opened.arch, opened.arch_kwargs, dataset, loss_fn, config, training_args=training_args, progress=progress)
    return trainer.fit()
