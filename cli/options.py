"""Options shared by several commands, and the one progress display of the command line.

Every command that takes pairs takes ``--keys``/``--exclude`` (:func:`key_options`, selection by
:func:`pseudolabel.selection.select_keys`); sizes are parsed by one :class:`SizeType`; long library calls
report through :class:`ClickProgress`, click's progress bar.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from pseudolabel.errors import InputError

F = TypeVar("F", bound=Callable[..., Any])


def key_options(function: F) -> F:
    """``--keys GLOB`` (repeatable, default all pairs) and ``--exclude GLOB`` (repeatable), as ``include``/``exclude``."""
    function = click.option("--exclude", "exclude", multiple=True, metavar="GLOB", help="Skip pairs whose key matches (repeatable).")(function)
    function = click.option("--keys", "include", multiple=True, metavar="GLOB", help="Only pairs whose key matches (repeatable; default all).")(
        function
    )
    return function


def gt_options(required: bool) -> Callable[[F], F]:
    """``--gt DIR`` (a folder of ``<key>.pfm/.png`` or a native dataset root) and ``--gt-scale``, as ``gt_dir``/``gt_scale``."""

    def decorate(function: F) -> F:
        function = click.option(
            "--gt-scale",
            type=float,
            default=None,
            help="Divide stored PNG/PGM ground-truth values by this (default: 256 for 16-bit PNG, 1 for 8-bit; native layouts know theirs).",
        )(function)
        function = click.option(
            "--gt",
            "gt_dir",
            required=required,
            type=click.Path(path_type=Path),
            help="Ground truth: folder of <key>.pfm/.png files, or the dataset root of a native layout.",
        )(function)
        return function

    return decorate


class SizeType(click.ParamType):
    """A size written ``AxB`` (or ``A,B``) in pixels, returned as a tuple of two ints in the written order.

    Args:
        order: what the two numbers are, for messages: ``"HEIGHTxWIDTH"`` or ``"WIDTHxHEIGHT"``.
        example: an example value for messages.
        allow_full: accept ``full`` (returned as ``None``: whole images).
    """

    name = "size"

    def __init__(self, order: str, example: str, allow_full: bool = False) -> None:
        self.order = order
        self.example = example
        self.allow_full = allow_full

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int] | None:
        if value is None or isinstance(value, tuple):
            return value
        option = param.opts[0] if param is not None and param.opts else "size"
        return self.parse(str(value), option)

    def parse(self, text: str, option: str) -> tuple[int, int] | None:
        """``text`` as two ints in the written order (``None`` for ``full`` when allowed).

        Raises:
            InputError: not a size; the one-line message names ``option`` (exit status 1, like every
                other mistake in a value).
        """
        if self.allow_full and text.strip().lower() == "full":
            return None
        match = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", text)
        if match is None:
            alternative = " or full" if self.allow_full else ""
            raise InputError(f"{option} {text!r}: write {self.order} in pixels, e.g. {self.example}{alternative}")
        return int(match.group(1)), int(match.group(2))


class ClickProgress:
    """The command line's :class:`pseudolabel.progress.Progress`: click's progress bar on a terminal, a line
    after the first unit and then every ``every_s`` seconds otherwise (logs of batch jobs), both on stderr.

    With a ``unit`` (``"pairs"``) the counts and the rate name it (``3/8 pairs, 0.52 pairs/s``) and the
    bar shows the rate when the library gives no status text.
    """

    def __init__(self, enabled: bool = True, every_s: float = 5.0, unit: str = "") -> None:
        self.enabled = enabled
        self.every_s = every_s
        self.unit = unit
        self._bar: Any = None
        self._label = ""
        self._total = 0
        self._done = 0
        self._status = ""
        self._last_line = 0.0
        self._started = 0.0

    def start(self, label: str, total: int, done: int = 0) -> None:
        """Open a bar of ``total`` units for ``label``."""
        self.finish()
        self._label, self._total, self._done, self._status = label, total, 0, ""
        self._started = time.perf_counter()
        self._last_line = 0.0  # the first finished unit prints a line at once
        if not self.enabled or total <= 0:
            return
        if sys.stderr.isatty():
            self._bar = click.progressbar(
                length=total,
                label=f"{label} ({done} done before)" if done else label,
                show_eta=True,
                show_pos=True,
                item_show_func=lambda _: self._bar_text(),
                file=sys.stderr,
            )
            self._bar.__enter__()

    def advance(self, count: int = 1, status: str = "") -> None:
        """Move the bar by ``count`` units and show ``status`` beside it."""
        self._done += count
        self._status = status
        if not self.enabled or self._total <= 0:
            return
        if self._bar is not None:
            self._bar.update(count)
            return
        now = time.perf_counter()
        if now - self._last_line >= self.every_s or self._done >= self._total:
            self._last_line = now
            elapsed = now - self._started
            rate = self._done / elapsed if elapsed > 0 else 0.0
            left_s = (self._total - self._done) / rate if rate > 0 else 0.0
            extra = f", {status}" if status else ""
            unit = f" {self.unit}" if self.unit else ""
            click.echo(f"{self._label}: {self._done}/{self._total}{unit}, {rate:.2f}{unit}/s, {left_s:.0f} s left{extra}", err=True)

    def _bar_text(self) -> str:
        """Beside the bar: the status text, else (with a ``unit``) the rate so far."""
        if self._status or not self.unit:
            return self._status
        elapsed = time.perf_counter() - self._started
        return f"{self._done / elapsed:.2f} {self.unit}/s" if self._done and elapsed > 0 else ""

    def finish(self) -> None:
        """Close the bar (idempotent)."""
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


#: ``--proxies FILE`` (required), as ``proxies_path``: the proxies HDF5 file a command reads or edits.
proxies_option = click.option(
    "--proxies", "proxies_path", required=True, type=click.Path(path_type=Path), help="Proxies HDF5 file written by `pseudolabel sgm`."
)


class ThreadsType(click.ParamType):
    """``--threads``: a positive number of CPU threads, or ``auto`` (returned as ``None``): chosen from the
    cores this process may use and the machine's load (:mod:`pseudolabel.threads`)."""

    name = "threads"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | None:
        from pseudolabel.threads import parse_threads

        if value is None or isinstance(value, int):
            return parse_threads(value)
        return parse_threads(str(value), param.opts[0] if param is not None and param.opts else "--threads")


