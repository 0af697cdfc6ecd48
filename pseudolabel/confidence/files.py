"""Steps shared by the whole-file calls of :mod:`pseudolabel.confidence` (scoring, labelling, evaluating, training).

Choosing pairs (:func:`selected_keys`), matching them to ground truth (:func:`require_ground_truth`),
editing a proxies file in place in crash-safe batches (:func:`edit_in_batches`, committed every
:data:`COMMIT_SECONDS`: a kill loses at most that much, and a rerun skips what is up to date),
comma-separated names (:func:`split_names`) and means over pairs (:func:`mean_over_pairs`).

Importing this module does not import torch.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from pseudolabel.datasets import ground_truth_lookup
from pseudolabel.errors import InputError
from pseudolabel.interrupts import Interrupted
from pseudolabel.progress import Progress, or_silent
from pseudolabel.selection import select_keys
from pseudolabel.store.journal import edit_proxies
from pseudolabel.store.proxies import ProxyFile, open_proxies

#: Seconds of work between two commits of the edits of :func:`pseudolabel.confidence.scoring.score_proxies` /
#: :func:`pseudolabel.confidence.labelling.label_proxies`
#: (a commit costs a few fsyncs and the changed metadata pages, not a copy of the file).
COMMIT_SECONDS: float = 10.0

Payload = TypeVar("Payload")
Result = TypeVar("Result")


def split_names(text: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated list."""
    return [name.strip() for name in text.split(",") if name.strip()]


def selected_keys(path: str | os.PathLike[str], include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[str]:
    """The finished pairs of a proxies file chosen by the ``include`` / ``exclude`` globs (:func:`select_keys`)."""
    with open_proxies(path, "r") as proxies:
        keys = proxies.keys()
    return select_keys(keys, include, exclude, source=str(path))


def require_ground_truth(gt_dir: str | os.PathLike[str], keys: Sequence[str], gt_scale: float | None) -> dict[str, tuple[Path, float | None]]:
    """:func:`pseudolabel.datasets.ground_truth_lookup` that fails when no key has ground truth."""
    lookup = ground_truth_lookup(Path(gt_dir), keys, gt_scale)
    if not lookup:
        raise InputError(
            f"--gt {gt_dir}: no ground truth for any of the {len(keys)} pairs (e.g. {keys[0]!r}); "
            "name files <key>.pfm/.png or point --gt at the dataset root"
        )
    return lookup


@dataclass(frozen=True)
class PairEdit(Generic[Payload, Result]):
    """One pair's edit of a proxies file in three steps, so that the middle one can run elsewhere.

    ``prepare(proxies, key)`` reads what the pair needs (``None``: the pair is up to date, nothing to
    do); ``compute(*shared, payload)`` works on it without the file (a module-level function: on a Dask
    worker it runs there); ``store(proxies, key, result)`` writes the result. The same three steps run
    in this process without a scheduler: one code path for the task itself.
    """

    prepare: Callable[[ProxyFile, str], Payload | None]
    compute: Callable[..., Result]
    store: Callable[[ProxyFile, str, Result], None]
    shared: tuple[Any, ...] = ()


def edit_in_batches(
    path: str | os.PathLike[str],
    keys: Sequence[str],
    edit: PairEdit[Any, Any],
    label: str,
    progress: Progress | None = None,
    commit_seconds: float | None = None,
    client: Any = None,
) -> None:
    """Run ``edit`` for every key inside crash-safe in-place edits, committed every ``commit_seconds``
    (default :data:`COMMIT_SECONDS`): a kill keeps every committed pair.

    With a Dask ``client`` (:func:`pseudolabel.cluster.connect`), ``edit.compute`` runs on the cluster's
    workers (``edit.shared`` travels to each worker once, :func:`pseudolabel.cluster.share`) while this
    process reads and writes the file; results come back in any order and are committed the same way.
    ``progress`` gets one phase ``label`` of ``len(keys)`` pairs.

    Raises:
        Interrupted: on Ctrl-C, saying how many pairs were committed (the edit in progress is dropped).
        InputError: a pair failed (on the cluster: the pending ones are cancelled; committed pairs are kept).
    """
    commit_seconds = COMMIT_SECONDS if commit_seconds is None else commit_seconds
    progress = or_silent(progress)
    progress.start(label, len(keys))
    session = _EditSession(path, commit_seconds)
    try:
        if client is None:
            for key in keys:
                payload = edit.prepare(session.proxies(), key)
                if payload is not None:
                    edit.store(session.proxies(), key, edit.compute(*edit.shared, payload))
                session.done(1)
                progress.advance(1, key)
        else:
            _edit_on_cluster(session, keys, edit, label, progress, client)
        session.commit()
    except KeyboardInterrupt:
        session.discard()
        raise Interrupted(f"{label} of {session.committed} of {len(keys)} pairs, written to {path} (the other pairs are unchanged)") from None
    except BaseException:
        session.discard()
        raise
    finally:
        progress.finish()


def _edit_on_cluster(session: _EditSession, keys: Sequence[str], edit: PairEdit[Any, Any], label: str, progress: Progress, client: Any) -> None:
    """:func:`edit_in_batches`'s loop with ``edit.compute`` on a Dask cluster."""
    from pseudolabel.cluster import run_on_cluster, share

    shared = [share(client, value) for value in edit.shared]

    def jobs() -> Iterator[tuple[str, tuple[Any, ...]]]:
        for key in keys:
            payload = edit.prepare(session.proxies(), key)
            if payload is None:  # up to date: counted now
                session.done(1)
                progress.advance(1, key)
            else:
                yield key, (payload,)

    def deliver(key: str, result: Any) -> None:
        edit.store(session.proxies(), key, result)
        session.done(1)
        progress.advance(1, key)

    run_on_cluster(client, edit.compute, jobs(), deliver, label.replace(" ", "-"), shared)


class _EditSession:
    """The open crash-safe edit of :func:`edit_in_batches`: opened on first use, committed (closed) once
    ``commit_seconds`` have passed since it opened, reopened by the next use."""

    def __init__(self, path: str | os.PathLike[str], commit_seconds: float) -> None:
        self.path = path
        self.commit_seconds = commit_seconds
        self.committed = 0
        self._pending = 0
        self._stack: contextlib.ExitStack | None = None
        self._file: ProxyFile | None = None
        self._opened = 0.0

    def proxies(self) -> ProxyFile:
        """The file open for editing (opening an edit if none is)."""
        if self._file is None:
            self._stack = contextlib.ExitStack()
            self._file = self._stack.enter_context(edit_proxies(self.path))
            self._opened = time.monotonic()
        return self._file

    def done(self, pairs: int) -> None:
        """Count finished pairs; commit when the edit has been open :attr:`commit_seconds`."""
        self._pending += pairs
        if self._file is not None and time.monotonic() - self._opened > self.commit_seconds:
            self.commit()

    def commit(self) -> None:
        """Commit the open edit (if any): every pair counted so far is kept."""
        if self._stack is not None:
            stack, self._stack, self._file = self._stack, None, None
            stack.close()
        self.committed += self._pending
        self._pending = 0

    def discard(self) -> None:
        """Drop the open edit (if any) and what it wrote."""
        if self._stack is not None:
            stack, self._stack, self._file = self._stack, None, None
            with contextlib.suppress(Exception):
                stack.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)
        self._pending = 0


def mean_over_pairs(values: Iterable[float]) -> float:
    """Mean of the finite values (every pair weighs the same); NaN when there is none."""
    finite = [float(value) for value in values if np.isfinite(value)]
    return float(np.mean(finite)) if finite else float("nan")
