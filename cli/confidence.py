"""``pseudolabel confidence train | score | eval`` and ``pseudolabel labels``.

* ``train``: a CCNN from the proxies of a file, with ground-truth labels (``--gt``) or without any
  ground truth (``--labels wild``, Tosi et al. BMVC 2017).
* ``score``: ``confidence/<name>`` for every pair: the CCNN (shipped or ``--model``) and the
  conventional measures of :mod:`pseudolabel.confidence.measures`.
* ``eval``: area under the sparsification curve of every stored measure against ground truth.
* ``labels``: the proxy disparity where a confidence exceeds ``tau`` (NaN elsewhere).

Ground truth (``--gt GT_DIR``) is matched to pairs by key: ``GT_DIR/<key>.<ext>`` (PFM, KITTI
16-bit PNG = value / 256, 8/16-bit PNG or PGM / ``--gt-scale``), else the ground truth that
:func:`pseudolabel.datasets.discover_pairs` finds in a native layout below ``GT_DIR`` (the images'
root: Middlebury scene folders, KITTI, SceneFlow), keys compared whole or by their last components.

Files are edited crash-safely (:func:`pseudolabel.store.proxies.edit_proxies`): the work is committed every
``COMMIT_SECONDS`` (a kill loses at most that much), finished datasets are skipped by a rerun.
Torch is imported only by ``train`` and by ``score`` when a network runs.
"""

from __future__ import annotations

import fnmatch
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from pseudolabel import __version__
from pseudolabel.confidence.labels import label_statistics, threshold_labels
from pseudolabel.confidence.measures import MEASURES, compute_measure
from pseudolabel.confidence.sparsification import (
    DEFAULT_FRACTIONS,
    image_evaluation,
)
from pseudolabel.datasets import ground_truth_lookup, read_ground_truth
from pseudolabel.errors import InputError
from pseudolabel.store.journal import edit_proxies
from pseudolabel.store.proxies import key_to_name, open_proxies

#: Seconds of work between two commits of ``score`` / ``labels`` edits.
COMMIT_SECONDS: float = 60.0
#: Default tau of ``pseudolabel labels`` for the shipped CCNN (chosen on its training scenes, see
#: BENCHMARKS.md ## Confidence and models/weights/ccnn.md).
DEFAULT_TAU: float = 0.9


# ----------------------------------------------------------------------------------------------
# shared helpers


def select_keys(keys: Sequence[str], include: Sequence[str], exclude: Sequence[str]) -> list[str]:
    """Keys matching any ``include`` glob (all when empty) and no ``exclude`` glob, in order."""
    chosen = [key for key in keys if not include or any(fnmatch.fnmatchcase(key, pattern) for pattern in include)]
    chosen = [key for key in chosen if not any(fnmatch.fnmatchcase(key, pattern) for pattern in exclude)]
    return chosen


def _keys_of(proxies_path: Path, include: Sequence[str], exclude: Sequence[str]) -> list[str]:
    with open_proxies(proxies_path, "r") as proxies:
        keys = proxies.keys()
    chosen = select_keys(keys, include, exclude)
    if not keys:
        raise InputError(f"{proxies_path}: holds no finished pair; run `pseudolabel sgm` first")
    if not chosen:
        raise InputError(f"--keys/--exclude select none of the {len(keys)} pairs of {proxies_path} (e.g. {keys[0]!r})")
    return chosen


def _split_names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def parse_measures(text: str) -> list[str]:
    """``all`` -> every registered measure, ``none`` -> [], else a comma-separated list (checked)."""
    if text.strip() == "all":
        return list(MEASURES)
    if text.strip() in ("none", ""):
        return []
    names = _split_names(text)
    unknown = [name for name in names if name not in MEASURES]
    if unknown:
        raise InputError(f"--measures: unknown measure(s) {', '.join(unknown)}; choose from {', '.join(MEASURES)} or all/none")
    return names


