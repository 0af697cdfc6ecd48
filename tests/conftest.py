"""Shared fixtures. ``device`` runs a test on the CPU and, where one is present, on CUDA (kornia style)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
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


DASK = Path(sys.executable).with_name("dask")
START_TIMEOUT_S = 90


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process group this fixture started: SIGTERM, then SIGKILL after 10 s."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)


def _start(arguments: list[str], log: Path) -> subprocess.Popen[bytes]:
    command = [str(DASK), *arguments] if DASK.exists() else [sys.executable, "-m", "distributed.cli.dask_" + arguments[0], *arguments[1:]]
    return subprocess.Popen(command, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Address of a real ``dask scheduler`` with two single-thread ``dask worker`` processes (each under its
    nanny, which restarts a killed worker) on 127.0.0.1, started once per session and stopped at its end."""
    distributed = pytest.importorskip("distributed")
    folder = tmp_path_factory.mktemp("cluster")
    scheduler_file = folder / "scheduler.json"
    processes = [
        _start(
            ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file)],
            folder / "scheduler.log",
        )
    ]
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not scheduler_file.exists():
            if time.monotonic() > deadline or processes[0].poll() is not None:
                pytest.fail(f"dask scheduler did not start: {(folder / 'scheduler.log').read_text()[-2000:]}")
            time.sleep(0.2)
        time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        for index in range(2):
            processes.append(
                _start(
                    ["worker", address, "--nthreads", "1", "--nworkers", "1", "--host", "127.0.0.1", "--no-dashboard"],
                    folder / f"worker{index}.log",
                )
            )
        with distributed.Client(address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=START_TIMEOUT_S)
        yield address
    finally:
        for process in reversed(processes):
            _stop(process)
