"""Losses for training and adapting stereo networks, and a registry to combine them by name.

Every loss is a plain, typed function of tensors (documented shapes; any device and floating
dtype) that takes an optional ``valid`` mask or weight map in the style of RAFT-Stereo's sequence
loss, and returns a scalar. Averages are taken over the valid pixels only: ``sum(w * e) / sum(w)``
where ``w`` is the ``valid`` map (bool or float weights) combined with any mask the loss makes
itself (pixels warped from outside the other image, unknown disparities). A loss with no valid
pixel returns an exact zero that still belongs to the autograd graph.

Conventions (shared with :mod:`pseudolabel.io`):

* disparity maps are (B, 1, H, W), in pixels of the input resolution, of the **left** view unless
  said otherwise, positive, with ``x_right = x_left - d``;
* images are (B, C, H, W) floats scaled to [0, 1] (the SSIM constants and the exp(-|gradient|)
  edge weights assume that range);
* confidences are (B, 1, H, W) in [0, 1], higher = more trustworthy.

The registry maps the names used on the command line (``--loss guided=1,smooth=0.1``) to *terms*:
small adapters that pick their inputs from a :class:`LossInputs` and call one of the losses.
:func:`build_loss_terms` parses the ``name=weight`` list. Add a loss with::

    @register_loss("mine")
    def _mine_term(inputs: LossInputs) -> Tensor:
        return my_loss(inputs.disparity, inputs.require("proxy", loss="mine"))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from pseudolabel.errors import InputError

__all__ = [
    "LOSSES",
    "LossInputs",
    "LossTerm",
    "LossTermFunction",
    "available_losses",
    "build_loss_terms",
    "edge_aware_smoothness",
    "guided_confidence_loss",
    "l1_loss",
    "left_right_consistency",
    "local_contrast_normalize",
    "local_mean_std",
    "mirrored_right_disparity",
    "photometric_error",
    "reconstruction_loss",
    "register_loss",
    "select_pixels",
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
#: Lower bound of the total weight that divides a masked sum.
_WEIGHT_EPS = 1e-12
WEIGHTINGS = ("mask", "confidence")


# --------------------------------------------------------------------------------------------
# helpers


def _check_map(name: str, tensor: Tensor, channels: int | None = 1) -> None:
    """Raise a ``ValueError`` unless ``tensor`` is (B, C, H, W) (with C == ``channels`` if given)."""
    if tensor.dim() != 4 or (channels is not None and tensor.shape[1] != channels):
        expected = f"(B, {channels}, H, W)" if channels is not None else "(B, C, H, W)"
        raise ValueError(f"{name} must have shape {expected}; got {tuple(tensor.shape)}")


def _weights(valid: Tensor | None, like: Tensor) -> Tensor:
    """A float weight map (B, 1, H, W) of ``like``'s dtype/device from an optional mask or weight map."""
    if valid is None:
        return torch.ones_like(like[:, :1])
    _check_map("valid", valid)
    return valid.to(dtype=like.dtype, device=like.device)


def _masked_mean(values: Tensor, weights: Tensor) -> Tensor:
    """``sum(w * v) / sum(w)`` over all elements; ``weights`` broadcasts against ``values``.

    Returns a zero scalar (attached to the graph) when the total weight is zero.
    """
    weights = weights.expand_as(values)
    total = weights.sum()
    return (weights * values).sum() / total.clamp_min(_WEIGHT_EPS)


def _finite_or_zero(tensor: Tensor) -> tuple[Tensor, Tensor]:
    """(tensor with non-finite values replaced by 0, bool mask of the finite values).

    ``torch.where`` (not multiplication by a mask) keeps NaNs out of values and gradients.
    """
    finite = torch.isfinite(tensor)
    return torch.where(finite, tensor, torch.zeros_like(tensor)), finite


def _local_mean(image: Tensor, window: int) -> Tensor:
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


# --------------------------------------------------------------------------------------------
# guided confidence loss (Tonioni et al., ICCV 2017 / TPAMI 2019)


def select_pixels(confidence: Tensor, tau: float | Tensor, temperature: float | None = None) -> Tensor:
    """Selection weights of the pixels whose confidence exceeds ``tau``.

    Args:
        confidence: (B, 1, H, W) confidence in [0, 1].
        tau: threshold, a float, a scalar tensor or a (B,) tensor (one threshold per image).
        temperature: ``None`` for the hard selection ``confidence > tau`` (weights 0/1, no
            gradient with respect to ``tau``); a positive number T for the soft selection
            ``sigmoid((confidence - tau) / T)``, differentiable in ``tau`` and ``confidence``.

    Returns:
        (B, 1, H, W) weights in [0, 1], dtype and device of ``confidence``.
    """
    _check_map("confidence", confidence)
    tau_t = torch.as_tensor(tau, dtype=confidence.dtype, device=confidence.device)
    if tau_t.dim() == 1:
        if tau_t.shape[0] != confidence.shape[0]:
            raise ValueError(f"tau has {tau_t.shape[0]} values for a batch of {confidence.shape[0]}")
        tau_t = tau_t.view(-1, 1, 1, 1)
    elif tau_t.dim() != 0:
        raise ValueError(f"tau must be a scalar or a (B,) tensor; got shape {tuple(tau_t.shape)}")
    if temperature is None:
        return (confidence > tau_t).to(confidence.dtype)
    if temperature <= 0:
        raise ValueError(f"temperature must be positive; got {temperature}")
    return torch.sigmoid((confidence - tau_t) / temperature)


