"""Threshold modules of pseudolabel.learn.tau: fixed, learnable (sigmoid parameter) and predicted (TauNet)."""

from __future__ import annotations

import math

import pytest
import torch

from pseudolabel.errors import InputError
from pseudolabel.learn.losses import guided_confidence_loss
from pseudolabel.learn.tau import FixedTau, LearnableTau, TauNet, build_tau

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def correlated_batch(device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(disparity, proxy, confidence) (2, 1, 16, 20): the proxy error shrinks as confidence grows.

    Error = 4 * (1 - confidence) pixels, so selecting only more confident pixels lowers the
    normalised guided loss: a learnable tau without penalty would run towards 1.
    """
    generator = torch.Generator().manual_seed(seed)
    confidence = torch.rand(2, 1, 16, 20, generator=generator)
    disparity = 10 * torch.rand(2, 1, 16, 20, generator=generator)
    sign = torch.where(torch.rand(2, 1, 16, 20, generator=generator) < 0.5, -1.0, 1.0)
    proxy = disparity + sign * 4 * (1 - confidence)
    return disparity.to(device), proxy.to(device), confidence.to(device)


def test_fixed_tau(device: torch.device) -> None:
    confidence = torch.rand(3, 1, 4, 5, device=device, dtype=torch.float64)
    tau_module = build_tau("0.8")
    assert isinstance(tau_module, FixedTau) and tau_module.temperature is None
    tau = tau_module(confidence, confidence)
    assert tau.shape == (3,) and tau.dtype == torch.float64 and tau.device.type == device.type
    assert tau.tolist() == [0.8, 0.8, 0.8]
    assert tau_module.penalty(tau).item() == 0.0
    assert list(tau_module.parameters()) == []
    assert build_tau(0.0)(confidence, confidence).tolist() == [0.0, 0.0, 0.0]
    assert tau_module.describe() == {"kind": "fixed", "temperature": None, "tau": 0.8}


@pytest.mark.parametrize("spec", ["1", "1.5", "-0.1", "nan", "auto", ""])
def test_build_tau_rejects(spec: str) -> None:
    with pytest.raises(InputError, match="--tau"):
        build_tau(spec)


def test_build_tau_settings_are_checked() -> None:
    with pytest.raises(InputError, match="--tau-temperature"):
        build_tau("learnable", temperature=0.0)
    with pytest.raises(InputError, match="--tau-penalty"):
        build_tau("net", penalty_weight=-1.0)
    with pytest.raises(InputError, match="--tau-init"):
        build_tau("learnable", init=1.0)


def test_learnable_tau_value_penalty_and_gradient(device: torch.device) -> None:
    tau_module = build_tau("learnable", init=0.3, temperature=0.05, penalty_weight=2.0)
    assert isinstance(tau_module, LearnableTau) and tau_module.temperature == 0.05
    tau_module.to(device)
    disparity, proxy, confidence = correlated_batch(device)
    tau = tau_module(confidence, proxy)
    assert tau.shape == (2,) and tau.tolist() == pytest.approx([0.3, 0.3], rel=1e-6)
    penalty = tau_module.penalty(tau)
    assert penalty.item() == pytest.approx(-2.0 * math.log(1 - 0.3), rel=1e-6)
    guided = guided_confidence_loss(disparity, proxy, confidence, tau, temperature=tau_module.temperature)
    (guided_grad,) = torch.autograd.grad(guided, tau_module.theta, retain_graph=True)
    # raising tau keeps only more confident, more accurate pixels: the guided loss falls
    assert guided_grad.item() < 0
    (penalty_grad,) = torch.autograd.grad(penalty, tau_module.theta)
    # d/dtheta of -lambda log(1 - sigmoid(theta)) = lambda * tau
    assert penalty_grad.item() == pytest.approx(2.0 * 0.3, rel=1e-5)


def _train_tau(tau_module: LearnableTau, device: torch.device, steps: int = 200) -> list[float]:
    disparity, proxy, confidence = correlated_batch(device)
    optimizer = torch.optim.Adam(tau_module.parameters(), lr=0.1)
    history = []
    for _ in range(steps):
        tau = tau_module(confidence, proxy)
        loss = guided_confidence_loss(disparity, proxy, confidence, tau, temperature=tau_module.temperature)
        loss = loss + tau_module.penalty(tau)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(tau_module.current())
    return history


def test_learnable_tau_stays_in_open_interval_and_penalty_holds_it_back(device: torch.device) -> None:
    # With error 4 (1 - c) and c uniform, the guided loss is about 2 (1 - tau): slope -2. The
    # penalty's slope is lambda / (1 - tau), so with lambda = 0.5 they balance at tau = 0.75.
    penalised = _train_tau(LearnableTau(init=0.3, penalty_weight=0.5).to(device), device)
    free = _train_tau(LearnableTau(init=0.3, penalty_weight=0.0).to(device), device)
    assert all(0.0 < tau < 1.0 and math.isfinite(tau) for tau in penalised + free)
    assert penalised[-1] == pytest.approx(0.75, abs=0.05)
    assert abs(penalised[-1] - penalised[-50]) < 0.02  # settled
    # without the penalty the guided loss alone drives tau towards 1
    assert free[-1] > 0.95
    # and a penalty steeper than the loss everywhere (lambda = 2 > 2 (1 - tau)) drives it to 0
    steep = _train_tau(LearnableTau(init=0.3, penalty_weight=2.0).to(device), device)
    assert 0.0 < steep[-1] < 0.1


def test_taunet_output_shape_range_and_gradient(device: torch.device) -> None:
    torch.manual_seed(0)
    tau_module = build_tau("net", init=0.4)
    assert isinstance(tau_module, TauNet) and tau_module.temperature is not None
    tau_module.to(device)
    disparity, proxy, confidence = correlated_batch(device)
    proxy = proxy.clone()
    proxy[0, 0, :3] = float("nan")  # unknown proxies are allowed
    confidence = torch.cat([confidence, confidence.flip(-1)[:1] ** 2])
    proxy = torch.cat([proxy, proxy[:1] * 3])
    tau = tau_module(confidence, proxy)
    assert tau.shape == (3,)
    assert torch.all((tau > 0) & (tau < 1))
    assert tau.detach().cpu().tolist() == pytest.approx([0.4] * 3, abs=0.05)  # starts near init
    loss = guided_confidence_loss(
        torch.cat([disparity, disparity[:1]]), proxy, confidence, tau, temperature=tau_module.temperature
    ) + tau_module.penalty(tau)
    loss.backward()
    grads = [p.grad for p in tau_module.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_taunet_learns_per_image_thresholds(device: torch.device) -> None:
    """A few Adam steps fit different taus for two images that differ in their confidence maps."""
    torch.manual_seed(0)
    tau_module = TauNet(init=0.5).to(device)
    generator = torch.Generator().manual_seed(1)
    confidence = torch.stack([torch.rand(1, 16, 16, generator=generator) * 0.5, 0.5 + torch.rand(1, 16, 16, generator=generator) * 0.5])
    confidence = confidence.to(device)
    proxy = torch.full_like(confidence, 5.0)
    target = torch.tensor([0.2, 0.8], device=device)
    optimizer = torch.optim.Adam(tau_module.parameters(), lr=2e-2)
    for _ in range(80):
        loss = (tau_module(confidence, proxy) - target).square().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert tau_module(confidence, proxy).detach().cpu().tolist() == pytest.approx([0.2, 0.8], abs=0.05)


def test_taunet_normalized_proxy_by_hand() -> None:
    proxy = torch.tensor([[2.0, float("nan"), 4.0], [0.0, 6.0, 4.0]])[None, None]
    # known positive values 2, 4, 6, 4: mean 4
    expected = torch.tensor([[0.5, 0.0, 1.0], [0.0, 1.5, 1.0]])[None, None]
    torch.testing.assert_close(TauNet.normalized_proxy(proxy), expected)
    # a scaled proxy gives the same input, so the same tau
    torch.manual_seed(0)
    net = TauNet()
    confidence = torch.rand(1, 1, 2, 3)
    torch.testing.assert_close(net(confidence, proxy), net(confidence, 7 * proxy))
