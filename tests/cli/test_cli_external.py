"""Networks of the user's own in `pseudolabel adapt`, `predict`, `eval` and `train`, on the shipped scenes.

The README's own-network example (a network in a file of the user's) and its RAFT-Stereo adapter are
taken from the README itself and run as written: the adapter against a stand-in module with RAFT-Stereo's
call signature (`core/raft_stereo.py` in a temporary folder; nothing is downloaded). Every refusal is
one line, exit 1, and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

from pseudolabel.cli.main import main
from pseudolabel.io import read_disparity, read_pfm
from pseudolabel.learn.checkpoint import load_checkpoint, load_model
from pseudolabel.learn.samples import find_pairs
from pseudolabel.models.external import ExternalNetwork
from pseudolabel.sgm.params import SGMParams
from pseudolabel.store.journal import create_or_open_proxies
from pseudolabel.store.layout import RESULT_DATASETS, pair_attributes

REPO = Path(__file__).resolve().parents[2]
MIDDLEBURY = REPO / "tests" / "data" / "middlebury"
TSUKUBA, VENUS = MIDDLEBURY / "tsukuba", MIDDLEBURY / "venus"  # 288 x 384 and 383 x 434 (not a multiple of 32)
FAST = ["--crop", "64x96", "--batch-size", "1", "--threads", "1", "--quiet", "--schedule", "constant", "--device", "cpu"]
MODULES = ("mynet", "raft_adapter", "core", "core.raft_stereo", "pl_cli_nets", "pl_cli_broken")

pytestmark = pytest.mark.usefixtures("single_torch_thread")

# A stand-in with RAFT-Stereo's constructor and call signature: RAFTStereo(args), forward(image1, image2,
# iters=12, flow_init=None, test_mode=False); images in [0, 255] with sizes divisible by 32; it returns
# the list of upsampled flows (x_right - x_left < 0) of every iteration, or (low-res flow, last flow).
RAFT_STANDIN = """
import torch
from torch import nn
from torch.nn import functional as F

CALLS = []


