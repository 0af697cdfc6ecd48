"""SGM pairs as tasks on a running ``dask.distributed`` cluster (``pseudolabel sgm --scheduler ADDRESS``).

The client (the process running :func:`pseudolabel.sgm.batch.run_sgm`) connects to the scheduler,
checks that the workers see the input images, and submits one task per pair. Each task runs
:func:`pseudolabel.sgm.batch.compute_pair`, the same per-pair function as the local runner, and sends
the pair's arrays back; the client writes the journal entry. So a task that Dask runs twice (its worker
was killed and the scheduler retried it elsewhere) is journaled once, the output is bit-identical to a
one-process run, and only the client writes files (the output folder need not be shared).

On a worker, one pair is matched at a time with as many Numba (and OpenCV) threads as the worker has
Dask threads (``dask worker --nthreads N``): no oversubscription, and the kernels are warmed on a tiny
pair once per worker process.

Needs ``dask[distributed]`` (the ``cluster`` extra); only this module imports it, and only when a
scheduler is used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from pseudolabel.errors import InputError
from pseudolabel.sgm.batch import SLOW_ENV, MatchedPair, PairTask, compute_pair, set_threads

__all__ = ["SCHEDULER_ENV", "check_inputs_visible", "cluster_pair", "connect", "run_tasks_on_cluster", "worker_count"]

# The environment variable that the commands read when --scheduler is not given.
SCHEDULER_ENV = "PSEUDOLABEL_SCHEDULER"
# Seconds to wait for the scheduler, and then for its first worker.
CONNECT_TIMEOUT_S = 10.0
WORKER_WAIT_S = 15.0
# Pairs whose images are checked on every worker before the run (spread over the list).
CHECKED_PAIRS = 32
# Tasks kept in flight per worker (one matching, one waiting, so a worker never idles on the client).
IN_FLIGHT_PER_WORKER = 2

# Worker-side state (one per worker process).
_MATCH_LOCK = threading.Lock()
_WARMED = {"count": 0}


@contextlib.contextmanager
def _quiet_distributed() -> Iterator[None]:
    """Silence distributed's connection warnings (the command prints one line of its own)."""
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def connect(address: str) -> Any:
    """A :class:`distributed.Client` of the scheduler at ``address`` with at least one worker.

    Raises:
        InputError: dask.distributed is not installed, the scheduler cannot be reached within
        :data:`CONNECT_TIMEOUT_S`, or it has no worker within :data:`WORKER_WAIT_S` (one line each).
    """
    try:
        from distributed import Client
    except ImportError:
        raise InputError("--scheduler needs dask.distributed: pip install 'pseudolabel[cluster]' (or dask[distributed])") from None
    with _quiet_distributed():
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except Exception as error:  # OSError, TimeoutError, ValueError for a malformed address, ...
            raise InputError(
                f"--scheduler {address}: no Dask scheduler answered within {CONNECT_TIMEOUT_S:.0f} s ({_first_line(error)}); "
                f"start one with `dask scheduler` and workers with `dask worker {address}`, or fix the address"
            ) from None
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except Exception:
            client.close()
            raise InputError(
                f"--scheduler {address}: the scheduler has no workers (waited {WORKER_WAIT_S:.0f} s); "
                f"start some with `dask worker {address} --nthreads 2 --nworkers 1`"
            ) from None
    return client


def worker_count(client: Any) -> int:
    """Workers connected to the scheduler now."""
    return len(client.scheduler_info(n_workers=-1).get("workers", {}))


def _first_missing(paths: Sequence[str]) -> str | None:
    """On a worker: the first of ``paths`` that is not a readable file there, or ``None``."""
    for path in paths:
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            return path
    return None


