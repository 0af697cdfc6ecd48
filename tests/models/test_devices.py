"""``--device`` resolution shared by the confidence network and the trainer (pseudolabel.models.devices)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from pseudolabel.cli.main import main
from pseudolabel.errors import InputError
from pseudolabel.models import devices
from pseudolabel.models.devices import resolve_device


def test_auto_picks_cuda_only_when_there_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu", local_rank=3) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda", 0)
    # a bare cuda is the process's own GPU under torchrun; an explicit index is kept
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda:2", local_rank=1) == torch.device("cuda", 2)


def test_cuda_without_a_gpu_and_unknown_names_are_input_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="no CUDA device.*--device cpu or auto"):
        resolve_device("cuda")
    with pytest.raises(InputError, match="'tpu': use auto, cpu or cuda"):
        resolve_device("tpu")


def test_bfloat16_unsupported_without_onednn_or_when_the_probe_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert devices.bfloat16_supported() is False
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)

    def failing_probe() -> bool:
        raise RuntimeError("no oneDNN bfloat16 probe in this build")

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", failing_probe)
    assert devices.bfloat16_supported() is False
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert devices.bfloat16_supported() is True


def test_demo_on_cuda_without_a_gpu_stops_with_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "demo"), "--device", "cuda"])
    assert result.exit_code != 0
    assert "no CUDA device" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "demo" / "proxies.h5").exists()
