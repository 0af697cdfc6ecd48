"""Image-guided (joint bilateral) upsampling of a low-resolution disparity map.

A network that predicts at a quarter of the input resolution and upsamples bilinearly smears every
depth edge over a few pixels. Joint bilateral upsampling (Kopf, Cohen, Lischinski, Uyttendaele;
SIGGRAPH 2007) weights the low-resolution neighbours of each output pixel by how close their mean
colour is to the pixel's own colour, so the depth edge lands on the colour edge. It has no weights.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def guided_upsample(
    disparity: torch.Tensor, image: torch.Tensor, factor: int, sigma_space: float = 1.0, sigma_color: float = 0.05, radius: int = 1
) -> torch.Tensor:
    """Joint bilateral upsampling (Kopf et al., SIGGRAPH 2007) of a disparity map by an integer factor.

    Output pixel ``(y, x)`` lies in low-resolution cell ``(y // factor, x // factor)``; it is the
    weighted mean of the ``(2 radius + 1)**2`` cells around that one (replicated at the borders),
    with weight ``s * (c + 1e-6)``: ``s`` a Gaussian (``sigma_space``, low-resolution pixels) of the
    distance between the pixel centre and the cell centre, ``c`` a Gaussian (``sigma_color``) of the
    Euclidean RGB distance between the pixel's colour and the cell's mean colour. The ``1e-6`` keeps
    a pixel whose colour matches no cell at the spatial (near bilinear) mean.

    Args:
        disparity: (B, 1, h, w) disparity of the left view in low-resolution pixels, float.
        image: (B, 3, h * factor, w * factor) left (guide) image, RGB in [0, 1].
        factor: integer upsampling factor (4 for MADNet's quarter-resolution output).
        sigma_space: spatial standard deviation, low-resolution pixels.
        sigma_color: colour standard deviation, in image units.
        radius: the neighbourhood is (2 radius + 1) x (2 radius + 1) cells.

    Returns:
        (B, 1, h * factor, w * factor) disparity in full-resolution pixels (values times ``factor``);
        differentiable with respect to ``disparity``.
    """
    batch, _, low_height, low_width = disparity.shape
    height, width = image.shape[-2:]
    if (height, width) != (low_height * factor, low_width * factor):
        raise ValueError(f"image {tuple(image.shape)} is not {factor}x the disparity {tuple(disparity.shape)}")
    size = 2 * radius + 1
    image = image.to(disparity.dtype)
    cell_colour = F.avg_pool2d(image, factor)
    pad = (radius, radius, radius, radius)
    candidates = F.unfold(F.pad(disparity, pad, mode="replicate"), size).view(batch, size * size, low_height, low_width)
    colours = F.unfold(F.pad(cell_colour, pad, mode="replicate"), size).view(batch, 3 * size * size, low_height, low_width)

    def nearest(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.repeat_interleave(factor, dim=-1).repeat_interleave(factor, dim=-2)

    candidates = nearest(candidates)
    colours = nearest(colours).view(batch, 3, size * size, height, width)
    # distance (low-resolution pixels) from each output pixel's centre to each candidate cell centre
    centre_y = (torch.arange(height, device=image.device, dtype=image.dtype) + 0.5) / factor - 0.5
    centre_x = (torch.arange(width, device=image.device, dtype=image.dtype) + 0.5) / factor - 0.5
    offsets = torch.arange(-radius, radius + 1, device=image.device, dtype=image.dtype)
    cell_y = torch.div(torch.arange(height, device=image.device), factor, rounding_mode="floor").to(image.dtype)
    cell_x = torch.div(torch.arange(width, device=image.device), factor, rounding_mode="floor").to(image.dtype)
    weight_y = torch.exp(-((cell_y[:, None] + offsets[None] - centre_y[:, None]) ** 2) / (2 * sigma_space**2))  # (H, k)
    weight_x = torch.exp(-((cell_x[:, None] + offsets[None] - centre_x[:, None]) ** 2) / (2 * sigma_space**2))  # (W, k)
    spatial = (weight_y.t()[:, None, :, None] * weight_x.t()[None, :, None, :]).reshape(size * size, height, width)
    colour = torch.exp(-((colours - image[:, :, None]) ** 2).sum(dim=1) / (2 * sigma_color**2))
    weights = spatial[None] * (colour + 1e-6)
    return (weights * candidates).sum(dim=1, keepdim=True) / weights.sum(dim=1, keepdim=True) * factor
