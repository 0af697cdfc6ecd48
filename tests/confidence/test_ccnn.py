"""CCNN: shapes, patch / whole-image equivalence, training on synthetic errors, checkpoints, wild labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pseudolabel.confidence.checkpoints import load_confidence_checkpoint, save_confidence_checkpoint
from pseudolabel.confidence.sparsification import (
    error_mask,
    sparsification_auc,
)
from pseudolabel.confidence.targets import ground_truth_targets, wild_targets
from pseudolabel.confidence.training import TrainingConfig, TrainingPair, summarise_training_data, train_ccnn
from pseudolabel.errors import InputError
from pseudolabel.models.ccnn import CCNN, ConfidenceScorer, normalise_disparity
from pseudolabel.models.devices import bfloat16_supported

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_output_shapes() -> None:
    torch.manual_seed(0)
    model = CCNN().eval()
    assert model(torch.rand(3, 1, 9, 9)).shape == (3, 1, 1, 1)
    assert model(torch.rand(1, 1, 20, 31)).shape == (1, 1, 12, 23)
    assert model.forward_full(torch.rand(2, 1, 20, 31)).shape == (2, 1, 20, 31)
    # paper architecture: 4 conv 3x3 (64), 2 conv 1x1 (100), 1 conv 1x1 (1)
    convs = [layer for layer in model.layers if isinstance(layer, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.padding[0]) for c in convs] == [
        (1, 64, 3, 0),
        (64, 64, 3, 0),
        (64, 64, 3, 0),
        (64, 64, 3, 0),
        (64, 100, 1, 0),
        (100, 100, 1, 0),
        (100, 1, 1, 0),
    ]


def test_whole_image_equals_patchwise_with_reflection_padding() -> None:
    torch.manual_seed(1)
    model = CCNN(filters=16, fc_filters=24).eval()
    rng = np.random.default_rng(0)
    disparity = rng.uniform(0, 40, size=(17, 23)).astype(np.float32)
    normalised = normalise_disparity(disparity, 0, 64)
    padded = np.pad(normalised, 4, mode="reflect")
    patches = np.stack([padded[y : y + 9, x : x + 9] for y in range(17) for x in range(23)])[:, None]
    with torch.no_grad():
        patchwise = model(torch.from_numpy(patches)).reshape(17, 23).numpy()
        whole = model.forward_full(torch.from_numpy(normalised)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(whole, patchwise, rtol=1e-4, atol=1e-5)
    # the tiled scorer (5 rows per pass) gives the same logits
    scorer = ConfidenceScorer(model, "cpu", precision="float32", tile_rows=5)
    np.testing.assert_allclose(scorer.logits(disparity, 0, 64), patchwise, rtol=1e-4, atol=1e-5)
    confidence = scorer.confidence(disparity, 0, 64)
    assert confidence.dtype == np.float32 and confidence.min() >= 0 and confidence.max() <= 1


def _synthetic_pair(seed: int, shape: tuple[int, int] = (48, 64)) -> tuple[np.ndarray, np.ndarray]:
    """Smooth slanted disparity with 15% of pixels replaced by random values, and the true map."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    truth = (10 + 0.2 * cols + 0.1 * rows + 5 * (cols > shape[1] // 2)).astype(np.float32)
    proxy = truth.copy()
    wrong = rng.uniform(size=shape) < 0.15
    proxy[wrong] = rng.uniform(0, 60, size=int(wrong.sum()))
    return proxy, truth


def test_training_learns_to_spot_wrong_disparities_and_checkpoint_round_trip(tmp_path) -> None:
    pairs = []
    for seed in range(3):
        proxy, truth = _synthetic_pair(seed)
        pairs.append(TrainingPair.from_disparity(f"pair{seed}", proxy, ground_truth_targets(proxy, truth), 0, 64))
    config = TrainingConfig(epochs=4, steps_per_epoch=50, batch_size=8, crop=24, filters=16, fc_filters=16, learning_rate=1e-2, inputs=("disparity",))
    model, history = train_ccnn(pairs, config)
    assert len(history) == 4 and history[-1] < history[0]
    proxy, truth = _synthetic_pair(10)
    scorer = ConfidenceScorer(model, "cpu", precision="float32")
    confidence = scorer.confidence(proxy, 0, 64)
    bad, known = error_mask(proxy, truth)
    constant_auc = sparsification_auc(np.ones_like(confidence), bad, known)
    assert sparsification_auc(confidence, bad, known) < 0.5 * constant_auc

    path = tmp_path / "ccnn.pt"
    summary = summarise_training_data(pairs)
    assert summary["pairs"] == 3 and 0.8 < summary["positive_fraction"] < 0.9
    save_confidence_checkpoint(path, model, {"epochs": 4}, summary, history)
    loaded, checkpoint = load_confidence_checkpoint(path)
    assert checkpoint["architecture"] == "ccnn" and checkpoint["arch_kwargs"] == {"filters": 16, "fc_filters": 16, "inputs": ["disparity"]}
    assert checkpoint["training_args"] == {"epochs": 4} and checkpoint["data_summary"]["keys"] == ["pair0", "pair1", "pair2"]
    assert checkpoint["version"]
    np.testing.assert_array_equal(ConfidenceScorer(loaded, "cpu", precision="float32").logits(proxy, 0, 64), scorer.logits(proxy, 0, 64))

    if bfloat16_supported():  # the fast CPU path ranks pixels like float32
        half = ConfidenceScorer(model, "cpu", precision="bfloat16").confidence(proxy, 0, 64)
        assert np.corrcoef(half.ravel(), confidence.ravel())[0, 1] > 0.99
        assert sparsification_auc(half, bad, known) == pytest.approx(sparsification_auc(confidence, bad, known), abs=0.01)


