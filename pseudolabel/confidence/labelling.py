"""``pseudolabel labels`` on a whole proxies file: :func:`label_proxies` and its table (:func:`format_label_table`).

The proxy disparity where a stored confidence exceeds ``tau`` (or, with a target error, a tau chosen
per pair) becomes the pair's ``labels``; the file is edited in place and crash-safely
(:func:`pseudolabel.confidence.files.edit_in_batches`). Ground truth (``gt_dir``) is matched to pairs by
key (:func:`pseudolabel.datasets.ground_truth_lookup`) and only measures the labels.

Importing this module does not import torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pseudolabel import __version__
from pseudolabel.cluster import connected
from pseudolabel.confidence.files import PairEdit, edit_in_batches, mean_over_pairs, require_ground_truth, selected_keys
from pseudolabel.confidence.labels import (
    DEFAULT_TAU,
    TargetUnreachable,
    describe_target,
    expected_error,
    label_statistics,
    tau_for_target_error,
    threshold_labels,
)
from pseudolabel.datasets import read_ground_truth
from pseudolabel.errors import InputError
from pseudolabel.outputs import check_editable_file
from pseudolabel.progress import Progress
from pseudolabel.store.names import key_to_name
from pseudolabel.store.proxies import ProxyFile, open_proxies

#: One row of :func:`label_proxies`: the key and its statistics (``density``; with ground truth also
#: ``gt_coverage``, ``bad1``, ``bad2``, ``bad3``, ``labelled_with_gt``, see
#: :func:`pseudolabel.confidence.labels.label_statistics`), shares in [0, 1].
LabelRow = tuple[str, dict[str, float]]


@dataclass
class LabelPayload:
    """What :func:`label_pair` needs of one pair: ``disparity`` and ``confidence`` ((H, W) ``float32``;
    disparity in pixels of the left view, NaN where unknown) and the pair's ``tau``."""

    disparity: np.ndarray
    confidence: np.ndarray
    tau: float


@dataclass
class LabelledPair:
    """:func:`label_pair`'s result: ``labels`` ((H, W) ``float32`` pixels, NaN where not labelled), the
    ``expected_error`` of the labels (mean ``1 - c``, NaN without labels) and their ``count``."""

    labels: np.ndarray
    expected_error: float
    count: int


def label_pair(payload: LabelPayload) -> LabelledPair:
    """Threshold one pair's confidence (in this process or on a Dask worker: the same function); a NaN
    ``tau`` (a pair on which no tau reaches the target error) labels nothing."""
    if not np.isfinite(payload.tau):
        return LabelledPair(np.full(payload.disparity.shape, np.nan, np.float32), float("nan"), 0)
    labels = threshold_labels(payload.disparity, payload.confidence, payload.tau)
    expected, count = expected_error(payload.confidence, payload.tau, np.isfinite(payload.disparity))
    return LabelledPair(labels, float(expected), int(count))


