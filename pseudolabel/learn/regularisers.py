"""Regularisers that keep what the source network knew: L2-SP (Li, Grandvalet and Davoine, ICML 2018).

``--loss guided=1,l2sp=1e-3`` adds ``1e-3 * sum_i (w_i - w_i^source)^2`` over every trained parameter
of the network, pulling the adapted weights toward the source weights instead of toward 0 (which is
what weight decay does). :class:`L2SP` keeps a copy of the source weights, taken when it is built
(before the first step); the registered term ``l2sp`` reads it from
:attr:`pseudolabel.learn.losses.LossInputs.regularisers`, where
:class:`pseudolabel.learn.adaptation.AdaptationObjective` puts it (:meth:`~pseudolabel.learn.adaptation.AdaptationObjective.set_regulariser`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pseudolabel.learn.losses import LossInputs, register_loss

__all__ = ["L2SP", "l2sp_distance"]


def l2sp_distance(parameters: Sequence[Tensor], anchors: Sequence[Tensor]) -> Tensor:
    """``sum_i sum((p_i - a_i)^2)`` in float32: the squared distance of ``parameters`` to ``anchors`` (same shapes)."""
    if len(parameters) != len(anchors):
        raise ValueError(f"{len(parameters)} parameters but {len(anchors)} anchors")
    if not parameters:
        return torch.zeros(())
    total = parameters[0].new_zeros((), dtype=torch.float32)
    for parameter, anchor in zip(parameters, anchors):
        if parameter.shape != anchor.shape:
            raise ValueError(f"parameter of shape {tuple(parameter.shape)} against an anchor of shape {tuple(anchor.shape)}")
        total = total + (parameter.float() - anchor.to(parameter.device, torch.float32)).pow(2).sum()
    return total


class L2SP:
    """The squared distance of a network's trainable parameters to their values when this was built.

    Calling it returns the scalar ``sum (w - w_source)^2`` (differentiable in the parameters). The
    network may move to another device after this is built: the anchors follow on first use.
    """

    def __init__(self, network: nn.Module) -> None:
        self.parameters = [parameter for parameter in network.parameters() if parameter.requires_grad]
        self.anchors = [parameter.detach().clone().float() for parameter in self.parameters]

    def __call__(self) -> Tensor:
        device = self.parameters[0].device if self.parameters else torch.device("cpu")
        if self.anchors and self.anchors[0].device != device:
            self.anchors = [anchor.to(device) for anchor in self.anchors]
        return l2sp_distance(self.parameters, self.anchors)


@register_loss("l2sp")
def _l2sp_term(inputs: LossInputs) -> Tensor:
    return inputs.regulariser("l2sp", loss="l2sp")().to(inputs.disparity.dtype)
