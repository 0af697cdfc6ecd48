"""Self-contained network checkpoints: save, load and rebuild a network from one file.

A checkpoint is a ``torch.save`` dictionary that loads with ``weights_only=True`` (tensors, plain
Python containers and numbers only):

``format``
    ``"pseudolabel-checkpoint/1"``.
``version``
    the ``pseudolabel`` package version that wrote it.
``arch``, ``arch_kwargs``
    registry name and constructor arguments (:func:`pseudolabel.models.registry.build_network`).
``model``
    the network's ``state_dict``.
``step``
    number of optimisation steps done.
``optimizer``, ``scheduler``, ``scaler``
    state dictionaries needed by ``--resume`` (``None`` in an exported model).
``extra_modules``
    ``{name: state_dict}`` of extra trained modules (e.g. a learnable tau).
``extra_state``
    JSON-like dictionary written by the caller (e.g. the tau value, the adaptation settings).
``training_args``
    JSON-like dictionary of the command's arguments.
``rng``
    ``{"torch": ByteTensor}`` generator state.
``created``
    ISO 8601 time of writing.
"""

from __future__ import annotations

import io
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from pseudolabel import __version__
from pseudolabel.errors import InputError
from pseudolabel.io import atomic_write_bytes
from pseudolabel.models.registry import StereoNetwork, build_network

CHECKPOINT_FORMAT = "pseudolabel-checkpoint/1"


def shipped_weights_dir() -> Path:
    """The folder of shipped weights (``pseudolabel/models/weights`` once installed)."""
    import pseudolabel.models as models_package

    return Path(models_package.__file__).resolve().parent / "weights"


def resolve_model_path(model: str | os.PathLike[str], option: str = "--model") -> Path:
    """A checkpoint path, or the name of a shipped model (``madnet_synth``) -> an existing file.

    ``option`` is the command-line option that gave ``model``, named in the error message.

    Raises:
        InputError: neither a file nor a shipped model name.
    """
    path = Path(model)
    if path.is_file():
        return path
    shipped = shipped_weights_dir() / f"{path.name}.pt" if path.suffix == "" else shipped_weights_dir() / path.name
    if len(path.parts) == 1 and shipped.is_file():
        return shipped
    from pseudolabel.learn.shipped import shipped_models

    names = shipped_models("stereo")  # not the confidence networks that share the folder
    known = f" (shipped models: {', '.join(names)})" if names else ""
    raise InputError(f"{option} {model}: no such checkpoint file; give a .pt written by `pseudolabel train` or a shipped model name{known}")


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write ``payload`` (see the module docstring) atomically: a crash never leaves half a file."""
    payload = dict(payload)
    payload.setdefault("format", CHECKPOINT_FORMAT)
    payload.setdefault("version", __version__)
    payload["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu", option: str = "--model") -> dict[str, Any]:
    """Read a checkpoint dictionary (``weights_only``: no code from the file is run).

    ``option`` is the command-line option that gave ``path``, named when it does not exist.

    Raises:
        InputError: missing, unreadable or not a ``pseudolabel`` checkpoint.
    """
    path = resolve_model_path(path, option)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise InputError(
            f"{path}: cannot be read as a checkpoint ({type(error).__name__}: {error}); give a .pt written by `pseudolabel train`"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a pseudolabel checkpoint (no format {CHECKPOINT_FORMAT!r}); give a .pt written by `pseudolabel train`")
    return payload


def network_from_checkpoint(payload: dict[str, Any]) -> StereoNetwork:
    """Build the network described by a checkpoint dictionary and load its weights."""
    network = build_network(payload["arch"], **dict(payload.get("arch_kwargs") or {}))
    network.load_state_dict(payload["model"])
    return network


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> StereoNetwork:
    """Rebuild a trained network from its checkpoint alone, in eval mode on ``device``.

    Args:
        path: a checkpoint file, or the name of a shipped model (e.g. ``madnet_synth``).
    """
    network = network_from_checkpoint(load_checkpoint(path))
    return network.to(device).eval()


def export_weights(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> None:
    """Write a copy of a checkpoint without the optimiser, scheduler and scaler states (for shipping)."""
    payload = load_checkpoint(source)
    payload.update(optimizer=None, scheduler=None, scaler=None)
    save_checkpoint(destination, payload)
