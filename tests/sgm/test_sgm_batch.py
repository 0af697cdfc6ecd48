"""pseudolabel.sgm.batch.run_sgm called as a library (what a notebook does), and the import rule of the
stage-1 and stage-2 packages. tests/cli/test_cli_sgm.py covers the same runs through the command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pseudolabel.errors import InputError
from pseudolabel.io import read_image, write_image
from pseudolabel.sgm.batch import run_sgm
from pseudolabel.sgm.matcher import match
from pseudolabel.sgm.params import SGMParams
from pseudolabel.store.inspect import describe_proxies
from pseudolabel.store.proxies import open_proxies

DATA = Path(__file__).parents[1] / "data"


class RecordingProgress:
    """A Progress that remembers every call."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def start(self, label: str, total: int, done: int = 0) -> None:
        self.calls.append(("start", label, total, done))

    def advance(self, count: int = 1, status: str = "") -> None:
        self.calls.append(("advance", count))

    def finish(self) -> None:
        self.calls.append(("finish",))


def make_pairs(root: Path, keys: list[str]) -> tuple[Path, Path]:
    folder = DATA / "middlebury" / "tsukuba"
    left, right = read_image(folder / "imL.png"), read_image(folder / "imR.png")
    for index, key in enumerate(keys):
        window = np.s_[40 * index : 40 * index + 32, 100:164]
        write_image(root / "left" / f"{key}.png", left[window])
        write_image(root / "right" / f"{key}.png", right[window])
    return root / "left", root / "right"


def test_run_sgm_resumes_and_reports(tmp_path: Path) -> None:
    left_dir, right_dir = make_pairs(tmp_path / "data", ["a", "b"])
    out = tmp_path / "proxies.h5"
    params = SGMParams(max_disp=16)
    lines: list[str] = []
    progress = RecordingProgress()
    summary = run_sgm([left_dir, right_dir], out, params, progress=progress, log=lines.append)
    assert (summary.out, summary.pairs, summary.already_done, summary.matched, summary.added, summary.workers) == (out, 2, 0, 2, 2, 1)
    assert lines == ["2 pairs, 0 already done, 2 to match"]
    assert progress.calls == [("start", "sgm", 2, 0), ("advance", 1), ("advance", 1), ("finish",)]
    assert summary.match_s > 0 and summary.read_s > 0 and summary.write_s > 0
    with open_proxies(out) as proxies:
        assert proxies.keys() == ["a", "b"] and proxies.sgm_params == params
        stored = proxies.read("a", ["disparity"])["disparity"]
    expected = match(read_image(left_dir / "a.png"), read_image(right_dir / "a.png"), params)
    np.testing.assert_array_equal(stored, expected.disparity)
    make_pairs(tmp_path / "data", ["a", "b", "c"])
    again = run_sgm([str(left_dir), str(right_dir)], out, params)
    assert (again.pairs, again.already_done, again.matched, again.added) == (3, 2, 1, 1)
    report = describe_proxies(out)
    assert "3 pairs" in report and not report.endswith("\n")


def test_run_sgm_user_errors(tmp_path: Path) -> None:
    left_dir, right_dir = make_pairs(tmp_path / "data", ["a"])
    with pytest.raises(InputError, match="takes ROOT or LEFT_DIR RIGHT_DIR"):
        run_sgm([left_dir, right_dir, left_dir], tmp_path / "x.h5")
    with pytest.raises(InputError, match="p1 < p2"):
        run_sgm([left_dir, right_dir], tmp_path / "x.h5", SGMParams(max_disp=16, p1=100, p2=50))
    with pytest.raises(InputError, match="unknown compression"):
        run_sgm([left_dir, right_dir], tmp_path / "x.h5", compression="zstd")
    assert not (tmp_path / "x.h5").exists()


def test_stage_packages_import_neither_torch_nor_click() -> None:
    """Nor dask: only a run with a scheduler imports it (inside pseudolabel.sgm.cluster's functions)."""
    modules = ["pseudolabel.sgm", "pseudolabel.sgm.batch", "pseudolabel.sgm.cluster", "pseudolabel.store", "pseudolabel.store.inspect"]
    code = f"import sys; import {', '.join(modules)}; print(sorted(m for m in ('torch', 'click', 'dask', 'distributed') if m in sys.modules))"
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    assert output == "[]"


