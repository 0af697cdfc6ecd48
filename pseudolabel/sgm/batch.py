"""A whole dataset in, one crash-safe proxies file out: what ``pseudolabel sgm`` does, as one call.

:func:`run_sgm` finds the pairs (:func:`pseudolabel.datasets.discover_pairs`), skips those already in
the output file or in the journal of an interrupted run, matches the rest with
:func:`pseudolabel.sgm.matcher.match` (in this process, or in ``workers`` spawned processes with
``cores // workers`` Numba threads each), writes each finished pair to the journal of a
:class:`pseudolabel.store.journal.ProxyRun` and assembles the output file at the end. A notebook
call has the same effect as the command::

    from pseudolabel.sgm import SGMParams
    from pseudolabel.sgm.batch import run_sgm

    summary = run_sgm(["tests/data/middlebury"], "out/proxies.h5", SGMParams(), log=print)

The rest of this module (:func:`make_tasks`, :func:`run_tasks`, :func:`init_worker`,
:func:`available_cores`) is the machinery behind it, public for the pipeline benchmark.

Imports numpy, numba, OpenCV and h5py only: never torch or click.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pseudolabel.datasets import PairInfo, discover_pairs, find_unpaired
from pseudolabel.errors import InputError
from pseudolabel.io import read_image
from pseudolabel.progress import Progress, or_silent
from pseudolabel.sgm.downsampled import enlarge_map, enlarge_maps
from pseudolabel.sgm.matcher import match, match_reduced
from pseudolabel.sgm.pair_check import check_pairs
from pseudolabel.sgm.params import SGMParams
from pseudolabel.store.datasets_io import COMPRESSIONS, DEFAULT_COMPRESSION
from pseudolabel.store.journal import ProxyRun, encode_journal_entry, write_journal_bytes, write_raw_journal_entry
from pseudolabel.store.layout import MINIMAL_CONFIDENCE, STORES, pair_attributes, result_arrays, run_identity, store_arrays
from pseudolabel.threads import tune_allocator

__all__ = ["SLOW_ENV", "SGMRunSummary", "run_sgm"]

# Testing hook: seconds to sleep after each finished pair (lets a test kill the command mid-run).
SLOW_ENV = "PSEUDOLABEL_SGM_TEST_DELAY_S"


@dataclass
class SGMRunSummary:
    """What one :func:`run_sgm` call did.

    Attributes:
        out: the proxies file written.
        pairs: pairs found in the input (after skipping unpaired images).
        already_done: of those, pairs finished before this call (in ``out`` or in its journal).
        matched: pairs matched by this call.
        added: pairs copied into ``out`` when it was assembled (this call's and a resumed run's).
        workers: processes that matched pairs (1 = this process; with a scheduler, the Dask workers connected at the start).
        max_disp_from_dataset: whether pairs with a dataset-given range (Middlebury ``calib.txt``
            ``ndisp``) were matched with it.
        skipped_unpaired: left images skipped for lack of a right partner (``skip_unpaired=True``).
        notes: what the run found and fixed on disk (a stale ``.partial``, damaged journal entries, ...).
        read_s, match_s, write_s: seconds spent reading images, matching and writing journal entries,
            summed over the pairs (so over the worker processes too).
        assemble_s: seconds spent assembling ``out`` from the journal.
    """

    out: Path
    pairs: int = 0
    already_done: int = 0
    matched: int = 0
    added: int = 0
    workers: int = 1
    max_disp_from_dataset: bool = False
    skipped_unpaired: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    read_s: float = 0.0
    match_s: float = 0.0
    write_s: float = 0.0
    assemble_s: float = 0.0


def run_sgm(
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    params: SGMParams | None = None,
    *,
    workers: int = 1,
    skip_unpaired: bool = False,
    compression: str = DEFAULT_COMPRESSION,
    overwrite: bool = False,
    max_disp_from_dataset: bool = True,
    scheduler: str | None = None,
    shard_size: int | None = None,
    store: str = "full",
    max_memory: int | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    pair_check: bool = True,
) -> SGMRunSummary:
    """Compute SGM proxy disparities of a dataset into one crash-safe proxies HDF5 file.

    Finished pairs are kept if the call is interrupted (or fails on a bad pair); a second call with
    the same arguments resumes. The file's layout (per pair: ``disparity`` float32 (H, W) pixels,
    ``valid`` bool (H, W), cost features, ...) is described in :mod:`pseudolabel.store.layout`.

    Args:
        inputs: ``[ROOT]`` (a native KITTI 2012/2015, Middlebury or ``pseudolabel synth`` layout,
            searched recursively) or ``[LEFT_DIR, RIGHT_DIR]`` (images paired by relative path
            without extension). Image paths are stored as built from these, not resolved.
        out: the output file: created, resumed, or (``overwrite``) replaced when the run finishes.
        params: SGM parameters (default :class:`SGMParams`); validated here.
        workers: processes matching pairs in parallel, each with ``cores // workers`` Numba threads.
        skip_unpaired: skip left images without a right partner instead of raising.
        compression: a key of :data:`pseudolabel.store.datasets_io.COMPRESSIONS` (``fast``, ``lzf``,
            ``gzip``, ``none``).
        overwrite: recompute every pair even if ``out`` holds them or was made with other parameters.
        max_disp_from_dataset: match pairs whose dataset gives a range (Middlebury ``calib.txt``
            ``ndisp``) with that ``max_disp`` instead of ``params.max_disp`` (what the command does
            unless ``--max-disp`` is given).
        scheduler: the address of a running ``dask.distributed`` scheduler (``tcp://HOST:8786``): the
            pairs run as tasks on its workers (``workers`` is then ignored), which must see the images
            at the same paths; results come back to this process, which journals each pair once.
            ``None`` = this machine (``workers``). Needs the ``cluster`` extra (``dask[distributed]``).
        shard_size: write ``out`` as a small index whose pairs are HDF5 external links into
            ``<out>.shards/NNNNN.h5``, at most this many pairs per shard; ``None`` = one file (or the
            layout of an existing ``out``). See ``data/README.md``.
        store: a key of :data:`pseudolabel.store.layout.STORES`: ``"full"`` keeps every result
            dataset, ``"minimal"`` only ``disparity``, ``valid`` and the shipped CCNN's ``confidence/ccnn``,
            computed here from the features it reads (:func:`pseudolabel.confidence.scoring.score_matched_pair`;
            torch is imported then).
        max_memory: peak memory budget in bytes of each matching process; pairs whose cost volume does
            not fit are matched in bands (:mod:`pseudolabel.sgm.tiled`). ``None`` = no limit.
        progress: told about each finished pair (phase ``"sgm"``, one unit per pair); ``None`` shows nothing.
        log: called with each line the command prints before matching (without its ``sgm:``
            prefix): skipped images, what was found on disk, how many pairs are left; ``None`` = silent.
        pair_check: first check the first pairs to match for swapped images and unrectified rows
            (:func:`pseudolabel.sgm.pair_check.check_pairs`).

    Returns:
        What the call did (the command prints it).

    Raises:
        InputError: a missing folder, unpaired images, inconsistent parameters, parameters that differ
        from those of the existing ``out`` (without ``overwrite``), an unwritable or locked ``out``, or an
        unreadable pair (then the pairs finished so far are kept in the journal).
    """
    params = params if params is not None else SGMParams()
    say = log if log is not None else _ignore
    progress = or_silent(progress)
    paths = list(inputs)
    if len(paths) not in (1, 2):
        raise InputError(f"--in takes ROOT or LEFT_DIR RIGHT_DIR, got {len(paths)} paths: {' '.join(str(p) for p in paths)}")
    if compression not in COMPRESSIONS:
        raise InputError(f"unknown compression {compression!r}; use {', '.join(COMPRESSIONS)}")
    if workers < 1:
        raise InputError(f"workers must be at least 1, not {workers}")
    if store not in STORES:
        raise InputError(f"unknown --store {store!r}; use {', '.join(STORES)}")
    if shard_size is not None and shard_size < 1:
        raise InputError(f"--shard-size must be at least 1, not {shard_size}")
    pairs = discover_pairs(paths, skip_unpaired=skip_unpaired)
    tune_allocator()
    summary = SGMRunSummary(out=Path(out), pairs=len(pairs))
    if skip_unpaired:
        summary.skipped_unpaired = find_unpaired(paths)
        if summary.skipped_unpaired:
            say(f"skipping {len(summary.skipped_unpaired)} left image(s) without a right partner")
    params.validate()
    use_calib = max_disp_from_dataset and any(pair.max_disp is not None for pair in pairs)
    summary.max_disp_from_dataset = use_calib
    identity = run_identity(params, use_calib, store)
    client = None
    if scheduler:
        from pseudolabel.cluster import connect

        # before anything on disk is touched: an unreachable scheduler leaves the output as it was
        client = connect(scheduler)
    try:
        with ProxyRun(summary.out, params, use_calib, overwrite, store=store, shard_size=shard_size) as run:
            _run_pairs(run, client, pairs, params, use_calib, identity, compression, store, workers, summary, say, progress, pair_check, max_memory)
    finally:
        if client is not None:
            client.close()
    return summary


def _run_pairs(
    run: ProxyRun,
    client: Any,
    pairs: Sequence[PairInfo],
    params: SGMParams,
    use_calib: bool,
    identity: str,
    compression: str,
    store: str,
    workers: int,
    summary: SGMRunSummary,
    say: Callable[[str], None],
    progress: Progress,
    pair_check: bool = True,
    max_memory: int | None = None,
) -> None:
    """The body of :func:`run_sgm` inside its :class:`ProxyRun`: match what is left, then assemble."""
    summary.notes = list(run.state.notes)
    for note in summary.notes:
        say(note)
    todo = pairs if run.state.fresh else [p for p in pairs if p.key not in run.state.done_in_file]
    todo = [p for p in todo if p.key not in run.state.done_in_journal]
    summary.already_done = len(pairs) - len(todo)
    tasks = make_tasks(todo, params, use_calib, run.journal, identity, compression, store, max_memory)
    if pair_check:
        check_pairs(tasks)
    if client is not None:
        from pseudolabel.cluster import worker_count
        from pseudolabel.sgm import cluster

        summary.workers = worker_count(client)
        cluster.check_inputs_visible(client, tasks)
        say(f"{len(pairs)} pairs, {summary.already_done} already done, {len(tasks)} to match on {summary.workers} Dask workers")
    else:
        summary.workers = min(workers, max(1, len(tasks)))
        say(
            f"{len(pairs)} pairs, {summary.already_done} already done, {len(tasks)} to match"
            + (f" with {summary.workers} workers" if summary.workers > 1 else "")
        )

    def on_done(done: PairDone) -> None:
        run.record(done.key, Path(done.entry))
        summary.matched += 1
        summary.read_s += done.read_s
        summary.match_s += done.match_s
        summary.write_s += done.write_s
        progress.advance(1)

    progress.start("sgm", len(tasks), summary.already_done)
    try:
        if client is not None:
            cluster.run_tasks_on_cluster(client, tasks, lambda task, encoded: on_done(journal_pair(task, encoded)), run.state.done_in_journal)
        else:
            run_tasks(tasks, summary.workers, on_done)
    except InputError as error:
        finished = len(run.state.done_in_journal)
        raise InputError(f"{error} ({finished} finished pairs are kept; a rerun resumes)") from None
    finally:
        progress.finish()
    start = time.perf_counter()
    summary.added = run.finish()
    summary.assemble_s = time.perf_counter() - start


def _ignore(line: str) -> None:
    """The default ``log``: drop the line."""


# ----------------------------------------------------------------------------------------------
# one pair (runs in this process or in a worker process)


@dataclass(frozen=True)
class PairTask:
    """Everything a worker needs to process one pair (picklable; paths as text).

    Attributes:
        key: the pair's key.
        left, right: image paths.
        params: SGM parameters of this pair (its own ``max_disp`` when the dataset gives one).
        gt_left: ground-truth disparity of the left view, or ``None``.
        gt_scale: divide stored ground-truth values by it to get pixels, or ``None`` (format default).
        masks: evaluation masks of the left view, name -> path.
        journal: the run's journal folder.
        identity: the run's :func:`pseudolabel.store.layout.run_identity`.
        compression: a key of :data:`pseudolabel.store.datasets_io.COMPRESSIONS`.
        store: a key of :data:`pseudolabel.store.layout.STORES`: which datasets are kept.
        base: the folder that relative image paths are read from (a cluster worker's working folder
            differs from the client's); ``None`` = this process's working folder. The stored paths
            stay as given.
        max_memory: the matcher's memory budget in bytes, or ``None``.
    """

    key: str
    left: str
    right: str
    params: SGMParams
    gt_left: str | None
    gt_scale: float | None
    masks: dict[str, str]
    journal: str
    identity: str
    compression: str = DEFAULT_COMPRESSION
    store: str = "full"
    base: str | None = None
    max_memory: int | None = None


@dataclass(frozen=True)
class PairDone:
    """What a worker reports back: the pair's key, its journal entry (a path) and where the time went (seconds)."""

    key: str
    entry: str
    read_s: float
    match_s: float
    write_s: float


@dataclass
class MatchedPair:
    """A pair read and matched, not yet journaled: on-disk arrays, group attributes, seconds (matching
    includes the confidence of ``--store minimal``), attributes of some datasets by name, and the block
    factor of the datasets kept at a reduced resolution (missing = 1: (H, W); ``f``: (ceil(H / f), ceil(W / f)),
    see :meth:`full_arrays`)."""

    arrays: dict[str, np.ndarray]
    attrs: dict[str, Any]
    read_s: float
    match_s: float
    dataset_attrs: dict[str, dict[str, Any]] = field(default_factory=dict)
    factors: dict[str, int] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the pair, pixels (from the ``height`` and ``width`` attributes)."""
        return int(self.attrs["height"]), int(self.attrs["width"])

    def full_arrays(self) -> dict[str, np.ndarray]:
        """Every dataset at (H, W): those kept reduced repeated over their blocks (what ``match`` returns)."""
        return enlarge_maps(self.arrays, self.factors, *self.size)


@dataclass
class ReadPair:
    """A pair's images as :func:`read_pair` read them: (H, W) or (H, W, 3) ``uint8``/``uint16``, and the seconds it took."""

    left: np.ndarray
    right: np.ndarray
    read_s: float


def read_pair(task: PairTask) -> ReadPair:
    """Read a pair's images and check that they can be matched (one size, a range narrower than the width).

    Raises:
        InputError: unreadable images, different sizes, or a disparity range wider than the image,
        naming the file and the fix.
    """
    start = time.perf_counter()
    base = task.base or ""
    left = read_image(os.path.join(base, task.left))
    right = read_image(os.path.join(base, task.right))
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
    return ReadPair(left, right, time.perf_counter() - start)


def compute_pair(task: PairTask, reduced: bool = False) -> MatchedPair:
    """Read and match one pair: the per-pair work, the same in this process, in a local worker process
    and on a Dask worker (which journal the result differently, see :func:`process_pair`,
    :func:`process_pair_here` and :mod:`pseudolabel.sgm.cluster`).

    Args:
        task: the pair.
        reduced: keep the maps of a reduced-resolution match (``params.downsample > 1``) at that
            resolution (:func:`pseudolabel.sgm.matcher.match_reduced`; ``MatchedPair.factors`` says which);
            ``False`` = full size, as :func:`pseudolabel.sgm.matcher.match` returns them. The confidence of
            ``--store minimal`` is computed at full size either way.

    Raises:
        InputError: see :func:`read_pair`.
    """
    images = read_pair(task)
    read_done = time.perf_counter()
    left, right, params = images.left, images.right, task.params
    height, width = left.shape[:2]
    factor = params.downsample if reduced else 1
    try:
        result = (
            match_reduced(left, right, params, max_memory=task.max_memory) if factor > 1 else match(left, right, params, max_memory=task.max_memory)
        )
    except InputError as error:
        raise InputError(f"{task.left}: {error}") from None
    # result_arrays commutes with the block repetition (dtype conversions are per value, the uint16 test sees the same values)
    computed = result_arrays(result)
    arrays = store_arrays(computed, task.store)
    factors = {name: factor for name in arrays} if factor > 1 else {}
    dataset_attrs: dict[str, dict[str, Any]] = {}
    if MINIMAL_CONFIDENCE in STORES[task.store]:  # the shipped CCNN's confidence instead of what it reads
        import numba

        from pseudolabel.confidence.scoring import score_matched_pair

        threads = int(numba.get_num_threads())  # this process's (or worker's) share of the cores
        if factor > 1:
            computed = enlarge_maps(computed, dict.fromkeys(computed, factor), height, width)
        arrays[MINIMAL_CONFIDENCE], dataset_attrs[MINIMAL_CONFIDENCE] = score_matched_pair(computed, params, threads)
    valid = arrays["valid"] if factor == 1 else enlarge_map(arrays["valid"], factor, height, width)
    attrs = pair_attributes(
        task.key,
        task.left,
        task.right,
        params,
        (height, width),
        valid,
        task.gt_left,
        task.gt_scale,
        task.masks,
    )
    if result.bands > 1:  # cut by the memory budget: a few pixels near the cuts differ from whole-image matching
        attrs["bands"] = int(result.bands)
    return MatchedPair(arrays, attrs, images.read_s, time.perf_counter() - read_done, dataset_attrs, factors)


@dataclass
class EncodedPair:
    """A matched pair as its compressed journal entry (the bytes of an HDF5 file,
    :func:`pseudolabel.store.journal.encode_journal_entry`), with where the time went (seconds)."""

    entry: bytes
    read_s: float
    match_s: float
    encode_s: float


def encode_pair(task: PairTask, matched: MatchedPair) -> EncodedPair:
    """Compress a matched pair into its journal entry, in memory (on a Dask worker: before it is sent)."""
    start = time.perf_counter()
    entry = encode_journal_entry(task.key, matched.full_arrays(), matched.attrs, task.identity, task.compression, matched.dataset_attrs)
    return EncodedPair(entry, matched.read_s, matched.match_s, time.perf_counter() - start)


def journal_pair(task: PairTask, encoded: EncodedPair) -> PairDone:
    """Write an encoded pair into the journal (atomically, :func:`pseudolabel.store.journal.write_journal_bytes`)."""
    start = time.perf_counter()
    entry = write_journal_bytes(Path(task.journal), task.key, encoded.entry)
    return PairDone(task.key, str(entry), encoded.read_s, encoded.match_s, encoded.encode_s + time.perf_counter() - start)


def process_pair(task: PairTask) -> PairDone:
    """Read, match, encode and journal one pair (what a local worker process does: :func:`compute_pair` and
    :func:`encode_pair`, as on a Dask worker, then :func:`journal_pair` in the same process).

    Raises:
        InputError: see :func:`run_sgm`.
    """
    return journal_pair(task, encode_pair(task, compute_pair(task)))


def process_pair_here(task: PairTask) -> PairDone:
    """Read, match and journal one pair in the process that assembles the output (``--workers 1``): maps of a
    reduced-resolution match kept at that resolution (:func:`compute_pair` with ``reduced=True``) and
    written as a raw entry (:func:`pseudolabel.store.journal.write_raw_journal_entry`: no compression, no
    in-memory HDF5 file); the assembly enlarges and compresses them. The output is the same as through
    :func:`process_pair`.

    Raises:
        InputError: see :func:`run_sgm`.
    """
    matched = compute_pair(task, reduced=True)
    start = time.perf_counter()
    entry = write_raw_journal_entry(
        Path(task.journal),
        task.key,
        matched.arrays,
        matched.attrs,
        task.identity,
        task.compression,
        matched.size,
        matched.factors,
        matched.dataset_attrs,
    )
    return PairDone(task.key, str(entry), matched.read_s, matched.match_s, time.perf_counter() - start)


def init_worker(threads: int, parent: int) -> None:
    """Worker process set-up: ignore Ctrl-C (the parent handles it), use ``threads`` Numba and OpenCV
    threads, and exit when process ``parent`` (a pid) is gone."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tune_allocator()
    set_threads(threads)

    def watch_parent() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch_parent, daemon=True).start()


def set_threads(threads: int) -> None:
    """Use ``threads`` Numba threads (in the calling thread: Numba's setting is per thread) and OpenCV threads."""
    import cv2
    import numba

    limit = int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]  # numba.config sets it at import
    numba.set_num_threads(max(1, min(threads, limit)))
    cv2.setNumThreads(max(1, threads))


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def make_tasks(
    pairs: Sequence[PairInfo],
    params: SGMParams,
    use_calib: bool,
    journal: Path,
    identity: str,
    compression: str = DEFAULT_COMPRESSION,
    store: str = "full",
    max_memory: int | None = None,
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
                store=store,
                max_memory=max_memory,
            )
        )
    return tasks


def run_tasks(tasks: Sequence[PairTask], workers: int, on_done: Callable[[PairDone], None]) -> None:
    """Process ``tasks``: in this process when ``workers == 1`` (:func:`process_pair_here`: raw journal
    entries), else in ``workers`` spawned processes (:func:`process_pair`: compressed HDF5 entries, so the
    compression runs in parallel in the workers).

    ``on_done`` is called in this process for each finished pair. The first error stops the run
    (pending pairs are cancelled, finished ones stay in the journal) and is re-raised. The
    environment variable :data:`SLOW_ENV` (seconds) adds a sleep after each pair, for tests.
    """
    delay = float(os.environ.get(SLOW_ENV, "0") or 0)
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            on_done(process_pair_here(task))
            if delay:
                time.sleep(delay)
        return
    import multiprocessing

    from pseudolabel.threads import choose_threads, measure_other_load

    # the cores other processes leave free, shared among the workers
    threads = max(1, choose_threads(available_cores(), measure_other_load()) // workers)
    executor = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=init_worker,
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
