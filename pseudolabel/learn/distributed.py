"""Distributed data parallel under ``torchrun``: the process group of a run, and which process reports."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch.distributed as dist


@dataclass
class DistributedContext:
    """Rank information of this process (``world_size == 1`` outside ``torchrun``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and prints."""
        return self.rank == 0


def init_distributed(device_type: str) -> DistributedContext:
    """Join the process group described by ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (set by ``torchrun``).

    ``gloo`` on CPU, ``nccl`` on CUDA. Returns a single-process context when ``WORLD_SIZE`` is unset or 1.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    initialized_here = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", rank=rank, world_size=world_size)
        initialized_here = True
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, initialized_here=initialized_here)


def threading_is_main() -> bool:
    """True in the main thread (signal handlers can only be installed there)."""
    import threading

    return threading.current_thread() is threading.main_thread()


def is_rank_zero() -> bool:
    """Whether this process is rank 0 of a ``torchrun`` launch (or not launched by ``torchrun``): the one that reports."""
    return int(os.environ.get("RANK", "0")) == 0
