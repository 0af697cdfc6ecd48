"""The whole pipeline on a few scenes with ground truth, as one Python call (what ``pseudolabel demo`` runs).

:func:`run_demo` calls the library function behind each command, in order, and reports the command
line that does the same on a user's data before each step:

1. :func:`pseudolabel.sgm.batch.run_sgm` (``pseudolabel sgm``) on the scenes (by default the
   repository's ``tests/data``: Middlebury tsukuba, venus, Baby1 and one KITTI 2012 frame);
2. :func:`pseudolabel.confidence.scoring.score_proxies` (``pseudolabel confidence score``) with the
   shipped CCNN and the conventional measures;
3. :func:`pseudolabel.confidence.labelling.label_proxies` (``pseudolabel labels``) at the default tau;
4. the source network (by default the shipped synthetic-trained ``madnet_synth``) predicts every scene;
5. :func:`pseudolabel.learn.adapt.adapt_network` (``pseudolabel adapt``) fine-tunes it with the
   confident proxies only (no ground truth: the online, unsupervised setting of Tonioni et al.);
6. the adapted network predicts again; ground truth (used only here) scores SGM, the labels and the
   network before and after, and ``report.html`` (:mod:`pseudolabel.viz.report`) is written.

A rerun resumes: finished proxies, confidences and a finished adaptation with the same settings are
kept. Torch is imported only when the networks run.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pseudolabel.errors import InputError
from pseudolabel.progress import Progress, or_silent

if TYPE_CHECKING:
    from pseudolabel.viz.report import SceneSection

#: Default steps of the demo's adaptation: the demo ends in under 5 minutes on a 2-core CPU that
#: other jobs do not keep busy (BENCHMARKS.md ``## Demo``), and the network clearly improves.
DEMO_STEPS: int = 60
#: Crop (height, width) and batch of the demo's adaptation (``pseudolabel adapt`` defaults to whole
#: images; on the shipped scenes 60 steps of batch 1 on these crops adapt as well as 60 of batch 2, at half the time).
DEMO_CROP: tuple[int, int] = (256, 320)
DEMO_BATCH: int = 1
#: Learning rate of the demo's 60 steps (the figures of BENCHMARKS.md ``## Demo``); ``pseudolabel
#: adapt``'s default, 3e-4, is chosen for its 2,500 steps on whole images.
DEMO_LR: float = 1e-4
#: torch CPU threads of the demo: on this project's 2-core machine, shared with other jobs, 60 adaptation
#: steps took 25 s with 1 thread and 170-600 s with 2 (BENCHMARKS.md ``## Demo``).
DEMO_THREADS: int = 1
#: The source network: the shipped MADNet trained on synthetic data only.
DEMO_MODEL: str = "madnet_synth"
#: Progress checkpoints and metrics lines of the demo's adaptation.
DEMO_CHECKPOINT_EVERY: int = 30
DEMO_LOG_EVERY: int = 5

ROW_BEFORE = "network before (source)"
ROW_AFTER = "network after (adapted)"

Log = Callable[[str], None]


@dataclass
class DemoResult:
    """What :func:`run_demo` measured and wrote.

    Attributes:
        means: per row (``SGM ...``, ``labels ...``, :data:`ROW_BEFORE`, :data:`ROW_AFTER`), the mean over the
            scenes with ground truth of ``density``, ``bad3``, ``d1`` (percent) and ``epe`` (pixels).
        scenes: per scene key, the same metrics per row.
        summary: one sentence comparing the network before and after adaptation.
        report: the HTML report; ``results``: the same figures as JSON.
        seconds: wall time of each step and ``total``.
        reused_adaptation: the adaptation of an earlier run with the same settings was kept.
    """

    means: dict[str, dict[str, float]]
    scenes: dict[str, dict[str, dict[str, float]]]
    summary: list[str]
    report: Path
    results: Path
    seconds: dict[str, float]
    reused_adaptation: bool


def shipped_scenes() -> Path:
    """``tests/data`` of the repository this package was installed from (an editable install or a clone)."""
    import pseudolabel

    return Path(pseudolabel.__file__).resolve().parents[1] / "tests" / "data"


def display_path(path: Path) -> str:
    """``path`` relative to the working folder when it lies below it, else absolute."""
    absolute = path.resolve()
    try:
        return str(absolute.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(absolute)


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """The demo's text table: one row per method, density / bad-3 / D1 (percent) and EPE (pixels)."""
    width = max(len(name) for name in rows) + 2
    lines = [f"{'':<{width}}{'density':>9}{'bad-3':>9}{'D1':>9}{'EPE':>10}"]
    for name, values in rows.items():
        lines.append(f"{name:<{width}}{values['density']:>8.1f}%{values['bad3']:>8.2f}%{values['d1']:>8.2f}%{values['epe']:>7.2f} px")
    return "\n".join(lines)


