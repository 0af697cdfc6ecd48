"""``pseudolabel synth``: render synthetic stereo pairs with exact ground truth (numpy + OpenCV, no torch)."""

from __future__ import annotations

from pathlib import Path

import click

from pseudolabel.cli.options import ClickProgress, SizeType
from pseudolabel.errors import InputError


def object_range(min_objects: int | None, max_objects: int | None) -> tuple[int, int]:
    """Fewest and most objects per scene from ``--min-objects``/``--max-objects``; a bound not given
    follows the other one (default: :class:`SynthConfig`'s, 5 to 16)."""
    from pseudolabel.synth.config import SynthConfig

    low, high = SynthConfig.min_objects, SynthConfig.max_objects
    if min_objects is not None and max_objects is not None:
        return min_objects, max_objects
    if min_objects is not None:
        return min_objects, max(min_objects, high)
    if max_objects is not None:
        return min(max_objects, low), max_objects
    return low, high


@click.command("synth")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (left/, right/, disp_left/, disp_right/, occ_left/, occ_right/, meta.json). A rerun with the same options resumes.",
)
@click.option("--n", "count", type=int, default=500, show_default=True, help="Number of pairs.")
@click.option(
    "--size", type=SizeType("WIDTHxHEIGHT", "--size 512x256"), default="512x256", show_default=True, help="Image size WIDTHxHEIGHT in pixels."
)
@click.option("--max-disp", type=float, default=96.0, show_default=True, help="Every disparity is below this (pixels).")
@click.option("--seed", type=int, default=0, show_default=True, help="Dataset seed; pair i uses pair_seed(seed, i).")
@click.option("--min-objects", type=int, default=None, help="Fewest foreground objects per scene [default: 5].")
@click.option("--max-objects", type=int, default=None, help="Most foreground objects per scene [default: 16].")
@click.option(
    "--no-photometric",
    is_flag=True,
    help="No gain/gamma/noise/blur/JPEG differences or highlights: the right view is the exact resampled texture.",
)
@click.option(
    "--preview",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a PNG grid (left | right | left disparity | right disparity) of the first pairs.",
)
@click.option("--preview-count", type=int, default=4, show_default=True, help="Rows of the --preview grid.")
@click.option("--preview-scale", type=float, default=0.5, show_default=True, help="Size of the --preview tiles relative to the images.")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def synth(
    out_dir: Path | None,
    count: int,
    size: tuple[int, int],
    max_disp: float,
    seed: int,
    min_objects: int | None,
    max_objects: int | None,
    no_photometric: bool,
    preview: Path | None,
    preview_count: int,
    preview_scale: float,
    quiet: bool,
) -> None:
    """Render synthetic stereo pairs with exact ground truth for both views.

    Layered scenes of textured planes (background, polygons, ellipses, blobs, thin structures);
    disparities are exact in both views, occlusion PNGs hold 255 where a pixel is not visible in
    the other view. Files are written atomically; an interrupted run resumes.

    \b
    Examples:
      pseudolabel synth --out data/synth --n 500 --size 512x256 --max-disp 96 --seed 0
      pseudolabel synth --preview docs/synth.png --preview-count 4 --preview-scale 0.5 --seed 0
    """
    # imported here so that `pseudolabel --help` stays fast
    from pseudolabel.synth.config import SynthConfig
    from pseudolabel.synth.files import write_synth_dataset, write_synth_preview

    if out_dir is None and preview is None:
        raise InputError("give --out DIR to write a dataset and/or --preview FILE.png to write a picture")
    width, height = size
    fewest, most = object_range(min_objects, max_objects)
    config = SynthConfig(width=width, height=height, max_disp=float(max_disp), min_objects=fewest, max_objects=most)
    if no_photometric:
        config = config.without_photometric()
    if seed < 0:
        raise InputError(f"--seed ({seed}) must be >= 0")
    if out_dir is not None:
        rendered = write_synth_dataset(out_dir, config, count, seed, progress=ClickProgress(enabled=not quiet))
        if not quiet:
            click.echo(f"synth: {rendered} pairs written, {count - rendered} already present in {out_dir}", err=True)
    if preview is not None:
        write_synth_preview(preview, config, seed, count=preview_count, scale=preview_scale)
        if not quiet:
            click.echo(f"synth: preview of {preview_count} pairs written to {preview}", err=True)
