"""Entry point of the ``pseudolabel`` command.

Sub-commands live in their own modules and are imported only when used, so that
``pseudolabel sgm`` never imports torch and ``pseudolabel --help`` starts quickly.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import click

from pseudolabel import __version__
from pseudolabel.errors import InputError
from pseudolabel.interrupts import interrupt_message
from pseudolabel.outputs import REPORTED_ERRNOS, describe_os_error

# name -> (module, attribute, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "sgm": ("pseudolabel.cli.sgm", "sgm", "Compute SGM proxy disparities for a dataset into one HDF5 file."),
    "inspect": ("pseudolabel.cli.sgm", "inspect", "Print what a proxies HDF5 file holds."),
    "confidence": ("pseudolabel.cli.confidence", "confidence", "Train, score and evaluate confidence measures."),
    "labels": ("pseudolabel.cli.labels", "labels", "Write tau-thresholded sparse labels into a proxies file."),
    "export": ("pseudolabel.cli.export", "export", "Write the labels in KITTI, PFM or NPZ layouts for other training code."),
    "import": ("pseudolabel.cli.export", "import_command", "Take another matcher's dense disparities into a proxies file."),
    "synth": ("pseudolabel.cli.synth", "synth", "Render synthetic stereo pairs with exact ground truth."),
    "train": ("pseudolabel.cli.train", "train", "Train a deep stereo network on labelled data."),
    "predict": ("pseudolabel.cli.train", "predict", "Predict disparities with a trained network."),
    "eval": ("pseudolabel.cli.train", "evaluate", "Evaluate predicted disparities against ground truth."),
    "adapt": ("pseudolabel.cli.adapt", "adapt", "Adapt a network to new images with confident proxy labels."),
    "demo": ("pseudolabel.cli.demo", "demo", "Run the whole pipeline on the shipped scenes."),
    "show": ("pseudolabel.cli.demo", "show", "Render pictures of a proxies file."),
}


#: Key of the arguments as typed in ``click.Context.meta``.
ARGV_KEY = "pseudolabel.argv"


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if _available(name)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, attribute, _ = COMMANDS[cmd_name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                return None
            raise
        command = getattr(module, attribute, None)
        return command if isinstance(command, click.Command) else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[ARGV_KEY] = list(args)  # as typed, for the command that continues an interrupted run
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InputError as error:
            raise click.ClickException(str(error)) from None
        except OSError as error:
            if error.errno not in REPORTED_ERRNOS:
                raise
            raise click.ClickException(describe_os_error(error)) from None
        except KeyboardInterrupt as interrupt:
            click.echo(interrupt_message(ctx.meta.get(ARGV_KEY, []), interrupt), err=True)
            sys.exit(130)


def _available(name: str) -> bool:
    module_name = COMMANDS[name][0]
    return importlib.util.find_spec(module_name) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pseudolabel")
def main() -> None:
    """pseudolabel: trustworthy sparse disparity labels from unlabeled stereo pairs.

    \b
    Typical pipeline:
      pseudolabel sgm --in left/ right/ --out proxies.h5
      pseudolabel confidence score --proxies proxies.h5
      pseudolabel labels --proxies proxies.h5
      pseudolabel adapt --proxies proxies.h5 --model source.pt --out adapted.pt --tau learnable
    """


if __name__ == "__main__":  # pragma: no cover
    main()
