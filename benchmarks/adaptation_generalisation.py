"""The table a user needs (issue 18): does adaptation help on frames of the same rig that it did not see?

Two rigs of the dev data (``../shared/data``):

* **KITTI sequence**: adapt on the 51 unlabeled frames of ``sequences/kitti_odometry_b`` (no ground
  truth anywhere in the run); evaluate on ``kitti2012/training`` frame ``000070_10``, converted to
  grayscale like the sequence (same rig and calibration), against its ``disp_noc`` ground truth. The
  frames adapted on have no ground truth, so only the unseen frame is scored.
* **Middlebury 2014** (quarter size, one capture setup): adapt on four scenes without their ground
  truth (``--mb-adapt``), evaluate on them (ground truth used only here) and on the other three.
  Evaluation where ``mask0nocc.png`` is 255 (non-occluded with ground truth).

Rows: the source network; SGM dense; the SGM labels (confidence > ``--label-tau``: errors on the
labelled pixels, and their density); the network adapted by ``pseudolabel adapt --budget BUDGET``
with each variant of ``--variants`` (``default``: no options, whatever ``adapt`` does by default; ``guided``: ``--loss
guided=1 --replay 0``, the default before 2026-11-30; ``l2sp``: ``--loss guided=1,l2sp=W``;
``replay``: ``--replay R``; ``l2sp_replay``: both; ``augment``: ``--augment``; ``recon``:
``--loss guided=1,reconstruction=W`` (and ``smooth=S`` with ``--smooth``)). Columns: bad-3 (%), D1 (%), EPE (px), wall time
and peak memory (resident set size) of the command that made the row (SGM and confidence scoring
for the SGM rows, ``adapt`` for the adapted rows, prediction for the source row).

``--gt-labels`` (Middlebury only) is the ceiling of better labels: ``adapt`` reads a copy of the
proxies file whose disparity is the ground truth and whose confidence is 1 where it is known and 0
elsewhere, so the adapted row is trained on perfect dense labels with everything else unchanged.

Each step is a ``pseudolabel`` command in a subprocess, cached in ``--work`` (a rerun only runs
what is missing; ``--fresh`` reruns the adaptations). Example::

    python benchmarks/adaptation_generalisation.py --budget 4m             # the default budget (about 45 min on 2 CPU cores)
    python benchmarks/adaptation_generalisation.py --budget 30s --max-frames 6 --rigs kitti   # a smoke test

A CPU without native bfloat16 (float32 steps, torch and oneDNN kernels limited to AVX2) on a
machine that has it (adapt runs no Numba code)::

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 \\
        python benchmarks/adaptation_generalisation.py --rigs kitti --variants guided --adapt-args=--no-amp --tag _avx2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pseudolabel.datasets import evaluation_mask

REPO = Path(__file__).resolve().parents[1]
# ../shared/data next to the checkout (or next to a folder above it, for a worktree)
DEFAULT_DATA = next((folder / "shared" / "data" for folder in REPO.parents if (folder / "shared" / "data").is_dir()), REPO.parent / "shared" / "data")
KITTI_EVAL = "000070_10"
MB_ADAPT = ("Adirondack", "ArtL", "Jadeplant", "Recycle")
VARIANTS = ("default", "guided", "l2sp", "replay", "l2sp_replay", "augment", "recon")


def run_command(command: list[str], log: Path) -> dict[str, float]:
    """Run ``command``; returns its wall time (s) and peak resident memory (MiB), from its own rusage."""
    started = time.perf_counter()
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        sys.stderr.write(log.read_text()[-4000:])
        raise SystemExit(f"failed ({process.returncode}): {' '.join(command)}; log {log}")
    return {"wall_s": seconds, "peak_mib": usage.ru_maxrss / 1024.0}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pseudolabel.cli.main", *args]


def metrics(prediction: np.ndarray, ground_truth: np.ndarray, mask: np.ndarray | None) -> dict[str, float]:
    from pseudolabel.metrics import disparity_metrics

    return disparity_metrics(prediction, ground_truth, mask)


def mean(rows: list[dict[str, float]]) -> dict[str, float]:
    from pseudolabel.metrics import average_metrics

    averaged = average_metrics(rows)
    return {name: averaged[name] for name in ("bad3", "d1", "epe", "density")}


def kitti_inputs(data: Path, work: Path, max_frames: int | None) -> tuple[Path, Path]:
    """The sequence folder (a subset of links with ``--max-frames``) and the grayscale evaluation frame."""
    from pseudolabel.io import read_image, to_gray, write_image

    sequence = data / "sequences" / "kitti_odometry_b"
    if max_frames:
        subset = work / f"kitti_seq_{max_frames}"
        for side in ("left", "right"):
            (subset / side).mkdir(parents=True, exist_ok=True)
            for image in sorted((sequence / side).glob("*.png"))[:max_frames]:
                link = subset / side / image.name
                link.unlink(missing_ok=True)
                link.symlink_to(image)
        (subset / "calib.txt").unlink(missing_ok=True)
        (subset / "calib.txt").symlink_to(sequence / "calib.txt")
        sequence = subset
    frame = work / "kitti_eval"
    kitti = data / "kitti2012" / "training"
    for side, folder in (("left", "colored_0"), ("right", "colored_1")):
        target = frame / side / f"{KITTI_EVAL}.png"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            write_image(target, to_gray(read_image(kitti / folder / f"{KITTI_EVAL}.png")))
    return sequence, frame


def proxies(inputs: list[Path], out: Path, work: Path, extra: list[str], threads: str) -> dict[str, float]:
    """SGM and confidence scoring into ``out`` (cached); returns their summed wall time and peak memory."""
    cost = {"wall_s": 0.0, "peak_mib": 0.0}
    marker = out.with_suffix(".cost.json")
    if out.exists() and marker.exists():
        return json.loads(marker.read_text())
    for command in (
        cli("sgm", "--in", *map(str, inputs), "--out", str(out), "--overwrite", *extra),
        cli("confidence", "score", "--proxies", str(out), "--threads", threads),
    ):
        used = run_command(command, work / f"{out.stem}.{command[3]}.log")
        cost["wall_s"] += used["wall_s"]
        cost["peak_mib"] = max(cost["peak_mib"], used["peak_mib"])
    marker.write_text(json.dumps(cost))
    return cost


def load_sets(path: Path, keys: list[str], gt: dict[str, tuple[Path, float | None, Path | None]]) -> list[Any]:
    """Pairs of ``path`` with ground truth and evaluation masks attached (``gt``: key -> (file, scale, mask == 255))."""
    from pseudolabel.io import read_disparity
    from pseudolabel.learn.adaptation_data import load_adaptation_pairs

    pairs = load_adaptation_pairs(path, "ccnn", keys)
    for pair in pairs:
        file, scale, mask = gt[pair.key]
        truth = read_disparity(file, scale)
        pair.ground_truth = np.where(np.isfinite(truth) & (truth > 0), truth, np.nan).astype(np.float32)
        pair.mask = evaluation_mask(mask) if mask is not None else None
    return pairs


def sgm_rows(pairs: list[Any], label_tau: float) -> tuple[dict[str, float], dict[str, float]]:
    dense, labels = [], []
    for pair in pairs:
        dense.append(metrics(pair.proxy, pair.ground_truth, pair.mask))
        keep = pair.confidence > label_tau
        known = np.isfinite(pair.ground_truth) & (pair.mask if pair.mask is not None else True)
        row = metrics(np.where(keep, pair.proxy, np.nan), np.where(keep, pair.ground_truth, np.nan), pair.mask)
        row["density"] = 100.0 * float((keep & known).sum()) / max(int(known.sum()), 1)
        labels.append(row)
    return mean(dense), mean(labels)


def network_rows(checkpoint: str, sets: dict[str, list[Any]], threads: str) -> dict[str, dict[str, float]]:
    from pseudolabel.learn.networks import open_network
    from pseudolabel.learn.predict import evaluate_network
    from pseudolabel.threads import apply_threads

    apply_threads(threads)
    network = open_network(checkpoint).network
    results = {}
    for name, pairs in sets.items():
        started = time.perf_counter()
        results[name] = mean(evaluate_network(network, pairs))
        results[name]["predict_s_per_pair"] = (time.perf_counter() - started) / max(len(pairs), 1)
    return results


def ground_truth_labels(proxies_file: Path, pairs: list[Any], out: Path) -> Path:
    """A copy of ``proxies_file`` at ``out`` whose left disparity (pixels) is the ground truth that
    :func:`load_sets` attached to ``pairs`` (0 where unknown) and whose ``confidence/ccnn`` is 1 where
    it is known, 0 elsewhere (cached)."""
    import shutil

    import h5py

    if out.exists():
        return out
    truths = {pair.key: pair.ground_truth for pair in pairs}
    partial = out.with_suffix(".partial.h5")
    shutil.copyfile(proxies_file, partial)
    with h5py.File(partial, "r+") as handle:
        for key, group in handle["pairs"].items():
            known = np.isfinite(truths[key])
            group["disparity"][...] = np.where(known, truths[key], 0.0).astype(np.float32)
            group["confidence/ccnn"][...] = known.astype(np.float32)
    partial.replace(out)
    return out


def variant_args(variant: str, args: argparse.Namespace) -> list[str]:
    if variant == "default":
        return []  # whatever pseudolabel adapt does by default
    extra = []
    terms = ["guided=1"]
    if "l2sp" in variant:
        terms.append(f"l2sp={args.l2sp:g}")
    if "recon" in variant:
        terms.append(f"reconstruction={args.reconstruction:g}")
        if args.smooth > 0:
            terms.append(f"smooth={args.smooth:g}")
    # explicit, so that a variant keeps its meaning when the defaults change
    extra += ["--loss", ",".join(terms), "--replay", f"{args.replay:g}" if "replay" in variant else "0"]
    if "augment" in variant:
        extra += ["--augment"]
    return extra


def rig(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every row of one rig."""
    from pseudolabel.datasets import discover_pairs

    threads = args.threads
    if name == "kitti":
        if args.gt_labels:
            raise SystemExit("--gt-labels: the KITTI sequence has no ground truth; use it with --rigs middlebury")
        sequence, frame = kitti_inputs(args.data, work, args.max_frames)
        adapt_file, eval_file = work / f"kitti_seq{args.max_frames or ''}.h5", work / "kitti_eval.h5"
        sgm_cost = proxies([sequence], adapt_file, work, ["--max-disp", "192"], threads)
        proxies([frame], eval_file, work, ["--max-disp", "192"], threads)
        truth = args.data / "kitti2012" / "training" / "disp_noc" / f"{KITTI_EVAL}.png"
        sets = {"unseen": load_sets(eval_file, [KITTI_EVAL], {KITTI_EVAL: (truth, 256.0, None)})}
        adapt_keys: list[str] = []
    else:
        root = args.data / "middlebury" / "2014"
        adapt_file = work / "mb2014.h5"
        sgm_cost = proxies([root], adapt_file, work, [], threads)
        found = {pair.key: pair for pair in discover_pairs([root])}
        gt = {key: (pair.gt_left, pair.gt_scale, pair.masks.get("nonocc")) for key, pair in found.items() if pair.gt_left is not None}
        adapt_keys = [key for key in sorted(found) if key in args.mb_adapt]
        unseen = [key for key in sorted(found) if key not in args.mb_adapt]
        sets = {"adapted": load_sets(adapt_file, adapt_keys, gt), "unseen": load_sets(adapt_file, unseen, gt)}  # type: ignore[arg-type]
        if args.gt_labels:
            adapt_file = ground_truth_labels(adapt_file, sets["adapted"] + sets["unseen"], work / "mb2014_gt_labels.h5")
    rows: dict[str, Any] = {}
    started = time.perf_counter()
    rows["source"] = {"sets": network_rows(args.model, sets, threads), "wall_s": time.perf_counter() - started, "peak_mib": float("nan")}
    for set_name, pairs in sets.items():
        dense, labels = sgm_rows(pairs, args.label_tau)
        rows.setdefault("sgm_dense", {"sets": {}, **sgm_cost})["sets"][set_name] = dense
        rows.setdefault("labels", {"sets": {}, **sgm_cost})["sets"][set_name] = labels
    for variant in args.variants:
        out = work / f"{name}_{variant}_{args.budget}{args.tag}.pt"
        cost_file = out.with_suffix(".cost.json")
        if args.fresh or not out.exists() or not cost_file.exists():
            command = cli(
                "adapt",
                "--proxies",
                str(adapt_file),
                "--model",
                args.model,
                "--out",
                str(out),
                "--budget",
                args.budget,
                "--force",
                "--threads",
                threads,
            )
            command += [arg for key in adapt_keys for arg in ("--keys", key)] + variant_args(variant, args)
            if args.holdout_every:
                command += ["--holdout-every", str(args.holdout_every)]
            command += args.adapt_args.split()
            cost_file.write_text(json.dumps(run_command(command, work / f"{out.stem}.log")))
            print(f"{name} {variant}: adapted ({out})", flush=True)
        cost = json.loads(cost_file.read_text())
        from pseudolabel.learn.checkpoint import load_checkpoint

        payload = load_checkpoint(out)
        rows[f"adapted_{variant}"] = {
            "sets": network_rows(str(out), sets, threads),
            **cost,
            "steps": payload["step"],
            "budget": payload.get("budget"),
        }
    return rows


