"""LFN: a late-fusion confidence network that reads the image besides the disparity.

In the spirit of the late-fusion networks of the literature (LFN, Fu et al. 2017; the local branches of
LGC, Tosi et al. ECCV 2018): two fully convolutional branches, one over the disparity (and optionally
conventional measures), one over the image channels (:mod:`pseudolabel.confidence.images`: the
normalised left image and the photometric error ``|left - right warped by the proxy disparity|``),
concatenated and fused by 1x1 convolutions into one logit.

* disparity branch: four 3x3 convolutions without padding (a CCNN trunk, 9x9 receptive field), whose
  output is cropped to the image branch's;
* image branch: four 3x3 convolutions without padding, dilated 1, 2, 4, 1: a 17x17 receptive field, so
  a texture-less area is seen with its surroundings;
* fusion: two 1x1 convolutions with ReLU and a 1x1 convolution to the logit.

The network has no padding and no normalisation layer: each output pixel is a function of its 17x17 input
patch only, so scoring a whole (reflection-padded) image equals scoring every patch alone
(:attr:`LateFusionNetwork.padding` = 8).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pseudolabel.confidence.images import IMAGE_CHANNELS
from pseudolabel.errors import InputError
from pseudolabel.models.ccnn import CONFIDENCE_NETWORKS, ConfidenceNetwork

#: Dilations of the image branch's 3x3 convolutions.
IMAGE_DILATIONS: tuple[int, ...] = (1, 2, 4, 1)
#: Default input channels.
DEFAULT_INPUTS: tuple[str, ...] = ("disparity", "image", "photometric")


class LateFusionNetwork(ConfidenceNetwork):
    """Late fusion of a disparity branch and an image branch (see the module docstring).

    Args:
        filters: channels of each branch's 3x3 convolutions.
        fc_filters: channels of the fusion's 1x1 convolutions.
        inputs: ``"disparity"``, then any conventional measures (disparity branch) and at least one of
            ``image`` / ``photometric`` (image branch), in any order after the first.
    """

    architecture: str = "lfn"
    padding: int = sum(IMAGE_DILATIONS)
    _disparity_index: torch.Tensor
    _image_index: torch.Tensor

    def __init__(self, filters: int = 32, fc_filters: int = 64, inputs: Sequence[str] = DEFAULT_INPUTS) -> None:
        super().__init__()
        self.filters = int(filters)
        self.fc_filters = int(fc_filters)
        self.inputs = tuple(str(name) for name in inputs)
        if not self.inputs or self.inputs[0] != "disparity":
            raise InputError(f"LFN inputs must start with 'disparity', got {list(self.inputs)}")
        self.image_channels = [index for index, name in enumerate(self.inputs) if name in IMAGE_CHANNELS]
        self.disparity_channels = [index for index, name in enumerate(self.inputs) if name not in IMAGE_CHANNELS]
        if not self.image_channels:
            raise InputError(f"LFN reads the image: add image, photometric and/or texture to the inputs (got {','.join(self.inputs)})")
        disparity_layers: list[nn.Module] = []
        channels = len(self.disparity_channels)
        for _ in range(4):
            disparity_layers += [nn.Conv2d(channels, self.filters, kernel_size=3), nn.ReLU(inplace=True)]
            channels = self.filters
        image_layers: list[nn.Module] = []
        channels = len(self.image_channels)
        for dilation in IMAGE_DILATIONS:
            image_layers += [nn.Conv2d(channels, self.filters, kernel_size=3, dilation=dilation), nn.ReLU(inplace=True)]
            channels = self.filters
        self.disparity_branch = nn.Sequential(*disparity_layers)
        self.image_branch = nn.Sequential(*image_layers)
        self.fusion = nn.Sequential(
            nn.Conv2d(2 * self.filters, self.fc_filters, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(self.fc_filters, self.fc_filters, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(self.fc_filters, 1, kernel_size=1),
        )
        self.register_buffer("_disparity_index", torch.tensor(self.disparity_channels, dtype=torch.long), persistent=False)
        self.register_buffer("_image_index", torch.tensor(self.image_channels, dtype=torch.long), persistent=False)

    def config(self) -> dict[str, Any]:
        """Constructor arguments (stored in checkpoints)."""
        return {"filters": self.filters, "fc_filters": self.fc_filters, "inputs": list(self.inputs)}

    def input_convolutions(self) -> list[tuple[nn.Conv2d, list[int]]]:
        """Each branch's first convolution reads that branch's channels."""
        convolutions = []
        for branch, channels in ((self.disparity_branch, self.disparity_channels), (self.image_branch, self.image_channels)):
            first = branch[0]
            assert isinstance(first, nn.Conv2d)
            convolutions.append((first, list(channels)))
        return convolutions

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits without padding: (B, C, H, W) -> (B, 1, H - 16, W - 16)."""
        disparity = self.disparity_branch(inputs.index_select(1, self._disparity_index))
        image = self.image_branch(inputs.index_select(1, self._image_index))
        crop = (disparity.shape[-1] - image.shape[-1]) // 2
        if crop > 0:
            disparity = disparity[..., crop:-crop, crop:-crop]
        return self.fusion(torch.cat([disparity, image], dim=1))


CONFIDENCE_NETWORKS["lfn"] = LateFusionNetwork
