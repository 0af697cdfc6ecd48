"""The adaptation objective of pseudolabel.learn.adaptation: inputs, logs, terms, and a short adaptation run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from pseudolabel.errors import InputError
from pseudolabel.learn.adaptation import (
    AdaptationObjective,
    adaptation_loss,
    disparity_map,
    unit_range,
)
from pseudolabel.learn.losses import build_loss_terms
from pseudolabel.learn.tau import FixedTau, LearnableTau
from pseudolabel.models.registry import StereoOutput, build_network
from pseudolabel.synth.scene import SynthConfig, render_pair

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def corrupted_synthetic_batch(device: torch.device, seed: int = 0, offset: float = 5.0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One 64x96 synthetic pair with exact disparity and a proxy that is wrong where confidence is low.

    60% of the pixels (chosen at random) get a confidence in [0, 0.3) and a proxy ``true + offset``
    (a systematic error, like a wrong match); the others a confidence in [0.7, 1) and the true
    disparity. Returns ``(batch, true_disparity)``.
    """
    pair = render_pair(SynthConfig(width=96, height=64, max_disp=12.0), seed)
    left = torch.from_numpy(pair.left).permute(2, 0, 1)[None].float() / 255
    right = torch.from_numpy(pair.right).permute(2, 0, 1)[None].float() / 255
    true = torch.from_numpy(pair.disp_left)[None, None]
    generator = torch.Generator().manual_seed(seed)
    low = torch.rand(true.shape, generator=generator) < 0.6
    confidence = torch.where(low, 0.3 * torch.rand(true.shape, generator=generator), 0.7 + 0.3 * torch.rand(true.shape, generator=generator))
    proxy = torch.where(low, true + offset, true)
    batch = {"left": left, "right": right, "proxy": proxy, "confidence": confidence}
    return {key: value.to(device) for key, value in batch.items()}, true.to(device)


def adapt(
    batch: dict[str, torch.Tensor], objective: AdaptationObjective, device: torch.device, steps: int = 40
) -> tuple[torch.nn.Module, dict[str, float]]:
    """``steps`` Adam steps of a freshly seeded ``tiny`` network (and the tau parameters) on one batch."""
    torch.manual_seed(0)
    model = build_network("tiny").to(device)
    objective.to(device)
    optimizer = torch.optim.Adam(list(model.parameters()) + list(objective.parameters()), lr=1e-3)
    logs: dict[str, float] = {}
    for _ in range(steps):
        loss, logs = objective(model(batch["left"], batch["right"]), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, logs


def error(model: torch.nn.Module, batch: dict[str, torch.Tensor], true: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(batch["left"], batch["right"]).disparity - true).abs().mean())


def test_guided_adaptation_ignores_corrupted_low_confidence_proxies(device: torch.device) -> None:
    batch, true = corrupted_synthetic_batch(device)
    torch.manual_seed(0)
    initial = error(build_network("tiny").to(device), batch, true)
    proxy_error = float((batch["proxy"] - true).abs().mean())
    assert proxy_error == pytest.approx(0.6 * 5.0, abs=0.1)

    guided, logs = adapt(batch, AdaptationObjective(0.5, "guided=1"), device)
    guided_error = error(guided, batch, true)
    assert logs["tau"] == 0.5 and logs["selected"] == pytest.approx(0.4, abs=0.02)
    assert guided_error < 0.6 * initial, (initial, guided_error)
    assert guided_error < 0.6 * proxy_error

    # control: the same steps with tau = 0 also learn the corrupted pixels and do much worse
    control, logs = adapt(batch, AdaptationObjective(0.0, "guided=1"), device)
    control_error = error(control, batch, true)
    assert logs["selected"] == pytest.approx(1.0)
    assert control_error > 1.5 * guided_error, (guided_error, control_error)

    # a learnable tau (soft selection, starting at 0.5) adapts as well as the fixed one and logs its value
    objective = AdaptationObjective(LearnableTau(init=0.5, penalty_weight=1.0), "guided=1")
    learned, logs = adapt(batch, objective, device)
    assert error(learned, batch, true) < 0.6 * initial
    assert 0.0 < logs["tau"] < 1.0 and logs["tau"] != 0.5
    assert logs["tau"] == pytest.approx(objective.describe()["tau"]["value"], abs=1e-3)


