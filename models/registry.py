"""Registry of deep stereo networks, by name.

Every network module registers a constructor with :func:`register_network`; callers build one with
:func:`build_network` from a name and keyword arguments (the pair stored in every checkpoint, so a
checkpoint can be rebuilt without any other file).

Network contract (all registered networks):

* ``forward(left, right)`` takes two ``float32`` tensors of shape (B, 3, H, W), RGB in ``[0, 1]``
  (the network normalises them itself), any H and W (inputs are padded to
  :attr:`StereoNetwork.size_multiple` and the outputs cropped back);
* it returns a :class:`StereoOutput`: ``disparity`` (B, 1, H, W), positive, left view, in pixels of
  the input resolution, and ``multiscale``, a list of (B, 1, H, W) raw (unclamped) estimates of every
  level of the network, finest first, already upsampled to the input resolution and expressed in
  input pixels, for multi-scale losses.

A network whose finest output is coarser than the input (MADNet: a quarter) brings it to the input
resolution with :attr:`StereoNetwork.upsampling`: ``"bilinear"``, or ``"guided"``, the joint bilateral
upsampling of :mod:`pseudolabel.models.upsampling`, which follows the left image's colour edges (the
coarser levels of ``multiscale`` are always upsampled bilinearly).

Networks defined outside the package follow a simpler protocol (a module returning the disparity
map) and are wrapped into this contract by :class:`pseudolabel.models.external.ExternalNetwork`,
registered (unlisted) as ``external``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn
from torch.nn import functional as F

from pseudolabel.errors import InputError

#: Modules imported by :func:`available_networks` / :func:`build_network` so that their networks register.
NETWORK_MODULES: tuple[str, ...] = ("pseudolabel.models.madnet", "pseudolabel.models.tiny", "pseudolabel.models.external")

_REGISTRY: dict[str, Callable[..., StereoNetwork]] = {}
#: Registered names that :func:`available_networks` leaves out (``external``: built from a factory, not by name).
_UNLISTED: set[str] = set()

NetworkFactory = TypeVar("NetworkFactory", bound=Callable[..., Any])


@dataclass
class StereoOutput(Mapping[str, Any]):
    """What a stereo network returns (also a read-only mapping: ``output["disparity"]``).

    Attributes:
        disparity: (B, 1, H, W) ``float32`` left-view disparity in input pixels, clamped at 0.
        multiscale: list of (B, 1, H, W) raw disparities, finest (the unclamped ``disparity``) first,
            one per decoder level, upsampled to the input resolution and scaled to input pixels.
    """

    disparity: torch.Tensor
    multiscale: list[torch.Tensor] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        """Dictionary-style access (``output["disparity"]``, ``output["multiscale"]``)."""
        if key not in ("disparity", "multiscale"):
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(("disparity", "multiscale"))

    def __len__(self) -> int:
        return 2


class StereoNetwork(nn.Module):
    """Base class: padding to a multiple, cropping back and input normalisation.

    Subclasses implement :meth:`forward_padded` on padded, normalised images and set
    :attr:`size_multiple`.
    """

    #: Height and width of the padded input must be multiples of this.
    size_multiple: int = 1
    #: How the finest output reaches the input resolution: ``"bilinear"`` or ``"guided"``.
    upsampling: str = "bilinear"

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> StereoOutput:
        """Disparity of the left view.

        Args:
            left, right: (B, 3, H, W) float RGB images in ``[0, 1]`` (a (B, 1, H, W) gray input is
                repeated to three channels).

        Returns:
            :class:`StereoOutput` at the input resolution.
        """
        if left.shape != right.shape or left.dim() != 4:
            raise ValueError(f"left and right must be (B, 3, H, W) tensors of equal shape, got {tuple(left.shape)} and {tuple(right.shape)}")
        if left.shape[1] == 1:
            left, right = left.expand(-1, 3, -1, -1), right.expand(-1, 3, -1, -1)
        height, width = left.shape[-2:]
        multiple = self.size_multiple
        pad_bottom = (-height) % multiple
        pad_right = (-width) % multiple
        left_n, right_n = normalize_images(left), normalize_images(right)
        if pad_bottom or pad_right:
            # Replicate padding: the borders keep plausible content for the correlation.
            left_n = F.pad(left_n, (0, pad_right, 0, pad_bottom), mode="replicate")
            right_n = F.pad(right_n, (0, pad_right, 0, pad_bottom), mode="replicate")
        levels = self.forward_padded(left_n, right_n)
        padded_height, padded_width = left_n.shape[-2:]
        if self.upsampling == "guided" and levels[0].shape[-2:] != (padded_height, padded_width):
            from pseudolabel.models.upsampling import guided_upsample

            guide = F.pad(left.float(), (0, pad_right, 0, pad_bottom), mode="replicate")
            levels = [guided_upsample(levels[0], guide, padded_width // levels[0].shape[-1]), *levels[1:]]
        multiscale: list[torch.Tensor] = []
        for level_disparity in levels:
            factor = padded_width / level_disparity.shape[-1]
            if level_disparity.shape[-2:] != (padded_height, padded_width):
                level_disparity = F.interpolate(level_disparity, size=(padded_height, padded_width), mode="bilinear", align_corners=False) * factor
            multiscale.append(level_disparity[:, :, :height, :width])
        return StereoOutput(disparity=multiscale[0].clamp(min=0.0), multiscale=multiscale)

    def forward_padded(self, left: torch.Tensor, right: torch.Tensor) -> list[torch.Tensor]:
        """Disparities on padded, normalised inputs: list of (B, 1, h_k, w_k) in level-k pixels, finest first."""
        raise NotImplementedError


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel standardisation (zero mean, unit standard deviation).

    Args:
        images: (B, C, H, W) float images (any range, typically ``[0, 1]``).

    Returns:
        (B, C, H, W) float tensor; robust to global brightness and contrast changes between domains.
    """
    images = images.float()
    mean = images.mean(dim=(2, 3), keepdim=True)
    std = images.std(dim=(2, 3), keepdim=True)
    return (images - mean) / (std + 1e-3)


def register_network(name: str, listed: bool = True) -> Callable[[NetworkFactory], NetworkFactory]:
    """Class/function decorator: register a network constructor under ``name``.

    ``listed=False`` keeps the name out of :func:`available_networks` (and so out of ``--arch``
    choices) while :func:`build_network` still builds it from a checkpoint.
    """

    def decorator(factory: NetworkFactory) -> NetworkFactory:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"network {name!r} is already registered")
        _REGISTRY[name] = factory
        if not listed:
            _UNLISTED.add(name)
        return factory

    return decorator


def _import_builtin_networks() -> None:
    for module in NETWORK_MODULES:
        importlib.import_module(module)


def available_networks() -> list[str]:
    """Sorted names of the registered networks (those registered with ``listed=False`` left out)."""
    _import_builtin_networks()
    return sorted(set(_REGISTRY) - _UNLISTED)


def build_network(name: str, **kwargs: Any) -> StereoNetwork:
    """Build the network registered as ``name`` with constructor keyword arguments ``kwargs``.

    Raises:
        InputError: unknown name (the message lists the known ones).
    """
    _import_builtin_networks()
    if name not in _REGISTRY:
        raise InputError(f"unknown network --arch {name!r}; choose one of {', '.join(available_networks())}")
    return _REGISTRY[name](**kwargs)
