"""Training targets of a confidence network: which proxy disparities count as correct (1) or wrong (0).

Two sources, both numpy only (never torch):

* :func:`ground_truth_targets` -- 1 where ``|d - gt| <= 3`` px, 0 where it is larger, NaN (ignored)
  where the ground truth is unknown;
* :func:`wild_targets` (Tosi et al., BMVC 2017, "Learning confidence measures in the wild") -- no
  ground truth: a pixel is *positive* when, for every measure of a positive set, it is in that image's
  top fraction ``t`` (continuous measures) or passes the test (measures with a pass threshold: LRC,
  uniqueness, DBL, MED); *negative* when, for every measure of a negative set, it is in the bottom
  fraction ``t`` or fails the test; NaN otherwise.

  The negatives fail LRC and uniqueness: they are pixels that SGM invalidated and then filled from
  their neighbours, so their disparity looks as smooth as a matched one. A network trained on these
  labels must read the measures (:data:`pseudolabel.confidence.measures.CCNN_INPUTS`), not the
  disparity alone, or it learns nothing but the share of positives (about 90% on a KITTI drive).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from pseudolabel.confidence.measures import MEASURES, compute_measure
from pseudolabel.errors import InputError

if TYPE_CHECKING:
    from pseudolabel.confidence.measures import RangeParams

#: A proxy disparity is correct when it is within this many pixels of the ground truth.
GT_THRESHOLD: float = 3.0
#: Defaults of the wild labels (Tosi et al., BMVC 2017): the share ``t`` and the two sets of measures.
WILD_FRACTION: float = 0.3
WILD_POSITIVE: tuple[str, ...] = ("lrc", "uniqueness", "dbl", "apkr", "med", "wmn")
WILD_NEGATIVE: tuple[str, ...] = ("lrc", "uniqueness", "apkr", "wmn")


def ground_truth_targets(disparity: np.ndarray, ground_truth: np.ndarray, threshold: float = GT_THRESHOLD) -> np.ndarray:
    """Training targets from ground truth.

    Args:
        disparity: ``float32`` (H, W) proxy disparity, pixels.
        ground_truth: ``float32`` (H, W), pixels, NaN (or ``<= 0``) where unknown.
        threshold: largest error of a correct disparity, pixels.

    Returns:
        ``float32`` (H, W): 1 (correct, ``|d - gt| <= threshold``), 0 (wrong), NaN (unknown).
    """
    if disparity.shape != ground_truth.shape:
        raise InputError(f"ground truth of shape {ground_truth.shape} does not match the proxy disparity {disparity.shape}")
    known = np.isfinite(ground_truth) & (ground_truth > 0)
    with np.errstate(invalid="ignore"):
        correct = np.abs(disparity - ground_truth) <= threshold
    return np.where(known, correct.astype(np.float32), np.nan).astype(np.float32)


def wild_targets(
    measures: Mapping[str, np.ndarray],
    fraction: float = WILD_FRACTION,
    positive: Sequence[str] = WILD_POSITIVE,
    negative: Sequence[str] = WILD_NEGATIVE,
) -> np.ndarray:
    """Training targets from the agreement of conventional measures (Tosi et al., BMVC 2017).

    Args:
        measures: ``{name: float32 (H, W) confidence in [0, 1]}`` holding every name of both sets.
        fraction: ``t`` in (0, 1): top / bottom share of each continuous measure (per image).
        positive, negative: measure names of the positive and negative sets.

    Returns:
        ``float32`` (H, W): 1 (positive), 0 (negative), NaN (neither).
    """
    if not 0.0 < fraction < 1.0:
        raise InputError(f"--wild-fraction must be in (0, 1), got {fraction}")
    shape = next(iter(measures.values())).shape
    is_positive = np.ones(shape, dtype=bool)
    is_negative = np.ones(shape, dtype=bool)
    for names, target, top in ((positive, is_positive, True), (negative, is_negative, False)):
        for name in names:
            if name not in MEASURES:
                raise InputError(f"unknown measure {name!r} in the wild label sets; choose from {', '.join(MEASURES)}")
            values = measures[name]
            threshold = MEASURES[name].pass_threshold
            if threshold is not None:
                target &= (values >= threshold) if top else (values < threshold)
            elif top:
                target &= values >= np.quantile(values, 1.0 - fraction)
            else:
                target &= values <= np.quantile(values, fraction)
    targets = np.full(shape, np.nan, dtype=np.float32)
    targets[is_negative] = 0.0
    targets[is_positive] = 1.0
    return targets


def measures_for_wild(
    features: Mapping[str, np.ndarray], params: RangeParams, positive: Sequence[str], negative: Sequence[str]
) -> dict[str, np.ndarray]:
    """Every measure of the two wild sets (``{name: float32 (H, W)}``), computed from the pair's stored features.

    Args:
        features: the pair's stored arrays by HDF5 name (what the measures need).
        params: the pair's :class:`pseudolabel.sgm.params.SGMParams`.
        positive, negative: measure names of the two sets.
    """
    names = list(dict.fromkeys([*positive, *negative]))
    return {name: compute_measure(name, features, params) for name in names}