def _gt_for(gt_dir: Path | None, keys: Sequence[str], gt_scale: float | None) -> dict[str, tuple[Path, float | None]]:
    if gt_dir is None:
        return {}
    lookup = ground_truth_lookup(gt_dir, keys, gt_scale)
    if not lookup:
        raise InputError(
            f"--gt {gt_dir}: no ground truth for any of the {len(keys)} pairs (e.g. {keys[0]!r}); "
            "name files <key>.pfm/.png or point --gt at the dataset root"
        )
    return lookup


def _edit_in_batches(path: Path, keys: Sequence[str], process: Callable[[Any, str], None], label: str) -> None:
    """Run ``process(proxies, key)`` for every key inside crash-safe edits committed every ``COMMIT_SECONDS``."""
    position = 0
    with click.progressbar(length=len(keys), label=label, show_pos=True, show_eta=True) as bar:
        while position < len(keys):
            with edit_proxies(path) as proxies:
                started = time.monotonic()
                while position < len(keys):
                    process(proxies, keys[position])
                    position += 1
                    bar.update(1)
                    if time.monotonic() - started > COMMIT_SECONDS:
                        break


def _key_options(function: Callable[..., Any]) -> Callable[..., Any]:
    function = click.option("--exclude", "exclude", multiple=True, metavar="GLOB", help="Skip pairs whose key matches (repeatable).")(function)
    function = click.option("--keys", "include", multiple=True, metavar="GLOB", help="Only pairs whose key matches (repeatable; default all).")(
        function
    )
    return function


