"""Mixed precision of the training step: which autocast dtype a device gets, and its name in checkpoints."""

from __future__ import annotations

import torch

from pseudolabel.models import devices


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast dtype of the training step on ``device``, or ``None`` for plain float32.

    ``float16`` on CUDA (with a gradient scaler), ``bfloat16`` on a CPU with native bfloat16
    convolutions (:func:`pseudolabel.models.devices.bfloat16_supported`); ``None`` when ``amp`` is off or
    the CPU would only emulate bfloat16 (several times slower than float32).
    """
    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if devices.bfloat16_supported() else None
    return None


def precision_name(dtype: torch.dtype | None) -> str:
    """``"float32"`` for no autocast (``None``), else the dtype's name (``"bfloat16"``, ``"float16"``)."""
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")
