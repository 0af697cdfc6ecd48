"""``pseudolabel synth``: render synthetic stereo pairs with exact ground truth (numpy + OpenCV, no torch)."""

from __future__ import annotations

import re
from pathlib import Path

import click

from pseudolabel.errors import InputError


def _parse_size(text: str) -> tuple[int, int]:
    """``"512x256"`` -> (width, height); raises :class:`InputError` naming ``--size``."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if match is None:
        raise InputError(f"--size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. --size 512x256")
    return int(match.group(1)), int(match.group(2))


@click.command("synth")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (left/, right/, disp_left/, disp_right/, occ_left/, occ_right/, meta.json). A rerun with the same options resumes.",
)
@click.option("--n", "count", type=int, default=500, show_default=True, help="Number of pairs.")
@click.option("--size", default="512x256", show_default=True, help="Image size WIDTHxHEIGHT in pixels.")
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
    size: str,
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
    import cv2
    import numpy as np

    from pseudolabel.io import atomic_write_bytes
    from pseudolabel.synth.files import preview_grid, write_synth_dataset
    from pseudolabel.synth.scene import SynthConfig, pair_seed, render_pair

    if out_dir is None and preview is None:
        raise InputError("give --out DIR to write a dataset and/or --preview FILE.png to write a picture")
    width, height = _parse_size(size)
    overrides: dict[str, int] = {}
    if min_objects is not None:
        overrides["min_objects"] = min_objects
    if max_objects is not None:
        overrides["max_objects"] = max_objects
    if "min_objects" in overrides and "max_objects" not in overrides:
        overrides["max_objects"] = max(min_objects or 0, SynthConfig.max_objects)
    if "max_objects" in overrides and "min_objects" not in overrides:
        overrides["min_objects"] = min(max_objects or 0, SynthConfig.min_objects)
    config = SynthConfig(width=width, height=height, max_disp=float(max_disp), **overrides)
    if no_photometric:
        config = config.without_photometric()
    if seed < 0:
        raise InputError(f"--seed ({seed}) must be >= 0")
    if out_dir is not None:
        write_synth_dataset(out_dir, config, count, seed, progress=not quiet)
    if preview is not None:
        if preview_count < 1:
            raise InputError(f"--preview-count ({preview_count}) must be at least 1")
        if preview.suffix.lower() != ".png":
            raise InputError(f"--preview {preview}: must end in .png")
        pairs = [render_pair(config, pair_seed(seed, index)) for index in range(preview_count)]
        grid = preview_grid(pairs, config.max_disp, scale=preview_scale)
        ok, buffer = cv2.imencode(".png", np.ascontiguousarray(grid[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
            raise OSError(f"{preview}: PNG encoding failed")
        atomic_write_bytes(preview, buffer.tobytes())
        if not quiet:
            click.echo(f"synth: preview of {preview_count} pairs written to {preview}", err=True)