def test_objective_logs_penalty_and_state(device: torch.device) -> None:
    batch, true = corrupted_synthetic_batch(device)
    objective = AdaptationObjective("learnable", "guided=1,smooth=0.1,reconstruction=0.5,wlcn=0.2").to(device)
    disparity = true.clone().requires_grad_()
    loss, logs = objective(disparity, batch)
    assert set(logs) >= {"loss", "loss/guided", "loss/smooth", "loss/reconstruction", "loss/wlcn", "tau", "tau_penalty", "selected"}
    # total = sum of weighted terms + penalty -lambda log(1 - 0.5)
    expected = logs["loss/guided"] + 0.1 * logs["loss/smooth"] + 0.5 * logs["loss/reconstruction"] + 0.2 * logs["loss/wlcn"] + math.log(2)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert logs["tau_penalty"] == pytest.approx(math.log(2), rel=1e-5)
    # with the true disparity the guided loss is 0 on the clean pixels, up to the soft tails on corrupted ones
    assert logs["loss/guided"] < 0.05 * 5.0
    loss.backward()
    assert disparity.grad is not None and torch.isfinite(disparity.grad).all()
    assert isinstance(objective.tau, LearnableTau)
    theta_grad = objective.tau.theta.grad
    assert theta_grad is not None and theta_grad.item() != 0
    assert list(objective.state_dict()) == ["tau.theta"]
    assert objective.describe() == {
        "loss": "guided=1,smooth=0.1,reconstruction=0.5,wlcn=0.2",
        "weighting": "mask",
        "scale_decay": 0.0,
        "tau": {"kind": "learnable", "temperature": 0.05, "penalty_weight": 1.0, "init": 0.5, "value": 0.5},
    }
    fixed = AdaptationObjective(0.8)
    assert isinstance(fixed.tau, FixedTau) and list(fixed.parameters()) == []


def test_unknown_proxies_are_ignored_without_nan(device: torch.device) -> None:
    proxy = torch.tensor([[1.0, float("nan"), 3.0], [float("inf"), 5.0, 9.0]], device=device)[None, None]
    confidence = torch.tensor([[0.9, 0.9, 0.2], [0.9, 0.8, 0.7]], device=device)[None, None]
    disparity = torch.tensor([[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]], device=device)[None, None].requires_grad_()
    loss, logs = adaptation_loss(disparity, {"proxy": proxy, "confidence": confidence}, FixedTau(0.5), build_loss_terms("guided"))
    # known and selected: 1, 5, 9 -> errors 1, 3, 7
    assert loss.item() == pytest.approx(11 / 3)
    assert logs["selected"] == pytest.approx(3 / 4)  # of the 4 known proxies, 3 are above tau
    loss.backward()
    grad = disparity.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert grad[0, 0, 0, 1].item() == 0 and grad[0, 0, 1, 0].item() == 0
    # a proxy_valid mask drops pixels too
    valid = torch.ones_like(proxy, dtype=torch.bool)
    valid[0, 0, 1, 2] = False
    loss, _ = adaptation_loss(disparity, {"proxy": proxy, "confidence": confidence, "proxy_valid": valid}, FixedTau(0.5), build_loss_terms("guided"))
    assert loss.item() == pytest.approx(4 / 2)
    # confidence weighting: (0.9 * 1 + 0.8 * 3 + 0.7 * 7) / (0.9 + 0.8 + 0.7)
    loss, _ = adaptation_loss(
        disparity, {"proxy": proxy, "confidence": confidence}, FixedTau(0.5), build_loss_terms("guided"), weighting="confidence"
    )
    assert loss.item() == pytest.approx((0.9 + 2.4 + 4.9) / 2.4, rel=1e-6)


def test_left_right_term_needs_the_network_and_uses_the_mirrored_pair(device: torch.device) -> None:
    batch, _ = corrupted_synthetic_batch(device)
    objective = AdaptationObjective(0.5, "lr=1")
    plane = torch.full_like(batch["proxy"], 3.0)
    with pytest.raises(InputError, match="right-view disparity"):
        objective(plane, batch)
    calls: list[torch.Tensor] = []

    def constant_network(left: torch.Tensor, right: torch.Tensor) -> StereoOutput:
        calls.append(left)
        return StereoOutput(disparity=torch.full_like(left[:, :1], 3.0))

    objective.set_predict(constant_network)
    loss, logs = objective(plane, batch)
    # a fronto-parallel plane is consistent in both views
    # (exactly 0 on the CPU; CUDA's grid_sample leaves ~1e-10)
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and logs["loss/lr"] == pytest.approx(0.0, abs=1e-6)
    assert len(calls) == 1 and torch.equal(calls[0], torch.flip(batch["right"], dims=[-1]))
    assert list(objective.state_dict()) == []  # the network is not a sub-module of the objective
    # with a real network the term has a finite gradient for its weights
    torch.manual_seed(0)
    model = build_network("tiny").to(device)
    objective.set_predict(model)
    loss, _ = objective(model(batch["left"], batch["right"]), batch)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_l1_term_reads_ground_truth_keys(device: torch.device) -> None:
    disparity = torch.tensor([[1.0, 2.0], [3.0, 4.0]], device=device)[None, None]
    batch = {
        "disparity": torch.tensor([[2.0, 0.0], [3.0, 6.0]], device=device)[None, None],
        "valid": torch.tensor([[True, False], [True, True]], device=device)[None, None],
    }
    loss, logs = AdaptationObjective(0.5, "l1")(disparity, batch)
    assert loss.item() == pytest.approx((1 + 0 + 2) / 3) and "tau" not in logs


