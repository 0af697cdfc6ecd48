"""The proxies HDF5 contract (pseudolabel.store): layout, reading, writing, crash-safe runs.

These tests build results from random arrays (no SGM needed); tests/test_cli_sgm.py covers the
command end to end with the real matcher.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from pseudolabel.errors import InputError
from pseudolabel.sgm.params import SGMParams
from pseudolabel.store.datasets_io import chunk_shape
from pseudolabel.store.journal import ProxyRun, create_or_open_proxies, edit_proxies, write_journal_entry
from pseudolabel.store.layout import FORMAT, FORMAT_VERSION, RESULT_DATASETS, pair_attributes, result_arrays
from pseudolabel.store.names import journal_path, key_to_name, name_to_key, partial_path
from pseudolabel.store.proxies import open_proxies


def fake_result(seed: int, shape: tuple[int, int] = (23, 37)) -> dict[str, np.ndarray]:
    """Random arrays with the dtypes and value kinds of an SGMResult."""
    rng = np.random.default_rng(seed)
    disparity = rng.uniform(0, 16, shape).astype(np.float32)
    return {
        "disparity": disparity,
        "valid": rng.random(shape) < 0.7,
        "disparity_right": rng.uniform(0, 16, shape).astype(np.float32),
        "cost_best": rng.integers(0, 700, shape).astype(np.float32),
        "cost_second": rng.integers(700, 1400, shape).astype(np.float32),
        "cost_second_local": rng.integers(700, 2000, shape).astype(np.float32),
        "cost_mean": rng.uniform(300, 1100, shape).astype(np.float32),
        "disparity_wta": np.round(disparity).astype(np.int16),
    }


def attrs_for(key: str, arrays: dict[str, np.ndarray], params: SGMParams = SGMParams()) -> dict:
    return pair_attributes(key, f"left/{key}.png", f"right/{key}.png", params, arrays["disparity"].shape, arrays["valid"])


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_key_mapping_is_flat_and_reversible() -> None:
    keys = ["000046_10", "training/000046_10", "a%2Fb", "a/b/c", "100%", "%", ".", "x.y"]
    names = [key_to_name(key) for key in keys]
    assert all("/" not in name for name in names)
    assert len(set(names)) == len(keys)
    assert [name_to_key(name) for name in names] == keys
    with pytest.raises(InputError):
        key_to_name("")


def test_write_read_roundtrip_with_slash_keys(tmp_path: Path) -> None:
    path = tmp_path / "p.h5"
    params = SGMParams(max_disp=16)
    results = {key: fake_result(i) for i, key in enumerate(["b/2", "a", "b/1"])}
    with create_or_open_proxies(path, params) as proxies:
        for key, arrays in results.items():
            proxies.write_pair(key, result_arrays(arrays), attrs_for(key, arrays, params))
    with open_proxies(path) as proxies:
        assert proxies.keys() == ["a", "b/1", "b/2"]
        assert proxies.sgm_params == params
        assert (
            proxies.attrs["format"] == FORMAT and proxies.attrs["format_version"] == 1 < FORMAT_VERSION
        )  # plain files stay v1; v2 = sharded or minimal
        assert set(proxies.h5["pairs"].keys()) == {"a", "b%2F1", "b%2F2"}
        for key, arrays in results.items():
            stored = proxies.read(key)
            assert set(stored) == set(RESULT_DATASETS)
            for name, array in arrays.items():
                assert stored[name].dtype == RESULT_DATASETS[name]
                np.testing.assert_array_equal(stored[name], array.astype(RESULT_DATASETS[name]))
            attrs = proxies.pair_attrs(key)
            assert (attrs["height"], attrs["width"]) == arrays["disparity"].shape
            assert attrs["key"] == key and attrs["complete"] is True
            assert attrs["valid_fraction"] == pytest.approx(arrays["valid"].mean())
            assert proxies.pair_params(key) == params
        only = proxies.read("a", ["disparity", "valid"])
        assert list(only) == ["disparity", "valid"]


def test_integer_costs_stored_narrow_but_read_as_float(tmp_path: Path) -> None:
    arrays = fake_result(3)
    narrow = result_arrays(arrays)
    assert narrow["cost_best"].dtype == np.uint16 and narrow["cost_mean"].dtype == np.float32
    fractional = dict(arrays, cost_best=arrays["cost_best"] + np.float32(0.5))
    assert result_arrays(fractional)["cost_best"].dtype == np.float32
    path = tmp_path / "p.h5"
    with create_or_open_proxies(path, SGMParams()) as proxies:
        proxies.write_pair("n", narrow, attrs_for("n", arrays))
        proxies.write_pair("f", result_arrays(fractional), attrs_for("f", arrays))
    with open_proxies(path) as proxies:
        assert proxies.h5["pairs/n/cost_best"].dtype == np.uint16
        np.testing.assert_array_equal(proxies.read("n", ["cost_best"])["cost_best"], arrays["cost_best"])
        np.testing.assert_array_equal(proxies.read("f", ["cost_best"])["cost_best"], fractional["cost_best"])


def test_datasets_are_chunked_and_compressed_per_pair(tmp_path: Path) -> None:
    path = tmp_path / "p.h5"
    arrays = fake_result(0, shape=(301, 1001))
    with create_or_open_proxies(path, SGMParams()) as proxies:
        proxies.write_pair("k", result_arrays(arrays), attrs_for("k", arrays))
    with h5py.File(path, "r") as h5file:
        dataset = h5file["pairs/k/disparity"]
        assert dataset.compression == "lzf" and dataset.shuffle  # default "lzf": every map, floats too
        rows, width = dataset.chunks
        assert width == 1001 and rows < 301 and rows * width * 4 <= (1 << 20)
        # rows spread evenly over the bands: the padding of the last band is less than one row per band
        bands = -(-301 // rows)
        assert bands == 2 and bands * rows - 301 < bands
        assert h5file["pairs/k/cost_best"].dtype == np.uint16
        assert h5file["pairs/k/cost_best"].compression == "lzf"
        wta = h5file["pairs/k/disparity_wta"]
        assert wta.compression == "lzf" and wta.shuffle
        assert h5file["pairs/k/valid"].compression == "lzf"


@pytest.mark.parametrize("height", [1, 7, 262, 263, 1000, 4097])
def test_chunk_bands_are_even_and_at_most_one_mebibyte(height: int) -> None:
    width = 1000
    rows, chunk_width = chunk_shape((height, width), 4)
    assert chunk_width == width and 1 <= rows <= height
    assert rows * width * 4 <= (1 << 20)
    bands = -(-height // rows)
    assert bands == -(-height // ((1 << 20) // (width * 4)))  # as many bands as full 1 MiB bands would need
    assert bands * rows - height < bands


def test_confidence_and_labels(tmp_path: Path) -> None:
    path = tmp_path / "p.h5"
    arrays = fake_result(1)
    with create_or_open_proxies(path, SGMParams()) as proxies:
        proxies.write_pair("k", result_arrays(arrays), attrs_for("k", arrays))
    confidence = np.linspace(0, 1, arrays["disparity"].size, dtype=np.float64).reshape(arrays["disparity"].shape)
    labels = np.where(confidence > 0.5, arrays["disparity"], np.nan)
    with open_proxies(path, "r+") as proxies:
        proxies.write("k", "confidence/ccnn", confidence, attrs={"model": "ccnn-v1"})
        proxies.write("k", "confidence/pkrn", 1 - confidence)
        proxies.write("k", "labels", labels, attrs={"tau": 0.5})
        with pytest.raises(InputError, match="already has"):
            proxies.write("k", "labels", labels, overwrite=False)
        with pytest.raises(InputError, match=r"\[0, 1\]"):
            proxies.write("k", "confidence/bad", confidence * 2)
        with pytest.raises(InputError, match="shape"):
            proxies.write("k", "confidence/bad", confidence[1:])
        with pytest.raises(InputError, match="no pair"):
            proxies.write("missing", "labels", labels)
    with open_proxies(path) as proxies:
        assert proxies.list_confidences("k") == ["ccnn", "pkrn"]
        assert proxies.has("k", "confidence/ccnn") and proxies.has("k", "labels") and not proxies.has("k", "confidence/x")
        stored = proxies.read("k", ["confidence/ccnn", "labels"])
        assert stored["confidence/ccnn"].dtype == np.float32
        # float32 on disk, read back exactly
        np.testing.assert_array_equal(stored["confidence/ccnn"], confidence.astype(np.float32))
        assert proxies.h5["pairs/k/confidence/ccnn"].dtype == np.float32
        np.testing.assert_array_equal(np.isnan(stored["labels"]), confidence <= 0.5)
        # labels taken from the disparity are stored as a mask of it and read back exactly
        assert proxies.h5["pairs/k/labels"].dtype == bool and stored["labels"].dtype == np.float32
        np.testing.assert_array_equal(stored["labels"], labels.astype(np.float32))
        assert proxies.h5["pairs/k/confidence/ccnn"].attrs["model"] == "ccnn-v1"
        with pytest.raises(InputError, match="read-only"):
            proxies.write("k", "labels", labels)


def test_incomplete_pair_is_not_listed(tmp_path: Path) -> None:
    path = tmp_path / "p.h5"
    arrays = fake_result(2)
    with create_or_open_proxies(path, SGMParams()) as proxies:
        proxies.write_pair("done", result_arrays(arrays), attrs_for("done", arrays))
        proxies.h5["pairs"].create_group("half").create_dataset("disparity", data=arrays["disparity"])
    with open_proxies(path) as proxies:
        assert proxies.keys() == ["done"] and "half" not in proxies and "done" in proxies


def test_reopen_with_other_params_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.h5"
    create_or_open_proxies(path, SGMParams(p2=86)).close()
    with pytest.raises(InputError, match=r"p2 86 in the file, 100 now"):
        create_or_open_proxies(path, SGMParams(p2=100))
    with create_or_open_proxies(path, SGMParams(p2=100), overwrite=True) as proxies:
        assert proxies.sgm_params.p2 == 100


def test_open_errors_are_one_line(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    with pytest.raises(InputError, match="corrupt or not an HDF5 file") as caught:
        open_proxies(garbage)
    assert "\n" not in str(caught.value)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as h5file:
        h5file["x"] = 1
    with pytest.raises(InputError, match="not a pseudolabel proxies file"):
        open_proxies(foreign)
    with pytest.raises(InputError, match="no such proxies file"):
        open_proxies(tmp_path / "missing.h5")
    (tmp_path / "pending.h5.journal").mkdir()
    with pytest.raises(InputError, match="rerun the same command"):
        open_proxies(tmp_path / "pending.h5")


def test_edit_proxies_keeps_original_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "p.h5"
    arrays = fake_result(4)
    with create_or_open_proxies(path, SGMParams()) as proxies:
        proxies.write_pair("k", result_arrays(arrays), attrs_for("k", arrays))
    before = file_digest(path)
    with pytest.raises(RuntimeError):
        with edit_proxies(path) as proxies:
            proxies.write("k", "labels", arrays["disparity"])
            raise RuntimeError("simulated crash")
    assert file_digest(path) == before
    assert not (tmp_path / "p.h5.editing").exists()
    with edit_proxies(path) as proxies:
        proxies.write("k", "labels", arrays["disparity"])
    with open_proxies(path) as proxies:
        assert proxies.has("k", "labels")


# ---------------------------------------------------------------------------------------------
# ProxyRun: journal, resume, atomic replacement


def run_pairs(out: Path, keys: list[str], params: SGMParams = SGMParams(), overwrite: bool = False, fail_after: int | None = None) -> ProxyRun:
    with ProxyRun(out, params, False, overwrite) as run:
        for count, key in enumerate(k for k in keys if k not in run.state.done):
            if fail_after is not None and count == fail_after:
                raise KeyboardInterrupt
            arrays = result_arrays(fake_result(int(key)))
            run.record(key, write_journal_entry(run.journal, key, arrays, attrs_for(key, arrays, params), run.identity))
        run.finish()
    return run


def read_all(path: Path) -> dict:
    with open_proxies(path) as proxies:
        return {
            "root": {k: v for k, v in proxies.attrs.items()},
            "pairs": {key: (proxies.pair_attrs(key), proxies.read(key)) for key in proxies.keys()},
        }


def assert_same_content(first: dict, second: dict) -> None:
    assert first["root"] == second["root"]
    assert list(first["pairs"]) == list(second["pairs"])
    for key, (attrs, arrays) in first["pairs"].items():
        other_attrs, other_arrays = second["pairs"][key]
        assert attrs == other_attrs
        assert set(arrays) == set(other_arrays)
        for name in arrays:
            assert arrays[name].tobytes() == other_arrays[name].tobytes(), (key, name)


def test_run_interrupted_then_resumed_equals_uninterrupted(tmp_path: Path) -> None:
    keys = [str(i) for i in range(6)]
    reference = tmp_path / "reference.h5"
    run_pairs(reference, keys)
    out = tmp_path / "out.h5"
    with pytest.raises(KeyboardInterrupt):
        run_pairs(out, keys, fail_after=3)
    assert not out.exists()
    assert len(list(journal_path(out).glob("*.h5"))) == 3
    resumed = run_pairs(out, keys)
    assert resumed.state.done_in_journal.keys() >= {"0", "1", "2"}
    assert not journal_path(out).exists() and not partial_path(out).exists()
    assert_same_content(read_all(out), read_all(reference))


def test_adding_pairs_never_touches_existing_file_until_done(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    run_pairs(out, ["0", "1"])
    before = file_digest(out)
    with pytest.raises(KeyboardInterrupt):
        run_pairs(out, ["0", "1", "2", "3", "4"], fail_after=2)
    assert file_digest(out) == before
    run = run_pairs(out, ["0", "1", "2", "3", "4"])
    assert run.state.done_in_file == {"0", "1"}
    reference = tmp_path / "reference.h5"
    run_pairs(reference, ["0", "1", "2", "3", "4"])
    assert_same_content(read_all(out), read_all(reference))


def test_crash_during_assembly_keeps_output_and_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.h5"
    run_pairs(out, ["0"])
    before = file_digest(out)
    copies = {"n": 0}
    original_copy = h5py.Group.copy

    def failing_copy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        copies["n"] += 1
        if copies["n"] == 2:
            raise OSError("simulated crash while copying")
        return original_copy(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "copy", failing_copy)
    with pytest.raises(OSError, match="simulated"):
        run_pairs(out, ["0", "1", "2", "3"])
    monkeypatch.undo()
    assert file_digest(out) == before
    assert len(list(journal_path(out).glob("*.h5"))) == 3
    # a stale <out>.partial from a killed assembly is discarded on the next run
    partial_path(out).write_bytes(b"half-written garbage")
    run = run_pairs(out, ["0", "1", "2", "3"])
    assert any("partial" in note for note in run.state.notes)
    reference = tmp_path / "reference.h5"
    run_pairs(reference, ["0", "1", "2", "3"])
    assert_same_content(read_all(out), read_all(reference))


def test_damaged_journal_entry_is_recomputed(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    with pytest.raises(KeyboardInterrupt):
        run_pairs(out, ["0", "1", "2"], fail_after=2)
    entries = sorted(journal_path(out).glob("*.h5"))
    entries[0].write_bytes(entries[0].read_bytes()[:500])
    (journal_path(out) / ".stale.123.tmp").write_bytes(b"x")
    run = run_pairs(out, ["0", "1", "2"])
    assert any("damaged journal entry" in note for note in run.state.notes)
    reference = tmp_path / "reference.h5"
    run_pairs(reference, ["0", "1", "2"])
    assert_same_content(read_all(out), read_all(reference))


def test_other_parameters_refused_for_file_and_journal(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    run_pairs(out, ["0"])
    before = file_digest(out)
    with pytest.raises(InputError, match=f"different SGM parameters.*p1 {SGMParams().p1} in the file, 5 now"):
        run_pairs(out, ["0", "1"], params=SGMParams(p1=5))
    assert file_digest(out) == before
    pending = tmp_path / "pending.h5"
    with pytest.raises(KeyboardInterrupt):
        run_pairs(pending, ["0", "1", "2"], fail_after=1)
    with pytest.raises(InputError, match="interrupted run with different SGM parameters"):
        run_pairs(pending, ["0", "1", "2"], params=SGMParams(p1=5))
    assert len(list(journal_path(pending).glob("*.h5"))) == 1
    run = run_pairs(pending, ["0", "1", "2"], params=SGMParams(p1=5), overwrite=True)
    assert any("discarded 1 pairs" in note for note in run.state.notes)
    with open_proxies(pending) as proxies:
        assert proxies.sgm_params.p1 == 5 and proxies.keys() == ["0", "1", "2"]


def test_overwrite_replaces_only_at_the_end(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    run_pairs(out, ["0", "1", "5"])
    before = file_digest(out)
    with pytest.raises(KeyboardInterrupt):
        run_pairs(out, ["0", "1"], params=SGMParams(p2=90), overwrite=True, fail_after=1)
    assert file_digest(out) == before
    run_pairs(out, ["0", "1"], params=SGMParams(p2=90), overwrite=True)
    with open_proxies(out) as proxies:
        assert proxies.sgm_params.p2 == 90 and proxies.keys() == ["0", "1"]


def test_second_writer_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    with ProxyRun(out, SGMParams()):
        with pytest.raises(InputError, match="another process is writing"):
            with ProxyRun(out, SGMParams()):
                pass
    with ProxyRun(out, SGMParams()):  # the lock is released afterwards
        pass


KILL_HOOKS = {
    # kill point -> code run in the subprocess before it starts the run
    "between_pairs": """
