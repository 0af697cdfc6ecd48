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

Here: the losses against labels (the guided confidence loss, L1 to ground truth, the supervised
multi-scale L1 of ``pseudolabel train``) and the registry; the losses computed from the images alone
(reconstruction, smoothness, left-right, WLCN) are in :mod:`pseudolabel.learn.photometric` and are
re-exported here, so that every loss can be imported from this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from pseudolabel.errors import InputError
from pseudolabel.learn.masked import check_map, finite_or_zero, masked_mean, weight_map
from pseudolabel.learn.photometric import (
    DEFAULT_LCN_EPS,
    DEFAULT_LCN_WINDOW,
    DEFAULT_SSIM_ALPHA,
    SSIM_C1,
    SSIM_C2,
    edge_aware_smoothness,
    left_right_consistency,
    local_contrast_normalize,
    local_mean_std,
    mirrored_right_disparity,
    photometric_error,
    reconstruction_loss,
    ssim,
    warp_right_to_left,
    weighted_lcn_loss,
)

if TYPE_CHECKING:  # pragma: no cover
    from pseudolabel.learn.samples import Batch
    from pseudolabel.models.registry import StereoOutput

__all__ = [
    "DEFAULT_LCN_EPS",
    "DEFAULT_LCN_WINDOW",
    "DEFAULT_SSIM_ALPHA",
    "LOSSES",
    "SSIM_C1",
    "SSIM_C2",
    "WEIGHTINGS",
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
    "multiscale_l1_loss",
    "photometric_error",
    "reconstruction_loss",
    "register_loss",
    "select_pixels",
    "ssim",
    "warp_right_to_left",
    "weighted_lcn_loss",
]

#: Weightings of the guided loss: selected pixels weigh 1 (``mask``) or their confidence.
WEIGHTINGS = ("mask", "confidence")


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
    check_map("confidence", confidence)
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
        check_map(name, tensor)
    if weighting not in WEIGHTINGS:
        raise InputError(f"--weighting must be one of {', '.join(WEIGHTINGS)}; got {weighting!r}")
    proxy_values, proxy_known = finite_or_zero(proxy)
    confidence, _ = finite_or_zero(confidence)  # NaN confidence = unknown = never selected
    weights = select_pixels(confidence, tau, temperature) * proxy_known.to(disparity.dtype)
    if weighting == "confidence":
        weights = weights * confidence
    weights = weights * weight_map(valid, disparity)
    return masked_mean((disparity - proxy_values).abs(), weights)


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
    check_map("disparity", disparity)
    check_map("target", target)
    values, known = finite_or_zero(target)
    return masked_mean((disparity - values).abs(), known.to(disparity.dtype) * weight_map(valid, disparity))


def multiscale_l1_loss(
    output: StereoOutput, batch: Batch, weights: Sequence[float] | None = None, max_disparity: float | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Supervised multi-scale L1: ``sum_k w_k mean_valid |d_k - d_gt|`` over pixels with ground truth.

    Args:
        output: network output; ``multiscale`` entries are (B, 1, H, W) in input pixels, finest first.
        batch: ``disparity`` (B, 1, H, W) ground truth in pixels and ``valid`` (B, 1, H, W) bool.
        weights: per level, finest first; default ``0.5 ** k`` (the finest weighs 1).
        max_disparity: ignore ground truth at or above this (pixels), if given.

    Returns:
        (scalar loss, logs: ``loss``, ``epe`` of the finest output, ``bad3`` percent, ``valid`` fraction).
        Under DDP the normaliser is the mean valid count over ranks, so that the averaged gradients
        equal those of one process on the global batch (logs are then this rank's share).
    """
    target = batch["disparity"]
    valid = batch["valid"].bool()
    if max_disparity is not None:
        valid = valid & (target < max_disparity)
    count = valid.sum().clamp(min=1).float()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        # DDP averages gradients over ranks: normalise by the mean valid count over ranks, so that the
        # result equals one process's loss on the whole global batch.
        global_count = valid.sum().float().detach().clone()
        dist.all_reduce(global_count)
        count = (global_count / dist.get_world_size()).clamp(min=1)
    levels = output.multiscale
    if weights is None:
        weights = [0.5**k for k in range(len(levels))]
    total = target.new_zeros(())
    for weight, estimate in zip(weights, levels):
        total = total + weight * ((estimate.float() - target).abs() * valid).sum() / count
    with torch.no_grad():
        error = (levels[0].float() - target).abs()
        epe = float((error * valid).sum() / count)
        bad3 = float(100.0 * ((error > 3.0) & valid).sum() / count)
    return total, {"loss": float(total.detach()), "epe": epe, "bad3": bad3, "valid": float(valid.float().mean())}


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
        regularisers: terms that depend on the network's weights rather than on the batch, by name
            (``l2sp``: :class:`pseudolabel.learn.regularisers.L2SP`), each a function returning a scalar.
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
    regularisers: Mapping[str, Callable[[], Tensor]] = field(default_factory=dict)
    _right_disparity: Tensor | None = field(default=None, init=False, repr=False)

    def require(self, name: str, *, loss: str) -> Tensor:
        """The tensor attribute ``name``, or an :class:`InputError` saying that ``loss`` needs it."""
        value = getattr(self, name)
        if value is None:
            raise InputError(f"loss {loss!r} needs '{name}', which this batch does not provide; remove it from --loss")
        return value

    def regulariser(self, name: str, *, loss: str) -> Callable[[], Tensor]:
        """The regulariser ``name`` (see :attr:`regularisers`), or an :class:`InputError` saying that ``loss`` needs it."""
        function = self.regularisers.get(name)
        if function is None:
            raise InputError(f"loss {loss!r} needs the {name} regulariser of the network, which this objective was not given; remove it from --loss")
        return function

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


# Terms defined in other modules register themselves on import.
from pseudolabel.learn import regularisers as _regularisers  # noqa: E402,F401  (the l2sp term)
