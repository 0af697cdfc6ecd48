"""SGM pairs as tasks on a running ``dask.distributed`` cluster (``pseudolabel sgm --scheduler ADDRESS``).

The runner is :mod:`pseudolabel.cluster`'s (the same for every stage). Each task runs
:func:`pseudolabel.sgm.batch.compute_pair`, the same per-pair function as the local runner, and sends
the pair's journal entry back, compressed on the worker; the client writes it to the journal. So a task that Dask runs twice (its worker
was killed and the scheduler retried it elsewhere) is journaled once, the output is bit-identical to a
one-process run, and only the client writes files (the output folder need not be shared).

On a worker, one pair is matched at a time with as many Numba (and OpenCV) threads as the worker has
Dask threads (``dask worker --nthreads N``): no oversubscription, and the kernels are warmed on a tiny
pair once per worker process.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from pseudolabel.cluster import Unlocked, check_files_visible, run_on_cluster
from pseudolabel.sgm.batch import SLOW_ENV, EncodedPair, PairTask, compute_pair, encode_pair

__all__ = ["check_inputs_visible", "cluster_pair", "run_tasks_on_cluster", "warm_count"]

# Worker-side state (one per worker process).
_WARMED = {"count": 0}


def check_inputs_visible(client: Any, tasks: Sequence[PairTask], base: str | None = None) -> None:
    """Check that every worker sees the images of the pairs at the client's paths
    (:func:`pseudolabel.cluster.check_files_visible`).

    Raises:
        InputError: naming a worker and the first file it does not see, as an absolute path.
    """
    check_files_visible(client, [path for task in tasks for path in (task.left, task.right)], base)


def _warm_kernels() -> None:
    """Compile (or load from Numba's cache) the kernels on a tiny random pair."""
    from pseudolabel.sgm.matcher import match
    from pseudolabel.sgm.params import SGMParams

    rng = np.random.default_rng(0)
    left = rng.integers(0, 255, (16, 40), dtype=np.uint8)
    match(left, np.roll(left, -2, axis=1), SGMParams(max_disp=8))
    _WARMED["count"] += 1


def cluster_pair(task: PairTask, delay_s: float = 0.0) -> Unlocked[EncodedPair]:
    """The Dask task of one pair: :func:`pseudolabel.sgm.batch.compute_pair` on a worker (run by
    :func:`pseudolabel.cluster.on_worker`), then :func:`~pseudolabel.sgm.batch.encode_pair` after the
    worker's exclusive section (beside the next pair's matching), so the worker compresses and sends the
    pair's journal entry; the kernels are warmed once per worker process.
    ``delay_s`` (the client's :data:`pseudolabel.sgm.batch.SLOW_ENV`, for tests) holds the pair that
    long after matching.

    Raises:
        InputError: as :func:`compute_pair`.
    """
    if not _WARMED["count"]:
        _warm_kernels()
    matched = compute_pair(task)
    if delay_s:
        time.sleep(delay_s)
    # compressed after the worker's exclusive section, while its next pair is matched
    return Unlocked(encode_pair, (task, matched))


def warm_count() -> int:
    """On a worker: how many times this process warmed the kernels (0 or 1)."""
    return int(_WARMED["count"])


def run_tasks_on_cluster(
    client: Any,
    tasks: Sequence[PairTask],
    on_result: Callable[[PairTask, EncodedPair], None],
    done: Mapping[str, Any],
    base: str | None = None,
) -> None:
    """Run ``tasks`` on the cluster; call ``on_result`` in this process once per pair, as pairs finish.

    A pair whose key is already in ``done`` (journaled) is not passed on again. Relative image paths are
    read relative to ``base`` (default: this process's working folder) on the workers. The environment
    variable :data:`pseudolabel.sgm.batch.SLOW_ENV` (seconds) of this process makes each task hold its
    worker that long after matching, for tests.

    Raises:
        InputError: the first failed pair (the pending ones are cancelled), or a pair that killed
        its workers repeatedly.
    """
    base = base if base is not None else os.getcwd()
    delay = float(os.environ.get(SLOW_ENV, "0") or 0)
    by_key = {task.key: dataclasses.replace(task, base=base) for task in tasks}

    def jobs() -> Iterator[tuple[str, tuple[Any, ...]]]:
        for key, task in by_key.items():
            yield key, (task, delay)

    def deliver(key: str, encoded: EncodedPair) -> None:
        if key not in done:
            on_result(by_key[key], encoded)

    run_on_cluster(client, cluster_pair, jobs(), deliver, "sgm")