original = store.write_journal_entry
def hooked(*args, **kwargs):
    calls["n"] += 1
    if calls["n"] == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
test_store.write_journal_entry = hooked
""",
    "inside_journal_entry_write": """
original = store.os.replace
def hooked(source, target, *args, **kwargs):
    if str(source).endswith(".tmp") and str(target).endswith(".h5") and Path(target).parent.name.endswith(".journal"):
        calls["n"] += 1
        if calls["n"] == 2:   # the 2nd entry's bytes are on disk under its temporary name, not yet renamed
            os.kill(os.getpid(), signal.SIGKILL)
    return original(source, target, *args, **kwargs)
store.os.replace = hooked
""",
    "inside_assembly": """
original = h5py.Group.copy
def hooked(self, *args, **kwargs):
    calls["n"] += 1
    if calls["n"] == 3:    # <out>.partial holds the old pairs and two new ones
        self.file.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, *args, **kwargs)
h5py.Group.copy = hooked
""",
    "before_rename": """
original = os.replace
def hooked(source, target, *args, **kwargs):
    if str(target).endswith("out.h5"):
        os.kill(os.getpid(), signal.SIGKILL)
    return original(source, target, *args, **kwargs)
store.os.replace = hooked
""",
}


@pytest.mark.parametrize("kill_point", list(KILL_HOOKS))
def test_kill_9_at_every_risky_point(tmp_path: Path, kill_point: str) -> None:
    """A real SIGKILL of a process writing pairs: the existing output is untouched and a rerun ends
    with exactly the content of an uninterrupted run."""
    keys = [str(i) for i in range(5)]
    out = tmp_path / "out.h5"
    run_pairs(out, ["0", "1"])
    before = file_digest(out)
    script = f"""
