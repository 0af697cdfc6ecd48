"""Which network a command runs: :func:`open_network`, the one place a ``--model`` (or ``--init``) is resolved.

A model is named in one of three ways:

* a checkpoint written by ``pseudolabel train`` or ``pseudolabel adapt`` (``.pt``);
* a shipped model name (``madnet_synth``);
* ``package.module:factory``: a network of the user's own, built by that factory and wrapped by
  :class:`pseudolabel.models.external.ExternalNetwork` (the protocol and the adapter are described
  there), with optional weights (a state dict file) and adapter fields.

A :class:`NetworkSpec` carries the name with those options (the Python API's equivalent of
``--model``, ``--model-kwargs``, ``--weights`` and ``--adapter``). Checkpoints of a network of the
user's record the factory, its arguments and the adapter, so they rebuild it alone, as long as the
factory's module is importable (on ``PYTHONPATH``) where the checkpoint is read; loading such a
checkpoint imports that module, i.e. runs its code.

:func:`probe_network` runs a network of the user's once on a small piece of the first pair before a
command writes anything, so that a protocol break stops the command with one line and no output.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pseudolabel.errors import InputError
from pseudolabel.learn.checkpoint import load_checkpoint, resolve_model_path
from pseudolabel.models.external import EXTERNAL_ARCH, ExternalNetwork, is_factory_spec
from pseudolabel.models.registry import StereoNetwork, build_network

__all__ = ["PROBE_SIZE", "NetworkSpec", "OpenedNetwork", "open_network", "probe_network", "read_state_dict"]

#: Largest (height, width) of the piece of a pair :func:`probe_network` runs the network on.
PROBE_SIZE = (256, 512)
#: Prefixes that wrappers add to state dict keys (DataParallel, this package's ``ExternalNetwork``).
_PREFIXES = ("module.", "net.", "module.net.")


@dataclass(frozen=True)
class NetworkSpec:
    """A network to open, as the command line names it.

    Attributes:
        model: a checkpoint path, a shipped model name, or ``package.module:factory``.
        kwargs: the factory's keyword arguments; for a checkpoint, constructor arguments put over
            those it records (``--model-kwargs``, ``train --arch-kwargs``).
        weights: a state dict file for a factory's network (``--weights``).
        adapter: adapter fields over those the network declares (``--adapter``).
    """

    model: str
    kwargs: Mapping[str, Any] | None = None
    weights: str | None = None
    adapter: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, value: str | os.PathLike[str] | NetworkSpec) -> NetworkSpec:
        """A spec from a spec, a path or a name."""
        return value if isinstance(value, NetworkSpec) else cls(str(value))


@dataclass
class OpenedNetwork:
    """A network ready to run or train, and what a checkpoint of it records.

    Attributes:
        network: the network (training mode, on the CPU).
        arch, arch_kwargs: registry name and constructor arguments (``"external"`` and
            ``{"factory", "kwargs", "adapter"}`` for a network of the user's).
        label: how messages name it: the registry name, or the factory.
        source: what it was opened from: the checkpoint's resolved path, or the factory (and weights).
        step: optimisation steps of the checkpoint (0 for a factory).
    """

    network: StereoNetwork
    arch: str
    arch_kwargs: dict[str, Any]
    label: str
    source: str
    step: int = 0


def open_network(
    spec: str | os.PathLike[str] | NetworkSpec, *, option: str = "--model", kwargs_option: str = "--model-kwargs", check_sign: bool = True
) -> OpenedNetwork:
    """Build the network named by ``spec`` (see the module docstring), with its weights.

    Args:
        spec: a :class:`NetworkSpec`, or a checkpoint path / shipped name / factory.
        option, kwargs_option: the command-line options that gave the model and its arguments, named
            in messages.
        check_sign: refuse a network of the user's whose first output is mostly negative (off for
            one trained from a random start).

    Raises:
        InputError: no such checkpoint, shipped model or importable factory; arguments or weights
            that do not fit; options that do not apply (``--weights`` with a checkpoint, ``--adapter``
            with a network of this package).
    """
    spec = NetworkSpec.of(spec)
    if not Path(spec.model).is_file() and is_factory_spec(spec.model):
        return _open_factory(spec, option, kwargs_option, check_sign)
    try:
        path = resolve_model_path(spec.model, option)
    except InputError as error:
        raise InputError(f"{error}, or a network of your own as package.module:factory") from None
    if spec.weights is not None:
        raise InputError(f"--weights is for {option} package.module:factory; {path} holds its own weights")
    payload = load_checkpoint(path, option=option)
    arch = str(payload["arch"])
    arch_kwargs = dict(payload.get("arch_kwargs") or {})
    if arch == EXTERNAL_ARCH:
        arch_kwargs = {
            **arch_kwargs,
            "kwargs": {**dict(arch_kwargs.get("kwargs") or {}), **dict(spec.kwargs or {})},
            "adapter": {**dict(arch_kwargs.get("adapter") or {}), **dict(spec.adapter or {})},
        }
    else:
        if spec.adapter:
            raise InputError(f"--adapter is for networks of your own; {path} holds the package's {arch!r} network")
        arch_kwargs = {**arch_kwargs, **dict(spec.kwargs or {})}
    shown = f"{kwargs_option} {_json(spec.kwargs)}" if spec.kwargs else f"{path}"
    try:
        network = build_network(arch, **arch_kwargs)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None
    except (TypeError, ValueError) as error:
        raise InputError(f"{shown}: {error}") from None
    try:
        network.load_state_dict(payload["model"])
    except RuntimeError:
        raise InputError(
            f"{kwargs_option} {_json(spec.kwargs)} change the shape of the network, so the weights of {option} {spec.model} do not fit; leave those arguments out"
            if spec.kwargs
            else f"{path}: its weights do not fit the network it names ({arch}); was the network's code changed since it was written?"
        ) from None
    if isinstance(network, ExternalNetwork):
        network.check_sign = check_sign
        return OpenedNetwork(network, arch, network.describe(), network.factory, str(path.resolve()), int(payload.get("step", 0)))
    return OpenedNetwork(network, arch, arch_kwargs, arch, str(path.resolve()), int(payload.get("step", 0)))


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def _open_factory(spec: NetworkSpec, option: str, kwargs_option: str, check_sign: bool) -> OpenedNetwork:
    """A network of the user's from its factory, with ``spec.weights`` loaded into it."""
    try:
        network = ExternalNetwork(spec.model, spec.kwargs, spec.adapter, check_sign=check_sign)
    except InputError as error:
        raise InputError(f"{option} {spec.model}: {error}") from None
    source = spec.model
    if spec.weights is not None:
        state = read_state_dict(spec.weights, network.net)
        try:
            network.net.load_state_dict(state)
        except RuntimeError as error:
            raise InputError(f"--weights {spec.weights}: do not fit the network of {spec.model} ({' '.join(str(error).split())[:300]})") from None
        source = f"{spec.model} with --weights {Path(spec.weights).resolve()}"
    return OpenedNetwork(network, EXTERNAL_ARCH, network.describe(), spec.model, source)


