"""Training samples of stereo networks: crops, photometric augmentation, the datasets (pairs rendered
on the fly, labelled pairs on disk) and the sampler that gives each step its sample indices.

A sample is a dict of tensors: ``left``/``right`` (3, h, w) ``float32`` in [0, 1], ``disparity``
(1, h, w) ``float32`` left ground truth in pixels (0 where unknown), ``valid`` (1, h, w) ``bool``,
``index`` () ``int64``; a :data:`Batch` stacks them along a first dimension B.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from pseudolabel.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from pseudolabel.datasets import PairInfo
    from pseudolabel.synth.scene import SynthConfig

Batch = dict[str, torch.Tensor]


def sample_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """The random generator of sample ``index`` of a run seeded with ``seed`` (independent of workers/ranks)."""
    return np.random.default_rng([int(seed), int(index), int(stream)])


def to_tensor_image(image: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, 3) ``uint8``/``uint16`` RGB -> (3, H, W) ``float32`` in ``[0, 1]`` (gray is repeated)."""
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    array = image.astype(np.float32) / np.float32(scale)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


@dataclass(frozen=True)
class AugmentConfig:
    """Photometric augmentation, drawn per pair (both views get the same draw plus a small per-view jitter).

    Attributes:
        brightness: multiplicative brightness range ``[1 - b, 1 + b]``.
        contrast: contrast scale range ``[1 - c, 1 + c]`` around the image mean.
        gamma: gamma range ``[1 - g, 1 + g]``.
        color: per-channel gain range ``[1 - c, 1 + c]``.
        view_jitter: extra independent brightness change per view, ``[1 - j, 1 + j]``.
        noise: largest standard deviation of additive Gaussian noise (images in ``[0, 1]``).
        gray_probability: probability of turning both views gray (3 equal channels).
    """

    brightness: float = 0.25
    contrast: float = 0.3
    gamma: float = 0.2
    color: float = 0.1
    view_jitter: float = 0.05
    noise: float = 0.02
    gray_probability: float = 0.2


