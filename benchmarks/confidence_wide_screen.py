"""Does a confidence network that sees far beat the CCNN's 9x9 window? Leave one group out (issue 19, 2026-12-01).

The confident errors that keep the labels from the 1% target are disparities carried from a foreground into the
background and texture-less areas next to it, tens of pixels wide (BENCHMARKS.md "Measures of the wider left-right
context"). The measures of that context (``alrc15`` ... ``dlrc``) gave the CCNN part of it; one-sided ones did not
add to them. This trains a small encoder-decoder (the shape of ConfNet in Tosi et al., ECCV 2018: three stride-2
levels, skip connections, about 100 pixels of receptive field) on every group of ``confidence_logo.py``'s work folder
but one, on 96x96 crops of the CCNN's 17 measures and disparity (``base``), optionally with the left image and the
photometric error (``img``), and evaluates it on the full images of the group left out with the figures of
``confidence_training_recipe.py`` (AUC / optimal, coverage at a 1% bad-3 target with the isotonic and the
isotonic-pair maps fitted on the training groups, the ranking's ceiling). Ground-truth labels; every pair drawn
alike; inputs standardised on the training pixels; vertical flips; Adam 1e-3 with cosine decay; seed 0::

    python benchmarks/confidence_wide_screen.py --work work/confidence/logo --json benchmarks/results/confidence_wide_screen.json

This is a screening, not a registered network: it says whether the receptive field is what limits the ranking.
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

GROUPS = tuple(sorted(confidence_logo.LOGO_GROUPS))
IMAGE_INPUTS = ("image", "photometric")


def make_network(channels: int, widths: tuple[int, ...]) -> Any:
    """An encoder-decoder over ``channels`` input maps: ``len(widths) - 1`` stride-2 levels, a logit per pixel."""
    import torch
    from torch import nn

    def block(inputs: int, outputs: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(inputs, outputs, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(outputs, outputs, 3, padding=1), nn.ReLU(inplace=True)
        )

    class EncoderDecoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoders = nn.ModuleList([block(channels, widths[0])] + [block(widths[i - 1], widths[i]) for i in range(1, len(widths))])
            self.decoders = nn.ModuleList([block(widths[i] + widths[i + 1], widths[i]) for i in range(len(widths) - 1)])
            self.head = nn.Conv2d(widths[0], 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for level, encoder in enumerate(self.encoders):
                x = encoder(x if level == 0 else nn.functional.avg_pool2d(x, 2))
                skips.append(x)
            for level in range(len(self.decoders) - 1, -1, -1):
                up = nn.functional.interpolate(x, size=skips[level].shape[-2:], mode="bilinear", align_corners=False)
                x = self.decoders[level](torch.cat([skips[level], up], 1))
            return self.head(x)[:, 0]

    return EncoderDecoder()


def full_image_logits(network: Any, inputs: np.ndarray, levels: int) -> np.ndarray:
    """``float32`` (H, W) logits of ``inputs`` (C, H, W), padded by reflection to a multiple of ``2 ** levels``."""
    import torch

    step = 2**levels
    height, width = inputs.shape[1:]
    pad_y, pad_x = (-height) % step, (-width) % step
    padded = np.pad(inputs, ((0, 0), (0, pad_y), (0, pad_x)), mode="reflect")
    with torch.inference_mode():
        return network(torch.from_numpy(np.ascontiguousarray(padded))[None])[0, :height, :width].numpy()


def run_variant(
    pairs: list[confidence_logo.Pair], variant: str, steps: int, widths: tuple[int, ...], crop: int, batch: int
) -> dict[str, dict[str, float]]:
    import torch

    inputs = CCNN_INPUTS + (IMAGE_INPUTS if "img" in variant.split("+") else ())
    torch.set_num_threads(2)
    all_inputs = {pair.key: confidence_logo.network_inputs(pair, inputs).astype(np.float32) for pair in pairs}
    all_targets = {pair.key: confidence_logo.targets(pair, "gt").astype(np.float32) for pair in pairs}
    results: dict[str, dict[str, float]] = {}
    for group in GROUPS:
        train = [pair for pair in pairs if pair.group != group]
        test = [pair for pair in pairs if pair.group == group]
        stacked = np.concatenate([all_inputs[pair.key].reshape(len(inputs), -1)[:, ::7] for pair in train], axis=1)
        mean = stacked.mean(axis=1)[:, None, None].astype(np.float32)
        std = np.maximum(stacked.std(axis=1), 0.02)[:, None, None].astype(np.float32)
        normalised = {pair.key: (all_inputs[pair.key] - mean) / std for pair in pairs}
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        network = make_network(len(inputs), widths)
        optimiser = torch.optim.Adam(network.parameters(), lr=1e-3)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
        started = time.perf_counter()
        for _ in range(steps):
            batch_inputs, batch_targets = [], []
            while len(batch_inputs) < batch:
                pair = train[rng.integers(len(train))]
                source, target = normalised[pair.key], all_targets[pair.key]
                height, width = target.shape
                if height < crop or width < crop:
                    continue
                y, x = rng.integers(height - crop + 1), rng.integers(width - crop + 1)
                patch, labels = source[:, y : y + crop, x : x + crop], target[y : y + crop, x : x + crop]
                if np.isfinite(labels).sum() < 16:
                    continue
                if rng.random() < 0.5:
                    patch, labels = patch[:, ::-1], labels[::-1]
                batch_inputs.append(np.ascontiguousarray(patch))
                batch_targets.append(np.ascontiguousarray(labels))
            logits = network(torch.from_numpy(np.stack(batch_inputs)))
            labels_t = torch.from_numpy(np.stack(batch_targets))
            known = torch.isfinite(labels_t)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[known], labels_t[known])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        seconds = time.perf_counter() - started
        network.eval()
        levels = len(widths) - 1

        def confidences(chosen: list[confidence_logo.Pair]) -> list[np.ndarray]:
            return [(1 / (1 + np.exp(-full_image_logits(network, normalised[pair.key], levels)))).astype(np.float32) for pair in chosen]

        figures = confidence_logo.evaluate_method(train, confidences(train), test, confidences(test), 0.9, 0.01)
        names = ("auc", "optimal", "target_coverage", "target_bad3", "pair_target_coverage", "pair_target_bad3", "ranking_target_coverage", "ece_raw")
        results[group] = {name: (float(figures[name]) if np.isfinite(figures[name]) else None) for name in names}
        results[group]["train_seconds"] = seconds
        print(
            f"  {variant} held out {group}: AUC/opt {figures['auc'] / figures['optimal']:.2f}, ceiling {100 * figures['ranking_target_coverage']:.1f}% ({seconds:.0f} s)",
            flush=True,
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("work/confidence/logo"))
    parser.add_argument("--variants", default="base,base+img", help="comma-separated: base (the CCNN's inputs), base+img (and the image)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--widths", default="16,32,48,64", help="channels per level, full resolution first")
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None, help="JSON file the figures are merged into (by variant)")
    args = parser.parse_args()
    widths = tuple(int(value) for value in args.widths.split(","))
    pairs = confidence_logo.load_pairs({group: args.work / f"{group}.h5" for group in GROUPS})
    for variant in args.variants.split(","):
        started = time.perf_counter()
        results = run_variant(pairs, variant, args.steps, widths, args.crop, args.batch)
        ratio = np.mean([r["auc"] / r["optimal"] for r in results.values()])
        names = ("auc", "target_coverage", "target_bad3", "pair_target_coverage", "pair_target_bad3", "ranking_target_coverage")
        mean = {name: float(np.mean([np.nan if r[name] is None else r[name] for r in results.values()])) for name in names}
        print(
            f"{variant}: AUC x100 {100 * mean['auc']:.2f}, / optimal {ratio:.2f}, kept at 1% isotonic {100 * mean['target_coverage']:.1f}% "
            f"(bad-3 {100 * mean['target_bad3']:.2f}%), isotonic-pair {100 * mean['pair_target_coverage']:.1f}% "
            f"(bad-3 {100 * mean['pair_target_bad3']:.2f}%), ranking ceiling {100 * mean['ranking_target_coverage']:.1f}% "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        if args.json:
            merged = json.loads(args.json.read_text()) if args.json.exists() else {}
            key = f"{variant}@{args.steps}x{args.batch}x{args.crop}:{args.widths}"
            merged[key] = results
            args.json.write_text(json.dumps(merged, indent=1) + "\n")


if __name__ == "__main__":
    main()