def test_training_is_deterministic_for_a_seed() -> None:
    proxy, truth = _synthetic_pair(0)
    pairs = [TrainingPair.from_disparity("p", proxy, ground_truth_targets(proxy, truth), 0, 64)]
    config = TrainingConfig(epochs=1, steps_per_epoch=3, batch_size=4, crop=16, filters=8, fc_filters=8, seed=7, inputs=("disparity",))
    first, _ = train_ccnn(pairs, config)
    second, _ = train_ccnn(pairs, config)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


def test_training_reports_every_epoch_through_progress() -> None:
    proxy, truth = _synthetic_pair(0)
    pairs = [TrainingPair.from_disparity("p", proxy, ground_truth_targets(proxy, truth), 0, 64)]
    config = TrainingConfig(epochs=2, steps_per_epoch=3, batch_size=2, crop=16, filters=4, fc_filters=4, inputs=("disparity",))
    calls: list[tuple[str, object]] = []

    class Recorder:
        def start(self, label: str, total: int, done: int = 0) -> None:
            calls.append(("start", (label, total)))

        def advance(self, count: int = 1, status: str = "") -> None:
            calls.append(("advance", status))

        def finish(self) -> None:
            calls.append(("finish", None))

    _, history = train_ccnn(pairs, config, progress=Recorder())
    assert [value for kind, value in calls if kind == "start"] == [("epoch 1/2", 3), ("epoch 2/2", 3)]
    statuses = [value for kind, value in calls if kind == "advance"]
    assert len(statuses) == 6 and all(str(status).startswith("loss ") for status in statuses)
    assert statuses[-1] == f"loss {history[-1]:.4f}" and [kind for kind, _ in calls].count("finish") == 2


def test_ground_truth_targets() -> None:
    proxy = np.array([[1.0, 5.0, 9.0]], np.float32)
    truth = np.array([[4.0, 1.0, np.nan]], np.float32)
    targets = ground_truth_targets(proxy, truth)
    np.testing.assert_array_equal(targets[0, :2], [1.0, 0.0])
    assert np.isnan(targets[0, 2])


def test_wild_targets_agreement_of_measures() -> None:
    # 10 pixels; APKR and WMN rank them, LRC / uniqueness / DBL / MED pass or fail.
    apkr = np.arange(10, dtype=np.float32)[None] / 10  # 0.0 .. 0.9
    wmn = apkr.copy()
    wmn[0, 9] = 0.05  # pixel 9 is top in APKR but bottom in WMN
    ones = np.ones((1, 10), np.float32)
    lrc = ones.copy()
    lrc[0, 8] = 0.0  # pixel 8 fails the left-right check
    lrc[0, :2] = 0.0
    measures = {"lrc": lrc, "uniqueness": ones.copy(), "dbl": ones.copy(), "med": ones.copy(), "apkr": apkr, "wmn": wmn}
    measures["uniqueness"][0, 1] = 0.0
    targets = wild_targets(measures, fraction=0.3)
    # top 30%: apkr >= q(0.7) = 0.63 -> pixels 7, 8, 9; wmn top: 6, 7, 8 (q = 0.63 of wmn values)
    # positives: top in both (7, 8) and pass lrc (not 8) -> {7}
    # bottom 30%: apkr <= q(0.3) = 0.27 -> 0, 1, 2; wmn bottom: 0, 1, 9 (and 2?) ; fail lrc (0, 1) and uniqueness (1) -> {1}
    expected = np.full(10, np.nan, np.float32)
    expected[7] = 1.0
    expected[1] = 0.0
    np.testing.assert_array_equal(targets[0], expected)
    with pytest.raises(InputError, match="wild-fraction"):
        wild_targets(measures, fraction=1.5)


