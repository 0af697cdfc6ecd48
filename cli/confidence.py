"""``pseudolabel confidence train | calibrate | score | eval``: options and messages only (``train`` and
``calibrate`` are in :mod:`pseudolabel.cli.confidence_train`; ``pseudolabel labels`` in :mod:`pseudolabel.cli.labels`).

Each command is one library call (the same a notebook makes):

* ``train``: :func:`pseudolabel.confidence.from_proxies.train_confidence_from_proxies` -- a CCNN (or, with
  ``--arch lfn``, a network that also reads the image) from the proxies of one or more files, with
  ground-truth labels (``--gt``) or without any ground truth (``--labels wild``, Tosi et al. BMVC 2017);
* ``calibrate``: :func:`pseudolabel.confidence.from_proxies.calibrate_confidence_model` -- an isotonic,
  temperature or isotonic-pair calibration of a checkpoint, fitted on proxies with ground truth, stored in it;
* ``score``: :func:`pseudolabel.confidence.scoring.score_proxies` -- ``confidence/<name>`` for every
  pair: the CCNN (shipped or ``--model``) and the conventional measures;
* ``eval``: :func:`pseudolabel.confidence.evaluation.evaluate_proxies` -- area under the sparsification
  curve and expected calibration error of every stored measure against ground truth;
* ``labels``: :func:`pseudolabel.confidence.labelling.label_proxies` -- the proxy disparity where a
  confidence exceeds ``tau`` (NaN elsewhere), or a tau per pair for a target expected error.

Ground truth (``--gt GT_DIR``) is matched to pairs by key (:func:`pseudolabel.datasets.ground_truth_lookup`).
Files are edited crash-safely; finished datasets are skipped by a rerun. Torch is imported only by
``train`` and by ``score`` when a network runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from pseudolabel.cli.confidence_train import calibrate_command, train
from pseudolabel.cli.options import ClickProgress, gt_options, key_options, proxies_option, scheduler_option, threads_option
from pseudolabel.confidence.evaluation import evaluate_proxies, format_auc_table, reliability_plot_path
from pseudolabel.confidence.labels import DEFAULT_TAU
from pseudolabel.confidence.measures import MEASURES
from pseudolabel.confidence.scoring import DEFAULT_MEASURES, SHIPPED_MODEL, score_proxies, unavailable_note

__all__ = ["DEFAULT_TAU", "confidence"]


@click.group("confidence")
def confidence() -> None:
    """Train, score and evaluate confidence measures of SGM proxies.

    \b
    Example:
      pseudolabel confidence score --proxies proxies.h5
      pseudolabel confidence eval --proxies proxies.h5 --gt data/ --plot curves.png
    """


@confidence.command("score")
@proxies_option
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
    default=DEFAULT_MEASURES,
    show_default=True,
    help=f"Conventional measures to store as well, comma-separated, 'all' or 'none' ({', '.join(MEASURES)}). No later stage reads them "
    "unless told to (`confidence eval --measures all` computes them on the fly).",
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
@scheduler_option("the scoring of each pair (the network runs on each worker's --device and --precision)", workers_read_images=False)
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
    scheduler: str | None,
) -> None:
    """Write confidence/<name> for every pair of a proxies file.

    \b
    Examples:
      pseudolabel confidence score --proxies proxies.h5
      pseudolabel confidence score --proxies proxies.h5 --model ccnn_wild.pt
      pseudolabel confidence score --proxies proxies.h5 --model none --measures all
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
        scheduler=scheduler or None,
    )
    if summary.written:
        click.echo(f"{len(summary.keys)} pairs scored: {', '.join(summary.written)}")
    for name in summary.kept:
        click.echo(f"{len(summary.keys)} pairs: confidence/{name} is the one `sgm --store minimal` stored (the file lacks the network's inputs)")
    note = unavailable_note(proxies_path, summary)
    if note:
        click.echo(note)


@confidence.command("eval")
@proxies_option
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
    help="Write the mean sparsification curves as a PNG (an SVG when the name ends with .svg), and the reliability diagram "
    "next to it (NAME.reliability.png).",
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
        click.echo(f"wrote {plot_path} and {reliability_plot_path(plot_path)}")


confidence.add_command(train)
confidence.add_command(calibrate_command)
