"""What ``pseudolabel adapt`` trains on, said before it starts, and ``adapt --labels``.

:func:`describe_selection` is the first line ``adapt`` prints: which confidence map, which tau and how
many proxy pixels that tau selects on the pairs read (for a learnable or predicted tau, at its
starting value). :func:`use_stored_labels` makes the adaptation train on the ``labels`` written by
``pseudolabel labels`` exactly as stored: the proxy becomes the label (NaN = no label), the confidence
1 on labelled pixels and 0 elsewhere, so a fixed tau of :data:`LABELS_TAU` and mask weighting select
exactly the labelled pixels, each weighing 1. No torch here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from pseudolabel.errors import InputError

__all__ = ["LABELS_TAU", "describe_selection", "labels_measure", "selected_fraction", "use_stored_labels"]

#: The fixed tau of ``adapt --labels``: any value in (0, 1) selects exactly the pixels whose confidence is 1.
LABELS_TAU = 0.5


class _Pair(Protocol):
    key: str
    proxy: np.ndarray
    confidence: np.ndarray
    valid: np.ndarray | None


def selected_fraction(pairs: Sequence[_Pair], tau: float) -> tuple[int, int]:
    """``(selected, total)``: proxy pixels (finite, and SGM-valid when read) whose confidence exceeds
    ``tau``, and all pixels of the pairs."""
    selected = total = 0
    for pair in pairs:
        keep = np.isfinite(pair.proxy) & (pair.confidence > tau)
        if pair.valid is not None:
            keep &= pair.valid
        selected += int(keep.sum())
        total += int(pair.proxy.size)
    return selected, total


def describe_selection(pairs: Sequence[_Pair], tau: str | float, tau_init: float, source: str, labels_info: str = "") -> str:
    """The line ``adapt`` prints first: the confidence map, tau and the pixels it selects.

    Args:
        pairs: the pairs as the adaptation reads them.
        tau: the ``--tau`` value (a number, ``learnable`` or ``net``).
        tau_init: the starting value of a learnable or predicted tau.
        source: what the confidence is (``confidence/ccnn`` or ``labels``).
        labels_info: with ``--labels``, how the labels were made (``tau 0.9 on confidence/ccnn``).
    """
    text = str(tau).strip().lower()
    fixed = text not in ("learnable", "net")
    start = float(text) if fixed else tau_init
    selected, total = selected_fraction(pairs, start)
    share = 100.0 * selected / total if total else 0.0
    pixels = f"{selected:,} of {total:,} pixels ({share:.1f}%) of {len(pairs)} pair(s)"
    if labels_info:
        return f"adapt: training on the stored labels ({labels_info}): {pixels}, each weighing 1"
    if fixed:
        return f"adapt: confidence {source}, fixed tau {start:g}: selects {pixels}"
    kind = "learnable tau (trained with the network)" if text == "learnable" else "tau predicted per image by a small network"
    return f"adapt: confidence {source}, {kind} starting at {start:g}: selects {pixels} at the start; the log (OUT.jsonl) follows it"


def labels_measure(proxies: str | os.PathLike[str], keys: Sequence[str]) -> str:
    """The confidence measure the stored ``labels`` of ``keys`` were thresholded from (their ``measure`` attribute).

    Raises:
        InputError: a pair without ``labels``.
    """
    from pseudolabel.store.proxies import open_proxies

    path = Path(proxies)
    with open_proxies(path) as store:
        lacking = [key for key in keys if not store.has(key, "labels")]
        if lacking or not keys:
            example = f" (e.g. {lacking[0]!r})" if lacking else ""
            raise InputError(
                f"--labels: {len(lacking)} of {len(keys)} pair(s){example} have no labels in {path}; "
                f"run `pseudolabel labels --proxies {path} --tau 0.9 --measure ccnn` first"
            )
        return _text(store.h5["pairs"][_group_name(keys[0])]["labels"].attrs.get("measure", "ccnn"))


def use_stored_labels(proxies: str | os.PathLike[str], pairs: Sequence[_Pair]) -> str:
    """Replace each pair's proxy by its stored ``labels`` and its confidence by 1 on labelled pixels, 0 elsewhere.

    Returns:
        How the labels were made (``"tau 0.9 on confidence/ccnn"``), from their attributes.

    Raises:
        InputError: a pair without ``labels`` (run ``pseudolabel labels`` first), or labels of another size.
    """
    from pseudolabel.confidence.labels import describe_target
    from pseudolabel.store.proxies import open_proxies

    path = Path(proxies)
    made: set[str] = set()
    with open_proxies(path) as store:
        lacking = [pair.key for pair in pairs if not store.has(pair.key, "labels")]
        if lacking:
            raise InputError(
                f"--labels: {len(lacking)} of {len(pairs)} pair(s) (e.g. {lacking[0]!r}) have no labels in {path}; "
                f"run `pseudolabel labels --proxies {path} --tau 0.9 --measure ccnn` first"
            )
        for pair in pairs:
            labels = np.asarray(store.read(pair.key, ["labels"])["labels"], dtype=np.float32)
            if labels.shape != pair.proxy.shape:
                raise InputError(
                    f"{path}: pair {pair.key!r}: labels are {labels.shape} but the proxy is {pair.proxy.shape}; rerun `pseudolabel labels`"
                )
            attrs = store.h5["pairs"][_group_name(pair.key)]["labels"].attrs
            measure = _text(attrs.get("measure", "?"))
            if "target_error" in attrs:  # a tau per pair: name the target, not thousands of taus
                made.add(f"tau {describe_target(float(attrs['target_error']))} on confidence/{measure}")
            else:
                made.add(f"tau {float(attrs.get('tau', float('nan'))):g} on confidence/{measure}")
            pair.proxy = labels
            pair.confidence = np.isfinite(labels).astype(np.float32)
            pair.valid = None
    return ", ".join(sorted(made))


def _group_name(key: str) -> str:
    from pseudolabel.store.names import key_to_name

    return key_to_name(key)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
