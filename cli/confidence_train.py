"""``pseudolabel confidence train`` and ``pseudolabel confidence calibrate``: options and messages only.

* ``train``: :func:`pseudolabel.confidence.from_proxies.train_confidence_from_proxies` -- a CCNN (or, with
  ``--arch lfn``, a network that also reads the image) from the proxies of one or more files, with
  ground-truth labels (``--gt``) or without any ground truth (``--labels wild``, Tosi et al. BMVC 2017;
  ``--labels wild-agree`` / ``wild-soft``, those labels checked by independent matchers);
* ``calibrate``: :func:`pseudolabel.confidence.from_proxies.calibrate_confidence_model` -- an isotonic,
  temperature or isotonic-pair calibration of a checkpoint, fitted on proxies with ground truth, stored in it.

Both belong to the ``pseudolabel confidence`` group (:mod:`pseudolabel.cli.confidence`). Torch is
imported inside the commands only.
"""

from pathlib import Path

import click

from pseudolabel.cli.options import ClickProgress, key_options, threads_option
from pseudolabel.confidence.calibration import METHODS as CALIBRATION_METHODS
from pseudolabel.confidence.files import split_names
from pseudolabel.confidence.measures import CCNN_INPUTS
from pseudolabel.confidence.targets import LABEL_SOURCES, WILD_FRACTION, WILD_NEGATIVE, WILD_POSITIVE
from pseudolabel.confidence.teachers import DEFAULT_TEACHERS, TEACHERS

__all__ = ["calibrate_command", "train"]


@click.command("train")
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
    type=click.Choice(list(LABEL_SOURCES)),
    default=None,
    help="gt: 1 where |d - gt| <= 3 px (needs --gt); wild: agreement of conventional measures, no ground truth; "
    "wild-agree: positive where the wild labels and every --teachers matcher agree with the proxy (within 1 px), negative where "
    "either says wrong (wild negative, or a matcher more than 3 px away), no ground truth; wild-soft: the share of those votes "
    "that say right, as a soft target; wild-confirm: the wild labels, positives kept only where every matcher agrees. "
    "[default: gt with --gt]",
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
    "--arch",
    "architecture",
    default="ccnn",
    show_default=True,
    type=click.Choice(["ccnn", "lfn"]),
    help="ccnn: the disparity (and measures) only; lfn: late fusion with the left image and the photometric error (reads the pair's images).",
)
@click.option(
    "--inputs",
    "inputs_text",
    default=None,
    help="Input channels: 'disparity' optionally followed by conventional measures (e.g. disparity,apkr,msm) and the image "
    f"channels image,photometric,texture (any network; lfn reads image and photometric by default). [default: {','.join(CCNN_INPUTS)} for ccnn (the disparity alone cannot tell the pixels SGM "
    "filled: wild labels would teach it nothing), disparity,image,photometric for lfn]",
)
@click.option(
    "--calibrate",
    default="none",
    show_default=True,
    type=click.Choice(["none", *CALIBRATION_METHODS]),
    help="Fit a calibration on the training pairs (needs --gt) and store it in the checkpoint; `confidence calibrate` fits one on other pairs.",
)
@click.option(
    "--range-jitter", default=0.0, show_default=True, type=float, help="Augmentation: scale the normalised disparity of each crop by exp(U(-j, j))."
)
@click.option(
    "--standardise/--no-standardise",
    "standardise_inputs",
    default=False,
    show_default=True,
    help="Train on input channels of mean 0 and deviation 1 over the training pixels (the map is folded into the saved network): "
    "a better ranking with --labels gt but less accurate labels at a target error; a much worse network with wild labels.",
)
@click.option(
    "--pair-weighting",
    default="pairs",
    show_default=True,
    type=click.Choice(["pairs", "pixels"]),  # pseudolabel.confidence.training.PAIR_WEIGHTINGS (which imports torch)
    help="How each crop picks its pair: pairs (every pair alike) or pixels (in proportion to its labelled pixels; before 2026-12-01).",
)
@click.option("--wild-fraction", default=WILD_FRACTION, show_default=True, type=float, help="Wild labels: top/bottom share t of each measure.")
@click.option("--positive", default=",".join(WILD_POSITIVE), show_default=True, help="Wild labels: positive set of measures.")
@click.option("--negative", default=",".join(WILD_NEGATIVE), show_default=True, help="Wild labels: negative set of measures.")
@click.option(
    "--teachers",
    default=",".join(DEFAULT_TEACHERS),
    show_default=True,
    help=f"wild-agree / wild-soft / wild-confirm: independent matchers run on each pair's images (comma-separated; {', '.join(TEACHERS)}).",
)
@threads_option
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--resume", is_flag=True, help="continue the unfinished training kept in OUT.partial.pt (updated after every epoch).")
@click.option("--overwrite", is_flag=True, help="replace an existing OUT (and drop an OUT.partial.pt) instead of refusing.")
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
    architecture: str,
    inputs_text: str | None,
    calibrate: str,
    range_jitter: float,
    standardise_inputs: bool,
    pair_weighting: str,
    wild_fraction: float,
    positive: str,
    negative: str,
    teachers: str,
    threads: int | None,
    device: str,
    resume: bool,
    overwrite: bool,
) -> None:
    """Train a CCNN on the proxies of one or more files.

    `pseudolabel confidence score --model OUT` then writes its confidence as confidence/<OUT's stem>
    (ccnn_wild.pt -> confidence/ccnn_wild), the name later commands take as --measure.

    \b
    Examples:
      pseudolabel confidence train --proxies train.h5 --gt data/middlebury/2006 --out ccnn.pt
      pseudolabel confidence train --proxies real.h5 --gt data/ --proxies synth.h5 --gt synth/ --out ccnn.pt
      pseudolabel confidence train --proxies mine.h5 --labels wild --out ccnn_wild.pt
      pseudolabel confidence train --proxies mine.h5 --labels wild-agree --teachers sgbm --out ccnn_agree.pt
    Ctrl-C keeps the finished epochs in OUT.partial.pt; the command it prints (with --resume) continues.
    """
    from pseudolabel.confidence.from_proxies import TrainingData, train_confidence_from_proxies
    from pseudolabel.confidence.training import TrainingConfig, default_inputs

    config = TrainingConfig(
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        batch_size=batch_size,
        crop=crop,
        learning_rate=learning_rate,
        seed=seed,
        filters=filters,
        fc_filters=fc_filters,
        inputs=tuple(split_names(inputs_text)) if inputs_text is not None else default_inputs(architecture),
        range_jitter=range_jitter,
        device=device,
        architecture=architecture,
        standardise_inputs=standardise_inputs,
        pair_weighting=pair_weighting,
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
        teachers=teachers,
        threads=threads,
        progress=ClickProgress(),
        on_loaded=announce,
        resume=resume,
        overwrite=overwrite,
        calibrate=calibrate,
    )
    calibrated = f", calibrated: {calibrate}" if calibrate != "none" else ""
    click.echo(f"wrote {out} (final loss {result.history[-1]:.4f}, {result.seconds} s{calibrated})")
    click.echo(f"next: pseudolabel confidence score --proxies PROXIES --model {out} writes confidence/{Path(out).stem}")


