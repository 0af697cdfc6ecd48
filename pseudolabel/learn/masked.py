"""Masked averages and shape checks shared by the losses of :mod:`pseudolabel.learn.losses` and
:mod:`pseudolabel.learn.photometric`.

Maps are (B, C, H, W) tensors of any floating dtype and device. A *weight map* is (B, 1, H, W), bool
(a mask) or float (weights); averages are ``sum(w * v) / sum(w)`` and are an exact zero, still in the
autograd graph, when no weight is positive.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: Lower bound of the total weight that divides a masked sum.
WEIGHT_EPS = 1e-12


def check_map(name: str, tensor: Tensor, channels: int | None = 1) -> None:
    """Raise a ``ValueError`` unless ``tensor`` is (B, C, H, W) (with C == ``channels`` if given)."""
    if tensor.dim() != 4 or (channels is not None and tensor.shape[1] != channels):
        expected = f"(B, {channels}, H, W)" if channels is not None else "(B, C, H, W)"
        raise ValueError(f"{name} must have shape {expected}; got {tuple(tensor.shape)}")


def weight_map(valid: Tensor | None, like: Tensor) -> Tensor:
    """A float weight map (B, 1, H, W) of ``like``'s dtype/device from an optional mask or weight map."""
    if valid is None:
        return torch.ones_like(like[:, :1])
    check_map("valid", valid)
    return valid.to(dtype=like.dtype, device=like.device)


def masked_mean(values: Tensor, weights: Tensor) -> Tensor:
    """``sum(w * v) / sum(w)`` over all elements; ``weights`` broadcasts against ``values``.

    Returns a zero scalar (attached to the graph) when the total weight is zero.
    """
    weights = weights.expand_as(values)
    total = weights.sum()
    return (weights * values).sum() / total.clamp_min(WEIGHT_EPS)


def finite_or_zero(tensor: Tensor) -> tuple[Tensor, Tensor]:
    """(tensor with non-finite values replaced by 0, bool mask of the finite values).

    ``torch.where`` (not multiplication by a mask) keeps NaNs out of values and gradients.
    """
    finite = torch.isfinite(tensor)
    return torch.where(finite, tensor, torch.zeros_like(tensor)), finite


def local_mean(image: Tensor, window: int) -> Tensor:
    """Mean over a ``window`` x ``window`` box clipped to the image (same size as ``image``).

    Near the border only the pixels inside the image are averaged, so any image size works
    (even one smaller than the window).
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number; got {window}")
    half = window // 2
    if window <= 3:
        return F.avg_pool2d(image, window, stride=1, padding=half, count_include_pad=False)
    # a clipped box mean is separable (its pixel count is rows x columns): two 1-D passes are
    # identical and cheaper for large windows
    rows = F.avg_pool2d(image, (window, 1), stride=1, padding=(half, 0), count_include_pad=False)
    return F.avg_pool2d(rows, (1, window), stride=1, padding=(0, half), count_include_pad=False)