def _gt_options(required: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        function = click.option(
            "--gt-scale",
            type=float,
            default=None,
            help="Divide stored PNG/PGM ground-truth values by this (default: 256 for 16-bit PNG, 1 for 8-bit; native layouts know theirs).",
        )(function)
        function = click.option(
            "--gt",
            "gt_dir",
            required=required,
            type=click.Path(path_type=Path),
            help="Ground truth: folder of <key>.pfm/.png files, or the dataset root of a native layout.",
        )(function)
        return function

    return decorate


_PROXIES = click.option(
    "--proxies", "proxies_path", required=True, type=click.Path(path_type=Path), help="Proxies HDF5 file written by `pseudolabel sgm`."
)


# ----------------------------------------------------------------------------------------------
# confidence group


@click.group("confidence")
def confidence() -> None:
    """Train, score and evaluate confidence measures of SGM proxies.

    \b
    Example:
      pseudolabel confidence score --proxies proxies.h5
      pseudolabel confidence eval --proxies proxies.h5 --gt data/ --plot curves.png
    """


class _EpochBars:
    """One click progress bar per epoch, showing the running loss."""

    def __init__(self, epochs: int, steps: int) -> None:
        self.epochs = epochs
        self.steps = steps
        self.bar: Any = None
        self.losses: list[float] = []

    def step(self, epoch: int, step: int, loss: float) -> None:
        if step == 0:
            self.losses = []
            self.bar = click.progressbar(
                length=self.steps,
                label=f"epoch {epoch + 1}/{self.epochs}",
                show_eta=True,
                item_show_func=lambda _: f"loss {np.mean(self.losses):.4f}" if self.losses else "",
            )
            self.bar.__enter__()
        self.losses.append(loss)
        self.bar.update(1)
        if step == self.steps - 1:
            self.bar.__exit__(None, None, None)


@confidence.command("train")
@click.option(
    "--proxies",
    "proxies_paths",
    required=True,
    multiple=True,
    type=click.Path(path_type=Path),
    help="Proxies HDF5 file written by `pseudolabel sgm` (repeatable: the pairs of every file are pooled).",
)
@click.option(
    "--gt",
    "gt_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Ground truth: folder of <key>.pfm/.png files, or the dataset root of a native layout. "
    "Give it once (used for every --proxies file) or once per --proxies file, in the same order.",
)
@click.option(
    "--gt-scale",
    type=float,
    default=None,
    help="Divide stored PNG/PGM ground-truth values by this (default: 256 for 16-bit PNG, 1 for 8-bit; native layouts know theirs).",
)
@click.option(
    "--labels",
    "label_source",
    type=click.Choice(["gt", "wild"]),
    default=None,
    help="gt: 1 where |d - gt| <= 3 px (needs --gt); wild: agreement of conventional measures, no ground truth. [default: gt with --gt]",
)
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Checkpoint to write (.pt).")
@_key_options
@click.option("--epochs", default=12, show_default=True, type=click.IntRange(min=1))
@click.option("--steps-per-epoch", default=40, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1), help="Crops per step.")
@click.option("--crop", default=48, show_default=True, type=click.IntRange(min=1), help="Side of the labelled crops, pixels.")
@click.option("--lr", "learning_rate", default=3e-3, show_default=True, type=float, help="Adam learning rate (cosine decay).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--filters", default=64, show_default=True, type=click.IntRange(min=1), help="Channels of the 3x3 convolutions.")
@click.option("--fc-filters", default=100, show_default=True, type=click.IntRange(min=1), help="Channels of the 1x1 convolutions.")
@click.option(
    "--inputs",
    "inputs_text",
    default="disparity",
    show_default=True,
    help="Input channels: 'disparity' (the paper's CCNN) optionally followed by conventional measures, e.g. disparity,apkr,msm.",
)
@click.option(
    "--range-jitter", default=0.0, show_default=True, type=float, help="Augmentation: scale the normalised disparity of each crop by exp(U(-j, j))."
)
@click.option("--wild-fraction", default=0.3, show_default=True, type=float, help="Wild labels: top/bottom share t of each measure.")
@click.option("--positive", default="lrc,uniqueness,dbl,apkr,med,wmn", show_default=True, help="Wild labels: positive set of measures.")
@click.option("--negative", default="lrc,uniqueness,apkr,wmn", show_default=True, help="Wild labels: negative set of measures.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1), help="CPU threads of torch.")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
def train(
    proxies_paths: tuple[Path, ...],
    gt_dirs: tuple[Path, ...],
    gt_scale: float | None,
    label_source: str | None,
    out: Path,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    epochs: int,
    steps_per_epoch: int,
    batch_size: int,
    crop: int,
    learning_rate: float,
    seed: int,
    filters: int,
    fc_filters: int,
    inputs_text: str,
    range_jitter: float,
    wild_fraction: float,
    positive: str,
    negative: str,
    threads: int,
    device: str,
) -> None:
    """Train a CCNN on the proxies of one or more files.

    \b
    Examples:
      pseudolabel confidence train --proxies train.h5 --gt data/middlebury/2006 --out ccnn.pt
      pseudolabel confidence train --proxies real.h5 --gt data/ --proxies synth.h5 --gt synth/ --out ccnn.pt
      pseudolabel confidence train --proxies mine.h5 --labels wild --out ccnn_wild.pt
    """
    import torch

    from pseudolabel.confidence import training
    from pseudolabel.models.ccnn import build_inputs

    if len(gt_dirs) > 1 and len(gt_dirs) != len(proxies_paths):
        raise InputError(
            f"{len(gt_dirs)} --gt folders for {len(proxies_paths)} --proxies files; give one --gt, or one per --proxies file in the same order"
        )
    gt_dir: Path | None = gt_dirs[0] if gt_dirs else None
    if label_source is None:
        if gt_dir is None:
            raise InputError("give --gt GT_DIR (labels from ground truth) or --labels wild (no ground truth)")
        label_source = "gt"
    if label_source == "gt" and gt_dir is None:
        raise InputError("--labels gt needs --gt GT_DIR; use --labels wild to train without ground truth")
    if label_source == "wild" and gt_dir is not None:
        raise InputError("--labels wild uses no ground truth; drop --gt")
    positive_set, negative_set = _split_names(positive), _split_names(negative)
    parse_measures(",".join(positive_set + negative_set))
    inputs = _split_names(inputs_text)
    if not inputs or inputs[0] != "disparity":
        raise InputError(f"--inputs must start with disparity, got {inputs_text!r}")
    parse_measures(",".join(inputs[1:]) or "none")
    torch.set_num_threads(threads)
    pairs: list[training.TrainingPair] = []
    sgm_params: list[Any] = []
    for file_index, proxies_path in enumerate(proxies_paths):
        file_gt = gt_dirs[file_index] if len(gt_dirs) > 1 else gt_dir
        sgm_params.append(
            _load_training_pairs(
                pairs,
                training,
                build_inputs,
                proxies_path,
                file_gt,
                gt_scale,
                label_source,
                include,
                exclude,
                inputs,
                positive_set,
                negative_set,
                wild_fraction,
            )
        )
    if not pairs:
        raise InputError(f"--gt {', '.join(map(str, gt_dirs))}: none of the selected pairs has ground truth")
    config = training.TrainingConfig(
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        batch_size=batch_size,
        crop=crop,
        learning_rate=learning_rate,
        seed=seed,
        filters=filters,
        fc_filters=fc_filters,
        inputs=tuple(inputs),
        range_jitter=range_jitter,
        device=device,
    )
    summary = training.summarise_training_data(pairs)
    summary.update(
        {
            "proxies": [str(path) for path in proxies_paths],
            "labels": label_source,
            "sgm_params": sgm_params[0] if len(sgm_params) == 1 else sgm_params,
            "gt": [str(path) for path in gt_dirs] if gt_dirs else None,
        }
    )
    click.echo(
        f"training on {summary['pairs']} pairs, {summary['labelled_pixels']} labelled pixels "
        f"({100 * summary['positive_fraction']:.1f}% positive), labels: {label_source}"
    )
    bars = _EpochBars(epochs, steps_per_epoch)
    started = time.perf_counter()
    model, history = training.train_ccnn(pairs, config, on_step=bars.step)
    arguments = {
        **training.training_config_dict(config),
        "labels": label_source,
        "gt_scale": gt_scale,
        "keys": list(include),
        "exclude": list(exclude),
        "wild_fraction": wild_fraction,
        "positive": positive_set,
        "negative": negative_set,
        "threads": threads,
        "seconds": round(time.perf_counter() - started, 1),
    }
    training.save_checkpoint(out, model, arguments, summary, history)
    click.echo(f"wrote {out} (final loss {history[-1]:.4f}, {arguments['seconds']} s)")


def _load_training_pairs(
    pairs: list[Any],
    training: Any,
    build_inputs: Callable[..., np.ndarray],
    proxies_path: Path,
    gt_dir: Path | None,
    gt_scale: float | None,
    label_source: str,
    include: Sequence[str],
    exclude: Sequence[str],
    inputs: Sequence[str],
    positive_set: Sequence[str],
    negative_set: Sequence[str],
    wild_fraction: float,
) -> Any:
    """Append the training pairs of one proxies file to ``pairs``; returns the file's SGM parameters (JSON)."""
    keys = _keys_of(proxies_path, include, exclude)
    lookup = _gt_for(gt_dir, keys, gt_scale) if label_source == "gt" else {}
    with open_proxies(proxies_path, "r") as proxies:
        sgm_params = proxies.sgm_params.to_json()
        for key in keys:
            params = proxies.pair_params(key)
            if label_source == "gt" and key not in lookup:
                click.echo(f"warning: no ground truth for {key}; skipped", err=True)
                continue
            wild_names = positive_set + negative_set if label_source == "wild" else []
            needed = sorted({need for name in [*inputs[1:], *wild_names] for need in MEASURES[name].needs} | {"disparity"})
            features = proxies.read(key, needed)
            disparity = features["disparity"]
            measures: dict[str, np.ndarray] = {}
            if label_source == "gt":
                gt_path, scale = lookup[key]
                targets = training.ground_truth_targets(disparity, read_ground_truth(gt_path, scale, disparity.shape, key))
            else:
                measures = training.measures_for_wild(features, params, positive_set, negative_set)
                targets = training.wild_targets(measures, wild_fraction, positive_set, negative_set)
            pairs.append(training.TrainingPair(key, build_inputs(features, params, inputs, measures), targets))
    return sgm_params


@confidence.command("score")
@_PROXIES
@click.option(
    "--model",
    "model_path",
    default=None,
    type=click.Path(path_type=Path),
    help="CCNN checkpoint; default: the shipped CCNN, written as confidence/ccnn. 'none' runs no network.",
)
@click.option("--name", default=None, help="Dataset name of the network's output (default: the checkpoint's file stem; ccnn for the shipped one).")
@click.option(
    "--measures",
    "measures_text",
    default="all",
    show_default=True,
    help=f"Conventional measures, comma-separated, 'all' or 'none' ({', '.join(MEASURES)}).",
)
@_key_options
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option(
    "--precision",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "float32", "bfloat16"]),
    help="Network arithmetic; auto = bfloat16 where the CPU has it natively (2x faster), else float32.",
)
@click.option("--threads", default=0, type=click.IntRange(min=0), help="CPU threads of torch (0 = torch's default).")
@click.option("--overwrite", is_flag=True, help="Recompute datasets that are already stored with the same model / measure.")
def score(
    proxies_path: Path,
    model_path: Path | None,
    name: str | None,
    measures_text: str,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    device: str,
    precision: str,
    threads: int,
    overwrite: bool,
) -> None:
    """Write confidence/<name> for every pair of a proxies file.

    \b
    Examples:
      pseudolabel confidence score --proxies proxies.h5
      pseudolabel confidence score --proxies proxies.h5 --model ccnn_wild.pt --measures none
    """
    measures = parse_measures(measures_text)
    keys = _keys_of(proxies_path, include, exclude)
    scorer = None
    network_attrs: dict[str, Any] = {}
    network_name = None
    if model_path is None or str(model_path) != "none":
        from pseudolabel.confidence import training

        shipped = model_path is None
        path = training.shipped_ccnn_path() if shipped else Path(model_path)
        if shipped and not path.is_file():
            raise InputError(f"the shipped CCNN {path} is missing; reinstall pseudolabel or pass --model")
        scorer, _ = training.make_scorer(path, device=device, precision=precision, threads=threads or None)
        network_name = name or ("ccnn" if shipped else path.stem)
        network_attrs = {
            "measure": network_name,
            "source": "network",
            "model": str(path),
            "model_sha256": training.file_digest(path),
            "created_by": f"pseudolabel {__version__}",
        }
    elif name is not None:
        raise InputError("--name names the network's output; it needs a --model")
    if scorer is None and not measures:
        raise InputError("nothing to score: --model none and --measures none")
    if network_name is not None and network_name in measures:
        raise InputError(f"--name {network_name} collides with the conventional measure of that name; choose another --name")

    def up_to_date(proxies: Any, key: str, dataset: str, attrs: dict[str, Any]) -> bool:
        if overwrite or not proxies.has(key, dataset):
            return False
        stored = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in proxies.h5["pairs"][key_to_name(key)][dataset].attrs.items()}
        return all(stored.get(k) == v for k, v in attrs.items())

    def process(proxies: Any, key: str) -> None:
        params = proxies.pair_params(key)
        conventional_attrs = {"source": "conventional", "created_by": f"pseudolabel {__version__}"}
        todo = [m for m in measures if not up_to_date(proxies, key, f"confidence/{m}", {"measure": m, **conventional_attrs})]
        run_network = scorer is not None and not up_to_date(proxies, key, f"confidence/{network_name}", network_attrs)
        network_inputs = list(scorer.inputs[1:]) if run_network else []
        needed = sorted({need for m in [*todo, *network_inputs] for need in MEASURES[m].needs} | ({"disparity"} if run_network else set()))
        features = proxies.read(key, needed) if needed else {}
        computed: dict[str, np.ndarray] = {}
        for measure in todo:
            computed[measure] = compute_measure(measure, features, params)
            proxies.write(key, f"confidence/{measure}", computed[measure], attrs={"measure": measure, **conventional_attrs})
        if run_network:
            proxies.write(key, f"confidence/{network_name}", scorer.confidence_from_features(features, params, computed), attrs=network_attrs)

    _edit_in_batches(proxies_path, keys, process, "scoring")
    written = ([network_name] if network_name else []) + measures
    click.echo(f"{len(keys)} pairs scored: {', '.join(written)}")


