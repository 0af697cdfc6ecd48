"""Trainer, checkpoints, resume, Ctrl-C, and the train/predict/eval commands (tiny network, small crops)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.utils.data import Dataset

from pseudolabel.cli.main import main
from pseudolabel.learn.checkpoint import load_checkpoint, load_model
from pseudolabel.learn.losses import multiscale_l1_loss
from pseudolabel.learn.precision import autocast_dtype
from pseudolabel.learn.samples import make_sample, sample_rng
from pseudolabel.learn.trainer import (
    Trainer,
    TrainerConfig,
    advance_schedule,
    lr_factor,
)
from pseudolabel.models.registry import build_network
from pseudolabel.synth.scene import SynthConfig, render_pair

REPO = Path(__file__).resolve().parents[2]
MIDDLEBURY = REPO / "tests" / "data" / "middlebury"
SMALL_SYNTH = SynthConfig(width=96, height=64, max_disp=16)


pytestmark = pytest.mark.usefixtures("single_torch_thread")


class FixedSynthBatch(Dataset):
    """Two fixed synthetic pairs, repeated forever (index % 2), no augmentation."""

    def __init__(self) -> None:
        self.pairs = [render_pair(SMALL_SYNTH, seed) for seed in (11, 12)]

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        pair = self.pairs[index % 2]
        return make_sample(pair.left, pair.right, pair.disp_left, sample_rng(0, index), None, None, index)


def _batch(dataset: Dataset) -> dict[str, torch.Tensor]:
    samples = [dataset[i] for i in range(2)]
    return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}


def _loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    with torch.no_grad():
        return float(multiscale_l1_loss(model(batch["left"], batch["right"]), batch)[0])


def _config(tmp_path: Path, name: str, **overrides: object) -> TrainerConfig:
    settings: dict = dict(
        out=tmp_path / f"{name}.pt",
        steps=6,
        batch_size=2,
        learning_rate=1e-3,
        device="cpu",
        warmup_steps=0,
        checkpoint_every=0,
        log_every=1,
        progress=False,
    )
    settings.update(overrides)
    return TrainerConfig(**settings)


def test_a_few_steps_of_tiny_reduce_the_loss_on_a_fixed_synthetic_batch(tmp_path: Path) -> None:
    dataset = FixedSynthBatch()
    batch = _batch(dataset)
    torch.manual_seed(0)
    model = build_network("tiny")
    before = _loss(model.eval(), batch)
    result = Trainer(
        model, "tiny", {}, dataset, multiscale_l1_loss, _config(tmp_path, "fit", steps=40, learning_rate=3e-3, schedule="constant")
    ).fit()
    after = _loss(model.eval(), batch)
    assert result.step == 40
    assert after < 0.6 * before, (before, after)
    lines = [json.loads(line) for line in (tmp_path / "fit.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 41))
    assert {"loss", "epe", "lr", "pairs_per_s"} <= set(lines[0])


def test_checkpoint_holds_everything_and_load_model_reproduces_outputs(tmp_path: Path) -> None:
    dataset = FixedSynthBatch()
    torch.manual_seed(0)
    model = build_network("tiny", decoder_channels=[12, 8])
    Trainer(model, "tiny", {"decoder_channels": [12, 8]}, dataset, multiscale_l1_loss, _config(tmp_path, "ck"), training_args={"note": "x"}).fit()
    payload = load_checkpoint(tmp_path / "ck.pt")
    assert payload["arch"] == "tiny" and payload["arch_kwargs"] == {"decoder_channels": [12, 8]}
    assert payload["step"] == 6 and payload["optimizer"] is not None and payload["scheduler"] is not None
    assert payload["training_args"]["note"] == "x" and payload["training_args"]["trainer"]["steps"] == 6
    assert payload["version"] and payload["format"] == "pseudolabel-checkpoint/1"
    loaded = load_model(tmp_path / "ck.pt")
    batch = _batch(dataset)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(batch["left"], batch["right"]).disparity, model.eval()(batch["left"], batch["right"]).disparity, rtol=0, atol=0
        )


def test_autocast_dtype_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import pseudolabel.models.devices as devices

    assert autocast_dtype(torch.device("cuda"), True) == torch.float16
    assert autocast_dtype(torch.device("cuda"), False) is None
    monkeypatch.setattr(devices, "bfloat16_supported", lambda: True)
    assert autocast_dtype(torch.device("cpu"), True) == torch.bfloat16
    assert autocast_dtype(torch.device("cpu"), False) is None
    # a CPU that would only emulate bfloat16 (several times slower) trains in float32
    monkeypatch.setattr(devices, "bfloat16_supported", lambda: False)
    assert autocast_dtype(torch.device("cpu"), True) is None


class DtypeRecordingLoss:
    """multiscale L1 that records the dtype of the network's disparity and of a convolution inside it."""

    def __init__(self) -> None:
        self.output_dtypes: list[torch.dtype] = []

    def __call__(self, output, batch):  # type: ignore[no-untyped-def]
        self.output_dtypes.append(output.disparity.dtype)
        return multiscale_l1_loss(output, batch)


