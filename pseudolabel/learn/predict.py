"""TODO docstring."""

from __future__ import annotations

import numpy as np
import torch

from pseudolabel.errors import InputError
from pseudolabel.learn.samples import to_tensor_image
from pseudolabel.models.registry import StereoNetwork


@torch.no_grad()
def predict_disparity(model: StereoNetwork, left: np.ndarray, right: np.ndarray, device: str | torch.device = "cpu") -> np.ndarray:
    """Left-view disparity of one pair with a trained network.

    Args:
        model: a network in eval mode (e.g. from :func:`pseudolabel.learn.checkpoint.load_model`).
        left, right: (H, W) or (H, W, 3) ``uint8``/``uint16`` RGB images of equal size.

    Returns:
        (H, W) ``float32`` disparity in pixels (>= 0).

    Raises:
        InputError: the two images differ in size.
    """
    if left.shape[:2] != right.shape[:2]:
        raise InputError(f"left {left.shape[:2]} and right {right.shape[:2]} images differ in size; give a rectified pair")
    device = torch.device(device)
    left_t = to_tensor_image(left)[None].to(device)
    right_t = to_tensor_image(right)[None].to(device)
    output = model(left_t, right_t)
    return output.disparity[0, 0].float().cpu().numpy()
