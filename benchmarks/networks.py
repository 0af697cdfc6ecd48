"""Training throughput and inference time of the stereo networks on this CPU.

Measures, for every network of the registry (``madnet``, ``tiny``):

* training throughput: pairs per second of one optimisation step (forward, multi-scale L1,
  backward, AdamW) on random 256x512 crops, batch 2 (data loading excluded);
* inference time per KITTI-sized pair (375x1242, padded internally), no gradients;
* with ``--evaluate MODEL``: the errors of a trained network on every real scene of
  ``/work/shared/data/manifest.json`` and on a synthetic validation split.

Each figure is the median of ``--repeats`` timed runs after one warm-up run. The table is written
into the ``## Stereo networks`` section of BENCHMARKS.md (only that section's parts are replaced).

Usage::

    python benchmarks/networks.py --threads 1 --repeats 5
    python benchmarks/networks.py --no-timing --evaluate models/weights/madnet_synth.pt --threads 1
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Any

import click
import torch

from pseudolabel.datasets import evaluation_mask, occlusion_free
from pseudolabel.learn.losses import multiscale_l1_loss
from pseudolabel.models.devices import bfloat16_supported
from pseudolabel.models.registry import available_networks, build_network

SECTION = "## Stereo networks"
BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def time_training_step(name: str, batch: int, height: int, width: int, repeats: int, dtype: torch.dtype | None = None) -> list[float]:
    """Seconds of ``repeats`` optimisation steps (after one warm-up step) on random tensors.

    ``dtype``: ``None`` for float32, ``torch.bfloat16`` for the trainer's CPU mixed precision (autocast).
    """
    torch.manual_seed(0)
    model = build_network(name).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    left, right = torch.rand(batch, 3, height, width), torch.rand(batch, 3, height, width)
    sample = {"disparity": torch.rand(batch, 1, height, width) * 64, "valid": torch.ones(batch, 1, height, width, dtype=torch.bool)}
    times = []
    for run in range(repeats + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss, _ = multiscale_l1_loss(model(left, right), sample)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if run:
            times.append(time.perf_counter() - start)
    return times


@torch.no_grad()
def time_inference(name: str, height: int, width: int, repeats: int) -> list[float]:
    """Seconds of ``repeats`` forward passes on one (height, width) pair (after one warm-up)."""
    torch.manual_seed(0)
    model = build_network(name).eval()
    left, right = torch.rand(1, 3, height, width), torch.rand(1, 3, height, width)
    times = []
    for run in range(repeats + 1):
        start = time.perf_counter()
        model(left, right)
        if run:
            times.append(time.perf_counter() - start)
    return times


def replace_part(text: str, part: str, body: str) -> str:
    """``text`` with part ``part`` of the ``## Stereo networks`` section replaced by ``body``.

    Parts are delimited by ``<!-- part -->`` and ``<!-- /part -->`` inside the section, so that
    rerunning only the timing keeps the evaluation table and vice versa. Other sections are untouched.
    """
    section_pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    match = section_pattern.search(text)
    section = match.group(0) if match else f"{SECTION}\n\n"
    block = f"<!-- {part} -->\n{body.strip()}\n<!-- /{part} -->"
    part_pattern = re.compile(rf"<!-- {part} -->.*?<!-- /{part} -->", re.S)
    if part_pattern.search(section):
        section = part_pattern.sub(lambda _: block, section, count=1)
    else:
        section = section.rstrip() + "\n\n" + block + "\n"
    section = section.rstrip() + "\n\n"
    if match:
        return text[: match.start()] + section + text[match.end() :]
    return text.rstrip() + "\n\n" + section


def manifest_pairs(data_root: Path) -> list[Any]:
    """Every scene of ``DATA/manifest.json`` as :class:`pseudolabel.datasets.PairInfo` (with its ``group``)."""
    from pseudolabel.datasets import PairInfo

    manifest = json.loads((data_root / "manifest.json").read_text())
    pairs = []
    for scene in manifest["scenes"]:
        masks = {name: data_root / path for name, path in (scene.get("masks") or {}).items()}
        pairs.append(
            (
                scene["group"],
                PairInfo(
                    key=scene["id"],
                    left=data_root / scene["left"],
                    right=data_root / scene["right"],
                    gt_left=data_root / scene["gt_left"],
                    gt_scale=scene.get("gt_scale"),
                    max_disp=scene.get("max_disp"),
                    masks=masks,
                ),
            )
        )
    return pairs


def evaluate_model(model_name: str, data_root: Path, synth_count: int, synth_seed: int, threads: int) -> tuple[str, list[dict[str, Any]]]:
    """Errors of a trained network on every real scene of the manifest and on the synthetic validation split.

    Returns:
        (Markdown tables, per-scene rows).
    """
    from pseudolabel.io import read_disparity, read_image
    from pseudolabel.learn.checkpoint import load_checkpoint, load_model
    from pseudolabel.learn.predict import predict_disparity
    from pseudolabel.metrics import average_metrics, disparity_metrics
    from pseudolabel.synth.scene import SynthConfig, pair_seed, render_pair

    model = load_model(model_name)
    payload = load_checkpoint(model_name)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for group, pair in manifest_pairs(data_root):
        start = time.perf_counter()
        prediction = predict_disparity(model, read_image(pair.left), read_image(pair.right))
        seconds = time.perf_counter() - start
        ground_truth = read_disparity(pair.gt_left, pair.gt_scale)
        nonocc = None
        if "nonocc" in pair.masks:
            nonocc = evaluation_mask(pair.masks["nonocc"])
        elif "occlusion" in pair.masks:
            nonocc = occlusion_free(pair.masks["occlusion"])
        metrics = disparity_metrics(prediction, ground_truth)
        metrics_noc = disparity_metrics(prediction, ground_truth, nonocc) if nonocc is not None else None
        rows.append(
            {
                "group": group,
                "key": pair.key,
                "seconds": seconds,
                "size": list(prediction.shape),
                **metrics,
                "bad3_noc": metrics_noc["bad3"] if metrics_noc else float("nan"),
            }
        )
    config = SynthConfig()
    for index in range(synth_count):
        pair = render_pair(config, pair_seed(synth_seed, index))
        start = time.perf_counter()
        prediction = predict_disparity(model, pair.left, pair.right)
        seconds = time.perf_counter() - start
        metrics = disparity_metrics(prediction, pair.disp_left)
        metrics_noc = disparity_metrics(prediction, pair.disp_left, ~pair.occ_left)
        rows.append(
            {
                "group": "synth-val",
                "key": f"synth-{index:03d}",
                "seconds": seconds,
                "size": list(prediction.shape),
                **metrics,
                "bad3_noc": metrics_noc["bad3"],
            }
        )
    total = time.perf_counter() - started

    def line(name: str, selected: list[dict[str, Any]]) -> str:
        mean = average_metrics(selected)
        noc = [r["bad3_noc"] for r in selected if r["bad3_noc"] == r["bad3_noc"]]
        noc_text = f"{sum(noc) / len(noc):.2f}" if noc else "-"
        return f"| {name} | {len(selected)} | {mean['epe']:.2f} | {mean['bad1']:.2f} | {mean['bad3']:.2f} | {noc_text} | {mean['d1']:.2f} |"

    header = ["| scenes | pairs | EPE (px) | bad-1 % | bad-3 % | bad-3 % non-occluded | D1 % |", "|---|---:|---:|---:|---:|---:|---:|"]
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    real = [r for r in rows if r["group"] != "synth-val"]
    summary = [*header, *(line(g, rs) for g, rs in groups.items()), line("all real scenes", real)]
    per_scene = ["| scene | EPE | bad-1 % | bad-3 % | bad-3 % noc | D1 % |", "|---|---:|---:|---:|---:|---:|"]
    for row in real:
        noc = f"{row['bad3_noc']:.2f}" if row["bad3_noc"] == row["bad3_noc"] else "-"
        per_scene.append(f"| {row['key']} | {row['epe']:.2f} | {row['bad1']:.2f} | {row['bad3']:.2f} | {noc} | {row['d1']:.2f} |")
    step = payload.get("step")
    steps_text = f"{step} steps"
    if (payload.get("training_args") or {}).get("init"):
        steps_text = f"{step} steps of its last stage, which started from earlier weights (--init): the card gives all stages"
    text = "\n".join(
        [
            f"Errors of the shipped `{Path(model_name).stem}` (MADNet trained on synthetic pairs only, {steps_text}; see "
            f"`models/weights/madnet_synth.md`), at each image's full resolution, all pixels with ground truth (non-occluded: "
            f"the v2 `nonocc` masks and the synthetic/SceneFlow occlusion masks). Synthetic validation: {synth_count} pairs "
            f"`render_pair(SynthConfig(), pair_seed({synth_seed}, i))` (512x256, disparity < 96), never seen in training. "
            f"`python benchmarks/networks.py --no-timing --evaluate {model_name} --threads {threads}` ({total:.0f} s).",
            "",
            *summary,
            "",
            "<details><summary>per real scene</summary>",
            "",
            *per_scene,
            "",
            "</details>",
        ]
    )
    return text, rows


@click.command()
@click.option("--threads", default=1, show_default=True, help="torch CPU threads.")
@click.option("--repeats", default=5, show_default=True, help="timed runs per figure (median reported).")
@click.option("--batch", default=2, show_default=True, help="training batch.")
@click.option("--timing/--no-timing", default=True, show_default=True, help="time training steps and inference.")
@click.option(
    "--evaluate",
    "evaluate_model_name",
    default=None,
    help="also evaluate this checkpoint (e.g. models/weights/madnet_synth.pt) on every real scene and the synthetic validation split.",
)
@click.option(
    "--data-root", default="/work/shared/data", show_default=True, type=click.Path(exists=True, file_okay=False), help="folder with manifest.json."
)
@click.option("--synth-count", default=50, show_default=True, help="synthetic validation pairs.")
@click.option("--synth-seed", default=1000, show_default=True, help="seed of the synthetic validation split.")
@click.option("--json-out", default=None, type=click.Path(dir_okay=False), help="write the per-scene evaluation rows as JSON.")
@click.option("--write/--no-write", default=True, show_default=True, help="update BENCHMARKS.md.")
def run(
    threads: int,
    repeats: int,
    batch: int,
    timing: bool,
    evaluate_model_name: str | None,
    data_root: str,
    synth_count: int,
    synth_seed: int,
    json_out: str | None,
    write: bool,
) -> None:
    """Time training steps and inference of every registered network; optionally evaluate a trained one."""
    torch.set_num_threads(threads)
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    if timing:
        load = os.getloadavg()[0]
        rows = []
        for name in available_networks():
            train_times = time_training_step(name, batch, 256, 512, repeats)
            infer_times = time_inference(name, 375, 1242, repeats)
            train_median = statistics.median(train_times)
            # the trainer's --amp on a CPU with native bfloat16 (blank where it would only be emulated)
            bf16_median = statistics.median(time_training_step(name, batch, 256, 512, repeats, torch.bfloat16)) if bfloat16_supported() else None
            infer_median = statistics.median(infer_times)
            rows.append(
                (
                    name,
                    sum(p.numel() for p in build_network(name).parameters()),
                    batch / train_median,
                    train_median,
                    bf16_median,
                    infer_median,
                    min(infer_times),
                    max(infer_times),
                )
            )
            click.echo(f"{name}: {batch / train_median:.2f} pairs/s training at 256x512, {infer_median:.3f} s per 375x1242 pair")
        lines = [
            f"`python benchmarks/networks.py --threads {threads} --repeats {repeats}` on {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores shared with other jobs (1-minute load average {load:.1f} at the start), torch {torch.__version__}, "
            f"{threads} torch thread(s). Medians of {repeats} runs after one warm-up; training = forward + multi-scale L1 + backward + AdamW "
            f"on random 256x512 crops, batch {batch}, data loading excluded, in float32 and with the trainer's bfloat16 autocast (`--amp` on a CPU "
            f"with native bfloat16); inference = one 375x1242 (KITTI-sized) pair, no gradients, float32.",
            "",
            "| network | parameters | training pairs/s (256x512) | s per training step | s per step, bfloat16 | inference s per KITTI pair (median) | min | max |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, params, pairs_per_second, step, bf16_step, infer, fastest, slowest in rows:
            bf16_text = "" if bf16_step is None else f"{bf16_step:.2f}"
            lines.append(f"| {name} | {params:,} | {pairs_per_second:.2f} | {step:.2f} | {bf16_text} | {infer:.3f} | {fastest:.3f} | {slowest:.3f} |")
        body = "\n".join(lines)
        click.echo(body)
        text = replace_part(text, "timing", body)
    if evaluate_model_name:
        body, eval_rows = evaluate_model(evaluate_model_name, Path(data_root), synth_count, synth_seed, threads)
        click.echo(body)
        text = replace_part(text, "evaluation", body)
        if json_out:
            Path(json_out).write_text(json.dumps(eval_rows, indent=1))
    if write:
        BENCHMARKS.write_text(text)


if __name__ == "__main__":
    run()