def label_proxies(
    path: str | os.PathLike[str],
    tau: float = DEFAULT_TAU,
    measure: str = "ccnn",
    keys: Sequence[str] = (),
    exclude: Sequence[str] = (),
    gt_dir: str | os.PathLike[str] | None = None,
    gt_scale: float | None = None,
    progress: Progress | None = None,
    target_error: float | None = None,
    scheduler: str | None = None,
) -> list[LabelRow]:
    """Write ``labels`` (``float32`` (H, W) proxy disparity in pixels where ``confidence/<measure> > tau``,
    NaN elsewhere; attributes ``tau``, ``measure``) for every selected pair of a proxies file.

    Args:
        path: proxies file holding ``confidence/<measure>`` for every selected pair; edited crash-safely.
        tau: threshold in [0, 1).
        measure: the stored confidence to threshold.
        keys, exclude: globs choosing pairs.
        gt_dir, gt_scale: optional ground truth (:func:`pseudolabel.datasets.ground_truth_lookup`) for
            the accuracy of the labels.
        progress: told of each labelled pair (phase ``"labels"``).
        target_error: instead of ``tau``, choose per pair the smallest tau whose labels have an expected
            error rate (mean of ``1 - c`` over them, :func:`pseudolabel.confidence.labels.tau_for_target_error`)
            of at most this, in (0, 1); meant for a calibrated confidence. A pair on which no tau reaches
            the target (even its most confident pixels are expected to be wrong more often) gets no
            labels: its ``labels`` are all NaN, with ``tau`` NaN and ``target_reached`` 0 (1 on the
            others); its row's ``tau`` is NaN. Every pair is checked before anything is written: a
            target that no pair reaches leaves the file untouched.

    Every ``labels`` dataset also gets ``expected_error`` (mean ``1 - c`` of its labels, NaN without
    labels) and ``calibrated`` (the confidence's own attribute, ``"none"`` without), plus
    ``target_error`` when given. The file's root gets ``labels_measure``, ``labels_target_error``
    (NaN for a fixed tau) and ``labels_expected_error`` (over every label of the run).

    ``scheduler``: the address of a running ``dask.distributed`` scheduler: the thresholding runs on its
    workers while this process reads and writes the file (it is cheap next to the reading and writing,
    so this only pays when the workers' cores are what this machine lacks); ``None``: in this process.

    Returns:
        One :data:`LabelRow` per pair, in the order of the file (print with :func:`format_label_table`);
        its statistics also hold ``tau``, ``expected_error`` and ``calibrated`` (1.0 or 0.0).
    """
    if target_error is None and not 0.0 <= tau < 1.0:
        raise InputError(f"--tau must be in [0, 1), got {tau}")
    check_editable_file(path, "--proxies")
    if target_error is not None and not 0.0 < target_error < 1.0:
        raise InputError(f"--target-error must be in (0, 1) (e.g. 1% or 0.01), got {target_error}")
    chosen = selected_keys(path, keys, exclude)
    dataset = f"confidence/{measure}"
    with open_proxies(path, "r") as proxies:
        lacking = [key for key in chosen if not proxies.has(key, dataset)]
        if lacking:
            stored = sorted(set().union(*(proxies.list_confidences(key) for key in chosen)))
            listed = f"; stored measures: {', '.join(stored)}" if stored else ""
            raise InputError(
                f"--measure {measure}: {len(lacking)} of {len(chosen)} pairs (e.g. {lacking[0]!r}) have no {dataset}{listed}; "
                f"choose one of those, or run `pseudolabel confidence score --proxies {path}` first"
            )
        calibration = {key: str(_dataset_attrs(proxies, key, dataset).get("calibrated", "none")) for key in chosen}
        taus = {key: float(tau) for key in chosen}
        if target_error is not None:
            lowest: dict[str, float] = {}  # the pairs no tau brings to the target: the lowest expected error there
            for key in chosen:
                arrays = proxies.read(key, ["disparity", dataset])
                try:
                    taus[key] = tau_for_target_error(arrays[dataset], target_error, np.isfinite(arrays["disparity"]))[0]
                except TargetUnreachable as error:
                    taus[key] = float("nan")
                    lowest[key] = error.lowest_expected_error
            if chosen and len(lowest) == len(chosen):
                reachable = {key: value for key, value in lowest.items() if np.isfinite(value)}
                if not reachable:
                    raise InputError(f"--target-error {100 * target_error:g}%: no pixel of any pair can be labelled (no finite disparity)")
                best = min(reachable, key=reachable.__getitem__)
                raise InputError(
                    f"--target-error {100 * target_error:g}%: no tau reaches it on any pair; the lowest expected error of any tau is "
                    f"{100 * reachable[best]:.3g}% (pair {best!r}): choose a larger --target-error or a --tau"
                )
    lookup = require_ground_truth(gt_dir, chosen, gt_scale) if gt_dir is not None else {}
    rows: dict[str, LabelRow] = {}
    totals = [0.0, 0]  # summed expected error and count of every label of the run

    def prepare(proxies: ProxyFile, key: str) -> LabelPayload:
        arrays = proxies.read(key, ["disparity", dataset])
        return LabelPayload(arrays["disparity"], arrays[dataset], taus[key])

    def store(proxies: ProxyFile, key: str, labelled: LabelledPair) -> None:
        attrs: dict[str, Any] = {
            "tau": taus[key],
            "measure": measure,
            "expected_error": labelled.expected_error,
            "calibrated": calibration[key],
            "created_by": f"pseudolabel {__version__}",
        }
        if target_error is not None:
            attrs["target_error"] = float(target_error)
            attrs["target_reached"] = int(np.isfinite(taus[key]))
        proxies.write(key, "labels", labelled.labels, attrs=attrs)
        if labelled.count:
            totals[0] += labelled.expected_error * labelled.count
            totals[1] += labelled.count
        extra = {"tau": taus[key], "expected_error": labelled.expected_error, "calibrated": float(calibration[key] != "none")}
        if key in lookup:
            gt_path, scale = lookup[key]
            ground_truth = read_ground_truth(gt_path, scale, labelled.labels.shape, key)
            rows[key] = (key, {**label_statistics(labelled.labels, ground_truth), **extra})
        else:
            rows[key] = (key, {"density": float(np.isfinite(labelled.labels).mean()), **extra})
        if proxies.shard_size is None:  # a sharded index is not edited: each labels dataset carries the same attributes
            proxies.h5.attrs["labels_measure"] = measure
            proxies.h5.attrs["labels_target_error"] = float("nan") if target_error is None else float(target_error)
            proxies.h5.attrs["labels_expected_error"] = totals[0] / totals[1] if totals[1] else float("nan")

    with connected(scheduler) as client:
        edit_in_batches(path, chosen, PairEdit(prepare, label_pair, store), "labels", progress, client=client)
    return [rows[key] for key in chosen if key in rows]