THREADS_HELP = "CPU threads of torch, OpenCV and Numba, or auto: the usable cores less those other processes keep busy (affinity and load)."


def threads_option(function: F) -> F:
    """``--threads N|auto`` (default auto), as ``threads``: ``int`` or ``None`` for auto."""
    return click.option("--threads", default="auto", show_default=True, type=ThreadsType(), help=THREADS_HELP)(function)


def scheduler_option(what: str, workers_read_images: bool = True) -> Callable[[F], F]:
    """``--scheduler ADDRESS`` (env ``PSEUDOLABEL_SCHEDULER``): run ``what`` as tasks on a running dask.distributed
    cluster; ``workers_read_images``: the workers read the input images themselves (else this process sends the arrays)."""
    files = (
        "Workers need the input images at the same paths (a shared filesystem); this process writes the output."
        if workers_read_images
        else "Workers need no files: this process reads and writes the proxies file and sends each pair's arrays."
    )

    def decorate(function: F) -> F:
        return click.option(
            "--scheduler",
            default=None,
            envvar="PSEUDOLABEL_SCHEDULER",
            metavar="ADDRESS",
            help=f"Run {what} as tasks on a running dask.distributed cluster (tcp://HOST:8786; env PSEUDOLABEL_SCHEDULER). "
            f"{files} See the README's 'Large datasets'.",
        )(function)

    return decorate
