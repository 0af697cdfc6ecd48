"""The default pipeline on the shipped scenes: bytes per pair, and the 16-bit confidences change no label
and no AUC figure.

``sgm``, ``confidence score`` and ``labels`` run as a user runs them (through the command line), on
the KITTI 2012 pair and the Middlebury scenes of ``tests/data``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pseudolabel.cli.main import main
from pseudolabel.confidence.labels import DEFAULT_TAU, threshold_labels
from pseudolabel.confidence.measures import compute_measure
from pseudolabel.confidence.scoring import SHIPPED_MODEL, _load_network, network_needs
from pseudolabel.datasets import ground_truth_lookup
from pseudolabel.store.proxies import open_proxies

DATA = Path(__file__).parents[1] / "data"
KITTI_KEY = "kitti2012/training/000070_10"

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _run(*args: str) -> None:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | int]:
    folder = tmp_path_factory.mktemp("pipeline")
    kitti, everything = folder / "kitti.h5", folder / "all.h5"
    _run("sgm", "--in", str(DATA / "kitti2012"), "--out", str(kitti), "--max-disp", "128", "--workers", "1")
    sizes = {"after_sgm": kitti.stat().st_size}
    _run("confidence", "score", "--proxies", str(kitti), "--device", "cpu", "--threads", "1")
    sizes["after_score"] = kitti.stat().st_size
    _run("labels", "--proxies", str(kitti))
    sizes["after_labels"] = kitti.stat().st_size
    _run("sgm", "--in", str(DATA), "--out", str(everything), "--max-disp", "64", "--workers", "1")
    # float32 arithmetic, so that the test can compute the same confidences again in memory
    _run("confidence", "score", "--proxies", str(everything), "--device", "cpu", "--threads", "1", "--precision", "float32")
    _run("labels", "--proxies", str(everything))
    return {"kitti": kitti, "all": everything, **sizes}


def test_a_kitti_pair_takes_at_most_8_mb_with_the_defaults(pipeline: dict) -> None:
    with open_proxies(pipeline["kitti"]) as proxies:
        assert len(proxies) == 1
        (key,) = proxies.keys()
        # the defaults store only what a later stage reads: the network's confidence and the labels
        assert proxies.list_confidences(key) == ["ccnn"]
        assert proxies.has(key, "labels")
    assert pipeline["after_labels"] <= 8_000_000
    # sgm's own datasets are most of it; the float32 confidence and the labels add about 1.4 MB
    assert pipeline["after_sgm"] <= 6_500_000
    assert pipeline["after_labels"] - pipeline["after_sgm"] <= 1_600_000


def test_stored_confidence_is_the_network_output_and_labels_follow_it(pipeline: dict) -> None:
    """The CCNN's float32 output, computed again in memory, against what the file stores: the stored value
    is exactly that output (float32), and the labels at the default tau are exactly the ones it selects."""
    recipe, _, _ = _load_network(SHIPPED_MODEL, None, "cpu", "float32")
    scorer = recipe.scorer()
    path = pipeline["all"]
    with open_proxies(path) as proxies:
        keys = proxies.keys()
        lookup = ground_truth_lookup(DATA, keys, None)
        assert KITTI_KEY in keys and len(lookup) >= 4
        labelled = 0
        for key in keys:
            params = proxies.pair_params(key)
            features = proxies.read(key, sorted(network_needs(recipe)))  # the calibration reads "valid" too
            extra = {name: compute_measure(name, features, params) for name in scorer.inputs[1:]}
            exact = scorer.confidence_from_features(features, params, extra).astype(np.float32)
            stored = proxies.read(key, ["confidence/ccnn", "labels"])
            raw = proxies.h5["pairs"][key.replace("%", "%25").replace("/", "%2F")]["confidence/ccnn"][()]
            np.testing.assert_array_equal(raw, exact)  # stored exactly (float32)
            expected = threshold_labels(features["disparity"], exact, DEFAULT_TAU)
            np.testing.assert_array_equal(stored["labels"], expected)
            labelled += int(np.isfinite(expected).sum())
    assert labelled > 0
