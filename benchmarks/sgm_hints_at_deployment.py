"""Issue 18: would a network that reads SGM's confident labels at deployment beat SGM dense on unseen frames?

On a frame that adaptation did not see, SGM and the confidence run anyway (they are cheap next to a
user's recording), so the deployed network could use their confident labels. Three ways, none of
which retrains the network:

* **fusion**: the confident SGM label where confidence > tau, the network's disparity elsewhere;
* **anchor**: inside MADNet's coarse-to-fine loop, the upsampled disparity of every level is replaced
  by the mean of the confident labels of each cell (in that level's pixels, where at least half of
  the cell is labelled) before the right features are warped, and likewise before the context network;
* **modulate** (Poggi et al., "Guided Stereo Matching", CVPR 2019): the correlation channel ``k`` of a
  labelled cell is multiplied by ``1 - v + v * K * exp(-(k - k_hint)**2 / (2 c**2))`` (``v`` = 1 where
  labelled, ``K`` = 10, ``c`` = 1, ``k_hint`` = the label's offset from the level's warp disparity).

Each is scored on the pixels with ground truth (bad-3 %), over all of them and over the pixels
without a label (where the network must do better than SGM's filling to win).

Inputs come from ``benchmarks/adaptation_generalisation.py --work WORK`` (the evaluation frame's
proxies ``WORK/kitti_eval.h5`` with ``confidence/ccnn``, and adapted checkpoints)::

    python benchmarks/sgm_hints_at_deployment.py --work /tmp/gen/work --models madnet_synth /tmp/gen/work/kitti_guided_4m.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from pseudolabel.models.madnet import MADNet, full_precision, horizontal_correlation
from pseudolabel.models.warp import warp_right_to_left

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = next((folder / "shared" / "data" for folder in REPO.parents if (folder / "shared" / "data").is_dir()), REPO.parent / "shared" / "data")
KITTI_EVAL = "000070_10"
MODES = ("none", "anchor", "modulate")


def level_labels(labels: torch.Tensor, level: int, shape: torch.Size) -> torch.Tensor:
    """Confident labels averaged over the cells of ``level``, in that level's pixels.

    Args:
        labels: (1, 1, H, W) float32 full-resolution labels (padded like the network's input), NaN where none.
        level: pyramid level (cells of ``2**level`` pixels).
        shape: (h, w) of the level's features.

    Returns:
        (1, 1, h, w) float32 disparity in level pixels, NaN where less than half the cell is labelled.
    """
    size = 2**level
    labelled = torch.isfinite(labels).float()
    sums = F.avg_pool2d(torch.nan_to_num(labels, nan=0.0), size, size)[..., : shape[0], : shape[1]]
    share = F.avg_pool2d(labelled, size, size)[..., : shape[0], : shape[1]]
    return torch.where(share >= 0.5, sums / share.clamp(min=1e-6) / size, torch.full_like(sums, float("nan")))


class HintedMADNet(MADNet):
    """MADNet whose coarse-to-fine loop reads confident labels (``self.labels``, set before each call)."""

    mode: str = "none"
    labels: torch.Tensor | None = None
    gain: float = 10.0
    width: float = 1.0

    def forward_padded(self, left: torch.Tensor, right: torch.Tensor) -> list[torch.Tensor]:
        both = torch.cat((left, right), dim=0)
        features: list[torch.Tensor] = []
        for block in self.encoder:
            both = block(both)
            features.append(both)
        batch = left.shape[0]
        offsets = torch.arange(-self.radius, self.radius + 1, dtype=torch.float32).view(1, -1, 1, 1)
        disparity: torch.Tensor | None = None
        per_level: list[torch.Tensor] = []
        for level in range(self.levels, self.output_level - 1, -1):
            left_features, right_features = features[level - 1][:batch], features[level - 1][batch:]
            decoder = self.decoders[level - self.output_level]
            hints = level_labels(self.labels, level, left_features.shape[-2:]) if self.mode != "none" and self.labels is not None else None
            if disparity is None:
                base = torch.zeros_like(left_features[:, :1])
                correlation = horizontal_correlation(left_features, right_features, self.radius)
            else:
                base = F.interpolate(disparity, size=left_features.shape[-2:], mode="bilinear", align_corners=False) * 2.0
                if self.mode == "anchor" and hints is not None:
                    base = torch.where(torch.isfinite(hints), hints, base)
                warped, _ = warp_right_to_left(right_features, base)
                correlation = horizontal_correlation(left_features, warped, self.radius)
            if self.mode == "modulate" and hints is not None:
                labelled = torch.isfinite(hints).float()
                target = torch.nan_to_num(hints - base, nan=0.0)
                correlation = correlation * (1 - labelled + labelled * self.gain * torch.exp(-((offsets - target) ** 2) / (2 * self.width**2)))
            if level == self.levels:
                disparity = full_precision(decoder(torch.cat((left_features, correlation), dim=1)))
            else:
                disparity = base + full_precision(decoder(torch.cat((left_features, correlation, base), dim=1)))
            per_level.append(disparity)
        assert disparity is not None
        outputs = per_level[::-1]
        if self.context is not None:
            left_features = features[self.output_level - 1][:batch]
            if self.mode == "anchor" and self.labels is not None:
                hints = level_labels(self.labels, self.output_level, left_features.shape[-2:])
                disparity = torch.where(torch.isfinite(hints), hints, disparity)
            outputs = [disparity + full_precision(self.context(torch.cat((left_features, disparity), dim=1)))] + outputs
        return outputs


def bad3(disparity: np.ndarray, truth: np.ndarray, where: np.ndarray) -> float:
    known = np.isfinite(truth) & where
    return float(100.0 * np.mean(np.abs(disparity[known] - truth[known]) > 3.0))


def run(work: Path, data: Path, models: list[str], taus: list[float]) -> list[dict[str, Any]]:
    from pseudolabel.io import read_disparity
    from pseudolabel.learn.adaptation_data import load_adaptation_pairs
    from pseudolabel.learn.networks import open_network
    from pseudolabel.learn.predict import predict_disparity

    pair = load_adaptation_pairs(work / "kitti_eval.h5", "ccnn", [KITTI_EVAL])[0]
    truth = read_disparity(data / "kitti2012" / "training" / "disp_noc" / f"{KITTI_EVAL}.png", 256.0)
    truth = np.where(np.isfinite(truth) & (truth > 0), truth, np.nan).astype(np.float32)
    height, width = truth.shape
    rows = []
    everywhere = np.ones_like(truth, dtype=bool)
    for model in models:
        opened = open_network(model)
        if opened.arch != "madnet":
            raise SystemExit(f"{model}: a MADNet checkpoint is needed, not {opened.arch}")
        network = HintedMADNet(**opened.arch_kwargs)
        network.load_state_dict(opened.network.state_dict())
        network.eval()
        for tau in taus:
            keep = pair.confidence > tau
            padded = np.full((-(-height // 64) * 64, -(-width // 64) * 64), np.nan, np.float32)
            padded[:height, :width] = np.where(keep, pair.proxy, np.nan)
            network.labels = torch.from_numpy(padded)[None, None]
            for mode in MODES:
                network.mode = mode
                with torch.no_grad():
                    prediction = predict_disparity(network, pair.left, pair.right)
                fused = np.where(keep, pair.proxy, prediction)
                rows.append(
                    {
                        "model": model,
                        "tau": tau,
                        "mode": mode,
                        "labelled_pct": float(100.0 * keep[np.isfinite(truth)].mean()),
                        "network": bad3(prediction, truth, everywhere),
                        "network_unlabelled": bad3(prediction, truth, ~keep),
                        "fused": bad3(fused, truth, everywhere),
                        "sgm_dense": bad3(pair.proxy, truth, everywhere),
                        "sgm_unlabelled": bad3(pair.proxy, truth, ~keep),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="--work folder of adaptation_generalisation.py (kitti_eval.h5).")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--models", nargs="+", default=["madnet_synth"], help="MADNet checkpoints or shipped names.")
    parser.add_argument("--taus", type=float, nargs="+", default=[0.5, 0.9])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = run(args.work, args.data, args.models, args.taus)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
