"""Any torch stereo network, defined outside this package, behind the :class:`StereoNetwork` contract.

The protocol a network of your own follows
------------------------------------------

A *factory* (any callable, named ``package.module:factory`` on the command line) returns a
``torch.nn.Module`` whose ``forward(left, right)`` takes two (B, 3, H, W) float images and returns
the **left-view disparity in pixels**, positive, as a (B, 1, H, W) tensor (a (B, H, W) tensor is
taken too), or a list/tuple of such maps with the **finest last** (the last one at the input
resolution; earlier ones may be coarser, in pixels of their own width, and are upsampled for the
multi-scale losses). The factory's keyword arguments must be plain JSON values: they are saved in
every checkpoint, which rebuilds the network by importing the factory again.

How the images reach the network, and what else its ``forward`` needs, is an :class:`Adapter`:

``inputs``
    value range of the images the network expects: ``"unit"`` ([0, 1], the default), ``"255"``
    ([0, 255]), ``"symmetric"`` ([-1, 1]), ``"imagenet"`` ([0, 1] minus the ImageNet mean, over its
    standard deviation, per channel) or ``"standardize"`` (zero mean, unit deviation per image and
    channel, as this package's own networks do).
``multiple``
    height and width are padded (replicating the border, at the bottom and right) to a multiple of
    this, and the outputs cropped back.
``forward_kwargs``, ``train_kwargs``, ``eval_kwargs``
    extra keyword arguments of ``forward``: always, in training mode only (``adapt``, ``train``),
    in eval mode only (``predict``, ``eval``). For RAFT-Stereo: ``train_kwargs={"iters": 12}``,
    ``eval_kwargs={"iters": 32, "test_mode": True}``. In eval mode only the last (finest) element
    of a list/tuple output is read, so a test mode that returns ``(low-res flow, disparity)`` works.
``sign``
    ``"positive"`` (the protocol) or ``"negative"``: the network returns minus the disparity (the
    horizontal flow of RAFT-Stereo); it is negated.
``freeze_batchnorm``
    keep the batch-norm layers in eval mode while training (their statistics and running averages
    stay those of the source training), as RAFT-Stereo's own training does; advisable with the
    small batches of an adaptation.

A factory declares its adapter by setting ``stereo_adapter`` (an :class:`Adapter` or a dictionary of
its fields) on the module it returns; ``--adapter '{"multiple": 32}'`` changes fields on top.

A network that breaks the protocol is refused with one line (:class:`~pseudolabel.errors.InputError`)
naming the factory and what it returned: a factory that cannot be imported or called, an output of
the wrong shape, or mostly negative disparities (a flow convention not declared with
``sign="negative"``).

:class:`ExternalNetwork` is registered as the network ``"external"``: its constructor arguments
(``factory``, ``kwargs``, ``adapter``) are the ``arch_kwargs`` of its checkpoints.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pseudolabel.errors import InputError
from pseudolabel.models.registry import StereoNetwork, StereoOutput, normalize_images, register_network

__all__ = [
    "ADAPTER_ATTRIBUTE",
    "EXTERNAL_ARCH",
    "INPUT_RANGES",
    "Adapter",
    "ExternalNetwork",
    "import_factory",
    "is_factory_spec",
]

#: Registry name of networks built by a factory of the user's.
EXTERNAL_ARCH = "external"
#: Attribute of the module returned by a factory that declares its :class:`Adapter`.
ADAPTER_ATTRIBUTE = "stereo_adapter"
#: Accepted values of :attr:`Adapter.inputs`.
INPUT_RANGES = ("unit", "255", "symmetric", "imagenet", "standardize")
SIGNS = ("positive", "negative")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
#: A share of negative pixels above this in the first output means a flow convention.
NEGATIVE_SHARE = 0.5

_SPEC = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _one_line(error: BaseException) -> str:
    """``TypeName: message`` on one line."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def is_factory_spec(text: str) -> bool:
    """Whether ``text`` reads as ``package.module:factory`` (a dotted module, a colon, a dotted attribute)."""
    return bool(_SPEC.match(str(text)))