def run_demo(
    out_dir: str | Path = "demo",
    *,
    steps: int = DEMO_STEPS,
    device: str = "auto",
    data_dir: str | Path | None = None,
    model: str = DEMO_MODEL,
    seed: int = 0,
    threads: int = DEMO_THREADS,
    progress: Progress | None = None,
    log: Log | None = None,
) -> DemoResult:
    """Run every stage on scenes with ground truth and score the results (see the module docstring).

    Args:
        out_dir: folder for ``proxies.h5``, ``adapted.pt``, ``results.json`` and ``report.html``.
        steps: adaptation steps.
        device: where the networks run: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        data_dir: scenes with ground truth in a layout :func:`pseudolabel.datasets.discover_pairs` knows
            (default: the repository's ``tests/data``).
        model: source network: a checkpoint path or a shipped model name.
        seed: seed of the adaptation.
        threads: torch CPU threads.
        progress: progress of each long step; ``log``: receives each step's heading, its equivalent
            ``pseudolabel`` command and the lines the commands print.

    Raises:
        InputError: missing scenes or model, an unusable ``out_dir`` or device, scenes without ground truth.
    """
    say: Log = log if log is not None else (lambda line: None)
    started = time.perf_counter()
    out = Path(out_dir)
    data = Path(data_dir) if data_dir is not None else shipped_scenes()
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
    from pseudolabel.outputs import check_output_folder

    check_output_folder(out, "--out").mkdir(parents=True, exist_ok=True)
    proxies = out / "proxies.h5"
    adapted = out / "adapted.pt"
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 1)
        clock = now

    def step(heading: str, arguments: Sequence[str] | None = None) -> None:
        command = f": pseudolabel {' '.join(shlex.quote(a) for a in arguments)}" if arguments else ""
        say(f"\n{heading}{command}")

    say(f"pseudolabel demo: scenes in {display_path(data)}, outputs in {display_path(out)}")
    from pseudolabel.confidence.labelling import format_label_table, label_proxies
    from pseudolabel.confidence.labels import DEFAULT_TAU
    from pseudolabel.confidence.scoring import score_proxies
    from pseudolabel.sgm.batch import run_sgm

    step("[1/6] SGM proxy disparities", ["sgm", "--in", display_path(data), "--out", display_path(proxies)])
    sgm = run_sgm([display_path(data)], display_path(proxies), progress=progress, log=lambda line: say(f"sgm: {line}"))
    say(f"sgm: wrote {sgm.out} ({sgm.added} pairs added, {sgm.pairs} pairs of this input in the file)")
    lap("sgm")
    step(
        "[2/6] confidence (shipped CCNN and conventional measures)",
        ["confidence", "score", "--proxies", display_path(proxies), "--measures", "all", "--device", device, "--threads", str(threads)],
    )
    scored = score_proxies(proxies, measures="all", device=device, threads=threads, progress=progress)
    say(f"{len(scored.keys)} pairs scored: {', '.join(scored.written)}")
    lap("confidence")
    step(f"[3/6] labels: proxies with confidence > {DEFAULT_TAU}", ["labels", "--proxies", display_path(proxies), "--tau", str(DEFAULT_TAU)])
    say(format_label_table(label_proxies(proxies, DEFAULT_TAU, progress=progress), DEFAULT_TAU, "ccnn"))
    lap("labels")

    from pseudolabel.store.proxies import open_proxies

    with open_proxies(proxies) as store:
        keys = store.keys()
    step(f"[4/6] source network {display_path(source)} on the {len(keys)} scenes")
    before = _predict_all(source, proxies, keys, device, "network before", progress)
    lap("predict_before")

    reused = _finished_adaptation(adapted, source, steps)
    if reused:
        step(f"[5/6] adaptation: {display_path(adapted)} is finished (delete it to adapt again)")
    else:
        _adapt(proxies, model, source, adapted, steps=steps, device=device, seed=seed, threads=threads, progress=progress, step=step, say=say)
    lap("adapt")
    step(f"[6/6] adapted network on the {len(keys)} scenes, evaluation and report")
    after = _predict_all(adapted, proxies, keys, device, "network after", progress)
    lap("predict_after")

    sections = _scene_sections(proxies, keys, before, after, progress)
    evaluated = [section for section in sections if section.metrics]
    if not evaluated:
        raise InputError(f"--data {data}: no scene has ground truth, so nothing can be evaluated; give scenes with ground truth")
    means = _mean_rows(evaluated)
    summary = summary_lines(means)
    settings = {
        "data": display_path(data),
        "source_model": display_path(source),
        "adapted_model": display_path(adapted),
        "steps": steps,
        "device": device,
        "seed": seed,
        "threads": threads,
        "tau": DEFAULT_TAU,
        "crop": f"{DEMO_CROP[0]}x{DEMO_CROP[1]}",
        "batch_size": DEMO_BATCH,
        "seconds": timings,
    }
    report = _write_report(out / "report.html", sections, means, summary, settings, data, source, adapted, steps, reused, started)
    lap("report")
    total = round(time.perf_counter() - started, 1)
    scenes = {s.key: s.metrics for s in sections}
    results = {"mean": means, "scenes": scenes, "seconds": {**timings, "total": total}, "settings": settings}
    from pseudolabel.io import atomic_write_bytes

    results_path = out / "results.json"
    atomic_write_bytes(results_path, json.dumps(results, indent=1).encode())
    return DemoResult(means, scenes, summary, report, results_path, {**timings, "total": total}, reused)


