"""Stereo network registry, shapes, padding and disparity convention."""

from __future__ import annotations

import pytest
import torch

from pseudolabel.errors import InputError
from pseudolabel.models.madnet import horizontal_correlation
from pseudolabel.models.registry import StereoOutput, available_networks, build_network
from pseudolabel.models.warp import warp_right_to_left


def test_registry_lists_and_builds_networks() -> None:
    names = available_networks()
    assert {"madnet", "tiny"} <= set(names)
    with pytest.raises(InputError, match="madnet"):
        build_network("no-such-net")


def test_madnet_has_paper_structure() -> None:
    net = build_network("madnet")
    assert net.size_multiple == 64
    assert [block[0][0].out_channels for block in net.encoder] == [16, 32, 64, 96, 128, 192]
    assert len(net.decoders) == 5  # levels 2..6
    parameters = sum(p.numel() for p in net.parameters())
    assert 3.0e6 < parameters < 4.5e6  # the paper reports ~3.8 M


@pytest.mark.parametrize("name,height,width", [("tiny", 37, 61), ("tiny", 8, 8), ("madnet", 45, 71)])
def test_any_input_size_is_padded_and_cropped_back(name: str, height: int, width: int) -> None:
    torch.manual_seed(0)
    net = build_network(name).eval()
    left, right = torch.rand(2, 3, height, width), torch.rand(2, 3, height, width)
    with torch.no_grad():
        output = net(left, right)
    assert isinstance(output, StereoOutput)
    assert output.disparity.shape == (2, 1, height, width)
    assert output["disparity"] is output.disparity
    assert len(output.multiscale) >= 3
    assert all(level.shape == (2, 1, height, width) for level in output.multiscale)
    assert (output.disparity >= 0).all()


def test_gray_input_matches_repeated_rgb() -> None:
    torch.manual_seed(0)
    net = build_network("tiny").eval()
    gray_left, gray_right = torch.rand(1, 1, 24, 40), torch.rand(1, 1, 24, 40)
    with torch.no_grad():
        a = net(gray_left, gray_right).disparity
        b = net(gray_left.repeat(1, 3, 1, 1), gray_right.repeat(1, 3, 1, 1)).disparity
    torch.testing.assert_close(a, b)


def test_padding_does_not_leak_into_the_batch() -> None:
    """Each image of a batch gets the same result alone and batched (no cross-talk)."""
    torch.manual_seed(1)
    net = build_network("tiny").eval()
    left, right = torch.rand(3, 3, 21, 35), torch.rand(3, 3, 21, 35)
    with torch.no_grad():
        batched = net(left, right).disparity
        single = net(left[1:2], right[1:2]).disparity
    torch.testing.assert_close(batched[1:2], single, atol=1e-5, rtol=1e-5)


def test_warp_samples_right_image_at_x_minus_d() -> None:
    right = torch.arange(10, dtype=torch.float32).view(1, 1, 1, 10).repeat(1, 1, 3, 1)
    disparity = torch.full((1, 1, 3, 10), 2.5)
    warped, _ = warp_right_to_left(right, disparity)
    # x - 2.5 for x >= 3; column 2 samples -0.5 (half outside: zero padding gives half of column 0 = 0).
    torch.testing.assert_close(warped[0, 0, 1, 3:], torch.arange(3, 10, dtype=torch.float32) - 2.5)


def test_correlation_peaks_at_the_true_residual_shift() -> None:
    torch.manual_seed(0)
    right = torch.randn(1, 64, 6, 30)
    shift = 1
    left = torch.zeros_like(right)
    left[..., shift:] = right[..., :-shift]  # left(x) = right(x - 1): disparity 1
    correlation = horizontal_correlation(left, right, radius=2)
    assert correlation.shape == (1, 5, 6, 30)
    # channel index radius + shift holds the match, away from the borders
    assert (correlation[0, :, :, 4:26].argmax(dim=0) == 2 + shift).all()


def test_shipped_madnet_loads_by_name_without_other_files() -> None:
    from pseudolabel.learn.checkpoint import (
        load_checkpoint,
        load_model,
        resolve_model_path,
    )

    path = resolve_model_path("madnet_synth")
    assert path.name == "madnet_synth.pt" and path.with_suffix(".md").is_file()
    payload = load_checkpoint("madnet_synth")
    assert payload["arch"] == "madnet" and payload["step"] > 0 and payload["training_args"]["synth"] is True
    assert payload["optimizer"] is None  # shipped weights carry no optimiser state
    net = load_model("madnet_synth")
    with torch.no_grad():
        output = net(torch.rand(1, 3, 50, 90), torch.rand(1, 3, 50, 90))
    assert output.disparity.shape == (1, 1, 50, 90) and torch.isfinite(output.disparity).all()


def test_initialisation_keeps_feature_scale_through_the_pyramid() -> None:
    """With PyTorch's default init the level-6 features shrank to std ~0.01 and training stalled (model card)."""
    from pseudolabel.models.registry import normalize_images

    torch.manual_seed(0)
    net = build_network("madnet")
    features = normalize_images(torch.rand(1, 3, 128, 256))
    with torch.no_grad():
        for block in net.encoder:
            features = block(features)
            assert 0.3 < float(features.std()) < 3.0