def test_scoring_a_pair_with_unknown_disparities_gives_the_network_the_same_inputs_whatever_is_stored() -> None:
    """An imported disparity is NaN where its matcher gave none: the stored measures are 0 there, while the network
    reads the measures as computed, so its confidence does not change with the measures stored beside it."""
    from pseudolabel.confidence.checkpoints import NetworkRecipe
    from pseudolabel.confidence.measures import compute_measures
    from pseudolabel.confidence.scoring import NETWORK_RESULT, ScorePayload, score_pair
    from pseudolabel.sgm.params import SGMParams

    rng = np.random.default_rng(5)
    shape = (23, 41)
    disparity = rng.integers(0, 8, size=shape).astype(np.float32)
    disparity_right = np.where(rng.random(shape) < 0.8, disparity, disparity + 3).astype(np.float32)
    unknown = np.zeros(shape, bool)
    unknown[5:11, 7:19] = True
    features = {"disparity": np.where(unknown, 0, disparity).astype(np.float32), "disparity_right": disparity_right}
    params = SGMParams(min_disp=0, max_disp=16)
    torch.manual_seed(0)
    recipe = NetworkRecipe(CCNN(filters=8, fc_filters=8, inputs=("disparity", "lrc", "alrc15", "dlrc")).eval(), None, "cpu", "float32")
    confidences = {
        stored: score_pair(recipe, ScorePayload(features, params, list(stored), True, unknown)) for stored in [(), ("lrc",), ("lrc", "dlrc")]
    }
    expected = recipe.scorer().confidence_from_features(features, params)
    expected[unknown] = 0
    for stored, result in confidences.items():
        np.testing.assert_array_equal(result[NETWORK_RESULT], expected, err_msg=str(stored))
        assert set(result) == {NETWORK_RESULT, *stored}
        for name in stored:
            computed = compute_measures([name], features, params)[name]
            np.testing.assert_array_equal(result[name], np.where(unknown, 0, computed), err_msg=name)
    assert confidences[("lrc",)]["lrc"][~unknown].min() == 0  # some known pixels fail the check, so zeroing matters


@pytest.mark.parametrize("architecture", ["ccnn", "lfn"])
def test_folding_an_input_map_into_the_network_gives_the_network_on_mapped_inputs(architecture: str) -> None:
    """Every registered architecture absorbs a per-channel ``(x - shift) * scale`` exactly (float64 folding, checked
    in float64 on a random odd-sized image, reflection padding included)."""
    from pseudolabel.models.ccnn import build_confidence_network

    inputs = ("disparity", "apkr", "image", "photometric") if architecture == "lfn" else ("disparity", "apkr", "lrc")
    torch.manual_seed(3)
    model = build_confidence_network(architecture, filters=6, fc_filters=8, inputs=inputs).double().eval()
    rng = np.random.default_rng(3)
    image = torch.from_numpy(rng.uniform(size=(1, len(inputs), 23, 31)))
    shift, scale = rng.normal(size=len(inputs)), rng.uniform(0.5, 20, size=len(inputs))
    with torch.no_grad():
        expected = model.forward_full((image - torch.from_numpy(shift)[None, :, None, None]) * torch.from_numpy(scale)[None, :, None, None])
        model.fold_input_affine(shift, scale)
        folded = model.forward_full(image)
    np.testing.assert_allclose(folded.numpy(), expected.numpy(), rtol=1e-10, atol=1e-10)


