"""``pseudolabel labels``: options and messages only; :func:`pseudolabel.confidence.labelling.label_proxies`
writes the proxy disparity where a confidence exceeds ``tau`` (NaN elsewhere), or a tau per pair for a
target expected error.
"""

from pathlib import Path

import click

from pseudolabel.cli.options import ClickProgress, gt_options, key_options, proxies_option, scheduler_option
from pseudolabel.confidence.labelling import format_label_table, label_proxies
from pseudolabel.confidence.labels import DEFAULT_TAU
from pseudolabel.errors import InputError

__all__ = ["DEFAULT_TAU", "labels"]


def _share(text: str | None) -> float | None:
    """A share written as ``1%`` or ``0.01``; None stays None."""
    if text is None:
        return None
    try:
        value = float(text[:-1]) / 100.0 if text.strip().endswith("%") else float(text)
    except ValueError:
        raise InputError(f"--target-error must be a share like 1% or 0.01, got {text!r}") from None
    return value


@click.command("labels")
@proxies_option
@click.option("--tau", default=None, type=float, help=f"Keep pixels whose confidence is above tau. [default: {DEFAULT_TAU}]")
@click.option(
    "--target-error",
    "target_error_text",
    default=None,
    help="Instead of --tau: per pair, the smallest tau whose labels have an expected error rate (mean of 1 - confidence) "
    "of at most this, e.g. 1% or 0.01. Meant for a calibrated confidence. A pair on which no tau reaches it gets no labels.",
)
@click.option("--measure", default="ccnn", show_default=True, help="Stored confidence to threshold (confidence/<measure>).")
@gt_options(required=False)
@key_options
@scheduler_option("the thresholding of each pair", workers_read_images=False)
def labels(
    proxies_path: Path,
    tau: float | None,
    target_error_text: str | None,
    measure: str,
    gt_dir: Path | None,
    gt_scale: float | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    scheduler: str | None,
) -> None:
    """Write `labels` (proxy disparity where confidence > tau, NaN elsewhere) for every pair.

    \b
    Examples:
      pseudolabel labels --proxies proxies.h5
      pseudolabel labels --proxies proxies.h5 --tau 0.95 --measure ccnn --gt data/
      pseudolabel labels --proxies proxies.h5 --target-error 1%
    """
    target_error = _share(target_error_text)
    if target_error is not None and tau is not None:
        raise InputError("give --tau or --target-error, not both")
    tau = DEFAULT_TAU if tau is None else tau
    rows = label_proxies(
        proxies_path,
        tau,
        measure,
        keys=include,
        exclude=exclude,
        gt_dir=gt_dir,
        gt_scale=gt_scale,
        progress=ClickProgress(),
        target_error=target_error,
        scheduler=scheduler or None,
    )
    click.echo(format_label_table(rows, tau, measure, target_error))