def guided_confidence_loss(
    disparity: Tensor,
    proxy: Tensor,
    confidence: Tensor,
    tau: float | Tensor,
    *,
    weighting: str = "mask",
    temperature: float | None = None,
    valid: Tensor | None = None,
) -> Tensor:
    """Mean absolute difference to the proxy disparity over the confidently selected pixels.

    ``sum(w * |d - p|) / sum(w)`` with ``w = s * valid`` (``weighting="mask"``) or
    ``w = s * confidence * valid`` (``weighting="confidence"``), where ``s`` are the selection
    weights of :func:`select_pixels` (hard ``confidence > tau``, or soft with ``temperature``).
    Proxy values that are not finite (NaN/inf = unknown) are ignored; a non-finite confidence
    counts as 0.

    Args:
        disparity: (B, 1, H, W) predicted left disparity, pixels.
        proxy: (B, 1, H, W) proxy (e.g. SGM) left disparity, pixels; NaN = unknown.
        confidence: (B, 1, H, W) confidence of the proxy in [0, 1].
        tau: threshold: float, scalar tensor or (B,) tensor.
        weighting: ``"mask"`` or ``"confidence"``.
        temperature: ``None`` for hard selection, else the soft selection temperature.
        valid: optional (B, 1, H, W) mask or weights of pixels that may be used.

    Returns:
        Scalar loss in pixels (0 when no pixel is selected).
    """
    for name, tensor in (("disparity", disparity), ("proxy", proxy), ("confidence", confidence)):
        _check_map(name, tensor)
    if weighting not in WEIGHTINGS:
        raise InputError(f"--weighting must be one of {', '.join(WEIGHTINGS)}; got {weighting!r}")
    proxy_values, proxy_known = _finite_or_zero(proxy)
    confidence, _ = _finite_or_zero(confidence)  # NaN confidence = unknown = never selected
    weights = select_pixels(confidence, tau, temperature) * proxy_known.to(disparity.dtype)
    if weighting == "confidence":
        weights = weights * confidence
    weights = weights * _weights(valid, disparity)
    return _masked_mean((disparity - proxy_values).abs(), weights)


# --------------------------------------------------------------------------------------------
# warping and photometric reconstruction


