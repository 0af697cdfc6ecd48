"""MADNet: Modularly ADaptive Network (Tonioni, Tosi, Poggi, Mattoccia, Di Stefano; CVPR 2019).

Implemented from the paper's description:

* a pyramid encoder of six levels; level ``k`` halves the resolution with a strided 3x3 convolution
  and adds a second 3x3 convolution (channels 16, 32, 64, 96, 128, 192; leaky ReLU, slope 0.2);
* coarse to fine, at every level the right features are warped into the left view with the
  upsampled (x2 in size and value) disparity of the coarser level, and a horizontal correlation with
  radius 2 (5 channels) compares left and warped right features;
* a decoder per level (3x3 convolutions with 128, 128, 96, 64, 32 channels, then 1) reads the left
  features, the correlation and the upsampled disparity and predicts a residual correction of it
  (the coarsest level predicts the disparity directly);
* at the output level (quarter resolution) a context network of dilated 3x3 convolutions (dilations
  1, 2, 4, 8, 16, 1) refines the disparity, which is then upsampled to full resolution: bilinearly in
  the paper; here by default with a joint bilateral upsampling guided by the left image
  (``upsampling="guided"``, :mod:`pseudolabel.models.upsampling`), which keeps depth edges on the
  colour edges (it has no weights, so checkpoints trained either way load either way).

Disparity convention: the left pixel ``(y, x)`` matches the right pixel ``(y, x - d)``, ``d >= 0``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from pseudolabel.models.registry import StereoNetwork, register_network
from pseudolabel.models.warp import warp_right_to_left

LEAKY_SLOPE = 0.2
UPSAMPLINGS = ("guided", "bilinear")


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1, activation: bool = True) -> nn.Sequential:
    """3x3 convolution ('same' padding for stride 1) followed by a leaky ReLU unless ``activation`` is False."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation)]
    if activation:
        layers.append(nn.LeakyReLU(LEAKY_SLOPE, inplace=True))
    return nn.Sequential(*layers)


