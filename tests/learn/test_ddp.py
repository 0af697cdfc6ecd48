"""Distributed data parallel: ``torchrun`` with two gloo processes on CPU follows one process on the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from pseudolabel.learn.checkpoint import load_checkpoint
from pseudolabel.models.registry import build_network

REPO = Path(__file__).resolve().parents[2]
MIDDLEBURY = REPO / "tests" / "data" / "middlebury"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _train_arguments(out: Path) -> list[str]:
    # No augmentation and a fixed seed: the only randomness is the crop of each sample index. Float32
    # (--no-amp): bfloat16 rounds a batch of 4 and two batches of 2 differently, beyond this tolerance.
    return [
        "train",
        "--no-amp",
        "--data",
        str(MIDDLEBURY),
        "--arch",
        "tiny",
        "--out",
        str(out),
        "--steps",
        "4",
        "--batch-size",
        "4",
        "--crop",
        "48x64",
        "--lr",
        "1e-3",
        "--warmup",
        "0",
        "--no-augment",
        "--threads",
        "1",
        "--quiet",
        "--device",
        "cpu",
        "--seed",
        "3",
        "--log-every",
        "1",
    ]


def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = tmp_path / "single.pt"
    result = subprocess.run(
        [sys.executable, "-m", "pseudolabel.cli.main", *_train_arguments(single)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr

    distributed = tmp_path / "ddp.pt"
    command = [  # torch's own launcher (`torchrun`), run as a module so that no script on PATH is needed
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "pseudolabel.cli.main",
        *_train_arguments(distributed),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "ddp.partial.pt").exists()

    single_payload, ddp_payload = load_checkpoint(single), load_checkpoint(distributed)
    assert ddp_payload["step"] == single_payload["step"] == 4
    torch.manual_seed(3)  # the command seeds torch with --seed before building the network
    initial = build_network("tiny").state_dict()
    largest_update = 0.0
    for key, weights in single_payload["model"].items():
        other = ddp_payload["model"][key]
        torch.testing.assert_close(other, weights, rtol=1e-4, atol=2e-5, msg=f"{key} differs between 2 ranks and 1 process")
        largest_update = max(largest_update, float((weights - initial[key]).abs().max()))
    assert largest_update > 1e-3  # training moved the weights far more than the tolerance
    # one metrics log, written by rank 0 only
    assert len((tmp_path / "ddp.jsonl").read_text().splitlines()) == 4