@confidence.command("eval")
@_PROXIES
@_gt_options(required=True)
@click.option(
    "--measures",
    "measures_text",
    default="stored",
    show_default=True,
    help="Measures to evaluate: 'stored' (every confidence/<name> of the file), 'all' (every conventional measure), or a comma-separated list "
    "(conventional ones that are not stored are computed on the fly).",
)
@_key_options
@click.option("--plot", "plot_path", default=None, type=click.Path(path_type=Path), help="Write the mean sparsification curves as a PNG.")
@click.option("--json", "json_path", default=None, type=click.Path(path_type=Path), help="Write per-pair AUCs and curves as JSON.")
@click.option("--per-pair", is_flag=True, help="Also print the AUC of every pair.")
def evaluate(
    proxies_path: Path,
    gt_dir: Path,
    gt_scale: float | None,
    measures_text: str,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    plot_path: Path | None,
    json_path: Path | None,
    per_pair: bool,
) -> None:
    """Area under the sparsification curve (bad-3) of each measure, against the optimal AUC.

    \b
    Example:
      pseudolabel confidence eval --proxies heldout.h5 --gt /data/middlebury --plot curves.png
    """
    keys = _keys_of(proxies_path, include, exclude)
    lookup = _gt_for(gt_dir, keys, gt_scale)
    requested = None if measures_text.strip() == "stored" else (list(MEASURES) if measures_text.strip() == "all" else _split_names(measures_text))
    results = evaluate_file(proxies_path, [k for k in keys if k in lookup], lookup, requested)
    skipped = [k for k in keys if k not in lookup]
    if skipped:
        click.echo(f"warning: no ground truth for {len(skipped)} pairs (e.g. {skipped[0]}); not evaluated", err=True)
    click.echo(format_auc_table(results, per_pair))
    if plot_path is not None:
        plot_curves(plot_path, results)
        click.echo(f"wrote {plot_path}")
    if json_path is not None:
        serialisable = {key: {**value, "curves": {m: c.tolist() for m, c in value["curves"].items()}} for key, value in results.items()}
        from pseudolabel.io import atomic_write_bytes

        atomic_write_bytes(json_path, json.dumps(serialisable, indent=1).encode())


