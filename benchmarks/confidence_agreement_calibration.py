"""Benchmark (issue 19): does an independent matcher's agreement make the shipped CCNN's calibration transfer better?

Run from the repository root, after ``benchmarks/confidence.py logo`` has prepared its group files::

    python benchmarks/confidence_agreement_calibration.py --work work/confidence/logo \
        --json benchmarks/results/confidence_agreement_calibration.json

The shipped ``isotonic-pair`` calibration moves the isotonic map by how much of the pair SGM's checks
rejected. Where it fails (the KITTI frame under-trusted, FlyingThings3D and the synthetic pairs
over-trusted) that share looks ordinary. A second matcher run on the pair (``--teacher``, one of
:mod:`pseudolabel.confidence.teachers`) is another signal known without ground truth; two ways to use it:

* ``pair covariate``: the isotonic-pair map with a different pair share in place of the rejected one:
  ``dis1`` / ``dis3``, the share of the pixels both matchers answer where they differ by more than 1 /
  3 px; ``nonagree1``, the share of all pixels where they are not within 1 px;
* ``pixel classes``: one map per class of pixel (the matchers within 1 px, further apart, no answer from
  the teacher), fitted on the training pixels of that class (isotonic alone, or isotonic-pair).

Leave one group out as in ``confidence.py logo`` with ``--checkpoints ccnn=...:middlebury2006``: the
maps are fitted on every group but the held-out one and Middlebury 2006 (the network's training
data). Per group: labels at the 1% target (tau per pair; a pair no tau brings there keeps 0%) and at
tau 0.9: ground-truth pixels kept %, bad-3 % (mean over pairs), and measured / expected bad-3 pooled
over the group's labels with ground truth.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from confidence_logo import LOGO_GROUPS, Pair, checkpoint_confidences, labels_at_target, load_pairs

from pseudolabel.confidence.calibration import Calibration, fit_isotonic, fit_pair_calibration
from pseudolabel.confidence.labels import label_statistics, threshold_labels
from pseudolabel.confidence.teachers import teacher_disparities

GROUPS = LOGO_GROUPS
TRAINED_ON = "middlebury2006"
AGREE, DISAGREE, NO_ANSWER = 0, 1, 2


def pixel_classes(pair: Pair, teacher: np.ndarray) -> np.ndarray:
    """``int8`` (H, W): :data:`AGREE` within 1 px of the teacher, :data:`DISAGREE` further, :data:`NO_ANSWER`."""
    with np.errstate(invalid="ignore"):
        difference = np.abs(teacher - pair.disparity)
    classes = np.full(pair.disparity.shape, NO_ANSWER, np.int8)
    classes[np.isfinite(difference) & (difference <= 1.0)] = AGREE
    classes[np.isfinite(difference) & (difference > 1.0)] = DISAGREE
    return classes


def pair_shares(pair: Pair, teacher: np.ndarray) -> dict[str, float]:
    """The pair covariates of the module docstring (and the rejected share, ``invalid``)."""
    both = np.isfinite(teacher) & np.isfinite(pair.disparity)
    difference = np.abs(teacher[both] - pair.disparity[both])
    within = np.zeros(pair.disparity.shape, bool)
    within[both] = difference <= 1.0
    return {
        "invalid": pair.invalid_share,
        "dis1": float((difference > 1.0).mean()) if both.any() else 1.0,
        "dis3": float((difference > 3.0).mean()) if both.any() else 1.0,
        "nonagree1": float(1.0 - within.mean()),
    }


def evaluate(pairs: list[Pair], test: list[int], calibrated: Callable[[int], np.ndarray], target: float, tau: float) -> dict[str, float]:
    """Labels of one held-out group (module docstring)."""
    rows: list[dict[str, float]] = []
    measured, expected = [0.0, 0.0], [0.0, 0.0]
    for index in test:
        pair, values = pairs[index], calibrated(index)
        at_tau = label_statistics(threshold_labels(pair.disparity, values, tau), pair.ground_truth)
        at_target = labels_at_target(pair, values, target)
        rows.append(
            {
                "tau_coverage": at_tau["gt_coverage"],
                "tau_bad3": at_tau["bad3"],
                "target_coverage": at_target["gt_coverage"],
                "target_bad3": at_target["bad3"],
            }
        )
        if at_target["count_gt"]:  # the labels with ground truth: their expected and their measured errors
            expected[0] += at_target["expected_gt"] * at_target["count_gt"]
            expected[1] += at_target["count_gt"]
            measured[0] += at_target["bad3_count"]
            measured[1] += at_target["labelled_with_gt"]
    figures = {name: float(np.nanmean([row[name] for row in rows])) for name in rows[0]}
    figures["measured_over_expected"] = (measured[0] / measured[1]) / (expected[0] / expected[1]) if expected[1] and measured[1] else float("nan")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("work/confidence/logo"), help="group files of confidence.py logo")
    parser.add_argument("--checkpoint", type=Path, default=Path("models/weights/ccnn.pt"))
    parser.add_argument("--teacher", default="sgbm")
    parser.add_argument("--target", type=float, default=0.01)
    parser.add_argument("--tau", type=float, default=0.9)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    pairs = load_pairs({group: args.work / f"{group}.h5" for group in GROUPS}, log=lambda line: None)
    confidence = checkpoint_confidences(args.checkpoint, pairs)
    teachers = [teacher_disparities(pair.images, pair.params, [args.teacher])[args.teacher] for pair in pairs]
    classes = [pixel_classes(pair, teacher) for pair, teacher in zip(pairs, teachers)]
    shares = [pair_shares(pair, teacher) for pair, teacher in zip(pairs, teachers)]

    def covariate_method(name: str) -> Callable[[list[int]], Callable[[int], np.ndarray]]:
        def fit(train: list[int]) -> Callable[[int], np.ndarray]:
            known = [confidence[i][pairs[i].known] for i in train]
            calibration = fit_pair_calibration(known, [pairs[i].correct for i in train], [shares[i][name] for i in train])
            return lambda i: calibration.apply(confidence[i], shares[i][name])

        return fit

    def class_method(with_pair_terms: bool) -> Callable[[list[int]], Callable[[int], np.ndarray]]:
        def fit(train: list[int]) -> Callable[[int], np.ndarray]:
            maps: dict[int, Calibration] = {}
            for kind in (AGREE, DISAGREE, NO_ANSWER):
                picked = [(i, classes[i][pairs[i].known] == kind) for i in train]
                picked = [(i, mask) for i, mask in picked if mask.sum() > 50]
                values = [confidence[i][pairs[i].known][mask] for i, mask in picked]
                correct = [pairs[i].correct[mask] for i, mask in picked]
                if with_pair_terms:
                    maps[kind] = fit_pair_calibration(values, correct, [pairs[i].invalid_share for i, _ in picked])
                else:
                    maps[kind] = fit_isotonic(np.concatenate(values), np.concatenate(correct))

            def apply(i: int) -> np.ndarray:
                result = np.zeros_like(confidence[i])
                for kind, calibration in maps.items():
                    mapped = calibration.apply(confidence[i], pairs[i].invalid_share if with_pair_terms else None)
                    result[classes[i] == kind] = mapped[classes[i] == kind]
                return result

            return apply

        return fit

    methods = {
        "pair covariate: invalid (shipped)": covariate_method("invalid"),
        "pair covariate: dis1": covariate_method("dis1"),
        "pair covariate: dis3": covariate_method("dis3"),
        "pair covariate: nonagree1": covariate_method("nonagree1"),
        "pixel classes: isotonic": class_method(False),
        "pixel classes: isotonic-pair": class_method(True),
    }
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, fit in methods.items():
        results[name] = {}
        for group in GROUPS:
            test = [i for i, pair in enumerate(pairs) if pair.group == group]
            train = [i for i, pair in enumerate(pairs) if pair.group not in (group, TRAINED_ON)]
            results[name][group] = evaluate(pairs, test, fit(train), args.target, args.tau)
        figures = results[name].values()
        ratios = [row["measured_over_expected"] for row in figures]
        inside = sum(bool(np.isfinite(value) and 1 / 1.5 <= value <= 1.5) for value in ratios)
        print(
            f"| {name} | {100 * np.mean([row['target_coverage'] for row in figures]):.1f} | "
            f"{100 * np.nanmean([row['target_bad3'] for row in figures]):.2f} | {inside} of {len(ratios)} | "
            f"{100 * np.mean([row['tau_coverage'] for row in figures]):.1f} | {100 * np.nanmean([row['tau_bad3'] for row in figures]):.2f} | "
            + " / ".join(f"{100 * results[name][group]['target_coverage']:.0f}" for group in GROUPS)
            + " |",
            flush=True,
        )
    group_shares: dict[str, dict[str, float]] = {}
    for group in GROUPS:
        members = [shares[i] for i, pair in enumerate(pairs) if pair.group == group]
        group_shares[group] = {key: float(np.mean([member[key] for member in members])) for key in members[0]}
        print(f"  {group}: " + ", ".join(f"{key} {value:.3f}" for key, value in group_shares[group].items()))
    if args.json:
        payload = {"teacher": args.teacher, "target": args.target, "tau": args.tau, "results": results, "mean_pair_shares": group_shares}
        args.json.write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