def summary_lines(means: dict[str, dict[str, float]]) -> list[str]:
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


def _adapt(
    proxies: Path,
    model: str,
    source: Path,
    adapted: Path,
    *,
    steps: int,
    device: str,
    seed: int,
    threads: int,
    progress: Progress | None,
    step: Callable[[str, Sequence[str] | None], None],
    say: Log,
) -> None:
    """Adapt ``source`` on ``proxies`` into ``adapted`` (``resume`` after an interruption, else a fresh run)."""
    from pseudolabel.learn.adapt import ADAPT_RUN, adapt_network

    resume = adapted.with_suffix(".partial.pt").is_file() and not adapted.exists()
    shown_model = model if model == source.stem and not Path(model).suffix else display_path(source)
    arguments = ["adapt", "--proxies", display_path(proxies), "--model", shown_model, "--out", display_path(adapted)]
    arguments += ["--tau", "learnable", "--steps", str(steps), "--batch-size", str(DEMO_BATCH), "--crop", f"{DEMO_CROP[0]}x{DEMO_CROP[1]}"]
    arguments += ["--lr", f"{DEMO_LR:g}", "--device", device, "--threads", str(threads), "--seed", str(seed)]
    arguments += ["--checkpoint-every", str(DEMO_CHECKPOINT_EVERY), "--log-every", str(DEMO_LOG_EVERY), "--resume" if resume else "--overwrite"]
    step("[5/6] adaptation with the confident proxies (no ground truth)", arguments)
    run = dataclasses.replace(
        ADAPT_RUN,
        device=device,
        threads=threads,
        seed=seed,
        checkpoint_every=DEMO_CHECKPOINT_EVERY,
        log_every=DEMO_LOG_EVERY,
        resume=resume,
        overwrite=not resume,
    )
    from pseudolabel.interrupts import Interrupted

    try:
        result = adapt_network(
            proxies,
            str(source),
            adapted,
            tau="learnable",
            steps=steps,
            batch_size=DEMO_BATCH,
            crop=DEMO_CROP,
            learning_rate=DEMO_LR,
            run=run,
            progress=progress,
        )
    except Interrupted as interrupt:  # the demo's own rerun continues the adaptation (it resumes the partial checkpoint)
        raise Interrupted(f"{interrupt.kept}; the demo's earlier finished steps") from None
    logs = result.last_logs
    shown = ", ".join(f"{name} {logs[name]:.4g}" for name in ("loss", "tau", "selected") if name in logs)
    say(f"adapted {result.arch} on {result.pairs} pair(s) for {result.step} steps in {result.wall_seconds:.0f} s -> {adapted} ({shown})")


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


