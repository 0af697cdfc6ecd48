"""Guided-confidence adaptation on real scenes: the table of the ``## Adaptation`` section of BENCHMARKS.md.

Target domain: the real scenes of ``/work/shared/data``. The network adapts on the scenes of
``--adapt-groups`` (default: the 21 Middlebury 2006 scenes) **without their ground truth** (SGM proxies
and their confidence only), and is evaluated with the ground truth on those scenes and on the scenes
of ``--unseen-groups`` (default: Middlebury 2001 and v2), which adaptation never sees.

Steps (each cached in ``--work``, so a rerun only computes what is missing; ``--rows`` picks rows):

1. SGM (default parameters, each scene's ``max_disp`` from ``manifest.json``) -> ``adapt.h5`` and
   ``unseen.h5`` (keys = manifest ids; ground-truth paths stored as pair attributes).
2. Confidence: ``--confidence wild`` (default) trains a CCNN without any ground truth on the
   adaptation proxies (``pseudolabel confidence train --labels wild``; Tosi et al., BMVC 2017) and
   scores both files as ``confidence/ccnn_wild``; ``--confidence PATH`` scores with that CCNN
   checkpoint; ``--confidence stored`` uses ``confidence/<--measure>`` as it is in the files. (The
   shipped CCNN was trained with the ground truth of the Middlebury 2006 scenes, so using it to adapt on
   them would leak ground truth into the benchmark; pass it explicitly to see that variant.)
3. Rows: the source network; SGM dense (the proxies themselves); the SGM labels (proxies with
   confidence > ``--label-tau``: density and errors on the labelled pixels); adaptation with a fixed
   tau over a grid; learnable tau; tau net; reconstruction-only self-supervision; guided +
   reconstruction; fine-tuning on the ground truth of the adaptation scenes (upper bound). Each
   adaptation row runs ``pseudolabel adapt`` in a subprocess (timed end to end: loading, adaptation,
   checkpoint) with the same ``--steps``/``--batch-size``/``--crop``/``--lr``/``--threads``.

Metrics on every pixel with ground truth (no occlusion mask), averaged over scenes: bad-3 (%), KITTI
D1 (%), EPE (px). Example (reduced run, one thread)::

    python benchmarks/adaptation.py --steps 60 --threads 1 --write
    python benchmarks/adaptation.py --rows source,sgm_dense,learnable --max-scenes 5 --steps 20
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_description, replace_section

from pseudolabel.learn.adapt import (
    DEFAULT_BATCH,
    DEFAULT_LR,
    DEFAULT_STEPS,
    DEFAULT_WEIGHTING,
)

#: ``pseudolabel adapt --crop`` default (whole images).
DEFAULT_CROP = "full"

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
SECTION = "Adaptation"
FIXED_GRID = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)


def row_specs(measure: str) -> dict[str, dict[str, Any]]:
    """Adaptation rows: name -> label and the ``pseudolabel adapt`` options that differ."""
    specs: dict[str, dict[str, Any]] = {}
    for tau in FIXED_GRID:
        specs[f"fixed_{tau:g}"] = {"label": f"guided, fixed tau = {tau:g}", "args": ["--tau", f"{tau:g}", "--loss", "guided=1"]}
    specs["learnable"] = {"label": "guided, learnable tau (default)", "args": ["--tau", "learnable", "--loss", "guided=1"]}
    specs["net"] = {"label": "guided, tau net", "args": ["--tau", "net", "--loss", "guided=1"]}
    specs["reconstruction"] = {
        "label": "reconstruction only (reconstruction=1, smooth=0.1)",
        "args": ["--tau", "0", "--loss", "reconstruction=1,smooth=0.1"],
    }
    specs["guided_reconstruction"] = {
        "label": "guided (learnable tau) + reconstruction=1",
        "args": ["--tau", "learnable", "--loss", "guided=1,reconstruction=1"],
    }
    specs["ground_truth"] = {"label": "fine-tuning on the ground truth (l1, upper bound)", "args": ["--tau", "0", "--loss", "l1=1"]}
    return specs


ALL_ROWS = ("source", "sgm_dense", "sgm_labels", *row_specs("x"))


_CPU_SECONDS: list[float] = [0.0]


def _child_cpu_since_last() -> float:
    """CPU seconds (user + system) used by the last command run by :func:`_run`."""
    return _CPU_SECONDS[-1] - _CPU_SECONDS[-2] if len(_CPU_SECONDS) > 1 else float("nan")


def _run(command: list[str], threads: int) -> float:
    """Run a command (the package CLI) with ``threads`` CPU threads; returns its wall time in seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    completed = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    _CPU_SECONDS.append(usage.ru_utime + usage.ru_stime)  # cumulative CPU time of finished children
    if completed.returncode != 0:
        sys.stderr.write(completed.stdout + completed.stderr)
        raise SystemExit(f"failed: {' '.join(command)}")
    return seconds