def check_inputs_visible(client: Any, tasks: Sequence[PairTask], base: str | None = None) -> None:
    """Check that every worker sees the images of up to :data:`CHECKED_PAIRS` pairs at the client's paths.

    Raises:
        InputError: naming a worker and the first file it does not see, as an absolute path.
    """
    if not tasks:
        return
    base = base if base is not None else os.getcwd()
    step = max(1, len(tasks) // CHECKED_PAIRS)
    sample = list(tasks[::step])[:CHECKED_PAIRS] + [tasks[-1]]
    paths = [os.path.join(base, path) for task in sample for path in (task.left, task.right)]
    with _quiet_distributed():
        missing = client.run(_first_missing, paths)
    for worker, path in sorted(missing.items()):
        if path is not None:
            raise InputError(
                f"Dask worker {worker} cannot see {path}: every worker needs the images at the same paths as this "
                "machine (a shared filesystem mounted at the same place); nothing was matched"
            )


def _warm_kernels() -> None:
    """Compile (or load from Numba's cache) the kernels on a tiny random pair."""
    from pseudolabel.sgm.matcher import match
    from pseudolabel.sgm.params import SGMParams

    rng = np.random.default_rng(0)
    left = rng.integers(0, 255, (16, 40), dtype=np.uint8)
    match(left, np.roll(left, -2, axis=1), SGMParams(max_disp=8))
    _WARMED["count"] += 1


def cluster_pair(task: PairTask, delay_s: float = 0.0) -> MatchedPair:
    """The Dask task of one pair: :func:`pseudolabel.sgm.batch.compute_pair` on a worker.

    One pair at a time per worker process, with the worker's thread count as Numba threads; the
    kernels are warmed once per process. ``delay_s`` (the client's :data:`pseudolabel.sgm.batch.SLOW_ENV`,
    for tests) holds the pair that long after matching.

    Raises:
        InputError: as :func:`compute_pair`, naming the worker.
    """
    from distributed import get_worker

    worker = get_worker()
    with _MATCH_LOCK:
        set_threads(max(1, int(worker.state.nthreads)))
        if not _WARMED["count"]:
            _warm_kernels()
        try:
            matched = compute_pair(task)
        except InputError as error:
            raise InputError(f"on Dask worker {worker.address}: {error}") from None
        if delay_s:
            time.sleep(delay_s)
    return matched


def warm_count() -> int:
    """On a worker: how many times this process warmed the kernels (0 or 1)."""
    return int(_WARMED["count"])


def run_tasks_on_cluster(
    client: Any,
    tasks: Sequence[PairTask],
    on_result: Callable[[PairTask, MatchedPair], None],
    done: Mapping[str, Any],
    base: str | None = None,
) -> None:
    """Run ``tasks`` on the cluster; call ``on_result`` in this process once per pair, as pairs finish.

    A pair whose key is already in ``done`` (journaled) is not passed on again. At most
    :data:`IN_FLIGHT_PER_WORKER` tasks per worker are submitted at a time, so an error stops the run
    quickly and results do not pile up in memory. Relative image paths are read relative to ``base``
    (default: this process's working folder) on the workers. The environment variable
    :data:`pseudolabel.sgm.batch.SLOW_ENV` (seconds) of this process makes each task hold its worker
    that long after matching, for tests.

    Raises:
        InputError: the first failed pair (the pending ones are cancelled), or a pair that killed
        its workers repeatedly.
    """
    from distributed import as_completed

    base = base if base is not None else os.getcwd()
    delay = float(os.environ.get(SLOW_ENV, "0") or 0)
    queue = [dataclasses.replace(task, base=base) for task in reversed(tasks)]
    run_id = uuid.uuid4().hex[:8]
    by_future: dict[str, PairTask] = {}
    futures: dict[str, Any] = {}
    completed = as_completed(loop=client.loop)
    last_count = (0.0, 1)

    def limit() -> int:
        nonlocal last_count
        now = time.monotonic()
        if now - last_count[0] > 1.0:
            last_count = (now, max(1, worker_count(client)))
        return IN_FLIGHT_PER_WORKER * last_count[1]

    def refill() -> None:
        while queue and len(by_future) < limit():
            task = queue.pop()
            future = client.submit(cluster_pair, task, delay, key=f"pseudolabel-sgm-{run_id}-{len(queue)}", pure=False)
            by_future[future.key] = task
            futures[future.key] = future
            completed.add(future)

    try:
        refill()
        for future in completed:
            task = by_future.pop(future.key)
            futures.pop(future.key, None)
            if future.status == "error":
                error = future.exception()
                if isinstance(error, InputError):
                    raise InputError(str(error)) from None
                raise InputError(f"pair {task.key!r} failed on the cluster: {type(error).__name__}: {_first_line(error)}") from None
            matched = future.result()
            future.release()
            if task.key not in done:
                on_result(task, matched)
            refill()
    finally:
        if futures:
            with _quiet_distributed(), contextlib.suppress(Exception):
                client.cancel(list(futures.values()))