def _predict_all(
    model_path: Path, proxies_path: Path, keys: Sequence[str], device: str, label: str, progress: Progress | None
) -> dict[str, np.ndarray]:
    """Disparity (float32 (H, W), left view, pixels) of every pair with the network of ``model_path``."""
    import torch

    from pseudolabel.io import read_image
    from pseudolabel.learn.checkpoint import load_model
    from pseudolabel.learn.predict import predict_disparity
    from pseudolabel.models.devices import resolve_device
    from pseudolabel.store.names import resolve_pair_file
    from pseudolabel.store.proxies import open_proxies

    torch_device = resolve_device(device)
    network = load_model(model_path, torch_device)
    predictions: dict[str, np.ndarray] = {}
    shown = or_silent(progress)
    shown.start(label, len(keys))
    try:
        with open_proxies(proxies_path) as proxies:
            for key in keys:
                attrs = proxies.pair_attrs(key)
                left, right = (read_image(resolve_pair_file(proxies_path, str(attrs[side]), side, key)) for side in ("left", "right"))
                with torch.inference_mode():
                    predictions[key] = predict_disparity(network, left, right, torch_device)
                shown.advance(1, key)
    finally:
        shown.finish()
    return predictions


def _scene_sections(
    proxies_path: Path, keys: Sequence[str], before: dict[str, np.ndarray], after: dict[str, np.ndarray], progress: Progress | None
) -> list[SceneSection]:
    from pseudolabel.store.proxies import open_proxies
    from pseudolabel.viz.report import proxy_scene

    sections = []
    shown = or_silent(progress)
    shown.start("report", len(keys))
    try:
        with open_proxies(proxies_path) as store:
            for key in keys:
                sections.append(proxy_scene(store, key, measure="ccnn", predictions={ROW_BEFORE: before[key], ROW_AFTER: after[key]}))
                shown.advance(1, key)
    finally:
        shown.finish()
    return sections


def _mean_rows(evaluated: Sequence[SceneSection]) -> dict[str, dict[str, float]]:
    """Per row, the mean over ``evaluated`` scenes of the report's metrics."""
    from pseudolabel.metrics import average_metrics
    from pseudolabel.viz.report import REPORT_METRICS

    row_names = list(dict.fromkeys(name for section in evaluated for name in section.metrics))
    means: dict[str, dict[str, float]] = {}
    for name in row_names:
        average = average_metrics([s.metrics[name] for s in evaluated if name in s.metrics])
        means[name] = {metric: average[metric] for metric in REPORT_METRICS}
    return means


def _write_report(
    path: Path,
    sections: Sequence[SceneSection],
    means: dict[str, dict[str, float]],
    summary: Sequence[str],
    settings: dict[str, object],
    data: Path,
    source: Path,
    adapted: Path,
    steps: int,
    reused: bool,
    started: float,
) -> Path:
    from pseudolabel.viz.report import metrics_table_rows, render_report, write_report

    seconds = time.perf_counter() - started
    intro = (
        '<p class="lead">The whole <code>pseudolabel</code> pipeline on '
        f"{sum(1 for s in sections if s.metrics)} real scenes ({escape(display_path(data))}): semi-global matching gives dense "
        "proxy disparities, the CCNN scores how trustworthy each pixel is, the pixels above tau become sparse labels, and the "
        f"network trained on synthetic images only ({escape(source.name)}) is adapted to these scenes for {steps} steps with "
        "the confident proxies, without any ground truth. Ground truth is used only to score the results below (means over "
        "the scenes, every pixel with ground truth; labels: their labelled pixels only). "
        f"Adapted network: {escape(display_path(adapted))}. Run time {seconds:.0f} s"
        + (" (the adaptation was reused from an earlier run)" if reused else "")
        + ".</p>"
    )
    html = render_report(
        "pseudolabel demo",
        list(sections),
        intro_html=intro + "".join(f"<p><b>{escape(line)}</b></p>" for line in summary),
        summary_rows=metrics_table_rows(means),
        details=settings,
    )
    write_report(path, html)
    return path