@pytest.mark.parametrize("amp", [True, False])
def test_cpu_mixed_precision_trains_in_bfloat16_with_float32_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, amp: bool) -> None:
    import pseudolabel.models.devices as devices

    monkeypatch.setattr(devices, "bfloat16_supported", lambda: True)  # emulated where the CPU lacks it: slow, same numbers
    dataset = FixedSynthBatch()
    batch = _batch(dataset)
    torch.manual_seed(0)
    model = build_network("madnet", channels=(8, 8, 8), decoder_channels=(8,), context_channels=(8,), context_dilations=(2,))
    before = _loss(model.eval(), batch)
    convolution_dtypes: list[torch.dtype] = []
    hook = model.decoders[0].layers[0].register_forward_hook(lambda module, inputs, output: convolution_dtypes.append(output.dtype))
    recorder = DtypeRecordingLoss()
    Trainer(model, "madnet", {}, dataset, recorder, _config(tmp_path, "amp", steps=30, learning_rate=2e-3, amp=amp, schedule="constant")).fit()
    hook.remove()
    after = _loss(model.eval(), batch)
    low = torch.bfloat16 if amp else torch.float32
    assert set(convolution_dtypes) == {low}
    assert set(recorder.output_dtypes) == {torch.float32}  # the disparity path stays float32
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())
    assert load_checkpoint(tmp_path / "amp.pt")["training_args"]["precision"] == ("bfloat16" if amp else "float32")
    assert after < 0.8 * before, (before, after)


def test_madnet_disparity_under_bfloat16_autocast_stays_close_to_float32() -> None:
    torch.manual_seed(0)
    model = build_network("madnet").eval()
    left = torch.rand(1, 3, 67, 93)
    right = torch.roll(left, -5, dims=-1)
    with torch.no_grad():
        full = model(left, right).disparity
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(left, right).disparity
    assert mixed.dtype == torch.float32
    # bfloat16 residuals only: far below a pixel (bfloat16 disparities would be off by up to 1/256 of their value per addition)
    assert float((mixed - full).abs().max()) < 0.05 * max(float(full.abs().max()), 1.0)


class InterruptingLoss:
    """multiscale L1 that raises KeyboardInterrupt (as Ctrl-C would) on call number ``at``."""

    def __init__(self, at: int) -> None:
        self.calls, self.at = 0, at

    def __call__(self, output, batch):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return multiscale_l1_loss(output, batch)


def test_interrupt_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    dataset = FixedSynthBatch()
    extra = torch.nn.Parameter(torch.tensor(0.5))

    def loss_with_extra(output, batch):  # type: ignore[no-untyped-def]
        loss, logs = multiscale_l1_loss(output, batch)
        return loss + (extra - 2.0) ** 2, logs

    torch.manual_seed(0)
    straight = build_network("tiny")
    initial = {k: v.clone() for k, v in straight.state_dict().items()}
    Trainer(straight, "tiny", {}, dataset, multiscale_l1_loss, _config(tmp_path, "straight")).fit()

    interrupted = build_network("tiny")
    interrupted.load_state_dict(initial)
    config = _config(tmp_path, "resumed")
    with pytest.raises(KeyboardInterrupt):
        Trainer(interrupted, "tiny", {}, dataset, InterruptingLoss(at=4), config).fit()
    partial = load_checkpoint(config.progress_path)
    assert partial["step"] == 3 and not config.out.exists()

    resumed = build_network("tiny")  # fresh weights: everything must come from the checkpoint
    config = dataclasses.replace(config, resume=True)
    result = Trainer(resumed, "tiny", {}, dataset, multiscale_l1_loss, config).fit()
    assert result.step == 6 and not config.progress_path.exists()
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=0)

    # extra trainable parameters are optimised and stored
    torch.manual_seed(0)
    Trainer(
        build_network("tiny"),
        "tiny",
        {},
        dataset,
        loss_with_extra,
        _config(tmp_path, "extra"),
        extra_modules={"offset": extra},
        extra_state=lambda: {"offset": float(extra.detach())},
    ).fit()
    payload = load_checkpoint(tmp_path / "extra.pt")
    assert float(payload["extra_modules"]["offset"]["value"]) == pytest.approx(float(extra.detach())) and float(extra.detach()) > 0.5
    assert payload["extra_state"]["offset"] == pytest.approx(float(extra.detach()))


