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
