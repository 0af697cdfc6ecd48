"""Losses of pseudolabel.learn.losses: hand-computed values on tiny tensors, gradients, registry."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from pseudolabel.errors import InputError
from pseudolabel.learn.losses import (
    LOSSES,
    SSIM_C1,
    SSIM_C2,
    LossInputs,
    build_loss_terms,
    edge_aware_smoothness,
    guided_confidence_loss,
    l1_loss,
    left_right_consistency,
    local_mean_std,
    mirrored_right_disparity,
    photometric_error,
    reconstruction_loss,
    register_loss,
    select_pixels,
    ssim,
    warp_right_to_left,
    weighted_lcn_loss,
)

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    return request.param


def tensor(values: list[list[float]], device: torch.device, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A (1, 1, H, W) tensor from nested rows."""
    return torch.tensor(values, dtype=dtype, device=device)[None, None]


def tol(dtype: torch.dtype) -> dict[str, Any]:
    """Tolerances; float32 local variances E[x^2] - E[x]^2 lose ~1e-8 absolute, ~1e-4 relative in SSIM."""
    return {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}


# ----------------------------------------------------------------------------- guided


DISP = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
PROXY = [[1.0, 4.0, 3.0], [0.0, 5.0, 9.0]]
CONF = [[0.9, 0.2, 0.8], [0.95, 0.1, 0.5]]


def test_guided_hard_selection_by_hand(device: torch.device, dtype: torch.dtype) -> None:
    d, p, c = (tensor(x, device, dtype) for x in (DISP, PROXY, CONF))
    # confidence > 0.6: (0,0) error 0, (0,2) error 0, (1,0) error 4 -> 4 / 3
    loss = guided_confidence_loss(d, p, c, 0.6)
    assert loss.dtype == dtype and loss.device.type == device.type
    assert loss.item() == pytest.approx(4 / 3, rel=1e-6)
    weighted = guided_confidence_loss(d, p, c, 0.6, weighting="confidence")
    assert weighted.item() == pytest.approx(4 * 0.95 / (0.9 + 0.8 + 0.95), rel=1e-6)
    # tau 0: every pixel with confidence > 0, errors 0 2 0 4 0 3
    assert guided_confidence_loss(d, p, c, 0.0).item() == pytest.approx(9 / 6, rel=1e-6)


def test_guided_soft_selection_by_hand(device: torch.device) -> None:
    d, p, c = (tensor(x, device) for x in (DISP, PROXY, CONF))
    errors = [0, 2, 0, 4, 0, 3]
    confidences = [0.9, 0.2, 0.8, 0.95, 0.1, 0.5]
    weights = [1 / (1 + math.exp(-(ci - 0.6) / 0.1)) for ci in confidences]
    expected = sum(w * e for w, e in zip(weights, errors)) / sum(weights)
    loss = guided_confidence_loss(d, p, c, torch.tensor(0.6, dtype=torch.float64, device=device), temperature=0.1)
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_guided_per_image_tau_and_valid(device: torch.device) -> None:
    d = torch.cat([tensor(DISP, device), tensor(DISP, device)])
    p = torch.cat([tensor(PROXY, device), tensor(PROXY, device)])
    c = torch.cat([tensor(CONF, device), tensor(CONF, device)])
    # image 0 with tau 0.6: errors 0 0 4; image 1 with tau 0.0: errors 0 2 0 4 0 3
    loss = guided_confidence_loss(d, p, c, torch.tensor([0.6, 0.0], dtype=torch.float64, device=device))
    assert loss.item() == pytest.approx((4 + 9) / (3 + 6))
    valid = torch.ones_like(d, dtype=torch.bool)
    valid[0, 0, 1, 0] = False  # drop the only wrong selected pixel of image 0
    loss = guided_confidence_loss(d[:1], p[:1], c[:1], 0.6, valid=valid[:1])
    assert loss.item() == 0.0


