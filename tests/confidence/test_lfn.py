"""LFN, the confidence network that reads the image: registry, patch / whole-image equivalence, image
channels, and training that learns from the photometric error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pseudolabel.confidence.images import epipolar_texture, normalised_image, photometric_error, warp_right
from pseudolabel.confidence.sparsification import error_mask, optimal_auc, sparsification_auc
from pseudolabel.confidence.targets import ground_truth_targets
from pseudolabel.confidence.training import TrainingConfig, TrainingPair, train_ccnn
from pseudolabel.errors import InputError
from pseudolabel.models.ccnn import CONFIDENCE_NETWORKS, ConfidenceScorer, available_confidence_networks, build_confidence_network, build_inputs
from pseudolabel.models.lfn import LateFusionNetwork

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_registered_and_built_by_name() -> None:
    assert "lfn" in available_confidence_networks() and CONFIDENCE_NETWORKS["lfn"] is LateFusionNetwork
    model = build_confidence_network("lfn", filters=8, fc_filters=8, inputs=["disparity", "apkr", "image", "photometric"])
    assert isinstance(model, LateFusionNetwork) and model.padding == 8
    assert model.config() == {"filters": 8, "fc_filters": 8, "inputs": ["disparity", "apkr", "image", "photometric"]}
    with pytest.raises(InputError, match="reads the image"):
        LateFusionNetwork(inputs=("disparity", "apkr"))
    with pytest.raises(InputError, match="must start with 'disparity'"):
        LateFusionNetwork(inputs=("image", "disparity"))
    with pytest.raises(InputError, match="unknown confidence network 'nope'; known: ccnn, lfn"):
        build_confidence_network("nope")


def test_whole_image_equals_patchwise_over_the_receptive_field() -> None:
    torch.manual_seed(0)
    model = LateFusionNetwork(filters=6, fc_filters=8, inputs=("disparity", "image", "photometric")).eval()
    side = 2 * model.padding + 1
    assert model(torch.rand(2, 3, side, side)).shape == (2, 1, 1, 1)
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(3, 13, 19)).astype(np.float32)
    padded = np.pad(inputs, ((0, 0), (8, 8), (8, 8)), mode="reflect")
    patches = np.stack([padded[:, y : y + side, x : x + side] for y in range(13) for x in range(19)])
    with torch.no_grad():
        patchwise = model(torch.from_numpy(patches)).reshape(13, 19).numpy()
        whole = model.forward_full(torch.from_numpy(inputs)[None])[0, 0].numpy()
    np.testing.assert_allclose(whole, patchwise, rtol=1e-4, atol=1e-5)
    # the scorer pads by the network's own padding, also in bands of 4 rows
    scorer = ConfidenceScorer(model, "cpu", precision="float32", tile_rows=4)
    assert scorer.padding == 8
    np.testing.assert_allclose(scorer.logits_from_inputs(inputs), patchwise, rtol=1e-4, atol=1e-5)
    # in bfloat16 (autocast, channels_last) the logits stay close and the ranking of pixels nearly the same
    half = ConfidenceScorer(model, "cpu", precision="bfloat16", tile_rows=4).logits_from_inputs(inputs)
    assert half.dtype == np.float32 and half.shape == patchwise.shape
    assert np.abs(half - patchwise).max() < 0.02 * max(1.0, float(np.abs(patchwise).max()))
    assert np.corrcoef(half.ravel(), patchwise.ravel())[0, 1] > 0.98
    # a change outside a pixel's 17x17 patch leaves it alone
    changed = inputs.copy()
    changed[:, 0, 0] += 5.0
    with torch.no_grad():
        moved = model.forward_full(torch.from_numpy(changed)[None])[0, 0].numpy()
    assert np.allclose(moved[9:, :], whole[9:, :]) and np.allclose(moved[:, 9:], whole[:, 9:]) and not np.allclose(moved, whole)


def _scene(seed: int, shape: tuple[int, int] = (48, 72)) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Textured left/right images of a fronto-parallel plane (d = 6) and a proxy with 20% wrong values."""
    rng = np.random.default_rng(seed)
    height, width = shape
    texture = rng.uniform(0, 1, size=(height, width + 16)).astype(np.float32)
    left = texture[:, 8 : width + 8].copy()
    right = texture[:, 14 : width + 14].copy()  # right(x - 6) = texture[x + 8] = left(x)
    truth = np.full(shape, 6.0, np.float32)
    proxy = truth.copy()
    wrong = rng.uniform(size=shape) < 0.2
    proxy[wrong] = rng.uniform(12, 30, size=int(wrong.sum()))
    return left, right, proxy, truth


