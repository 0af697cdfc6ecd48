"""``pseudolabel confidence train | score | eval`` and ``pseudolabel labels``: options and messages only.

Each command is one library call (the same a notebook makes):

* ``train``: :func:`pseudolabel.confidence.training.train_confidence_from_proxies` -- a CCNN from the
  proxies of one or more files, with ground-truth labels (``--gt``) or without any ground truth
  (``--labels wild``, Tosi et al. BMVC 2017);
* ``score``: :func:`pseudolabel.confidence.evaluation.score_proxies` -- ``confidence/<name>`` for every
  pair: the CCNN (shipped or ``--model``) and the conventional measures;
* ``eval``: :func:`pseudolabel.confidence.evaluation.evaluate_proxies` -- area under the sparsification
  curve of every stored measure against ground truth;
* ``labels``: :func:`pseudolabel.confidence.evaluation.label_proxies` -- the proxy disparity where a
  confidence exceeds ``tau`` (NaN elsewhere).

Ground truth (``--gt GT_DIR``) is matched to pairs by key (:func:`pseudolabel.datasets.ground_truth_lookup`).
Files are edited crash-safely; finished datasets are skipped by a rerun. Torch is imported only by
``train`` and by ``score`` when a network runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from pseudolabel.cli.options import ClickProgress, gt_options, key_options, threads_option
from pseudolabel.confidence.evaluation import (
    SHIPPED_MODEL,
    evaluate_proxies,
    format_auc_table,
    format_label_table,
    label_proxies,
    score_proxies,
    split_names,
    unavailable_note,
)
from pseudolabel.confidence.labels import DEFAULT_TAU
from pseudolabel.confidence.measures import MEASURES
from pseudolabel.confidence.targets import WILD_FRACTION, WILD_NEGATIVE, WILD_POSITIVE

__all__ = ["DEFAULT_TAU", "confidence", "labels"]

_PROXIES = click.option(
    "--proxies", "proxies_path", required=True, type=click.Path(path_type=Path), help="Proxies HDF5 file written by `pseudolabel sgm`."
)


@click.group("confidence")
def confidence() -> None:
    """Train, score and evaluate confidence measures of SGM proxies.

    \b
    Example:
      pseudolabel confidence score --proxies proxies.h5
      pseudolabel confidence eval --proxies proxies.h5 --gt data/ --plot curves.png
    """


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
@key_options
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
@click.option("--wild-fraction", default=WILD_FRACTION, show_default=True, type=float, help="Wild labels: top/bottom share t of each measure.")
@click.option("--positive", default=",".join(WILD_POSITIVE), show_default=True, help="Wild labels: positive set of measures.")
@click.option("--negative", default=",".join(WILD_NEGATIVE), show_default=True, help="Wild labels: negative set of measures.")
@threads_option
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
    threads: int | None,
    device: str,
) -> None:
    """Train a CCNN on the proxies of one or more files.

    \b
    Examples:
      pseudolabel confidence train --proxies train.h5 --gt data/middlebury/2006 --out ccnn.pt
      pseudolabel confidence train --proxies real.h5 --gt data/ --proxies synth.h5 --gt synth/ --out ccnn.pt
      pseudolabel confidence train --proxies mine.h5 --labels wild --out ccnn_wild.pt
    """
    from pseudolabel.confidence.training import TrainingConfig, TrainingData, train_confidence_from_proxies

    config = TrainingConfig(
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        batch_size=batch_size,
        crop=crop,
        learning_rate=learning_rate,
        seed=seed,
        filters=filters,
        fc_filters=fc_filters,
        inputs=tuple(split_names(inputs_text)),
        range_jitter=range_jitter,
        device=device,
    )

    def announce(data: TrainingData) -> None:
        for _, key in data.skipped:
            click.echo(f"warning: no ground truth for {key}; skipped", err=True)
        summary = data.summary
        click.echo(
            f"training on {summary['pairs']} pairs, {summary['labelled_pixels']} labelled pixels "
            f"({100 * summary['positive_fraction']:.1f}% positive), labels: {summary['labels']}"
        )

    result = train_confidence_from_proxies(
        proxies_paths,
        out,
        gt=gt_dirs,
        labels=label_source,
        keys=include,
        exclude=exclude,
        gt_scale=gt_scale,
        config=config,
        wild_fraction=wild_fraction,
        positive=positive,
        negative=negative,
        threads=threads,
        progress=ClickProgress(),
        on_loaded=announce,
    )
    click.echo(f"wrote {out} (final loss {result.history[-1]:.4f}, {result.seconds} s)")


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
@key_options
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option(
    "--precision",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "float32", "bfloat16"]),
    help="Network arithmetic; auto = bfloat16 where the CPU has it natively (2x faster), else float32.",
)
@threads_option
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
    threads: int | None,
    overwrite: bool,
) -> None:
    """Write confidence/<name> for every pair of a proxies file.

    \b
    Examples:
      pseudolabel confidence score --proxies proxies.h5
      pseudolabel confidence score --proxies proxies.h5 --model ccnn_wild.pt --measures none
    """
    model = SHIPPED_MODEL if model_path is None else (None if str(model_path) == "none" else model_path)
    summary = score_proxies(
        proxies_path,
        measures=measures_text,
        model=model,
        name=name,
        keys=include,
        exclude=exclude,
        device=device,
        precision=precision,
        threads=threads,
        overwrite=overwrite,
        progress=ClickProgress(),
    )
    click.echo(f"{len(summary.keys)} pairs scored: {', '.join(summary.written)}")
    note = unavailable_note(proxies_path, summary)
    if note:
        click.echo(note)


@confidence.command("eval")
@_PROXIES
@gt_options(required=True)
@click.option(
    "--measures",
    "measures_text",
    default="stored",
    show_default=True,
    help="Measures to evaluate: 'stored' (every confidence/<name> of the file), 'all' (every conventional measure), or a comma-separated list "
    "(conventional ones that are not stored are computed on the fly).",
)
@key_options
@click.option(
    "--plot",
    "plot_path",
    default=None,
    type=click.Path(path_type=Path),
    help="Write the mean sparsification curves as a PNG (an SVG when the name ends with .svg).",
)
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
    evaluation = evaluate_proxies(
        proxies_path, gt_dir, measures_text, keys=include, exclude=exclude, gt_scale=gt_scale, plot_path=plot_path, json_path=json_path
    )
    if evaluation.skipped:
        skipped = evaluation.skipped
        click.echo(f"warning: no ground truth for {len(skipped)} pairs (e.g. {skipped[0]}); not evaluated", err=True)
    click.echo(format_auc_table(evaluation.results, per_pair))
    if plot_path is not None:
        click.echo(f"wrote {plot_path}")


@click.command("labels")
@_PROXIES
@click.option("--tau", default=DEFAULT_TAU, show_default=True, type=float, help="Keep pixels whose confidence is above tau.")
@click.option("--measure", default="ccnn", show_default=True, help="Stored confidence to threshold (confidence/<measure>).")
@gt_options(required=False)
@key_options
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
    rows = label_proxies(proxies_path, tau, measure, keys=include, exclude=exclude, gt_dir=gt_dir, gt_scale=gt_scale, progress=ClickProgress())
    click.echo(format_label_table(rows, tau, measure))