def test_missing_inputs_are_reported() -> None:
    disparity = torch.ones(1, 1, 4, 5)
    with pytest.raises(InputError, match="proxy disparity and its confidence"):
        AdaptationObjective(0.5, "guided")(disparity, {"confidence": torch.ones(1, 1, 4, 5)})
    with pytest.raises(InputError, match="'left' image"):
        AdaptationObjective(0.5, "smooth")(disparity, {"right": torch.ones(1, 3, 4, 5)})
    with pytest.raises(InputError, match="divide it by 255"):
        AdaptationObjective(0.5, "reconstruction")(disparity, {"left": torch.full((1, 3, 4, 5), 200.0), "right": torch.ones(1, 3, 4, 5)})
    with pytest.raises(InputError, match="--weighting"):
        AdaptationObjective(0.5, weighting="soft")
    with pytest.raises(InputError, match="--loss"):
        AdaptationObjective(0.5, "guided=1,smoothness=1")


def test_disparity_map_and_unit_range() -> None:
    raw = torch.full((2, 1, 4, 6), -1.0)
    output = StereoOutput(disparity=raw.clamp(min=0), multiscale=[raw, raw[..., ::2, ::2]])
    assert torch.equal(disparity_map(output), raw)  # the unclamped finest estimate
    assert disparity_map(torch.ones(2, 4, 6)).shape == (2, 1, 4, 6)
    coarse, fine = torch.ones(1, 1, 2, 3), torch.zeros(1, 1, 4, 6)
    assert disparity_map([coarse, fine]) is fine
    assert disparity_map({"disparity": fine}) is fine
    assert disparity_map(torch.ones(1, 1, 2, 3, dtype=torch.float16)).dtype == torch.float32
    with pytest.raises(ValueError, match="shape"):
        disparity_map(torch.ones(1, 2, 4, 6))
    image8 = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    assert unit_range(image8).flatten().tolist() == pytest.approx([0.0, 0.2, 1.0])
    assert unit_range(torch.full((1, 1, 1, 2), 0.5), dtype=torch.float64).dtype == torch.float64


def test_objective_as_trainer_loss_stores_tau_in_the_checkpoint(tmp_path: Path) -> None:
    from pseudolabel.learn.checkpoint import load_checkpoint
    from pseudolabel.learn.trainer import Trainer, TrainerConfig

    batch, _ = corrupted_synthetic_batch(torch.device("cpu"))

    class RepeatedPair(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
            return {key: value[0] for key, value in batch.items()}

    objective = AdaptationObjective("learnable", "guided=1,smooth=0.05")
    torch.manual_seed(0)
    config = TrainerConfig(
        out=tmp_path / "adapted.pt",
        steps=3,
        batch_size=1,
        learning_rate=1e-2,
        device="cpu",
        checkpoint_every=0,
        log_every=1,
        progress=False,
        schedule="constant",
    )
    Trainer(
        build_network("tiny"),
        "tiny",
        {},
        RepeatedPair(),
        objective,
        config,
        extra_modules={"tau": objective.tau},
        extra_state=lambda: {"adaptation": objective.describe()},
    ).fit()
    payload = load_checkpoint(tmp_path / "adapted.pt")
    theta = payload["extra_modules"]["tau"]["theta"]
    assert theta.item() != 0.0  # moved from logit(0.5) = 0
    assert payload["extra_state"]["adaptation"]["tau"]["value"] == pytest.approx(torch.sigmoid(theta).item())
    assert payload["last_logs"]["tau"] == pytest.approx(torch.sigmoid(theta).item(), abs=0.05)


def test_scale_decay_adds_the_coarser_levels_with_geometric_weights() -> None:
    generator = torch.Generator().manual_seed(3)
    proxy = 10 * torch.rand((1, 1, 9, 13), generator=generator, dtype=torch.float64)
    confidence = torch.rand((1, 1, 9, 13), generator=generator, dtype=torch.float64)
    levels = [proxy + torch.randn((1, 1, 9, 13), generator=generator, dtype=torch.float64) * (k + 1) for k in range(3)]
    batch = {"proxy": proxy, "confidence": confidence}
    fixed = AdaptationObjective("0.4", "guided=2")

    def guided_of(level: torch.Tensor) -> float:
        loss, _ = fixed(level, batch)
        return loss.item()

    output = StereoOutput(disparity=levels[0].clamp_min(0), multiscale=levels)
    loss, logs = AdaptationObjective("0.4", "guided=2", scale_decay=0.5)(output, batch)
    expected = guided_of(levels[0]) + 0.5 * guided_of(levels[1]) + 0.25 * guided_of(levels[2])
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    assert logs["loss/guided"] == pytest.approx(guided_of(levels[0]) / 2, rel=1e-9)  # unweighted, finest level
    # scale_decay 0 (the default): the finest level only; a plain tensor has no coarser levels
    assert AdaptationObjective("0.4", "guided=2")(output, batch)[0].item() == pytest.approx(guided_of(levels[0]), rel=1e-9)
    assert AdaptationObjective("0.4", "guided=2", scale_decay=0.5)(levels[0], batch)[0].item() == pytest.approx(guided_of(levels[0]))
    with pytest.raises(InputError, match="--scale-decay"):
        AdaptationObjective("0.4", "guided=1", scale_decay=-1)
