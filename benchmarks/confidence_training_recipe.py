"""How the confidence network is trained, leave one group out (issue 19, 2026-12-01).

A per-pixel MLP over the measures (``confidence_context_screen.py``) ranked SGM's errors better than the CCNN over
the same inputs (2.16x against 2.56x the optimal AUC), so the difference lay in the training, not in the inputs.
This trains the CCNN of ``confidence.py logo`` (17 measures and the disparity, width 24 / 48, 32-pixel crops,
range jitter 0.5, seed 0) on every group of ``confidence_logo.py``'s work folder but one, evaluates it on the one
left out, and varies one thing of :class:`pseudolabel.confidence.training.TrainingConfig` at a time:

* ``pixels`` / ``pairs``: each crop's pair drawn in proportion to its labelled pixels (before 2026-12-01) or every
  pair alike (``pair_weighting``);
* ``std``: input channels standardised on the training pixels, folded into the network after training
  (``standardise_inputs``);
* ``ep20``: 20 epochs of 30 steps instead of 6; ``b64``: 64 crops per step instead of 16;
* ``wild``: the wild labels (no ground truth) instead of the ground truth;
* ``curve``: seven more input channels read from SGM's whole aggregated cost curve (the ``curve`` family of
  ``confidence_context_screen.py``; the pair is matched again, as ``pseudolabel sgm`` does not store the curve);
  ``soft``, ``softg``, ``softg8``, ``softg32``, ``softp8`` (2026-12-01, night): only the softmax shares, the
  families of that name in ``confidence_context_screen.py`` (at the proxy's disparity with the image's mean cost as
  the scale; at the winner-takes-all disparity with the image's, both temperatures or one; at the winner-takes-all
  disparity with the pixel's).

A variant is ``+``-joined tokens, e.g. ``wild+pairs+std``. Means over the held-out groups: AUC / optimal (the mean
over groups of each group's mean AUC over its mean optimal AUC), the ground-truth pixels kept at a 1% bad-3 target
and the labels' bad-3, with the isotonic map and with the isotonic-pair map (both fitted on the training groups; the
JSON keys ``target_*`` and ``pair_target_*``), and the ranking's ceiling at that target (best tau per pair chosen with
the ground truth). Run after ``confidence.py logo`` has written the group files::

    python benchmarks/confidence_training_recipe.py --work work/confidence/logo --json benchmarks/results/confidence_training_recipe.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import confidence_logo

from pseudolabel.confidence.measures import CCNN_INPUTS

GROUPS = tuple(sorted(confidence_logo.LOGO_GROUPS))  # the order the pairs are loaded and trained in
#: Tokens that add the maps of the ``confidence_context_screen.py`` family of the same name as input channels.
CURVE_TOKENS = ("curve", "soft", "softg", "softg8", "softg32", "softp8")
TOKENS = ("pixels", "pairs", "std", "ep20", "b64", "wild", *CURVE_TOKENS)
DEFAULT_VARIANTS = "pixels,pairs,pairs+std,pairs+ep20,pairs+std+ep20,wild+pixels,wild+pairs,wild+pairs+std"


def config_for(variant: str) -> tuple[str, dict[str, Any]]:
    """The labels and the :class:`~pseudolabel.confidence.training.TrainingConfig` arguments of a variant."""
    tokens = set(variant.split("+"))
    unknown = tokens - set(TOKENS)
    if unknown:
        raise SystemExit(f"{variant}: unknown token(s) {', '.join(sorted(unknown))}; choose from {', '.join(TOKENS)}")
    config = {
        "epochs": 20 if "ep20" in tokens else 6,
        "steps_per_epoch": 30,
        "batch_size": 64 if "b64" in tokens else 16,
        "crop": 32,
        "range_jitter": 0.5,
        "seed": 0,
        "filters": 24,
        "fc_filters": 48,
        "standardise_inputs": "std" in tokens,
        "pair_weighting": "pixels" if "pixels" in tokens else "pairs",
    }
    return ("wild" if "wild" in tokens else "gt"), config


def run_variant(pairs: list[confidence_logo.Pair], variant: str) -> dict[str, dict[str, float]]:
    """``{held-out group: figures}`` of one variant."""
    import torch

    from pseudolabel.confidence.training import TrainingConfig, TrainingPair, train_ccnn

    labels, config_kwargs = config_for(variant)
    inputs = CCNN_INPUTS
    for token in CURVE_TOKENS:
        if token in variant.split("+"):
            import confidence_context_screen

            for pair in pairs:  # under names that are not registered measures: ``curve0`` ... ``curve6``, ``soft0`` ...
                maps = confidence_context_screen.context_features(pair, token)
                pair.measures.update((f"{token}{index}", values) for index, values in enumerate(maps))
            inputs = inputs + tuple(f"{token}{index}" for index in range(len(maps)))
    config = TrainingConfig(architecture="ccnn", inputs=inputs, **config_kwargs)
    torch.set_num_threads(1)
    results: dict[str, dict[str, float]] = {}
    for group in sorted({pair.group for pair in pairs}):
        train = [pair for pair in pairs if pair.group != group]
        test = [pair for pair in pairs if pair.group == group]
        training = [TrainingPair(pair.key, confidence_logo.network_inputs(pair, inputs), confidence_logo.targets(pair, labels)) for pair in train]
        started = time.perf_counter()
        model, _ = train_ccnn(training, config)
        seconds = time.perf_counter() - started
        del training
        figures = confidence_logo.evaluate_method(
            train, confidence_logo.raw_confidences(model, train), test, confidence_logo.raw_confidences(model, test), 0.9, 0.01
        )
        names = ("auc", "optimal", "target_coverage", "target_bad3", "pair_target_coverage", "pair_target_bad3", "ranking_target_coverage", "ece_raw")
        # a group where no pair reaches the target has no bad-3 (NaN): null in the JSON
        results[group] = {name: (float(figures[name]) if np.isfinite(figures[name]) else None) for name in names}
        results[group]["train_seconds"] = seconds
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("work/confidence/logo"), help="confidence_logo.py's work folder (its group files)")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated variants, each +-joined tokens of {', '.join(TOKENS)}")
    parser.add_argument("--json", type=Path, default=None, help="JSON file the figures are merged into (by variant)")
    args = parser.parse_args()
    variants = args.variants.split(",")
    for variant in variants:
        config_for(variant)
    files = {group: args.work / f"{group}.h5" for group in GROUPS}
    missing = [str(path) for path in files.values() if not path.exists()]
    if missing:
        raise SystemExit(f"{', '.join(missing)} missing: run `python benchmarks/confidence.py logo --data ../shared/data --work {args.work}` first")
    pairs = confidence_logo.load_pairs(files)
    for variant in variants:
        started = time.perf_counter()
        results = run_variant(pairs, variant)
        ratio = np.mean([r["auc"] / r["optimal"] for r in results.values()])
        names = ("auc", "target_coverage", "target_bad3", "pair_target_coverage", "pair_target_bad3", "ranking_target_coverage")
        mean = {name: float(np.mean([np.nan if r[name] is None else r[name] for r in results.values()])) for name in names}
        per_group = " ".join(f"{group}:{r['auc'] / r['optimal']:.2f}" for group, r in results.items())
        print(
            f"{variant}: AUC x100 {100 * mean['auc']:.2f}, / optimal {ratio:.2f}, kept at 1% isotonic {100 * mean['target_coverage']:.1f}% "
            f"(bad-3 {100 * mean['target_bad3']:.2f}%), isotonic-pair {100 * mean['pair_target_coverage']:.1f}% "
            f"(bad-3 {100 * mean['pair_target_bad3']:.2f}%), ranking ceiling {100 * mean['ranking_target_coverage']:.1f}% "
            f"({time.perf_counter() - started:.0f} s) | {per_group}",
            flush=True,
        )
        if args.json:  # merged variant by variant, so that an interrupted run keeps what it finished
            merged = json.loads(args.json.read_text()) if args.json.exists() else {}
            args.json.write_text(json.dumps({**merged, variant: results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
