"""The models shipped with the package, by kind, for messages that list what exists.

A stereo network checkpoint (:mod:`pseudolabel.learn.checkpoint`, ``pseudolabel-checkpoint/1``) and a
confidence network checkpoint (:mod:`pseudolabel.confidence.checkpoints`, ``pseudolabel-confidence/1``)
live side by side in ``pseudolabel/models/weights``; an error about a mistyped ``adapt --model`` must
list the former, one about ``confidence score --model`` the latter.
"""

from __future__ import annotations

import functools
from pathlib import Path

__all__ = ["KIND_FORMATS", "shipped_models", "shipped_weights_folder"]

#: The ``format`` of each kind of checkpoint.
KIND_FORMATS = {"stereo": "pseudolabel-checkpoint/1", "confidence": "pseudolabel-confidence/1"}


def shipped_weights_folder() -> Path:
    """``pseudolabel/models/weights`` of this installation."""
    import pseudolabel.models as models_package

    return Path(models_package.__file__).resolve().parent / "weights"


@functools.cache
def shipped_models(kind: str) -> tuple[str, ...]:
    """Names (file stems) of the shipped checkpoints of ``kind`` (``"stereo"`` or ``"confidence"``), sorted."""
    import torch

    wanted = KIND_FORMATS[kind]
    names = []
    folder = shipped_weights_folder()
    for path in sorted(folder.glob("*.pt")) if folder.is_dir() else []:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:
            continue
        if isinstance(payload, dict) and payload.get("format") == wanted:
            names.append(path.stem)
    return tuple(names)