def test_image_channels_and_warp() -> None:
    left, right, proxy, truth = _scene(0)
    warped, inside = warp_right(right, truth)
    np.testing.assert_allclose(warped[:, 6:], left[:, 6:], atol=1e-6)
    assert not inside[:, :6].any() and inside[:, 6:].all()
    error = photometric_error(left, right, truth)
    assert np.all(error[:, 6:] < 1e-4) and np.all(error[:, :6] == 4.0)
    assert abs(float(normalised_image(left).mean())) < 1e-5 and normalised_image(np.zeros((4, 4))).max() == 0.0

    class Params:
        min_disp, max_disp = 0, 32

    features = {"disparity": proxy, "left_gray": left, "right_gray": right}
    stacked = build_inputs(features, Params(), ("disparity", "image", "photometric"))
    assert stacked.shape == (3, *proxy.shape) and stacked.dtype == np.float32
    with pytest.raises(InputError, match="needs the pair's images"):
        build_inputs({"disparity": proxy}, Params(), ("disparity", "photometric"))


def _texture_reference(gray: np.ndarray, window: int) -> np.ndarray:
    """Plain loops: the mean of |I(x+1) - I(x-1)| / 2 (one-sided at the ends) over a reflected window, log2(1 + levels) / 4."""
    height, width = gray.shape
    gradient = np.zeros((height, width))
    for x in range(width):
        left, right = max(x - 1, 0), min(x + 1, width - 1)
        gradient[:, x] = np.abs(gray[:, right].astype(np.float64) - gray[:, left]) / (right - left)
    radius = window // 2
    rows = [abs(y) if y < 0 else (2 * (height - 1) - y if y >= height else y) for y in range(-radius, height + radius)]
    cols = [abs(x) if x < 0 else (2 * (width - 1) - x if x >= width else x) for x in range(-radius, width + radius)]
    padded = gradient[np.ix_(rows, cols)]
    out = np.zeros((height, width))
    for y in range(height):
        for x in range(width):
            out[y, x] = padded[y : y + window, x : x + window].mean()
    return np.log2(1.0 + 255.0 * out) / 4.0


def test_epipolar_texture_against_loops_and_on_stripes() -> None:
    rng = np.random.default_rng(3)
    gray = rng.uniform(0, 1, size=(23, 37)).astype(np.float32)
    for window in (3, 9):
        np.testing.assert_allclose(epipolar_texture(gray, window), _texture_reference(gray, window), rtol=1e-5, atol=1e-5)
    assert np.all(epipolar_texture(np.full((11, 13), 0.4, np.float32)) == 0.0)
    # horizontal stripes (constant along the rows) are blind to matching, vertical ones are not
    rows = np.indices((32, 40))[0]
    horizontal = ((rows // 3) % 2).astype(np.float32)
    vertical = np.ascontiguousarray(horizontal[:32, :32].T)
    assert np.all(epipolar_texture(horizontal) == 0.0)
    assert epipolar_texture(vertical).min() > 1.0  # a mean gradient above 15 levels per pixel
    features = {"disparity": np.zeros((32, 40), np.float32), "left_gray": horizontal, "right_gray": horizontal}

    class Params:
        min_disp, max_disp = 0, 32

    assert build_inputs(features, Params(), ("disparity", "texture")).shape == (2, 32, 40)


def test_training_learns_from_the_photometric_error() -> None:
    pairs = []
    for seed in range(3):
        left, right, proxy, truth = _scene(seed)
        features = {"disparity": proxy, "left_gray": left, "right_gray": right}

        class Params:
            min_disp, max_disp = 0, 32

        pairs.append(
            TrainingPair(f"p{seed}", build_inputs(features, Params(), ("disparity", "image", "photometric")), ground_truth_targets(proxy, truth))
        )
    config = TrainingConfig(
        epochs=4,
        steps_per_epoch=25,
        batch_size=8,
        crop=24,
        filters=8,
        fc_filters=8,
        learning_rate=1e-2,
        architecture="lfn",
        inputs=("disparity", "image", "photometric"),
    )
    model, history = train_ccnn(pairs, config)
    assert isinstance(model, LateFusionNetwork) and history[-1] < 0.7 * history[0]
    # on a scene it never saw, the ranking is within 3x of the optimal one (2.1x measured)
    left, right, proxy, truth = _scene(5)

    class Params5:
        min_disp, max_disp = 0, 32

    inputs = build_inputs({"disparity": proxy, "left_gray": left, "right_gray": right}, Params5(), config.inputs)
    confidence = ConfidenceScorer(model, "cpu", precision="float32").raw_confidence_from_inputs(inputs)
    bad, known = error_mask(proxy, truth)
    assert sparsification_auc(confidence, bad, known) < 3 * optimal_auc(float(bad[known].mean()))
