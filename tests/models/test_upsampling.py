"""Joint bilateral (guided) upsampling against a per-pixel loop reference, and its effect on MADNet."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pseudolabel.models.registry import build_network
from pseudolabel.models.upsampling import guided_upsample

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def reference_upsample(disparity: np.ndarray, image: np.ndarray, factor: int, sigma_space: float, sigma_color: float, radius: int) -> np.ndarray:
    """Plain loops: (h, w) disparity, (3, H, W) image -> (H, W), following the docstring's definition."""
    low_height, low_width = disparity.shape
    height, width = image.shape[1:]
    cell_colour = image.reshape(3, low_height, factor, low_width, factor).mean(axis=(2, 4))
    out = np.zeros((height, width))
    for y in range(height):
        for x in range(width):
            centre_y, centre_x = (y + 0.5) / factor - 0.5, (x + 0.5) / factor - 0.5
            total = weighted = 0.0
            for dy in range(-radius, radius + 1):
                for dx in range(-radius, radius + 1):
                    cell_y, cell_x = y // factor + dy, x // factor + dx
                    clamped_y, clamped_x = min(max(cell_y, 0), low_height - 1), min(max(cell_x, 0), low_width - 1)
                    spatial = math.exp(-((cell_y - centre_y) ** 2 + (cell_x - centre_x) ** 2) / (2 * sigma_space**2))
                    colour_distance = float(((cell_colour[:, clamped_y, clamped_x] - image[:, y, x]) ** 2).sum())
                    weight = spatial * (math.exp(-colour_distance / (2 * sigma_color**2)) + 1e-6)
                    total += weight
                    weighted += weight * disparity[clamped_y, clamped_x]
            out[y, x] = weighted / total * factor
    return out


@pytest.mark.parametrize(("low_height", "low_width", "factor", "radius", "sigma_color"), [(5, 7, 4, 1, 0.05), (3, 5, 3, 2, 0.2), (4, 3, 2, 1, 1.0)])
def test_matches_the_loop_reference_on_random_odd_sizes(low_height: int, low_width: int, factor: int, radius: int, sigma_color: float) -> None:
    rng = np.random.default_rng(low_height * 10 + low_width)
    disparity = rng.uniform(0, 20, (low_height, low_width))
    image = rng.uniform(0, 1, (3, low_height * factor, low_width * factor))
    expected = reference_upsample(disparity, image, factor, 1.3, sigma_color, radius)
    got = guided_upsample(
        torch.from_numpy(disparity)[None, None], torch.from_numpy(image)[None], factor, sigma_space=1.3, sigma_color=sigma_color, radius=radius
    )
    assert got.shape == (1, 1, low_height * factor, low_width * factor) and got.dtype == torch.float64
    np.testing.assert_allclose(got[0, 0].numpy(), expected, rtol=1e-10, atol=1e-10)


def test_constant_disparity_is_scaled_by_the_factor(device: torch.device) -> None:
    image = torch.rand(2, 3, 12, 20, device=device)
    out = guided_upsample(torch.full((2, 1, 3, 5), 2.5, device=device), image, 4)
    torch.testing.assert_close(out, torch.full((2, 1, 12, 20), 10.0, device=device))


def test_depth_edges_follow_the_colour_edge_where_bilinear_blurs_them() -> None:
    # A dark object (disparity 40 px) in front of a bright background (8 px); the edge at column 22
    # lies inside the quarter-resolution cell of columns 20-23.
    height, width, factor, edge = 16, 48, 4, 22
    truth = torch.full((1, 1, height, width), 8.0)
    truth[..., :edge] = 40.0
    image = torch.full((1, 3, height, width), 0.9)
    image[..., :edge] = 0.1
    low = F.avg_pool2d(truth, factor) / factor  # what a perfect quarter-resolution network could output
    guided = guided_upsample(low, image, factor)
    bilinear = F.interpolate(low, scale_factor=factor, mode="bilinear", align_corners=False) * factor
    guided_bad = int(((guided - truth).abs() > 3).sum())
    bilinear_bad = int(((bilinear - truth).abs() > 3).sum())
    assert bilinear_bad == height * 6  # columns 18-23 are off by more than 3 px
    # the mixed cell's mean colour (0.5) is far from both sides, so every pixel takes the disparity of
    # the neighbouring cells of its own colour
    assert guided_bad == 0
    torch.testing.assert_close(guided[..., :18], truth[..., :18])
    torch.testing.assert_close(guided[..., 26:], truth[..., 26:])


def test_gradcheck() -> None:
    generator = torch.Generator().manual_seed(3)
    disparity = torch.rand((1, 1, 3, 4), generator=generator, dtype=torch.float64).requires_grad_()
    image = torch.rand((1, 3, 6, 8), generator=generator, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda d: guided_upsample(d, image, 2, sigma_color=0.3), (disparity,))


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="not 4x"):
        guided_upsample(torch.zeros(1, 1, 3, 5), torch.zeros(1, 3, 12, 21), 4)


def test_madnet_upsampling_option() -> None:
    torch.manual_seed(0)
    guided = build_network("madnet").eval()
    bilinear = build_network("madnet", upsampling="bilinear").eval()
    bilinear.load_state_dict(guided.state_dict())  # no weights: the same checkpoint serves both
    assert guided.upsampling == "guided" and bilinear.upsampling == "bilinear"
    left, right = torch.rand(1, 3, 70, 90), torch.rand(1, 3, 70, 90)
    with torch.no_grad():
        a, b = guided(left, right), bilinear(left, right)
    assert a.disparity.shape == b.disparity.shape == (1, 1, 70, 90)
    assert not torch.allclose(a.multiscale[0], b.multiscale[0])
    for coarse_a, coarse_b in zip(a.multiscale[1:], b.multiscale[1:], strict=True):
        torch.testing.assert_close(coarse_a, coarse_b)
    with pytest.raises(ValueError, match="upsampling"):
        build_network("madnet", upsampling="nearest")
