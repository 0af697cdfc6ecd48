"""Self-supervised losses from the images: photometric reconstruction (SSIM + L1), edge-aware
smoothness, left-right consistency and the weighted local-contrast-normalised reconstruction (WLCN).

Shapes and units follow :mod:`pseudolabel.learn.losses`: disparities (B, 1, H, W) in pixels of the
left view unless said otherwise (``x_right = x_left - d``); images (B, C, H, W) floats in [0, 1]; an
optional ``valid`` (B, 1, H, W) mask or weight map; every loss returns a scalar averaged over the
valid pixels. The right view is warped by the one warp of the project,
:func:`pseudolabel.models.warp.warp_right_to_left`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pseudolabel.learn.masked import check_map, local_mean, masked_mean, weight_map
from pseudolabel.models.warp import warp_right_to_left

__all__ = [
    "DEFAULT_LCN_EPS",
    "DEFAULT_LCN_WINDOW",
    "DEFAULT_SSIM_ALPHA",
    "SSIM_C1",
    "SSIM_C2",
    "edge_aware_smoothness",
    "left_right_consistency",
    "local_contrast_normalize",
    "local_mean_std",
    "mirrored_right_disparity",
    "photometric_error",
    "reconstruction_loss",
    "ssim",
    "warp_right_to_left",
    "weighted_lcn_loss",
]

#: SSIM stabilising constants for images in [0, 1]: (0.01 * 1)^2 and (0.03 * 1)^2.
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2
#: Weight of the SSIM part of the photometric error (Godard et al., CVPR 2017).
DEFAULT_SSIM_ALPHA = 0.85
#: Window of the local contrast normalisation (ActiveStereoNet, Zhang et al., ECCV 2018).
DEFAULT_LCN_WINDOW = 9
#: Added to the local standard deviation before dividing by it (image units, [0, 1] scale).
DEFAULT_LCN_EPS = 1e-2
#: Added to the local variance before the square root, so that its gradient stays finite.
_VARIANCE_EPS = 1e-8


# --------------------------------------------------------------------------------------------
# warping and photometric reconstruction


def ssim(image_a: Tensor, image_b: Tensor) -> Tensor:
    """Structural similarity of two images over 3x3 windows (clipped at the border).

    Local means, variances and covariance are averages over each pixel's 3x3 neighbourhood
    inside the image; ``SSIM = (2 mu_a mu_b + C1)(2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2))``
    with ``C1 = 0.01^2``, ``C2 = 0.03^2`` (images in [0, 1]).

    Args:
        image_a, image_b: (B, C, H, W) images in [0, 1].

    Returns:
        (B, C, H, W) SSIM per pixel and channel, in [-1, 1] (1 = identical neighbourhoods).
    """
    mu_a = local_mean(image_a, 3)
    mu_b = local_mean(image_b, 3)
    var_a = local_mean(image_a * image_a, 3) - mu_a * mu_a
    var_b = local_mean(image_b * image_b, 3) - mu_b * mu_b
    covariance = local_mean(image_a * image_b, 3) - mu_a * mu_b
    numerator = (2 * mu_a * mu_b + SSIM_C1) * (2 * covariance + SSIM_C2)
    denominator = (mu_a * mu_a + mu_b * mu_b + SSIM_C1) * (var_a + var_b + SSIM_C2)
    return numerator / denominator


def photometric_error(image: Tensor, reconstruction: Tensor, alpha: float = DEFAULT_SSIM_ALPHA) -> Tensor:
    """Per-pixel ``alpha * (1 - SSIM) / 2 + (1 - alpha) * |I - I'|``, averaged over channels.

    Args:
        image: (B, C, H, W) reference image in [0, 1].
        reconstruction: (B, C, H, W) reconstruction of it in [0, 1].
        alpha: weight of the SSIM part (0.85 as in Godard et al.).

    Returns:
        (B, 1, H, W) error, >= 0 (the SSIM part is clamped to [0, 1]).
    """
    if image.shape != reconstruction.shape:
        raise ValueError(f"image {tuple(image.shape)} and reconstruction {tuple(reconstruction.shape)} differ")
    ssim_part = ((1 - ssim(image, reconstruction)) / 2).clamp(0, 1)
    l1_part = (image - reconstruction).abs()
    return (alpha * ssim_part + (1 - alpha) * l1_part).mean(dim=1, keepdim=True)


def reconstruction_loss(
    left: Tensor,
    right: Tensor,
    disparity: Tensor,
    *,
    alpha: float = DEFAULT_SSIM_ALPHA,
    valid: Tensor | None = None,
) -> Tensor:
    """Photometric error between the left image and the right image warped with the left disparity.

    ``mean over valid pixels of photometric_error(left, warp_right_to_left(right, d))``; pixels
    warped from outside the right image are excluded (and, for their neighbours' SSIM windows,
    replaced by the left image, so the loss is exactly 0 at the true disparity of a pair without
    occlusions or noise).

    Args:
        left, right: (B, C, H, W) images in [0, 1].
        disparity: (B, 1, H, W) predicted left disparity, pixels.
        alpha: SSIM weight of :func:`photometric_error`.
        valid: optional (B, 1, H, W) mask or weights.

    Returns:
        Scalar loss (dimensionless, image units).
    """
    check_map("left", left, channels=None)
    warped, inside = warp_right_to_left(right, disparity)
    # pixels warped from outside are excluded from the mean; they are also filled with the left
    # image so that the zeros of the sampling padding do not spoil their neighbours' 3x3 SSIM
    warped = torch.where(inside, warped, left)
    error = photometric_error(left, warped, alpha)
    return masked_mean(error, inside.to(error.dtype) * weight_map(valid, error))


# --------------------------------------------------------------------------------------------
# edge-aware smoothness


def edge_aware_smoothness(
    disparity: Tensor,
    image: Tensor,
    *,
    normalize: bool = True,
    valid: Tensor | None = None,
) -> Tensor:
    """Edge-aware first-order smoothness ``|d_x| exp(-|I_x|) + |d_y| exp(-|I_y|)``.

    ``d_x``, ``d_y`` are forward differences of the disparity between horizontally / vertically
    neighbouring pixels; ``|I_x|``, ``|I_y|`` are the absolute image differences averaged over
    the channels. The result is ``mean_x(|d_x| w_x) + mean_y(|d_y| w_y)``, each mean over the
    neighbour pairs whose two pixels are both valid.

    With ``normalize=True`` (the default) the disparity is first divided by its per-image mean
    (Godard et al., Monodepth2) so that the term cannot be lowered by shrinking the disparities
    and has the same scale at every resolution; with ``normalize=False`` it is in pixels.

    Args:
        disparity: (B, 1, H, W) left disparity, pixels.
        image: (B, C, H, W) left image in [0, 1].
        normalize: divide the disparity by its per-image mean first.
        valid: optional (B, 1, H, W) mask or weights (a pair's weight is the product of its two).

    Returns:
        Scalar loss.
    """
    check_map("disparity", disparity)
    check_map("image", image, channels=None)
    if normalize:
        disparity = disparity / (disparity.mean(dim=(2, 3), keepdim=True) + 1e-7)
    weights = weight_map(valid, disparity)
    total = disparity.new_zeros(())
    for dim in (3, 2):  # x then y
        length = disparity.shape[dim]
        if length < 2:
            continue
        d_grad = (disparity.narrow(dim, 1, length - 1) - disparity.narrow(dim, 0, length - 1)).abs()
        i_grad = (image.narrow(dim, 1, length - 1) - image.narrow(dim, 0, length - 1)).abs().mean(1, keepdim=True)
        pair_weights = weights.narrow(dim, 1, length - 1) * weights.narrow(dim, 0, length - 1)
        total = total + masked_mean(d_grad * torch.exp(-i_grad), pair_weights)
    return total


# --------------------------------------------------------------------------------------------
# left-right consistency


def mirrored_right_disparity(predict: Callable[[Tensor, Tensor], Tensor], left: Tensor, right: Tensor) -> Tensor:
    """Right-view disparity from a left-view network, by mirroring the pair.

    Mirroring both images horizontally turns the right image into the reference of a valid
    rectified pair: ``left' = flip(right)``, ``right' = flip(left)``; the network's left disparity
    of that pair, flipped back, is the disparity of the right view (``x_left = x_right + d_r``).

    Args:
        predict: the network as a function ``(left, right) -> (B, 1, H, W)`` left disparity.
        left, right: (B, C, H, W) images (whatever the network expects).

    Returns:
        (B, 1, H, W) right-view disparity, pixels.
    """
    return torch.flip(predict(torch.flip(right, dims=[-1]), torch.flip(left, dims=[-1])), dims=[-1])


def left_right_consistency(disparity_left: Tensor, disparity_right: Tensor, *, valid: Tensor | None = None) -> Tensor:
    """Mean ``|d_l(x) - d_r(x - d_l(x))|``: the right disparity warped into the left view.

    Args:
        disparity_left: (B, 1, H, W) left-view disparity, pixels.
        disparity_right: (B, 1, H, W) right-view disparity, pixels (e.g. from
            :func:`mirrored_right_disparity`).
        valid: optional (B, 1, H, W) mask or weights in the left view.

    Returns:
        Scalar loss in pixels; pixels warped from outside the right view are excluded.
    """
    warped, inside = warp_right_to_left(disparity_right, disparity_left)
    error = (disparity_left - warped).abs()
    return masked_mean(error, inside.to(error.dtype) * weight_map(valid, error))


# --------------------------------------------------------------------------------------------
# weighted local contrast normalisation (ActiveStereoNet, Zhang et al., ECCV 2018)


def local_mean_std(image: Tensor, window: int = DEFAULT_LCN_WINDOW) -> tuple[Tensor, Tensor]:
    """Local mean and (population) standard deviation over ``window`` x ``window`` boxes.

    Boxes are clipped to the image. The standard deviation is ``sqrt(max(var, 0) + 1e-8)`` so
    that its gradient stays finite on flat areas.

    Args:
        image: (B, C, H, W) image.
        window: odd box size.

    Returns:
        ``(mean, std)``, both (B, C, H, W), per channel.
    """
    mean = local_mean(image, window)
    variance = (local_mean(image * image, window) - mean * mean).clamp_min(0)
    return mean, torch.sqrt(variance + _VARIANCE_EPS)


def local_contrast_normalize(image: Tensor, window: int = DEFAULT_LCN_WINDOW, eps: float = DEFAULT_LCN_EPS) -> tuple[Tensor, Tensor]:
    """Local contrast normalisation ``(I - mu) / (sigma + eps)`` over ``window`` x ``window`` boxes.

    Args:
        image: (B, C, H, W) image in [0, 1].
        window: odd box size (9 in ActiveStereoNet).
        eps: added to the local standard deviation (image units).

    Returns:
        ``(normalized, std)``: (B, C, H, W) normalised image and the local standard deviation.
    """
    mean, std = local_mean_std(image, window)
    return (image - mean) / (std + eps), std


def weighted_lcn_loss(
    left: Tensor,
    right: Tensor,
    disparity: Tensor,
    *,
    window: int = DEFAULT_LCN_WINDOW,
    eps: float = DEFAULT_LCN_EPS,
    valid: Tensor | None = None,
) -> Tensor:
    """Reconstruction error on locally contrast-normalised images, weighted by the local contrast.

    ``mean over valid pixels and channels of sigma_L(x) * |LCN(L)(x) - LCN(R)(x - d(x))|``: both
    images are normalised by :func:`local_contrast_normalize`, the normalised right image is
    warped into the left view with the predicted disparity, and the absolute difference is
    multiplied by the left image's local standard deviation, so that texture-less areas (where
    LCN amplifies noise) do not dominate.

    Args:
        left, right: (B, C, H, W) images in [0, 1].
        disparity: (B, 1, H, W) predicted left disparity, pixels.
        window: LCN box size.
        eps: LCN stabiliser.
        valid: optional (B, 1, H, W) mask or weights.

    Returns:
        Scalar loss (image units).
    """
    check_map("left", left, channels=None)
    left_lcn, left_std = local_contrast_normalize(left, window, eps)
    right_lcn, _ = local_contrast_normalize(right, window, eps)
    warped, inside = warp_right_to_left(right_lcn, disparity)
    error = left_std * (left_lcn - warped).abs()
    return masked_mean(error, inside.to(error.dtype) * weight_map(valid, error))
