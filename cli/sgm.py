"""``pseudolabel sgm`` (a whole dataset in, one crash-safe HDF5 file of proxy disparities out) and
``pseudolabel inspect`` (what a proxies file holds): options and messages only.

The work is done by :func:`pseudolabel.sgm.batch.run_sgm` and :func:`pseudolabel.store.inspect.describe_proxies`.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pseudolabel.cli.options import ClickProgress, scheduler_option
from pseudolabel.errors import InputError
from pseudolabel.sgm.params import PRESETS, SGMParams
from pseudolabel.store.datasets_io import DEFAULT_COMPRESSION

# ----------------------------------------------------------------------------------------------
# SGM parameters as options (generated from the SGMParams dataclass, so every field is an option)


def _field_help() -> dict[str, str]:
    """Per-field help from the ``Attributes:`` section of :class:`SGMParams`'s docstring."""
    doc = SGMParams.__doc__ or ""
    helps: dict[str, str] = {}
    current: list[str] = []
    text: list[str] = []
    in_attributes = False
    for line in doc.splitlines():
        if line.strip() == "Attributes:":
            in_attributes = True
            continue
        if not in_attributes:
            continue
        entry = re.match(r"^\s{8}([a-z0-9_, ]+):\s*(.*)$", line)
        if entry:
            for name in current:
                helps[name] = " ".join(text)
            current = [n.strip() for n in entry.group(1).split(",")]
            text = [entry.group(2).strip()]
        elif line.strip():
            text.append(line.strip())
    for name in current:
        helps[name] = " ".join(text)
    return helps


def _sgm_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Add one option per :class:`SGMParams` field (default None = the dataclass default)."""
    helps = _field_help()
    hints = typing.get_type_hints(SGMParams)
    for spec in reversed(dataclasses.fields(SGMParams)):
        name, default, hint = spec.name, spec.default, hints[spec.name]
        flag = "--" + name.replace("_", "-")
        help_text = helps.get(name, f"SGM parameter {name}.").replace("``", "")
        if name == "max_disp":
            help_text += f" Default: the dataset's range (Middlebury calib.txt ndisp) where given, else {default}."
            function = click.option(flag, name, type=int, default=None, help=help_text)(function)
            continue
        if typing.get_origin(hint) is typing.Literal:
            kind: Any = click.Choice([str(v) for v in typing.get_args(hint)])
        elif hint is bool:
            negative = "--no-" + name.replace("_", "-")
            function = click.option(f"{flag}/{negative}", name, default=None, help=help_text + f" [default: {'on' if default else 'off'}]")(function)
            continue
        else:
            kind = hint
        function = click.option(flag, name, type=kind, default=None, help=help_text + f" [default: {default}]")(function)
    return click.option(
        "--preset",
        "preset",
        type=click.Choice(list(PRESETS)),
        default="default",
        show_default=True,
        help="Starting parameter set; the SGM options below override single fields. balanced: "
        + ", ".join(f"{name}={value}" for name, value in PRESETS["balanced"].items())
        + " (about 1.5x as fast as the defaults, a little less accurate); fast: the same with downsample=2"
        + " (half resolution: about 6x as fast as the defaults, about twice their error; see BENCHMARKS.md).",
    )(function)


def params_from_options(options: dict[str, Any]) -> SGMParams:
    """:class:`SGMParams` from the option values (None = the preset's value; ``preset`` names the
    :meth:`SGMParams.preset`, ``default`` when absent). ``max_disp`` None keeps the default.

    Raises:
        InputError: inconsistent values (naming the option).
    """
    options = dict(options)
    preset = options.pop("preset", None) or "default"
    params = SGMParams.preset(preset).replace(**{name: value for name, value in options.items() if value is not None})
    try:
        params.validate()
    except InputError as error:
        raise InputError(f"{error} (check the SGM options, see `pseudolabel sgm --help`)") from None
    return params


# ----------------------------------------------------------------------------------------------
# commands


SGM_EXAMPLES = """Compute SGM proxy disparities for a dataset into one crash-safe HDF5 file.

\b
--in takes a dataset ROOT (native KITTI 2012/2015, Middlebury scene folders,
`pseudolabel synth` output; searched recursively) or LEFT_DIR RIGHT_DIR
(images paired by relative path without extension). Finished pairs are kept
if the command is interrupted; a rerun with the same options resumes.

\b
Examples:
  pseudolabel sgm --in tests/data/middlebury --out out/proxies.h5
  pseudolabel sgm --in rig/left rig/right --out rig.h5 --max-disp 192 --workers 2
  pseudolabel sgm --in kitti/training --out kitti.h5 --paths 16 --p2-adaptive
  pseudolabel sgm --in /shared/rig/left /shared/rig/right --out rig.h5 \
      --scheduler tcp://head:8786 --shard-size 1000 --store minimal
  pseudolabel sgm --in kitti/training --out kitti.h5 --preset fast