def test_guided_ignores_pixels_below_tau(device: torch.device) -> None:
    generator = torch.Generator().manual_seed(0)
    d = (torch.rand(2, 1, 7, 9, generator=generator, dtype=torch.float64) * 10).to(device).requires_grad_()
    p = (torch.rand(2, 1, 7, 9, generator=generator, dtype=torch.float64) * 10).to(device)
    c = torch.rand(2, 1, 7, 9, generator=generator, dtype=torch.float64).to(device)
    tau = 0.6
    loss = guided_confidence_loss(d, p, c, tau)
    (grad,) = torch.autograd.grad(loss, d)
    below = c <= tau
    assert 0 < below.sum() < below.numel()
    garbage = torch.where(below, torch.full_like(p, float("nan")), p)
    garbage[0, 0, 0, 0] = float("inf") if below[0, 0, 0, 0] else garbage[0, 0, 0, 0]
    changed = torch.where(below, p + 100.0, p)
    for other in (garbage, changed):
        other_loss = guided_confidence_loss(d, other, c, tau)
        (other_grad,) = torch.autograd.grad(other_loss, d)
        assert other_loss.item() == pytest.approx(loss.item(), rel=1e-12)
        assert torch.equal(other_grad, grad)
    # the gradient is zero exactly on the ignored pixels
    assert torch.all(grad[below] == 0) and torch.all(grad[~below] != 0)
    # and changing a selected pixel does change the loss
    assert guided_confidence_loss(d, torch.where(below, p, p + 1.0), c, tau).item() != pytest.approx(loss.item())


def test_guided_mask_weighting_invariant_to_confidence_scale_above_tau(device: torch.device) -> None:
    generator = torch.Generator().manual_seed(1)
    d = (torch.rand(1, 1, 6, 8, generator=generator, dtype=torch.float64) * 10).to(device)
    p = (torch.rand(1, 1, 6, 8, generator=generator, dtype=torch.float64) * 10).to(device)
    c = torch.rand(1, 1, 6, 8, generator=generator, dtype=torch.float64).to(device)
    tau = 0.5
    above = c > tau
    rescaled = torch.where(above, tau + (c - tau) * 0.3, c)  # still above tau, much lower
    assert torch.all(rescaled[above] > tau)
    loss = guided_confidence_loss(d, p, c, tau, weighting="mask")
    assert guided_confidence_loss(d, p, rescaled, tau, weighting="mask").item() == pytest.approx(loss.item(), rel=1e-12)
    # with confidence weighting the same change does matter (the control)
    weighted = guided_confidence_loss(d, p, c, tau, weighting="confidence")
    assert guided_confidence_loss(d, p, rescaled, tau, weighting="confidence").item() != pytest.approx(weighted.item())


def test_guided_nothing_selected_is_zero_with_graph(device: torch.device) -> None:
    d = tensor(DISP, device).requires_grad_()
    loss = guided_confidence_loss(d, tensor(PROXY, device), tensor(CONF, device), 0.99)
    assert loss.item() == 0.0
    loss.backward()
    assert d.grad is not None and torch.all(d.grad == 0)


def test_guided_rejects_bad_weighting(device: torch.device) -> None:
    d = tensor(DISP, device)
    with pytest.raises(InputError, match="--weighting"):
        guided_confidence_loss(d, d, d, 0.5, weighting="soft")


def test_select_pixels_hard_and_soft(device: torch.device) -> None:
    c = tensor([[0.2, 0.5, 0.7]], device)
    assert select_pixels(c, 0.5).flatten().tolist() == [0.0, 0.0, 1.0]
    soft = select_pixels(c, 0.5, temperature=0.1).flatten().tolist()
    assert soft == pytest.approx([1 / (1 + math.exp(3)), 0.5, 1 / (1 + math.exp(-2))])


# ----------------------------------------------------------------------------- warping / photometric

RIGHT = [[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]]


