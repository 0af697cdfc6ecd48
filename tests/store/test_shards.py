"""Sharded proxies files (``sgm --shard-size``) and ``--store minimal``: every reader sees the same as
with one file (open_proxies, inspect, confidence score, labels, confidence eval, show, confidence train,
adapt, export), the sharded
layout on disk, resume and crash safety per shard, copy-on-write edits."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import Any

import h5py
import numba
import numpy as np
import pytest
from click.testing import CliRunner

from pseudolabel.cli.main import main
from pseudolabel.confidence.labelling import label_proxies
from pseudolabel.confidence.scoring import score_proxies
from pseudolabel.errors import InputError
from pseudolabel.io import read_image, write_pfm
from pseudolabel.sgm.batch import run_sgm
from pseudolabel.sgm.params import SGMParams
from pseudolabel.store import shards as shards_module
from pseudolabel.store.inspect import describe_proxies
from pseudolabel.store.journal import edit_proxies
from pseudolabel.store.layout import RESULT_DATASETS
from pseudolabel.store.names import key_to_name
from pseudolabel.store.proxies import ProxyFile, open_proxies
from tests.sgm.test_sgm_batch import DATA, make_pairs

PARAMS = SGMParams(max_disp=16)
KEYS = ["a", "b", "c", "seq/d", "seq/e"]


def read_all(path: Path) -> dict[str, Any]:
    """Everything a reader sees through open_proxies: keys, attributes, params, datasets and their values."""
    seen: dict[str, Any] = {}
    with open_proxies(path) as proxies:
        seen["root"] = (proxies.sgm_params, proxies.max_disp_from_calib, proxies.store, proxies.identity)
        for key in proxies.keys():
            arrays = proxies.read(key)
            seen[key] = (
                proxies.pair_attrs(key),
                proxies.pair_params(key),
                proxies.datasets(key),
                proxies.list_confidences(key),
                key in proxies,
                {name: (array.dtype.str, array.tobytes()) for name, array in arrays.items()},
            )
    return seen


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    return make_pairs(tmp_path / "data", KEYS)


def test_sharded_reads_like_one_file(tmp_path: Path, dataset: tuple[Path, Path]) -> None:
    plain, sharded = tmp_path / "plain.h5", tmp_path / "sharded.h5"
    run_sgm(dataset, plain, PARAMS)
    run_sgm(dataset, sharded, PARAMS, shard_size=2)
    assert read_all(sharded) == read_all(plain)
    # the layout: an index of external links, three shards of at most two pairs
    assert sorted(p.name for p in (tmp_path / "sharded.h5.shards").iterdir()) == ["00000.h5", "00001.h5", "00002.h5"]
    with h5py.File(sharded, "r") as index:
        assert index.attrs["format_version"] == 2 and index.attrs["shard_size"] == 2
        link = index["pairs"].get("seq%2Fd", getlink=True)
        assert isinstance(link, h5py.ExternalLink) and link.filename == "sharded.h5.shards/00001.h5"
    with h5py.File(plain, "r") as one:
        assert one.attrs["format_version"] == 1  # an unsharded full file keeps version 1 (older readers read it)
    assert sharded.stat().st_size < plain.stat().st_size / 5
    table = describe_proxies(sharded).splitlines()
    assert "sharded: 3 shards of up to 2 pairs in" in "\n".join(table)
    assert [line for line in table if line.startswith("  ")] == [line for line in describe_proxies(plain).splitlines() if line.startswith("  ")]
    # index and shards move together (links are relative to the index's folder)
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(str(sharded), moved / "sharded.h5")
    shutil.move(str(tmp_path / "sharded.h5.shards"), moved / "sharded.h5.shards")
    assert read_all(moved / "sharded.h5") == read_all(plain)


def test_commands_read_sharded_like_one_file(tmp_path: Path, dataset: tuple[Path, Path]) -> None:
    """inspect, confidence score, labels, confidence eval and show give the same on both layouts."""
    outputs = {}
    for name, extra in (("plain", []), ("sharded", ["--shard-size", "2"])):
        out = tmp_path / f"{name}.h5"
        runner = CliRunner()
        steps = [
            ["sgm", "--in", str(dataset[0]), str(dataset[1]), "--out", str(out), "--max-disp", "16", *extra],
            ["confidence", "score", "--proxies", str(out), "--model", "none", "--measures", "all"],
            ["labels", "--proxies", str(out), "--measure", "apkr", "--tau", "0.5"],
            ["show", str(out), "--measure", "apkr", "--out", str(tmp_path / f"{name}_pictures")],
            ["inspect", str(out), "--all"],
        ]
        printed = []
        for step in steps:
            result = runner.invoke(main, step)
            assert result.exit_code == 0, (step, result.output)
            printed.append(result.output.replace(str(tmp_path), "TMP").replace(name, "NAME"))
        # the labels table without the progress lines (their rates differ from run to run)
        table = [line for line in printed[2].splitlines() if not re.match(r"^[\w ]+: \d+/\d+, ", line)]
        outputs[name] = (read_all(out), [line for line in printed[-1].splitlines() if line.startswith("  ")], table)
        if name == "sharded":
            assert not list((tmp_path / "sharded.h5.shards").glob("*.editing"))
            assert not (tmp_path / "sharded.h5.editing").exists()
    assert outputs["sharded"] == outputs["plain"]
    pictures = {name: digests(tmp_path / f"{name}_pictures") for name in ("plain", "sharded")}
    assert pictures["sharded"].pop("index.html") and pictures["plain"].pop("index.html")  # names the file
    assert pictures["sharded"] == pictures["plain"] and len(pictures["plain"]) > 5
    page = {
        name: (tmp_path / f"{name}_pictures" / "index.html").read_text().replace(str(tmp_path), "TMP").replace(name, "NAME")
        for name in ("plain", "sharded")
    }
    assert page["sharded"] == page["plain"]
    with open_proxies(tmp_path / "sharded.h5") as proxies:
        assert "labels" in proxies.datasets("seq/e") and "confidence/apkr" in proxies.datasets("a")


def test_resume_fills_the_last_shard_and_refuses_another_layout(tmp_path: Path) -> None:
    left, right = make_pairs(tmp_path / "data", KEYS[:3])
    out = tmp_path / "out.h5"
    run_sgm([left, right], out, PARAMS, shard_size=2)
    make_pairs(tmp_path / "data", KEYS)
    summary = run_sgm([left, right], out, PARAMS)  # the layout of the existing file is kept
    assert (summary.already_done, summary.added) == (3, 2)
    with h5py.File(out, "r") as index:
        assert {name: index["pairs"].get(name, getlink=True).filename[-8:] for name in index["pairs"]} == {
            "a": "00000.h5",
            "b": "00000.h5",
            "c": "00001.h5",
            "seq%2Fd": "00001.h5",
            "seq%2Fe": "00002.h5",
        }
    with pytest.raises(InputError, match=r"was written as --shard-size 2, not --shard-size 3"):
        run_sgm([left, right], out, PARAMS, shard_size=3)
    plain = tmp_path / "plain.h5"
    run_sgm([left, right], plain, PARAMS)
    with pytest.raises(InputError, match=r"was written as one file \(no --shard-size\)"):
        run_sgm([left, right], plain, PARAMS, shard_size=3)
    # --overwrite rewrites with the layout asked for, and removes shards no longer used
    run_sgm([left, right], out, PARAMS, overwrite=True, shard_size=5)
    assert sorted(p.name for p in (tmp_path / "out.h5.shards").iterdir()) == ["00000.h5"]
    assert read_all(out) == read_all(plain)
    run_sgm([left, right], out, PARAMS, overwrite=True)
    assert not (tmp_path / "out.h5.shards").exists() and read_all(out) == read_all(plain)


def test_kill_before_the_index_is_renamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards renamed, index not yet: the old index still reads its pairs; the rerun finishes identically."""
    left, right = make_pairs(tmp_path / "data", KEYS[:3])
    out = tmp_path / "out.h5"
    run_sgm([left, right], out, PARAMS, shard_size=2)
    before = read_all(out)
    make_pairs(tmp_path / "data", KEYS)
    real_replace = os.replace

    def dying_replace(source: Any, target: Any) -> None:
        if Path(target) == out:
            raise KeyboardInterrupt  # as if killed right before the index's rename
        real_replace(source, target)

    monkeypatch.setattr(shards_module.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        run_sgm([left, right], out, PARAMS)
    monkeypatch.setattr(shards_module.os, "replace", real_replace)
    assert read_all(out) == before  # shard 00001 gained a pair, the old index does not list it
    assert (tmp_path / "out.h5.journal").is_dir()
    summary = run_sgm([left, right], out, PARAMS)
    assert (summary.matched, summary.added) == (0, 2)
    reference = tmp_path / "reference.h5"
    run_sgm([left, right], reference, PARAMS, shard_size=2)
    assert read_all(out) == read_all(reference)


def test_edits_are_copy_on_write_per_shard(tmp_path: Path, dataset: tuple[Path, Path]) -> None:
    out = tmp_path / "out.h5"
    run_sgm(dataset, out, PARAMS, shard_size=2)
    before = digests(tmp_path / "out.h5.shards")
    with pytest.raises(RuntimeError), edit_proxies(out) as proxies:
        proxies.write("a", "labels", np.zeros((32, 64), np.float32))
        raise RuntimeError("stop")
    assert digests(tmp_path / "out.h5.shards") == before and not list((tmp_path / "out.h5.shards").glob("*.editing"))
    with edit_proxies(out) as proxies:
        proxies.write("seq/e", "labels", np.ones((32, 64), np.float32))
        assert proxies.read("seq/e", ["labels"])["labels"].max() == 1  # read back from the copy
    after = digests(tmp_path / "out.h5.shards")
    assert [name for name in after if after[name] != before[name]] == ["00002.h5"]
    with open_proxies(out) as proxies:
        assert proxies.has("seq/e", "labels") and not proxies.has("a", "labels")
        with pytest.raises(InputError, match="read-only"):
            proxies.write("a", "labels", np.zeros((32, 64), np.float32))
    with open_proxies(out, "r+") as proxies, pytest.raises(InputError, match="sharded index"):
        proxies.delete_pair("a")


def test_store_minimal(tmp_path: Path, dataset: tuple[Path, Path]) -> None:
    full, minimal = tmp_path / "full.h5", tmp_path / "minimal.h5"
    run_sgm(dataset, full, PARAMS)
    run_sgm(dataset, minimal, PARAMS, store="minimal")
    with open_proxies(full) as a, open_proxies(minimal) as b:
        assert b.store == "minimal" and a.store == "full"
        assert b.datasets("a") == ["confidence/ccnn", "disparity", "valid"] and a.datasets("a") == sorted(RESULT_DATASETS)
        for key in a.keys():
            np.testing.assert_array_equal(a.read(key, ["disparity"])["disparity"], b.read(key, ["disparity"])["disparity"])
            assert a.pair_attrs(key) == b.pair_attrs(key)
        assert b.h5.attrs["format_version"] == 2
    assert minimal.stat().st_size < full.stat().st_size / 2
    assert "store minimal: only disparity, valid, confidence/ccnn kept per pair" in describe_proxies(minimal)
    assert "missing" not in describe_proxies(minimal)
    # sgm stored the shipped CCNN's confidence: what `confidence score` computes from the full file, with
    # the same attributes, so that `confidence score` on the minimal file finds it up to date
    threads = numba.get_num_threads()
    assert score_proxies(full, threads=threads).written == ["ccnn"]
    summary = score_proxies(minimal, threads=threads)
    assert (summary.written, summary.kept, summary.unavailable) == ([], ["ccnn"], {})
    with open_proxies(full) as a, open_proxies(minimal) as b:
        for key in a.keys():
            np.testing.assert_array_equal(a.read(key, ["confidence/ccnn"])["confidence/ccnn"], b.read(key, ["confidence/ccnn"])["confidence/ccnn"])
            stored = {name: b.h5["pairs"][key_to_name(key)]["confidence/ccnn"].attrs[name] for name in ("measure", "source", "model_sha256")}
            assert stored == {name: a.h5["pairs"][key_to_name(key)]["confidence/ccnn"].attrs[name] for name in stored}
    # ... and labels from it are those of the full file
    assert label_proxies(minimal, tau=0.5) == label_proxies(full, tau=0.5)
    with pytest.raises(InputError, match="nothing to score: apkr need"):
        score_proxies(minimal, model=None, measures="apkr")
    with pytest.raises(InputError, match="store 'full' in the file, 'minimal' now"):
        run_sgm(dataset, full, PARAMS, store="minimal")
    with pytest.raises(InputError, match="unknown --store"):
        run_sgm(dataset, full, PARAMS, store="tiny")


def test_proxyfile_keys_of_an_index_do_not_open_shards(tmp_path: Path, dataset: tuple[Path, Path]) -> None:
    out = tmp_path / "out.h5"
    run_sgm(dataset, out, PARAMS, shard_size=2)
    shutil.rmtree(tmp_path / "out.h5.shards")
    with ProxyFile(h5py.File(out, "r"), out) as proxies:
        assert proxies.keys() == sorted(KEYS) and proxies.shard_size == 2


@pytest.mark.usefixtures("single_torch_thread")
def test_training_and_export_read_sharded_like_one_file(tmp_path: Path, dataset: tuple[Path, Path]) -> None:
    """confidence train (wild labels), adapt, export and confidence eval: the same model weights, files and
    figures from both layouts."""
    import torch

    from pseudolabel.confidence.checkpoints import load_confidence_checkpoint
    from pseudolabel.learn.checkpoint import save_checkpoint
    from pseudolabel.models.registry import build_network

    torch.manual_seed(0)
    source = tmp_path / "source.pt"
    save_checkpoint(source, {"arch": "tiny", "arch_kwargs": {}, "model": build_network("tiny").state_dict(), "step": 0})
    # ground truth of the crops (tsukuba's, stored x16; 0 = unknown)
    gt_dir = tmp_path / "gt"
    tsukuba = read_image(DATA / "middlebury" / "tsukuba" / "groundtruth.png")[..., 0].astype(np.float32) / 16.0
    for index, key in enumerate(KEYS):
        crop = tsukuba[40 * index : 40 * index + 32, 100:164]
        (gt_dir / key).parent.mkdir(parents=True, exist_ok=True)
        write_pfm(gt_dir / f"{key}.pfm", np.where(crop > 0, crop, np.inf).astype(np.float32))
    results: dict[str, Any] = {}
    for name, extra in (("plain", []), ("sharded", ["--shard-size", "2"])):
        out = tmp_path / f"{name}.h5"
        runner = CliRunner()
        steps = [
            ["sgm", "--in", str(dataset[0]), str(dataset[1]), "--out", str(out), "--max-disp", "16", *extra],
            ["confidence", "score", "--proxies", str(out), "--precision", "float32", "--threads", "1"],
            ["labels", "--proxies", str(out), "--tau", "0.5"],
            ["export", "--proxies", str(out), "--out", str(tmp_path / f"{name}_labels"), "--format", "pfm"],
            # fmt: off
            [
                "confidence",
                "train",
                "--proxies",
                str(out),
                "--labels",
                "wild",
                "--out",
                str(tmp_path / f"{name}_wild.pt"),
                "--epochs",
                "1",
                "--steps-per-epoch",
                "2",
                "--batch-size",
                "2",
                "--crop",
                "16",
                "--filters",
                "8",
                "--fc-filters",
                "8",
                "--threads",
                "1",
            ],
            [
                "adapt",
                "--proxies",
                str(out),
                "--model",
                str(source),
                "--out",
                str(tmp_path / f"{name}_adapted.pt"),
                "--steps",
                "2",
                "--budget",
                "none",
                "--crop",
                "32x64",
                "--batch-size",
                "1",
                "--threads",
                "1",
                "--quiet",
                "--schedule",
                "constant",
                "--device",
                "cpu",
            ],
            # fmt: on
            [
                "confidence",
                "eval",
                "--proxies",
                str(out),
                "--gt",
                str(gt_dir),
                "--measures",
                "ccnn,apkr,lrc",
                "--per-pair",
                "--json",
                str(tmp_path / f"{name}_eval.json"),
            ],
        ]
        printed = []
        for step in steps:
            result = runner.invoke(main, step)
            assert result.exit_code == 0, (step, result.output)
            printed.append(result.output)
        evaluation = [line for line in printed[-1].splitlines() if not re.match(r"^[\w ]+: \d+/\d+, ", line)]
        states = {
            "wild": load_confidence_checkpoint(tmp_path / f"{name}_wild.pt")[0].state_dict(),
            "adapted": torch.load(tmp_path / f"{name}_adapted.pt", map_location="cpu", weights_only=False)["model"],
        }
        weights = {model: {key: value.numpy().tobytes() for key, value in state.items()} for model, state in states.items()}
        exported = digests(tmp_path / f"{name}_labels")
        exported.pop("README.txt")  # names the proxies file: compared below without the name
        readme = (tmp_path / f"{name}_labels" / "README.txt").read_text()
        report = (tmp_path / f"{name}_eval.json").read_text().replace(str(tmp_path), "TMP").replace(name, "NAME")
        results[name] = (weights, exported, readme.replace(str(tmp_path), "TMP").replace(name, "NAME"), evaluation, report)
    assert results["sharded"] == results["plain"]
    assert len(results["plain"][1]) >= len(KEYS) and len(results["plain"][0]["adapted"]) > 4
    assert any("apkr" in line for line in results["plain"][3]) and any(line.startswith("seq/e") for line in results["plain"][3])
