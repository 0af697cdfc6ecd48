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
* :func:`agreement_targets` (``--labels wild-agree`` / ``wild-soft`` / ``wild-confirm``) -- no ground truth
  either: votes of *teachers*, independent matchers run on the same pair
  (:mod:`pseudolabel.confidence.teachers`), and optionally of the wild labels. A teacher votes *right*
  where its disparity is within ``agree`` px (1) of the proxy, *wrong* where it is more than ``disagree``
  px (3) away, and abstains in between or where it has no disparity. ``rule="hard"``: positive when every
  voter votes right, negative when any votes wrong, NaN otherwise; ``rule="soft"``: the share of the
  non-abstaining votes that say right (NaN without a vote), a soft target of the binary cross-entropy;
  ``rule="confirm"``: the wild labels with their positives kept only where every teacher agrees.

  Measured leave-one-group-out (BENCHMARKS.md, ``### Leave-one-group-out``), none of them ranks clearly
  better than the wild labels: the matchers fail where SGM fails. ``wild-soft`` gives a raw confidence
  that is closer to calibrated.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from pseudolabel.confidence.measures import MEASURES, compute_measures
from pseudolabel.errors import InputError

if TYPE_CHECKING:
    from pseudolabel.confidence.measures import RangeParams

#: A proxy disparity is correct when it is within this many pixels of the ground truth.
GT_THRESHOLD: float = 3.0
#: Defaults of the wild labels (Tosi et al., BMVC 2017): the share ``t`` and the two sets of measures.
WILD_FRACTION: float = 0.3
WILD_POSITIVE: tuple[str, ...] = ("lrc", "uniqueness", "dbl", "apkr", "med", "wmn")
WILD_NEGATIVE: tuple[str, ...] = ("lrc", "uniqueness", "apkr", "wmn")
#: A teacher votes *right* where it is within this many pixels of the proxy ...
AGREE_THRESHOLD: float = 1.0
#: ... and *wrong* where it is farther than this (it abstains in between).
DISAGREE_THRESHOLD: float = 3.0
#: Label sources of ``confidence train --labels`` that need no ground truth, and the rule of the teachers' votes.
TEACHER_LABELS: dict[str, str] = {"wild-agree": "hard", "wild-soft": "soft", "wild-confirm": "confirm"}
#: Rules of :func:`agreement_targets`.
RULES: tuple[str, ...] = ("hard", "soft", "confirm")
#: Every label source of ``confidence train --labels``.
LABEL_SOURCES: tuple[str, ...] = ("gt", "wild", *TEACHER_LABELS)


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
    features: Mapping[str, np.ndarray],
    params: RangeParams,
    positive: Sequence[str],
    negative: Sequence[str],
    computed: MutableMapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Every measure of the two wild sets (``{name: float32 (H, W)}``), computed from the pair's stored features.

    Args:
        features: the pair's stored arrays by HDF5 name (what the measures need).
        params: the pair's :class:`pseudolabel.sgm.params.SGMParams`.
        positive, negative: measure names of the two sets.
        computed: the pair's measures computed before (:func:`~pseudolabel.confidence.measures.compute_measures`),
            reused and given every measure computed here.
    """
    return compute_measures(dict.fromkeys([*positive, *negative]), features, params, computed)


def agreement_targets(
    disparity: np.ndarray,
    teachers: Mapping[str, np.ndarray],
    wild: np.ndarray | None = None,
    rule: str = "hard",
    agree: float = AGREE_THRESHOLD,
    disagree: float = DISAGREE_THRESHOLD,
) -> np.ndarray:
    """Training targets from the votes of independent matchers (and of the wild labels), no ground truth.

    Args:
        disparity: ``float32`` (H, W) proxy disparity, pixels (NaN: no proxy, no target).
        teachers: ``{name: float32 (H, W)}`` disparities of independent matchers, pixels, NaN where a teacher
            has none (:func:`pseudolabel.confidence.teachers.teacher_disparities`); at least one.
        wild: optional ``float32`` (H, W) wild labels (:func:`wild_targets`: 1, 0, NaN), one more voter.
        rule: ``"hard"`` (1 where every voter votes right, 0 where any votes wrong, else NaN), ``"soft"``
            (share of the non-abstaining votes that say right, NaN without a vote) or ``"confirm"`` (needs
            ``wild``: 1 where every voter votes right, 0 where the wild labels say wrong: the teachers only
            confirm the wild positives).
        agree: a teacher votes right where ``|d - teacher| <= agree`` pixels.
        disagree: a teacher votes wrong where ``|d - teacher| > disagree`` pixels (``>= agree``).

    Returns:
        ``float32`` (H, W): targets in [0, 1] (``hard``: 1 or 0), NaN (no target).
    """
    if rule not in RULES:
        raise InputError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    if rule == "confirm" and wild is None:
        raise InputError("rule confirm needs the wild labels: the teachers only confirm their positives")
    if not 0.0 <= agree <= disagree:
        raise InputError(f"the agreement threshold ({agree} px) must be in [0, the disagreement threshold ({disagree} px)]")
    if not teachers:
        raise InputError("agreement targets need at least one teacher disparity")
    disparity = np.asarray(disparity, dtype=np.float32)
    for name, values in [*teachers.items(), *([("wild labels", wild)] if wild is not None else [])]:
        if np.shape(values) != disparity.shape:
            raise InputError(f"{name} of shape {np.shape(values)} does not match the proxy disparity {disparity.shape}")
    right_votes = np.zeros(disparity.shape, dtype=np.int32)
    wrong_votes = np.zeros(disparity.shape, dtype=np.int32)
    voters = len(teachers) + (wild is not None)
    with np.errstate(invalid="ignore"):
        for values in teachers.values():
            difference = np.abs(disparity - np.asarray(values, dtype=np.float32))
            right_votes += difference <= agree
            wrong_votes += difference > disagree
        if wild is not None:
            right_votes += wild == 1.0
            wrong_votes += wild == 0.0
    targets = np.full(disparity.shape, np.nan, dtype=np.float32)
    if rule == "hard":
        targets[wrong_votes > 0] = 0.0
        targets[right_votes == voters] = 1.0
    elif rule == "confirm":
        targets[wild == 0.0] = 0.0
        targets[right_votes == voters] = 1.0
    else:
        votes = right_votes + wrong_votes
        voted = votes > 0
        targets[voted] = right_votes[voted] / votes[voted]
    targets[~np.isfinite(disparity)] = np.nan
    return targets