def test_cosine_schedule_warms_up_and_decays() -> None:
    assert lr_factor(0, 100, "cosine", 10) == pytest.approx(0.1)
    assert lr_factor(10, 100, "cosine", 10) == pytest.approx(1.0)
    assert lr_factor(100, 100, "cosine", 10) == pytest.approx(0.05)
    assert lr_factor(79, 100, "step", 0) == 0.5


def _cli_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_ctrl_c_on_the_command_saves_and_resume_continues(tmp_path: Path) -> None:
    out = tmp_path / "net.pt"
    command = [
        sys.executable,
        "-m",
        "pseudolabel.cli.main",
        "train",
        "--data",
        str(MIDDLEBURY),
        "--arch",
        "tiny",
        "--out",
        str(out),
        "--crop",
        "48x64",
        "--batch-size",
        "2",
        "--threads",
        "1",
        "--log-every",
        "1",
        "--quiet",
    ]
    process = subprocess.Popen([*command, "--steps", "100000"], env=_cli_env(), stderr=subprocess.PIPE, text=True)
    log = out.with_suffix(".jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 3):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    partial = load_checkpoint(out.with_suffix(".partial.pt"))
    assert partial["step"] >= 3 and not out.exists()
    assert "--resume" in stderr

    refused = CliRunner().invoke(main, command[3:] + ["--steps", "5"])
    assert refused.exit_code == 1 and "--resume" in refused.output  # a partial run is never silently restarted
    target = partial["step"] + 2
    resumed = subprocess.run([*command, "--steps", str(target), "--resume"], env=_cli_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(out)["step"] == target


def test_existing_output_is_never_overwritten_without_resume_or_force(tmp_path: Path) -> None:
    out = tmp_path / "exists.pt"
    out.write_bytes(b"precious")
    result = CliRunner().invoke(main, ["train", "--data", str(MIDDLEBURY), "--arch", "tiny", "--out", str(out), "--steps", "1"])
    assert result.exit_code == 1 and "exists" in result.output
    assert out.read_bytes() == b"precious"


def test_an_output_folder_that_cannot_be_created_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_bytes(b"not a folder")
    result = CliRunner().invoke(main, ["train", "--data", str(MIDDLEBURY), "--arch", "tiny", "--out", str(blocker / "m.pt"), "--steps", "1"])
    assert result.exit_code == 1 and "is a file, not a folder" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert blocker.read_bytes() == b"not a folder"


def test_a_missing_init_checkpoint_names_the_init_option(tmp_path: Path) -> None:
    missing = tmp_path / "stage1.pt"
    result = CliRunner().invoke(
        main, ["train", "--data", str(MIDDLEBURY), "--arch", "tiny", "--init", str(missing), "--out", str(tmp_path / "m.pt"), "--steps", "1"]
    )
    assert result.exit_code == 1 and result.output.startswith(f"Error: --init {missing}: no such checkpoint file")
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "m.pt").exists()


def test_init_keeps_the_checkpoint_arguments_under_those_given(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["train", "--data", str(MIDDLEBURY), "--arch", "tiny", "--steps", "1", "--crop", "32x64", "--batch-size", "1", "--quiet"]
    first = runner.invoke(main, [*base, "--out", str(tmp_path / "a.pt"), "--arch-kwargs", '{"radius": 1}'])
    assert first.exit_code == 0, first.output
    # --init keeps radius 1 from the checkpoint; --arch-kwargs changes the (weightless) upsampling
    second = runner.invoke(
        main, [*base, "--out", str(tmp_path / "b.pt"), "--init", str(tmp_path / "a.pt"), "--arch-kwargs", '{"upsampling": "bilinear"}']
    )
    assert second.exit_code == 0, second.output
    assert load_checkpoint(tmp_path / "b.pt")["arch_kwargs"] == {"radius": 1, "upsampling": "bilinear"}
    assert load_model(tmp_path / "b.pt").upsampling == "bilinear"
    # arguments that change the weights' shapes, bad values and non-objects: one line, exit 1, no output
    for arch_kwargs, message in (('{"radius": 2}', "do not fit"), ('{"upsampling": "nearest"}', "upsampling must be one of"), ("[1]", "JSON object")):
        result = runner.invoke(main, [*base, "--out", str(tmp_path / "c.pt"), "--init", str(tmp_path / "a.pt"), "--arch-kwargs", arch_kwargs])
        assert result.exit_code == 1 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "c.pt").exists()


def test_train_predict_and_eval_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    model = tmp_path / "new" / "folder" / "tiny.pt"  # the command creates the folder
    trained = runner.invoke(
        main,
        [
            "train",
            "--data",
            str(MIDDLEBURY),
            "--arch",
            "tiny",
            "--out",
            str(model),
            "--steps",
            "3",
            "--crop",
            "48x64",
            "--batch-size",
            "2",
            "--threads",
            "1",
            "--quiet",
            "--device",
            "cpu",
        ],
    )
    assert trained.exit_code == 0, trained.output
    venus = MIDDLEBURY / "venus"
    predicted = runner.invoke(main, ["predict", "--model", str(model), "--in", str(venus), "--out", str(tmp_path / "pred")])
    assert predicted.exit_code == 0, predicted.output
    files = sorted(p.name for p in (tmp_path / "pred").iterdir())
    assert files == ["venus.pfm", "venus.png", "venus_color.png"]
    from pseudolabel.io import read_disparity, read_image

    pfm = read_disparity(tmp_path / "pred" / "venus.pfm")
    assert pfm.shape == read_image(venus / "imL.png").shape[:2]
    png = read_disparity(tmp_path / "pred" / "venus.png")
    assert np.nanmax(np.abs(np.where(np.isnan(png), 0, png) - np.where(pfm > 0, pfm, 0))) <= 1 / 256

    by_model = runner.invoke(main, ["eval", "--model", str(model), "--data", str(venus), "--json", str(tmp_path / "a.json")])
    by_files = runner.invoke(
        main, ["eval", "--pred", str(tmp_path / "pred"), "--gt", str(venus), "--json", str(tmp_path / "b.json"), "--mask", "nonocc"]
    )
    assert by_model.exit_code == 0 and by_files.exit_code == 0, by_model.output + by_files.output
    a = json.loads((tmp_path / "a.json").read_text())
    b = json.loads((tmp_path / "b.json").read_text())
    assert 0 < a["mean"]["epe"] < 100 and a["pairs"][0]["key"] == "venus"
    assert b["mask"] == "nonocc" and b["pairs"][0]["pixels"] < a["pairs"][0]["pixels"]
    unmasked = runner.invoke(main, ["eval", "--pred", str(tmp_path / "pred"), "--gt", str(venus), "--json", str(tmp_path / "c.json")])
    assert unmasked.exit_code == 0
    c = json.loads((tmp_path / "c.json").read_text())
    assert c["mean"]["bad3"] == pytest.approx(a["mean"]["bad3"], abs=0.05)  # PFM round trip of the same prediction

    missing = runner.invoke(main, ["predict", "--model", str(tmp_path / "nope.pt"), "--in", str(venus), "--out", str(tmp_path / "p2")])
    assert missing.exit_code == 1 and "no such checkpoint" in missing.output


def test_multiscale_l1_against_a_hand_computed_value() -> None:
    from pseudolabel.models.registry import StereoOutput

    target = torch.tensor([[[[1.0, 2.0], [3.0, 0.0]]]])
    valid = torch.tensor([[[[True, True], [True, False]]]])
    fine = torch.tensor([[[[1.5, 2.0], [1.0, 9.0]]]])  # errors 0.5, 0, 2 (last pixel ignored)
    coarse = torch.tensor([[[[0.0, 0.0], [0.0, 0.0]]]])  # errors 1, 2, 3
    output = StereoOutput(disparity=fine.clamp(min=0), multiscale=[fine, coarse])
    loss, logs = multiscale_l1_loss(output, {"disparity": target, "valid": valid}, weights=[1.0, 0.25])
    assert float(loss) == pytest.approx(2.5 / 3 + 0.25 * 6 / 3)
    assert logs["epe"] == pytest.approx(2.5 / 3) and logs["bad3"] == 0.0
    capped, _ = multiscale_l1_loss(output, {"disparity": target, "valid": valid}, weights=[1.0, 0.0], max_disparity=2.5)
    assert float(capped) == pytest.approx(0.5 / 2)  # ground truth 3 is ignored


def test_rank_slices_of_a_step_cover_the_single_process_batch() -> None:
    from pseudolabel.learn.samples import StepBatchSampler

    single = list(StepBatchSampler(2, 5, global_batch=4))
    ranks = [list(StepBatchSampler(2, 5, global_batch=4, rank=r, world_size=2)) for r in range(2)]
    assert single[0] == [8, 9, 10, 11]
    for step in range(3):
        assert ranks[0][step] + ranks[1][step] == single[step]


def test_a_skipped_update_still_advances_the_schedule_without_a_warning() -> None:
    # what the float16 gradient scaler does on CUDA while it calibrates: no optimizer.step() this step
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        advance_schedule(scheduler)
    assert optimizer.param_groups[0]["lr"] == 0.5 and scheduler.last_epoch == 1
    # any other warning of the scheduler still reaches the user
    with pytest.warns(UserWarning, match="other"):
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            original = scheduler.get_lr

            def noisy_get_lr() -> list[float]:
                warnings.warn("some other scheduler warning", UserWarning, stacklevel=1)
                return original()

            scheduler.get_lr = noisy_get_lr  # type: ignore[method-assign]
            advance_schedule(scheduler)
