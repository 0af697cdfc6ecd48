"""``confidence score``, ``labels`` and ``predict`` on a real dask.distributed cluster (the session's
``dask scheduler`` and two ``dask worker`` processes of tests/conftest.py; nothing is mocked).

Covered: each stage's output through the scheduler equals a one-process run at the same thread count
(bit for bit), on plain and on sharded proxies files; a rerun through the scheduler resumes (it
recomputes nothing); an unreachable scheduler is a one-line error that leaves the output untouched.
"""

from __future__ import annotations

import socket
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from pseudolabel.cli.main import main
from pseudolabel.confidence.labelling import label_proxies
from pseudolabel.confidence.scoring import score_proxies
from pseudolabel.sgm.batch import run_sgm
from pseudolabel.sgm.params import SGMParams
from pseudolabel.store.proxies import open_proxies
from tests.fixture_proxies import MIDDLEBURY
from tests.sgm.test_sgm_cluster import contents

pytest.importorskip("distributed")


def _proxies(path: Path, shard_size: int | None) -> Path:
    run_sgm([MIDDLEBURY], path, SGMParams(max_disp=32), shard_size=shard_size)
    return path


def _dataset_attrs(path: Path, dataset: str) -> dict[str, dict[str, str]]:
    """``dataset``'s attributes in every pair (the edit that wrote it), by pair."""
    with h5py.File(path, "r") as h5file:
        return {name: {k: str(v) for k, v in group[dataset].attrs.items()} for name, group in h5file["pairs"].items()}


@pytest.mark.parametrize("shard_size", [None, 2])
def test_score_and_labels_through_the_scheduler_equal_one_process(tmp_path: Path, dask_cluster: str, shard_size: int | None) -> None:
    local = _proxies(tmp_path / "local.h5", shard_size)
    remote = _proxies(tmp_path / "remote.h5", shard_size)
    assert contents(local) == contents(remote)
    # one thread here, as on each worker: the network's arithmetic is then the same
    options = {"measures": "lrc,apkr,wmn", "precision": "float32", "device": "cpu"}
    summary_local = score_proxies(local, threads=1, **options)  # type: ignore[arg-type]
    summary_remote = score_proxies(remote, scheduler=dask_cluster, **options)  # type: ignore[arg-type]
    assert summary_remote.written == summary_local.written == ["ccnn", "lrc", "apkr", "wmn"]
    scored = contents(remote)
    assert scored == contents(local)
    some_pair = next(iter(scored.values()))[0]
    assert {"confidence/ccnn", "confidence/lrc", "confidence/apkr", "confidence/wmn"} <= set(some_pair)
    # a rerun resumes: every dataset is up to date, nothing is written again
    before = _dataset_attrs(remote, "confidence/ccnn")
    score_proxies(remote, scheduler=dask_cluster, **options)  # type: ignore[arg-type]
    assert contents(remote) == scored and _dataset_attrs(remote, "confidence/ccnn") == before

    rows_local = label_proxies(local, tau=0.6, gt_dir=MIDDLEBURY)
    rows_remote = label_proxies(remote, tau=0.6, gt_dir=MIDDLEBURY, scheduler=dask_cluster)
    assert rows_remote == rows_local and len(rows_local) == 3
    assert all(0.5 < stats["density"] < 1.0 and "bad3" in stats for _, stats in rows_local)
    assert contents(remote) == contents(local)
    with open_proxies(remote) as proxies:
        for key in proxies.keys():
            arrays = proxies.read(key, ["labels", "confidence/ccnn", "disparity"])
            kept = (arrays["confidence/ccnn"] > 0.6) & np.isfinite(arrays["disparity"])
            assert np.array_equal(np.isfinite(arrays["labels"]), kept)
            assert np.array_equal(arrays["labels"][kept], arrays["disparity"][kept])