def test_warp_integer_and_fractional_by_hand(device: torch.device, dtype: torch.dtype) -> None:
    right = tensor(RIGHT, device, dtype)
    warped, valid = warp_right_to_left(right, torch.ones_like(right))
    assert valid[0, 0].tolist() == [[False, True, True], [False, True, True]]
    torch.testing.assert_close(warped[0, 0][:, 1:], tensor([[10.0, 20.0], [40.0, 50.0]], device, dtype)[0, 0])
    warped, valid = warp_right_to_left(right, torch.full_like(right, 0.5))
    assert valid[0, 0].tolist() == [[False, True, True], [False, True, True]]
    torch.testing.assert_close(warped[0, 0][:, 1:], tensor([[15.0, 25.0], [45.0, 55.0]], device, dtype)[0, 0])
    warped, valid = warp_right_to_left(right, torch.zeros_like(right))
    assert valid.all()
    torch.testing.assert_close(warped, right)
    # a single-row image and several channels
    row = torch.tensor([[[[1.0, 2.0, 4.0, 8.0]], [[0.0, 1.0, 0.0, 1.0]]]], dtype=dtype, device=device)
    warped, valid = warp_right_to_left(row, torch.full((1, 1, 1, 4), 1.25, dtype=dtype, device=device))
    assert valid[0, 0, 0].tolist() == [False, False, True, True]
    expected = [[[1.75, 3.5]], [[0.75, 0.25]]]  # 0.75-weighted interpolation at x = 0.75, 1.75
    torch.testing.assert_close(warped[0, :, :, 2:], torch.tensor(expected, dtype=dtype, device=device))