def augment_pair(left: np.ndarray, right: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """Photometric augmentation of a pair of (H, W, 3) ``float32`` images in ``[0, 1]``; returns new arrays in ``[0, 1]``."""
    brightness = rng.uniform(1 - config.brightness, 1 + config.brightness)
    contrast = rng.uniform(1 - config.contrast, 1 + config.contrast)
    gamma = rng.uniform(1 - config.gamma, 1 + config.gamma)
    color = rng.uniform(1 - config.color, 1 + config.color, size=3).astype(np.float32)
    gray = rng.random() < config.gray_probability
    outputs = []
    for image in (left, right):
        jitter = rng.uniform(1 - config.view_jitter, 1 + config.view_jitter)
        noise_sigma = rng.uniform(0, config.noise)
        mean = image.mean()
        out = (image - mean) * contrast + mean
        out = np.clip(out * brightness * jitter * color, 0.0, 1.0) ** gamma
        if gray:
            out = np.repeat(out.mean(axis=2, keepdims=True), 3, axis=2)
        out = out + rng.normal(0.0, noise_sigma, size=out.shape)
        outputs.append(np.clip(out, 0.0, 1.0).astype(np.float32))
    return outputs[0], outputs[1]


def crop_sample(
    left: np.ndarray, right: np.ndarray, disparity: np.ndarray, crop: tuple[int, int] | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random crop of size ``crop = (height, width)``; smaller images are padded (images with 0,
    disparity with NaN = unknown) so that every sample of a batch has the same size.

    Args:
        left, right: (H, W, 3) float images. disparity: (H, W) float, NaN = unknown.
    """
    if crop is None:
        return left, right, disparity
    crop_height, crop_width = crop
    height, width = disparity.shape
    if height < crop_height or width < crop_width:
        pad_h, pad_w = max(crop_height - height, 0), max(crop_width - width, 0)
        left = np.pad(left, ((0, pad_h), (0, pad_w), (0, 0)))
        right = np.pad(right, ((0, pad_h), (0, pad_w), (0, 0)))
        disparity = np.pad(disparity, ((0, pad_h), (0, pad_w)), constant_values=np.nan)
        height, width = disparity.shape
    top = int(rng.integers(0, height - crop_height + 1))
    start = int(rng.integers(0, width - crop_width + 1))
    window = (slice(top, top + crop_height), slice(start, start + crop_width))
    return left[window], right[window], disparity[window]


def make_sample(
    left: np.ndarray,
    right: np.ndarray,
    disparity: np.ndarray,
    rng: np.random.Generator,
    crop: tuple[int, int] | None,
    augment: AugmentConfig | None,
    index: int,
) -> Batch:
    """Crop, augment and convert one pair to the trainer's sample dictionary.

    Args:
        left, right: (H, W, 3) or (H, W) ``uint8``/``uint16`` RGB images.
        disparity: (H, W) ``float32`` left-view ground truth in pixels, NaN = unknown.

    Returns:
        ``left``/``right`` (3, h, w) float32 in ``[0, 1]``; ``disparity`` (1, h, w) float32 (0 where
        unknown); ``valid`` (1, h, w) bool; ``index`` int64 scalar.
    """
    left_f = to_tensor_image(left).permute(1, 2, 0).numpy()
    right_f = to_tensor_image(right).permute(1, 2, 0).numpy()
    left_f, right_f, disparity = crop_sample(left_f, right_f, np.asarray(disparity, dtype=np.float32), crop, rng)
    if augment is not None:
        left_f, right_f = augment_pair(left_f, right_f, rng, augment)
    valid = np.isfinite(disparity) & (disparity > 0)
    return {
        "left": torch.from_numpy(np.ascontiguousarray(left_f.transpose(2, 0, 1))),
        "right": torch.from_numpy(np.ascontiguousarray(right_f.transpose(2, 0, 1))),
        "disparity": torch.from_numpy(np.where(valid, disparity, 0.0).astype(np.float32)[None]),
        "valid": torch.from_numpy(valid[None]),
        "index": torch.tensor(index, dtype=torch.int64),
    }


class SyntheticStereoDataset(Dataset):
    """Synthetic pairs rendered on the fly: sample ``i`` is ``render_pair(config, seed + i)``, cropped and augmented.

    Any non-negative index is valid (the stream is endless); ``len()`` is only nominal.
    """

    def __init__(
        self, config: SynthConfig, seed: int = 0, crop: tuple[int, int] | None = None, augment: AugmentConfig | None = AugmentConfig()
    ) -> None:
        self.config = config
        self.seed = int(seed)
        self.crop = crop
        self.augment = augment

    def __len__(self) -> int:
        return 2**31 - 1

    def __getitem__(self, index: int) -> Batch:
        from pseudolabel.synth.scene import render_pair

        pair = render_pair(self.config, self.seed * 1_000_003 + int(index))
        rng = sample_rng(self.seed, index, stream=1)
        return make_sample(pair.left, pair.right, pair.disp_left, rng, self.crop, self.augment, int(index))


def epoch_shuffled_index(index: int, count: int, seed: int, shuffle: bool = True) -> int:
    """Which of ``count`` items sample ``index`` reads: a fresh permutation every epoch (``index // count``).

    The permutation depends only on ``(seed, epoch)``, so any process computes the same order.
    Without ``shuffle`` the items come in order.
    """
    epoch, position = divmod(int(index), count)
    if not shuffle:
        return position
    return int(np.random.default_rng([seed, epoch, 7]).permutation(count)[position])


class StereoPairDataset(Dataset):
    """Pairs on disk with left ground truth (``PairInfo`` from :func:`pseudolabel.datasets.discover_pairs`).

    Sample ``i`` is pair ``permutation_e[i % N]`` with ``e = i // N`` (a fresh shuffle every epoch, from
    the seed), randomly cropped and augmented; any non-negative index is valid.
    """

    def __init__(
        self,
        pairs: Sequence[PairInfo],
        seed: int = 0,
        crop: tuple[int, int] | None = None,
        augment: AugmentConfig | None = AugmentConfig(),
        shuffle: bool = True,
    ) -> None:
        if not pairs:
            raise InputError("--data: no stereo pairs found; point it at a KITTI, Middlebury or synth folder, or LEFT_DIR RIGHT_DIR")
        missing = [pair.key for pair in pairs if getattr(pair, "gt_left", None) is None]
        if missing:
            raise InputError(f"--data: {len(missing)} pair(s) have no ground truth (e.g. {missing[0]}); training needs left ground-truth disparity")
        self.pairs = list(pairs)
        self.seed = int(seed)
        self.crop = crop
        self.augment = augment
        self.shuffle = shuffle

    def __len__(self) -> int:
        return len(self.pairs)

    def pair_index(self, index: int) -> int:
        """Which pair sample ``index`` reads."""
        return epoch_shuffled_index(index, len(self.pairs), self.seed, self.shuffle)

    def __getitem__(self, index: int) -> Batch:
        from pseudolabel.io import read_disparity, read_image

        pair = self.pairs[self.pair_index(index)]
        left = read_image(pair.left)
        right = read_image(pair.right)
        if pair.gt_left is None:  # pragma: no cover - checked in __init__
            raise InputError(f"--data: pair {pair.key} has no ground truth")
        disparity = read_disparity(pair.gt_left, pair.gt_scale)
        return make_sample(left, right, disparity, sample_rng(self.seed, index, stream=1), self.crop, self.augment, int(index))


class StepBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices: global step ``s`` covers ``s*B .. s*B+B-1``; rank ``r`` of ``W``
    takes the ``r``-th of ``W`` equal slices. Steps ``start_step .. end_step - 1``."""

    def __init__(self, start_step: int, end_step: int, global_batch: int, rank: int = 0, world_size: int = 1) -> None:
        if global_batch % world_size:
            raise InputError(f"--batch-size {global_batch} must be a multiple of the number of processes ({world_size})")
        self.start_step, self.end_step = int(start_step), int(end_step)
        self.global_batch = int(global_batch)
        self.per_rank = self.global_batch // world_size
        self.rank = rank

    def __len__(self) -> int:
        return max(self.end_step - self.start_step, 0)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.end_step):
            first = step * self.global_batch + self.rank * self.per_rank
            yield list(range(first, first + self.per_rank))


def find_pairs(paths: Sequence[str | os.PathLike[str]]) -> list[PairInfo]:
    """The stereo pairs of dataset folders (KITTI, Middlebury, synth) or of ``LEFT_DIR RIGHT_DIR``.

    Raises:
        InputError: no folder given, or no pair found in them.
    """
    from pseudolabel.datasets import discover_pairs

    texts = [str(path) for path in paths]
    if not texts:
        raise InputError("give a dataset folder (KITTI, Middlebury, synth) or LEFT_DIR RIGHT_DIR")
    pairs = discover_pairs([Path(text) for text in texts])
    if not pairs:
        raise InputError(f"{' '.join(texts)}: no stereo pairs found; check the folder layout (KITTI, Middlebury, synth, or LEFT_DIR RIGHT_DIR)")
    return list(pairs)