@click.command("calibrate")
@click.option(
    "--proxies",
    "proxies_paths",
    required=True,
    multiple=True,
    type=click.Path(path_type=Path),
    help="Proxies HDF5 file(s) with ground truth; pairs the network was not trained on give an honest calibration.",
)
@click.option(
    "--gt", "gt_dirs", required=True, multiple=True, type=click.Path(path_type=Path), help="Ground truth: once, or once per --proxies file."
)
@click.option("--gt-scale", type=float, default=None, help="Divide stored PNG/PGM ground-truth values by this.")
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path), help="Confidence checkpoint to calibrate.")
@click.option(
    "--method",
    default="isotonic",
    show_default=True,
    type=click.Choice(list(CALIBRATION_METHODS)),
    help="isotonic-pair: isotonic, then moved by how hard each pair is (its share of pixels SGM's checks rejected).",
)
@click.option("--out", "out", default=None, type=click.Path(path_type=Path), help="Checkpoint to write (default: replace --model).")
@key_options
def calibrate_command(
    proxies_paths: tuple[Path, ...],
    gt_dirs: tuple[Path, ...],
    gt_scale: float | None,
    model_path: Path,
    method: str,
    out: Path | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
) -> None:
    """Fit a calibration of a confidence network (so that a share c of the pixels of confidence c is within 3 px).

    \b
    Example:
      pseudolabel confidence calibrate --proxies other.h5 --gt data/ --model ccnn.pt --out ccnn_calibrated.pt
    """
    from pseudolabel.confidence.from_proxies import calibrate_confidence_model

    result = calibrate_confidence_model(model_path, proxies_paths, gt_dirs, method, out, keys=include, exclude=exclude, gt_scale=gt_scale)
    click.echo(
        f"wrote {result.out}: {method} calibration fitted on {result.pairs} pairs; "
        f"ECE {100 * result.ece_raw:.2f}% raw -> {100 * result.ece_calibrated:.2f}% calibrated (on those pairs)"
    )