def table(name: str, rows: dict[str, Any]) -> str:
    sets = list(next(iter(rows.values()))["sets"])
    header = "| row | " + " | ".join(f"{s} bad-3 % | {s} D1 % | {s} EPE px" for s in sets) + " | wall s | peak MiB | steps |"
    lines = [f"### {name}", "", header, "|" + "---|" * (header.count("|") - 1)]
    for row_name, row in rows.items():
        cells = []
        for set_name in sets:
            values = row["sets"].get(set_name, {})
            density = f" ({values['density']:.1f}% dense)" if row_name == "labels" and "density" in values else ""
            cells.append(
                f"{values.get('bad3', float('nan')):.2f}{density} | {values.get('d1', float('nan')):.2f} | {values.get('epe', float('nan')):.2f}"
            )
        lines.append(
            f"| {row_name} | "
            + " | ".join(cells)
            + f" | {row.get('wall_s', float('nan')):.0f} | {row.get('peak_mib', float('nan')):.0f} | {row.get('steps', '')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="12m", help="pseudolabel adapt --budget of every adapted row.")
    parser.add_argument("--rigs", default="kitti,middlebury", help="kitti, middlebury or both.")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"adapted rows among {', '.join(VARIANTS)}.")
    parser.add_argument("--l2sp", type=float, default=1e-3, help="weight of the l2sp term in the l2sp variants.")
    parser.add_argument("--replay", type=float, default=0.25, help="share of synthetic samples in the replay variants.")
    parser.add_argument("--reconstruction", type=float, default=1.0, help="weight of the reconstruction term in the recon variant.")
    parser.add_argument("--smooth", type=float, default=0.0, help="weight of the smoothness term in the recon variant (0: none).")
    parser.add_argument("--model", default="madnet_synth", help="source network.")
    parser.add_argument("--threads", default="auto", help="--threads of every command.")
    parser.add_argument("--label-tau", type=float, default=0.9, help="confidence threshold of the labels row.")
    parser.add_argument("--holdout-every", type=int, default=0, help="forwarded to adapt (agreement on held-back frames in OUT.jsonl).")
    parser.add_argument("--gt-labels", action="store_true", help="Middlebury: adapt on the ground truth as labels (the ceiling of better labels).")
    parser.add_argument("--mb-adapt", default=",".join(MB_ADAPT), help="Middlebury 2014 scenes adapted on (the others are unseen).")
    parser.add_argument("--max-frames", type=int, default=None, help="adapt on the first N KITTI frames only (smoke tests).")
    parser.add_argument("--adapt-args", default="", help="more options of every adapt command, e.g. '--no-amp'.")
    parser.add_argument(
        "--tag", default="", help="suffix of the adapted checkpoints' names in --work (runs that differ in --adapt-args or environment)."
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "results" / "generalisation")
    parser.add_argument("--fresh", action="store_true", help="rerun the adaptations even when their checkpoints exist.")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here.")
    args = parser.parse_args(argv)
    args.variants = [variant.strip() for variant in args.variants.split(",") if variant.strip()]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"--variants: unknown {sorted(unknown)}; choose among {', '.join(VARIANTS)}")
    args.mb_adapt = {key.strip() for key in args.mb_adapt.split(",") if key.strip()}
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = {}
    for name in [rig_name.strip() for rig_name in args.rigs.split(",") if rig_name.strip()]:
        if name not in ("kitti", "middlebury"):
            raise SystemExit(f"--rigs: unknown {name!r}; choose kitti, middlebury")
        results[name] = rig(name, args, args.work)
        print(
            "\n" + table({"kitti": "KITTI sequence -> kitti2012/000070 (grayscale)", "middlebury": "Middlebury 2014"}[name], results[name]) + "\n",
            flush=True,
        )
    print(f"budget {args.budget} per adapted row; total {time.perf_counter() - started:.0f} s")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "settings": {k: (sorted(v) if isinstance(v, set) else str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    "results": results,
                },
                indent=1,
                default=float,
            )
        )


if __name__ == "__main__":
    main()
