"""In-place edits of a proxies file (pseudolabel.store.edits, journal.edit_proxies) and the stored encodings.

An edit writes only what it adds, never a byte of the file as it was before it commits, and a real
SIGKILL at any point leaves a file that a reader opens as before the edit (or with its committed
pairs) and that a rerun completes.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from pseudolabel.confidence.labels import DEFAULT_TAU, threshold_labels
from pseudolabel.errors import InputError
from pseudolabel.sgm.params import SGMParams
from pseudolabel.store import edits
from pseudolabel.store.journal import EditStats, create_or_open_proxies, edit_proxies
from pseudolabel.store.layout import FORMAT_VERSION, pair_attributes, result_arrays
from pseudolabel.store.proxies import open_proxies

KEYS = [f"seq/{index:03d}" for index in range(6)]
SHAPE = (96, 160)


def fake_pair(seed: int, shape: tuple[int, int] = SHAPE) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    disparity = rng.uniform(0, 40, shape).astype(np.float32)
    return {
        "disparity": disparity,
        "valid": rng.random(shape) < 0.7,
        "disparity_right": rng.uniform(0, 40, shape).astype(np.float32),
        "cost_best": rng.integers(0, 700, shape).astype(np.float32),
        "cost_second": rng.integers(700, 1400, shape).astype(np.float32),
        "cost_second_local": rng.integers(700, 2000, shape).astype(np.float32),
        "cost_mean": rng.uniform(300, 1100, shape).astype(np.float32),
        "disparity_wta": np.round(disparity).astype(np.int16),
    }


def fake_confidence(key: str) -> np.ndarray:
    rng = np.random.default_rng(KEYS.index(key) + 100)
    return rng.random(SHAPE).astype(np.float32)


def make_file(path: Path, keys: list[str] = KEYS, with_confidence: bool = True) -> Path:
    with create_or_open_proxies(path, SGMParams()) as proxies:
        for index, key in enumerate(keys):
            arrays = fake_pair(index)
            attrs = pair_attributes(key, f"l/{key}.png", f"r/{key}.png", SGMParams(), SHAPE, arrays["valid"])
            proxies.write_pair(key, result_arrays(arrays), attrs)
    if with_confidence:
        with edit_proxies(path) as proxies:
            for key in keys:
                proxies.write(key, "confidence/ccnn", fake_confidence(key), attrs={"measure": "ccnn"})
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def chunk_bytes(path: Path) -> dict[str, bytes]:
    """The raw stored bytes of every chunk of every dataset, by dataset path and chunk index."""
    found: dict[str, bytes] = {}
    raw = path.read_bytes()
    with h5py.File(path, "r") as h5file:

        def visit(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset) and obj.chunks:
                for index in range(obj.id.get_num_chunks()):
                    info = obj.id.get_chunk_info(index)
                    found[f"{name}#{index}"] = raw[info.byte_offset : info.byte_offset + info.size]

        h5file.visititems(visit)
    return found


def contents(path: Path) -> dict[str, dict[str, np.ndarray]]:
    with open_proxies(path) as proxies:
        return {key: proxies.read(key) for key in proxies.keys()}


# ---------------------------------------------------------------------------------------------
# edits write what they add


def test_edit_writes_only_the_new_datasets(tmp_path: Path) -> None:
    path = make_file(tmp_path / "p.h5")
    size_before = path.stat().st_size
    chunks_before = chunk_bytes(path)
    stats = EditStats()
    with edit_proxies(path, stats) as proxies:
        for key in KEYS:
            disparity = proxies.read(key, ["disparity"])["disparity"]
            proxies.write(key, "labels", threshold_labels(disparity, fake_confidence(key), DEFAULT_TAU))
    chunks_after = chunk_bytes(path)
    # every chunk that existed is where it was, byte for byte; the only new chunks are the labels'
    assert {name: chunks_after[name] for name in chunks_before} == chunks_before
    new = {name: data for name, data in chunks_after.items() if name not in chunks_before}
    assert new and all("/labels#" in name for name in new)
    labels_bytes = sum(len(data) for data in new.values())
    growth = path.stat().st_size - size_before
    # the file grows by the labels (boolean masks, compressed) and a little metadata, not by a copy
    assert labels_bytes <= growth <= labels_bytes + 64 * 1024 and growth < size_before / 10
    # what was written: the appended bytes, plus a few existing metadata pages (twice: log and file)
    assert stats.appended >= growth and stats.appended <= growth + 64 * 1024
    assert 0 < stats.rewritten <= 64 * 1024 and stats.logged >= stats.rewritten
    assert not edits.log_path(path).exists()
    with open_proxies(path) as proxies:
        for key in KEYS:
            disparity = proxies.read(key, ["disparity"])["disparity"]
            expected = threshold_labels(disparity, fake_confidence(key), DEFAULT_TAU)
            np.testing.assert_array_equal(proxies.read(key, ["labels"])["labels"], expected)


def test_failed_edit_leaves_the_file_byte_identical(tmp_path: Path) -> None:
    path = make_file(tmp_path / "p.h5")
    before = digest(path)
    with pytest.raises(RuntimeError):
        with edit_proxies(path) as proxies:
            proxies.write(KEYS[0], "labels", np.zeros(SHAPE, np.float32))
            proxies.write(KEYS[0], "confidence/other", np.ones(SHAPE, np.float32))
            raise RuntimeError("simulated failure")
    assert digest(path) == before and not edits.log_path(path).exists()


def test_replacing_a_dataset_in_place(tmp_path: Path) -> None:
    path = make_file(tmp_path / "p.h5")
    for tau in (0.5, 0.9, 0.5):
        with edit_proxies(path) as proxies:
            for key in KEYS:
                disparity = proxies.read(key, ["disparity"])["disparity"]
                proxies.write(key, "labels", threshold_labels(disparity, fake_confidence(key), tau), attrs={"tau": tau})
    with open_proxies(path) as proxies:
        for key in KEYS:
            labels = proxies.read(key, ["labels"])["labels"]
            assert abs(np.isfinite(labels).mean() - 0.5) < 0.05
            assert proxies.h5["pairs"][key.replace("/", "%2F")]["labels"].attrs["tau"] == 0.5


def test_readers_and_a_second_editor_wait_for_a_running_edit(tmp_path: Path) -> None:
    path = make_file(tmp_path / "p.h5")
    with edit_proxies(path) as proxies:
        proxies.write(KEYS[0], "labels", np.zeros(SHAPE, np.float32))
        with pytest.raises(InputError, match="open for writing by another process"):
            open_proxies(path)
        with pytest.raises(InputError, match="another process is writing"):
            with edit_proxies(path):
                pass
    reader = open_proxies(path)
    try:
        with pytest.raises(InputError, match="open in another process"):
            with edit_proxies(path):
                pass
    finally:
        reader.close()
    with open_proxies(path) as proxies:
        assert proxies.has(KEYS[0], "labels")


# ---------------------------------------------------------------------------------------------
# SIGKILL in the middle of a real `labels` edit

KILL_HOOKS = {
    # the third pair's labels are written, inside the second batch (commit after every pair)
    "mid_edit": """