def _reference_ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM with 3x3 windows clipped at the border, by explicit loops (2-D arrays)."""
    height, width = a.shape
    out = np.zeros_like(a)
    for y in range(height):
        for x in range(width):
            wa = a[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].ravel()
            wb = b[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].ravel()
            mu_a, mu_b = wa.mean(), wb.mean()
            var_a, var_b = ((wa - mu_a) ** 2).mean(), ((wb - mu_b) ** 2).mean()
            cov = ((wa - mu_a) * (wb - mu_b)).mean()
            out[y, x] = ((2 * mu_a * mu_b + SSIM_C1) * (2 * cov + SSIM_C2)) / ((mu_a**2 + mu_b**2 + SSIM_C1) * (var_a + var_b + SSIM_C2))
    return out


def test_ssim_and_photometric_by_hand(device: torch.device, dtype: torch.dtype) -> None:
    # constant images a, b: variances and covariance vanish, SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b = 0.2, 0.6
    image_a = torch.full((1, 3, 2, 3), a, dtype=dtype, device=device)
    image_b = torch.full((1, 3, 2, 3), b, dtype=dtype, device=device)
    expected_ssim = (2 * a * b + SSIM_C1) / (a * a + b * b + SSIM_C1)
    torch.testing.assert_close(ssim(image_a, image_b), torch.full_like(image_a, expected_ssim), **tol(dtype))
    expected_error = 0.85 * (1 - expected_ssim) / 2 + 0.15 * abs(a - b)
    error = photometric_error(image_a, image_b)
    assert error.shape == (1, 1, 2, 3)
    torch.testing.assert_close(error, torch.full_like(error, expected_error), **tol(dtype))
    assert photometric_error(image_a, image_a).abs().max().item() == pytest.approx(0.0, abs=1e-6)
    # a non-constant 2x3 pair against explicit clipped-window loops
    left = np.array([[0.1, 0.5, 0.9], [0.2, 0.4, 0.8]])
    right = np.array([[0.5, 0.9, 0.3], [0.4, 0.7, 0.6]])
    got = ssim(tensor(left.tolist(), device, dtype), tensor(right.tolist(), device, dtype))[0, 0]
    torch.testing.assert_close(got, torch.tensor(_reference_ssim(left, right), dtype=dtype, device=device), **tol(dtype))


def test_reconstruction_loss_by_hand(device: torch.device, dtype: torch.dtype) -> None:
    left = tensor([[0.1, 0.5, 0.9], [0.2, 0.4, 0.8]], device, dtype)
    right = tensor([[0.5, 0.9, 0.3], [0.4, 0.7, 0.6]], device, dtype)
    # d = 1: column 0 is warped from outside; column 1 <- right column 0, column 2 <- right column 1
    # |L - L'| = |0.5-0.5|, |0.4-0.4|, |0.9-0.9|, |0.8-0.7| -> mean over the 4 valid pixels = 0.025
    loss = reconstruction_loss(left, right, torch.ones_like(left), alpha=0.0)
    assert loss.item() == pytest.approx(0.025, rel=1e-5)
    # d = 0 (identity warp) with alpha = 0.85 and constant images: the photometric formula
    a, b = 0.3, 0.7
    const_a, const_b = torch.full_like(left, a), torch.full_like(left, b)
    expected = 0.85 * (1 - (2 * a * b + SSIM_C1) / (a * a + b * b + SSIM_C1)) / 2 + 0.15 * abs(a - b)
    assert reconstruction_loss(const_a, const_b, torch.zeros_like(left)).item() == pytest.approx(expected, rel=1e-4)
    # valid excludes pixel (1, 2), the only one with an error above
    valid = torch.ones_like(left, dtype=torch.bool)
    valid[0, 0, 1, 2] = False
    assert reconstruction_loss(left, right, torch.ones_like(left), alpha=0.0, valid=valid).item() == 0.0


def test_reconstruction_recovers_true_shift(device: torch.device) -> None:
    generator = torch.Generator().manual_seed(3)
    wide = torch.rand(1, 3, 12, 30, generator=generator, dtype=torch.float64).to(device)
    left, right = wide[..., 4:24], wide[..., 7:27]  # right[x - 3] = wide[x + 4] = left[x]: d = 3
    losses = {d: reconstruction_loss(left, right, torch.full_like(left[:, :1], float(d))).item() for d in range(6)}
    assert losses[3] == pytest.approx(0.0, abs=1e-12)
    assert min(losses, key=losses.__getitem__) == 3 and all(losses[d] > 0.05 for d in losses if d != 3)


# ----------------------------------------------------------------------------- smoothness


def test_edge_aware_smoothness_by_hand(device: torch.device, dtype: torch.dtype) -> None:
    d = tensor([[1.0, 2.0, 4.0], [1.0, 3.0, 3.0]], device, dtype)
    gray = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.5, 0.5]], dtype=dtype, device=device)
    image = torch.stack([gray, 2 * gray])[None]  # channel mean of |gradient| = 1.5 |gradient of gray|
    # x pairs: |d_x| = 1, 2, 2, 0 with |I_x| = 0, 1, 0.5, 0 (gray)
    x_term = (1 * 1 + 2 * math.exp(-1.5 * 1) + 2 * math.exp(-1.5 * 0.5) + 0) / 4
    # y pairs: |d_y| = 0, 1, 1 with |I_y| = 0, 0.5, 0.5 (gray)
    y_term = (0 + math.exp(-1.5 * 0.5) + math.exp(-1.5 * 0.5)) / 3
    loss = edge_aware_smoothness(d, image, normalize=False)
    assert loss.item() == pytest.approx(x_term + y_term, rel=1e-6)
    # mean-normalised: disparity / (14 / 6), every gradient scales by 6 / 14
    assert edge_aware_smoothness(d, image).item() == pytest.approx((x_term + y_term) * 6 / 14, rel=1e-6)
    # and doubling the disparities does not change the normalised term
    assert edge_aware_smoothness(2 * d, image).item() == pytest.approx(edge_aware_smoothness(d, image).item(), rel=1e-6)
    # invalid pixel (0, 2) removes the pairs (0,1)-(0,2) in x and (0,2)-(1,2) in y
    valid = torch.ones_like(d, dtype=torch.bool)
    valid[0, 0, 0, 2] = False
    x_valid = (1 + 2 * math.exp(-1.5 * 0.5) + 0) / 3
    y_valid = (0 + math.exp(-1.5 * 0.5)) / 2
    assert edge_aware_smoothness(d, image, normalize=False, valid=valid).item() == pytest.approx(x_valid + y_valid, rel=1e-6)


# ----------------------------------------------------------------------------- left-right


def test_left_right_consistency_by_hand(device: torch.device, dtype: torch.dtype) -> None:
    d_left = torch.ones((1, 1, 2, 3), dtype=dtype, device=device)
    d_right = tensor([[0.5, 3.0, 9.0], [1.0, 2.0, 7.0]], device, dtype)
    # x = 1 sees d_r(0), x = 2 sees d_r(1); x = 0 comes from outside
    expected = (abs(1 - 0.5) + abs(1 - 3.0) + abs(1 - 1.0) + abs(1 - 2.0)) / 4
    assert left_right_consistency(d_left, d_right).item() == pytest.approx(expected, rel=1e-6)
    # a consistent pair: a fronto-parallel plane seen from both views
    plane = torch.full((1, 1, 2, 5), 2.0, dtype=dtype, device=device)
    assert left_right_consistency(plane, plane).item() == 0.0


def test_mirrored_right_disparity(device: torch.device) -> None:
    generator = torch.Generator().manual_seed(4)
    left = torch.rand(2, 3, 4, 6, generator=generator).to(device)
    right = torch.rand(2, 3, 4, 6, generator=generator).to(device)
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def fake_network(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        calls.append((a, b))
        return a[:, :1] + 10 * b[:, 1:2]  # "disparity" made of the reference and the other image

    result = mirrored_right_disparity(fake_network, left, right)
    assert torch.equal(calls[0][0], torch.flip(right, dims=[-1])) and torch.equal(calls[0][1], torch.flip(left, dims=[-1]))
    torch.testing.assert_close(result, right[:, :1] + 10 * left[:, 1:2])


# ----------------------------------------------------------------------------- weighted LCN


@pytest.mark.parametrize("window", [3, 5])
def test_local_mean_std_against_loops(device: torch.device, window: int) -> None:
    generator = np.random.default_rng(5)
    image = generator.random((5, 7))
    mean, std = local_mean_std(torch.tensor(image, device=device)[None, None], window=window)
    half = window // 2
    for y in range(5):
        for x in range(7):
            box = image[max(y - half, 0) : y + half + 1, max(x - half, 0) : x + half + 1]
            assert mean[0, 0, y, x].item() == pytest.approx(box.mean(), rel=1e-12)
            assert std[0, 0, y, x].item() == pytest.approx(math.sqrt(box.var() + 1e-8), rel=1e-10)


def test_weighted_lcn_by_hand(device: torch.device, dtype: torch.dtype) -> None:
    left = np.array([[0.1, 0.5, 0.9], [0.2, 0.4, 0.8]])
    right = np.array([[0.5, 0.9, 0.3], [0.4, 0.7, 0.6]])
    eps = 0.01
    # a 9x9 box covers the whole 2x3 image: local mean / std are the global ones
    std_l, std_r = math.sqrt(left.var() + 1e-8), math.sqrt(right.var() + 1e-8)
    lcn_l = (left - left.mean()) / (std_l + eps)
    lcn_r = (right - right.mean()) / (std_r + eps)
    expected = float(np.mean(std_l * np.abs(lcn_l - lcn_r)))  # d = 0: identity warp
    left_t, right_t = tensor(left.tolist(), device, dtype), tensor(right.tolist(), device, dtype)
    loss = weighted_lcn_loss(left_t, right_t, torch.zeros_like(left_t), eps=eps)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # d = 1: column c of the left view is compared with column c - 1 of the normalised right image
    expected_shift = float(np.mean(std_l * np.abs(lcn_l[:, 1:] - lcn_r[:, :2])))
    loss = weighted_lcn_loss(left_t, right_t, torch.ones_like(left_t), eps=eps)
    assert loss.item() == pytest.approx(expected_shift, rel=1e-5)
    # LCN removes gain and offset: a brighter, higher-contrast copy of the left image costs ~0
    same = weighted_lcn_loss(left_t, 0.5 * left_t + 0.2, torch.zeros_like(left_t), eps=1e-6)
    assert same.item() == pytest.approx(0.0, abs=1e-4)


# ----------------------------------------------------------------------------- l1


def test_l1_by_hand(device: torch.device, dtype: torch.dtype) -> None:
    d = tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], device, dtype)
    target = tensor([[1.5, float("nan"), 1.0], [4.0, 7.0, float("inf")]], device, dtype)
    # known: |1-1.5|, |3-1|, |4-4|, |5-7| -> 4.5 / 4
    assert l1_loss(d, target).item() == pytest.approx(4.5 / 4)
    valid = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.5, 1.0]], dtype=dtype, device=device)[None, None]
    # weights 1, 0, 1, 0.5 on the known pixels: (0.5 + 0 + 0.5 * 2) / 2.5
    assert l1_loss(d, target, valid=valid).item() == pytest.approx(1.5 / 2.5)
    d.requires_grad_(True)
    l1_loss(d, target).backward()
    assert d.grad is not None and torch.isfinite(d.grad).all()


# ----------------------------------------------------------------------------- gradients


def _random(shape: tuple[int, ...], low: float, high: float, seed: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    values = low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)
    return values.to(device).requires_grad_()


def test_gradcheck_guided(device: torch.device) -> None:
    d = _random((2, 1, 3, 4), 0.0, 1.0, 10, device)
    p = _random((2, 1, 3, 4), 2.0, 3.0, 11, device)
    c = _random((2, 1, 3, 4), 0.0, 1.0, 12, device)
    tau = _random((2,), 0.3, 0.7, 13, device)
    for weighting in ("mask", "confidence"):
        assert torch.autograd.gradcheck(
            lambda d, p, c, tau: guided_confidence_loss(d, p, c, tau, weighting=weighting, temperature=0.1),
            (d, p, c, tau),
        )
        assert torch.autograd.gradcheck(lambda d, p: guided_confidence_loss(d, p, c.detach(), 0.5, weighting=weighting), (d, p))


def test_gradcheck_reconstruction_and_wlcn(device: torch.device) -> None:
    left = _random((1, 2, 3, 6), 0.0, 1.0, 20, device)
    right = _random((1, 2, 3, 6), 0.0, 1.0, 21, device)
    d = _random((1, 1, 3, 6), 0.2, 2.8, 22, device)  # sampling positions away from integers in general
    assert torch.autograd.gradcheck(lambda left_, right_, d: reconstruction_loss(left_, right_, d), (left, right, d))
    assert torch.autograd.gradcheck(lambda left_, right_, d: weighted_lcn_loss(left_, right_, d, window=3), (left, right, d))
    assert torch.autograd.gradcheck(lambda left_, right_, d: weighted_lcn_loss(left_, right_, d), (left, right, d))


def test_gradcheck_smoothness_lr_l1(device: torch.device) -> None:
    d = _random((2, 1, 3, 5), 1.0, 4.0, 30, device)
    d_right = _random((2, 1, 3, 5), 0.0, 3.0, 31, device)
    image = _random((2, 3, 3, 5), 0.0, 1.0, 32, device)
    target = _random((2, 1, 3, 5), 5.0, 6.0, 33, device)
    for normalize in (True, False):
        assert torch.autograd.gradcheck(lambda d, i: edge_aware_smoothness(d, i, normalize=normalize), (d, image))
    d_small = _random((2, 1, 3, 5), 0.1, 1.4, 34, device)
    assert torch.autograd.gradcheck(left_right_consistency, (d_small, d_right))
    assert torch.autograd.gradcheck(lambda d, t: l1_loss(d, t), (d, target))


# ----------------------------------------------------------------------------- registry


def test_build_loss_terms_parses_weights() -> None:
    terms = build_loss_terms(" guided=1, smooth=0.1 ,reconstruction , wlcn=0")
    assert [(t.name, t.weight) for t in terms] == [("guided", 1.0), ("smooth", 0.1), ("reconstruction", 1.0), ("wlcn", 0.0)]
    assert {"guided", "reconstruction", "smooth", "lr", "wlcn", "l1"} <= set(LOSSES)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("guided=1,smoth=0.1", "unknown loss 'smoth'"),
        ("guided=abc", "must be a number"),
        ("guided=-1", ">= 0"),
        ("guided=nan", ">= 0"),
        ("guided=1,guided=2", "twice"),
        (" , ", "empty"),
    ],
)
def test_build_loss_terms_errors(spec: str, message: str) -> None:
    with pytest.raises(InputError, match="--loss") as error:
        build_loss_terms(spec)
    assert message in str(error.value)


def test_register_custom_loss_and_missing_inputs() -> None:
    @register_loss("test_mean_disparity")
    def _term(inputs: LossInputs) -> torch.Tensor:
        return inputs.disparity.mean()

    try:
        (term,) = build_loss_terms("test_mean_disparity=2")
        assert term(LossInputs(disparity=torch.full((1, 1, 2, 2), 3.0))).item() == 3.0
        with pytest.raises(ValueError, match="already registered"):
            register_loss("test_mean_disparity")(lambda inputs: inputs.disparity.sum())
    finally:
        del LOSSES["test_mean_disparity"]
    inputs = LossInputs(disparity=torch.ones(1, 1, 2, 3))
    for spec, missing in (("guided", "tau"), ("smooth", "left"), ("l1", "target"), ("lr", "right-view")):
        (term,) = build_loss_terms(spec)
        with pytest.raises(InputError, match=missing):
            term(inputs)