def test_predict_through_the_scheduler_equals_one_process(tmp_path: Path, dask_cluster: str) -> None:
    import torch

    from pseudolabel.learn.predict import predict_pairs
    from pseudolabel.models.registry import build_network

    torch.manual_seed(0)
    network = build_network("tiny")
    local = predict_pairs(network, [MIDDLEBURY], tmp_path / "local", device="cpu", threads=1)
    remote = predict_pairs(network, [MIDDLEBURY], tmp_path / "remote", device="cpu", scheduler=dask_cluster)
    assert (local.predicted, remote.predicted) == (3, 3)
    names = sorted(path.name for path in (tmp_path / "local").iterdir())
    assert len(names) == 9 and names == sorted(path.name for path in (tmp_path / "remote").iterdir())
    for name in names:
        assert (tmp_path / "remote" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    again = predict_pairs(network, [MIDDLEBURY], tmp_path / "remote", device="cpu", scheduler=dask_cluster)
    assert (again.predicted, again.skipped) == (0, 3)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_commands_refuse_an_unreachable_scheduler_and_touch_nothing(tmp_path: Path) -> None:
    proxies = _proxies(tmp_path / "p.h5", None)
    address = f"tcp://127.0.0.1:{_free_port()}"
    runs = {
        "score": ["confidence", "score", "--proxies", str(proxies), "--measures", "lrc"],
        "labels": ["labels", "--proxies", str(proxies), "--measure", "lrc"],
        "predict": ["predict", "--model", "tiny", "--in", str(MIDDLEBURY), "--out", str(tmp_path / "pred")],
    }
    # labels needs a stored measure: score it here first
    assert CliRunner().invoke(main, runs["score"]).exit_code == 0
    before = (proxies.read_bytes(), proxies.stat().st_mtime_ns, sorted(p.name for p in tmp_path.iterdir()))
    for name, arguments in runs.items():
        result = CliRunner().invoke(main, [*arguments, "--overwrite"] if name == "score" else arguments, env={"PSEUDOLABEL_SCHEDULER": address})
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 1 and len(lines) == 1, (name, result.output)
        assert lines[0].startswith(f"Error: --scheduler {address}: no Dask scheduler answered"), (name, lines)
        assert (proxies.read_bytes(), proxies.stat().st_mtime_ns, sorted(p.name for p in tmp_path.iterdir())) == before, name


def test_commands_take_the_scheduler_from_the_option_and_the_environment(tmp_path: Path, dask_cluster: str) -> None:
    proxies = _proxies(tmp_path / "p.h5", None)
    local = _proxies(tmp_path / "local.h5", None)
    score = ["confidence", "score", "--model", "none", "--measures", "lrc,apkr"]
    assert CliRunner().invoke(main, [*score, "--proxies", str(local)]).exit_code == 0
    result = CliRunner().invoke(main, [*score, "--proxies", str(proxies), "--scheduler", dask_cluster])
    assert result.exit_code == 0 and "3 pairs scored: lrc, apkr" in result.output, result.output
    labels = ["labels", "--measure", "apkr", "--tau", "0.4"]
    assert CliRunner().invoke(main, [*labels, "--proxies", str(local)]).exit_code == 0
    result = CliRunner().invoke(main, [*labels, "--proxies", str(proxies)], env={"PSEUDOLABEL_SCHEDULER": dask_cluster})
    assert result.exit_code == 0 and "labels: confidence/apkr > 0.4" in result.output, result.output
    assert contents(proxies) == contents(local)
    predicted = tmp_path / "pred"
    result = CliRunner().invoke(
        main, ["predict", "--model", "madnet_synth", "--in", str(MIDDLEBURY / "tsukuba"), "--out", str(predicted), "--scheduler", dask_cluster]
    )
    assert result.exit_code == 0 and "predicted 1 pair(s)" in result.output, result.output
    assert sorted(path.name for path in predicted.iterdir()) == ["tsukuba.pfm", "tsukuba.png", "tsukuba_color.png"]


def test_sgm_store_minimal_scores_on_the_workers(tmp_path: Path, dask_cluster: str) -> None:
    """``sgm --store minimal`` through the scheduler: the workers compute the shipped CCNN's confidence too
    (torch on a worker with its own thread count: equal to this process's up to float rounding)."""
    local = tmp_path / "local.h5"
    remote = tmp_path / "remote.h5"
    run_sgm([MIDDLEBURY], local, SGMParams(max_disp=32), store="minimal")
    run_sgm([MIDDLEBURY], remote, SGMParams(max_disp=32), store="minimal", scheduler=dask_cluster)
    with open_proxies(local) as first, open_proxies(remote) as second:
        assert first.keys() == second.keys() and len(first.keys()) == 3
        for key in first.keys():
            a, b = first.read(key), second.read(key)
            assert sorted(a) == sorted(b) == ["confidence/ccnn", "disparity", "valid"]
            np.testing.assert_array_equal(a["disparity"], b["disparity"])
            np.testing.assert_array_equal(a["valid"], b["valid"])
            np.testing.assert_allclose(a["confidence/ccnn"], b["confidence/ccnn"], atol=0.02)
            assert np.mean(np.abs(a["confidence/ccnn"] - b["confidence/ccnn"])) < 1e-3


def test_runner_resends_large_arguments_lost_with_their_worker(dask_cluster: str) -> None:
    """Arguments above DIRECT_BYTES live on a worker; killing it mid-task loses them: the runner sends them
    again and every job still gives its one result."""
    import os
    import signal
    import threading
    import time

    import distributed

    from pseudolabel import cluster

    def slow_total(values: np.ndarray, delay_s: float) -> float:
        """Hold the worker ``delay_s``, then sum ``values`` (a local function: it travels by value, the
        scheduler and workers cannot import the tests)."""
        time.sleep(delay_s)
        return float(values.sum())

    jobs = [(f"job{index}", (np.full(cluster.DIRECT_BYTES // 8 + 1000, index, dtype=np.float64), 1.5)) for index in range(6)]
    results: dict[str, float] = {}
    outcome: dict[str, BaseException] = {}
    with distributed.Client(dask_cluster, timeout=30, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=120)

        def run() -> None:
            try:
                cluster.run_on_cluster(client, slow_total, iter(jobs), lambda key, value: results.__setitem__(key, value), "resend")
            except BaseException as error:  # reported below
                outcome["error"] = error

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        victim = None
        deadline = time.monotonic() + 60
        while victim is None and time.monotonic() < deadline:
            busy = [worker for worker, keys in client.processing().items() if any(str(key).startswith("pseudolabel-resend-") for key in keys)]
            victim = busy[0] if busy else None
            time.sleep(0.05)
        assert victim is not None, (outcome, results)
        os.kill(client.run(os.getpid, workers=[victim])[victim], signal.SIGKILL)
        thread.join(timeout=180)
    assert not thread.is_alive() and "error" not in outcome, outcome
    assert results == {f"job{index}": float(index * (cluster.DIRECT_BYTES // 8 + 1000)) for index in range(6)}
