"""``run_sgm(..., scheduler=...)`` on a real dask.distributed cluster: a ``dask scheduler`` and two
``dask worker`` processes on 127.0.0.1, started and stopped by the fixture (nothing is mocked).

Covered: the content equals a one-process run; a worker killed with SIGKILL in the middle of a pair
costs only that pair (each pair is journaled once, the file is still identical); an unreachable
scheduler is a one-line error within 30 s that leaves the existing output untouched; a file that the
workers do not see is named; each worker warms its kernels once.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import h5py
import pytest

from pseudolabel.errors import InputError
from pseudolabel.sgm import batch
from pseudolabel.sgm.batch import SLOW_ENV, make_tasks, run_sgm
from pseudolabel.sgm.params import SGMParams
from tests.sgm.test_sgm_batch import make_pairs

distributed = pytest.importorskip("distributed")


@pytest.fixture
def cluster(dask_cluster: str) -> str:
    """The session's scheduler with two single-thread workers (tests/conftest.py)."""
    return dask_cluster


def contents(path: Path) -> dict[str, Any]:
    """Every pair's datasets (as bytes with dtype) and attributes: two equal results mean identical content."""
    found: dict[str, Any] = {}
    with h5py.File(path, "r") as h5file:
        for name, group in h5file["pairs"].items():
            arrays = {}
            group.visititems(lambda sub, obj: arrays.__setitem__(sub, (obj.dtype.str, obj[()].tobytes())) if isinstance(obj, h5py.Dataset) else None)
            found[name] = (arrays, {k: str(v) for k, v in group.attrs.items()})
    return found


def test_cluster_run_equals_one_process_and_warms_once(tmp_path: Path, cluster: str) -> None:
    left, right = make_pairs(tmp_path / "data", ["a", "b", "c", "d"])
    params = SGMParams(max_disp=16)
    local = run_sgm([left, right], tmp_path / "local.h5", params)
    lines: list[str] = []
    remote = run_sgm([left, right], tmp_path / "remote.h5", params, scheduler=cluster, log=lines.append)
    assert (remote.matched, remote.added, remote.workers) == (4, 4, 2)
    assert lines[-1] == "4 pairs, 0 already done, 4 to match on 2 Dask workers"
    assert contents(tmp_path / "remote.h5") == contents(tmp_path / "local.h5") and local.added == 4
    with distributed.Client(cluster, timeout=30, set_as_default=False) as client:
        from pseudolabel.sgm import cluster as cluster_module

        warmed = client.run(cluster_module.warm_count)
        threads = client.run(lambda: __import__("numba").get_num_threads())
    assert set(warmed.values()) <= {0, 1} and sum(warmed.values()) >= 1, warmed
    assert len(threads) == 2
    # a second run resumes: nothing left to match
    again = run_sgm([left, right], tmp_path / "remote.h5", params, scheduler=cluster)
    assert (again.already_done, again.matched) == (4, 0)


