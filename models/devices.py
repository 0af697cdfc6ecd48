"""Where the torch networks run: device names and the CPU's native low-precision support.

Shared by the confidence network (:mod:`pseudolabel.models.ccnn`) and the disparity-network trainer
(:mod:`pseudolabel.learn.trainer`), so that ``--device`` and ``--amp`` mean the same in every command.
Importing this module imports torch.
"""

from __future__ import annotations

import torch

from pseudolabel.errors import InputError


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """The ``torch.device`` of a ``--device`` value.

    Args:
        device: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        local_rank: the GPU that a bare ``cuda`` means (the process's local rank under torchrun).

    Raises:
        InputError: ``cuda`` asked for without a CUDA device, or a name that is none of the above.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA device is available here; use --device cpu or auto")
        return torch.device("cuda", local_rank) if device == "cuda" else torch.device(device)
    raise InputError(f"--device {device!r}: use auto, cpu or cuda")


def bfloat16_supported() -> bool:
    """True when this CPU runs oneDNN bfloat16 convolutions natively (AVX512-BF16 or AMX).

    Elsewhere bfloat16 on the CPU is emulated and several times slower than float32, so ``--amp``
    and the confidence scorer's ``auto`` precision stay in float32 there.
    """
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
