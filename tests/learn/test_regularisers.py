"""L2-SP toward the source weights (``--loss guided=1,l2sp=1e-3``): value and gradient by hand, and
synthetic replay (``--replay``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pseudolabel.errors import InputError
from pseudolabel.learn.adaptation import AdaptationObjective
from pseudolabel.learn.adaptation_data import AdaptationPair, ProxyAdaptationDataset
from pseudolabel.learn.losses import LossInputs, build_loss_terms
from pseudolabel.learn.regularisers import L2SP, l2sp_distance
from pseudolabel.learn.replay import ReplayDataset


def small_network() -> nn.Module:
    network = nn.Linear(2, 1)
    with torch.no_grad():
        network.weight.copy_(torch.tensor([[1.0, -2.0]]))
        network.bias.copy_(torch.tensor([0.5]))
    return network


def test_l2sp_value_and_gradient_by_hand() -> None:
    network = small_network()
    l2sp = L2SP(network)  # source: w = (1, -2), b = 0.5
    assert float(l2sp().detach()) == 0.0
    with torch.no_grad():
        network.weight.copy_(torch.tensor([[1.5, -1.0]]))
        network.bias.copy_(torch.tensor([0.0]))
    value = l2sp()
    # (1.5 - 1)^2 + (-1 + 2)^2 + (0 - 0.5)^2 = 0.25 + 1 + 0.25
    assert float(value.detach()) == pytest.approx(1.5)
    value.backward()
    # d/dw (w - w0)^2 = 2 (w - w0)
    assert network.weight.grad is not None and network.bias.grad is not None
    assert torch.allclose(network.weight.grad, torch.tensor([[1.0, 2.0]]))
    assert torch.allclose(network.bias.grad, torch.tensor([-1.0]))


def test_l2sp_ignores_frozen_parameters_and_checks_shapes() -> None:
    network = small_network()
    network.bias.requires_grad_(False)
    l2sp = L2SP(network)
    with torch.no_grad():
        network.bias.fill_(10.0)
    assert float(l2sp().detach()) == 0.0
    with pytest.raises(ValueError, match="shape"):
        l2sp_distance([torch.zeros(2)], [torch.zeros(3)])


def test_the_l2sp_term_is_weighted_in_the_objective_and_needs_its_regulariser() -> None:
    network = small_network()
    objective = AdaptationObjective(0.5, "guided=1,l2sp=0.1")
    objective.set_regulariser("l2sp", L2SP(network))
    with torch.no_grad():
        network.weight.add_(1.0)  # distance 1 + 1 = 2
    disparity = torch.full((1, 1, 4, 4), 2.0)
    batch = {"proxy": torch.full((1, 1, 4, 4), 3.0), "confidence": torch.full((1, 1, 4, 4), 0.9)}
    loss, logs = objective(disparity, batch)
    assert logs["loss/l2sp"] == pytest.approx(2.0)
    assert logs["loss/guided"] == pytest.approx(1.0)
    assert float(loss.detach()) == pytest.approx(1.0 + 0.1 * 2.0)
    loss.backward()
    assert torch.allclose(network.weight.grad, torch.full((1, 2), 0.1 * 2.0))
    (term,) = build_loss_terms("l2sp=1")
    with pytest.raises(InputError, match="l2sp"):
        term(LossInputs(disparity=disparity))


def pair(key: str, height: int = 24, width: int = 40) -> AdaptationPair:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    return AdaptationPair(
        key=key,
        left=image,
        right=image,
        proxy=np.full((height, width), 4.0, dtype=np.float32),
        confidence=np.full((height, width), 0.3, dtype=np.float32),
    )


def test_replay_mixes_synthetic_pairs_with_exact_labels_at_the_real_size() -> None:
    base = ProxyAdaptationDataset([pair("a"), pair("b")], crop=None, seed=0)
    replay = ReplayDataset(base, 0.25, seed=0)
    synthetic = [index for index in range(200) if replay.is_synthetic(index)]
    assert 30 < len(synthetic) < 70  # about a quarter
    assert synthetic == [index for index in range(200) if ReplayDataset(base, 0.25, seed=0).is_synthetic(index)]
    real_index = next(index for index in range(200) if not replay.is_synthetic(index))
    assert torch.equal(replay[real_index]["proxy"], base[real_index]["proxy"])
    sample = replay[synthetic[0]]
    assert sample["left"].shape == (3, 24, 40) and sample["proxy"].shape == (1, 24, 40)
    known = torch.isfinite(sample["proxy"])
    assert known.float().mean() > 0.9 and torch.all(sample["confidence"][known] == 1.0)
    assert sample.keys() == base[0].keys()
    cropped = ReplayDataset(ProxyAdaptationDataset([pair("a")], crop=(16, 24)), 0.5)
    index = next(index for index in range(50) if cropped.is_synthetic(index))
    assert cropped[index]["left"].shape == (3, 16, 24)
    with pytest.raises(InputError, match="--replay"):
        ReplayDataset(base, 1.0)
