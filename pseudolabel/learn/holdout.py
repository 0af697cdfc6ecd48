"""Frames held back from adaptation, and the agreement of the network with their confident labels.

``pseudolabel adapt --holdout-every k`` keeps every k-th pair (in sorted key order: the k-th, 2k-th,
...) out of training. During the run the network predicts those frames and is scored against their
labels (the proxy disparity where the confidence exceeds :data:`pseudolabel.confidence.labels.DEFAULT_TAU`,
exactly what ``pseudolabel labels`` writes): the percentage of labelled pixels it misses by more than
3 px (``holdout_bad3``) and its mean error on them (``holdout_epe``), means over the frames. No
ground truth is used, so a user sees whether adaptation still helps on frames it did not train on:
the value before the first step (the source network) and its course go to ``OUT.jsonl`` and the
progress status. It tells agreement with SGM's confident pixels, not accuracy: a network that copies
SGM's mistakes there would score well, which is why the labels come from frames it did not see.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from pseudolabel.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from pseudolabel.learn.adaptation_data import AdaptationPair

__all__ = ["HoldoutEvaluator", "label_agreement", "split_holdout"]


def split_holdout(keys: Sequence[str], every: int) -> tuple[list[str], list[str]]:
    """``(training keys, held-back keys)``: every ``every``-th key in sorted order is held back (``0``: none).

    Raises:
        InputError: ``every`` is 1 or negative, or nothing would be left on either side.
    """
    ordered = sorted(keys)
    if not every:
        return ordered, []
    if every < 2:
        raise InputError(f"--holdout-every {every}: give 2 or more (every k-th frame is held back) or 0 for none")
    held = [key for index, key in enumerate(ordered) if (index + 1) % every == 0]
    training = [key for index, key in enumerate(ordered) if (index + 1) % every != 0]
    if not held:
        raise InputError(f"--holdout-every {every}: only {len(ordered)} pair(s), so none is held back; give a smaller k")
    return training, held


def label_agreement(prediction: np.ndarray, labels: np.ndarray) -> tuple[float, float, int]:
    """``(bad-3 %, mean absolute error px, labelled pixels)`` of a (H, W) prediction against (H, W) labels (NaN = none)."""
    known = np.isfinite(labels)
    count = int(known.sum())
    if count == 0:
        return float("nan"), float("nan"), 0
    error = np.abs(np.asarray(prediction, dtype=np.float64)[known] - labels[known])
    error = np.where(np.isfinite(error), error, np.inf)
    finite = error[np.isfinite(error)]
    return 100.0 * float((error > 3.0).mean()), float(finite.mean()) if finite.size else float("nan"), count


class HoldoutEvaluator:
    """``evaluator(network) -> {"holdout_bad3", "holdout_epe", "holdout_labels"}`` on held-back pairs.

    Args:
        pairs: the held-back pairs (:func:`pseudolabel.learn.adaptation_data.load_adaptation_pairs`).
        tau: confidence above which a proxy pixel is a label.
    """

    def __init__(self, pairs: Sequence[AdaptationPair], tau: float | None = None) -> None:
        from pseudolabel.confidence.labels import DEFAULT_TAU, threshold_labels

        self.tau = DEFAULT_TAU if tau is None else float(tau)
        self.pairs = list(pairs)
        self.labels = [threshold_labels(pair.proxy, pair.confidence, self.tau) for pair in self.pairs]
        if not any(np.isfinite(labels).any() for labels in self.labels):
            raise InputError(f"--holdout-every: the held-back pairs have no pixel with confidence above {self.tau}; nothing to compare with")

    def __call__(self, network: nn.Module) -> dict[str, float]:
        import torch

        from pseudolabel.learn.predict import predict_disparity

        was_training = network.training
        network.eval()
        device = next(network.parameters()).device
        bad, epe, labelled = [], [], 0
        with torch.no_grad():
            for pair, labels in zip(self.pairs, self.labels):
                prediction = predict_disparity(network, pair.left, pair.right, device)  # type: ignore[arg-type]  # any stereo module
                pair_bad, pair_epe, count = label_agreement(prediction, labels)
                if count:
                    bad.append(pair_bad)
                    epe.append(pair_epe)
                    labelled += count
        network.train(was_training)
        total = sum(labels.size for labels in self.labels)
        return {
            "holdout_bad3": float(np.mean(bad)) if bad else float("nan"),
            "holdout_epe": float(np.mean(epe)) if epe else float("nan"),
            "holdout_labels": 100.0 * labelled / max(total, 1),
        }
