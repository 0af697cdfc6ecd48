"""``pseudolabel train``, ``pseudolabel predict`` and ``pseudolabel eval``: deep stereo networks."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from pseudolabel.cli._trainer import (
    check_output,
    set_threads,
    trainer_config,
    trainer_options,
)
from pseudolabel.errors import InputError

ARCH_HELP = "network name from the registry (madnet, tiny)"


def _parse_size(text: str, option: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", text)
    if match is None:
        raise InputError(f"{option} {text!r}: write HEIGHTxWIDTH, e.g. 256x512")
    return int(match.group(1)), int(match.group(2))


def _gather_inputs(inputs: Sequence[str], extra: Sequence[str], option: str) -> list[str]:
    paths = [*inputs, *extra]
    if not paths:
        raise InputError(f"{option}: give a dataset folder (KITTI, Middlebury, synth) or LEFT_DIR RIGHT_DIR")
    return paths


def _discover(paths: Sequence[str]) -> list[Any]:
    from pseudolabel.datasets import discover_pairs

    pairs = discover_pairs([Path(p) for p in paths])
    if not pairs:
        raise InputError(f"{' '.join(paths)}: no stereo pairs found; check the folder layout (KITTI, Middlebury, synth, or LEFT_DIR RIGHT_DIR)")
    return list(pairs)


def _safe_key(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(key)).strip("_") or "pair"


# ----------------------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------------------


@click.command("train")
@click.option(
    "--data", "data", multiple=True, type=click.Path(exists=True), help="labelled pairs: a KITTI/Middlebury/synth folder, or LEFT_DIR RIGHT_DIR."
)
@click.option("--synth", is_flag=True, help="train on synthetic pairs rendered on the fly (pseudolabel.synth).")
@click.option("--synth-size", default="256x512", show_default=True, help="HEIGHTxWIDTH of rendered synthetic pairs.")
@click.option("--synth-max-disp", default=96, show_default=True, type=int, help="largest disparity of synthetic pairs (pixels).")
@click.option("--arch", default="madnet", show_default=True, help=ARCH_HELP)
@click.option("--arch-kwargs", default="{}", show_default=True, help="JSON dict of network constructor arguments.")
@click.option("--init", "init_model", default=None, help="start from these weights (checkpoint or shipped name) instead of a random init.")
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="final checkpoint (.pt); OUT.partial.pt and OUT.jsonl are written next to it."
)
@click.option("--steps", default=20000, show_default=True, type=int, help="optimisation steps.")
@click.option("--batch-size", default=4, show_default=True, type=int, help="global batch (split over torchrun processes).")
@click.option("--crop", default="256x512", show_default=True, help="random crop HEIGHTxWIDTH.")
@click.option("--lr", default=1e-4, show_default=True, type=float, help="peak learning rate (AdamW).")
@click.option("--max-disp", default=None, type=float, help="ignore ground truth at or above this disparity (pixels).")
@click.option("--no-augment", is_flag=True, help="disable photometric augmentation.")
@trainer_options(warmup=100, checkpoint_every=500, log_every=10, log_help="metrics line (OUT.jsonl) every N steps.")
@click.argument("more_data", nargs=-1, type=click.Path(exists=True))
def train(
    data: tuple[str, ...],
    synth: bool,
    synth_size: str,
    synth_max_disp: int,
    arch: str,
    arch_kwargs: str,
    init_model: str | None,
    out: str,
    steps: int,
    batch_size: int,
    crop: str,
    lr: float,
    max_disp: float | None,
    no_augment: bool,
    more_data: tuple[str, ...],
    **run_options: Any,
) -> None:
    """Train a stereo network with supervised multi-scale L1 on pixels with ground truth.

    \b
    Examples:
      pseudolabel train --synth --arch madnet --out source.pt --steps 20000
      pseudolabel train --data synth_train/ --arch tiny --out tiny.pt --steps 200 --crop 128x256
      torchrun --nproc_per_node 2 -m pseudolabel.cli.main train --synth --out source.pt
    Ctrl-C saves OUT.partial.pt; rerun with --resume to continue.
    """
    import torch

    from pseudolabel.learn.checkpoint import load_checkpoint
    from pseudolabel.learn.samples import (
        AugmentConfig,
        StereoPairDataset,
        SyntheticStereoDataset,
    )
    from pseudolabel.learn.trainer import Trainer, multiscale_l1_loss
    from pseudolabel.models.registry import available_networks, build_network

    data = (*data, *more_data)  # `--data LEFT_DIR RIGHT_DIR`
    if synth == bool(data):
        raise InputError("give exactly one of --data DIR and --synth")
    if steps <= 0 or batch_size <= 0:
        raise InputError("--steps and --batch-size must be positive")
    out_path = Path(out)
    try:
        kwargs = json.loads(arch_kwargs)
    except json.JSONDecodeError as error:
        raise InputError(f"--arch-kwargs {arch_kwargs!r} is not valid JSON ({error.msg}); e.g. '{{\"radius\": 2}}'") from None
    if not isinstance(kwargs, dict):
        raise InputError(f'--arch-kwargs {arch_kwargs!r} must be a JSON object, e.g. \'{{"upsampling": "bilinear"}}\'')
    if arch not in available_networks():
        raise InputError(f"--arch {arch!r}: unknown network; choose one of {', '.join(available_networks())}")
    crop_size = _parse_size(crop, "--crop")
    seed = run_options["seed"]
    check_output(out_path, run_options["resume"], run_options["force"])
    set_threads(run_options["threads"])
    augment = None if no_augment else AugmentConfig()
    if synth:
        from pseudolabel.synth.scene import SynthConfig

        synth_height, synth_width = _parse_size(synth_size, "--synth-size")
        synth_config = SynthConfig(width=synth_width, height=synth_height, max_disp=synth_max_disp)
        dataset: Any = SyntheticStereoDataset(synth_config, seed=seed, crop=crop_size, augment=augment)
    else:
        dataset = StereoPairDataset(_discover(data), seed=seed, crop=crop_size, augment=augment)

    torch.manual_seed(seed)
    if init_model is not None:
        payload = load_checkpoint(init_model, option="--init")
        if payload["arch"] != arch:
            raise InputError(f"--init {init_model} is a {payload['arch']!r} network; use --arch {payload['arch']}")
        # the checkpoint's constructor arguments, with those given on the command line on top
        kwargs = {**dict(payload.get("arch_kwargs") or {}), **kwargs}
    try:
        model = build_network(arch, **kwargs)
    except (TypeError, ValueError) as error:
        raise InputError(f"--arch-kwargs {arch_kwargs}: {error}") from None
    if init_model is not None:
        try:
            model.load_state_dict(payload["model"])
        except RuntimeError:
            raise InputError(
                f"--arch-kwargs {arch_kwargs} change the shape of the network, so the weights of --init {init_model} do not fit; leave those arguments out"
            ) from None
    config = trainer_config(out_path, steps, batch_size, lr, **run_options)
    training_args = {
        "command": "train",
        "data": list(data),
        "synth": synth,
        "synth_size": synth_size,
        "synth_max_disp": synth_max_disp,
        "crop": list(crop_size),
        "max_disp": max_disp,
        "augment": None if augment is None else augment.__dict__,
        "init": init_model,
    }

    def loss_fn(output: Any, batch: Any) -> Any:
        return multiscale_l1_loss(output, batch, max_disparity=max_disp)

    trainer = Trainer(model, arch, kwargs, dataset, loss_fn, config, training_args=training_args)
    result = trainer.fit()
    if int(__import__("os").environ.get("RANK", "0")) == 0:
        logs = ", ".join(f"{k} {v:.4g}" for k, v in result.last_logs.items())
        click.echo(f"trained {arch} for {result.step} steps in {result.wall_seconds:.0f} s -> {out_path} ({logs})")


# ----------------------------------------------------------------------------------------------
# predict
# ----------------------------------------------------------------------------------------------


def colorize_disparity(disparity: np.ndarray, max_value: float | None = None) -> np.ndarray:
    """(H, W) disparity in pixels -> (H, W, 3) ``uint8`` RGB picture (magma colour map; black = unknown)."""
    import cv2

    finite = np.isfinite(disparity)
    if max_value is None:
        max_value = float(np.percentile(disparity[finite], 99)) if finite.any() else 1.0
    scaled = np.clip(np.where(finite, disparity, 0) / max(max_value, 1e-6), 0, 1)
    bgr = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_MAGMA)
    bgr[~finite] = 0
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@click.command("predict")
@click.option("--model", "model_path", required=True, help="checkpoint (.pt) or shipped model name (madnet_synth).")
@click.option("--in", "inputs", multiple=True, required=True, type=click.Path(exists=True), help="dataset folder, or LEFT_DIR RIGHT_DIR.")
@click.argument("more_inputs", nargs=-1, type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output folder.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--threads", default=None, type=int, help="torch CPU threads.")
@click.option("--force", is_flag=True, help="recompute pairs whose outputs already exist.")
def predict(model_path: str, inputs: tuple[str, ...], more_inputs: tuple[str, ...], out: str, device: str, threads: int | None, force: bool) -> None:
    """Predict the left disparity of every pair: KEY.pfm, KEY.png (KITTI 16-bit, value/256) and KEY_color.png.

    \b
    Example:
      pseudolabel predict --model madnet_synth --in left/ right/ --out pred/
    Pairs whose three files exist are skipped, so an interrupted run resumes.
    """
    import torch

    from pseudolabel.io import read_image, write_disparity_png16, write_image, write_pfm
    from pseudolabel.learn.checkpoint import load_model
    from pseudolabel.learn.predict import predict_disparity
    from pseudolabel.models.devices import resolve_device

    if threads:
        torch.set_num_threads(threads)
    pairs = _discover(_gather_inputs(inputs, more_inputs, "--in"))
    torch_device = resolve_device(device)
    model = load_model(model_path, torch_device)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = 0
    for pair in pairs:
        key = _safe_key(pair.key)
        targets = [out_dir / f"{key}.pfm", out_dir / f"{key}.png", out_dir / f"{key}_color.png"]
        if not force and all(t.exists() for t in targets):
            continue
        disparity = predict_disparity(model, read_image(pair.left), read_image(pair.right), torch_device)
        write_pfm(targets[0], disparity)
        write_disparity_png16(targets[1], disparity)
        write_image(targets[2], colorize_disparity(disparity, getattr(pair, "max_disp", None)))
        done += 1
    click.echo(f"predicted {done} pair(s) ({len(pairs) - done} already done) -> {out_dir}")


# ----------------------------------------------------------------------------------------------
# eval
# ----------------------------------------------------------------------------------------------


def _pair_mask(pair: Any, name: str | None) -> np.ndarray | None:
    """The evaluation mask ``name`` of a pair (True = evaluate), or None."""
    if name is None:
        return None
    from pseudolabel.io import read_image

    masks = getattr(pair, "masks", None) or {}
    if name in ("nonocc", "noc") and "nonocc" not in masks:
        if "occlusion" in masks:  # 255 = occluded
            image = read_image(masks["occlusion"])
            return (image[..., 0] if image.ndim == 3 else image) <= 127
        return None  # KITTI disp_noc and similar: the ground truth itself is non-occluded only
    if name not in masks:
        raise InputError(f"--mask {name}: pair {pair.key} has no such mask (it has: {', '.join(masks) or 'none'})")
    image = read_image(masks[name])
    if image.ndim == 3:
        image = image[..., 0]
    return image > 127


def evaluate_pairs(pairs: Sequence[Any], predictions: Sequence[np.ndarray], mask: str | None = None) -> list[dict[str, Any]]:
    """Metrics (:func:`pseudolabel.metrics.disparity_metrics`) of every pair; rows with ``key`` added."""
    from pseudolabel.io import read_disparity
    from pseudolabel.metrics import disparity_metrics

    rows = []
    for pair, prediction in zip(pairs, predictions):
        ground_truth = read_disparity(pair.gt_left, pair.gt_scale)
        rows.append({"key": str(pair.key), **disparity_metrics(prediction, ground_truth, _pair_mask(pair, mask))})
    return rows


def _print_table(rows: Sequence[dict[str, Any]], mean: dict[str, float]) -> None:
    header = f"{'pair':<32} {'EPE':>7} {'bad1':>7} {'bad2':>7} {'bad3':>7} {'D1':>7}"
    click.echo(header)
    for row in [*rows, {"key": "mean", **mean}]:
        click.echo(f"{str(row['key'])[:32]:<32} {row['epe']:7.3f} {row['bad1']:7.2f} {row['bad2']:7.2f} {row['bad3']:7.2f} {row['d1']:7.2f}")


@click.command("eval")
@click.option("--model", "model_path", default=None, help="checkpoint or shipped model name: predict, then evaluate.")
@click.option("--data", "data", multiple=True, type=click.Path(exists=True), help="pairs with ground truth (folder, or LEFT_DIR RIGHT_DIR).")
@click.option(
    "--pred", "pred_dir", default=None, type=click.Path(exists=True, file_okay=False), help="folder of KEY.pfm (or KEY.png) written by `predict`."
)
@click.option("--gt", "gt_inputs", multiple=True, type=click.Path(exists=True), help="ground-truth dataset for --pred (same forms as --data).")
@click.option(
    "--mask",
    default=None,
    help="evaluate only inside this named mask of each pair; nonocc = non-occluded pixels (Middlebury nonocc.png, synth/SceneFlow occlusion masks).",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--threads", default=None, type=int, help="torch CPU threads.")
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="also write per-pair and mean metrics as JSON.")
@click.argument("more_inputs", nargs=-1, type=click.Path(exists=True))
def evaluate(
    model_path: str | None,
    data: tuple[str, ...],
    pred_dir: str | None,
    gt_inputs: tuple[str, ...],
    mask: str | None,
    device: str,
    threads: int | None,
    json_out: str | None,
    more_inputs: tuple[str, ...],
) -> None:
    """EPE, bad-1/2/3 and KITTI D1 on pixels with ground truth, per pair and on average.

    \b
    Examples:
      pseudolabel eval --model madnet_synth --data tests/data/middlebury/venus
      pseudolabel eval --model madnet_synth --data left/ right/
      pseudolabel eval --pred pred/ --gt synth_val/ --mask nonocc --json scores.json
    """
    from pseudolabel.io import atomic_write_bytes, read_disparity, read_image
    from pseudolabel.metrics import average_metrics

    if (model_path is None) == (pred_dir is None):
        raise InputError("give either --model with --data, or --pred with --gt")
    # `--data LEFT_DIR RIGHT_DIR` / `--gt LEFT_DIR RIGHT_DIR`: the second folder arrives as an argument.
    if model_path is not None:
        data = (*data, *more_inputs)
    else:
        gt_inputs = (*gt_inputs, *more_inputs)
    if model_path is not None:
        if not data:
            raise InputError("--model needs --data (pairs with ground truth)")
        import torch

        from pseudolabel.learn.checkpoint import load_model
        from pseudolabel.learn.predict import predict_disparity
        from pseudolabel.models.devices import resolve_device

        if threads:
            torch.set_num_threads(threads)
        pairs = _discover(data)
        torch_device = resolve_device(device)
        model = load_model(model_path, torch_device)
        predictions = [predict_disparity(model, read_image(p.left), read_image(p.right), torch_device) for p in pairs]
    else:
        if not gt_inputs:
            raise InputError("--pred needs --gt (the dataset with ground truth)")
        pairs = _discover(gt_inputs)
        predictions = []
        for pair in pairs:
            key = _safe_key(pair.key)
            candidates = [Path(pred_dir) / f"{key}.pfm", Path(pred_dir) / f"{key}.png"]
            found = next((c for c in candidates if c.exists()), None)
            if found is None:
                raise InputError(f"--pred {pred_dir}: no {key}.pfm or {key}.png for pair {pair.key}; run `pseudolabel predict` on the same data")
            predictions.append(read_disparity(found))
    missing_gt = [p.key for p in pairs if getattr(p, "gt_left", None) is None]
    if missing_gt:
        raise InputError(f"{len(missing_gt)} pair(s) have no ground truth (e.g. {missing_gt[0]}); evaluation needs it")
    rows = evaluate_pairs(pairs, predictions, mask)
    mean = average_metrics(rows)
    _print_table(rows, mean)
    if json_out:
        atomic_write_bytes(json_out, json.dumps({"pairs": rows, "mean": mean, "mask": mask}, indent=1).encode())
