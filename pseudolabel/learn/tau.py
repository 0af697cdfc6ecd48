"""The confidence threshold tau of guided-confidence adaptation: fixed, learnable or predicted.

A tau module maps a batch's confidence maps and proxy disparities to one threshold per image and
says how pixels are selected with it:

* :class:`FixedTau` (``--tau 0.8``): a constant; hard selection ``confidence > tau``.
* :class:`LearnableTau` (``--tau learnable``): ``tau = sigmoid(theta)`` with ``theta`` trained
  together with the network; soft selection ``sigmoid((confidence - tau) / T)`` so that the loss is
  differentiable in tau, and a penalty ``-lambda * log(1 - tau)`` added to the loss, without which
  tau would run to 1 (keeping only the few most confident, easiest pixels always lowers the
  normalised guided loss).
* :class:`TauNet` (``--tau net``): tau predicted per image by three 3x3 convolutions and global
  average pooling from the confidence map and the normalised proxy; same soft selection and
  penalty.

Every module returns tau as a (B,) tensor in (0, 1) (``[0, 1)`` for a fixed one); ``temperature`` is
``None`` for hard selection. The learnable parameters (if any) must be given to the optimiser
along with the network's; as they are few and start far from their optimum, a learning rate
10-100x the network's is reasonable (the trainer's choice).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from pseudolabel.errors import InputError

__all__ = [
    "DEFAULT_INIT",
    "DEFAULT_PENALTY_WEIGHT",
    "DEFAULT_TEMPERATURE",
    "FixedTau",
    "LearnableTau",
    "TauModule",
    "TauNet",
    "build_tau",
]

#: Starting value of a learnable or predicted tau.
DEFAULT_INIT = 0.5
#: Temperature T of the soft selection sigmoid((c - tau) / T) (confidence units).
DEFAULT_TEMPERATURE = 0.05
#: lambda of the penalty -lambda * log(1 - tau); in the loss's units (pixels for the guided loss).
DEFAULT_PENALTY_WEIGHT = 1.0


def _logit(probability: float) -> float:
    return math.log(probability / (1.0 - probability))


def _check_maps(confidence: Tensor, proxy: Tensor) -> None:
    if confidence.dim() != 4 or confidence.shape[1] != 1:
        raise ValueError(f"confidence must have shape (B, 1, H, W); got {tuple(confidence.shape)}")
    if proxy.shape != confidence.shape:
        raise ValueError(f"proxy {tuple(proxy.shape)} and confidence {tuple(confidence.shape)} differ in shape")


class TauModule(nn.Module):
    """Base class: ``forward(confidence, proxy) -> (B,) tau``, plus the selection temperature and penalty."""

    #: ``None``: hard selection ``confidence > tau``; a float T: soft ``sigmoid((c - tau) / T)``.
    temperature: float | None = None
    #: ``"fixed"``, ``"learnable"`` or ``"net"`` (the ``--tau`` spelling).
    kind: str = ""

    def forward(self, confidence: Tensor, proxy: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Threshold per image.

        Args:
            confidence: (B, 1, H, W) confidence in [0, 1].
            proxy: (B, 1, H, W) proxy disparity, pixels, NaN = unknown.

        Returns:
            (B,) tau, dtype and device of ``confidence``.
        """
        raise NotImplementedError

    def penalty(self, tau: Tensor) -> Tensor:
        """Scalar term added to the loss for the threshold(s) ``tau`` (B,); zero by default."""
        return tau.new_zeros(())

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable settings (for logs and checkpoint metadata), without the current tau."""
        return {"kind": self.kind, "temperature": self.temperature}


class FixedTau(TauModule):
    """A constant threshold in [0, 1) with hard selection; nothing to learn."""

    kind = "fixed"

    def __init__(self, tau: float) -> None:
        super().__init__()
        if not 0.0 <= tau < 1.0 or not math.isfinite(tau):
            raise InputError(f"--tau must be in [0, 1) (pixels with confidence > tau are used); got {tau}")
        self.value = float(tau)
        self.temperature = None

    def forward(self, confidence: Tensor, proxy: Tensor) -> Tensor:
        _check_maps(confidence, proxy)
        return torch.full((confidence.shape[0],), self.value, dtype=confidence.dtype, device=confidence.device)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "tau": self.value}


class _PenalisedTau(TauModule):
    """Shared soft-selection settings and the ``-lambda * log(1 - tau)`` penalty."""

    def __init__(self, temperature: float, penalty_weight: float, init: float) -> None:
        super().__init__()
        if not temperature > 0 or not math.isfinite(temperature):
            raise InputError(f"--tau-temperature must be a positive number; got {temperature}")
        if not penalty_weight >= 0 or not math.isfinite(penalty_weight):
            raise InputError(f"--tau-penalty must be a finite number >= 0; got {penalty_weight}")
        if not 0.0 < init < 1.0:
            raise InputError(f"--tau-init must be strictly between 0 and 1; got {init}")
        self.temperature = float(temperature)
        self.penalty_weight = float(penalty_weight)
        self.init = float(init)

    def penalty(self, tau: Tensor) -> Tensor:
        """``-lambda * mean(log(1 - tau))``: 0 at tau = 0, growing without bound as tau -> 1."""
        return -self.penalty_weight * torch.log1p(-tau).mean()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "penalty_weight": self.penalty_weight, "init": self.init}


class LearnableTau(_PenalisedTau):
    """``tau = sigmoid(theta)``, one scalar parameter shared by all images.

    Args:
        init: starting tau in (0, 1).
        temperature: soft selection temperature T > 0.
        penalty_weight: lambda >= 0 of ``-lambda * log(1 - tau)``.
    """

    kind = "learnable"

    def __init__(
        self,
        init: float = DEFAULT_INIT,
        temperature: float = DEFAULT_TEMPERATURE,
        penalty_weight: float = DEFAULT_PENALTY_WEIGHT,
    ) -> None:
        super().__init__(temperature, penalty_weight, init)
        self.theta = nn.Parameter(torch.tensor(_logit(init), dtype=torch.float32))

    def current(self) -> float:
        """The current tau as a Python float."""
        return float(torch.sigmoid(self.theta.detach()))

    def forward(self, confidence: Tensor, proxy: Tensor) -> Tensor:
        _check_maps(confidence, proxy)
        tau = torch.sigmoid(self.theta.to(confidence.dtype))
        return tau.expand(confidence.shape[0])


class TauNet(_PenalisedTau):
    """Per-image tau from the confidence map and the normalised proxy disparity.

    Input: 2 channels, the confidence and the proxy divided by its per-image mean over known
    pixels (so that the prediction does not depend on the image's disparity range; unknown proxy
    pixels are 0). Three 3x3 convolutions (2 -> ``channels`` -> ``channels`` -> 1, ReLU between;
    the first two with stride 2 to keep the cost small on full-size images), global average
    pooling of the last map, sigmoid. The last layer starts with small weights and a bias of
    ``logit(init)``, so the first predictions are close to ``init``.

    Args:
        channels: width of the hidden layers.
        init: starting tau in (0, 1).
        temperature: soft selection temperature T > 0.
        penalty_weight: lambda >= 0 of ``-lambda * log(1 - tau)``.
    """

    kind = "net"

    def __init__(
        self,
        channels: int = 16,
        init: float = DEFAULT_INIT,
        temperature: float = DEFAULT_TEMPERATURE,
        penalty_weight: float = DEFAULT_PENALTY_WEIGHT,
    ) -> None:
        super().__init__(temperature, penalty_weight, init)
        self.channels = int(channels)
        self.layers = nn.Sequential(
            nn.Conv2d(2, channels, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, 1, 3, padding=1),
        )
        last: nn.Conv2d = self.layers[-1]  # type: ignore[assignment]
        with torch.no_grad():
            last.weight.mul_(0.1)
            if last.bias is not None:
                last.bias.fill_(_logit(init))

    @staticmethod
    def normalized_proxy(proxy: Tensor) -> Tensor:
        """(B, 1, H, W) proxy divided by its per-image mean over finite positive values (else 0)."""
        known = torch.isfinite(proxy) & (proxy > 0)
        values = torch.where(known, proxy, torch.zeros_like(proxy))
        count = known.sum(dim=(1, 2, 3), keepdim=True).clamp_min(1)
        mean = values.sum(dim=(1, 2, 3), keepdim=True) / count
        return values / mean.clamp_min(1e-6)

    def forward(self, confidence: Tensor, proxy: Tensor) -> Tensor:
        _check_maps(confidence, proxy)
        confidence = torch.where(torch.isfinite(confidence), confidence, torch.zeros_like(confidence))
        inputs = torch.cat((confidence, self.normalized_proxy(proxy)), dim=1)
        first: nn.Conv2d = self.layers[0]  # type: ignore[assignment]
        logits = self.layers(inputs.to(first.weight.dtype)).mean(dim=(1, 2, 3))  # global average pooling
        return torch.sigmoid(logits).to(confidence.dtype)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "channels": self.channels}


def build_tau(
    spec: str | float,
    *,
    init: float = DEFAULT_INIT,
    temperature: float = DEFAULT_TEMPERATURE,
    penalty_weight: float = DEFAULT_PENALTY_WEIGHT,
) -> TauModule:
    """The tau module for ``--tau``: a number in [0, 1) (fixed), ``"learnable"`` or ``"net"``.

    ``init``, ``temperature`` and ``penalty_weight`` apply to the learnable and predicted kinds.

    Raises:
        InputError: ``spec`` is none of those, or a setting is out of range.
    """
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text == "learnable":
            return LearnableTau(init=init, temperature=temperature, penalty_weight=penalty_weight)
        if text == "net":
            return TauNet(init=init, temperature=temperature, penalty_weight=penalty_weight)
        try:
            value = float(text)
        except ValueError:
            raise InputError(f"--tau must be a number in [0, 1) (e.g. --tau 0.8), 'learnable' or 'net'; got {spec!r}") from None
    else:
        value = float(spec)
    return FixedTau(value)
