"""The dataset stages as tasks on a running ``dask.distributed`` cluster (``--scheduler ADDRESS``).

One runner for every stage that takes ``--scheduler`` (``sgm``, ``confidence score``, ``labels``,
``predict``): the client (the process running the command) connects with :func:`connect`, checks
that the workers see the input files at the client's paths (:func:`check_files_visible`), then
:func:`run_on_cluster` submits one task per pair and hands each result to a callback in the client,
which alone writes files. So a task that Dask runs twice (its worker was killed and the scheduler
retried it elsewhere) is written once, the output is bit-identical to a one-process run, and the
output folder need not be shared; the images (and nothing else) must be at the same paths on every
worker (a shared filesystem).

On a worker, :func:`on_worker` runs one task at a time per worker process with as many Numba, OpenCV
and torch threads as the worker has Dask threads (``dask worker --nthreads N``): no oversubscription.
Objects every task needs (a network) travel once per worker with :func:`share`.

Needs ``dask[distributed]`` (the ``cluster`` extra); only the functions here import it, and only when
a scheduler is used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pseudolabel.errors import InputError
from pseudolabel.threads import apply_threads, tune_allocator

__all__ = [
    "CONNECT_TIMEOUT_S",
    "IN_FLIGHT_PER_WORKER",
    "SCHEDULER_ENV",
    "Unlocked",
    "check_files_visible",
    "connect",
    "on_worker",
    "run_on_cluster",
    "share",
    "worker_count",
]

#: The environment variable that the commands read when ``--scheduler`` is not given.
SCHEDULER_ENV = "PSEUDOLABEL_SCHEDULER"
#: Seconds to wait for the scheduler, and then for its first worker.
CONNECT_TIMEOUT_S = 10.0
WORKER_WAIT_S = 15.0
#: Files checked on every worker before a run (spread over the list).
CHECKED_FILES = 64
#: Tasks kept in flight per worker (one running, one waiting, so a worker never idles on the client).
IN_FLIGHT_PER_WORKER = 2
#: Arguments larger than this (bytes, as dask.sizeof measures) are sent straight to a worker
#: (``client.scatter(direct=True)``) instead of inside the task through the scheduler, which would
#: receive and forward every byte (a proxies pair's arrays are about 11 MB).
DIRECT_BYTES = 1 << 20
#: Submissions of a task whose scattered arguments were lost with their worker.
LOST_DATA_ATTEMPTS = 3

Result = TypeVar("Result")

# Worker-side state (one per worker process): one task at a time.
_TASK_LOCK = threading.Lock()


@contextlib.contextmanager
def quiet_distributed() -> Iterator[None]:
    """Silence distributed's connection warnings (the command prints one line of its own)."""
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when empty)."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def connect(address: str) -> Any:
    """A :class:`distributed.Client` of the scheduler at ``address`` with at least one worker.

    Call it before touching any output: an unreachable scheduler then leaves the output as it was.

    Raises:
        InputError: dask.distributed is not installed, the scheduler cannot be reached within
        :data:`CONNECT_TIMEOUT_S`, or it has no worker within :data:`WORKER_WAIT_S` (one line each).
    """
    try:
        from distributed import Client
    except ImportError:
        raise InputError("--scheduler needs dask.distributed: pip install 'pseudolabel[cluster]' (or dask[distributed])") from None
    with quiet_distributed():
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except Exception as error:  # OSError, TimeoutError, ValueError for a malformed address, ...
            raise InputError(
                f"--scheduler {address}: no Dask scheduler answered within {CONNECT_TIMEOUT_S:.0f} s ({first_line(error)}); "
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


@contextlib.contextmanager
def connected(address: str | None) -> Iterator[Any]:
    """:func:`connect` to ``address`` (``None``: no cluster, yields ``None``) and close the client at the end."""
    if address is None:
        yield None
        return
    client = connect(address)
    try:
        yield client
    finally:
        with quiet_distributed(), contextlib.suppress(Exception):
            client.close()


def worker_count(client: Any) -> int:
    """Workers connected to the scheduler now."""
    return len(client.scheduler_info(n_workers=-1).get("workers", {}))


def _first_missing(paths: Sequence[str]) -> str | None:
    """On a worker: the first of ``paths`` that is not a readable file there, or ``None``."""
    for path in paths:
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            return path
    return None


def check_files_visible(client: Any, paths: Sequence[str | os.PathLike[str]], base: str | None = None, what: str = "the images") -> None:
    """Check that every worker sees up to :data:`CHECKED_FILES` of ``paths`` (spread over the list, and the
    last one) at the client's paths; relative paths are taken relative to ``base`` (default: this
    process's working folder).

    Raises:
        InputError: naming a worker and the first file it does not see, as an absolute path.
    """
    if not paths:
        return
    base = base if base is not None else os.getcwd()
    step = max(1, len(paths) // CHECKED_FILES)
    sample = [*list(paths[::step])[:CHECKED_FILES], paths[-1]]
    absolute = [os.path.join(base, os.fspath(path)) for path in sample]
    with quiet_distributed():
        missing = client.run(_first_missing, absolute)
    for worker, path in sorted(missing.items()):
        if path is not None:
            raise InputError(
                f"Dask worker {worker} cannot see {path}: every worker needs {what} at the same paths as this "
                "machine (a shared filesystem mounted at the same place); nothing was computed"
            )


@dataclass(frozen=True)
class Unlocked(Generic[Result]):
    """What a task returns to have ``finish(*arguments)`` run after it releases its worker's exclusive section
    (:func:`on_worker`), e.g. compressing a pair's result while the next task already matches; the task's
    result is then what ``finish`` returns."""

    finish: Callable[..., Result]
    arguments: tuple[Any, ...]


def on_worker(function: Callable[..., Result | Unlocked[Result]], *arguments: Any) -> Result:
    """Run ``function(*arguments)`` on this Dask worker: one task at a time per worker process (an exclusive
    section), with the worker's thread count as Numba, OpenCV and torch threads. A function that returns
    :class:`Unlocked` has its last step run after the section, beside the next task's.

    Raises:
        InputError: ``function``'s, naming the worker.
    """
    from distributed import get_worker

    worker = get_worker()
    try:
        with _TASK_LOCK:
            tune_allocator()
            apply_threads(max(1, int(worker.state.nthreads)))
            result = function(*arguments)
        if isinstance(result, Unlocked):
            return result.finish(*result.arguments)
        return result
    except InputError as error:
        raise InputError(f"on Dask worker {worker.address}: {error}") from None


def share(client: Any, value: Any) -> Any:
    """Send ``value`` (a network, a model's settings) to every worker once; pass the returned future as a
    task argument and the task receives ``value`` itself."""
    with quiet_distributed():
        return client.scatter(value, broadcast=True, hash=False)


def run_on_cluster(
    client: Any,
    function: Callable[..., Result | Unlocked[Result]],
    jobs: Iterable[tuple[str, tuple[Any, ...]]],
    on_result: Callable[[str, Result], None],
    name: str,
    shared: Sequence[Any] = (),
) -> None:
    """Run ``function(*shared, *arguments)`` on the cluster for every ``(key, arguments)`` of ``jobs``; call
    ``on_result(key, result)`` in this process once per job, as jobs finish (in any order); a function
    that returns :class:`Unlocked` delivers what its ``finish`` returns.

    ``jobs`` is read lazily, as workers free up: at most :data:`IN_FLIGHT_PER_WORKER` tasks per worker
    are in flight, so an error stops the run quickly and neither arguments nor results pile up in
    memory. A task that Dask retries (its worker died) still gives one result. ``shared`` are futures
    of :func:`share` (or small values) passed to every task. Tasks are named ``pseudolabel-<name>-...``.

    Raises:
        InputError: the first failed job (the pending ones are cancelled), or a job that killed its
        workers repeatedly.
    """
    from dask.sizeof import sizeof
    from distributed import as_completed

    run_id = uuid.uuid4().hex[:8]
    pending = iter(jobs)
    exhausted = False
    jobs_of: dict[str, tuple[str, tuple[Any, ...], int]] = {}  # task key -> (job key, arguments, attempt)
    futures: dict[str, Any] = {}
    sent: dict[str, list[Any]] = {}  # task key -> futures of its scattered arguments
    completed = as_completed(loop=client.loop)
    last_count = (0.0, 1)
    submitted = 0

    def limit() -> int:
        nonlocal last_count
        now = time.monotonic()
        if now - last_count[0] > 1.0:
            last_count = (now, max(1, worker_count(client)))
        return IN_FLIGHT_PER_WORKER * last_count[1]

    def submit(key: str, arguments: tuple[Any, ...], attempt: int) -> None:
        nonlocal submitted
        # large arguments go straight to a worker (the task then runs there), not through the scheduler
        large = [index for index, value in enumerate(arguments) if sizeof(value) > DIRECT_BYTES]
        scattered = {index: client.scatter(arguments[index], hash=False, direct=True) for index in large}
        passed = [scattered.get(index, value) for index, value in enumerate(arguments)]
        future = client.submit(on_worker, function, *shared, *passed, key=f"pseudolabel-{name}-{run_id}-{submitted}", pure=False)
        submitted += 1
        jobs_of[future.key] = (key, arguments, attempt)
        sent[future.key] = list(scattered.values())
        futures[future.key] = future
        completed.add(future)

    def refill() -> None:
        nonlocal exhausted
        while not exhausted and len(futures) < limit():
            job = next(pending, None)
            if job is None:
                exhausted = True
                return
            submit(job[0], job[1], 1)

    def release(task_key: str) -> None:
        for value in sent.pop(task_key, []):
            with contextlib.suppress(Exception):
                value.release()

    try:
        refill()
        for future in completed:
            key, arguments, attempt = jobs_of.pop(future.key)
            futures.pop(future.key, None)
            had_data = bool(sent.get(future.key))
            release(future.key)
            if future.status != "finished":
                error = future.exception() if future.status == "error" else None
                if isinstance(error, InputError):
                    raise InputError(str(error)) from None
                # its scattered arguments may have died with their worker: send them again
                if (error is None or had_data) and attempt < LOST_DATA_ATTEMPTS:
                    submit(key, arguments, attempt + 1)
                    continue
                detail = f"{type(error).__name__}: {first_line(error)}" if error is not None else f"task {future.status}"
                raise InputError(f"pair {key!r} failed on the cluster: {detail}") from None
            result = future.result()
            future.release()
            on_result(key, result)
            refill()
    finally:
        if futures:
            with quiet_distributed(), contextlib.suppress(Exception):
                client.cancel(list(futures.values()))
        for task_key in list(sent):
            release(task_key)