def warp_right_to_left(right: Tensor, disparity: Tensor) -> tuple[Tensor, Tensor]:
    """Reconstruct the left view by sampling ``right`` at ``x - d(x)`` (bilinear, differentiable).

    Uses :func:`torch.nn.functional.grid_sample` with ``align_corners=True`` (pixel centres at
    integer coordinates 0 .. W-1), so a pixel ``x`` of the result is
    ``(1 - f) * right[floor(x - d)] + f * right[floor(x - d) + 1]`` with ``f`` the fractional part.

    Args:
        right: (B, C, H, W) right-view image, or any right-view map (e.g. a right disparity).
        disparity: (B, 1, H, W) left disparity, pixels.

    Returns:
        ``(warped, valid)``: (B, C, H, W) the right map seen from the left view, and a
        (B, 1, H, W) bool mask, ``False`` where ``x - d`` falls outside ``[0, W - 1]`` (those pixels
        are warped from outside the right image and must not be used).
    """
    _check_map("right", right, channels=None)
    _check_map("disparity", disparity)
    batch, _, height, width = right.shape
    if disparity.shape[0] != batch or disparity.shape[2:] != right.shape[2:]:
        raise ValueError(f"disparity {tuple(disparity.shape)} does not match the image {tuple(right.shape)}")
    if width < 2:
        raise ValueError("warping needs images at least 2 pixels wide")
    xs = torch.arange(width, dtype=disparity.dtype, device=disparity.device).view(1, 1, 1, width)
    source_x = xs - disparity  # (B, 1, H, W) sampling position in the right image, pixels
    valid = (source_x >= 0) & (source_x <= width - 1)
    grid_x = 2.0 * source_x / (width - 1) - 1.0
    if height > 1:
        ys = torch.arange(height, dtype=disparity.dtype, device=disparity.device).view(1, 1, height, 1)
        grid_y = (2.0 * ys / (height - 1) - 1.0).expand_as(grid_x)
    else:
        grid_y = torch.zeros_like(grid_x)
    grid = torch.stack((grid_x[:, 0], grid_y[:, 0]), dim=-1)  # (B, H, W, 2)
    warped = F.grid_sample(right, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return warped, valid


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
    mu_a = _local_mean(image_a, 3)
    mu_b = _local_mean(image_b, 3)
    var_a = _local_mean(image_a * image_a, 3) - mu_a * mu_a
    var_b = _local_mean(image_b * image_b, 3) - mu_b * mu_b
    covariance = _local_mean(image_a * image_b, 3) - mu_a * mu_b
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
    _check_map("left", left, channels=None)
    warped, inside = warp_right_to_left(right, disparity)
    # pixels warped from outside are excluded from the mean; they are also filled with the left
    # image so that the zeros of the sampling padding do not spoil their neighbours' 3x3 SSIM
    warped = torch.where(inside, warped, left)
    error = photometric_error(left, warped, alpha)
    return _masked_mean(error, inside.to(error.dtype) * _weights(valid, error))


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
    _check_map("disparity", disparity)
    _check_map("image", image, channels=None)
    if normalize:
        disparity = disparity / (disparity.mean(dim=(2, 3), keepdim=True) + 1e-7)
    weights = _weights(valid, disparity)
    total = disparity.new_zeros(())
    for dim in (3, 2):  # x then y
        length = disparity.shape[dim]
        if length < 2:
            continue
        d_grad = (disparity.narrow(dim, 1, length - 1) - disparity.narrow(dim, 0, length - 1)).abs()
        i_grad = (image.narrow(dim, 1, length - 1) - image.narrow(dim, 0, length - 1)).abs().mean(1, keepdim=True)
        pair_weights = weights.narrow(dim, 1, length - 1) * weights.narrow(dim, 0, length - 1)
        total = total + _masked_mean(d_grad * torch.exp(-i_grad), pair_weights)
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
    return _masked_mean(error, inside.to(error.dtype) * _weights(valid, error))


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
    mean = _local_mean(image, window)
    variance = (_local_mean(image * image, window) - mean * mean).clamp_min(0)
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
    _check_map("left", left, channels=None)
    left_lcn, left_std = local_contrast_normalize(left, window, eps)
    right_lcn, _ = local_contrast_normalize(right, window, eps)
    warped, inside = warp_right_to_left(right_lcn, disparity)
    error = left_std * (left_lcn - warped).abs()
    return _masked_mean(error, inside.to(error.dtype) * _weights(valid, error))


# --------------------------------------------------------------------------------------------
# supervised


def l1_loss(disparity: Tensor, target: Tensor, *, valid: Tensor | None = None) -> Tensor:
    """Mean ``|d - d_gt|`` over the pixels with a known (finite) target and ``valid`` weight.

    Args:
        disparity: (B, 1, H, W) predicted disparity, pixels.
        target: (B, 1, H, W) ground-truth disparity, pixels; NaN/inf = unknown.
        valid: optional (B, 1, H, W) mask or weights.

    Returns:
        Scalar loss in pixels (0 when nothing is known).
    """
    _check_map("disparity", disparity)
    _check_map("target", target)
    values, known = _finite_or_zero(target)
    return _masked_mean((disparity - values).abs(), known.to(disparity.dtype) * _weights(valid, disparity))


# --------------------------------------------------------------------------------------------
# registry


@dataclass
class LossInputs:
    """Everything a registered loss term may use for one batch.

    Attributes:
        disparity: (B, 1, H, W) predicted left disparity, pixels.
        left, right: (B, 3, H, W) images in [0, 1].
        proxy: (B, 1, H, W) proxy disparity, pixels, NaN = unknown.
        confidence: (B, 1, H, W) proxy confidence in [0, 1].
        tau: (B,) selection threshold per image.
        temperature: ``None`` for hard selection, else the soft selection temperature.
        weighting: ``"mask"`` or ``"confidence"`` (guided loss).
        proxy_valid: optional (B, 1, H, W) mask of usable proxy pixels.
        target: (B, 1, H, W) ground-truth disparity (supervised training only), NaN = unknown.
        target_valid: optional (B, 1, H, W) mask of usable ground-truth pixels.
        right_disparity_fn: computes the (B, 1, H, W) right-view disparity on demand (it costs a
            second forward pass, so it runs only if a term asks for it; the result is cached).
    """

    disparity: Tensor
    left: Tensor | None = None
    right: Tensor | None = None
    proxy: Tensor | None = None
    confidence: Tensor | None = None
    tau: Tensor | None = None
    temperature: float | None = None
    weighting: str = "mask"
    proxy_valid: Tensor | None = None
    target: Tensor | None = None
    target_valid: Tensor | None = None
    right_disparity_fn: Callable[[], Tensor] | None = None
    _right_disparity: Tensor | None = field(default=None, init=False, repr=False)

    def require(self, name: str, *, loss: str) -> Tensor:
        """The tensor attribute ``name``, or an :class:`InputError` saying that ``loss`` needs it."""
        value = getattr(self, name)
        if value is None:
            raise InputError(f"loss {loss!r} needs '{name}', which this batch does not provide; remove it from --loss")
        return value

    def right_disparity(self, *, loss: str) -> Tensor:
        """(B, 1, H, W) right-view disparity (computed once, on first use)."""
        if self._right_disparity is None:
            if self.right_disparity_fn is None:
                raise InputError(
                    f"loss {loss!r} needs the right-view disparity, i.e. a second pass of the network on the "
                    "mirrored pair; pass the model to the adaptation objective or remove it from --loss"
                )
            self._right_disparity = self.right_disparity_fn()
        return self._right_disparity


LossTermFunction = Callable[[LossInputs], Tensor]
_TermT = TypeVar("_TermT", bound=LossTermFunction)

#: name -> term function; fill it with :func:`register_loss`.
LOSSES: dict[str, LossTermFunction] = {}


@dataclass(frozen=True)
class LossTerm:
    """One weighted term of an objective: ``weight * function(inputs)``."""

    name: str
    weight: float
    function: LossTermFunction

    def __call__(self, inputs: LossInputs) -> Tensor:
        """The unweighted value of the term (scalar tensor)."""
        return self.function(inputs)


def register_loss(name: str) -> Callable[[_TermT], _TermT]:
    """Decorator registering a term function ``(LossInputs) -> scalar Tensor`` under ``name``."""
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"loss names are letters, digits and underscores; got {name!r}")

    def decorator(function: _TermT) -> _TermT:
        if name in LOSSES and LOSSES[name] is not function:
            raise ValueError(f"a loss named {name!r} is already registered")
        LOSSES[name] = function
        return function

    return decorator