def evaluate_file(
    proxies_path: Path, keys: Sequence[str], lookup: dict[str, tuple[Path, float | None]], measures: Sequence[str] | None
) -> dict[str, dict[str, Any]]:
    """Per-pair :func:`pseudolabel.confidence.sparsification.image_evaluation` of the stored / requested measures."""
    results: dict[str, dict[str, Any]] = {}
    with open_proxies(proxies_path, "r") as proxies:
        for key in keys:
            stored = proxies.list_confidences(key)
            names = stored if measures is None else list(measures)
            if not names:
                raise InputError(f"{proxies_path}: pair {key!r} has no confidence; run `pseudolabel confidence score` first")
            confidences: dict[str, np.ndarray] = {}
            features: dict[str, np.ndarray] = {}
            params = proxies.pair_params(key)
            for name in names:
                if name in stored:
                    confidences[name] = proxies.read(key, [f"confidence/{name}"])[f"confidence/{name}"]
                elif name in MEASURES:
                    missing = [need for need in MEASURES[name].needs if need not in features]
                    features.update(proxies.read(key, missing))
                    confidences[name] = compute_measure(name, features, params)
                else:
                    raise InputError(f"pair {key!r} has no confidence/{name}; score it first or choose from {', '.join(stored)}")
            disparity = proxies.read(key, ["disparity"])["disparity"]
            gt_path, scale = lookup[key]
            ground_truth = read_ground_truth(gt_path, scale, disparity.shape, key)
            results[key] = image_evaluation(confidences, disparity, ground_truth)
    return results


