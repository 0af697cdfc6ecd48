"""Shared fixtures. ``device`` runs a test on the CPU and, where one is present, on CUDA (kornia style)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import pytest


def _devices() -> list[str]:
    if importlib.util.find_spec("torch") is None:
        return ["cpu"]
    import torch

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=_devices())
def device(request: pytest.FixtureRequest) -> Any:
    """A ``torch.device``: ``cpu`` always, ``cuda`` when available."""
    import torch

    return torch.device(request.param)


@pytest.fixture
def single_torch_thread() -> Iterator[None]:
    """Small tensors gain nothing from intra-op threads, and on a busy 2-core machine they cost seconds."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
