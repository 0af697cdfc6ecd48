"""Warping the right view into the left view: the one implementation used by the networks and the losses.

:func:`warp_right_to_left` is the feature warp of MADNet's decoders (:mod:`pseudolabel.models.madnet`)
and the image / right-disparity warp of the photometric, left-right and WLCN losses
(:mod:`pseudolabel.learn.photometric`). Disparity convention: the left pixel ``(y, x)`` matches the
right pixel ``(y, x - d)``, ``d >= 0``, in pixels of the maps' own resolution.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def warp_right_to_left(right: Tensor, disparity: Tensor) -> tuple[Tensor, Tensor]:
    """Sample ``right`` at ``x - d(x)`` (bilinear, differentiable; zeros outside the image).

    Uses :func:`torch.nn.functional.grid_sample` with ``align_corners=True`` (pixel centres at
    integer coordinates 0 .. W-1), so pixel ``x`` of the result is
    ``(1 - f) * right[floor(x - d)] + f * right[floor(x - d) + 1]`` with ``f`` the fractional part.
    The sampling grid is computed in ``right``'s dtype (the disparity is cast to it), so that under
    mixed precision a network warps its low-precision features without a cast of them.

    Args:
        right: (B, C, H, W) right-view image, features, or any right-view map (e.g. a right disparity);
            any floating dtype.
        disparity: (B, 1, H, W) left-view disparity, pixels.

    Returns:
        ``(warped, valid)``: (B, C, H, W) the right map seen from the left view, dtype of ``right``;
        and a (B, 1, H, W) ``bool`` mask, ``False`` where ``x - d`` falls outside ``[0, W - 1]``
        (those pixels are warped from outside the right view and must not be used by a loss).

    Raises:
        ValueError: a map is not 4-D, ``disparity`` has more than one channel or another batch or
            size than ``right``, or the maps are narrower than 2 pixels.
    """
    if right.dim() != 4:
        raise ValueError(f"right must have shape (B, C, H, W); got {tuple(right.shape)}")
    if disparity.dim() != 4 or disparity.shape[1] != 1:
        raise ValueError(f"disparity must have shape (B, 1, H, W); got {tuple(disparity.shape)}")
    batch, _, height, width = right.shape
    if disparity.shape[0] != batch or disparity.shape[2:] != right.shape[2:]:
        raise ValueError(f"disparity {tuple(disparity.shape)} does not match the image {tuple(right.shape)}")
    if width < 2:
        raise ValueError("warping needs images at least 2 pixels wide")
    xs = torch.arange(width, dtype=right.dtype, device=right.device).view(1, 1, 1, width)
    source_x = xs - disparity.to(right.dtype)  # (B, 1, H, W) sampling position in the right view, pixels
    valid = (source_x >= 0) & (source_x <= width - 1)
    grid_x = 2.0 * source_x / (width - 1) - 1.0
    if height > 1:
        ys = torch.arange(height, dtype=right.dtype, device=right.device).view(1, 1, height, 1)
        grid_y = (2.0 * ys / (height - 1) - 1.0).expand_as(grid_x)
    else:
        grid_y = torch.zeros_like(grid_x)
    grid = torch.stack((grid_x[:, 0], grid_y[:, 0]), dim=-1)  # (B, H, W, 2)
    warped = F.grid_sample(right, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return warped, valid