"""


@click.command("sgm", help=SGM_EXAMPLES)
@click.option(
    "--in", "inputs", multiple=True, required=True, metavar="ROOT | LEFT_DIR RIGHT_DIR", help="A dataset folder, or a left and a right image folder."
)
@click.argument("more_inputs", nargs=-1, metavar="", type=click.Path())
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=True, path_type=Path),
    help="Output HDF5 file (created, resumed or, with --overwrite, replaced).",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Processes matching pairs in parallel (each with cores // workers Numba threads); ignored with --scheduler.",
)
@click.option("--skip-unpaired", is_flag=True, help="Skip left images without a right partner instead of stopping.")
@click.option(
    "--compression",
    type=click.Choice(["fast", "lzf", "gzip", "none"]),
    default=DEFAULT_COMPRESSION,
    show_default=True,
    help="Dataset compression: lzf (shuffle + LZF on every dataset), fast (LZF on the boolean and int16 maps only: about 30% "
    "larger files, about 10% less CPU), gzip (deflate, readable by every HDF5 library) or none.",
)
@click.option("--overwrite", is_flag=True, help="Recompute every pair; the old file is replaced only when the run finishes.")
@scheduler_option("the pairs (default: this machine, --workers processes)")
@click.option(
    "--shard-size",
    default=None,
    type=click.IntRange(min=1),
    metavar="N",
    help="Write OUT as a small index whose pairs live in OUT.shards/NNNNN.h5, N pairs per shard (see data/README.md). "
    "Default: one file (or the layout of an existing OUT).",
)
@click.option(
    "--store",
    type=click.Choice(["full", "minimal"]),
    default="full",
    show_default=True,
    help="full: every SGM dataset; minimal: only disparity, valid and the shipped CCNN's confidence/ccnn, computed here "
    "from the costs, which are then dropped (enough for labels, adapt, show and confidence eval; the conventional "
    "confidence measures and other confidence networks need full).",
)
@click.option(
    "--pair-check/--no-pair-check",
    default=True,
    show_default=True,
    help="First check the first pairs for swapped left/right images and rows that do not line up (a few percent of a match).",
)
@click.option(
    "--max-memory",
    metavar="SIZE",
    default=None,
    help="Peak memory of each matching process, e.g. 4G, 512M, 2.5GiB: a pair whose cost volume does not fit is "
    "matched in horizontal bands with 128 rows of overlap (results differ from untiled matching on a small share "
    "of pixels, see README). Default: no limit.",
)
@_sgm_options
def sgm(
    inputs: tuple[str, ...],
    more_inputs: tuple[str, ...],
    out: Path,
    workers: int,
    skip_unpaired: bool,
    compression: str,
    overwrite: bool,
    scheduler: str | None,
    shard_size: int | None,
    store: str,
    pair_check: bool,
    max_memory: str | None,
    **sgm_options: Any,
) -> None:
    """Run :func:`pseudolabel.sgm.batch.run_sgm` with the options, drawing progress and printing its lines."""
    from pseudolabel.interrupts import Interrupted
    from pseudolabel.outputs import check_output_file
    from pseudolabel.sgm.batch import run_sgm
    from pseudolabel.sgm.tiled import parse_size
    from pseudolabel.store.journal import journal_entries
    from pseudolabel.store.names import journal_path

    try:
        budget = None if max_memory is None else parse_size(max_memory)
    except InputError as error:
        raise InputError(f"--max-memory: {error}") from None
    check_output_file(out, "--out")  # an existing file is resumed or (--overwrite) replaced by the run
    try:
        summary = run_sgm(
            list(inputs) + list(more_inputs),
            out,
            params_from_options(sgm_options),
            workers=workers,
            skip_unpaired=skip_unpaired,
            compression=compression,
            overwrite=overwrite,
            max_disp_from_dataset=sgm_options["max_disp"] is None,
            progress=ClickProgress(unit="pairs"),
            log=lambda line: click.echo(f"sgm: {line}", err=True),
            scheduler=scheduler or None,
            shard_size=shard_size,
            store=store,
            pair_check=pair_check,
            max_memory=budget,
        )
    except KeyboardInterrupt:
        journal = journal_path(out)
        finished = len(journal_entries(journal))
        state = "unchanged" if out.exists() else "not written yet"
        raise Interrupted(f"{finished} finished pair(s) in the journal {journal} ({out} is {state}; the rerun adds them)") from None
    click.echo(f"sgm: wrote {summary.out} ({summary.added} pairs added, {summary.pairs} pairs of this input in the file)", err=True)


INSPECT_HELP = """Print what a proxies HDF5 file holds: parameters, pairs, sizes, datasets, density.

\b
Examples:
  pseudolabel inspect out/proxies.h5
  pseudolabel inspect out/proxies.h5 --all
"""


@click.command("inspect", help=INSPECT_HELP)
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--all", "show_all", is_flag=True, help="List every pair (default: the first 20).")
def inspect(path: Path, show_all: bool) -> None:
    """Print :func:`pseudolabel.store.inspect.describe_proxies` of ``path``."""
    from pseudolabel.store.inspect import describe_proxies

    click.echo(describe_proxies(path, show_all))
