"""How right are the labels that need no ground truth? (``python benchmarks/confidence_teachers.py``)

On the leave-one-group-out proxies of ``benchmarks/confidence.py logo`` (``--work``, written by it), for every
label source without ground truth: the hard labels checked against the ground truth, pooled per group and
averaged over the groups:

* positives: share of the ground-truth pixels labelled positive, and bad-3 % of those positives;
* negatives: share of the ground-truth pixels labelled negative, and % of those that are really wrong;
* recall: % of SGM's wrong pixels (``|d - gt| > 3``) labelled negative, all of them and those that passed
  SGM's own checks (``valid``: left-right and uniqueness), which the wild labels never call negative.

Then the teachers' votes used directly as a confidence (which needs the matchers at scoring time):
``(vote + apkr) / 2`` for StereoSGBM and ``(3 votes + apkr) / 4`` for StereoSGBM, StereoBM and SGM-AD,
through the same leave-one-group-out evaluation (isotonic calibration on the other groups) as the measures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from confidence import LOGO_GROUPS
from confidence_logo import Pair, evaluate_method, format_logo, load_pairs

TEACHERS = ("sgbm", "bm", "sgm-ad")


def label_sets(pair: Pair, votes: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{label source: (positive, negative)}`` bool (H, W) masks of one pair."""
    from pseudolabel.confidence.targets import agreement_targets, wild_targets

    wild = wild_targets(pair.measures)
    sets = {"wild": (wild == 1, wild == 0)}
    for name, teachers, with_wild, rule in (
        ("wild-agree (sgbm)", ("sgbm",), True, "hard"),
        ("wild-agree (sgbm, bm, sgm-ad)", TEACHERS, True, "hard"),
        ("wild-confirm (sgbm)", ("sgbm",), True, "confirm"),
        ("agree (sgbm)", ("sgbm",), False, "hard"),
        ("agree (bm)", ("bm",), False, "hard"),
        ("agree (sgm-ad)", ("sgm-ad",), False, "hard"),
    ):
        targets = agreement_targets(pair.disparity, {t: votes[t] for t in teachers}, wild if with_wild else None, rule)
        sets[name] = (targets == 1, targets == 0)
    return sets


def main(argv: list[str] | None = None) -> None:
    from pseudolabel.confidence.teachers import teacher_disparities
    from pseudolabel.store.proxies import open_proxies

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("work/confidence/logo"), help="The proxies of `confidence.py logo`.")
    args = parser.parse_args(argv)
    files = {group: args.work / f"{group}.h5" for group in LOGO_GROUPS if (args.work / f"{group}.h5").is_file()}
    if not files:
        raise SystemExit(f"{args.work}: no proxies; run `python benchmarks/confidence.py logo` first")
    pairs = load_pairs(files, log=lambda line: None)
    sums: dict[str, dict[str, np.ndarray]] = {}
    scores: dict[str, dict[str, np.ndarray]] = {}
    for pair in pairs:
        votes = teacher_disparities(pair.images, pair.params, TEACHERS)
        with open_proxies(files[pair.group], "r") as proxies:
            valid = proxies.read(pair.key, ["valid"])["valid"]
        correct = np.zeros_like(pair.known)
        correct[pair.known] = pair.correct
        wrong = pair.known & ~correct
        for name, (positive, negative) in label_sets(pair, votes).items():
            row = sums.setdefault(name, {}).setdefault(pair.group, np.zeros(7))
            row += [
                (positive & pair.known).sum(),
                (positive & wrong).sum(),
                (negative & pair.known).sum(),
                (negative & wrong).sum(),
                pair.known.sum(),
                (wrong & valid).sum(),
                (negative & wrong & valid).sum(),
            ]
            row_wrong = sums[name].setdefault(pair.group + "/wrong", np.zeros(1))
            row_wrong += wrong.sum()
        with np.errstate(invalid="ignore"):
            agree = {t: (np.abs(pair.disparity - votes[t]) <= 1).astype(np.float32) for t in TEACHERS}
        apkr = pair.measures["apkr"]
        scores[pair.key] = {"apkr": apkr, "sgbm vote + apkr": (agree["sgbm"] + apkr) / 2, "3 votes + apkr": (sum(agree.values()) + apkr) / 4}
    groups = sorted(files)
    print(f"Label quality, mean over the {len(groups)} groups ({', '.join(groups)}); % of the ground-truth pixels unless said.\n")
    print(
        "| labels | positive | bad-3 of positives | negative | wrong among negatives | wrong pixels labelled negative | of them passing SGM's checks |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, per_group in sums.items():
        figures = []
        for group in groups:
            positive, positive_wrong, negative, negative_wrong, known, wrong_valid, negative_wrong_valid = per_group[group]
            wrong = per_group[group + "/wrong"][0]
            figures.append(
                [
                    positive / known,
                    positive_wrong / max(positive, 1),
                    negative / known,
                    negative_wrong / max(negative, 1),
                    negative_wrong / max(wrong, 1),
                    negative_wrong_valid / max(wrong_valid, 1),
                ]
            )
        mean = 100 * np.mean(figures, axis=0)
        print(f"| {name} | " + " | ".join(f"{value:.1f}" if i != 1 else f"{value:.2f}" for i, value in enumerate(mean)) + " |")
    results: dict[str, dict[str, dict[str, float]]] = {}
    for group in groups:
        train = [pair for pair in pairs if pair.group != group]
        test = [pair for pair in pairs if pair.group == group]
        for name in scores[pairs[0].key]:
            results.setdefault(name, {})[group] = evaluate_method(
                train, [scores[pair.key][name] for pair in train], test, [scores[pair.key][name] for pair in test], 0.9, 0.01
            )
    print("\nThe votes as a confidence (leave-one-group-out, as `confidence.py logo`):\n")
    print(format_logo(results, 0.9, 0.01, []))


if __name__ == "__main__":
    main()
