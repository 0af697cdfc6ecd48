"""Samples for ``pseudolabel adapt``: images, proxy disparities and confidences from a proxies file.

:class:`ProxyAdaptationDataset` reads, for every pair of a proxies HDF5 file (:mod:`pseudolabel.store`),
the left and right images named in the pair's ``left``/``right`` attributes, the SGM proxy
``disparity`` and the confidence map ``confidence/<measure>`` (written by
``pseudolabel confidence score``), optionally the SGM ``valid`` mask and the ground truth named in
the pair's ``gt_left`` attribute (only for supervised fine-tuning, the upper bound of the
benchmark). Training samples are random crops; evaluation samples are whole images. It follows the
dataset protocol of :class:`pseudolabel.learn.trainer.Trainer` (any non-negative index is valid; sample
``i`` is pair ``permutation_e[i % N]`` of epoch ``e = i // N``, cropped with the generator of
:func:`pseudolabel.learn.samples.sample_rng`), so a resumed run sees exactly the samples it would have seen.

Image paths stored in the file may be relative: they are tried as given (relative to the current
folder, as ``pseudolabel sgm`` was run), then relative to the proxies file's folder.

Sample dictionary (tensors), the batch keys of :class:`pseudolabel.learn.adaptation.AdaptationObjective`:

==================  =============  =====================================================================
key                 shape, dtype   meaning
==================  =============  =====================================================================
``left``, ``right``  (3, h, w) f32  RGB in [0, 1] (gray images repeated to 3 channels); 0 in padding
``proxy``           (1, h, w) f32  proxy left disparity, pixels; NaN = unknown (padding, non-finite)
``confidence``      (1, h, w) f32  confidence of the proxy in [0, 1]; 0 in padding
``proxy_valid``     (1, h, w) bool only with ``use_valid``: SGM left-right check passed
``disparity``       (1, h, w) f32  only with ``with_ground_truth``: GT left disparity (0 where unknown)
``valid``           (1, h, w) bool only with ``with_ground_truth``: GT known
``index``           () int64       sample index
==================  =============  =====================================================================

Torch is imported here because the samples are tensors; this module is only imported by the
commands that run networks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pseudolabel.datasets import evaluation_mask as read_evaluation_mask
from pseudolabel.errors import InputError
from pseudolabel.learn.samples import AugmentConfig, augment_pair, epoch_shuffled_index, sample_rng, to_tensor_image

__all__ = ["AdaptationPair", "ProxyAdaptationDataset", "describe_pairs", "load_adaptation_pairs"]


@dataclass
class AdaptationPair:
    """One pair in memory.

    Attributes:
        key: pair key in the proxies file.
        left, right: (H, W, 3) ``uint8``/``uint16`` RGB images.
        proxy: (H, W) ``float32`` proxy left disparity, pixels, NaN = unknown.
        confidence: (H, W) ``float32`` in [0, 1].
        valid: (H, W) ``bool`` SGM left-right check mask, or ``None`` when not read.
        ground_truth: (H, W) ``float32`` left ground truth, pixels, NaN = unknown, or ``None``.
        mask: (H, W) ``bool`` evaluation mask of the pair (e.g. Middlebury ``nonocc``), or ``None``.
    """

    key: str
    left: np.ndarray
    right: np.ndarray
    proxy: np.ndarray
    confidence: np.ndarray
    valid: np.ndarray | None = None
    ground_truth: np.ndarray | None = None
    mask: np.ndarray | None = None


def load_adaptation_pairs(
    proxies: str | os.PathLike[str],
    measure: str = "ccnn",
    keys: Sequence[str] | None = None,
    *,
    use_valid: bool = False,
    with_ground_truth: bool = False,
    evaluation_mask: str | None = None,
) -> list[AdaptationPair]:
    """Read the pairs of a proxies file (all, or those of ``keys``) into memory.

    Args:
        proxies: the HDF5 file of ``pseudolabel sgm`` with ``confidence/<measure>`` in every pair.
        measure: confidence measure name (``ccnn``, ``apkr``, ...).
        keys: pair keys to read (default: every complete pair).
        use_valid: also read the SGM ``valid`` mask.
        with_ground_truth: also read the ground truth named in each pair's ``gt_left`` attribute.
        evaluation_mask: with ground truth, also read this named mask of the pair (``nonocc``), if the
            pair has one.

    Raises:
        InputError: missing file, no pairs, a pair without the confidence (the message says to run
        ``pseudolabel confidence score``), missing images, or ground truth asked for but absent.
    """
    from pseudolabel.io import read_disparity, read_image
    from pseudolabel.store.names import resolve_pair_file
    from pseudolabel.store.proxies import open_proxies

    path = Path(proxies)
    if not path.is_file():
        raise InputError(f"--proxies {path}: no such file; create it with `pseudolabel sgm --in ... --out {path}`")
    dataset_name = f"confidence/{measure}"
    pairs: list[AdaptationPair] = []
    with open_proxies(path) as store:
        all_keys = store.keys()
        if not all_keys:
            raise InputError(f"--proxies {path}: holds no finished pair; run `pseudolabel sgm` to fill it")
        wanted = list(all_keys) if keys is None else list(keys)
        lacking = [key for key in wanted if not store.has(key, dataset_name)]
        if lacking:
            stored = sorted(set().union(*(store.list_confidences(key) for key in wanted)))
            hint = f" (stored measures: {', '.join(stored)})" if stored else ""
            raise InputError(
                f"--proxies {path}: {len(lacking)} of {len(wanted)} pair(s) (e.g. {lacking[0]!r}) have no {dataset_name}{hint}; "
                f"run `pseudolabel confidence score --proxies {path}` first, or choose another --measure"
            )
        for key in wanted:
            attrs = store.pair_attrs(key)
            names = ["disparity", dataset_name] + (["valid"] if use_valid else [])
            arrays = store.read(key, names)
            left = read_image(resolve_pair_file(path, str(attrs["left"]), "left", key))
            right = read_image(resolve_pair_file(path, str(attrs["right"]), "right", key))
            if left.ndim == 3 and left.shape[2] == 4:  # RGBA -> RGB
                left, right = left[:, :, :3], right[:, :, :3]
            proxy = np.asarray(arrays["disparity"], dtype=np.float32)
            if left.shape[:2] != proxy.shape or right.shape[:2] != proxy.shape:
                raise InputError(
                    f"{path}: pair {key!r} images are {left.shape[:2]} / {right.shape[:2]} but its proxy is {proxy.shape}; "
                    "the images changed since `pseudolabel sgm` ran: recompute the proxies"
                )
            confidence = np.nan_to_num(np.asarray(arrays[dataset_name], dtype=np.float32), nan=0.0).clip(0.0, 1.0)
            ground_truth = mask = None
            if with_ground_truth:
                if not attrs.get("gt_left"):
                    raise InputError(f"{path}: pair {key!r} has no ground truth (gt_left attribute); supervised losses (l1) need it")
                ground_truth = read_disparity(
                    resolve_pair_file(path, str(attrs["gt_left"]), "ground-truth", key), float(attrs.get("gt_scale", 1.0) or 1.0)
                )
                ground_truth = np.where(np.isfinite(ground_truth) & (ground_truth > 0), ground_truth, np.nan).astype(np.float32)
                masks = attrs.get("masks") or {}
                if evaluation_mask and evaluation_mask in masks:
                    mask = read_evaluation_mask(resolve_pair_file(path, str(masks[evaluation_mask]), f"{evaluation_mask} mask", key))
            pairs.append(
                AdaptationPair(
                    key=key,
                    left=left,
                    right=right,
                    proxy=np.where(np.isfinite(proxy), proxy, np.nan).astype(np.float32),
                    confidence=confidence,
                    valid=np.asarray(arrays["valid"], dtype=bool) if use_valid else None,
                    ground_truth=ground_truth,
                    mask=mask,
                )
            )
    return pairs


class ProxyAdaptationDataset(Dataset):
    """Adaptation samples (see the module docstring for the keys) from pairs held in memory.

    Args:
        pairs: from :func:`load_adaptation_pairs`.
        crop: ``(height, width)`` of the random crops, or ``None`` for whole images (evaluation;
            pairs of different sizes then need a batch size of 1). Images smaller than the crop are
            padded (images and confidence with 0, proxy and ground truth with NaN).
        seed: seed of the pair order, the crop positions and the augmentation.
        shuffle: a fresh permutation of the pairs every epoch (else pairs in order).
        augment: photometric augmentation of both views (:func:`pseudolabel.learn.samples.augment_pair`,
            drawn per sample; the proxy and confidence are unchanged), or ``None``.
    """

    def __init__(
        self,
        pairs: Sequence[AdaptationPair],
        crop: tuple[int, int] | None = None,
        seed: int = 0,
        shuffle: bool = True,
        augment: AugmentConfig | None = None,
    ) -> None:
        if not pairs:
            raise InputError("no pairs to adapt on; check --proxies and --keys")
        if crop is not None and (crop[0] < 1 or crop[1] < 2):
            raise InputError(f"--crop {crop[0]}x{crop[1]}: give a positive HEIGHTxWIDTH (width at least 2)")
        self.pairs = list(pairs)
        self.crop = crop
        self.seed = int(seed)
        self.shuffle = shuffle
        self.augment = augment

    def __len__(self) -> int:
        return len(self.pairs)

    def pair_index(self, index: int) -> int:
        """Which pair sample ``index`` reads."""
        return epoch_shuffled_index(index, len(self.pairs), self.seed, self.shuffle)

    def _window(self, shape: tuple[int, int], index: int) -> tuple[slice, slice, tuple[int, int]]:
        """Crop window and padding for sample ``index`` on a (H, W) image."""
        height, width = shape
        if self.crop is None:
            return slice(0, height), slice(0, width), (0, 0)
        crop_height, crop_width = self.crop
        rng = sample_rng(self.seed, index, stream=1)
        top = int(rng.integers(0, max(height - crop_height, 0) + 1))
        start = int(rng.integers(0, max(width - crop_width, 0) + 1))
        rows = slice(top, top + min(crop_height, height))
        cols = slice(start, start + min(crop_width, width))
        return rows, cols, (max(crop_height - height, 0), max(crop_width - width, 0))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if index < 0:
            raise IndexError(index)
        pair = self.pairs[self.pair_index(index)]
        rows, cols, (pad_h, pad_w) = self._window(pair.proxy.shape, index)

        def take(array: np.ndarray, fill: float) -> np.ndarray:
            window = array[rows, cols]
            if pad_h or pad_w:
                widths = ((0, pad_h), (0, pad_w)) + ((0, 0),) * (window.ndim - 2)
                window = np.pad(window, widths, constant_values=fill)
            return np.ascontiguousarray(window)

        left, right = to_tensor_image(take(pair.left, 0)), to_tensor_image(take(pair.right, 0))
        if self.augment is not None:
            rng = sample_rng(self.seed, index, stream=2)
            left_hwc, right_hwc = augment_pair(left.permute(1, 2, 0).numpy(), right.permute(1, 2, 0).numpy(), rng, self.augment)
            left = torch.from_numpy(np.ascontiguousarray(left_hwc.transpose(2, 0, 1)))
            right = torch.from_numpy(np.ascontiguousarray(right_hwc.transpose(2, 0, 1)))
        sample: dict[str, torch.Tensor] = {
            "left": left,
            "right": right,
            "proxy": torch.from_numpy(take(pair.proxy, np.nan))[None],
            "confidence": torch.from_numpy(take(pair.confidence, 0.0))[None],
            "index": torch.tensor(int(index), dtype=torch.int64),
        }
        if pair.valid is not None:
            sample["proxy_valid"] = torch.from_numpy(take(pair.valid, False))[None]
        if pair.ground_truth is not None:
            ground_truth = take(pair.ground_truth, np.nan)
            known = np.isfinite(ground_truth) & (ground_truth > 0)
            sample["disparity"] = torch.from_numpy(np.where(known, ground_truth, 0.0).astype(np.float32))[None]
            sample["valid"] = torch.from_numpy(known)[None]
        return sample


def describe_pairs(pairs: Sequence[AdaptationPair]) -> dict[str, Any]:
    """Small JSON-able summary of the data (for checkpoint metadata)."""
    return {
        "pairs": len(pairs),
        "keys": [pair.key for pair in pairs][:50],
        "pixels": int(sum(pair.proxy.size for pair in pairs)),
    }