def available_losses() -> list[str]:
    """Registered loss names, sorted."""
    return sorted(LOSSES)


def build_loss_terms(spec: str) -> list[LossTerm]:
    """Parse ``"guided=1,smooth=0.1"`` into weighted terms (a bare name means weight 1).

    Raises:
        InputError: an unknown name, a weight that is not a finite number >= 0, a name given
            twice, or an empty list; the message names ``--loss`` and the registered losses.
    """
    known = ", ".join(available_losses())
    terms: list[LossTerm] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, has_weight, weight_text = (piece.strip() for piece in item.partition("="))
        if name not in LOSSES:
            raise InputError(f"--loss: unknown loss {name!r}; choose among {known} (e.g. --loss guided=1,smooth=0.1)")
        try:
            weight = float(weight_text) if has_weight else 1.0
        except ValueError:
            raise InputError(f"--loss: the weight of {name!r} must be a number; got {weight_text!r}") from None
        if not math.isfinite(weight) or weight < 0:
            raise InputError(f"--loss: the weight of {name!r} must be a finite number >= 0; got {weight_text!r}")
        if any(term.name == name for term in terms):
            raise InputError(f"--loss: {name!r} is given twice; give each loss once")
        terms.append(LossTerm(name, weight, LOSSES[name]))
    if not terms:
        raise InputError(f"--loss is empty; give name=weight pairs among {known} (e.g. --loss guided=1)")
    return terms


@register_loss("guided")
def _guided_term(inputs: LossInputs) -> Tensor:
    tau = inputs.require("tau", loss="guided")
    return guided_confidence_loss(
        inputs.disparity,
        inputs.require("proxy", loss="guided"),
        inputs.require("confidence", loss="guided"),
        tau,
        weighting=inputs.weighting,
        temperature=inputs.temperature,
        valid=inputs.proxy_valid,
    )


@register_loss("reconstruction")
def _reconstruction_term(inputs: LossInputs) -> Tensor:
    return reconstruction_loss(inputs.require("left", loss="reconstruction"), inputs.require("right", loss="reconstruction"), inputs.disparity)


@register_loss("smooth")
def _smooth_term(inputs: LossInputs) -> Tensor:
    return edge_aware_smoothness(inputs.disparity, inputs.require("left", loss="smooth"))


@register_loss("lr")
def _left_right_term(inputs: LossInputs) -> Tensor:
    return left_right_consistency(inputs.disparity, inputs.right_disparity(loss="lr"))


@register_loss("wlcn")
def _wlcn_term(inputs: LossInputs) -> Tensor:
    return weighted_lcn_loss(inputs.require("left", loss="wlcn"), inputs.require("right", loss="wlcn"), inputs.disparity)


@register_loss("l1")
def _l1_term(inputs: LossInputs) -> Tensor:
    return l1_loss(inputs.disparity, inputs.require("target", loss="l1"), valid=inputs.target_valid)