class RAFTStereo(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.args = args
        width = args.hidden_dims[0] // 16
        self.factor = 2 ** args.n_downsample
        self.fnet = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.update = nn.Conv2d(2 * width + 1, 1, 3, padding=1)

    def forward(self, image1, image2, iters=12, flow_init=None, test_mode=False):
        CALLS.append({"shape": tuple(image1.shape), "max": float(image1.max()), "iters": iters, "test_mode": test_mode, "training": self.training})
        if image1.shape[-2] % 32 or image1.shape[-1] % 32:
            raise ValueError(f"image sizes must be divisible by 32, got {tuple(image1.shape[-2:])}")
        image1 = 2 * (image1 / 255.0) - 1.0
        image2 = 2 * (image2 / 255.0) - 1.0
        fmap1 = F.avg_pool2d(self.fnet(image1), self.factor)
        fmap2 = F.avg_pool2d(self.fnet(image2), self.factor)
        disparity = torch.ones_like(fmap1[:, :1])
        flow_predictions = []
        for itr in range(iters):
            disparity = F.softplus(disparity + self.update(torch.cat((fmap1, fmap2, disparity), dim=1)))
            if test_mode and itr < iters - 1:
                continue
            flow_up = -self.factor * F.interpolate(disparity, scale_factor=self.factor, mode="bilinear", align_corners=False)
            flow_predictions.append(flow_up)
        if test_mode:
            return torch.cat((-disparity, torch.zeros_like(disparity)), dim=1), flow_up
        return flow_predictions
"""

NETS = """
import torch
from torch import nn


class Constant(nn.Module):
    def __init__(self, value, channels):
        super().__init__()
        self.value = nn.Parameter(torch.tensor(float(value)))
        self.channels = channels

    def forward(self, left, right):
        return self.value * torch.ones_like(left[:, : self.channels])


def two_channels():
    return Constant(5.0, 2)


def flow():
    return Constant(-5.0, 1)
"""


def readme_block(first_line: str) -> str:
    """The README's Python block that starts with ``first_line``."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    found = [block for block in blocks if block.startswith(first_line)]
    assert len(found) == 1, f"README has no Python block starting with {first_line!r}"
    return found[0]


@pytest.fixture(scope="module")
def user_code(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder of user code on sys.path: the README's mynet.py and raft_adapter.py, the RAFT-Stereo stand-in, broken networks."""
    folder = tmp_path_factory.mktemp("user_code")
    (folder / "mynet.py").write_text(readme_block("# mynet.py"))
    (folder / "raft_adapter.py").write_text(readme_block("# raft_adapter.py"))
    (folder / "core").mkdir()
    (folder / "core" / "__init__.py").write_text("")
    (folder / "core" / "raft_stereo.py").write_text(textwrap.dedent(RAFT_STANDIN))
    (folder / "pl_cli_nets.py").write_text(textwrap.dedent(NETS))
    (folder / "pl_cli_broken.py").write_text('raise ImportError("needs the compiled extension sampler")\n')
    sys.path.insert(0, str(folder))
    try:
        yield folder
    finally:
        sys.path.remove(str(folder))
        for name in MODULES:
            sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def proxies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Proxies of tsukuba and venus: the ground truth, off by 6 px in a band where the confidence is low."""
    path = tmp_path_factory.mktemp("proxies") / "proxies.h5"
    params = SGMParams(max_disp=64)
    with create_or_open_proxies(path, params) as store:
        for pair in [*find_pairs([TSUKUBA]), *find_pairs([VENUS])]:
            assert pair.gt_left is not None
            truth = read_disparity(pair.gt_left, pair.gt_scale)
            proxy = truth.copy()
            confidence = np.where(np.isfinite(truth), 0.9, 0.0).astype(np.float32)
            band = slice(truth.shape[1] // 2, truth.shape[1] // 2 + 16)
            proxy[:, band] += 6.0
            confidence[:, band] = 0.1
            arrays = {name: np.zeros(proxy.shape, dtype=dtype) for name, dtype in RESULT_DATASETS.items()}
            arrays.update(disparity=proxy, valid=np.isfinite(proxy), disparity_right=proxy)
            attrs = pair_attributes(
                str(pair.key), pair.left, pair.right, params, proxy.shape, arrays["valid"], gt_left=pair.gt_left, gt_scale=pair.gt_scale
            )
            store.write_pair(str(pair.key), arrays, attrs)
            store.write(str(pair.key), "confidence/ccnn", confidence)
    return path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def assert_refused(result: Result, *expected: str) -> str:
    """Exit 1 and one ``Error:`` line holding every ``expected`` text; returns the line."""
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]


def nothing_written(folder: Path, out: Path) -> None:
    assert not out.exists() and not out.with_suffix(".jsonl").exists() and not out.with_suffix(".partial.pt").exists()
    assert sorted(path.name for path in folder.iterdir() if path != out) == [], list(folder.iterdir())


def test_a_network_in_a_file_of_ones_own_adapts_predicts_and_evaluates(user_code: Path, proxies: Path, tmp_path: Path) -> None:
    import mynet  # the README's example, from the user's folder

    torch.manual_seed(0)
    weights = tmp_path / "mynet.pth"
    torch.save(mynet.build(width=8).state_dict(), weights)
    adapted = tmp_path / "mine.pt"
    result = invoke(
        "adapt", "--proxies", str(proxies), "--model", "mynet:build", "--model-kwargs", '{"width": 8}', "--weights", str(weights),
        "--out", str(adapted), "--steps", "3", *FAST,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "adapted mynet:build on 2 pair(s) for 3 steps" in result.output
    payload = load_checkpoint(adapted)
    assert payload["arch"] == "external" and payload["step"] == 3
    assert payload["arch_kwargs"]["factory"] == "mynet:build" and payload["arch_kwargs"]["kwargs"] == {"width": 8}
    assert payload["arch_kwargs"]["adapter"]["inputs"] == "unit" and payload["arch_kwargs"]["adapter"]["sign"] == "positive"
    assert "--weights" in payload["training_args"]["source_model"]
    start = torch.load(weights, weights_only=True)
    assert set(payload["model"]) == {f"net.{key}" for key in start}
    assert not all(torch.equal(payload["model"][f"net.{key}"], value) for key, value in start.items()), "the network was not updated"

    # the checkpoint alone rebuilds it
    predicted = tmp_path / "pred"
    result = invoke("predict", "--model", str(adapted), "--in", str(TSUKUBA), "--out", str(predicted), "--device", "cpu")
    assert result.exit_code == 0 and "predicted 1 pair(s)" in result.output, result.output
    disparity = read_pfm(predicted / "tsukuba.pfm")
    assert disparity.shape == (288, 384) and np.isfinite(disparity).all() and (disparity >= 0).all()
    scores = tmp_path / "scores.json"
    result = invoke("eval", "--model", str(adapted), "--data", str(VENUS), "--device", "cpu", "--json", str(scores))
    assert result.exit_code == 0, result.output
    assert np.isfinite(json.loads(scores.read_text())["mean"]["bad3"])
    # and the factory itself (no checkpoint) predicts too
    result = invoke(
        "predict", "--model", "mynet:build", "--weights", str(weights), "--model-kwargs", '{"width": 8}', "--in", str(VENUS), "--out", str(predicted)
    )
    assert result.exit_code == 0 and read_pfm(predicted / "venus.pfm").shape == (383, 434), result.output


def test_train_builds_a_network_of_ones_own_from_its_factory(user_code: Path, tmp_path: Path) -> None:
    out = tmp_path / "trained.pt"
    result = invoke(
        "train", "--data", str(TSUKUBA), "--arch", "mynet:build", "--arch-kwargs", '{"width": 4}', "--out", str(out),
        "--steps", "2", "--crop", "64x96", "--batch-size", "1", "--quiet", "--device", "cpu", "--threads", "1",
    )  # fmt: skip
    assert result.exit_code == 0 and "trained mynet:build for 2 steps" in result.output, result.output
    payload = load_checkpoint(out)
    assert payload["arch"] == "external" and payload["arch_kwargs"]["kwargs"] == {"width": 4}
    network = load_model(out)
    assert isinstance(network, ExternalNetwork) and network.net.body[0].out_channels == 4  # type: ignore[index]
    # --init continues it, --arch must name the same factory
    again = invoke(
        "train", "--data", str(TSUKUBA), "--arch", "mynet:build", "--init", str(out), "--out", str(tmp_path / "more.pt"),
        "--steps", "1", "--crop", "64x96", "--batch-size", "1", "--quiet", "--device", "cpu",
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    other = invoke("train", "--data", str(TSUKUBA), "--arch", "tiny", "--init", str(out), "--out", str(tmp_path / "x.pt"), "--steps", "1")
    assert_refused(other, f"--init {out} is a 'mynet:build' network; use --arch mynet:build")


def test_the_readme_raft_stereo_adapter_on_a_stand_in(user_code: Path, proxies: Path, tmp_path: Path) -> None:
    import raft_adapter
    from core import raft_stereo

    calls = raft_stereo.CALLS
    calls.clear()
    # RAFT-Stereo's checkpoints are saved from DataParallel: "module." keys
    torch.manual_seed(1)
    model = raft_adapter.raft_stereo(hidden_dims=[64, 64, 64])
    weights = tmp_path / "raftstereo-standin.pth"
    torch.save({f"module.{key}": value for key, value in model.state_dict().items()}, weights)
    adapted = tmp_path / "raft.pt"
    kwargs = '{"iters": 3, "train_iters": 2, "hidden_dims": [64, 64, 64]}'
    result = invoke(
        "adapt", "--proxies", str(proxies), "--model", "raft_adapter:raft_stereo", "--model-kwargs", kwargs, "--weights", str(weights),
        "--out", str(adapted), "--steps", "3", "--scale-decay", "0.5", *FAST[:2], "--crop", "50x70", *FAST[2:],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    training = [call for call in calls if call["training"]]
    assert len(training) == 1 + 3  # the probe, then 3 steps
    assert all(call["iters"] == 2 and call["test_mode"] is False and call["shape"] == (1, 3, 64, 96) for call in training)
    assert all(150.0 < call["max"] <= 255.0 for call in calls)  # images in [0, 255]
    payload = load_checkpoint(adapted)
    adapter = payload["arch_kwargs"]["adapter"]
    assert adapter["sign"] == "negative" and adapter["multiple"] == 32 and adapter["freeze_batchnorm"] is True
    # batch norm stayed frozen: its statistics are the source's
    assert torch.equal(payload["model"]["net.fnet.1.running_mean"], model.state_dict()["fnet.1.running_mean"])
    assert not torch.equal(payload["model"]["net.update.weight"], model.state_dict()["update.weight"])

    calls.clear()
    predicted = tmp_path / "pred"
    result = invoke("predict", "--model", str(adapted), "--in", str(VENUS), "--out", str(predicted), "--device", "cpu")
    assert result.exit_code == 0, result.output
    disparity = read_pfm(predicted / "venus.pfm")
    assert disparity.shape == (383, 434) and (disparity > 0).mean() > 0.99  # flow converted to positive disparity
    assert calls and all(call["iters"] == 3 and call["test_mode"] is True and not call["training"] for call in calls)
    assert calls[-1]["shape"] == (1, 3, 384, 448)  # padded to multiples of 32 (and cropped back)
    result = invoke("eval", "--model", str(adapted), "--data", str(TSUKUBA), "--device", "cpu")
    assert result.exit_code == 0 and "tsukuba" in result.output, result.output


@pytest.mark.parametrize(
    ("model", "options", "expected"),
    [
        ("pl_no_such_module:build", [], ["--model pl_no_such_module:build", "cannot import pl_no_such_module (ModuleNotFoundError"]),
        ("pl_cli_broken:build", [], ["cannot import pl_cli_broken (ImportError: needs the compiled extension sampler)"]),
        ("mynet:no_factory", [], ["mynet (", "has no no_factory"]),
        ("pl_cli_nets:two_channels", [], ["network pl_cli_nets:two_channels returned (1, 2, 64, 96) for inputs of shape (1, 3, 64, 96)"]),
        ("pl_cli_nets:flow", [], ["network pl_cli_nets:flow returned mostly negative disparities (100% of pixels < 0", "shape (1, 1, 64, 96)"]),
        ("raft_adapter:raft_stereo", ["--adapter", '{"sign": "positive"}'], ["network raft_adapter:raft_stereo returned mostly negative"]),
        (
            "raft_adapter:raft_stereo",
            ["--adapter", '{"multiple": 1}', "--crop", "50x70"],
            ["forward(left, right, iters=32, test_mode=True) failed", "divisible by 32"],
        ),
        ("mynet:build", ["--adapter", '{"padding": 32}'], ["--adapter: unknown field(s) padding"]),
        ("mynet:build", ["--model-kwargs", "width=8"], ["--model-kwargs 'width=8' is not valid JSON"]),
        ("mynet:build", ["--model-kwargs", '{"depth": 3}'], ['network factory mynet:build(**{"depth": 3}) failed: TypeError']),
        ("mynet:build", ["--weights", "missing.pth"], ["--weights missing.pth: no such file"]),
        ("madnet_synth", ["--adapter", '{"multiple": 32}'], ["--adapter is for networks of your own"]),
        ("nothing_here", [], ["--model nothing_here: no such checkpoint file", "or a network of your own as package.module:factory"]),
    ],
)
def test_adapt_refusals_are_one_line_and_write_nothing(
    user_code: Path, proxies: Path, tmp_path: Path, model: str, options: list[str], expected: list[str]
) -> None:
    out = tmp_path / "out" / "adapted.pt"
    (tmp_path / "out").mkdir()
    result = invoke("adapt", "--proxies", str(proxies), "--model", model, "--out", str(out), "--steps", "3", *FAST, *options)
    assert_refused(result, *expected)
    nothing_written(tmp_path / "out", out)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["predict", "--model", "pl_cli_nets:two_channels", "--in", str(TSUKUBA), "--out", "{out}"], "returned (1, 2, 256, 384)"),
        (["predict", "--model", "pl_cli_nets:flow", "--in", str(VENUS), "--out", "{out}"], "mostly negative"),
        (["eval", "--model", "pl_cli_nets:flow", "--data", str(VENUS), "--json", "{out}"], "network pl_cli_nets:flow returned mostly negative"),
        (["eval", "--pred", str(TSUKUBA), "--gt", str(TSUKUBA), "--weights", "w.pth"], "go with --model"),
        (["train", "--data", str(TSUKUBA), "--arch", "pl_cli_nets:two_channels", "--out", "{out}", "--crop", "64x96"], "returned (1, 2, 64, 96)"),
        (
            ["train", "--data", str(TSUKUBA), "--arch", "tiny", "--weights", "w.pth", "--out", "{out}"],
            "--weights and --adapter are for a network of your own",
        ),
        (["train", "--data", str(TSUKUBA), "--arch", "nonsense", "--out", "{out}"], "or package.module:factory"),
    ],
)
def test_predict_eval_and_train_refusals_write_nothing(user_code: Path, tmp_path: Path, command: list[str], expected: str) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    out = folder / "result"
    result = invoke(*[part.replace("{out}", str(out)) for part in command], "--device", "cpu")
    assert_refused(result, expected)
    assert list(folder.iterdir()) == []


def test_a_checkpoint_needs_its_factory_importable_in_a_new_process(user_code: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine.pt"
    trained = invoke("train", "--data", str(TSUKUBA), "--arch", "mynet:build", "--out", str(out), "--steps", "1", "--crop", "32x48", "--quiet")
    assert trained.exit_code == 0, trained.output
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    command = [
        sys.executable,
        "-m",
        "pseudolabel.cli.main",
        "predict",
        "--model",
        str(out),
        "--in",
        str(TSUKUBA),
        "--device",
        "cpu",
        "--threads",
        "1",
    ]
    # from elsewhere, without PYTHONPATH: one line naming the checkpoint and the factory
    refused = subprocess.run([*command, "--out", str(tmp_path / "a")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{out}: network factory mynet:build: cannot import mynet" in lines[0] and "PYTHONPATH" in lines[0], lines
    assert not (tmp_path / "a").exists()
    # with the folder on PYTHONPATH it needs nothing else
    found = subprocess.run(
        [*command, "--out", str(tmp_path / "b")], cwd=tmp_path, env={**env, "PYTHONPATH": str(user_code)}, capture_output=True, text=True, timeout=300
    )
    assert found.returncode == 0, found.stderr
    assert (tmp_path / "b" / "tsukuba.pfm").is_file()