def test_worker_killed_mid_pair(tmp_path: Path, cluster: str, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [f"p{index}" for index in range(6)]
    left, right = make_pairs(tmp_path / "data", keys)
    params = SGMParams(max_disp=16)
    run_sgm([left, right], tmp_path / "local.h5", params)
    journaled: list[str] = []
    original = batch.write_journal_bytes

    def counting(journal: Path, key: str, *args: Any, **kwargs: Any) -> Path:
        journaled.append(key)
        return original(journal, key, *args, **kwargs)

    monkeypatch.setattr(batch, "write_journal_bytes", counting)
    monkeypatch.setenv(SLOW_ENV, "1.5")
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["summary"] = run_sgm([left, right], tmp_path / "remote.h5", params, scheduler=cluster)
        except BaseException as error:  # reported by the assertion below
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    with distributed.Client(cluster, timeout=30, set_as_default=False) as client:
        thread.start()
        deadline = time.monotonic() + 120
        victim = None
        while victim is None and time.monotonic() < deadline and thread.is_alive():
            busy = [worker for worker, tasks in client.processing().items() if any(str(key).startswith("pseudolabel-sgm-") for key in tasks)]
            if busy and journaled:  # the kernels are warm, pairs are flowing: kill one in the middle of its pair
                victim = busy[0]
            else:
                time.sleep(0.1)
        assert victim is not None, "no worker was ever busy with a pair"
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        thread.join(timeout=240)
    assert not thread.is_alive(), "the run did not finish after the kill"
    assert "error" not in outcome, outcome.get("error")
    assert outcome["summary"].added == 6
    assert sorted(journaled) == keys  # each pair journaled exactly once
    assert contents(tmp_path / "remote.h5") == contents(tmp_path / "local.h5")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_scheduler_leaves_output_untouched(tmp_path: Path) -> None:
    left, right = make_pairs(tmp_path / "data", ["a"])
    out = tmp_path / "out.h5"
    run_sgm([left, right], out, SGMParams(max_disp=16))
    before = (out.read_bytes(), out.stat().st_mtime_ns, sorted(p.name for p in tmp_path.iterdir()))
    make_pairs(tmp_path / "data", ["a", "b"])
    address = f"tcp://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with pytest.raises(InputError, match="no Dask scheduler answered") as raised:
        run_sgm([left, right], out, SGMParams(max_disp=16), scheduler=address)
    assert time.monotonic() - start < 30
    assert "\n" not in str(raised.value) and address in str(raised.value)
    assert (out.read_bytes(), out.stat().st_mtime_ns, sorted(p.name for p in tmp_path.iterdir())) == before


def test_workers_must_see_the_images(tmp_path: Path, cluster: str) -> None:
    left, right = make_pairs(tmp_path / "data", ["a"])
    from pseudolabel.datasets import discover_pairs
    from pseudolabel.sgm.cluster import check_inputs_visible

    tasks = make_tasks(discover_pairs([left, right]), SGMParams(max_disp=16), False, tmp_path / "j", "{}")
    with distributed.Client(cluster, timeout=30, set_as_default=False) as client:
        check_inputs_visible(client, tasks)
        (right / "a.png").unlink()
        with pytest.raises(InputError, match=r"Dask worker tcp://127\.0\.0\.1:\d+ cannot see .*right/a\.png: .*shared filesystem"):
            check_inputs_visible(client, tasks)


def test_cli_scheduler_from_environment(tmp_path: Path) -> None:
    """The command reads PSEUDOLABEL_SCHEDULER; an unreachable one is a one-line error, exit 1."""
    from click.testing import CliRunner

    from pseudolabel.cli.main import main

    left, right = make_pairs(tmp_path / "data", ["a"])
    address = f"tcp://127.0.0.1:{_free_port()}"
    result = CliRunner().invoke(
        main, ["sgm", "--in", str(left), str(right), "--out", str(tmp_path / "o.h5"), "--max-disp", "16"], env={"PSEUDOLABEL_SCHEDULER": address}
    )
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: --scheduler " + address), result.output
    assert not (tmp_path / "o.h5").exists()


def test_local_and_cluster_share_the_pair_function(tmp_path: Path) -> None:
    """One code path: the Dask task matches with batch.compute_pair and leaves batch.encode_pair to run after
    the worker's exclusive section; the entry is byte for byte the one a local worker journals."""
    from pseudolabel.cluster import Unlocked
    from pseudolabel.datasets import discover_pairs
    from pseudolabel.sgm import cluster as cluster_module

    left, right = make_pairs(tmp_path / "data", ["a"])
    (task,) = make_tasks(discover_pairs([left, right]), SGMParams(max_disp=16), False, tmp_path / "j", "{}")
    deferred = cluster_module.cluster_pair(task)
    assert isinstance(deferred, Unlocked) and deferred.finish is batch.encode_pair
    assert deferred.finish(*deferred.arguments).entry == batch.encode_pair(task, batch.compute_pair(task)).entry