def test_input_standardisation_and_pair_weighting() -> None:
    """Shift and scale give each measure channel mean 0 and deviation 1 over all pixels (the disparity channel
    untouched, a nearly constant channel divided by the floor); crops draw every pair alike unless weighted by pixels."""
    from pseudolabel.confidence.training import STANDARDISATION_FLOOR, _CropSampler, input_standardisation

    rng = np.random.default_rng(4)
    small = np.stack([rng.uniform(size=(9, 11)), rng.normal(3, 2, size=(9, 11)), np.full((9, 11), 0.5)]).astype(np.float32)
    large = np.stack([rng.uniform(size=(31, 37)), rng.normal(3, 2, size=(31, 37)), np.full((31, 37), 0.5)]).astype(np.float32)
    large[2, 0, 0] = 0.51
    small_before = small.copy()
    pairs = [TrainingPair("small", small, np.ones((9, 11), np.float32)), TrainingPair("large", large, np.ones((31, 37), np.float32))]
    shift, scale = input_standardisation(pairs)
    pixels = np.concatenate([small.reshape(3, -1), large.reshape(3, -1)], axis=1).astype(np.float64)
    assert shift[0] == 0 and scale[0] == 1
    np.testing.assert_allclose(shift[1:], pixels[1:].mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(scale[1], 1 / pixels[1].std(), rtol=1e-9)
    assert scale[2] == 1 / STANDARDISATION_FLOOR
    by_pairs = _CropSampler(pairs, 8, np.random.default_rng(0), shift=shift, scale=scale)
    np.testing.assert_allclose(by_pairs.probabilities, [0.5, 0.5])
    by_pixels = _CropSampler(pairs, 8, np.random.default_rng(0), weighting="pixels")
    np.testing.assert_allclose(by_pixels.probabilities, [99 / (99 + 31 * 37), 31 * 37 / (99 + 31 * 37)])
    inputs, _ = by_pairs.batch(200)
    assert abs(float(inputs[:, 1].mean())) < 0.3 and 0.7 < float(inputs[:, 1].std()) < 1.3  # standardised crops
    np.testing.assert_array_equal(pairs[0].inputs, small_before)  # the pairs' arrays are not changed
    # a crop larger than the small pair: its edge padding repeats standardised values, the padded targets are unknown
    padded = _CropSampler(pairs[:1], 14, np.random.default_rng(0), shift=shift, scale=scale)
    inputs, targets = padded.batch(3)
    pad = padded.padding
    expected = (np.pad(small, ((0, 0), (pad, pad), (pad, pad)), mode="reflect") - shift[:, None, None]) * scale[:, None, None]
    np.testing.assert_allclose(inputs[0, :, : expected.shape[1], : expected.shape[2]].numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        inputs[0, :, expected.shape[1] :, : expected.shape[2]].numpy(), np.repeat(expected[:, -1:], 14 - 9, axis=1), rtol=1e-5, atol=1e-5
    )
    assert torch.isnan(targets[0, 0, 9:]).all() and torch.isfinite(targets[0, 0, :9, :11]).all()
    with pytest.raises(InputError, match="pair weighting"):
        _CropSampler(pairs, 8, np.random.default_rng(0), weighting="rows")


def test_a_network_trained_on_standardised_inputs_reads_raw_inputs() -> None:
    """The network returned after training on standardised inputs scores the raw inputs as the unfolded network
    scored the standardised ones: the folding is the only difference between the two."""
    from pseudolabel.confidence.training import input_standardisation

    rng = np.random.default_rng(8)
    proxy, truth = _synthetic_pair(1)
    extra = rng.normal(5, 3, size=proxy.shape).astype(np.float32)
    inputs = np.stack([normalise_disparity(proxy, 0, 64), extra])
    pairs = [TrainingPair("p", inputs, ground_truth_targets(proxy, truth))]
    config = TrainingConfig(
        epochs=1, steps_per_epoch=4, batch_size=4, crop=16, filters=8, fc_filters=8, seed=2, inputs=("disparity", "apkr"), standardise_inputs=True
    )
    states: list[dict] = []
    model, _ = train_ccnn(pairs, config, on_epoch=states.append)
    unfolded = CCNN(filters=8, fc_filters=8, inputs=("disparity", "apkr")).eval()
    unfolded.load_state_dict(states[-1]["model"])
    shift, scale = input_standardisation(pairs)
    standardised = ((inputs - shift[:, None, None]) * scale[:, None, None]).astype(np.float32)
    assert not np.allclose(model.state_dict()["layers.0.weight"], unfolded.state_dict()["layers.0.weight"])
    raw = ConfidenceScorer(model, "cpu", precision="float32").logits_from_inputs(inputs)
    np.testing.assert_allclose(raw, ConfidenceScorer(unfolded, "cpu", precision="float32").logits_from_inputs(standardised), rtol=1e-4, atol=1e-4)


def test_a_network_that_cannot_absorb_the_input_map_is_refused_before_training(monkeypatch: pytest.MonkeyPatch) -> None:
    model = CCNN(filters=4, fc_filters=4, inputs=("disparity", "apkr"))
    assert [channels for _, channels in model.foldable_input_convolutions()] == [[0, 1]]
    model.layers[0].padding = (1, 1)
    with pytest.raises(InputError, match="cannot absorb standardised inputs"):
        model.foldable_input_convolutions()

    class Bare(CCNN):
        def input_convolutions(self) -> list:  # type: ignore[type-arg]
            raise NotImplementedError

    import pseudolabel.confidence.training as training

    proxy, truth = _synthetic_pair(0)
    pairs = [TrainingPair.from_disparity("p", proxy, ground_truth_targets(proxy, truth), 0, 64)]
    config = TrainingConfig(
        epochs=1, steps_per_epoch=1, batch_size=2, crop=16, filters=4, fc_filters=4, inputs=("disparity",), standardise_inputs=True
    )
    monkeypatch.setattr(training, "build_confidence_network", lambda *args, **kwargs: Bare(filters=4, fc_filters=4))
    with pytest.raises(InputError, match="cannot absorb"):
        train_ccnn(pairs, config)