def _dataset_attrs(proxies: ProxyFile, key: str, dataset: str) -> dict[str, Any]:
    """Attributes of one dataset of a pair, bytes decoded."""
    stored = proxies.h5["pairs"][key_to_name(key)][dataset].attrs
    return {name: (value.decode() if isinstance(value, bytes) else value) for name, value in stored.items()}


def format_label_table(rows: Sequence[LabelRow], tau: float, measure: str, target_error: float | None = None) -> str:
    """Per-pair density (and, with ground truth, coverage of the ground truth and bad-1/2/3) in %, and their means.

    Rows holding ``tau`` / ``expected_error`` (:func:`label_proxies`) also show the pair's tau and the
    expected error rate of its labels (mean ``1 - c``); the header names the ``target_error`` when given.
    """
    with_gt = any("bad3" in stats for _, stats in rows)
    with_expected = any("expected_error" in stats for _, stats in rows)
    header = f"{'pair':<40}{'density %':>10}" + (f"{'gt kept %':>10}{'bad1 %':>8}{'bad2 %':>8}{'bad3 %':>8}" if with_gt else "")
    if with_expected:
        header += f"{'tau':>9}{'expected err %':>16}"
    if target_error is not None:
        title = f"labels: confidence/{measure}, tau {describe_target(target_error)}"
    else:
        title = f"labels: confidence/{measure} > {tau}"
    lines = [title]
    if with_expected and any(stats.get("calibrated", 1.0) == 0.0 for _, stats in rows):
        lines.append(f"note: confidence/{measure} is not calibrated; the expected error is its raw belief, not a measured rate")
    unreached = [key for key, stats in rows if target_error is not None and not np.isfinite(stats.get("tau", 0.0))]
    if unreached:
        lines.append(f"note: on {len(unreached)} of {len(rows)} pairs (e.g. {unreached[0]!r}) no tau reaches the target: they got no labels (tau -)")
    lines.append(header)

    def number(value: float, width: int, digits: int = 2, scale: float = 100.0) -> str:
        """``scale * value`` right-aligned in ``width`` columns, ``-`` where it is not finite (no labels, no tau)."""
        return f"{scale * value:>{width}.{digits}f}" if np.isfinite(value) else f"{'-':>{width}}"

    def expected_cells(stats: Mapping[str, float]) -> str:
        if not with_expected:
            return ""
        return number(stats.get("tau", float("nan")), 9, 4, 1.0) + number(stats.get("expected_error", float("nan")), 16)

    for key, stats in rows:
        line = f"{key:<40}{100 * stats['density']:>10.2f}"
        if with_gt:
            if "bad3" in stats:
                line += number(stats["gt_coverage"], 10) + "".join(number(stats[name], 8) for name in ("bad1", "bad2", "bad3"))
            else:
                line += f"{'-':>10}{'-':>8}{'-':>8}{'-':>8}"
        lines.append(line + expected_cells(stats))
    line = f"{'mean':<40}{100 * mean_over_pairs(s['density'] for _, s in rows):>10.2f}"
    if with_gt:
        scored = [s for _, s in rows if "bad3" in s]
        columns = (("gt_coverage", 10), ("bad1", 8), ("bad2", 8), ("bad3", 8))
        line += "".join(f"{100 * mean_over_pairs(s[k] for s in scored):>{w}.2f}" for k, w in columns)
    if with_expected:
        line += f"{mean_over_pairs(s.get('tau', float('nan')) for _, s in rows):>9.4f}"
        line += f"{100 * mean_over_pairs(s.get('expected_error', float('nan')) for _, s in rows):>16.2f}"
    lines.append(line)
    return "\n".join(lines)