original = ProxyFile.write
def hooked(self, *args, **kwargs):
    calls["n"] += 1
    result = original(self, *args, **kwargs)
    if calls["n"] == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return result
ProxyFile.write = hooked
""",
    # the third batch's log says "committed", nothing of it is in the file yet
    "after_commit_point": """
original = edits._write_log
def hooked(path, header, records):
    result = original(path, header, records)
    if header["state"] == "committed":
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGKILL)
    return result
edits._write_log = hooked
""",
    # the third batch's commit has written one page of metadata into the file: a torn HDF5 file
    "mid_apply": """
original_log, original_pwrite = edits._write_log, os.pwrite
def hooked_log(path, header, records):
    result = original_log(path, header, records)
    if header["state"] == "committed":
        calls["n"] += 1
        calls["applying"] = calls["n"] == 3
    return result
def hooked_pwrite(fd, data, offset):
    written = original_pwrite(fd, data, offset)
    if calls.get("applying"):
        os.kill(os.getpid(), signal.SIGKILL)
    return written
edits._write_log = hooked_log
os.pwrite = hooked_pwrite
""",
}


@pytest.mark.parametrize("kill_point", list(KILL_HOOKS))
def test_kill_9_during_labels_then_reader_then_rerun(tmp_path: Path, kill_point: str) -> None:
    path = make_file(tmp_path / "p.h5")
    before = contents(path)
    script = f"""
