"""``pseudolabel eval`` against a folder of ground-truth files: predictions matched to ``<key>.pfm/.png`` by key.

The other forms of ``eval`` (a network or stored predictions on pairs whose dataset names their ground
truth) are :func:`pseudolabel.learn.predict.evaluate_pairs`; this module adds the form that
``data/README.md`` documents for unlabelled pairs with separate ground truth: a folder of
``<key>.pfm`` / ``<key>.png`` files (or a native dataset root), looked up with
:func:`pseudolabel.datasets.ground_truth_lookup` as ``confidence eval --gt`` and ``labels --gt`` do.
No torch here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pseudolabel.errors import InputError

__all__ = ["ground_truth_of_keys", "prediction_keys", "score_predictions"]

_PREDICTION_EXTENSIONS = (".pfm", ".png")


def prediction_keys(pred_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """The predictions of a ``predict`` folder by key (file name without extension; ``KEY_color.png`` is not one).

    Raises:
        InputError: not a folder, or no prediction in it.
    """
    folder = Path(pred_dir)
    if not folder.is_dir():
        raise InputError(f"--pred {folder}: no such folder; give the --out folder of `pseudolabel predict`")
    found: dict[str, Path] = {}
    for extension in _PREDICTION_EXTENSIONS:  # .pfm (exact) before .png (1/256 px)
        for path in sorted(folder.rglob(f"*{extension}")):
            key = path.relative_to(folder).with_suffix("").as_posix()
            if not key.endswith("_color") and key not in found:
                found[key] = path
    if not found:
        raise InputError(f"--pred {folder}: no KEY.pfm or KEY.png predictions; run `pseudolabel predict --out {folder}` first")
    return found


def ground_truth_of_keys(gt_dir: str | os.PathLike[str], keys: Sequence[str], gt_scale: float | None) -> dict[str, tuple[Path, float | None]]:
    """:func:`pseudolabel.datasets.ground_truth_lookup`, failing with the keys it looked for when none has ground truth."""
    from pseudolabel.datasets import ground_truth_lookup

    lookup = ground_truth_lookup(Path(gt_dir), keys, gt_scale)
    if not lookup:
        raise InputError(
            f"--gt {gt_dir}: no ground truth for any of the {len(keys)} pairs (looked for e.g. {keys[0]}.pfm or {keys[0]}.png); "
            "name the files <key>.pfm/.png or point --gt at the dataset root"
        )
    return lookup


def score_predictions(
    predictions: Mapping[str, np.ndarray | Path], lookup: Mapping[str, tuple[Path, float | None]]
) -> tuple[list[dict[str, Any]], dict[str, float], list[str]]:
    """Metrics of every prediction that has ground truth in ``lookup``.

    Returns:
        ``(rows, mean, skipped)``: one row per key with ground truth, their mean, and the keys without.
    """
    from pseudolabel.io import read_disparity
    from pseudolabel.metrics import average_metrics, disparity_metrics

    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for key, prediction in predictions.items():
        if key not in lookup:
            skipped.append(key)
            continue
        estimate = read_disparity(prediction) if isinstance(prediction, Path) else prediction
        gt_path, scale = lookup[key]
        ground_truth = read_disparity(gt_path, scale)
        if ground_truth.shape != estimate.shape:
            raise InputError(
                f"{gt_path} is {ground_truth.shape[1]}x{ground_truth.shape[0]} but the prediction of {key} is {estimate.shape[1]}x{estimate.shape[0]}"
            )
        rows.append({"key": key, **disparity_metrics(estimate, ground_truth)})
    return rows, average_metrics(rows), skipped