def read_state_dict(path: str | os.PathLike[str], module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` for ``module``, read with ``weights_only`` (no code is run).

    Accepts a bare state dict, one under ``state_dict``/``model_state_dict``/``model`` (a
    checkpoint of this package or of another training code), with the key prefixes of
    DataParallel (``module.``) or of :class:`~pseudolabel.models.external.ExternalNetwork`
    (``net.``) removed when that makes the keys match ``module``'s.

    Raises:
        InputError: a missing or unreadable file, no dictionary of tensors, keys that do not match.
    """
    file = Path(path)
    if not file.is_file():
        raise InputError(f"--weights {path}: no such file")
    try:
        loaded = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InputError(
            f"--weights {path}: cannot be read as torch weights ({type(error).__name__}: {' '.join(str(error).split())[:200]})"
        ) from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
            break
    if not isinstance(loaded, Mapping) or not loaded or not all(isinstance(value, torch.Tensor) for value in loaded.values()):
        raise InputError(f"--weights {path}: not a state dict (a dictionary of tensors, as torch.save(model.state_dict(), path) writes)")
    state = {str(key): value for key, value in loaded.items()}
    expected = set(module.state_dict())
    if set(state) == expected:
        return state
    for prefix in _PREFIXES:
        if all(key.startswith(prefix) for key in state):
            stripped = {key[len(prefix) :]: value for key, value in state.items()}
            if set(stripped) == expected:
                return stripped
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    detail = ", ".join(
        part
        for part in (
            f"{len(missing)} missing key(s), e.g. {missing[0]!r}" if missing else "",
            f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]!r}" if unexpected else "",
        )
        if part
    )
    raise InputError(f"--weights {path}: the keys do not match the network's ({detail})")


def probe_network(
    network: torch.nn.Module, left: torch.Tensor, right: torch.Tensor, *, training: bool = False, device: str | torch.device | None = None
) -> None:
    """Run a network of the user's on (a piece of) one pair, so a protocol break stops before anything is written.

    Runs in eval mode and, with ``training``, also in training mode (with ``torch.no_grad`` and the
    buffers, e.g. batch norm statistics, put back). The piece is the top-left :data:`PROBE_SIZE` of
    the pair at most. A network of this package is not probed.

    Args:
        network: the network, on the device it will run on.
        left, right: (3, H, W) or (B, 3, H, W) float images in [0, 1].
        training: also run in training mode (``adapt``, ``train``).
        device: move the network there first (``None``: where it is).

    Raises:
        InputError: the output's shape or sign breaks the protocol, or the forward call fails
            (the message names the factory and the input's shape).
    """
    if not isinstance(network, ExternalNetwork):
        return
    if left.dim() == 3:
        left, right = left[None], right[None]
    if device is not None:
        network.to(device)
    device = next(iter(network.parameters()), torch.empty(0)).device
    left = left[:1, :, : PROBE_SIZE[0], : PROBE_SIZE[1]].to(device)
    right = right[:1, :, : PROBE_SIZE[0], : PROBE_SIZE[1]].to(device)
    was_training = network.training
    buffers = {name: buffer.detach().clone() for name, buffer in network.named_buffers()}
    try:
        with torch.no_grad():
            for mode in (False, True) if training else (False,):
                network.train(mode)
                try:
                    network(left, right)
                except InputError:
                    raise
                except Exception as error:  # the user's forward may fail in any way
                    kwargs = network.adapter.keyword_arguments(mode)
                    message = " ".join(str(error).split())[:300]
                    raise InputError(
                        f"network {network.factory}: forward(left, right{''.join(f', {k}={v!r}' for k, v in kwargs.items())}) "
                        f"failed in {'training' if mode else 'eval'} mode on inputs of shape {tuple(left.shape)}: {type(error).__name__}: {message}"
                    ) from None
    finally:
        network.train(was_training)
        with torch.no_grad():
            for name, buffer in network.named_buffers():
                buffer.copy_(buffers[name])