import os, signal
from pathlib import Path
from pseudolabel.confidence import files, labelling
from pseudolabel.store import edits
from pseudolabel.store.proxies import ProxyFile
calls = {{"n": 0}}
files.COMMIT_SECONDS = 0.0   # one commit per pair
{KILL_HOOKS[kill_point]}
labelling.label_proxies(Path({str(path)!r}), tau=0.5)
"""
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert completed.returncode == -9, completed.stderr
    assert edits.log_path(path).exists()
    # a plain reader: finishes or undoes the interrupted edit, then sees whole pairs only
    after_kill = contents(path)
    assert not edits.log_path(path).exists()
    labelled = [key for key, arrays in after_kill.items() if "labels" in arrays]
    assert labelled == KEYS[: {"mid_edit": 2, "after_commit_point": 3, "mid_apply": 3}[kill_point]]
    for key in KEYS:  # everything that was there before is unchanged
        for name, array in before[key].items():
            np.testing.assert_array_equal(after_kill[key][name], array)
    # HDF5 itself sees a sound file
    with h5py.File(path, "r") as h5file:
        h5file.visititems(lambda name, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)
    # a rerun completes it: the same content as an uninterrupted run
    from pseudolabel.confidence.labelling import label_proxies

    label_proxies(path, tau=0.5)
    reference = make_file(tmp_path / "reference.h5")
    label_proxies(reference, tau=0.5)
    final, expected = contents(path), contents(reference)
    assert list(final) == list(expected)
    for key in KEYS:
        assert set(final[key]) == set(expected[key])
        for name in expected[key]:
            np.testing.assert_array_equal(final[key][name], expected[key][name])


def test_reader_without_write_access_reads_an_uncommitted_edit_as_before(tmp_path: Path) -> None:
    path = make_file(tmp_path / "p.h5")
    before = contents(path)
    base = edits.begin(path)
    with open(path, "ab") as handle:  # what a killed edit leaves: a log and bytes past the old end
        handle.write(b"\x5a" * 10000)
    assert path.stat().st_size == base + 10000
    # the uncommitted tail is invisible to HDF5 readers even before anyone cleans it up
    with h5py.File(path, "r") as h5file:
        np.testing.assert_array_equal(h5file["pairs/seq%2F000/disparity"][()], before[KEYS[0]]["disparity"])
    assert edits.log_state(path) == "begun"
    assert contents(path).keys() == before.keys()
    assert path.stat().st_size == base and not edits.log_path(path).exists()


# ---------------------------------------------------------------------------------------------
# encodings


def test_format_version_1_files_with_float32_confidences_still_read(tmp_path: Path) -> None:
    path = make_file(tmp_path / "old.h5", with_confidence=False)
    confidence = fake_confidence(KEYS[0])
    labels = np.where(confidence > 0.5, np.float32(3.25), np.float32(np.nan)).astype(np.float32)
    with h5py.File(path, "r+") as h5file:  # a file as pseudolabel 0.1 wrote it
        h5file.attrs["format_version"] = 1
        group = h5file["pairs/seq%2F000"]
        group.create_dataset("confidence/ccnn", data=confidence)
        group.create_dataset("labels", data=labels)
    with open_proxies(path) as proxies:
        assert proxies.attrs["format_version"] == 1
        arrays = proxies.read(KEYS[0], ["confidence/ccnn", "labels"])
        np.testing.assert_array_equal(arrays["confidence/ccnn"], confidence)
        np.testing.assert_array_equal(arrays["labels"], labels)
    with edit_proxies(path) as proxies:  # a new encoded dataset (labels as a mask of the disparity) raises the file's version
        disparity = proxies.read(KEYS[1], ["disparity"])["disparity"]
        half = np.arange(disparity.size).reshape(disparity.shape) % 2 == 0
        proxies.write(KEYS[1], "labels", np.where(half, disparity, np.float32(np.nan)).astype(np.float32))
    with open_proxies(path) as proxies:
        assert proxies.attrs["format_version"] == FORMAT_VERSION == 2
        np.testing.assert_array_equal(proxies.read(KEYS[0], ["confidence/ccnn"])["confidence/ccnn"], confidence)
        assert proxies.h5["pairs/seq%2F001/labels"].dtype == np.bool_


def test_labels_not_taken_from_the_disparity_stay_float32(tmp_path: Path) -> None:
    path = make_file(tmp_path / "p.h5", with_confidence=False)
    labels = np.full(SHAPE, np.nan, np.float32)
    labels[10:20, 10:20] = 7.5
    with edit_proxies(path) as proxies:
        proxies.write(KEYS[0], "labels", labels)
    with open_proxies(path) as proxies:
        assert proxies.h5["pairs/seq%2F000/labels"].dtype == np.float32
        np.testing.assert_array_equal(proxies.read(KEYS[0], ["labels"])["labels"], labels)


def test_unknown_encoding_is_refused(tmp_path: Path) -> None:
    path = make_file(tmp_path / "p.h5")
    with h5py.File(path, "r+") as h5file:
        h5file["pairs/seq%2F000/confidence/ccnn"].attrs["encoding"] = "from-the-future"
    with open_proxies(path) as proxies:
        with pytest.raises(InputError, match="unknown to this pseudolabel"):
            proxies.read(KEYS[0], ["confidence/ccnn"])


def test_rewriting_the_disparity_keeps_the_labels(tmp_path: Path) -> None:
    path = make_file(tmp_path / "p.h5")
    with edit_proxies(path) as proxies:
        disparity = proxies.read(KEYS[0], ["disparity"])["disparity"]
        labels = threshold_labels(disparity, fake_confidence(KEYS[0]), 0.5)
        proxies.write(KEYS[0], "labels", labels, attrs={"tau": 0.5})
        assert proxies.h5["pairs/seq%2F000/labels"].dtype == bool
        proxies.write(KEYS[0], "disparity", disparity + 1)
    with open_proxies(path) as proxies:
        assert proxies.h5["pairs/seq%2F000/labels"].dtype == np.float32
        assert proxies.h5["pairs/seq%2F000/labels"].attrs["tau"] == 0.5
        np.testing.assert_array_equal(proxies.read(KEYS[0], ["labels"])["labels"], labels)


def test_an_unwritable_file_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_file(tmp_path / "p.h5")
    before = digest(path)

    def refuse(*args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied")

    for where in ("begin", "OverlayFile"):  # the log cannot be written / the file cannot be opened for writing
        with monkeypatch.context() as patch:
            patch.setattr(edits, where, refuse)
            with pytest.raises(InputError, match="cannot be edited \\(Permission denied\\)") as caught:
                with edit_proxies(path):
                    pass
        assert "\n" not in str(caught.value)
    assert digest(path) == before and not edits.log_path(path).exists()
