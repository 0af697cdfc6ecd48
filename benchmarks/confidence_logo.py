"""Leave-one-group-out evaluation of confidence measures and networks (``benchmarks/confidence.py logo``).

For every group of the manifest (and optionally a group of synthetic pairs with exact ground truth):
train on every other group, evaluate on the group left out. Methods:

* every conventional measure (no training);
* CCNN and LFN (the network that reads the image), each trained with ground-truth labels (``gt``) and
  without any ground truth: ``wild`` labels of Tosi et al., ``wildagree`` / ``wildsoft`` (the wild labels
  and independent matchers vote, hard or soft: ``--labels wild-agree`` / ``wild-soft`` of ``confidence
  train``), ``agree`` / ``agreesoft`` (the matchers alone); the matchers are ``--teachers``. Short
  trainings set by ``--epochs`` / ``--steps-per-epoch``. A network name ending in ``+test`` (e.g.
  ``ccnn-wild+test``) trains on the held-out group's pairs too and one ending in ``@test`` on them alone,
  with labels that need no ground truth: the "user's own footage" case of the labels without ground truth
  (the calibration still comes from the other groups only).

Every method, measures included, gets an isotonic calibration fitted on the training groups' pixels with
ground truth (:func:`pseudolabel.confidence.calibration.fit_isotonic`; for the wild networks this is
the one place where ground truth enters: the calibration a shipped wild model would carry). On the
group left out, per pair and then averaged over pairs: AUC of the bad-3 sparsification curve (of the
raw confidence; isotonic calibration keeps the ranking), its ratio to the optimal AUC; pooled over the
group's pixels: ECE (20 equal-width bins) of the raw and of the calibrated confidence; labels of the
calibrated confidence at the default tau and at a target expected error (``--target-error``, tau per
pair): share of the ground-truth pixels labelled, bad-3 of the labels, and the expected error the
``labels`` command would print (mean ``1 - c`` of the labels). A pair on which no tau reaches the target
gets no labels, as from ``labels``: it counts as 0% kept (``*target_refused``: how many; until
2026-12-01 such pairs were left out of the means).

Ground truth: every pixel with known ground truth (no occlusion mask), as ``confidence eval`` does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FEATURES = ("disparity", "disparity_right", "valid", "cost_best", "cost_second", "cost_second_local", "cost_mean")
#: Groups of the leave-one-group-out evaluation (manifest groups, then the synthetic pairs).
LOGO_GROUPS = ("middlebury2006", "middlebury2001", "middlebury-v2", "middlebury2014", "kitti2012", "sceneflow", "synthetic")
SYNTHETIC = "synthetic"
#: The synthetic pairs of the group ``synthetic`` (and of ``confidence.py prepare --synthetic``): size, range, seed.
SYNTHETIC_SIZE = (384, 256)
SYNTHETIC_MAX_DISP = 60.0
SYNTHETIC_SEED = 19


@dataclass
class Pair:
    """Everything one pair contributes, computed once."""

    key: str
    group: str
    disparity: np.ndarray
    ground_truth: np.ndarray
    measures: dict[str, np.ndarray]
    images: dict[str, np.ndarray]
    params: Any
    teachers: dict[str, np.ndarray] = field(default_factory=dict)  # name -> float32 (H, W), filled on demand
    invalid_share: float = 0.0  # share of the pixels SGM's checks rejected: a difficulty known without ground truth
    correct: np.ndarray = field(init=False)  # bool (N,) over known
    known: np.ndarray = field(init=False)  # bool (H, W)

    def __post_init__(self) -> None:
        self.known = np.isfinite(self.ground_truth) & (self.ground_truth > 0)
        with np.errstate(invalid="ignore"):
            self.correct = np.abs(self.disparity[self.known] - self.ground_truth[self.known]) <= 3.0


def prepare_groups(data: Path, work: Path, groups: Sequence[str], synthetic: int, log: Callable[[str], None] = print) -> dict[str, Path]:
    """One proxies file per group (``work/<group>.h5``, SGM defaults, ``max_disp`` from the manifest);
    finished pairs are kept. ``synthetic`` > 0 adds that many synthetic pairs as the group ``synthetic``."""
    from pseudolabel.io import read_image
    from pseudolabel.sgm.matcher import match
    from pseudolabel.sgm.params import SGMParams
    from pseudolabel.store.journal import create_or_open_proxies
    from pseudolabel.store.layout import pair_attributes, result_arrays

    work.mkdir(parents=True, exist_ok=True)
    scenes = json.loads((data / "manifest.json").read_text())["scenes"]
    entries = [
        (
            scene["group"],
            scene["id"],
            data / scene["left"],
            data / scene["right"],
            data / scene["gt_left"],
            float(scene["gt_scale"]),
            int(scene["max_disp"]),
        )
        for scene in scenes
        if scene["group"] in groups
    ]
    if synthetic > 0 and SYNTHETIC in groups:
        from pseudolabel.synth.config import SynthConfig
        from pseudolabel.synth.files import write_synth_dataset

        config = SynthConfig(width=SYNTHETIC_SIZE[0], height=SYNTHETIC_SIZE[1], max_disp=SYNTHETIC_MAX_DISP)
        folder = work / "synthetic_pairs"
        write_synth_dataset(folder, config, synthetic, seed=SYNTHETIC_SEED)
        for index in range(synthetic):
            stem = f"{index:06d}"
            entries.append(
                (
                    SYNTHETIC,
                    f"synth-{stem}",
                    folder / "left" / f"{stem}.png",
                    folder / "right" / f"{stem}.png",
                    folder / "disp_left" / f"{stem}.pfm",
                    1.0,
                    64,
                )
            )
    base = SGMParams()
    files: dict[str, Path] = {}
    for group in groups:
        path = work / f"{group}.h5"
        files[group] = path
        with create_or_open_proxies(path, base) as proxies:
            for entry_group, key, left_path, right_path, gt_path, gt_scale, max_disp in entries:
                if entry_group != group or key in proxies:
                    continue
                params = base.replace(max_disp=max_disp)
                left, right = read_image(left_path), read_image(right_path)
                started = time.perf_counter()
                result = match(left, right, params)
                seconds = time.perf_counter() - started
                attrs = pair_attributes(
                    key,
                    left_path.resolve(),
                    right_path.resolve(),
                    params,
                    result.disparity.shape,
                    result.valid,
                    gt_left=gt_path.resolve(),
                    gt_scale=gt_scale,
                )
                proxies.write_pair(key, result_arrays(result), {**attrs, "complete": True, "sgm_seconds": seconds})
                log(f"  sgm {key:40s} {result.disparity.shape} max_disp {max_disp:4d}  {seconds:.1f} s")
    return files


def load_pairs(files: dict[str, Path], log: Callable[[str], None] = print) -> list[Pair]:
    """Every pair of every group file, with all conventional measures, ground truth and gray images."""
    from pseudolabel.confidence.calibration import invalid_share
    from pseudolabel.confidence.images import pair_gray_images
    from pseudolabel.confidence.measures import MEASURES, compute_measures
    from pseudolabel.io import read_disparity
    from pseudolabel.store.proxies import open_proxies

    pairs: list[Pair] = []
    for group, path in files.items():
        with open_proxies(path, "r") as proxies:
            for key in proxies.keys():
                attrs = proxies.pair_attrs(key)
                features = proxies.read(key, list(FEATURES))
                params = proxies.pair_params(key)
                measures = compute_measures(MEASURES, features, params)
                ground_truth = read_disparity(attrs["gt_left"], float(attrs.get("gt_scale", 1.0) or 1.0))
                if ground_truth.shape != features["disparity"].shape:
                    raise SystemExit(f"{key}: ground truth {ground_truth.shape} differs from the proxies {features['disparity'].shape}")
                pairs.append(
                    Pair(
                        key,
                        group,
                        features["disparity"],
                        ground_truth,
                        measures,
                        pair_gray_images(path, attrs, key),
                        params,
                        invalid_share=invalid_share(features["valid"]),
                    )
                )
        log(f"  loaded {group}: {sum(p.group == group for p in pairs)} pairs")
    return pairs


def network_inputs(pair: Pair, inputs: Sequence[str]) -> np.ndarray:
    from pseudolabel.models.ccnn import build_inputs

    return build_inputs({"disparity": pair.disparity, **pair.images}, pair.params, inputs, pair.measures)


#: Label tokens of ``--networks`` ARCH-LABELS: (uses the wild labels as a voter, rule of the votes); gt and wild apart.
TEACHER_TOKENS: dict[str, tuple[bool, str]] = {
    "wildagree": (True, "hard"),
    "wildsoft": (True, "soft"),
    "wildconfirm": (True, "confirm"),
    "agree": (False, "hard"),
    "agreesoft": (False, "soft"),
}


def targets(pair: Pair, labels: str, teachers: Sequence[str] = ("sgbm",)) -> np.ndarray:
    from pseudolabel.confidence.targets import WILD_NEGATIVE, WILD_POSITIVE, agreement_targets, ground_truth_targets, wild_targets
    from pseudolabel.confidence.teachers import teacher_disparities

    if labels == "gt":
        return ground_truth_targets(pair.disparity, pair.ground_truth)
    if labels == "wild":
        return wild_targets(pair.measures)
    if labels == "wildl":  # the wild label sets with the averaged left-right consistency alrc15 in both
        return wild_targets(pair.measures, positive=(*WILD_POSITIVE, "alrc15"), negative=(*WILD_NEGATIVE, "alrc15"))
    with_wild, rule = TEACHER_TOKENS[labels]
    missing = [name for name in teachers if name not in pair.teachers]
    if missing:
        pair.teachers.update(teacher_disparities(pair.images, pair.params, missing))
    votes = {name: pair.teachers[name] for name in teachers}
    return agreement_targets(pair.disparity, votes, wild_targets(pair.measures) if with_wild else None, rule)


def train_and_score(
    train: Sequence[Pair],
    test: Sequence[Pair],
    arch: str,
    labels: str,
    inputs: Sequence[str],
    config_kwargs: dict[str, Any],
    teachers: Sequence[str] = ("sgbm",),
    fit_on: Sequence[Pair] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    """Train on ``fit_on`` (default ``train``) and return the raw confidence of every training and every test
    pair, and the seconds of training."""
    from pseudolabel.confidence.training import TrainingConfig, TrainingPair, train_ccnn

    config = TrainingConfig(architecture=arch, inputs=tuple(inputs), **config_kwargs)
    training = [
        TrainingPair(pair.key, network_inputs(pair, inputs), targets(pair, labels, teachers)) for pair in (train if fit_on is None else fit_on)
    ]
    started = time.perf_counter()
    model, _ = train_ccnn(training, config)
    seconds = time.perf_counter() - started
    del training
    return raw_confidences(model, train), raw_confidences(model, test), seconds


def raw_confidences(network: Any, pairs: Sequence[Pair]) -> list[np.ndarray]:
    """The raw confidence (float32 arithmetic, no calibration) of a confidence network on every pair."""
    import torch

    from pseudolabel.models.ccnn import ConfidenceScorer

    scorer = ConfidenceScorer(network, "cpu", precision="float32")
    with torch.inference_mode():
        return [scorer.raw_confidence_from_inputs(network_inputs(pair, network.inputs)) for pair in pairs]


def checkpoint_confidences(path: Path, pairs: Sequence[Pair]) -> list[np.ndarray]:
    """:func:`raw_confidences` of a trained checkpoint."""
    from pseudolabel.confidence.checkpoints import load_confidence_checkpoint

    return raw_confidences(load_confidence_checkpoint(path)[0], pairs)


def labels_at_target(pair: Pair, values: np.ndarray, target: float) -> dict[str, float]:
    """One pair's labels at a target expected error (tau per pair), as ``labels --target-error`` makes them
    from the confidence ``values`` (``float32`` (H, W)): :func:`~pseudolabel.confidence.labels.label_statistics`
    of the labels plus ``bad3_count`` (wrong labels with ground truth), ``expected`` / ``count`` (their
    expected error and number) and ``expected_gt`` / ``count_gt`` (the same over the labels with ground
    truth), and ``reached`` (0 on a pair no tau brings to the target: it gets no labels, 0% kept)."""
    from pseudolabel.confidence.labels import TargetUnreachable, expected_error, label_statistics, tau_for_target_error, threshold_labels

    usable = np.isfinite(pair.disparity)
    try:
        chosen, _, _ = tau_for_target_error(values, target, usable)
    except TargetUnreachable:
        empty = {"gt_coverage": 0.0, "bad3": float("nan"), "labelled_with_gt": 0.0, "bad3_count": 0.0}
        return {**empty, "expected": float("nan"), "count": 0.0, "expected_gt": float("nan"), "count_gt": 0.0, "reached": 0.0}
    stats = label_statistics(threshold_labels(pair.disparity, values, chosen), pair.ground_truth)
    expected, count = expected_error(values, chosen, usable)
    expected_gt, count_gt = expected_error(values, chosen, usable & pair.known)
    bad3_count = stats["bad3"] * stats["labelled_with_gt"] if np.isfinite(stats["bad3"]) else 0.0
    return {**stats, "bad3_count": bad3_count, "expected": expected, "count": count, "expected_gt": expected_gt, "count_gt": count_gt, "reached": 1.0}


def evaluate_method(
    train: Sequence[Pair],
    train_confidence: Sequence[np.ndarray],
    test: Sequence[Pair],
    test_confidence: Sequence[np.ndarray],
    tau: float,
    target: float,
) -> dict[str, float]:
    """Figures of one method on the group left out (see the module docstring)."""
    from pseudolabel.confidence.calibration import Calibration, ece_from_bins, fit_pair_calibration, reliability_bins
    from pseudolabel.confidence.labels import label_statistics, threshold_labels
    from pseudolabel.confidence.sparsification import coverage_at_error, error_mask, optimal_auc, sparsification_auc

    pair_calibration = fit_pair_calibration(
        [c[p.known] for p, c in zip(train, train_confidence)], [p.correct for p in train], [p.invalid_share for p in train]
    )
    # its isotonic part is the isotonic map of the same pooled pixels (fit_isotonic), without the pair terms
    calibration = Calibration("isotonic", pair_calibration.knots, pair_calibration.values)
    aucs, optimals, oracle_coverages, ranking_coverages = [], [], [], []
    raw_table = np.zeros((20, 3))
    calibrated_table = np.zeros((20, 3))
    at_tau: list[dict[str, float]] = []
    # labels at the target error, from the calibrated confidence and (as a user without ground truth has it) the raw one
    at_target: dict[str, list[dict[str, float]]] = {"": [], "raw_": [], "pair_": []}
    expected_sums = {"": [0.0, 0], "raw_": [0.0, 0], "pair_": [0.0, 0]}
    expected_gt_sums = {"": [0.0, 0], "raw_": [0.0, 0], "pair_": [0.0, 0]}  # over the labels with ground truth only
    pair_table = np.zeros((20, 3))
    pair_at_tau: list[dict[str, float]] = []
    raw_at_tau: list[dict[str, float]] = []
    refused = {"": 0, "raw_": 0, "pair_": 0}  # pairs on which no tau reaches the target
    for pair, confidence in zip(test, test_confidence):
        bad, known = error_mask(pair.disparity, pair.ground_truth)
        aucs.append(sparsification_auc(confidence, bad, known))
        optimals.append(optimal_auc(float(bad.sum() / max(known.sum(), 1))))
        # a perfect confidence keeps every right pixel and as many wrong ones as the target error allows
        right = float(known.sum() - bad.sum())
        oracle_coverages.append(min(1.0, right / ((1.0 - target) * max(float(known.sum()), 1.0))))
        # this ranking with the best tau per pair (chosen with the ground truth): what any calibration could reach
        ranking_coverages.append(coverage_at_error(np.where(np.isfinite(pair.disparity), confidence, -np.inf), bad, known, target))
        calibrated = calibration.apply(confidence)
        raw_table += reliability_bins(confidence[pair.known], pair.correct)
        calibrated_table += reliability_bins(calibrated[pair.known], pair.correct)
        at_tau.append(label_statistics(threshold_labels(pair.disparity, calibrated, tau), pair.ground_truth))
        adjusted = pair_calibration.apply(confidence, pair.invalid_share)
        pair_table += reliability_bins(adjusted[pair.known], pair.correct)
        pair_at_tau.append(label_statistics(threshold_labels(pair.disparity, adjusted, tau), pair.ground_truth))
        raw_at_tau.append(label_statistics(threshold_labels(pair.disparity, confidence, tau), pair.ground_truth))
        for prefix, values in (("", calibrated), ("raw_", confidence), ("pair_", adjusted)):
            stats = labels_at_target(pair, values, target)
            at_target[prefix].append(stats)
            if not stats["reached"]:
                refused[prefix] += 1
                continue
            expected_sums[prefix][0] += stats["expected"] * stats["count"]
            expected_sums[prefix][1] += stats["count"]
            expected_gt_sums[prefix][0] += stats["expected_gt"] * stats["count_gt"] if stats["count_gt"] else 0.0
            expected_gt_sums[prefix][1] += stats["count_gt"]

    def mean(rows: list[dict[str, float]], name: str) -> float:
        values = [row[name] for row in rows if np.isfinite(row[name])]
        return float(np.mean(values)) if values else float("nan")

    figures = {
        "auc": float(np.mean(aucs)),
        "optimal": float(np.mean(optimals)),
        "oracle_target_coverage": float(np.mean(oracle_coverages)),
        "ranking_target_coverage": float(np.mean(ranking_coverages)),
        "ece_raw": ece_from_bins(raw_table),
        "ece_calibrated": ece_from_bins(calibrated_table),
        "ece_pair": ece_from_bins(pair_table),
        "tau_coverage": mean(at_tau, "gt_coverage"),
        "tau_bad3": mean(at_tau, "bad3"),
        "pair_tau_coverage": mean(pair_at_tau, "gt_coverage"),
        "pair_tau_bad3": mean(pair_at_tau, "bad3"),
        "raw_tau_coverage": mean(raw_at_tau, "gt_coverage"),
        "raw_tau_bad3": mean(raw_at_tau, "bad3"),
    }
    for prefix, rows in at_target.items():
        labelled = sum(row["labelled_with_gt"] for row in rows)
        total, count = expected_sums[prefix]
        figures[f"{prefix}target_coverage"] = mean(rows, "gt_coverage")
        figures[f"{prefix}target_bad3"] = mean(rows, "bad3")
        # pooled over the group's labels, comparable with the pooled expected error
        figures[f"{prefix}target_bad3_pooled"] = float(sum(row["bad3_count"] for row in rows) / labelled) if labelled else float("nan")
        figures[f"{prefix}target_expected"] = total / count if count else float("nan")
        total_gt, count_gt = expected_gt_sums[prefix]
        figures[f"{prefix}target_expected_gt"] = total_gt / count_gt if count_gt else float("nan")
    return {**figures, **{f"{prefix}target_refused": float(count) for prefix, count in refused.items()}}


def run_logo(
    data: Path,
    work: Path,
    groups: Sequence[str],
    synthetic: int,
    epochs: int,
    steps_per_epoch: int,
    tau: float,
    target: float,
    networks: Sequence[str] = ("ccnn-gt", "ccnn-wild", "lfn-gt", "lfn-wild"),
    log: Callable[[str], None] = print,
    teachers: Sequence[str] = ("sgbm",),
    measures_too: bool = True,
    seed: int = 0,
    checkpoints: dict[str, tuple[Path, Sequence[str]]] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """``{method: {held-out group: figures}}`` (see :func:`evaluate_method`); ``teachers``: the matchers of
    the agreement labels; ``measures_too``: also evaluate the conventional measures; ``seed``: of every training;
    ``checkpoints``: trained networks evaluated as they are (name -> (checkpoint, the groups it was trained on,
    which never enter its calibration)), e.g. the shipped ones."""
    import torch

    from pseudolabel.confidence.measures import LITERATURE_MEASURES, LR_CONTEXT_MEASURES, MEASURES

    torch.set_num_threads(max(1, torch.get_num_threads()))
    measures = list(MEASURES)
    base = list(LITERATURE_MEASURES)  # the inputs of the CCNNs before 2026-12
    inputs = {
        "ccnn": ["disparity", *base],
        "lfn": ["disparity", *base, "image", "photometric"],
        "ccnnt": ["disparity", *base, "texture"],
        "lfnt": ["disparity", *base, "image", "photometric", "texture"],
        "ccnnl": ["disparity", *base, *LR_CONTEXT_MEASURES],
        "lfnl": ["disparity", *base, *LR_CONTEXT_MEASURES, "image", "photometric"],
    }
    architecture = {"ccnn": "ccnn", "lfn": "lfn", "ccnnt": "ccnn", "lfnt": "lfn", "ccnnl": "ccnn", "lfnl": "lfn"}
    for network in networks:
        arch, _, labels = network.partition("-")
        labels, _, transductive = labels.replace("@", "+").partition("+")
        if arch not in inputs or (labels not in ("gt", "wild", "wildl") and labels not in TEACHER_TOKENS):
            raise SystemExit(
                f"{network}: unknown network; ARCH-LABELS with ARCH ccnn, lfn, ccnnt, lfnt (t: with the texture channel), ccnnl or lfnl (l: with the averaged left-right consistency) and LABELS gt, wild, wildl (wild with alrc15 in both sets) or {', '.join(TEACHER_TOKENS)}"
            )
        if transductive and labels == "gt":
            raise SystemExit(f"{network}: only labels without ground truth may train on the held-out group")
    log(f"proxies of {', '.join(groups)} in {work}")
    files = prepare_groups(data, work, groups, synthetic, log)
    pairs = load_pairs(files, log)
    # The recipe of the shipped CCNN (BENCHMARKS.md ## Confidence, Reproduce), shortened.
    # pair_weighting "pixels": the draw of every table of this benchmark in BENCHMARKS.md (the default became "pairs" on 2026-12-01)
    config_kwargs = {
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "crop": 32,
        "batch_size": 16,
        "range_jitter": 0.5,
        "seed": seed,
        "pair_weighting": "pixels",
    }
    width = {"filters": 24, "fc_filters": 48}
    results: dict[str, dict[str, dict[str, float]]] = {}
    fixed = {name: (checkpoint_confidences(path, pairs), list(trained_on)) for name, (path, trained_on) in (checkpoints or {}).items()}
    for group in groups:
        train = [pair for pair in pairs if pair.group != group]
        test = [pair for pair in pairs if pair.group == group]
        if not test or not train:
            continue
        log(f"held out: {group} ({len(test)} pairs), training on {len(train)} pairs")
        for name, (scores, trained_on) in fixed.items():
            fit = [index for index, pair in enumerate(pairs) if pair.group != group and pair.group not in trained_on]
            held = [index for index, pair in enumerate(pairs) if pair.group == group]
            figures = evaluate_method([pairs[i] for i in fit], [scores[i] for i in fit], test, [scores[i] for i in held], tau, target)
            results.setdefault(name, {})[group] = figures
            log(f"  {name:10s} AUC x100 {100 * figures['auc']:.2f} (/opt {figures['auc'] / figures['optimal']:.2f}), calibrated on {len(fit)} pairs")
        for name in measures if measures_too else []:
            figures = evaluate_method(train, [p.measures[name] for p in train], test, [p.measures[name] for p in test], tau, target)
            results.setdefault(name, {})[group] = figures
        for network in networks:
            arch, labels = network.split("-")
            labels, _, transductive = labels.replace("@", "+@").partition("+")
            fit_on = {"": train, "test": [*train, *test], "@test": test}[transductive]
            train_confidence, test_confidence, seconds = train_and_score(
                train, test, architecture[arch], labels, inputs[arch], {**config_kwargs, **width}, teachers, fit_on
            )
            figures = evaluate_method(train, train_confidence, test, test_confidence, tau, target)
            figures["train_seconds"] = seconds
            results.setdefault(network, {})[group] = figures
            log(
                f"  {network:10s} AUC x100 {100 * figures['auc']:.2f} (/opt {figures['auc'] / figures['optimal']:.2f}), "
                f"ECE {100 * figures['ece_raw']:.2f}% -> {100 * figures['ece_calibrated']:.2f}%, "
                f"target {100 * target:g}%: kept {100 * figures['target_coverage']:.1f}% bad-3 {100 * figures['target_bad3']:.2f}% "
                f"expected {100 * figures['target_expected']:.2f}%  ({seconds:.0f} s training)"
            )
    return results


def format_logo(results: dict[str, dict[str, dict[str, float]]], tau: float, target: float, networks: Sequence[str]) -> str:
    """Markdown: the mean over groups per method, then per-group tables."""
    groups = sorted({group for per_group in results.values() for group in per_group})

    def mean(method: str, name: str) -> float:
        values = [results[method][g][name] for g in groups if g in results[method] and np.isfinite(results[method][g][name])]
        return float(np.mean(values)) if values else float("nan")

    def ratio(method: str, group: str) -> float:
        figures = results[method][group]
        return figures["auc"] / figures["optimal"] if figures["optimal"] > 0 else float("nan")

    def percent(value: float, digits: int = 2) -> str:
        return f"{100 * value:.{digits}f}" if np.isfinite(value) else "-"

    order = sorted(results, key=lambda method: mean(method, "auc"))
    lines = [
        f"Groups ({len(groups)}): {', '.join(groups)}. Each row: train on every group but one, evaluate on the one left out; "
        "mean over the groups (every group weighs the same; within a group, AUCs are means over pairs and the rest is pooled "
        "or averaged over pairs). Every method's confidence is calibrated by isotonic regression on the training groups. "
        "AUC x100 of the raw confidence; ECE % (20 equal-width bins) raw and calibrated; labels of the calibrated confidence at "
        f"tau {tau:g} and at a target expected error of {100 * target:g}% (tau per pair): ground-truth pixels kept %, bad-3 % "
        "of the labels (mean over pairs), and the expected error `labels` prints (pooled). Networks in bold.",
        "",
        f"| method | AUC x100 | / optimal | ECE raw | ECE cal. | kept @{tau:g} | bad-3 @{tau:g} | kept @{100 * target:g}% | bad-3 @{100 * target:g}% "
        "| expected | measured / expected |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method in order:
        label = f"**{method}**" if method in networks else method
        measured = mean(method, "target_bad3_pooled")
        expected = mean(method, "target_expected")
        lines.append(
            f"| {label} | {percent(mean(method, 'auc'))} | {np.mean([ratio(method, g) for g in groups if g in results[method]]):.2f} | "
            f"{percent(mean(method, 'ece_raw'))} | {percent(mean(method, 'ece_calibrated'))} | {percent(mean(method, 'tau_coverage'), 1)} | "
            f"{percent(mean(method, 'tau_bad3'))} | {percent(mean(method, 'target_coverage'), 1)} | {percent(mean(method, 'target_bad3'))} | "
            f"{percent(expected)} | {measured / expected if expected > 0 else float('nan'):.2f} |"
        )
    optimal = float(np.mean([np.mean([results[order[0]][g]["optimal"] for g in groups if g in results[order[0]]])]))
    oracle = {g: results[order[0]][g].get("oracle_target_coverage", float("nan")) for g in groups if g in results[order[0]]}
    lines += [
        "",
        f"Optimal AUC x100, mean over groups: {100 * optimal:.2f}. A perfect confidence (every right pixel first) keeps "
        f"{100 * float(np.mean(list(oracle.values()))):.1f}% of the ground-truth pixels at the {100 * target:g}% target, mean over groups "
        "(" + ", ".join(f"{g} {100 * value:.0f}%" for g, value in oracle.items()) + ").",
        "",
    ]
    lines += [
        "Per group: AUC / optimal, and at the target error: kept % / bad-3 % / expected %.",
        "",
        "| method | " + " | ".join(groups) + " |",
        "|---|" + "---:|" * len(groups),
    ]
    for method in order:
        cells = []
        for group in groups:
            if group not in results[method]:
                cells.append("-")
                continue
            figures = results[method][group]
            cells.append(
                f"{ratio(method, group):.2f}; {percent(figures['target_coverage'], 0)} / {percent(figures['target_bad3'], 1)} / "
                f"{percent(figures['target_expected'], 1)}"
            )
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    paired = [method for method in order if all("pair_target_expected_gt" in results[method][g] for g in results[method])]
    if paired:

        def spread(method: str, prefix: str) -> str:
            ratios = []
            for group in groups:
                figures = results[method].get(group, {})
                measured, expected = (
                    figures.get(f"{prefix}target_bad3_pooled", float("nan")),
                    figures.get(f"{prefix}target_expected_gt", float("nan")),
                )
                ratios.append(measured / expected if expected > 0 else float("nan"))
            cells = " / ".join(f"{value:.1f}" if np.isfinite(value) else "-" for value in ratios)
            inside = sum(bool(np.isfinite(value) and 1 / 1.5 <= value <= 1.5) for value in ratios)
            return f"{cells} ({inside} of {len(ratios)})"

        lines += [
            "",
            "Calibrated with `isotonic-pair` (the isotonic map, then pair terms that read how hard each pair is from the share "
            "of its pixels SGM's checks rejected; fitted on the training groups like the isotonic map), against the isotonic "
            f"map alone. Labels at tau {tau:g} and at the {100 * target:g}% target; *measured / expected*: bad-3 of the labels "
            "with ground truth against the expected error of the same labels (mean 1 - c over them), pooled per group, one "
            f"figure per group in the order {', '.join(groups)} (and how many are within a factor of 1.5).",
            "",
            f"| method | calibration | ECE | kept @{tau:g} | bad-3 @{tau:g} | kept @{100 * target:g}% | bad-3 @{100 * target:g}% | measured / expected per group |",
            "|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for method in paired:
            label = f"**{method}**" if method in networks else method
            for name, prefix, ece, tau_prefix in (("isotonic", "", "ece_calibrated", ""), ("isotonic-pair", "pair_", "ece_pair", "pair_")):
                lines.append(
                    f"| {label} | {name} | {percent(mean(method, ece))} | {percent(mean(method, f'{tau_prefix}tau_coverage'), 1)} | "
                    f"{percent(mean(method, f'{tau_prefix}tau_bad3'))} | {percent(mean(method, f'{prefix}target_coverage'), 1)} | "
                    f"{percent(mean(method, f'{prefix}target_bad3'))} | {spread(method, prefix)} |"
                )
    raw = [method for method in order if method in networks and all("raw_target_expected" in results[method][g] for g in results[method])]
    if raw:
        lines += [
            "",
            "The raw confidence of the networks, with no calibration (all a user without any ground truth has): ECE % and the "
            f"labels at the target expected error of {100 * target:g}% (tau per pair).",
            "",
            f"| network | ECE raw | kept @{100 * target:g}% | bad-3 @{100 * target:g}% | expected | measured / expected |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for method in raw:
            measured, expected = mean(method, "raw_target_bad3_pooled"), mean(method, "raw_target_expected")
            lines.append(
                f"| {method} | {percent(mean(method, 'ece_raw'))} | {percent(mean(method, 'raw_target_coverage'), 1)} | "
                f"{percent(mean(method, 'raw_target_bad3'))} | {percent(expected)} | {measured / expected if expected > 0 else float('nan'):.2f} |"
            )
    seconds = [results[m][g].get("train_seconds", 0.0) for m in networks if m in results for g in results[m]]
    if seconds:
        lines += ["", f"Training time per network: median {np.median(seconds):.0f} s (2-core CPU)."]
    return "\n".join(lines)
