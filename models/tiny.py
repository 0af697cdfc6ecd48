"""``tiny``: a three-level, narrow MADNet-style network that trains in seconds (for tests and demos).

Same building blocks as :mod:`pseudolabel.models.madnet` (pyramid, warping, correlation radius 2,
per-level residual decoders, a small dilated context network), with 8-16 channels and the output at
half resolution. About 20 thousand parameters; not meant to be accurate.
"""

from __future__ import annotations

from collections.abc import Sequence

from pseudolabel.models.madnet import MADNet
from pseudolabel.models.registry import register_network


class TinyStereo(MADNet):
    """A small MADNet-like network: 3 levels, 8/12/16 channels, output at half resolution."""

    def __init__(
        self,
        channels: Sequence[int] = (8, 12, 16),
        decoder_channels: Sequence[int] = (16, 8),
        context_channels: Sequence[int] = (16, 8),
        context_dilations: Sequence[int] = (1, 2),
        radius: int = 2,
        output_level: int = 1,
        upsampling: str = "guided",
    ) -> None:
        super().__init__(channels, decoder_channels, context_channels, context_dilations, radius, output_level, upsampling)


@register_network("tiny")
def build_tiny(**kwargs: object) -> TinyStereo:
    """The ``tiny`` network (keyword arguments override :class:`TinyStereo`'s)."""
    return TinyStereo(**kwargs)  # type: ignore[arg-type]