def prepare_proxies(data: Path, work: Path, groups: list[str], name: str, max_scenes: int | None) -> Path:
    """SGM proxies of the manifest scenes of ``groups`` into ``work/name.h5`` (existing pairs are kept)."""
    from pseudolabel.io import read_image
    from pseudolabel.sgm.matcher import match
    from pseudolabel.sgm.params import SGMParams
    from pseudolabel.store.journal import create_or_open_proxies
    from pseudolabel.store.layout import pair_attributes, result_arrays

    scenes = [scene for scene in json.loads((data / "manifest.json").read_text())["scenes"] if scene["group"] in groups]
    if max_scenes:
        scenes = scenes[:max_scenes]
    if not scenes:
        raise SystemExit(f"no scene of groups {groups} in {data / 'manifest.json'}")
    path = work / f"{name}.h5"
    base = SGMParams()
    if path.exists():  # keep the parameters of an existing file (the package defaults may have changed since)
        from pseudolabel.store.proxies import open_proxies

        with open_proxies(path) as existing:
            base = existing.sgm_params
            if all(scene["id"] in existing for scene in scenes):
                return path  # nothing to add: never open for writing (another run may be reading it)
    with create_or_open_proxies(path, base) as store:
        for scene in scenes:
            if scene["id"] in store:
                continue
            left, right = read_image(data / scene["left"]), read_image(data / scene["right"])
            if left.ndim == 3 and left.shape[2] == 4:
                left, right = left[:, :, :3], right[:, :, :3]
            params = base.replace(max_disp=int(scene["max_disp"]))
            started = time.perf_counter()
            result = match(left, right, params)
            seconds = time.perf_counter() - started
            masks = {key: str(data / value) for key, value in (scene.get("masks") or {}).items()}
            attrs = pair_attributes(
                scene["id"],
                data / scene["left"],
                data / scene["right"],
                params,
                result.disparity.shape,
                result.valid,
                gt_left=data / scene["gt_left"],
                gt_scale=float(scene["gt_scale"]),
                masks=masks,
            )
            store.write_pair(scene["id"], result_arrays(result), {**attrs, "sgm_seconds": seconds})
            print(f"sgm {scene['id']:28s} {result.disparity.shape} max_disp {params.max_disp:3d} {seconds:6.2f} s", flush=True)
    return path


def scene_keys(path: Path, max_scenes: int | None) -> list[str]:
    from pseudolabel.store.proxies import open_proxies

    with open_proxies(path) as store:
        keys = store.keys()
    return keys[:max_scenes] if max_scenes else keys


def prepare_confidence(work: Path, files: list[Path], confidence: str, measure: str, threads: int) -> tuple[str, float]:
    """Make sure ``confidence/<measure>`` exists in ``files``; returns (measure, seconds of training + scoring)."""
    from pseudolabel.store.proxies import open_proxies

    cli = [sys.executable, "-m", "pseudolabel.cli.main"]
    seconds = 0.0
    if confidence == "stored":
        return measure, seconds
    if confidence == "wild":
        model = work / "ccnn_wild.pt"
        measure = "ccnn_wild"
        if not model.exists():
            seconds += _run(
                [*cli, "confidence", "train", "--proxies", str(files[0]), "--labels", "wild", "--out", str(model), "--threads", str(threads)], threads
            )
            print(f"trained the wild CCNN in {seconds:.0f} s", flush=True)
    else:
        model = Path(confidence)
    for path in files:
        with open_proxies(path) as store:
            done = all(store.has(key, f"confidence/{measure}") for key in store.keys())
        if not done:
            seconds += _run(
                [
                    *cli,
                    "confidence",
                    "score",
                    "--proxies",
                    str(path),
                    "--model",
                    str(model),
                    "--name",
                    measure,
                    "--measures",
                    "none",
                    "--threads",
                    str(threads),
                ],
                threads,
            )
    return measure, seconds


