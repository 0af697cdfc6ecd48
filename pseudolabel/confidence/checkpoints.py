"""Confidence checkpoints (torch): writing and reading them, and the scorer that runs one.

Checkpoint (``torch.save`` dictionary loadable with ``weights_only=True``): ``format``
(:data:`CHECKPOINT_FORMAT`, ``"pseudolabel-confidence/1"``), ``architecture``, ``arch_kwargs``,
``state_dict``, ``training_args``, ``data_summary``, ``history`` (loss per epoch), ``calibration``
(:class:`~pseudolabel.confidence.calibration.Calibration` as a dictionary, or None), ``version``, ``created``.

:func:`make_scorer` loads one into a :class:`~pseudolabel.models.ccnn.ConfidenceScorer` (what
``pseudolabel confidence score`` runs); :func:`shipped_ccnn_path` is the CCNN shipped with the package.

Importing this module imports torch (the package :mod:`pseudolabel.confidence` does not).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from pseudolabel import __version__
from pseudolabel.confidence.calibration import Calibration
from pseudolabel.errors import InputError
from pseudolabel.io import atomic_write_bytes
from pseudolabel.models.ccnn import ConfidenceNetwork, ConfidenceScorer, build_confidence_network
from pseudolabel.models.devices import resolve_device

#: ``format`` of a confidence checkpoint.
CHECKPOINT_FORMAT = "pseudolabel-confidence/1"


def shipped_ccnn_path() -> Path:
    """Path of the CCNN shipped with the package (``pseudolabel/models/weights/ccnn.pt``)."""
    import pseudolabel.models as models_package

    return Path(models_package.__file__).resolve().parent / "weights" / "ccnn.pt"


def save_confidence_checkpoint(
    path: str | os.PathLike[str],
    model: ConfidenceNetwork,
    training_args: Mapping[str, Any],
    data_summary: Mapping[str, Any],
    history: Sequence[float] = (),
    calibration: Calibration | None = None,
) -> None:
    """Write a self-contained confidence checkpoint atomically (an existing file is replaced only when complete).

    ``training_args`` and ``data_summary`` are JSON-like dictionaries; ``history`` the mean loss of every
    epoch; ``calibration`` (stored as ``calibration``, :meth:`Calibration.to_dict`; None when absent) is
    applied by the scorer of :func:`make_scorer`.
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "architecture": model.architecture,
        "arch_kwargs": model.config(),
        "state_dict": {name: tensor.detach().cpu().float() for name, tensor in model.state_dict().items()},
        "training_args": dict(training_args),
        "data_summary": dict(data_summary),
        "history": [float(value) for value in history],
        "calibration": calibration.to_dict() if calibration is not None else None,
        "version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_confidence_checkpoint(path: str | os.PathLike[str]) -> tuple[ConfidenceNetwork, dict[str, Any]]:
    """Rebuild a confidence network from a checkpoint.

    Returns:
        ``(model, checkpoint)`` with the model in eval mode on the CPU and the checkpoint dictionary.

    Raises:
        InputError: missing or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such confidence model; train one with `pseudolabel confidence train`")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InputError(f"{path}: not a readable confidence checkpoint ({type(error).__name__}); retrain it") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a pseudolabel confidence checkpoint (format {CHECKPOINT_FORMAT!r} expected)")
    model = build_confidence_network(checkpoint["architecture"], **checkpoint["arch_kwargs"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint


def file_digest(path: str | os.PathLike[str]) -> str:
    """First 16 hex digits of the file's SHA-256 (identifies a model in HDF5 attributes)."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return digest[:16]


def checkpoint_calibration(checkpoint: Mapping[str, Any]) -> Calibration | None:
    """The calibration map stored in a checkpoint dictionary (None when it has none)."""
    stored = checkpoint.get("calibration")
    return Calibration.from_dict(stored) if stored else None


@dataclass
class NetworkRecipe:
    """A confidence network as it travels to where it runs (this process or each Dask worker, once):
    the network on the CPU, its calibration map, and the ``device`` / ``precision`` to run it with,
    resolved where it runs (a worker with native bfloat16 uses it). :meth:`scorer` builds the
    :class:`~pseudolabel.models.ccnn.ConfidenceScorer` there on first use and keeps it."""

    network: ConfidenceNetwork
    calibration: Calibration | None
    device: str = "auto"
    precision: str = "auto"
    _scorer: Any = field(default=None, repr=False, compare=False)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The network's input channels (``disparity`` first, then measures and image channels)."""
        return tuple(self.network.inputs)

    def scorer(self) -> ConfidenceScorer:
        """The scorer on the resolved device (built on first use in this process)."""
        if self._scorer is None:
            self._scorer = ConfidenceScorer(self.network, resolve_device(self.device), precision=self.precision, calibration=self.calibration)
        return self._scorer

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_scorer"] = None  # rebuilt where it lands
        return state


def load_recipe(path: str | os.PathLike[str], device: str = "auto", precision: str = "auto") -> tuple[NetworkRecipe, dict[str, Any]]:
    """A checkpoint as a :class:`NetworkRecipe` (its calibration included) and the checkpoint dictionary."""
    model, checkpoint = load_confidence_checkpoint(path)
    return NetworkRecipe(model, checkpoint_calibration(checkpoint), device, precision), checkpoint


def make_scorer(
    path: str | os.PathLike[str], device: str = "auto", precision: str = "auto", threads: int | None = None
) -> tuple[ConfidenceScorer, dict[str, Any]]:
    """Load a checkpoint into a :class:`ConfidenceScorer` (``threads``: torch's CPU threads; ``None``:
    chosen from the usable cores and the machine's load, :mod:`pseudolabel.threads`) that applies the
    checkpoint's calibration (:func:`checkpoint_calibration`), if it has one (:meth:`NetworkRecipe.scorer`)."""
    from pseudolabel.threads import apply_threads

    apply_threads(threads)
    recipe, checkpoint = load_recipe(path, device, precision)
    return recipe.scorer(), checkpoint