def summarise_aucs(results: dict[str, dict[str, Any]]) -> tuple[dict[str, float], float, float]:
    """Mean AUC per measure over the pairs, mean optimal AUC and mean bad-3 rate (pairs with ground truth)."""
    evaluated = [value for value in results.values() if value["pixels"] > 0]
    names = sorted({name for value in evaluated for name in value["auc"]})
    means = {name: float(np.mean([v["auc"][name] for v in evaluated if name in v["auc"]])) for name in names}
    optimal = float(np.mean([v["optimal_auc"] for v in evaluated])) if evaluated else float("nan")
    error = float(np.mean([v["error_rate"] for v in evaluated])) if evaluated else float("nan")
    return means, optimal, error


def format_auc_table(results: dict[str, dict[str, Any]], per_pair: bool = False) -> str:
    """Text table: measures sorted by mean AUC (x100), their ratio to the optimal AUC."""
    means, optimal, error = summarise_aucs(results)
    lines = [f"{len(results)} pairs, mean bad-3 {100 * error:.2f}%, mean optimal AUC x100 {100 * optimal:.3f}", ""]
    lines.append(f"{'measure':<14}{'AUC x100':>10}{'/ optimal':>11}")
    for name, value in sorted(means.items(), key=lambda item: item[1]):
        lines.append(f"{name:<14}{100 * value:>10.3f}{value / optimal if optimal > 0 else float('nan'):>11.2f}")
    if per_pair:
        names = sorted(means, key=means.get)  # type: ignore[arg-type]
        lines += ["", "per pair (AUC x100): " + "  ".join(["key", "bad3", "optimal", *names])]
        for key, value in results.items():
            cells = [f"{100 * value['auc'][n]:.2f}" if n in value["auc"] else "-" for n in names]
            lines.append("  ".join([key, f"{100 * value['error_rate']:.2f}", f"{100 * value['optimal_auc']:.2f}", *cells]))
    return "\n".join(lines)


