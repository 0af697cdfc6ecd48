"""``pseudolabel sgm`` (a whole dataset in, one crash-safe HDF5 file of proxy disparities out) and
``pseudolabel inspect`` (what a proxies file holds).

Pairs are found by :func:`pseudolabel.datasets.discover_pairs`, matched by
:func:`pseudolabel.sgm.matcher.match` (in this process, or in ``--workers`` spawned processes with
``cores // workers`` Numba threads each), written to the journal of a
:class:`pseudolabel.store.journal.ProxyRun` and assembled into the output file at the end.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import threading
import time
import typing
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from pseudolabel.datasets import PairInfo, discover_pairs
from pseudolabel.errors import InputError
from pseudolabel.sgm.params import SGMParams

# Testing hook: seconds to sleep after each finished pair (lets a test kill the command mid-run).
SLOW_ENV = "PSEUDOLABEL_SGM_TEST_DELAY_S"


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
    return function


def params_from_options(options: dict[str, Any]) -> SGMParams:
    """:class:`SGMParams` from the option values (None = the default). ``max_disp`` None keeps the default.

    Raises:
        InputError: inconsistent values (naming the option).
    """
    changes = {name: value for name, value in options.items() if value is not None}
    params = SGMParams().replace(**changes)
    try:
        params.validate()
    except InputError as error:
        raise InputError(f"{error} (check the SGM options, see `pseudolabel sgm --help`)") from None
    return params


# ----------------------------------------------------------------------------------------------
# one pair (runs in this process or in a worker process)


@dataclass(frozen=True)
class PairTask:
    """Everything a worker needs to process one pair (picklable)."""

    key: str
    left: str
    right: str
    params: SGMParams
    gt_left: str | None
    gt_scale: float | None
    masks: dict[str, str]
    journal: str
    identity: str
    compression: str = "fast"


@dataclass(frozen=True)
class PairDone:
    """What a worker reports back: the journal entry and where the time went (seconds)."""

    key: str
    entry: str
    read_s: float
    match_s: float
    write_s: float


@dataclass
class MatchedPair:
    """A pair read and matched, not yet journaled."""

    arrays: dict[str, Any]
    attrs: dict[str, Any]
    read_s: float
    match_s: float


def match_pair(task: PairTask) -> MatchedPair:
    """Read and match one pair.

    Raises:
        InputError: unreadable images, different sizes, or a disparity range wider than the image,
        naming the file and the fix.
    """
    from pseudolabel.io import read_image
    from pseudolabel.sgm.matcher import match
    from pseudolabel.store.proxies import pair_attributes, result_arrays

    start = time.perf_counter()
    left = read_image(task.left)
    right = read_image(task.right)
    if left.shape[:2] != right.shape[:2]:
        raise InputError(
            f"{task.left} is {left.shape[1]}x{left.shape[0]} but {task.right} is {right.shape[1]}x{right.shape[0]}; "
            "a rectified pair must have one size: fix or remove this pair"
        )
    width = left.shape[1]
    params = task.params
    if params.max_disp > width or params.min_disp <= -width:
        raise InputError(
            f"{task.left}: the disparity range [{params.min_disp}, {params.max_disp}) is wider than the image "
            f"width {width}; lower --max-disp (or raise --min-disp)"
        )
    read_done = time.perf_counter()
    try:
        result = match(left, right, params)
    except InputError as error:
        raise InputError(f"{task.left}: {error}") from None
    match_done = time.perf_counter()
    arrays = result_arrays(result)
    attrs = pair_attributes(
        task.key,
        task.left,
        task.right,
        params,
        arrays["disparity"].shape,
        arrays["valid"],
        task.gt_left,
        task.gt_scale,
        task.masks,
    )
    return MatchedPair(arrays, attrs, read_done - start, match_done - read_done)


def journal_pair(task: PairTask, matched: MatchedPair) -> PairDone:
    """Write a matched pair into the journal (compression happens here)."""
    from pseudolabel.store.journal import write_journal_entry

    start = time.perf_counter()
    entry = write_journal_entry(Path(task.journal), task.key, matched.arrays, matched.attrs, task.identity, task.compression)
    return PairDone(task.key, str(entry), matched.read_s, matched.match_s, time.perf_counter() - start)


def process_pair(task: PairTask) -> PairDone:
    """Read, match and journal one pair (what a worker process does)."""
    return journal_pair(task, match_pair(task))


def _init_worker(threads: int, parent: int) -> None:
    """Worker process set-up: ignore Ctrl-C (the parent handles it), size thread pools, die with the parent."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import cv2
    import numba

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    cv2.setNumThreads(max(1, threads))

    def watch_parent() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch_parent, daemon=True).start()


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def make_tasks(
    pairs: Sequence[PairInfo], params: SGMParams, use_calib: bool, journal: Path, identity: str, compression: str = "fast"
) -> list[PairTask]:
    """One :class:`PairTask` per pair, with the pair's own range when ``use_calib`` and the dataset gives one.

    Raises:
        InputError: a dataset-given range is inconsistent with ``--min-disp``.
    """
    tasks = []
    for pair in pairs:
        pair_params = params
        if use_calib and pair.max_disp is not None:
            pair_params = params.replace(max_disp=int(pair.max_disp))
            if pair_params.max_disp <= pair_params.min_disp:
                raise InputError(
                    f"{pair.left.parent / 'calib.txt'}: ndisp={pair.max_disp} is not above --min-disp {params.min_disp}; pass --max-disp"
                )
        tasks.append(
            PairTask(
                key=pair.key,
                left=str(pair.left),
                right=str(pair.right),
                params=pair_params,
                gt_left=str(pair.gt_left) if pair.gt_left is not None else None,
                gt_scale=pair.gt_scale,
                masks={name: str(path) for name, path in pair.masks.items()},
                journal=str(journal),
                identity=identity,
                compression=compression,
            )
        )
    return tasks


