"""Networks of the user's own behind the StereoNetwork contract (pseudolabel.models.external): the
adapter's fields, padding and cropping, input ranges, extra forward arguments, list outputs as levels,
the sign convention, checkpoints that rebuild them, state dicts from other code, and the refusals."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pseudolabel.errors import InputError
from pseudolabel.learn.checkpoint import load_model, save_checkpoint
from pseudolabel.learn.networks import NetworkSpec, open_network, probe_network, read_state_dict
from pseudolabel.models.external import Adapter, ExternalNetwork, is_factory_spec
from pseudolabel.models.registry import available_networks, build_network

pytestmark = pytest.mark.usefixtures("single_torch_thread")

MODULE = "pl_unit_nets"
SOURCE = '''
import torch
from torch import nn
from torch.nn import functional as F

from pseudolabel.models.external import Adapter

SEEN = []


class Recorder(nn.Module):
    """Returns `value` everywhere (or a list: half resolution first, full last) and records its inputs."""

    def __init__(self, value=2.0, levels=False, batch_norm=False, channels=1, squeeze=False):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))
        self.norm = nn.BatchNorm2d(3) if batch_norm else None
        self.levels, self.channels, self.squeeze = levels, channels, squeeze

    def forward(self, left, right, **kwargs):
        SEEN.append({"shape": tuple(left.shape), "min": float(left.min()), "max": float(left.max()), "kwargs": kwargs, "training": self.training})
        if self.norm is not None:
            left = self.norm(left)
        batch, _, height, width = left.shape
        full = self.scale * torch.ones(batch, self.channels, height, width) + 0 * left[:, :1]
        if self.squeeze:
            return full[:, 0]
        if self.levels:
            return [self.scale * torch.ones(batch, 1, height // 2, width // 2), full]
        return full


def plain(value=2.0, levels=False, batch_norm=False, channels=1, squeeze=False):
    return Recorder(value, levels, batch_norm, channels, squeeze)


def declared(**fields):
    network = Recorder()
    network.stereo_adapter = Adapter(**fields)
    return network


def declared_as_dict():
    network = Recorder()
    network.stereo_adapter = {"inputs": "255", "multiple": 8}
    return network


def not_a_module():
    return "a string"


def fails(size=1):
    raise RuntimeError("out of memory\\nsecond line")
'''


@pytest.fixture(scope="module")
def user_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    folder = tmp_path_factory.mktemp("user_code")
    (folder / f"{MODULE}.py").write_text(textwrap.dedent(SOURCE))
    sys.path.insert(0, str(folder))
    try:
        yield __import__(MODULE)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(MODULE, None)


@pytest.fixture
def seen(user_module: object) -> list[dict[str, object]]:
    calls: list[dict[str, object]] = user_module.SEEN  # type: ignore[attr-defined]
    calls.clear()
    return calls


def pair(height: int = 30, width: int = 45, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(batch, 3, height, width, generator=generator), torch.rand(batch, 3, height, width, generator=generator)


def mean(values: torch.Tensor) -> float:
    return float(values.detach().mean())


def test_factory_specs_and_the_registry() -> None:
    assert is_factory_spec("mynet:build") and is_factory_spec("pkg.sub.mod:Class.create")
    for text in ("madnet_synth", "model.pt", "a:b:c", "dir/mod:build", ":build", "mod:", "9mod:build"):
        assert not is_factory_spec(text), text
    assert "external" not in available_networks()  # built from checkpoints, not offered as --arch


def test_adapter_fields_are_checked_and_round_trip() -> None:
    adapter = Adapter(inputs="imagenet", multiple=32, eval_kwargs={"iters": 32, "test_mode": True}, sign="negative")
    assert Adapter.from_any(adapter.to_dict()) == adapter
    assert adapter.keyword_arguments(training=False) == {"iters": 32, "test_mode": True} and adapter.keyword_arguments(training=True) == {}
    assert adapter.replace({"multiple": 8}).multiple == 8
    for fields, message in (
        ({"inputs": "0-1"}, "choose one of unit, 255"),
        ({"multiple": 0}, "positive integer"),
        ({"sign": "flow"}, "positive or negative"),
        ({"eval_kwargs": {"device": object()}}, "plain JSON values"),
        ({"train_kwargs": [1]}, "dictionary of keyword arguments"),
        ({"freeze_batchnorm": "yes"}, "true or false"),
    ):
        with pytest.raises(InputError, match=message):
            Adapter.from_any(fields)
    with pytest.raises(InputError, match="unknown field"):
        Adapter().replace({"padding": 32})


def test_inputs_are_padded_scaled_and_cropped_back(seen: list[dict[str, object]]) -> None:
    network = ExternalNetwork(f"{MODULE}:declared", {"inputs": "255", "multiple": 16, "eval_kwargs": {"iters": 3}, "train_kwargs": {"iters": 1}})
    left, right = pair(30, 45)
    output = network.eval()(left, right)
    assert tuple(output.disparity.shape) == (1, 1, 30, 45) and mean(output.disparity) == pytest.approx(2.0)
    call = seen[-1]
    assert call["shape"] == (1, 3, 32, 48) and call["kwargs"] == {"iters": 3}
    assert float(call["max"]) > 200.0  # type: ignore[arg-type]  # [0, 255]
    network.train()(left, right)
    assert seen[-1]["kwargs"] == {"iters": 1}
    # the declared adapter under the fields given on the command line
    network = ExternalNetwork(f"{MODULE}:declared", {"inputs": "symmetric"}, {"multiple": 4})
    assert network.adapter.inputs == "symmetric" and network.adapter.multiple == 4 and network.size_multiple == 4
    network.eval()(*pair())
    assert float(seen[-1]["min"]) < -0.9  # type: ignore[arg-type]
    assert ExternalNetwork(f"{MODULE}:declared_as_dict").adapter == Adapter(inputs="255", multiple=8)


@pytest.mark.parametrize("inputs", ["unit", "imagenet", "standardize"])
def test_every_input_range(seen: list[dict[str, object]], inputs: str) -> None:
    ExternalNetwork(f"{MODULE}:plain", adapter={"inputs": inputs}).eval()(*pair())
    low, high = float(seen[-1]["min"]), float(seen[-1]["max"])  # type: ignore[arg-type]
    assert (0.0 <= low and high <= 1.0) if inputs == "unit" else (low < -1.0 and high > 1.0)


def test_a_list_is_levels_in_training_and_its_last_item_in_eval(user_module: object) -> None:
    network = ExternalNetwork(f"{MODULE}:plain", {"value": 3.0, "levels": True})
    left, right = pair(32, 48)
    trained = network.train()(left, right)
    assert len(trained.multiscale) == 2 and all(tuple(level.shape) == (1, 1, 32, 48) for level in trained.multiscale)
    # the half-resolution level is upsampled and expressed in input pixels
    assert mean(trained.multiscale[0]) == pytest.approx(3.0) and mean(trained.multiscale[1]) == pytest.approx(6.0)
    evaluated = network.eval()(left, right)
    assert len(evaluated.multiscale) == 1 and mean(evaluated.disparity) == pytest.approx(3.0)
    squeezed = ExternalNetwork(f"{MODULE}:plain", {"squeeze": True}).eval()(left, right)  # (B, H, W) is taken too
    assert tuple(squeezed.disparity.shape) == (1, 1, 32, 48)
    assert tuple(network(left[:, :1], right[:, :1]).disparity.shape) == (1, 1, 32, 48)  # gray is repeated


def test_the_sign_convention_is_converted_or_refused(user_module: object) -> None:
    left, right = pair()
    flow = ExternalNetwork(f"{MODULE}:plain", {"value": -4.0}, {"sign": "negative"}).eval()
    assert mean(flow(left, right).disparity) == pytest.approx(4.0)
    undeclared = ExternalNetwork(f"{MODULE}:plain", {"value": -4.0}).eval()
    with pytest.raises(InputError, match=r"network pl_unit_nets:plain returned mostly negative disparities \(100% of pixels < 0") as error:
        undeclared(left, right)
    assert "sign='negative'" in str(error.value) and "\n" not in str(error.value)
    wrongly_declared = ExternalNetwork(f"{MODULE}:plain", {"value": 4.0}, {"sign": "negative"}).eval()
    with pytest.raises(InputError, match="already declares sign='negative'"):
        wrongly_declared(left, right)
    unchecked = ExternalNetwork(f"{MODULE}:plain", {"value": -4.0}, check_sign=False).eval()
    assert mean(unchecked(left, right).multiscale[0]) == pytest.approx(-4.0)  # a network trained from scratch
    # only the first output is checked: later ones may be anything
    checked_once = ExternalNetwork(f"{MODULE}:plain", {"value": 1.0}).eval()
    checked_once(left, right)
    with torch.no_grad():
        checked_once.net.scale.fill_(-1.0)
    checked_once(left, right)


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"channels": 2}, r"returned \(1, 2, 30, 45\) for inputs of shape \(1, 3, 30, 45\)"),
        ({"value": 1.0, "levels": True}, r"returned \[\(1, 1, 30, 45\), \(1, 1, 15, 22\)\]"),
    ],
)
def test_a_wrong_shape_names_the_factory_and_the_shape(user_module: object, kwargs: dict[str, object], shown: str) -> None:
    network = ExternalNetwork(f"{MODULE}:plain", kwargs).train()
    left, right = pair(30, 45)
    if "levels" in kwargs:
        # the last item of a list is the finest: it must have the input's size
        network.net.forward = lambda left, right: [torch.ones(1, 1, 30, 45), torch.ones(1, 1, 15, 22)]  # type: ignore[method-assign]
    with pytest.raises(InputError, match=rf"network pl_unit_nets:plain {shown}") as error:
        network(left, right)
    assert "the protocol wants the left disparity as (B, 1, H, W) = (1, 1, 30, 45)" in str(error.value)


def test_factories_that_cannot_be_used_are_refused_in_one_line(user_module: object) -> None:
    cases = [
        ("pl_no_such_module:build", "cannot import pl_no_such_module (ModuleNotFoundError: No module named 'pl_no_such_module'); put the folder"),
        (f"{MODULE}:missing", f"{MODULE} ("),
        (f"{MODULE}:not_a_module", "returned a str; it must return a torch.nn.Module"),
        (f"{MODULE}:fails", "failed: RuntimeError: out of memory second line"),
        ("not a spec", "write it as package.module:factory"),
    ]
    for factory, message in cases:
        with pytest.raises(InputError) as error:
            ExternalNetwork(factory)
        assert message in str(error.value) and "\n" not in str(error.value), str(error.value)
    with pytest.raises(InputError, match="plain JSON values"):
        ExternalNetwork(f"{MODULE}:plain", {"value": torch.tensor(1.0)})


def test_checkpoints_rebuild_the_network_from_its_factory(user_module: object, tmp_path: Path) -> None:
    network = ExternalNetwork(f"{MODULE}:declared", {"inputs": "255", "multiple": 8}, {"eval_kwargs": {"iters": 5}})
    with torch.no_grad():
        network.net.scale.fill_(7.0)
    assert set(network.state_dict()) == {"net.scale"}
    path = tmp_path / "mine.pt"
    save_checkpoint(path, {"arch": "external", "arch_kwargs": network.describe(), "model": network.state_dict(), "step": 3})
    rebuilt = load_model(path)
    assert isinstance(rebuilt, ExternalNetwork) and rebuilt.adapter == network.adapter and rebuilt.factory == f"{MODULE}:declared"
    assert mean(rebuilt(*pair()).disparity) == pytest.approx(7.0)
    assert isinstance(build_network("external", **network.describe()), ExternalNetwork)
    # a checkpoint's factory arguments and adapter can be changed where the command asks
    opened = open_network(NetworkSpec(str(path), adapter={"eval_kwargs": {"iters": 9}}))
    assert opened.label == f"{MODULE}:declared" and opened.step == 3 and opened.arch_kwargs["adapter"]["eval_kwargs"] == {"iters": 9}
    with pytest.raises(InputError, match="holds its own weights"):
        open_network(NetworkSpec(str(path), weights=str(path)))


def test_weights_from_other_training_code(user_module: object, tmp_path: Path) -> None:
    network = ExternalNetwork(f"{MODULE}:plain", {"batch_norm": True})
    state = {f"module.{key}": value + 1 for key, value in network.net.state_dict().items() if value.is_floating_point()}
    state["module.norm.num_batches_tracked"] = torch.tensor(0)
    path = tmp_path / "dp.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)  # DataParallel keys under "state_dict", as many codes save
    loaded = read_state_dict(path, network.net)
    assert set(loaded) == set(network.net.state_dict())
    opened = open_network(NetworkSpec(f"{MODULE}:plain", {"batch_norm": True}, weights=str(path)))
    assert float(opened.network.net.scale.detach()) == pytest.approx(3.0) and "with --weights" in opened.source
    torch.save({"other.weight": torch.zeros(1)}, tmp_path / "other.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    (tmp_path / "text.pth").write_text("not torch")
    for name, message in (
        ("other.pth", "the keys do not match"),
        ("list.pth", "not a state dict"),
        ("text.pth", "cannot be read"),
        ("none.pth", "no such file"),
    ):
        with pytest.raises(InputError, match=message) as error:
            open_network(NetworkSpec(f"{MODULE}:plain", {"batch_norm": True}, weights=str(tmp_path / name)))
        assert "\n" not in str(error.value)


def test_the_probe_restores_batch_norm_statistics_and_freeze_batchnorm_keeps_them(user_module: object) -> None:
    network = ExternalNetwork(f"{MODULE}:plain", {"batch_norm": True})
    before = {key: value.clone() for key, value in network.state_dict().items()}
    probe_network(network, *pair(), training=True)
    assert all(torch.equal(before[key], value) for key, value in network.state_dict().items())
    assert network.training  # the mode is put back
    frozen = ExternalNetwork(f"{MODULE}:plain", {"batch_norm": True}, {"freeze_batchnorm": True}).train()
    assert frozen.training and not frozen.net.norm.training  # type: ignore[union-attr]
    frozen(*pair())
    assert float(frozen.net.norm.running_mean.abs().sum()) == 0.0  # type: ignore[union-attr]
