"""``pseudolabel demo`` (the whole pipeline on the scenes the repository ships, :func:`pseudolabel.demo.run_demo`)
and ``pseudolabel show`` (pictures of any proxies file, :func:`pseudolabel.viz.show.render_proxies`).

Options and messages only: each command is one library call.
"""

from __future__ import annotations

from pathlib import Path

import click

from pseudolabel.cli.options import ClickProgress, key_options
from pseudolabel.demo import DEMO_MODEL, DEMO_STEPS, DEMO_THREADS, display_path, format_table
from pseudolabel.viz.show import SHOW_REPORT_LIMIT

DEMO_HELP = f"""Run the whole pipeline on the real scenes the repository ships, in a few minutes.

\b
SGM proxies -> confidence (shipped CCNN) -> tau labels -> adaptation of
the shipped synthetic-trained MADNet on those scenes (no ground truth) ->
evaluation before and after. Prints a table (SGM, labels, network before
and after: density, bad-3, D1, EPE; means over the scenes) and writes
OUT/report.html, one self-contained page with the pictures of every step.
Every step prints the `pseudolabel` command that does the same on your data.

\b
Examples:
  pseudolabel demo
  pseudolabel demo --out /tmp/demo --steps 200 --device cuda
  pseudolabel demo --data my_scenes/ --model source.pt

\b
A rerun resumes (finished steps are kept). Default --steps {DEMO_STEPS}.
"""


@click.command("demo", help=DEMO_HELP)
@click.option(
    "--out",
    "out_dir",
    default="demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for proxies.h5, the adapted network, results.json and report.html.",
)
@click.option("--steps", default=DEMO_STEPS, show_default=True, type=click.IntRange(min=1), help="Adaptation steps.")
@click.option(
    "--device",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "cpu", "cuda"]),
    help="Where the networks run (auto: CUDA when available).",
)
@click.option(
    "--data",
    "data_dir",
    default=None,
    type=click.Path(path_type=Path),
    help="Scenes with ground truth in a layout `pseudolabel sgm --in` knows (default: the repository's tests/data).",
)
@click.option(
    "--model", "model", default=DEMO_MODEL, show_default=True, help="Source network: a checkpoint of `pseudolabel train` or a shipped model name."
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the adaptation.")
@click.option(
    "--threads",
    default=DEMO_THREADS,
    show_default=True,
    type=click.IntRange(min=1),
    help="torch CPU threads (1 is several times faster than 2 on a small CPU that other jobs share; see BENCHMARKS.md).",
)
def demo(out_dir: Path, steps: int, device: str, data_dir: Path | None, model: str, seed: int, threads: int) -> None:
    from pseudolabel.demo import run_demo

    result = run_demo(
        out_dir,
        steps=steps,
        device=device,
        data_dir=data_dir,
        model=model,
        seed=seed,
        threads=threads,
        progress=ClickProgress(),
        log=lambda line: click.secho(line, bold=line.startswith(("\n[", "pseudolabel demo")), err=True),
    )
    scenes = sum(1 for metrics in result.scenes.values() if metrics)
    click.echo(f"\nMean over {scenes} scenes with ground truth (every pixel with ground truth; labels: labelled pixels only):")
    click.echo(format_table(result.means))
    for line in result.summary:
        click.echo(line)
    click.echo(f"report: {display_path(result.report)} (open it in a browser); total {result.seconds['total']:.0f} s")


# ----------------------------------------------------------------------------------------------
# show


SHOW_HELP = f"""Render pictures of a proxies file: colour-mapped disparity with a colour bar,
confidence as a heat map, labels over the image (and, when the pairs name
their ground truth, error maps, sparsification curves and the reliability
diagram with each measure's expected calibration error).

\b
Writes OUT/<pair>_disparity.png, _confidence.png, _labels.png (those the
pair has), _error.png (with ground truth), and OUT/index.html, one
self-contained page with all of them (at most {SHOW_REPORT_LIMIT} pairs).

\b
Examples:
  pseudolabel show demo/proxies.h5 --out pictures/
  pseudolabel show proxies.h5 --keys 'kitti*' --measure apkr --out pictures/
"""


@click.command("show", help=SHOW_HELP)
@click.argument("proxies_path", metavar="PROXIES.h5", type=click.Path(path_type=Path))
@key_options
@click.option("--pair", "pair_patterns", multiple=True, hidden=True, help="Deprecated spelling of --keys.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--measure", default="ccnn", show_default=True, help="Confidence drawn as the heat map (confidence/<measure>).")
@click.option("--gt/--no-gt", "use_gt", default=True, show_default=True, help="Use the ground truth the pairs name (gt_left attribute), if found.")
def show(
    proxies_path: Path, include: tuple[str, ...], exclude: tuple[str, ...], pair_patterns: tuple[str, ...], out_dir: Path, measure: str, use_gt: bool
) -> None:
    from pseudolabel.cli.options import ClickProgress
    from pseudolabel.viz.show import render_proxies

    summary = render_proxies(
        proxies_path, out_dir, include=include + pair_patterns, exclude=exclude, measure=measure, use_gt=use_gt, progress=ClickProgress()
    )
    for line in summary.warnings:
        click.echo(f"warning: {line}", err=True)
    for line in summary.notes:
        click.echo(f"note: {line}", err=True)
    if pair_patterns:
        click.echo("note: --pair is deprecated; use --keys (same patterns)", err=True)
    click.echo(f"wrote {len(summary.pictures)} pictures of {len(summary.keys)} pair(s) and index.html to {out_dir}")
