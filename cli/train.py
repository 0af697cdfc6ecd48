"""``pseudolabel train``, ``pseudolabel predict`` and ``pseudolabel eval``: deep stereo networks.

Each command is options, messages and one library call: :func:`pseudolabel.learn.supervised.train_network`,
:func:`pseudolabel.learn.predict.predict_pairs` and :func:`pseudolabel.learn.predict.evaluate_pairs`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from pseudolabel.cli._network import MODEL_HELP, json_object, network_options, network_spec
from pseudolabel.cli._trainer import run_options, trainer_options
from pseudolabel.cli.options import ClickProgress, SizeType, scheduler_option, threads_option
from pseudolabel.errors import InputError
from pseudolabel.learn.supervised import TRAIN_RUN

ARCH_HELP = (
    "network name from the registry (madnet, tiny), or package.module:factory building a torch network of your own (its arguments: --arch-kwargs)"
)
SIZE = SizeType("HEIGHTxWIDTH", "256x512")


def _size(text: str, option: str) -> tuple[int, int]:
    size = SIZE.parse(text, option)
    assert size is not None  # SIZE does not accept "full"
    return size


def _arch_kwargs(text: str) -> dict[str, Any]:
    """``--arch-kwargs``: a JSON object."""
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"--arch-kwargs {text!r} is not valid JSON ({error.msg}); e.g. '{{\"radius\": 2}}'") from None
    if not isinstance(kwargs, dict):
        raise InputError(f'--arch-kwargs {text!r} must be a JSON object, e.g. \'{{"upsampling": "bilinear"}}\'')
    return kwargs


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
@network_options(model_kwargs=False)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="final checkpoint (.pt); OUT.partial.pt and OUT.jsonl are written next to it."
)
@click.option("--steps", default=20000, show_default=True, type=int, help="optimisation steps.")
@click.option("--batch-size", default=4, show_default=True, type=int, help="global batch (split over torchrun processes).")
@click.option("--crop", default="256x512", show_default=True, help="random crop HEIGHTxWIDTH.")
@click.option("--lr", default=1e-4, show_default=True, type=float, help="peak learning rate (AdamW).")
@click.option("--max-disp", default=None, type=float, help="ignore ground truth at or above this disparity (pixels).")
@click.option("--no-augment", is_flag=True, help="disable photometric augmentation.")
@trainer_options(TRAIN_RUN, log_help="metrics line (OUT.jsonl) every N steps.")
@click.argument("more_data", nargs=-1, type=click.Path(exists=True))
def train(
    data: tuple[str, ...],
    synth: bool,
    synth_size: str,
    synth_max_disp: int,
    arch: str,
    arch_kwargs: str,
    init_model: str | None,
    weights: str | None,
    adapter: str | None,
    out: str,
    steps: int,
    batch_size: int,
    crop: str,
    lr: float,
    max_disp: float | None,
    no_augment: bool,
    more_data: tuple[str, ...],
    **trainer: Any,
) -> None:
    """Train a stereo network with supervised multi-scale L1 on pixels with ground truth.

    \b
    Examples:
      pseudolabel train --synth --arch madnet --out source.pt --steps 20000
      pseudolabel train --data synth_train/ --arch tiny --out tiny.pt --steps 200 --crop 128x256
      PYTHONPATH=. pseudolabel train --data synth_train/ --arch mynet:build --arch-kwargs '{"width": 32}' --out mine.pt
      torchrun --nproc_per_node 2 -m pseudolabel.cli.main train --synth --out source.pt
    Ctrl-C saves OUT.partial.pt; rerun with --resume to continue.
    """
    from pseudolabel.learn.distributed import is_rank_zero
    from pseudolabel.learn.supervised import train_network

    result = train_network(
        out,
        data=(*data, *more_data),  # `--data LEFT_DIR RIGHT_DIR`
        synth=synth,
        synth_size=_size(synth_size, "--synth-size"),
        synth_max_disp=synth_max_disp,
        arch=arch,
        arch_kwargs=_arch_kwargs(arch_kwargs),
        init=init_model,
        weights=weights,
        adapter=json_object(adapter, "--adapter"),
        steps=steps,
        batch_size=batch_size,
        crop=_size(crop, "--crop"),
        learning_rate=lr,
        max_disp=max_disp,
        augment=not no_augment,
        run=run_options(**trainer),
        progress=ClickProgress(),
    )
    if is_rank_zero():
        logs = ", ".join(f"{k} {v:.4g}" for k, v in result.last_logs.items())
        click.echo(f"trained {arch} for {result.step} steps in {result.wall_seconds:.0f} s -> {out} ({logs})")


@click.command("predict")
@click.option("--model", "model_path", required=True, help=MODEL_HELP)
@network_options()
@click.option("--in", "inputs", multiple=True, required=True, type=click.Path(exists=True), help="dataset folder, or LEFT_DIR RIGHT_DIR.")
@click.argument("more_inputs", nargs=-1, type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output folder.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@threads_option
@click.option("--overwrite", is_flag=True, help="recompute pairs whose outputs already exist (default: skip them).")
@click.option("--force", is_flag=True, hidden=True, help="old name of --overwrite.")
@scheduler_option("the pairs (the network runs on each worker's --device)")
def predict(
    model_path: str,
    model_kwargs: str | None,
    weights: str | None,
    adapter: str | None,
    inputs: tuple[str, ...],
    more_inputs: tuple[str, ...],
    out: str,
    device: str,
    threads: int | None,
    overwrite: bool,
    force: bool,
    scheduler: str | None,
) -> None:
    """Predict the left disparity of every pair: KEY.pfm, KEY.png (KITTI 16-bit, value/256) and KEY_color.png.

    \b
    Example:
      pseudolabel predict --model madnet_synth --in left/ right/ --out pred/
      PYTHONPATH=. pseudolabel predict --model mynet:build --weights mynet.pth --in left/ right/ --out pred/
    Pairs whose three files exist are skipped, so an interrupted run resumes.
    """
    from pseudolabel.learn.predict import predict_pairs

    model = network_spec(model_path, model_kwargs, weights, adapter)
    summary = predict_pairs(
        model,
        [*inputs, *more_inputs],
        out,
        device=device,
        threads=threads,
        force=overwrite or force,
        progress=ClickProgress(),
        scheduler=scheduler or None,
    )
    click.echo(f"predicted {summary.predicted} pair(s) ({summary.skipped} already done) -> {summary.out}")


def _print_table(rows: Sequence[Mapping[str, Any]], mean: Mapping[str, float]) -> None:
    header = f"{'pair':<32} {'EPE':>7} {'bad1':>7} {'bad2':>7} {'bad3':>7} {'D1':>7}"
    click.echo(header)
    for row in [*rows, {"key": "mean", **mean}]:
        click.echo(f"{str(row['key'])[:32]:<32} {row['epe']:7.3f} {row['bad1']:7.2f} {row['bad2']:7.2f} {row['bad3']:7.2f} {row['d1']:7.2f}")


def _has_pairs(folder: str) -> bool:
    """Whether ``folder`` holds stereo pairs (a dataset), not only ground-truth files."""
    from pseudolabel.datasets import discover_pairs

    try:
        return bool(discover_pairs([Path(folder)], skip_unpaired=True))
    except InputError:
        return False


def _evaluate_prediction_files(pred_dir: str, gt_dir: str, gt_scale: float | None) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """``eval --pred P --gt G`` with G a folder of ground-truth files: predictions and ground truth matched by key."""
    from pseudolabel.learn.evaluate_files import ground_truth_of_keys, prediction_keys, score_predictions

    predictions = prediction_keys(pred_dir)
    lookup = ground_truth_of_keys(gt_dir, sorted(predictions), gt_scale)
    rows, mean, skipped = score_predictions(dict(predictions), lookup)
    if skipped:
        click.echo(f"warning: no ground truth for {len(skipped)} prediction(s) (e.g. {skipped[0]}); not evaluated", err=True)
    return rows, mean


@click.command("eval")
@click.option("--model", "model_path", default=None, help=f"network to predict with, then evaluate: {MODEL_HELP}")
@network_options()
@click.option("--data", "data", multiple=True, type=click.Path(exists=True), help="pairs with ground truth (folder, or LEFT_DIR RIGHT_DIR).")
@click.option(
    "--pred", "pred_dir", default=None, type=click.Path(exists=True, file_okay=False), help="folder of KEY.pfm (or KEY.png) written by `predict`."
)
@click.option(
    "--gt",
    "gt_inputs",
    multiple=True,
    type=click.Path(exists=True),
    help="ground truth: a folder of <key>.pfm/.png files (or a native dataset root) for the pairs of --data or the files of --pred; "
    "or, with --pred alone, the pairs with ground truth (same forms as --data).",
)
@click.option(
    "--gt-scale", type=float, default=None, help="divide stored PNG ground-truth values by this (default: 256 for 16-bit PNG, 1 for 8-bit)."
)
@click.option(
    "--mask",
    default=None,
    help="evaluate only inside this named mask of each pair; nonocc = non-occluded pixels (Middlebury nonocc.png, synth/SceneFlow occlusion masks).",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@threads_option
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="also write per-pair and mean metrics as JSON.")
@click.argument("more_inputs", nargs=-1, type=click.Path(exists=True))
def evaluate(
    model_path: str | None,
    model_kwargs: str | None,
    weights: str | None,
    adapter: str | None,
    data: tuple[str, ...],
    pred_dir: str | None,
    gt_inputs: tuple[str, ...],
    mask: str | None,
    device: str,
    threads: int | None,
    json_out: str | None,
    more_inputs: tuple[str, ...],
    gt_scale: float | None,
) -> None:
    """EPE, bad-1/2/3 and KITTI D1 on pixels with ground truth, per pair and on average.

    \b
    Examples:
      pseudolabel eval --model madnet_synth --data tests/data/middlebury/venus
      pseudolabel eval --model madnet_synth --data left/ right/ --gt gt/
      pseudolabel eval --pred pred/ --gt gt/
      pseudolabel eval --pred pred/ --gt synth_val/ --mask nonocc --json scores.json
    gt/ is a folder of <key>.pfm or <key>.png (16-bit, disparity x 256) named like the pairs' keys
    (data/README.md); a native dataset root (KITTI, Middlebury) works too.
    """
    from pseudolabel.io import atomic_write_bytes
    from pseudolabel.learn.predict import evaluate_pairs
    from pseudolabel.outputs import check_output_file

    if (model_path is None) == (pred_dir is None):
        raise InputError("give either --model with --data, or --pred with --gt")
    if model_path is None and (model_kwargs or weights or adapter):
        raise InputError("--model-kwargs, --weights and --adapter go with --model (a network to run), not with --pred")
    # `--data LEFT_DIR RIGHT_DIR` / `--gt LEFT_DIR RIGHT_DIR`: the second folder arrives as an argument.
    if model_path is not None and not (data or more_inputs):
        raise InputError("--model needs --data (the pairs to run it on)")
    if pred_dir is not None and not (gt_inputs or more_inputs):
        raise InputError("--pred needs --gt (a folder of <key>.pfm/.png, or the dataset with ground truth)")
    if json_out:
        check_output_file(json_out, "--json")
    if len(gt_inputs) > 1 and (data or model_path is not None):
        raise InputError("--gt takes one folder of <key>.pfm/.png (or a dataset root) when --data gives the pairs")
    gt_folder = gt_inputs[0] if gt_inputs and (data or model_path is not None) else None
    if pred_dir is not None and not data and len(gt_inputs) == 1 and not more_inputs and not _has_pairs(gt_inputs[0]):
        rows, mean = _evaluate_prediction_files(pred_dir, gt_inputs[0], gt_scale)
    else:
        pairs = (*data, *more_inputs) if (data or model_path is not None) else (*gt_inputs, *more_inputs)
        try:
            model = None if model_path is None else network_spec(model_path, model_kwargs, weights, adapter)
            rows, mean = evaluate_pairs(
                pairs, model=model, predictions=pred_dir, mask=mask, device=device, threads=threads, gt_dir=gt_folder, gt_scale=gt_scale
            )
        except InputError as error:  # the dataset readers name `sgm`'s --in; here the pairs come from --data (or --gt)
            raise InputError(str(error).replace("--in", "--data" if (data or model_path is not None) else "--gt")) from None
    _print_table(rows, mean)
    if json_out:
        atomic_write_bytes(json_out, json.dumps({"pairs": rows, "mean": mean, "mask": mask}, indent=1).encode())