import os, signal, sys
from pathlib import Path
import h5py
sys.path.insert(0, {str(Path(__file__).parent)!r})
import test_store
import pseudolabel.store.journal as store
calls = {{"n": 0}}
{KILL_HOOKS[kill_point]}
test_store.run_pairs(Path({str(out)!r}), {keys!r})
"""
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert completed.returncode == -9, completed.stderr
    assert file_digest(out) == before
    journal = journal_path(out)
    left_behind = (len(list(journal.glob("*.h5"))), len(list(journal.glob(".*.tmp"))), partial_path(out).exists())
    assert (
        left_behind
        == {
            "between_pairs": (2, 0, False),
            "inside_journal_entry_write": (1, 1, False),  # the half-written entry is only a temporary file
            "inside_assembly": (3, 0, True),
            "before_rename": (3, 0, True),
        }[kill_point]
    )
    run = run_pairs(out, keys)
    assert run.state.done_in_file == {"0", "1"}
    reference = tmp_path / "reference.h5"
    run_pairs(reference, keys)
    assert_same_content(read_all(out), read_all(reference))
    assert not journal_path(out).exists() and not partial_path(out).exists()


def test_stale_header_of_other_overwrite_run_does_not_force_recompute(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    run_pairs(out, ["0", "1"])
    journal_path(out).mkdir()
    header = {"identity": json.loads(ProxyRun(out, SGMParams(p1=3)).identity), "fresh": True}
    (journal_path(out) / "run.json").write_text(json.dumps(header))
    run = run_pairs(out, ["0", "1", "2"])
    assert not run.state.fresh and run.state.done_in_file == {"0", "1"}
    same = {"identity": json.loads(ProxyRun(out, SGMParams()).identity), "fresh": True}
    journal_path(out).mkdir()
    (journal_path(out) / "run.json").write_text(json.dumps(same))
    run = run_pairs(out, ["0", "1", "2"])  # continuing an interrupted --overwrite run recomputes everything
    assert run.state.fresh and run.state.done_in_file == set()
