"""The guided-confidence adaptation objective (Tonioni et al., ICCV 2017 / TPAMI 2019).

:class:`AdaptationObjective` is the ``loss_fn`` that the generic trainer of
:mod:`pseudolabel.learn.trainer` calls on every step as ``loss, logs = loss_fn(output, batch)``. It
combines the weighted loss terms of :mod:`pseudolabel.learn.losses` (``--loss guided=1,smooth=0.1``)
with a tau module of :mod:`pseudolabel.learn.tau` (``--tau 0.8|learnable|net``). The objective is an
``nn.Module`` that owns the tau module, so ``objective.parameters()`` are the tau parameters to
optimise with the network and ``objective.state_dict()`` stores the learned tau in a checkpoint
(the network itself is never registered as its sub-module).

Batch keys (tensors on the output's device):

==================  =================  ==========================================================
key                 shape              meaning
==================  =================  ==========================================================
``left``            (B, 3, H, W)       left image, uint8/uint16, or float in [0, 1]
``right``           (B, 3, H, W)       right image, same
``proxy``           (B, 1, H, W)       proxy (SGM) left disparity, pixels, NaN = unknown
``confidence``      (B, 1, H, W)       proxy confidence in [0, 1]
``proxy_valid``     (B, 1, H, W)       optional bool/float mask of usable proxy pixels
``disparity``       (B, 1, H, W)       optional ground-truth left disparity (``l1`` loss only)
``valid``           (B, 1, H, W)       optional mask of usable ground-truth pixels
==================  =================  ==========================================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from pseudolabel.errors import InputError
from pseudolabel.learn.losses import (
    WEIGHTINGS,
    LossInputs,
    LossTerm,
    build_loss_terms,
    mirrored_right_disparity,
    select_pixels,
)
from pseudolabel.learn.tau import LearnableTau, TauModule, build_tau

#: Terms that compare the prediction with per-pixel labels, and so can also supervise the coarser
#: outputs of a multi-scale network (``scale_decay``).
PER_LEVEL_TERMS = frozenset({"guided", "l1"})

__all__ = [
    "PER_LEVEL_TERMS",
    "AdaptationObjective",
    "adaptation_loss",
    "coarser_levels",
    "disparity_map",
    "unit_range",
]

DisparityOutput = Tensor | Sequence[Tensor] | Mapping[str, Any]
Predict = Callable[[Tensor, Tensor], DisparityOutput]


def disparity_map(output: DisparityOutput) -> Tensor:
    """The full-resolution disparity of a network's output, as (B, 1, H, W).

    Accepts a tensor (B, 1, H, W) or (B, H, W); a list/tuple of such maps (multi-scale outputs;
    the one with the most pixels is taken); or a mapping such as
    :class:`pseudolabel.models.registry.StereoOutput`: its raw finest estimate ``multiscale[0]``
    when there is one (the ``disparity`` entry is the same map clamped at 0, which would stop the
    gradient of pixels predicted negative), else its ``"disparity"`` entry. Half precision outputs
    (mixed precision) are promoted to float32 for the losses.
    """
    if isinstance(output, Mapping):
        multiscale = output.get("multiscale")
        if isinstance(multiscale, (list, tuple)) and multiscale:
            output = multiscale[0]
        elif "disparity" in output:
            output = output["disparity"]
        else:
            raise ValueError(f"network output mapping has no 'disparity' entry (keys: {sorted(output)})")
    if isinstance(output, (list, tuple)):
        if not output:
            raise ValueError("network output is an empty sequence")
        output = max(output, key=lambda item: item.shape[-2] * item.shape[-1])
    if not isinstance(output, Tensor):
        raise ValueError(f"network output must be a tensor, a sequence or a mapping; got {type(output).__name__}")
    if output.dim() == 3:
        output = output.unsqueeze(1)
    if output.dim() != 4 or output.shape[1] != 1:
        raise ValueError(f"disparity must have shape (B, 1, H, W) or (B, H, W); got {tuple(output.shape)}")
    if output.dtype in (torch.float16, torch.bfloat16):
        output = output.float()
    return output


def coarser_levels(output: DisparityOutput) -> list[Tensor]:
    """The coarser estimates of a multi-scale output, (B, 1, H, W) each at the input resolution, finest first.

    ``output["multiscale"][1:]`` of a :class:`~pseudolabel.models.registry.StereoOutput`; an empty
    list for any other output.
    """
    if isinstance(output, Mapping):
        multiscale = output.get("multiscale")
        if isinstance(multiscale, (list, tuple)) and len(multiscale) > 1:
            return [disparity_map(level) for level in multiscale[1:]]
    return []


def unit_range(image: Tensor, *, name: str = "image", dtype: torch.dtype | None = None) -> Tensor:
    """A float image in [0, 1]: uint8 / 255, uint16 / 65535; floats are checked to be in [0, 1].

    Args:
        image: (B, C, H, W) image.
        name: batch key, for the error message.
        dtype: float dtype of the result (default: the image's own float dtype, else float32).

    Raises:
        InputError: a float image with values outside [0, 1] (e.g. still in 0..255).
    """
    if image.dtype == torch.uint8:
        return image.to(dtype or torch.float32) / 255.0
    if image.dtype == getattr(torch, "uint16", torch.uint8):  # (torch < 2.3 has no uint16; uint8 is handled above)
        return image.to(dtype or torch.float32) / 65535.0
    if not image.is_floating_point():
        raise InputError(f"batch[{name!r}] has dtype {image.dtype}; give uint8, uint16 or float images in [0, 1]")
    if image.numel() and (float(image.min()) < -1e-3 or float(image.max()) > 1 + 1e-3):
        raise InputError(f"batch[{name!r}] is a float image outside [0, 1]; divide it by 255 (or 65535) first")
    return image.to(dtype) if dtype is not None else image


def _optional(batch: Mapping[str, Any], key: str, like: Tensor) -> Tensor | None:
    value = batch.get(key)
    if value is None:
        return None
    if not isinstance(value, Tensor):
        raise ValueError(f"batch[{key!r}] must be a tensor; got {type(value).__name__}")
    if value.dim() == 3:
        value = value.unsqueeze(1)
    if value.shape[0] != like.shape[0] or value.shape[-2:] != like.shape[-2:]:
        raise ValueError(f"batch[{key!r}] has shape {tuple(value.shape)}; the disparity is {tuple(like.shape)}")
    return value.to(like.dtype) if value.is_floating_point() else value


def adaptation_loss(
    output: DisparityOutput,
    batch: Mapping[str, Any],
    tau_module: TauModule,
    terms: Sequence[LossTerm],
    *,
    weighting: str = "mask",
    predict: Predict | None = None,
    scale_decay: float = 0.0,
    regularisers: Mapping[str, Callable[[], Tensor]] | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The adaptation loss of one batch: ``sum(weight * term) + tau penalty``.

    Args:
        output: the network's output for ``batch["left"], batch["right"]`` (see :func:`disparity_map`).
        batch: the batch (keys in the module docstring).
        tau_module: threshold (fixed, learnable or predicted).
        terms: weighted loss terms (:func:`pseudolabel.learn.losses.build_loss_terms`).
        weighting: ``"mask"`` or ``"confidence"`` for the guided loss.
        predict: the network ``(left, right) -> output``, needed only by the ``lr`` term (it runs
            once more on the mirrored pair, with the batch's images as they are).
        scale_decay: when > 0 and the output is multi-scale, the per-pixel label terms
            (:data:`PER_LEVEL_TERMS`: guided, l1) also score every coarser estimate, level ``k``
            (finest = 0) with weight ``scale_decay ** k``, as MADNet adapts each of its modules with
            a loss of its own; the logged ``loss/<term>`` stays the finest level's value.
        regularisers: weight-space terms by name (``l2sp``), see :class:`pseudolabel.learn.losses.LossInputs`.

    Returns:
        ``(loss, logs)``: the scalar loss to back-propagate, and floats for logging: ``loss``,
        ``loss/<term>`` (unweighted), and when the guided loss is used ``tau`` (batch mean),
        ``tau_min``/``tau_max``, ``tau_penalty`` and ``selected`` (mean selection weight over the
        known proxy pixels).
    """
    if weighting not in WEIGHTINGS:
        raise InputError(f"--weighting must be one of {', '.join(WEIGHTINGS)}; got {weighting!r}")
    disparity = disparity_map(output)
    names = {term.name for term in terms}
    needs_images = bool(names & {"reconstruction", "smooth", "wlcn", "lr"})
    left = right = None
    if needs_images:
        for key in ("left", "right"):
            if not isinstance(batch.get(key), Tensor):
                raise InputError(f"the adaptation batch has no {key!r} image, needed by --loss {sorted(names)}")
        left = unit_range(batch["left"], name="left", dtype=disparity.dtype)
        right = unit_range(batch["right"], name="right", dtype=disparity.dtype)

    proxy = _optional(batch, "proxy", disparity)
    confidence = _optional(batch, "confidence", disparity)
    tau: Tensor | None = None
    logs: dict[str, float] = {}
    penalty = disparity.new_zeros(())
    if "guided" in names:
        if proxy is None or confidence is None:
            raise InputError("--loss guided needs the proxy disparity and its confidence in every batch")
        tau = tau_module(confidence, proxy)
        penalty = tau_module.penalty(tau)
        with torch.no_grad():
            known = torch.isfinite(proxy).to(disparity.dtype)
            selected = select_pixels(confidence, tau.detach(), tau_module.temperature) * known
            logs.update(
                tau=float(tau.detach().mean()),
                tau_min=float(tau.detach().min()),
                tau_max=float(tau.detach().max()),
                tau_penalty=float(penalty.detach()),
                selected=float(selected.sum() / known.sum().clamp_min(1)),
            )

    right_disparity_fn: Callable[[], Tensor] | None = None
    if predict is not None:
        raw_left, raw_right = batch["left"], batch["right"]

        def right_disparity_fn() -> Tensor:
            return mirrored_right_disparity(lambda a, b: disparity_map(predict(a, b)).to(disparity.dtype), raw_left, raw_right)

    inputs = LossInputs(
        disparity=disparity,
        left=left,
        right=right,
        proxy=proxy,
        confidence=confidence,
        tau=tau,
        temperature=tau_module.temperature,
        weighting=weighting,
        proxy_valid=_optional(batch, "proxy_valid", disparity),
        target=_optional(batch, "disparity", disparity),
        target_valid=_optional(batch, "valid", disparity),
        right_disparity_fn=right_disparity_fn,
        regularisers=dict(regularisers or {}),
    )
    if not scale_decay >= 0:
        raise InputError(f"--scale-decay must be >= 0; got {scale_decay}")
    levels = coarser_levels(output) if scale_decay > 0 else []
    total = penalty
    for term in terms:
        value = term(inputs)
        logs[f"loss/{term.name}"] = float(value.detach())
        if term.weight:
            total = total + term.weight * value
            if term.name in PER_LEVEL_TERMS:
                for level_index, level in enumerate(levels, start=1):
                    level_value = term(dataclasses.replace(inputs, disparity=level.to(disparity.dtype)))
                    total = total + term.weight * scale_decay**level_index * level_value
    logs["loss"] = float(total.detach())
    return total, logs


class AdaptationObjective(nn.Module):
    """``loss, logs = objective(output, batch)``: the trainer's ``loss_fn`` for adaptation.

    Args:
        tau: a tau module, or a ``--tau`` spec (``0.8``, ``"learnable"``, ``"net"``).
        loss: ``--loss`` spec (``"guided=1,smooth=0.1"``) or already-built terms.
        weighting: ``"mask"`` or ``"confidence"``.
        predict: the network, needed only by the ``lr`` term (see :meth:`set_predict`).
        scale_decay: weight ratio of the coarser estimates in the guided and l1 terms (see
            :func:`adaptation_loss`; 0 = finest output only).
    """

    def __init__(
        self,
        tau: TauModule | str | float,
        loss: str | Sequence[LossTerm] = "guided=1",
        *,
        weighting: str = "mask",
        predict: Predict | None = None,
        scale_decay: float = 0.0,
    ) -> None:
        super().__init__()
        if not scale_decay >= 0:
            raise InputError(f"--scale-decay must be >= 0; got {scale_decay}")
        self.scale_decay = float(scale_decay)
        if weighting not in WEIGHTINGS:
            raise InputError(f"--weighting must be one of {', '.join(WEIGHTINGS)}; got {weighting!r}")
        self.tau = tau if isinstance(tau, TauModule) else build_tau(tau)
        self.terms: list[LossTerm] = build_loss_terms(loss) if isinstance(loss, str) else list(loss)
        if not self.terms:
            raise InputError("--loss is empty; give at least one term (e.g. --loss guided=1)")
        self.weighting = weighting
        self._predict: Predict | None = None
        self.set_predict(predict)
        self._regularisers: dict[str, Callable[[], Tensor]] = {}

    def set_predict(self, predict: Predict | None) -> None:
        """Set the network used by the ``lr`` term (stored without registering it as a sub-module)."""
        object.__setattr__(self, "_predict", predict)

    def set_regulariser(self, name: str, function: Callable[[], Tensor]) -> None:
        """Give the term ``name`` (``l2sp``) its regulariser (kept outside the module's parameters and state)."""
        self._regularisers[name] = function

    def forward(self, output: DisparityOutput, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, float]]:
        return adaptation_loss(
            output,
            batch,
            self.tau,
            self.terms,
            weighting=self.weighting,
            predict=self._predict,
            scale_decay=self.scale_decay,
            regularisers=self._regularisers,
        )

    def loss_spec(self) -> str:
        """The terms as a ``--loss`` string (``"guided=1,smooth=0.1"``)."""
        return ",".join(f"{term.name}={term.weight:g}" for term in self.terms)

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable settings for checkpoint metadata (the learned values are in ``state_dict``)."""
        settings: dict[str, Any] = {
            "loss": self.loss_spec(),
            "weighting": self.weighting,
            "scale_decay": self.scale_decay,
            "tau": self.tau.describe(),
        }
        if isinstance(self.tau, LearnableTau):
            settings["tau"]["value"] = self.tau.current()
        return settings
