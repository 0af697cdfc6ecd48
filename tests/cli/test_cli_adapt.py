"""`pseudolabel adapt` end to end: a tiny network adapted for a few steps on small synthetic pairs
written into a proxies file (proxies = ground truth corrupted where the confidence is low), the
checkpoint contents, exact resume, the mirrored pass of the lr loss, the dataset, and user errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

from pseudolabel.cli.main import main
from pseudolabel.io import write_image, write_pfm
from pseudolabel.learn.adaptation_data import (
    ProxyAdaptationDataset,
    load_adaptation_pairs,
)
from pseudolabel.learn.checkpoint import load_checkpoint, load_model, save_checkpoint
from pseudolabel.learn.predict import evaluate_network
from pseudolabel.learn.samples import AugmentConfig
from pseudolabel.models.registry import build_network
from pseudolabel.sgm.params import SGMParams
from pseudolabel.store.journal import create_or_open_proxies
from pseudolabel.store.layout import RESULT_DATASETS, pair_attributes
from pseudolabel.store.proxies import open_proxies
from pseudolabel.synth.scene import SynthConfig, render_pair

HEIGHT, WIDTH, MAX_DISP = 48, 80, 12.0
KEYS = ("p0", "p1", "p2")
# common options of the short runs: a 2-step cosine-free run on 32 x 48 crops, one thread
FAST = ["--crop", "32x48", "--batch-size", "2", "--threads", "1", "--quiet", "--schedule", "constant", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three small synthetic pairs on disk, their proxies file and a tiny source network.

    Proxy = ground truth, except in a band where it is off by 8 px; the ``ccnn`` confidence is 0.9
    on correct proxies and 0.1 on the corrupted band (``apkr`` exists too, so a missing measure
    can be asked for by name).
    """
    root = tmp_path_factory.mktemp("adapt")
    config = SynthConfig(width=WIDTH, height=HEIGHT, max_disp=MAX_DISP, min_disp=1.0, min_objects=2, max_objects=3)
    proxies = root / "proxies.h5"
    with create_or_open_proxies(proxies, SGMParams(max_disp=16)) as store:
        for index, key in enumerate(KEYS):
            pair = render_pair(config, 100 + index)
            folder = root / "images" / key
            folder.mkdir(parents=True)
            write_image(folder / "left.png", pair.left)
            write_image(folder / "right.png", pair.right)
            write_pfm(folder / "gt.pfm", pair.disp_left)
            proxy = pair.disp_left.copy()
            confidence = np.full(proxy.shape, 0.9, dtype=np.float32)
            proxy[:, WIDTH // 2 : WIDTH // 2 + 12] += 8.0
            confidence[:, WIDTH // 2 : WIDTH // 2 + 12] = 0.1
            arrays = {name: np.zeros(proxy.shape, dtype=dtype) for name, dtype in RESULT_DATASETS.items()}
            arrays.update(disparity=proxy, valid=np.ones(proxy.shape, dtype=bool), disparity_right=pair.disp_right)
            # paths relative to the proxies file's folder: the dataset resolves them from there
            attrs = pair_attributes(
                key,
                f"images/{key}/left.png",
                f"images/{key}/right.png",
                SGMParams(max_disp=16),
                proxy.shape,
                arrays["valid"],
                gt_left=f"images/{key}/gt.pfm",
                gt_scale=1.0,
            )
            store.write_pair(key, arrays, attrs)
            store.write(key, "confidence/ccnn", confidence)
            store.write(key, "confidence/apkr", np.full(proxy.shape, 0.5, dtype=np.float32))
    torch.manual_seed(0)
    network = build_network("tiny")
    source = root / "source.pt"
    save_checkpoint(source, {"arch": "tiny", "arch_kwargs": {}, "model": network.state_dict(), "step": 0})
    return {"root": root, "proxies": proxies, "source": source}


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["adapt", *args], catch_exceptions=False)


def base_args(workspace: dict[str, Path], out: Path) -> list[str]:
    return ["--proxies", str(workspace["proxies"]), "--model", str(workspace["source"]), "--out", str(out)]


def state_equal(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_learnable_tau_is_trained_logged_and_stored(workspace: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "adapted.pt"
    result = run(*base_args(workspace, out), "--tau", "learnable", "--steps", "3", "--tau-lr-scale", "50", "--lr", "1e-3", *FAST)
    assert result.exit_code == 0, result.output
    assert f"-> {out}" in result.output
    payload = load_checkpoint(out)
    assert payload["arch"] == "tiny" and payload["step"] == 3
    source = load_checkpoint(workspace["source"])["model"]
    assert not state_equal(payload["model"], source), "the network was not updated"
    theta = payload["extra_modules"]["tau"]["theta"]
    tau = float(torch.sigmoid(theta))
    assert 0.0 < tau < 1.0 and abs(tau - 0.5) > 1e-4, "tau received no gradient"
    assert payload["extra_state"]["adaptation"]["tau"]["kind"] == "learnable"
    assert payload["extra_state"]["adaptation"]["tau"]["value"] == pytest.approx(tau, abs=1e-6)
    assert payload["training_args"]["command"] == "adapt" and payload["training_args"]["measure"] == "ccnn"
    # tau has its own optimiser group, 50x the network's learning rate
    groups = payload["optimizer"]["param_groups"]
    assert len(groups) == 2
    assert groups[1]["lr"] == pytest.approx(50 * groups[0]["lr"]) and groups[0]["lr"] == pytest.approx(1e-3)
    # one metrics line per step, each with the tau used at that step
    lines = [__import__("json").loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3]
    assert all(0 < line["tau"] < 1 and "loss/guided" in line for line in lines)
    assert lines[0]["tau"] == pytest.approx(0.5, abs=1e-6)  # the first step uses the initial tau
    # the adapted checkpoint is a normal network checkpoint
    model = load_model(out)
    pairs = load_adaptation_pairs(workspace["proxies"], "ccnn", with_ground_truth=True)
    rows = evaluate_network(model, pairs)
    assert [row["key"] for row in rows] == list(KEYS) and all(np.isfinite(row["bad3"]) for row in rows)


def test_resume_continues_exactly(workspace: dict[str, Path], tmp_path: Path) -> None:
    straight = tmp_path / "straight.pt"
    assert run(*base_args(workspace, straight), "--steps", "4", *FAST).exit_code == 0
    split = tmp_path / "split.pt"
    assert run(*base_args(workspace, split), "--steps", "2", *FAST).exit_code == 0
    refused = run(*base_args(workspace, split), "--steps", "4", *FAST)
    assert refused.exit_code == 1 and "--resume" in refused.output
    resumed = run(*base_args(workspace, split), "--steps", "4", "--resume", *FAST)
    assert resumed.exit_code == 0, resumed.output
    first, second = load_checkpoint(straight), load_checkpoint(split)
    assert second["step"] == 4
    assert state_equal(first["model"], second["model"])
    assert state_equal(first["extra_modules"]["tau"], second["extra_modules"]["tau"])


def test_fixed_tau_net_tau_and_every_loss_with_the_mirrored_pass(workspace: dict[str, Path], tmp_path: Path) -> None:
    fixed = tmp_path / "fixed.pt"
    result = run(*base_args(workspace, fixed), "--tau", "0.8", "--steps", "2", "--weighting", "confidence", *FAST)
    assert result.exit_code == 0, result.output
    payload = load_checkpoint(fixed)
    assert payload["extra_state"]["adaptation"]["tau"] == {"kind": "fixed", "temperature": None, "tau": 0.8}
    assert len(payload["optimizer"]["param_groups"]) == 1  # nothing to learn in a fixed tau
    mixed = tmp_path / "mixed.pt"
    loss = "guided=1,reconstruction=0.5,smooth=0.1,lr=0.2,wlcn=0.1,l1=0.1"
    result = run(*base_args(workspace, mixed), "--tau", "net", "--loss", loss, "--steps", "2", *FAST)
    assert result.exit_code == 0, result.output
    lines = mixed.with_suffix(".jsonl").read_text().splitlines()
    record = __import__("json").loads(lines[-1])
    for name in ("guided", "reconstruction", "smooth", "lr", "wlcn", "l1"):
        assert np.isfinite(record[f"loss/{name}"]) and record[f"loss/{name}"] >= 0
    assert record["loss/lr"] > 0  # the mirrored pass produced a right-view disparity
    assert any(key.startswith("layers.") for key in load_checkpoint(mixed)["extra_modules"]["tau"])


def test_mirrored_forward_gives_the_networks_right_view_disparity() -> None:
    from pseudolabel.learn.adapt import MirroredForward

    torch.manual_seed(0)
    network = build_network("tiny").eval()
    left, right = torch.rand(2, 3, 32, 48), torch.rand(2, 3, 32, 48)
    forward = MirroredForward()
    with torch.no_grad():
        output = forward(network, {"left": left, "right": right})
        direct = network(left, right)
        mirrored = network(torch.flip(right, dims=[-1]), torch.flip(left, dims=[-1]))
    torch.testing.assert_close(output.disparity, direct.disparity, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(forward.predict(None, None).disparity, mirrored.disparity, atol=1e-5, rtol=1e-5)


def test_dataset_crops_pads_and_repeats_deterministically(workspace: dict[str, Path]) -> None:
    pairs = load_adaptation_pairs(workspace["proxies"], "ccnn", use_valid=True, with_ground_truth=True)
    dataset = ProxyAdaptationDataset(pairs, crop=(32, 40), seed=3)
    sample = dataset[5]
    assert sample["left"].shape == (3, 32, 40) and sample["left"].dtype == torch.float32
    assert sample["proxy"].shape == sample["confidence"].shape == sample["proxy_valid"].shape == (1, 32, 40)
    assert 0 <= float(sample["left"].min()) and float(sample["left"].max()) <= 1
    again = ProxyAdaptationDataset(pairs, crop=(32, 40), seed=3)[5]
    assert all(torch.equal(sample[key], again[key]) for key in sample if key != "proxy")
    assert torch.equal(torch.isnan(sample["proxy"]), torch.isnan(again["proxy"]))
    # the crop is a window of the pair: its proxy values appear in the stored proxy at one offset
    pair = pairs[dataset.pair_index(5)]
    window = sample["proxy"][0].numpy()
    matches = [
        (top, left)
        for top in range(HEIGHT - 32 + 1)
        for left in range(WIDTH - 40 + 1)
        if np.array_equal(pair.proxy[top : top + 32, left : left + 40], window)
    ]
    assert len(matches) == 1
    # every pair is seen once per epoch
    assert sorted(dataset.pair_index(i) for i in range(6, 9)) == [0, 1, 2]
    # a crop larger than the image is padded: NaN proxy, zero confidence and images, no ground truth
    padded = ProxyAdaptationDataset(pairs, crop=(HEIGHT + 4, WIDTH + 6), seed=0)[0]
    assert padded["left"].shape == (3, HEIGHT + 4, WIDTH + 6)
    assert torch.isnan(padded["proxy"][0, HEIGHT:]).all() and torch.isnan(padded["proxy"][0, :, WIDTH:]).all()
    assert float(padded["confidence"][0, HEIGHT:].abs().sum()) == 0 and not padded["valid"][0, :, WIDTH:].any()
    assert torch.isfinite(padded["proxy"][0, :HEIGHT, :WIDTH]).all()
    # whole images for evaluation
    whole = ProxyAdaptationDataset(pairs, crop=None, shuffle=False)[1]
    assert whole["left"].shape == (3, HEIGHT, WIDTH)
    assert np.allclose(whole["disparity"][0].numpy(), pairs[1].ground_truth)


def test_augmentation_changes_the_views_only_and_repeats_with_the_seed(workspace: dict[str, Path], tmp_path: Path) -> None:
    pairs = load_adaptation_pairs(workspace["proxies"], "ccnn")
    plain = ProxyAdaptationDataset(pairs, crop=None, shuffle=False)
    augmented = ProxyAdaptationDataset(pairs, crop=None, shuffle=False, augment=AugmentConfig())
    for index in range(4):
        before, after = plain[index], augmented[index]
        assert after["left"].shape == before["left"].shape and after["left"].dtype == torch.float32
        assert 0 <= float(after["left"].min()) and float(after["right"].max()) <= 1
        assert float((after["left"] - before["left"]).abs().mean()) > 1e-3  # the views change ...
        assert torch.equal(after["confidence"], before["confidence"])  # ... the labels do not
        assert torch.equal(torch.isnan(after["proxy"]), torch.isnan(before["proxy"]))
        assert torch.equal(torch.nan_to_num(after["proxy"]), torch.nan_to_num(before["proxy"]))
    again = ProxyAdaptationDataset(pairs, crop=None, shuffle=False, augment=AugmentConfig())
    assert torch.equal(again[2]["left"], augmented[2]["left"]) and torch.equal(again[2]["right"], augmented[2]["right"])
    assert not torch.equal(augmented[2]["left"], augmented[2 + len(pairs)]["left"])  # a fresh draw in the next epoch
    out = tmp_path / "aug.pt"
    result = run(*base_args(workspace, out), "--augment", "--steps", "1", *FAST)
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out)["training_args"]["augment"] is True


def test_keys_and_exclude_options_select_pairs(workspace: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "one.pt"
    result = run(*base_args(workspace, out), "--keys", "p1", "--steps", "1", *FAST)
    assert result.exit_code == 0 and "on 1 pair(s)" in result.output
    assert load_checkpoint(out)["training_args"]["data"]["keys"] == ["p1"]
    result = run(*base_args(workspace, tmp_path / "two.pt"), "--exclude", "p1", "--steps", "1", *FAST)
    assert result.exit_code == 0 and "on 2 pair(s)" in result.output
    assert load_checkpoint(tmp_path / "two.pt")["training_args"]["data"]["keys"] == ["p0", "p2"]
    result = run(*base_args(workspace, tmp_path / "none.pt"), "--keys", "zz*", "--steps", "1", *FAST)
    assert result.exit_code == 1 and "--keys 'zz*'" in result.output


def test_pairs_is_a_deprecated_alias_of_keys(workspace: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "alias.pt"
    result = run(*base_args(workspace, out), "--pairs", "p1", "--steps", "1", *FAST)
    assert result.exit_code == 0 and "on 1 pair(s)" in result.output and "deprecated" in result.output
    assert load_checkpoint(out)["training_args"]["data"]["keys"] == ["p1"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (["--measure", "wild"], "run `pseudolabel confidence score --proxies"),
        (["--model", "missing.pt"], "--model missing.pt: no such checkpoint file"),
        (["--proxies", "missing.h5"], "--proxies missing.h5: no such file"),
        (["--tau", "1.5"], "--tau must be in [0, 1)"),
        (["--tau", "sometimes"], "'learnable' or 'net'"),
        (["--loss", "guided=1,blur=2"], "--loss: unknown loss 'blur'"),
        (["--crop", "big"], "--crop 'big': write HEIGHTxWIDTH"),
        (["--steps", "0"], "--steps and --batch-size must be positive"),
        (["--tau-penalty", "-1", "--tau", "learnable"], "--tau-penalty must be a finite number >= 0"),
    ],
)
def test_user_errors_are_one_line_and_leave_the_output_alone(workspace: dict[str, Path], tmp_path: Path, change: list[str], expected: str) -> None:
    out = tmp_path / "kept.pt"
    out.write_bytes(b"previous result")
    # the changed options come last: click keeps the last value of a repeated option
    result = run(*base_args(workspace, out), "--overwrite", *FAST, *change)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0], result.output
    assert "Traceback" not in result.output
    assert out.read_bytes() == b"previous result"


def test_l1_needs_ground_truth(workspace: dict[str, Path], tmp_path: Path) -> None:
    proxies = tmp_path / "no_gt.h5"
    with open_proxies(workspace["proxies"]) as source, create_or_open_proxies(proxies, SGMParams(max_disp=16)) as store:
        key = KEYS[0]
        arrays = source.read(key, list(RESULT_DATASETS))
        attrs = {name: value for name, value in source.pair_attrs(key).items() if name not in ("gt_left", "gt_scale", "complete", "key")}
        attrs.update(left=str(workspace["root"] / attrs["left"]), right=str(workspace["root"] / attrs["right"]))
        store.write_pair(key, arrays, attrs)
        store.write(key, "confidence/ccnn", source.read(key, ["confidence/ccnn"])["confidence/ccnn"])
    result = run(
        "--proxies", str(proxies), "--model", str(workspace["source"]), "--out", str(tmp_path / "x.pt"), "--loss", "l1", "--steps", "1", *FAST
    )
    assert result.exit_code == 1 and "has no ground truth" in result.output
    # the same file adapts fine without l1 (absolute image paths are used as given)
    result = run("--proxies", str(proxies), "--model", str(workspace["source"]), "--out", str(tmp_path / "y.pt"), "--steps", "1", *FAST)
    assert result.exit_code == 0, result.output


def test_whole_images(workspace: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "full.pt"
    # the fixture's pairs share one size, so whole images can be batched
    result = run(*base_args(workspace, out), "--steps", "1", *FAST, "--crop", "full")
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out)["training_args"]["crop"] == "full"
    pairs = load_adaptation_pairs(workspace["proxies"], "ccnn")
    sample = ProxyAdaptationDataset(pairs, crop=None)[0]
    assert sample["left"].shape == (3, HEIGHT, WIDTH)