def plot_curves(path: Path, results: dict[str, dict[str, Any]]) -> None:
    """Mean sparsification curves (bad-3 of the kept pixels vs kept fraction) as a PNG (OpenCV drawing)."""
    import cv2

    from pseudolabel.io import write_image

    names = sorted({name for value in results.values() for name in value["curves"]})
    evaluated = [value for value in results.values() if value["pixels"] > 0]
    curves = {name: np.mean([v["curves"][name] for v in evaluated if name in v["curves"]], axis=0) for name in names}
    optimal_curve = np.mean([np.clip((DEFAULT_FRACTIONS - (1 - v["error_rate"])) / DEFAULT_FRACTIONS, 0, None) for v in evaluated], axis=0)
    width, height, margin = 900, 560, 60
    canvas = np.full((height, width, 3), 255, np.uint8)
    top = max(max(float(c.max()) for c in curves.values()), float(optimal_curve.max()), 1e-3) * 1.05

    def point(fraction: float, value: float) -> tuple[int, int]:
        x = margin + fraction * (width - margin - 220)
        y = height - margin - value / top * (height - 2 * margin)
        return int(round(x)), int(round(y))

    cv2.line(canvas, point(0, 0), point(1, 0), (0, 0, 0), 1)
    cv2.line(canvas, point(0, 0), point(0, top), (0, 0, 0), 1)
    for tick in np.linspace(0, 1, 5):
        cv2.putText(canvas, f"{tick:.2f}", (point(tick, 0)[0] - 15, height - margin + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        cv2.putText(canvas, f"{100 * tick * top:.1f}%", (5, point(0, tick * top)[1] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    cv2.putText(canvas, "kept fraction (most confident first)", (width // 2 - 200, height - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    cv2.putText(canvas, "bad-3 of kept pixels", (margin, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    rng = np.random.default_rng(0)
    entries = [("optimal", optimal_curve, (0, 0, 0))] + [(n, curves[n], tuple(int(c) for c in rng.integers(0, 200, 3))) for n in names]
    means, _, _ = summarise_aucs(results)
    for row, (name, curve, colour) in enumerate(entries):
        points = np.array([point(f, v) for f, v in zip(DEFAULT_FRACTIONS, curve)], np.int32)
        cv2.polylines(canvas, [points], False, colour, 2 if name in ("optimal", "ccnn") else 1, cv2.LINE_AA)
        label = name if name == "optimal" else f"{name} {100 * means[name]:.2f}"
        y = margin + 18 * row
        cv2.line(canvas, (width - 200, y - 4), (width - 175, y - 4), colour, 2)
        cv2.putText(canvas, label, (width - 170, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    write_image(path, canvas)


# ----------------------------------------------------------------------------------------------
# labels


@click.command("labels")
@_PROXIES
@click.option("--tau", default=DEFAULT_TAU, show_default=True, type=float, help="Keep pixels whose confidence is above tau.")
@click.option("--measure", default="ccnn", show_default=True, help="Stored confidence to threshold (confidence/<measure>).")
@_gt_options(required=False)
@_key_options
def labels(
    proxies_path: Path,
    tau: float,
    measure: str,
    gt_dir: Path | None,
    gt_scale: float | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
) -> None:
    """Write `labels` (proxy disparity where confidence > tau, NaN elsewhere) for every pair.

    \b
    Examples:
      pseudolabel labels --proxies proxies.h5 --tau 0.5
      pseudolabel labels --proxies proxies.h5 --tau 0.5 --measure ccnn --gt data/
    """
    if not 0.0 <= tau < 1.0:
        raise InputError(f"--tau must be in [0, 1), got {tau}")
    keys = _keys_of(proxies_path, include, exclude)
    with open_proxies(proxies_path, "r") as proxies:
        lacking = [key for key in keys if not proxies.has(key, f"confidence/{measure}")]
    if lacking:
        raise InputError(
            f"{proxies_path}: {len(lacking)} pairs (e.g. {lacking[0]!r}) have no confidence/{measure}; "
            f"run `pseudolabel confidence score --proxies {proxies_path}` first"
        )
    lookup = _gt_for(gt_dir, keys, gt_scale)
    rows: list[tuple[str, dict[str, float]]] = []

    def process(proxies: Any, key: str) -> None:
        arrays = proxies.read(key, ["disparity", f"confidence/{measure}"])
        result = threshold_labels(arrays["disparity"], arrays[f"confidence/{measure}"], tau)
        proxies.write(key, "labels", result, attrs={"tau": float(tau), "measure": measure, "created_by": f"pseudolabel {__version__}"})
        if key in lookup:
            gt_path, scale = lookup[key]
            rows.append((key, label_statistics(result, read_ground_truth(gt_path, scale, result.shape, key))))
        else:
            rows.append((key, {"density": float(np.isfinite(result).mean())}))

    _edit_in_batches(proxies_path, keys, process, "labels")
    click.echo(format_label_table(rows, tau, measure))


def format_label_table(rows: Sequence[tuple[str, dict[str, float]]], tau: float, measure: str) -> str:
    """Per-pair density (and, with ground truth, coverage of the ground truth and bad-1/2/3 in %)."""
    with_gt = any("bad3" in stats for _, stats in rows)
    header = f"{'pair':<40}{'density %':>10}" + (f"{'gt kept %':>10}{'bad1 %':>8}{'bad2 %':>8}{'bad3 %':>8}" if with_gt else "")
    lines = [f"labels: confidence/{measure} > {tau}", header]
    for key, stats in rows:
        line = f"{key:<40}{100 * stats['density']:>10.2f}"
        if "bad3" in stats:
            line += f"{100 * stats['gt_coverage']:>10.2f}{100 * stats['bad1']:>8.2f}{100 * stats['bad2']:>8.2f}{100 * stats['bad3']:>8.2f}"
        lines.append(line)
    line = f"{'mean':<40}{100 * np.mean([s['density'] for _, s in rows]):>10.2f}"
    if with_gt:
        scored = [s for _, s in rows if "bad3" in s]
        line += "".join(
            f"{100 * np.nanmean([s[k] for s in scored]):>{w}.2f}" for k, w in (("gt_coverage", 10), ("bad1", 8), ("bad2", 8), ("bad3", 8))
        )
    lines.append(line)
    return "\n".join(lines)
