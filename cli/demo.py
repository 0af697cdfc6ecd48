"""``pseudolabel demo`` (the whole pipeline on the scenes the repository ships) and ``pseudolabel show``
(pictures of any proxies file).

The demo runs the package's own commands, in this process and with the same arguments a user would
type (each step prints its command line):

1. ``pseudolabel sgm`` on ``tests/data`` (Middlebury tsukuba, venus, Baby1 and one KITTI 2012 frame);
2. ``pseudolabel confidence score`` with the shipped CCNN (and the conventional measures, for the
   sparsification curves);
3. ``pseudolabel labels`` at the default tau;
4. the shipped synthetic-trained network (``madnet_synth``) predicts every scene;
5. ``pseudolabel adapt`` fine-tunes it on the same scenes with the confident proxies only (no ground
   truth: the online, unsupervised setting of Tonioni et al.);
6. the adapted network predicts every scene again;
7. ground truth (used only here) scores SGM, the labels and the network before and after; the
   table is printed and ``report.html`` (:mod:`pseudolabel.viz.report`) is written.

A rerun resumes: finished proxies, confidences and a finished adaptation with the same settings are
kept. Torch is imported only when the networks run.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import click
import numpy as np

from pseudolabel.cli.options import key_options
from pseudolabel.errors import InputError
from pseudolabel.viz.show import SHOW_REPORT_LIMIT

#: Default steps of the demo's adaptation: the demo ends in under 5 minutes on a 2-core CPU that
#: other jobs do not keep busy (BENCHMARKS.md ``## Demo``), and the network clearly improves.
DEMO_STEPS: int = 60
#: Crop and batch of the demo's adaptation (``pseudolabel adapt`` defaults to whole images; on the
#: shipped scenes 60 steps of batch 1 on these crops adapt as well as 60 of batch 2, at half the time).
DEMO_CROP: str = "256x320"
DEMO_BATCH: int = 1
#: Learning rate of the demo's 60 steps (the figures of BENCHMARKS.md ``## Demo``); ``pseudolabel
#: adapt``'s default, 3e-4, is chosen for its 2,500 steps on whole images.
DEMO_LR: float = 1e-4
#: torch CPU threads of the demo: on this project's 2-core machine, shared with other jobs, 60 adaptation
#: steps took 25 s with 1 thread and 170-600 s with 2 (BENCHMARKS.md ``## Demo``).
DEMO_THREADS: int = 1
#: The source network: the shipped MADNet trained on synthetic data only.
DEMO_MODEL: str = "madnet_synth"

ROW_BEFORE = "network before (source)"
ROW_AFTER = "network after (adapted)"


def shipped_scenes() -> Path:
    """``tests/data`` of the repository this package was installed from (an editable install or a clone)."""
    import pseudolabel

    return Path(pseudolabel.__file__).resolve().parents[1] / "tests" / "data"


def _display_path(path: Path) -> str:
    """``path`` relative to the working folder when it lies below it, else absolute."""
    absolute = path.resolve()
    try:
        return str(absolute.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(absolute)


def _run_command(module: str, attribute: str, arguments: Sequence[str], step: str) -> None:
    """Run a ``pseudolabel`` sub-command in this process, printing its command line first."""
    import importlib

    command = getattr(importlib.import_module(module), attribute)
    click.secho(f"\n{step}: pseudolabel {' '.join(shlex.quote(a) for a in arguments)}", bold=True, err=True)
    command.main(args=list(arguments[1:]), prog_name=f"pseudolabel {arguments[0]}", standalone_mode=False)


def _resolve_source(model: str) -> Path:
    from pseudolabel.learn.checkpoint import resolve_model_path, shipped_weights_dir

    try:
        return resolve_model_path(model)
    except InputError:
        if model == DEMO_MODEL:
            raise InputError(
                f"the shipped source network {shipped_weights_dir() / (DEMO_MODEL + '.pt')} is missing; "
                "use a complete clone of the repository, or pass --model PATH (a checkpoint of `pseudolabel train`)"
            ) from None
        raise


def _adapt_arguments(proxies: Path, model: str, source: Path, adapted: Path, steps: int, device: str, seed: int, threads: int) -> list[str]:
    """``pseudolabel adapt`` arguments (``model`` as the user named it when it is a shipped name);
    ``--resume`` after an interruption, else a fresh run."""
    shown_model = model if model == source.stem and not Path(model).suffix else _display_path(source)
    arguments = [
        "adapt",
        "--proxies",
        _display_path(proxies),
        "--model",
        shown_model,
        "--out",
        _display_path(adapted),
        "--tau",
        "learnable",
        "--steps",
        str(steps),
        "--batch-size",
        str(DEMO_BATCH),
        "--crop",
        DEMO_CROP,
        "--lr",
        f"{DEMO_LR:g}",
        "--device",
        device,
        "--threads",
        str(threads),
        "--seed",
        str(seed),
        "--checkpoint-every",
        "30",
        "--log-every",
        "5",
    ]
    partial = adapted.with_suffix(".partial.pt")
    arguments.append("--resume" if partial.is_file() and not adapted.exists() else "--force")
    return arguments


def _finished_adaptation(adapted: Path, source: Path, steps: int) -> bool:
    """Whether ``adapted`` is a finished demo adaptation of ``source`` (unchanged since) with ``steps`` steps."""
    if not adapted.is_file() or adapted.with_suffix(".partial.pt").exists():
        return False
    if adapted.stat().st_mtime < source.stat().st_mtime:
        return False
    from pseudolabel.learn.checkpoint import load_checkpoint

    try:
        payload = load_checkpoint(adapted)
    except InputError:
        return False
    args = payload.get("training_args") or {}
    return int(payload.get("step", -1)) == steps and args.get("source_model") == str(source.resolve())


def _predict_all(model_path: Path, proxies_path: Path, keys: Sequence[str], device: str, label: str) -> dict[str, np.ndarray]:
    """Disparity (float32 (H, W), pixels) of every pair with the network of ``model_path``."""
    import torch

    from pseudolabel.io import read_image
    from pseudolabel.learn.checkpoint import load_model
    from pseudolabel.learn.predict import predict_disparity
    from pseudolabel.models.devices import resolve_device
    from pseudolabel.store.proxies import find_pair_file, open_proxies

    torch_device = resolve_device(device)
    model = load_model(model_path, torch_device)
    predictions: dict[str, np.ndarray] = {}
    with open_proxies(proxies_path) as proxies, click.progressbar(keys, label=label, show_pos=True, show_eta=True, file=sys.stderr) as bar:
        for key in bar:
            attrs = proxies.pair_attrs(key)
            images = []
            for side in ("left", "right"):
                path = find_pair_file(proxies_path, str(attrs[side]))
                if path is None:
                    raise InputError(
                        f"{proxies_path}: the {side} image of pair {key!r}, {attrs[side]}, is missing; rerun the demo from the same folder"
                    )
                images.append(read_image(path))
            with torch.inference_mode():
                predictions[key] = predict_disparity(model, images[0], images[1], torch_device)
    return predictions


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """The demo's text table: one row per method, density / bad-3 / D1 (percent) and EPE (pixels)."""
    width = max(len(name) for name in rows) + 2
    lines = [f"{'':<{width}}{'density':>9}{'bad-3':>9}{'D1':>9}{'EPE':>10}"]
    for name, values in rows.items():
        lines.append(f"{name:<{width}}{values['density']:>8.1f}%{values['bad3']:>8.2f}%{values['d1']:>8.2f}%{values['epe']:>7.2f} px")
    return "\n".join(lines)