def _json_plain(value: Any, what: str) -> Any:
    """``value`` if it survives a JSON round trip unchanged (what checkpoints can hold), else an InputError."""
    try:
        copied = json.loads(json.dumps(value))
    except (TypeError, ValueError):
        copied = None
    if copied != value:
        raise InputError(f"{what} {value!r} must hold plain JSON values (numbers, strings, booleans, lists, dictionaries): checkpoints store it")
    return copied


@dataclass(frozen=True)
class Adapter:
    """How images reach a network of the user's and how its output is read (see the module docstring).

    Attributes:
        inputs: value range the network expects, one of :data:`INPUT_RANGES`.
        multiple: pad height and width to a multiple of this (and crop the outputs back).
        forward_kwargs: extra keyword arguments of every ``forward`` call.
        train_kwargs: extra keyword arguments in training mode (on top of ``forward_kwargs``).
        eval_kwargs: extra keyword arguments in eval mode (on top of ``forward_kwargs``).
        sign: ``"positive"``, or ``"negative"`` when the network returns minus the disparity.
        freeze_batchnorm: batch-norm layers stay in eval mode in training.
    """

    inputs: str = "unit"
    multiple: int = 1
    forward_kwargs: Mapping[str, Any] = field(default_factory=dict)
    train_kwargs: Mapping[str, Any] = field(default_factory=dict)
    eval_kwargs: Mapping[str, Any] = field(default_factory=dict)
    sign: str = "positive"
    freeze_batchnorm: bool = False

    def __post_init__(self) -> None:
        if self.inputs not in INPUT_RANGES:
            raise InputError(f"adapter inputs {self.inputs!r}: choose one of {', '.join(INPUT_RANGES)}")
        if isinstance(self.multiple, bool) or not isinstance(self.multiple, int) or self.multiple < 1:
            raise InputError(f"adapter multiple {self.multiple!r}: give a positive integer (e.g. 32)")
        if self.sign not in SIGNS:
            raise InputError(f"adapter sign {self.sign!r}: choose positive or negative")
        if not isinstance(self.freeze_batchnorm, bool):
            raise InputError(f"adapter freeze_batchnorm {self.freeze_batchnorm!r}: give true or false")
        for name in ("forward_kwargs", "train_kwargs", "eval_kwargs"):
            value = getattr(self, name)
            if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
                raise InputError(f"adapter {name} {value!r}: give a dictionary of keyword arguments")
            object.__setattr__(self, name, _json_plain(dict(value), f"adapter {name}"))

    @classmethod
    def from_any(cls, value: Adapter | Mapping[str, Any] | None, what: str = "adapter") -> Adapter:
        """An :class:`Adapter` from an adapter, a dictionary of its fields, or ``None`` (the defaults)."""
        if value is None:
            return cls()
        if isinstance(value, Adapter):
            return value
        if not isinstance(value, Mapping):
            raise InputError(f"{what}: expected an Adapter or a dictionary of its fields, got {type(value).__name__}")
        return cls().replace(value, what)

    def replace(self, changes: Mapping[str, Any] | None, what: str = "--adapter") -> Adapter:
        """A copy with the fields in ``changes`` replaced.

        Raises:
            InputError: an unknown field name (the message lists the fields) or a bad value.
        """
        if not changes:
            return self
        names = [item.name for item in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise InputError(f"{what}: unknown field(s) {', '.join(unknown)}; the fields are {', '.join(names)}")
        return dataclasses.replace(self, **dict(changes))

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON values (what a checkpoint records)."""
        return {item.name: _json_plain(getattr(self, item.name), f"adapter {item.name}") for item in dataclasses.fields(self)}

    def keyword_arguments(self, training: bool) -> dict[str, Any]:
        """The extra keyword arguments of a ``forward`` call in training or eval mode."""
        return {**self.forward_kwargs, **(self.train_kwargs if training else self.eval_kwargs)}

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float images in [0, 1] -> the range of :attr:`inputs`."""
        if self.inputs == "unit":
            return images
        if self.inputs == "255":
            return images * 255.0
        if self.inputs == "symmetric":
            return images * 2.0 - 1.0
        if self.inputs == "imagenet":
            mean = images.new_tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
            std = images.new_tensor(_IMAGENET_STD).view(1, 3, 1, 1)
            return (images - mean) / std
        return normalize_images(images)


def import_factory(spec: str) -> Callable[..., Any]:
    """The callable named by ``package.module:factory`` (the attribute may be dotted: ``module:Class.build``).

    Raises:
        InputError: not of that form, a module that cannot be imported, no such attribute, not callable.
    """
    if not is_factory_spec(spec):
        raise InputError(f"network factory {spec!r}: write it as package.module:factory")
    module_name, attribute = spec.split(":", 1)
    try:
        module = _import_module(module_name)
    except Exception as error:  # the user's module may fail in any way while it is imported
        raise InputError(
            f"network factory {spec}: cannot import {module_name} ({_one_line(error)}); put the folder that holds it on PYTHONPATH or run from that folder"
        ) from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise InputError(f"network factory {spec}: {module_name} ({getattr(module, '__file__', '?')}) has no {attribute}")
        target = getattr(target, part)
    if not callable(target):
        raise InputError(f"network factory {spec}: {attribute} is a {type(target).__name__}, not a callable that builds a network")
    return target


def _import_module(name: str) -> Any:
    """Import ``name`` from ``sys.path``; failing that, from the current folder (as ``python -m`` would)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if not (name == missing or name.startswith(missing + ".")):
            raise  # the module exists but imports something that does not
        here, top = os.getcwd(), name.split(".")[0]
        if here in sys.path or not (Path(here, f"{top}.py").is_file() or Path(here, top).is_dir()):
            raise
        sys.path.append(here)
        importlib.invalidate_caches()
        return importlib.import_module(name)


def _shape(value: Any) -> str:
    """What a network returned, for messages: a tensor's shape, or the shapes of a sequence's items."""
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_shape(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key!r}: {_shape(item)}" for key, item in value.items()) + "}"
    return type(value).__name__


@register_network(EXTERNAL_ARCH, listed=False)
class ExternalNetwork(StereoNetwork):
    """A network built by a factory of the user's, wrapped to the :class:`StereoNetwork` contract.

    Args:
        factory: ``package.module:factory``; the module must be importable (on ``PYTHONPATH``).
        kwargs: keyword arguments of the factory (plain JSON values).
        adapter: fields of the :class:`Adapter` that replace those the network declares
            (``stereo_adapter`` on the returned module).
        check_sign: refuse mostly negative disparities in the first output (off for a network
            trained from a random start, whose first outputs have no convention yet).

    The user's module is the sub-module ``net`` (state dict keys ``net.*``).

    Raises:
        InputError: the factory cannot be imported or called, does not return an ``nn.Module``, or
            the adapter is malformed.
    """

    def __init__(
        self, factory: str, kwargs: Mapping[str, Any] | None = None, adapter: Mapping[str, Any] | None = None, check_sign: bool = True
    ) -> None:
        super().__init__()
        self.factory = str(factory)
        self.factory_kwargs: dict[str, Any] = _json_plain(dict(kwargs or {}), f"keyword arguments of {self.factory}")
        build = import_factory(self.factory)
        try:
            network = build(**self.factory_kwargs)
        except Exception as error:  # the user's factory may fail in any way
            raise InputError(f"network factory {self.factory}(**{json.dumps(self.factory_kwargs)}) failed: {_one_line(error)}") from None
        if not isinstance(network, nn.Module):
            raise InputError(f"network factory {self.factory} returned a {type(network).__name__}; it must return a torch.nn.Module")
        declared = Adapter.from_any(getattr(network, ADAPTER_ATTRIBUTE, None), f"{ADAPTER_ATTRIBUTE} of {self.factory}")
        self.adapter = declared.replace(adapter)
        self.net = network
        self.size_multiple = self.adapter.multiple
        #: check the sign of the next output (cleared after the first output that passes).
        self.check_sign = bool(check_sign)

    def describe(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this network (the ``arch_kwargs`` of its checkpoints)."""
        return {"factory": self.factory, "kwargs": dict(self.factory_kwargs), "adapter": self.adapter.to_dict()}

    def train(self, mode: bool = True) -> ExternalNetwork:
        """Training or eval mode; with ``freeze_batchnorm`` the batch-norm layers stay in eval mode."""
        super().train(mode)
        if mode and self.adapter.freeze_batchnorm:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> StereoOutput:
        """Disparity of the left view, see :meth:`StereoNetwork.forward`.

        Raises:
            InputError: the network's output breaks the protocol (shape, or a negative convention).
        """
        if left.shape != right.shape or left.dim() != 4:
            raise ValueError(f"left and right must be (B, 3, H, W) tensors of equal shape, got {tuple(left.shape)} and {tuple(right.shape)}")
        if left.shape[1] == 1:
            left, right = left.expand(-1, 3, -1, -1), right.expand(-1, 3, -1, -1)
        left, right = _unit(left), _unit(right)
        height, width = left.shape[-2:]
        pad_bottom, pad_right = (-height) % self.adapter.multiple, (-width) % self.adapter.multiple
        if pad_bottom or pad_right:
            left = F.pad(left, (0, pad_right, 0, pad_bottom), mode="replicate")
            right = F.pad(right, (0, pad_right, 0, pad_bottom), mode="replicate")
        raw = self.net(self.adapter.prepare(left), self.adapter.prepare(right), **self.adapter.keyword_arguments(self.training))
        levels = self._levels(raw, tuple(left.shape))
        if self.adapter.sign == "negative":
            levels = [-level for level in levels]
        if self.check_sign:
            self._check_sign(levels[0], tuple(left.shape))
        levels = [level[:, :, :height, :width] for level in levels]
        return StereoOutput(disparity=levels[0].clamp(min=0.0), multiscale=levels)

    def _refuse_shape(self, raw: Any, shape: tuple[int, ...]) -> InputError:
        batch, _, height, width = shape
        return InputError(
            f"network {self.factory} returned {_shape(raw)} for inputs of shape {shape}; the protocol wants the left disparity "
            f"as (B, 1, H, W) = {(batch, 1, height, width)}, or a list of such maps with the finest last"
        )

    def _levels(self, raw: Any, shape: tuple[int, ...]) -> list[torch.Tensor]:
        """The output as (B, 1, H, W) maps at the padded input size, finest first.

        In eval mode only the last item of a sequence is read; in training mode every item is a
        level (finest last), coarser ones upsampled bilinearly and scaled to input pixels.
        """
        batch, _, height, width = shape
        if isinstance(raw, torch.Tensor):
            items = [raw]
        elif isinstance(raw, (list, tuple)) and raw and all(isinstance(item, torch.Tensor) for item in raw):
            items = list(raw) if self.training else [raw[-1]]
        else:
            raise self._refuse_shape(raw, shape)
        levels: list[torch.Tensor] = []
        for position, item in enumerate(reversed(items)):
            level = item.unsqueeze(1) if item.dim() == 3 else item
            if level.dim() != 4 or level.shape[0] != batch or level.shape[1] != 1 or not level.is_floating_point():
                raise self._refuse_shape(raw, shape)
            if level.shape[-2:] != (height, width):
                if position == 0 or level.shape[-2] > height or level.shape[-1] > width:
                    raise self._refuse_shape(raw, shape)
                level = F.interpolate(level, size=(height, width), mode="bilinear", align_corners=False) * (width / level.shape[-1])
            levels.append(level)
        return levels

    def _check_sign(self, finest: torch.Tensor, shape: tuple[int, ...]) -> None:
        """Refuse a mostly negative first output; later outputs are not checked."""
        with torch.no_grad():
            values = finest.detach().float()
            share = float((values < 0).float().mean())
            median = float(values.median())
        if share > NEGATIVE_SHARE:
            if self.adapter.sign == "negative":
                fix = "it already declares sign='negative', so its outputs are negative disparities: drop that (--adapter '{\"sign\": \"positive\"}')"
            else:
                fix = "if it returns flow (x_right - x_left) as RAFT-Stereo does, declare sign='negative' in its adapter (--adapter '{\"sign\": \"negative\"}')"
            raise InputError(
                f"network {self.factory} returned mostly negative disparities ({100 * share:.0f}% of pixels < 0, median {median:.3g} px) "
                f"of shape {tuple(finest.shape)} for inputs of shape {shape}; the protocol wants positive left-view disparities: {fix}"
            )
        self.check_sign = False


def _unit(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1]: uint8 / 255, uint16 (int32 in torch) / 65535, floats as they are."""
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        return images.float() / 65535.0
    return images