def full_precision(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as float32 if it is a low-precision (autocast) result; float32/float64 pass unchanged."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


def horizontal_correlation(left: torch.Tensor, right: torch.Tensor, radius: int) -> torch.Tensor:
    """Correlation of left features with horizontally shifted right features.

    Channel ``i`` (``k = i - radius``) holds ``mean_c left(c, y, x) * right(c, y, x - k)``: positive
    ``k`` means a disparity larger than the one used to warp ``right``.

    Args:
        left, right: (B, C, H, W) features.
        radius: largest shift in pixels.

    Returns:
        (B, 2 * radius + 1, H, W) correlation.
    """
    width = left.shape[-1]
    padded = F.pad(right, (radius, radius, 0, 0))
    volumes = []
    for shift in range(-radius, radius + 1):
        # right(x - shift) sits at padded column x - shift + radius.
        start = radius - shift
        volumes.append((left * padded[..., start : start + width]).mean(dim=1, keepdim=True))
    return torch.cat(volumes, dim=1)


def _last_convolution(layers: nn.Sequential) -> nn.Conv2d:
    """The convolution of the last :func:`conv3x3` block of ``layers``."""
    block = layers[-1]
    convolution = block[0] if isinstance(block, nn.Sequential) else block
    if not isinstance(convolution, nn.Conv2d):  # pragma: no cover - the blocks are built by conv3x3
        raise TypeError(f"expected a convolution, got {type(convolution).__name__}")
    return convolution


class ConvolutionStack(nn.Module):
    """3x3 convolutions (leaky ReLU) ending in one output channel without activation: MADNet's
    disparity decoders (dilation 1 everywhere) and its context network (growing dilations).

    Args:
        in_channels: channels of the input features.
        channels: output channels of each hidden convolution.
        dilations: dilation of each hidden convolution (``None``: all 1).
    """

    def __init__(self, in_channels: int, channels: Sequence[int], dilations: Sequence[int] | None = None) -> None:
        super().__init__()
        dilations = [1] * len(channels) if dilations is None else list(dilations)
        if len(channels) != len(dilations):
            raise ValueError("context network: one dilation per layer is needed")
        layers: list[nn.Module] = []
        previous = in_channels
        for width, dilation in zip(channels, dilations):
            layers.append(conv3x3(previous, width, dilation=dilation))
            previous = width
        layers.append(conv3x3(previous, 1, activation=False))
        self.layers = nn.Sequential(*layers)

    def output_convolution(self) -> nn.Conv2d:
        """The last, 1-channel convolution (the disparity or residual head)."""
        return _last_convolution(self.layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, h, w) -> (B, 1, h, w): a disparity (decoder) or a residual (context network)."""
        return self.layers(features)


class MADNet(StereoNetwork):
    """MADNet with configurable widths (the defaults are the paper's).

    Args:
        channels: encoder channels of levels 1..L (the number of levels is its length).
        decoder_channels: hidden channels of every per-level decoder.
        context_channels: hidden channels of the context network (empty: no context network).
        context_dilations: one dilation per context layer.
        radius: correlation radius in pixels of each level.
        output_level: finest level with a decoder (2 = quarter resolution, as in the paper).
        upsampling: ``"guided"`` (joint bilateral, guided by the left image) or ``"bilinear"`` (the
            paper's) for the finest output.
    """

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 64, 96, 128, 192),
        decoder_channels: Sequence[int] = (128, 128, 96, 64, 32),
        context_channels: Sequence[int] = (128, 128, 128, 96, 64, 32),
        context_dilations: Sequence[int] = (1, 2, 4, 8, 16, 1),
        radius: int = 2,
        output_level: int = 2,
        upsampling: str = "guided",
    ) -> None:
        super().__init__()
        if upsampling not in UPSAMPLINGS:
            raise ValueError(f"upsampling must be one of {', '.join(UPSAMPLINGS)}, got {upsampling!r}")
        self.upsampling = upsampling
        self.channels = tuple(int(c) for c in channels)
        self.levels = len(self.channels)
        if not 1 <= output_level <= self.levels:
            raise ValueError(f"output_level must be in 1..{self.levels}, got {output_level}")
        self.radius = int(radius)
        self.output_level = int(output_level)
        self.size_multiple = 2**self.levels
        encoder: list[nn.Module] = []
        previous = 3
        for width in self.channels:
            encoder.append(nn.Sequential(conv3x3(previous, width, stride=2), conv3x3(width, width)))
            previous = width
        self.encoder = nn.ModuleList(encoder)
        correlation_channels = 2 * self.radius + 1
        # decoders[i] serves level output_level + i.
        self.decoders = nn.ModuleList()
        for level in range(self.output_level, self.levels + 1):
            extra = 0 if level == self.levels else 1
            self.decoders.append(ConvolutionStack(self.channels[level - 1] + correlation_channels + extra, decoder_channels))
        self.context = (
            ConvolutionStack(self.channels[self.output_level - 1] + 1, context_channels, context_dilations) if len(context_channels) else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He (Kaiming) initialisation for the leaky-ReLU convolutions, small weights for the disparity outputs.

        PyTorch's default convolution initialisation shrinks the activations about threefold per
        layer, so that after the 12 encoder convolutions the features (and their correlation, a product of
        two of them) are ~1e-4 of the image scale; the decoders then ignore the correlation and
        the network plateaus at predicting a typical disparity. He initialisation keeps the feature
        scale ~1 at every level; the 1-channel output convolutions start near zero so that the initial
        residual corrections are small.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, a=LEAKY_SLOPE, mode="fan_in", nonlinearity="leaky_relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for stack in (*self.decoders, self.context):
            if not isinstance(stack, ConvolutionStack):
                continue  # no context network
            stack.output_convolution().weight.data.mul_(0.1)

    def forward_padded(self, left: torch.Tensor, right: torch.Tensor) -> list[torch.Tensor]:
        """Disparities of the levels, finest (refined output level) first, each in its own pixels.

        The disparities are float32 even under a bfloat16/float16 autocast: only the residuals of the
        decoders and the context network come from low-precision convolutions (bfloat16 keeps 8
        significant bits, a 0.25 px step at 60 px).
        """
        both = torch.cat((left, right), dim=0)
        features: list[torch.Tensor] = []
        for block in self.encoder:
            both = block(both)
            features.append(both)
        batch = left.shape[0]
        disparity: torch.Tensor | None = None
        per_level: list[torch.Tensor] = []
        for level in range(self.levels, self.output_level - 1, -1):
            left_features, right_features = features[level - 1][:batch], features[level - 1][batch:]
            decoder = self.decoders[level - self.output_level]
            if disparity is None:
                correlation = horizontal_correlation(left_features, right_features, self.radius)
                disparity = full_precision(decoder(torch.cat((left_features, correlation), dim=1)))
            else:
                upsampled = F.interpolate(disparity, size=left_features.shape[-2:], mode="bilinear", align_corners=False) * 2.0
                warped, _ = warp_right_to_left(right_features, upsampled)
                correlation = horizontal_correlation(left_features, warped, self.radius)
                disparity = upsampled + full_precision(decoder(torch.cat((left_features, correlation, upsampled), dim=1)))
            per_level.append(disparity)
        assert disparity is not None
        outputs = per_level[::-1]  # finest first
        if self.context is not None:
            left_features = features[self.output_level - 1][:batch]
            refined = disparity + full_precision(self.context(torch.cat((left_features, disparity), dim=1)))
            outputs = [refined] + outputs
        return outputs


@register_network("madnet")
def build_madnet(**kwargs: object) -> MADNet:
    """MADNet with the paper's configuration (keyword arguments override :class:`MADNet`'s)."""
    return MADNet(**kwargs)  # type: ignore[arg-type]