DEMO_HELP = f"""Run the whole pipeline on the real scenes the repository ships, in a few minutes.

\b
SGM proxies -> confidence (shipped CCNN) -> tau labels -> adaptation of
the shipped synthetic-trained MADNet on those scenes (no ground truth) ->
evaluation before and after. Prints a table (SGM, labels, network before
and after: density, bad-3, D1, EPE; means over the scenes) and writes
OUT/report.html, one self-contained page with the pictures of every step.
Every step prints the `pseudolabel` command that does the same on your data.

\b
Examples:
  pseudolabel demo
  pseudolabel demo --out /tmp/demo --steps 200 --device cuda
  pseudolabel demo --data my_scenes/ --model source.pt

\b
A rerun resumes (finished steps are kept). Default --steps {DEMO_STEPS}.
"""


@click.command("demo", help=DEMO_HELP)
@click.option(
    "--out",
    "out_dir",
    default="demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for proxies.h5, the adapted network, results.json and report.html.",
)
@click.option("--steps", default=DEMO_STEPS, show_default=True, type=click.IntRange(min=1), help="Adaptation steps.")
@click.option(
    "--device",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "cpu", "cuda"]),
    help="Where the networks run (auto: CUDA when available).",
)
@click.option(
    "--data",
    "data_dir",
    default=None,
    type=click.Path(path_type=Path),
    help="Scenes with ground truth in a layout `pseudolabel sgm --in` knows (default: the repository's tests/data).",
)
@click.option(
    "--model", "model", default=DEMO_MODEL, show_default=True, help="Source network: a checkpoint of `pseudolabel train` or a shipped model name."
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the adaptation.")
@click.option(
    "--threads",
    default=DEMO_THREADS,
    show_default=True,
    type=click.IntRange(min=1),
    help="torch CPU threads (1 is several times faster than 2 on a small CPU that other jobs share; see BENCHMARKS.md).",
)
def demo(out_dir: Path, steps: int, device: str, data_dir: Path | None, model: str, seed: int, threads: int) -> None:
    from pseudolabel.cli.confidence import DEFAULT_TAU

    started = time.perf_counter()
    data = data_dir if data_dir is not None else shipped_scenes()
    if not data.is_dir():
        if data_dir is None:
            raise InputError(
                f"the demo scenes {data} are not part of this installation; run the demo from a clone of the "
                "repository (`pip install -e .`) or pass --data DIR (scenes with ground truth)"
            )
        raise InputError(f"--data {data}: no such folder; give a folder of scenes in a layout `pseudolabel sgm --in` knows")
    import torch

    from pseudolabel.models.devices import resolve_device

    resolve_device(device)  # --device cuda without a GPU: stop before any work
    torch.set_num_threads(threads)
    source = _resolve_source(model)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: exists and is not a folder; choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    proxies = out_dir / "proxies.h5"
    adapted = out_dir / "adapted.pt"
    timings: dict[str, float] = {}

    def timed(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 1)
        return now

    click.secho(f"pseudolabel demo: scenes in {_display_path(data)}, outputs in {_display_path(out_dir)}", bold=True, err=True)
    clock = time.perf_counter()
    _run_command("pseudolabel.cli.sgm", "sgm", ["sgm", "--in", _display_path(data), "--out", _display_path(proxies)], "[1/6] SGM proxy disparities")
    clock = timed("sgm", clock)
    _run_command(
        "pseudolabel.cli.confidence",
        "confidence",
        ["confidence", "score", "--proxies", _display_path(proxies), "--measures", "all", "--device", device, "--threads", str(threads)],
        "[2/6] confidence (shipped CCNN and conventional measures)",
    )
    clock = timed("confidence", clock)
    _run_command(
        "pseudolabel.cli.confidence",
        "labels",
        ["labels", "--proxies", _display_path(proxies), "--tau", str(DEFAULT_TAU)],
        f"[3/6] labels: proxies with confidence > {DEFAULT_TAU}",
    )
    clock = timed("labels", clock)

    from pseudolabel.store.proxies import open_proxies

    with open_proxies(proxies) as store:
        keys = store.keys()
    click.secho(f"\n[4/6] source network {_display_path(source)} on the {len(keys)} scenes", bold=True, err=True)
    before = _predict_all(source, proxies, keys, device, "network before")
    clock = timed("predict_before", clock)

    reused = _finished_adaptation(adapted, source, steps)
    if reused:
        click.secho(f"\n[5/6] adaptation: {_display_path(adapted)} is finished (delete it to adapt again)", bold=True, err=True)
    else:
        _run_command(
            "pseudolabel.cli.adapt",
            "adapt",
            _adapt_arguments(proxies, model, source, adapted, steps, device, seed, threads),
            "[5/6] adaptation with the confident proxies (no ground truth)",
        )
    clock = timed("adapt", clock)
    click.secho(f"\n[6/6] adapted network on the {len(keys)} scenes, evaluation and report", bold=True, err=True)
    after = _predict_all(adapted, proxies, keys, device, "network after")
    clock = timed("predict_after", clock)

    from pseudolabel.metrics import average_metrics
    from pseudolabel.viz.report import (
        REPORT_METRICS,
        SceneSection,
        metrics_table_rows,
        proxy_scene,
        render_report,
        write_report,
    )

    sections: list[SceneSection] = []
    with open_proxies(proxies) as store, click.progressbar(keys, label="report", show_pos=True, file=sys.stderr) as bar:
        for key in bar:
            sections.append(proxy_scene(store, key, measure="ccnn", predictions={ROW_BEFORE: before[key], ROW_AFTER: after[key]}))
    evaluated = [section for section in sections if section.metrics]
    if not evaluated:
        raise InputError(f"--data {data}: no scene has ground truth, so nothing can be evaluated; give scenes with ground truth")
    row_names = list(dict.fromkeys(name for section in evaluated for name in section.metrics))
    means: dict[str, dict[str, float]] = {}
    for name in row_names:
        average = average_metrics([s.metrics[name] for s in evaluated if name in s.metrics])
        means[name] = {metric: average[metric] for metric in REPORT_METRICS}
    total = time.perf_counter() - started
    summary = _summary_lines(means)
    intro = _intro_html(data, source, adapted, steps, len(evaluated), total, reused)
    details = {
        "data": _display_path(data),
        "source_model": _display_path(source),
        "adapted_model": _display_path(adapted),
        "steps": steps,
        "device": device,
        "seed": seed,
        "threads": threads,
        "tau": DEFAULT_TAU,
        "crop": DEMO_CROP,
        "batch_size": DEMO_BATCH,
        "seconds": timings,
    }
    html = render_report(
        "pseudolabel demo",
        sections,
        intro_html=intro + "".join(f"<p><b>{_escape(line)}</b></p>" for line in summary),
        summary_rows=metrics_table_rows(means),
        details=details,
    )
    report_path = out_dir / "report.html"
    write_report(report_path, html)
    timed("report", clock)
    total = time.perf_counter() - started
    results = {"mean": means, "scenes": {s.key: s.metrics for s in sections}, "seconds": {**timings, "total": round(total, 1)}, "settings": details}
    from pseudolabel.io import atomic_write_bytes

    atomic_write_bytes(out_dir / "results.json", json.dumps(results, indent=1).encode())
    click.echo(f"\nMean over {len(evaluated)} scenes with ground truth (every pixel with ground truth; labels: labelled pixels only):")
    click.echo(format_table(means))
    for line in summary:
        click.echo(line)
    click.echo(f"report: {_display_path(report_path)} (open it in a browser); total {total:.0f} s")


def _summary_lines(means: dict[str, dict[str, float]]) -> list[str]:
    """One sentence comparing the network before and after adaptation (honest either way)."""
    if ROW_BEFORE not in means or ROW_AFTER not in means:
        return []
    before, after = means[ROW_BEFORE], means[ROW_AFTER]
    bad3_change = 100.0 * (after["bad3"] - before["bad3"]) / before["bad3"] if before["bad3"] > 0 else float("nan")
    epe_change = 100.0 * (after["epe"] - before["epe"]) / before["epe"] if before["epe"] > 0 else float("nan")
    if after["bad3"] < before["bad3"] and after["epe"] < before["epe"]:
        verdict = "adaptation improved the network"
    elif after["bad3"] < before["bad3"] or after["epe"] < before["epe"]:
        verdict = "adaptation improved the network on one metric only"
    else:
        verdict = "adaptation did NOT improve the network this time (try more --steps)"
    return [
        f"{verdict}: bad-3 {before['bad3']:.2f}% -> {after['bad3']:.2f}% ({bad3_change:+.0f}%), EPE {before['epe']:.2f} -> {after['epe']:.2f} px ({epe_change:+.0f}%)"
    ]


def _intro_html(data: Path, source: Path, adapted: Path, steps: int, scenes: int, seconds: float, reused: bool) -> str:
    from html import escape

    return (
        '<p class="lead">The whole <code>pseudolabel</code> pipeline on '
        f"{scenes} real scenes ({escape(_display_path(data))}): semi-global matching gives dense proxy disparities, the CCNN "
        "scores how trustworthy each pixel is, the pixels above tau become sparse labels, and the network trained on "
        f"synthetic images only ({escape(source.name)}) is adapted to these scenes for {steps} steps with the confident "
        "proxies, without any ground truth. Ground truth is used only to score the results below (means over the scenes, "
        "every pixel with ground truth; labels: their labelled pixels only). "
        f"Adapted network: {escape(_display_path(adapted))}. Run time {seconds:.0f} s"
        + (" (the adaptation was reused from an earlier run)" if reused else "")
        + ".</p>"
    )


# ----------------------------------------------------------------------------------------------
# show


SHOW_HELP = f"""Render pictures of a proxies file: colour-mapped disparity with a colour bar,
confidence as a heat map, labels over the image (and, when the pairs name
their ground truth, error maps and sparsification curves).

\b
Writes OUT/<pair>_disparity.png, _confidence.png, _labels.png (those the
pair has), _error.png (with ground truth), and OUT/index.html, one
self-contained page with all of them (at most {SHOW_REPORT_LIMIT} pairs).

\b
Examples:
  pseudolabel show demo/proxies.h5 --out pictures/
  pseudolabel show proxies.h5 --keys 'kitti*' --measure apkr --out pictures/
"""


@click.command("show", help=SHOW_HELP)
@click.argument("proxies_path", metavar="PROXIES.h5", type=click.Path(path_type=Path))
@key_options
@click.option("--pair", "pair_patterns", multiple=True, hidden=True, help="Deprecated spelling of --keys.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--measure", default="ccnn", show_default=True, help="Confidence drawn as the heat map (confidence/<measure>).")
@click.option("--gt/--no-gt", "use_gt", default=True, show_default=True, help="Use the ground truth the pairs name (gt_left attribute), if found.")
def show(
    proxies_path: Path, include: tuple[str, ...], exclude: tuple[str, ...], pair_patterns: tuple[str, ...], out_dir: Path, measure: str, use_gt: bool
) -> None:
    from pseudolabel.cli.options import ClickProgress
    from pseudolabel.viz.show import render_proxies

    summary = render_proxies(
        proxies_path, out_dir, include=include + pair_patterns, exclude=exclude, measure=measure, use_gt=use_gt, progress=ClickProgress()
    )
    for line in summary.warnings:
        click.echo(f"warning: {line}", err=True)
    for line in summary.notes:
        click.echo(f"note: {line}", err=True)
    if pair_patterns:
        click.echo("note: --pair is deprecated; use --keys (same patterns)", err=True)
    click.echo(f"wrote {len(summary.pictures)} pictures of {len(summary.keys)} pair(s) and index.html to {out_dir}")


def _escape(text: str) -> str:
    from html import escape

    return escape(text)
