"""``pseudolabel export`` (labels out to layouts other training code reads) and ``pseudolabel import``
(another matcher's disparities in as a proxies file): options and messages only.

The work is done by :func:`pseudolabel.store.export.export_labels` and
:func:`pseudolabel.store.external.import_disparities`.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from pseudolabel.cli.options import ClickProgress, key_options

EXPORT_HELP = """Write the labels of a proxies file in a layout other stereo training code reads.

\b
--format kitti: KITTI 2015 training layout, image_2/ image_3/ (links to the
  images, or copies), disp_occ_0/<name>.png (uint16, disparity x 256, 0 = no
  label); <name> is the pair key with '/' written '__'.
--format pfm: left/ right/ disp_left/<key>.pfm (float, inf = no label).
--format npz: left/ right/ labels/<key>.npz (disparity, confidence, valid).
Each also gets filenames.txt, keys.txt and README.txt (source, tau, measure,
SGM parameters, this command). The folder appears only when complete.

\b
Examples:
  pseudolabel export --proxies rig.h5 --out rig_kitti --format kitti
  pseudolabel export --proxies rig.h5 --out rig_pfm --format pfm --with-confidence
  pseudolabel train --data rig_kitti --arch tiny --out tiny.pt
"""


@click.command("export", help=EXPORT_HELP)
@click.option(
    "--proxies", "proxies_path", required=True, type=click.Path(path_type=Path), help="Proxies HDF5 file with labels (`pseudolabel labels`)."
)
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Output folder (must be new or empty, unless --overwrite).")
@click.option("--format", "format_name", default="kitti", show_default=True, help="Layout: kitti, pfm or npz.")
@key_options
@click.option(
    "--with-confidence", is_flag=True, help="Also write the confidence of the labels (kitti: uint16 PNG x 65535; pfm: float; npz always has it)."
)
@click.option("--copy-images", is_flag=True, help="Copy the images instead of linking to them.")
@click.option("--overwrite", is_flag=True, help="Replace an existing, non-empty output folder (only once the new one is complete).")
def export(
    proxies_path: Path,
    out: Path,
    format_name: str,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    with_confidence: bool,
    copy_images: bool,
    overwrite: bool,
) -> None:
    """Run :func:`pseudolabel.store.export.export_labels` and print what it wrote."""
    from pseudolabel.store.export import export_labels

    words = ["pseudolabel", "export", "--proxies", str(proxies_path), "--out", str(out), "--format", format_name]
    words += [word for pattern in include for word in ("--keys", pattern)] + [word for pattern in exclude for word in ("--exclude", pattern)]
    words += [flag for flag, on in (("--with-confidence", with_confidence), ("--copy-images", copy_images), ("--overwrite", overwrite)) if on]
    summary = export_labels(
        proxies_path,
        out,
        format=format_name,
        include=include,
        exclude=exclude,
        with_confidence=with_confidence,
        link_images=not copy_images,
        overwrite=overwrite,
        progress=ClickProgress(unit="pairs"),
        command=shlex.join(words),
    )
    clamped = f"; {summary.clamped} labels below 1/512 px stored as 1/256 px" if summary.clamped else ""
    click.echo(f"export: wrote {len(summary.names)} pairs ({summary.labelled} labelled pixels) to {summary.out} as {summary.format}{clamped}")


IMPORT_HELP = """Take dense disparities computed by another matcher into a proxies file.

\b
--disparity DIR holds one file per pair, named by its key: <key>.pfm (px,
inf = none), <key>.png (KITTI uint16 / 256, 0 = none) or <key>.npy (px);
--in is what `pseudolabel sgm --in` takes. valid = finite and > 0. Then
`pseudolabel confidence score` runs the measures that need the disparity
alone (and the CCNN); those needing SGM costs are reported unavailable.

\b
Examples:
  pseudolabel import --disparity raft_out/ --in rig/left rig/right --out raft.h5
  pseudolabel confidence score --proxies raft.h5
"""


@click.command("import", help=IMPORT_HELP)
@click.option("--disparity", "disparity_dir", required=True, type=click.Path(path_type=Path), help="Folder of <key>.pfm|.png|.npy disparities.")
@click.option(
    "--in", "inputs", multiple=True, required=True, metavar="ROOT | LEFT_DIR RIGHT_DIR", help="A dataset folder, or a left and a right image folder."
)
@click.argument("more_inputs", nargs=-1, metavar="", type=click.Path())
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Proxies HDF5 file to write.")
@click.option("--scale", type=float, default=None, help="Divide stored values by this (default: 1 for PFM/NPY, 256 for 16-bit PNG, 1 for 8-bit).")
@key_options
@click.option("--overwrite", is_flag=True, help="Replace an existing --out (only once the new file is complete).")
def import_command(
    disparity_dir: Path,
    inputs: tuple[str, ...],
    more_inputs: tuple[str, ...],
    out: Path,
    scale: float | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    overwrite: bool,
) -> None:
    """Run :func:`pseudolabel.store.external.import_disparities` and print what it wrote."""
    from pseudolabel.store.external import import_disparities

    summary = import_disparities(
        disparity_dir,
        [*inputs, *more_inputs],
        out,
        scale=scale,
        include=include,
        exclude=exclude,
        overwrite=overwrite,
        progress=ClickProgress(unit="pairs"),
    )
    click.echo(f"import: wrote {len(summary.keys)} pairs to {summary.out}")
