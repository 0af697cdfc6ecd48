"""Replay of synthetic pairs with exact ground truth during adaptation (``pseudolabel adapt --replay 0.25``).

:class:`ReplayDataset` wraps an adaptation dataset: sample ``i`` is, with probability ``fraction``
(decided by ``(seed, i)`` alone, so a resumed run sees the same samples), a pair rendered by
:func:`pseudolabel.synth.scene.render_pair` instead of a real one. The synthetic sample carries its
exact disparity as ``proxy`` with confidence 1 everywhere, so the guided loss (and any other term)
treats it as perfectly labelled: the network keeps practising on data like its source training set
while it adapts. It has the same size as the real sample it replaces (the crop, or the whole pair).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pseudolabel.errors import InputError
from pseudolabel.learn.adaptation_data import ProxyAdaptationDataset
from pseudolabel.learn.samples import sample_rng, to_tensor_image

__all__ = ["ReplayDataset", "replay_config"]

#: synthetic disparities span about this share of the image width (96 px at the generator's 512 px default).
DISPARITY_PER_WIDTH = 96.0 / 512.0


def replay_config(height: int, width: int) -> Any:
    """The :class:`pseudolabel.synth.config.SynthConfig` of a ``height`` x ``width`` replay pair."""
    from pseudolabel.synth.config import SynthConfig

    max_disp = max(8.0, round(DISPARITY_PER_WIDTH * width))
    return SynthConfig(width=int(width), height=int(height), max_disp=float(max_disp), min_disp=min(0.5, max_disp / 4))


class ReplayDataset(Dataset):
    """``base`` with a share ``fraction`` of its samples replaced by synthetic pairs (see the module docstring)."""

    def __init__(self, base: ProxyAdaptationDataset, fraction: float, seed: int = 0) -> None:
        if not 0.0 <= fraction < 1.0:
            raise InputError(f"--replay {fraction}: give the share of synthetic samples, in [0, 1)")
        self.base = base
        self.fraction = float(fraction)
        self.seed = int(seed)
        self._configs: dict[tuple[int, int], Any] = {}

    def __len__(self) -> int:
        return len(self.base)

    def is_synthetic(self, index: int) -> bool:
        """Whether sample ``index`` is a synthetic pair."""
        return bool(sample_rng(self.seed, index, stream=5).random() < self.fraction)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not self.is_synthetic(index):
            return self.base[index]
        from pseudolabel.synth.scene import render_pair

        real = self.base.pairs[self.base.pair_index(index)]
        height, width = self.base.crop if self.base.crop is not None else real.proxy.shape
        config = self._configs.setdefault((height, width), replay_config(height, width))
        pair = render_pair(config, self.seed * 1_000_003 + int(index))
        disparity = np.asarray(pair.disp_left, dtype=np.float32)
        known = np.isfinite(disparity) & (disparity > 0)
        sample: dict[str, torch.Tensor] = {
            "left": to_tensor_image(pair.left),
            "right": to_tensor_image(pair.right),
            "proxy": torch.from_numpy(np.where(known, disparity, np.nan).astype(np.float32))[None],
            "confidence": torch.from_numpy(known.astype(np.float32))[None],
            "index": torch.tensor(int(index), dtype=torch.int64),
        }
        if real.valid is not None:
            sample["proxy_valid"] = torch.from_numpy(known)[None]
        if real.ground_truth is not None:
            sample["disparity"] = torch.from_numpy(np.where(known, disparity, 0.0).astype(np.float32))[None]
            sample["valid"] = torch.from_numpy(known)[None]
        return sample
