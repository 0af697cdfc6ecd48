"""Steps shared by the whole-file calls of :mod:`pseudolabel.confidence` (scoring, labelling, evaluating, training).

Choosing pairs (:func:`selected_keys`), matching them to ground truth (:func:`require_ground_truth`),
editing a proxies file in place in crash-safe batches (:func:`edit_in_batches`, committed every
:data:`COMMIT_SECONDS`: a kill loses at most that much, and a rerun skips what is up to date),
comma-separated names (:func:`split_names`) and means over pairs (:func:`mean_over_pairs`).

Importing this module does not import torch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

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


def edit_in_batches(
    path: str | os.PathLike[str],
    keys: Sequence[str],
    process: Callable[[ProxyFile, str], None],
    label: str,
    progress: Progress | None = None,
    commit_seconds: float | None = None,
) -> None:
    """Run ``process(proxies, key)`` for every key inside crash-safe in-place edits, committed every
    ``commit_seconds`` (default :data:`COMMIT_SECONDS`): a kill keeps every committed pair.

    ``progress`` gets one phase ``label`` of ``len(keys)`` pairs.

    Raises:
        Interrupted: on Ctrl-C, saying how many pairs were committed (the edit in progress is dropped).
    """
    commit_seconds = COMMIT_SECONDS if commit_seconds is None else commit_seconds
    progress = or_silent(progress)
    progress.start(label, len(keys))
    committed = 0
    try:
        position = 0
        while position < len(keys):
            with edit_proxies(path) as proxies:
                started = time.monotonic()
                while position < len(keys):
                    process(proxies, keys[position])
                    position += 1
                    progress.advance(1, keys[position - 1])
                    if time.monotonic() - started > commit_seconds:
                        break
            committed = position
    except KeyboardInterrupt:
        raise Interrupted(f"{label} of {committed} of {len(keys)} pairs, written to {path} (the other pairs are unchanged)") from None
    finally:
        progress.finish()


def mean_over_pairs(values: Iterable[float]) -> float:
    """Mean of the finite values (every pair weighs the same); NaN when there is none."""
    finite = [float(value) for value in values if np.isfinite(value)]
    return float(np.mean(finite)) if finite else float("nan")