class _Progress:
    """Pairs done, pairs per second and time left, on stderr (click's bar on a terminal, else a line every few seconds)."""

    def __init__(self, total: int, already: int) -> None:
        self.total = total
        self.done = 0
        self.start = time.perf_counter()
        self.already = already
        self._last_line = 0.0
        self._bar: Any = None
        if total and sys.stderr.isatty():
            self._bar = click.progressbar(
                length=total,
                label=f"sgm ({already} done before)" if already else "sgm",
                show_eta=True,
                show_pos=True,
                item_show_func=lambda _: self.rate_text(),
                file=sys.stderr,
            )
            self._bar.__enter__()

    def rate_text(self) -> str:
        elapsed = time.perf_counter() - self.start
        return f"{self.done / elapsed:.2f} pairs/s" if self.done and elapsed > 0 else ""

    def advance(self, key: str) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update(1, key)
            return
        now = time.perf_counter()
        if now - self._last_line >= 5.0 or self.done == self.total:
            self._last_line = now
            elapsed = now - self.start
            rate = self.done / elapsed if elapsed > 0 else 0.0
            left_s = (self.total - self.done) / rate if rate > 0 else 0.0
            click.echo(f"sgm: {self.done}/{self.total} pairs, {rate:.2f} pairs/s, {left_s:.0f} s left", err=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def run_tasks(tasks: Sequence[PairTask], workers: int, on_done: Callable[[PairDone], None]) -> None:
    """Process ``tasks``: in this process when ``workers == 1``, else in ``workers`` spawned processes.

    ``on_done`` is called in this process for each finished pair. The first error stops the run
    (pending pairs are cancelled, finished ones stay in the journal) and is re-raised.
    """
    delay = float(os.environ.get(SLOW_ENV, "0") or 0)
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            on_done(process_pair(task))
            if delay:
                time.sleep(delay)
        return
    import multiprocessing

    threads = max(1, available_cores() // workers)
    executor = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(threads, os.getpid()),
    )
    try:
        pending: set[Future[PairDone]] = set()
        queue = list(reversed(tasks))
        # Keep a bounded number of tasks in flight, so an error stops the run quickly.
        while queue or pending:
            while queue and len(pending) < 2 * workers:
                pending.add(executor.submit(process_pair, queue.pop()))
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                error = future.exception()
                if error is not None:
                    raise error
            for done in sorted((future.result() for future in finished), key=lambda d: d.key):
                on_done(done)
                if delay:
                    time.sleep(delay)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


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
    help="Processes matching pairs in parallel (each with cores // workers Numba threads).",
)
@click.option("--skip-unpaired", is_flag=True, help="Skip left images without a right partner instead of stopping.")
@click.option(
    "--compression",
    type=click.Choice(["fast", "lzf", "gzip", "none"]),
    default="fast",
    show_default=True,
    help="Dataset compression: fast (LZF on the boolean and int16 maps, float maps and costs raw), lzf (every dataset, "
    "smaller, slower), gzip (deflate, readable by every HDF5 library) or none.",
)
@click.option("--overwrite", is_flag=True, help="Recompute every pair; the old file is replaced only when the run finishes.")
@_sgm_options
def sgm(
    inputs: tuple[str, ...],
    more_inputs: tuple[str, ...],
    out: Path,
    workers: int,
    skip_unpaired: bool,
    compression: str,
    overwrite: bool,
    **sgm_options: Any,
) -> None:
    from pseudolabel.datasets import find_unpaired
    from pseudolabel.store.journal import ProxyRun
    from pseudolabel.store.proxies import run_identity

    paths = list(inputs) + list(more_inputs)
    if len(paths) not in (1, 2):
        raise InputError(f"--in takes ROOT or LEFT_DIR RIGHT_DIR, got {len(paths)} paths: {' '.join(paths)}")
    pairs = discover_pairs(paths, skip_unpaired=skip_unpaired)
    if skip_unpaired:
        skipped = find_unpaired(paths)
        if skipped:
            click.echo(f"sgm: skipping {len(skipped)} left image(s) without a right partner", err=True)
    explicit_max = sgm_options["max_disp"] is not None
    params = params_from_options(sgm_options)
    use_calib = not explicit_max and any(pair.max_disp is not None for pair in pairs)
    identity = run_identity(params, use_calib)
    with ProxyRun(out, params, use_calib, overwrite) as run:
        for note in run.state.notes:
            click.echo(f"sgm: {note}", err=True)
        todo = pairs if run.state.fresh else [p for p in pairs if p.key not in run.state.done_in_file]
        todo = [p for p in todo if p.key not in run.state.done_in_journal]
        already = len(pairs) - len(todo)
        tasks = make_tasks(todo, params, use_calib, run.journal, identity, compression)
        workers = min(workers, max(1, len(tasks)))
        click.echo(
            f"sgm: {len(pairs)} pairs, {already} already done, {len(tasks)} to match" + (f" with {workers} workers" if workers > 1 else ""),
            err=True,
        )
        progress = _Progress(len(tasks), already)
        try:
            run_tasks(tasks, workers, lambda done: (run.record(done.key, Path(done.entry)), progress.advance(done.key)))
        except InputError as error:
            finished = len(run.state.done_in_journal)
            raise InputError(f"{error} ({finished} finished pairs are kept; a rerun resumes)") from None
        finally:
            progress.close()
        added = run.finish()
    click.echo(f"sgm: wrote {out} ({added} pairs added, {len(pairs)} pairs of this input in the file)", err=True)


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
    import numpy as np

    from pseudolabel.store.proxies import RESULT_DATASETS, journal_path, open_proxies

    with open_proxies(path) as proxies:
        attrs = proxies.attrs
        size = path.stat().st_size
        click.echo(f"{path}: {attrs.get('format')} v{attrs.get('format_version')}, {attrs.get('created_by')}, {size / 2**20:.1f} MiB")
        params = proxies.sgm_params
        fields = " ".join(f"{name}={value}" for name, value in dataclasses.asdict(params).items())
        click.echo(f"SGM parameters: {fields}")
        if proxies.max_disp_from_calib:
            click.echo("  max_disp per pair from the dataset (Middlebury calib.txt ndisp) where given")
        keys = proxies.keys()
        click.echo(f"{len(keys)} pairs")
        shown = keys if show_all else keys[:20]
        rows = [("key", "size (WxH)", "disparities", "valid", "datasets")]
        for key in shown:
            pair = proxies.pair_attrs(key)
            names = proxies.datasets(key)
            missing = [n for n in RESULT_DATASETS if n not in names]
            extra = [n for n in names if n not in RESULT_DATASETS]
            described = []
            for name in extra:
                if name == "labels":
                    labels = proxies.read(key, ["labels"])["labels"]
                    described.append(f"labels ({np.count_nonzero(np.isfinite(labels)) / max(1, labels.size):.1%})")
                else:
                    described.append(name)
            summary = "sgm" + (f" (missing {', '.join(missing)})" if missing else "")
            rows.append(
                (
                    key,
                    f"{pair['width']}x{pair['height']}",
                    f"[{pair['min_disp']}, {pair['max_disp']})",
                    f"{pair.get('valid_fraction', float('nan')):.1%}",
                    ", ".join([summary, *described]),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            click.echo("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if len(shown) < len(keys):
            click.echo(f"  ... {len(keys) - len(shown)} more (--all lists them)")
        if keys:
            click.echo(f"  (sgm = {', '.join(RESULT_DATASETS)}; valid = fraction passing the left-right and uniqueness checks)")
        if keys:
            densities = [float(proxies.pair_attrs(k).get("valid_fraction", 0.0)) for k in keys]
            click.echo(f"mean valid density {np.mean(densities):.1%} over {len(keys)} pairs")
    journal = journal_path(path)
    if journal.is_dir():
        pending = len(list(journal.glob("*.h5")))
        if pending:
            click.echo(f"unfinished run: {pending} finished pairs wait in {journal}; rerun the same `pseudolabel sgm` command to finish it")