def _mean_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The metrics of the tables, from the one mean over scenes (:func:`pseudolabel.metrics.average_metrics`)."""
    from pseudolabel.metrics import average_metrics

    mean = average_metrics(rows)
    return {name: mean[name] for name in ("bad3", "d1", "epe", "pairs")}


def proxy_rows(pairs: list[Any], label_tau: float | None) -> dict[str, float]:
    """Errors of the dense proxies (``label_tau`` None) or of the labels confidence > tau (plus density)."""
    from pseudolabel.metrics import disparity_metrics

    rows, coverage = [], []
    for pair in pairs:
        prediction = pair.proxy.copy()
        known = np.isfinite(pair.ground_truth) & (pair.ground_truth > 0)
        if label_tau is not None:
            keep = pair.confidence > label_tau
            prediction[~keep] = np.nan
            coverage.append(100.0 * float((keep & known).sum()) / max(int(known.sum()), 1))
            # errors on the labelled pixels only (a sparse label set is judged by its accuracy)
            ground_truth = np.where(keep, pair.ground_truth, np.nan)
        else:
            ground_truth = pair.ground_truth
        rows.append(disparity_metrics(prediction, ground_truth))
    result = _mean_metrics(rows)
    if coverage:
        result["density"] = float(np.mean(coverage))
    return result


def evaluate_checkpoint(checkpoint: str | Path, sets: dict[str, list[Any]], threads: int) -> dict[str, dict[str, float]]:
    import torch

    from pseudolabel.learn.checkpoint import load_model
    from pseudolabel.learn.predict import evaluate_network

    torch.set_num_threads(threads)
    model = load_model(checkpoint)
    results: dict[str, dict[str, float]] = {}
    for name, pairs in sets.items():
        started = time.perf_counter()
        results[name] = _mean_metrics(evaluate_network(model, pairs))
        results[name]["predict_s_per_pair"] = (time.perf_counter() - started) / max(len(pairs), 1)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "adaptation", help="cache folder (proxies, checkpoints, results.json)")
    parser.add_argument("--source", default="madnet_synth", help="source network: checkpoint or shipped name")
    parser.add_argument("--confidence", default="wild", help="wild, stored, or a CCNN checkpoint")
    parser.add_argument("--measure", default="ccnn", help="confidence name with --confidence stored / PATH")
    parser.add_argument("--adapt-groups", default="middlebury2006")
    parser.add_argument("--unseen-groups", default="middlebury2001,middlebury-v2")
    parser.add_argument("--max-scenes", type=int, default=None, help="use only the first N scenes of each set (reduced runs)")
    parser.add_argument("--rows", default=",".join(ALL_ROWS), help=f"comma-separated subset of {','.join(ALL_ROWS)}")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="default: pseudolabel adapt's")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--crop", default=DEFAULT_CROP)
    parser.add_argument("--lr", type=float, default=DEFAULT_LR)
    parser.add_argument(
        "--weighting", choices=("mask", "confidence"), default=DEFAULT_WEIGHTING, help="guided loss weighting of every adaptation row"
    )
    parser.add_argument("--extra", default="", help="more `pseudolabel adapt` options for every adaptation row (quoted)")
    parser.add_argument("--label-tau", type=float, default=0.5, help="tau of the SGM labels row")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pseudolabel adapt's --amp (bfloat16 on CPUs that have it natively) or --no-amp (float32)",
    )
    parser.add_argument("--write", action="store_true", help="write the ## Adaptation section of BENCHMARKS.md")
    parser.add_argument("--tables", default="", help="with --write: comma-separated settings ids of results.json to show (default: this run's)")
    parser.add_argument("--notes", type=Path, default=None, help="with --write: a Markdown file appended to the section")
    args = parser.parse_args(argv)

    import torch

    from pseudolabel.learn.adaptation_data import load_adaptation_pairs
    from pseudolabel.learn.checkpoint import resolve_model_path

    torch.set_num_threads(args.threads)
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    adapt_file = prepare_proxies(args.data, work, args.adapt_groups.split(","), "adapt", args.max_scenes)
    unseen_file = prepare_proxies(args.data, work, args.unseen_groups.split(","), "unseen", args.max_scenes)
    measure, confidence_seconds = prepare_confidence(work, [adapt_file, unseen_file], args.confidence, args.measure, args.threads)
    adapt_keys = scene_keys(adapt_file, args.max_scenes)
    unseen_keys = scene_keys(unseen_file, args.max_scenes)
    sets = {
        "adapted": load_adaptation_pairs(adapt_file, measure, adapt_keys, with_ground_truth=True),
        "unseen": load_adaptation_pairs(unseen_file, measure, unseen_keys, with_ground_truth=True),
    }
    wanted = [row.strip() for row in args.rows.split(",") if row.strip()]
    if not wanted:
        print(f"prepared {adapt_file} and {unseen_file} with confidence/{measure}; no row asked for")
        return
    source = resolve_model_path(args.source)
    settings = {
        "source": str(source),
        "source_sha": hashlib.sha1(source.read_bytes()).hexdigest()[:12],
        "measure": measure,
        "confidence": args.confidence,
        "adapt_keys": adapt_keys,
        "unseen_keys": unseen_keys,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "crop": args.crop,
        "lr": args.lr,
        "extra": args.extra,
        "threads": args.threads,
        "label_tau": args.label_tau,
        "precision": adapt_precision(args.amp),
    }
    if args.weighting != "mask":  # entries written before this option ran with mask weighting and have no key
        settings["weighting"] = args.weighting
    settings_id = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    results_path = work / "results.json"
    store: dict[str, Any] = json.loads(results_path.read_text()) if results_path.exists() else {}
    results: dict[str, Any] = store.setdefault(settings_id, {"settings": settings, "rows": {}})["rows"]

    def save() -> None:
        # merge into the file as it is now (another run with other settings may have written it meanwhile)
        current = json.loads(results_path.read_text()) if results_path.exists() else {}
        current.setdefault(settings_id, {"settings": settings, "rows": {}})["rows"].update(results)
        store.update(current)
        temporary = results_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(current, indent=1))
        temporary.replace(results_path)

    from pseudolabel.store.proxies import open_proxies

    sgm_seconds = 0.0
    with open_proxies(adapt_file) as proxies:
        for key in adapt_keys:
            sgm_seconds += float(proxies.pair_attrs(key).get("sgm_seconds", float("nan")))
    specs = row_specs(measure)
    for row in wanted:
        if row in results:
            continue
        if row == "source":
            results[row] = {"label": f"source network ({source.name})", **evaluate_checkpoint(source, sets, args.threads), "time_s": None}
        elif row == "sgm_dense":
            results[row] = {"label": "SGM dense (the proxies)", **{n: proxy_rows(p, None) for n, p in sets.items()}, "time_s": sgm_seconds}
        elif row == "sgm_labels":
            results[row] = {
                "label": f"SGM labels, {measure} > {args.label_tau:g} (errors on labelled pixels)",
                **{n: proxy_rows(p, args.label_tau) for n, p in sets.items()},
                "time_s": sgm_seconds + confidence_seconds,
            }
        elif row in specs:
            out = work / "rows" / settings_id / f"{row}.pt"
            out.parent.mkdir(parents=True, exist_ok=True)
            command = [
                sys.executable,
                "-m",
                "pseudolabel.cli.main",
                "adapt",
                "--proxies",
                str(adapt_file),
                "--model",
                str(source),
                "--out",
                str(out),
                "--measure",
                measure,
                "--steps",
                str(args.steps),
                "--batch-size",
                str(args.batch_size),
                "--crop",
                args.crop,
                "--lr",
                str(args.lr),
                "--threads",
                str(args.threads),
                "--device",
                "cpu",
                "--quiet",
                "--overwrite",
                "--checkpoint-every",
                "0",
                "--amp" if args.amp else "--no-amp",
                "--weighting",
                args.weighting,
                *[item for key in adapt_keys for item in ("--keys", key)],
                *specs[row]["args"],
                *args.extra.split(),
            ]
            seconds = _run(command, args.threads)
            cpu_seconds = _child_cpu_since_last()
            from pseudolabel.learn.checkpoint import load_checkpoint

            extra_state = load_checkpoint(out).get("extra_state") or {}
            tau = (extra_state.get("tau") or {}).get("tau")
            results[row] = {
                "label": specs[row]["label"],
                **evaluate_checkpoint(out, sets, args.threads),
                "time_s": seconds,
                "cpu_s": cpu_seconds,
                "final_tau": tau,
            }
        else:
            raise SystemExit(f"unknown row {row!r}; choose among {', '.join(ALL_ROWS)}")
        results[row]["date"] = datetime.date.today().isoformat()
        save()
        entry = results[row]
        print(
            f"{row:24s} adapted bad3 {entry['adapted']['bad3']:6.2f}  unseen bad3 {entry['unseen']['bad3']:6.2f}  "
            f"time {entry['time_s'] if entry['time_s'] is not None else float('nan'):7.1f} s  tau {entry.get('final_tau')}",
            flush=True,
        )
    table = markdown(results, settings, len(sets["adapted"]), len(sets["unseen"]))
    print(table)
    if args.write:
        tables = []
        for table_id in [item for item in args.tables.split(",") if item] or [settings_id]:
            entry = store[table_id]
            tables.append(markdown(entry["rows"], entry["settings"], len(entry["settings"]["adapt_keys"]), len(entry["settings"]["unseen_keys"])))
        notes = args.notes.read_text().strip() if args.notes else ""
        replace_section(REPO / "BENCHMARKS.md", SECTION, "\n\n".join([*tables, notes]).strip())


def adapt_precision(amp: bool) -> str:
    """Arithmetic of `pseudolabel adapt --device cpu` with ``--amp``/``--no-amp`` on this machine."""
    import torch

    from pseudolabel.learn.precision import autocast_dtype, precision_name

    return precision_name(autocast_dtype(torch.device("cpu"), amp))


def markdown(results: dict[str, Any], settings: dict[str, Any], adapted_count: int, unseen_count: int) -> str:
    """The Markdown table (with the settings that produced it) of one settings entry of results.json."""
    order = [row for row in ALL_ROWS if row in results]
    # the day the last row of this table was measured (rows written before dates were stored: today)
    dates = sorted(str(entry["date"]) for entry in results.values() if entry.get("date"))
    # entries written before --amp had a CPU path ran in float32
    precision = settings.get("precision", "float32")
    weighting = settings.get("weighting", "mask")
    # "(default)" marks the row run with every default of `pseudolabel adapt`
    is_default = (weighting, settings["steps"], settings["batch_size"], settings["crop"], settings["lr"], settings.get("extra", "")) == (
        DEFAULT_WEIGHTING,
        DEFAULT_STEPS,
        DEFAULT_BATCH,
        DEFAULT_CROP,
        DEFAULT_LR,
        "",
    ) and precision == adapt_precision(True)
    flags = (
        (" --no-amp" if precision == "float32" else "")
        + (f" --weighting {weighting}" if weighting != DEFAULT_WEIGHTING else "")
        + (f" --extra '{settings['extra']}'" if settings.get("extra") else "")
    )
    lines = [
        f"`python benchmarks/adaptation.py --source {Path(settings['source']).name} --steps {settings['steps']} --batch-size {settings['batch_size']} --crop {settings['crop']} "
        f"--lr {settings['lr']:g} --threads {settings['threads']}{flags}` ({machine_description(dates[-1] if dates else None)}; adaptation arithmetic {precision}).",
        "",
        f"Source network `{Path(settings['source']).name}` (sha1 {settings['source_sha']}); confidence `{settings['measure']}` "
        f"({'CCNN trained without any ground truth (wild labels) on the adaptation proxies' if settings['confidence'] == 'wild' else settings['confidence']}). "
        f"Adapted on {adapted_count} scenes without their ground truth ({', '.join(k.split('-', 1)[-1] for k in settings['adapt_keys'])}); "
        f"'unseen' = {unseen_count} scenes adaptation never saw ({', '.join(k.split('-', 1)[-1] for k in settings['unseen_keys'])}). "
        "Errors on every pixel with ground truth, mean over scenes: bad-3 and D1 in %, EPE in px. Time: wall seconds of the whole "
        "`pseudolabel adapt` command (SGM rows: SGM (+ confidence) time of the adaptation scenes).",
        "",
        "| row | bad-3 | D1 | EPE | unseen bad-3 | unseen D1 | unseen EPE | time (s) | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in order:
        entry = results[row]
        seen, unseen = entry["adapted"], entry["unseen"]
        notes = []
        if entry.get("cpu_s") is not None and np.isfinite(entry["cpu_s"]):
            notes.append(f"CPU {entry['cpu_s']:.0f} s")
        if entry.get("final_tau") is not None:
            notes.append(f"final tau {entry['final_tau']:.3f}")
        if "density" in seen:
            notes.append(f"labels cover {seen['density']:.1f}% (unseen {unseen['density']:.1f}%) of GT pixels")
        time_text = "" if entry.get("time_s") is None else f"{entry['time_s']:.0f}"
        label = entry["label"] if is_default else entry["label"].replace(" (default)", "")
        lines.append(
            f"| {label} | {seen['bad3']:.2f} | {seen['d1']:.2f} | {seen['epe']:.2f} | {unseen['bad3']:.2f} | {unseen['d1']:.2f} | "
            f"{unseen['epe']:.2f} | {time_text} | {'; '.join(notes)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