def read_pairs_exactly(path: Path) -> dict[str, dict]:
    """Every pair group of a proxies file: attributes, and per dataset its stored values, dtype, chunks, filters, attributes."""
    import h5py

    def datasets(group: h5py.Group, prefix: str = "") -> dict:
        found = {}
        for name, item in group.items():
            if isinstance(item, h5py.Group):
                found.update(datasets(item, prefix + name + "/"))
            else:
                found[prefix + name] = (item[()], item.dtype, item.chunks, item.compression, item.shuffle, dict(item.attrs))
        return found

    with h5py.File(path, "r") as h5file:
        return {name: {"attrs": dict(group.attrs), "datasets": datasets(group)} for name, group in h5file["pairs"].items()}


@pytest.mark.parametrize(
    ("preset", "compression", "store"),
    [("fast", "fast", "full"), ("fast", "lzf", "full"), ("default", "fast", "full"), ("fast", "fast", "minimal")],
)
def test_raw_journal_output_equals_match_and_the_hdf5_journal(tmp_path: Path, preset: str, compression: str, store: str) -> None:
    """The shipped KITTI pair (1241x376: incomplete blocks at half resolution) through run_sgm with one worker
    (raw journal entries, fast maps journaled at half resolution and enlarged at assembly) gives, bit for bit,
    the datasets of ``result_arrays(match(...))``, and the same file content as the HDF5 journal entries of
    the worker processes (the only journal before raw entries): values, dtypes, chunks, filters, attributes."""
    from pseudolabel.sgm.batch import make_tasks, process_pair
    from pseudolabel.store.journal import ProxyRun
    from pseudolabel.store.layout import STORES, result_arrays, run_identity

    folder = DATA / "kitti2012" / "training"
    inputs = [folder / "image_0", folder / "image_1"]
    params = SGMParams.preset(preset).replace(max_disp=64)
    out = tmp_path / "raw.h5"
    run_sgm(inputs, out, params, compression=compression, store=store, pair_check=False)
    reference = tmp_path / "hdf5.h5"
    from pseudolabel.datasets import discover_pairs

    with ProxyRun(reference, params, False, store=store) as run:
        for task in make_tasks(discover_pairs(inputs), params, False, run.journal, run_identity(params, False, store), compression, store):
            done = process_pair(task)
            assert done.entry.endswith(".h5")
            run.record(done.key, Path(done.entry))
        run.finish()
    got, expected = read_pairs_exactly(out), read_pairs_exactly(reference)
    assert list(got) == list(expected) == ["000070_10"]
    pair, reference_pair = got["000070_10"], expected["000070_10"]
    assert pair["attrs"] == reference_pair["attrs"]
    assert list(pair["datasets"]) == list(reference_pair["datasets"])
    for name, (values, *layout) in pair["datasets"].items():
        reference_values, *reference_layout = reference_pair["datasets"][name]
        assert layout == reference_layout, name
        assert values.tobytes() == reference_values.tobytes(), name
    matched = result_arrays(match(read_image(inputs[0] / "000070_10.png"), read_image(inputs[1] / "000070_10.png"), params))
    for name in STORES[store]:
        if name in matched:
            assert pair["datasets"][name][0].dtype == matched[name].dtype
            assert pair["datasets"][name][0].tobytes() == matched[name].tobytes(), name


def test_compute_pair_reduced_keeps_half_resolution_maps_that_enlarge_to_the_full_ones(tmp_path: Path) -> None:
    from pseudolabel.datasets import discover_pairs
    from pseudolabel.sgm.batch import compute_pair, make_tasks

    left_dir, right_dir = make_pairs(tmp_path / "data", ["a"])  # 64x32 crops of Tsukuba
    params = SGMParams.preset("fast").replace(max_disp=16)
    (task,) = make_tasks(discover_pairs([left_dir, right_dir]), params, False, tmp_path, "ID")
    full, reduced = compute_pair(task), compute_pair(task, reduced=True)
    assert full.factors == {} and reduced.factors == dict.fromkeys(full.arrays, 2)
    assert reduced.arrays["disparity"].shape == (16, 32) and full.arrays["disparity"].shape == (32, 64)
    assert reduced.size == full.size == (32, 64) and reduced.attrs == full.attrs
    for name, array in reduced.full_arrays().items():
        assert array.dtype == full.arrays[name].dtype and array.tobytes() == full.arrays[name].tobytes(), name
