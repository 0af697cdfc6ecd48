"""Raw journal entries (pseudolabel.store.entries) and their place in a run: encoding, checks, enlargement
at assembly, resuming journals that mix them with HDF5 entries."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from pseudolabel.sgm.params import SGMParams
from pseudolabel.store.entries import MAGIC, RAW_ENTRY_FORMAT, decode_raw_entry, encode_raw_entry, raw_entry_supported, read_raw_entry
from pseudolabel.store.journal import ProxyRun, journal_entries, journal_entry_path, write_journal_entry, write_raw_journal_entry
from pseudolabel.store.layout import result_arrays
from pseudolabel.store.names import journal_path
from tests.store.test_store import assert_same_content, attrs_for, fake_result, read_all


def joined(pieces: list[bytes | memoryview]) -> bytes:
    return b"".join(bytes(piece) for piece in pieces)


def small_entry() -> tuple[dict[str, np.ndarray], bytes]:
    """A 3x5 pair whose ``valid`` is kept at factor 2 (2x3) and ``disparity`` at full size."""
    arrays = {
        "disparity": np.arange(15, dtype=np.float32).reshape(3, 5) / 4,
        "valid": np.array([[True, False, True], [False, False, True]]),
    }
    attrs = {"key": "k", "height": 3, "width": 5, "valid_fraction": 0.4, "complete_note": "x", "flag": True}
    pieces = encode_raw_entry("k", arrays, attrs, "ID", "lzf", (3, 5), {"valid": 2}, {"disparity": {"encoding": "none"}})
    return arrays, joined(pieces)


def test_raw_entry_layout_is_magic_length_header_arrays_crc() -> None:
    arrays, data = small_entry()
    assert data[:8] == MAGIC
    (length,) = struct.unpack("<Q", data[8:16])
    header = json.loads(data[16 : 16 + length])
    assert header["format"] == RAW_ENTRY_FORMAT and header["key"] == "k" and header["run_identity"] == "ID"
    assert header["size"] == [3, 5] and header["compression"] == "lzf"
    assert [(d["name"], d["dtype"], d["shape"], d["factor"]) for d in header["datasets"]] == [
        ("disparity", "<f4", [3, 5], 1),
        ("valid", "|b1", [2, 3], 2),
    ]
    # 15 float32 + 6 bools after the header, then the CRC-32 of everything before it
    assert len(data) == 16 + length + 60 + 6 + 4
    assert data[16 + length : 16 + length + 60] == arrays["disparity"].tobytes()
    assert struct.unpack("<I", data[-4:])[0] == zlib.crc32(data[:-4])


def test_raw_entry_round_trip_and_block_enlargement() -> None:
    arrays, data = small_entry()
    entry = decode_raw_entry(data)
    assert (entry.key, entry.identity, entry.compression, entry.size) == ("k", "ID", "lzf", (3, 5))
    assert entry.attrs == {"key": "k", "height": 3, "width": 5, "valid_fraction": 0.4, "complete_note": "x", "flag": True}
    assert type(entry.attrs["flag"]) is bool and type(entry.attrs["height"]) is int
    assert entry.factors == {"disparity": 1, "valid": 2}
    assert entry.dataset_attrs == {"disparity": {"encoding": "none"}}
    full = entry.full_arrays()
    assert list(full) == ["disparity", "valid"]
    np.testing.assert_array_equal(full["disparity"], arrays["disparity"])
    # each value of the 2x3 map over its 2x2 block, cut to 3x5
    expected = np.array(
        [
            [1, 1, 0, 0, 1],
            [1, 1, 0, 0, 1],
            [0, 0, 0, 0, 1],
        ],
        bool,
    )
    np.testing.assert_array_equal(full["valid"], expected)


def test_damaged_raw_entries_are_refused() -> None:
    _, data = small_entry()
    flipped = bytearray(data)
    flipped[-10] ^= 1  # a byte of the arrays
    with pytest.raises(ValueError, match="checksum"):
        decode_raw_entry(bytes(flipped))
    with pytest.raises(ValueError):
        decode_raw_entry(data[:-1])
    with pytest.raises(ValueError, match="not a raw journal entry"):
        decode_raw_entry(b"\x89HDF\r\n\x1a\n" + data[8:])
    with pytest.raises(ValueError, match="not a raw journal entry"):
        decode_raw_entry(b"")
    # a header that promises more bytes than the file holds, with a matching checksum
    (length,) = struct.unpack("<Q", data[8:16])
    header = json.loads(data[16 : 16 + length])
    header["datasets"][1]["shape"] = [3, 3]
    text = json.dumps(header).encode()
    body = MAGIC + struct.pack("<Q", len(text)) + text + data[16 + length : -4]
    with pytest.raises(ValueError, match="do not fill"):
        decode_raw_entry(body + struct.pack("<I", zlib.crc32(body)))


def test_raw_entries_refuse_wrong_shapes_and_inexact_attributes() -> None:
    valid = np.ones((2, 3), bool)
    with pytest.raises(ValueError, match=r"shape \(2, 3\), expected \(3, 5\)"):
        encode_raw_entry("k", {"valid": valid}, {}, "ID", "lzf", (3, 5))
    assert raw_entry_supported({"a": 1, "b": 0.5, "c": "s", "d": False}, {"x": {"e": "f"}})
    assert not raw_entry_supported({"a": np.float32(0.5)})  # JSON would bring it back as float64
    assert not raw_entry_supported({"a": 1}, {"x": {"e": [1, 2]}})
    with pytest.raises(ValueError, match="str, bool, int or float"):
        encode_raw_entry("k", {"valid": valid}, {"a": np.int64(1)}, "ID", "lzf", (2, 3))


def test_raw_and_hdf5_entries_assemble_the_same_file(tmp_path: Path) -> None:
    """A journal of raw entries (two pairs stored at factor 2) gives the same output as one of HDF5 entries of the
    enlarged arrays: datasets, dtypes, chunks, compression and attributes."""
    params = SGMParams()
    outputs = {}
    for kind in ("h5", "raw"):
        out = tmp_path / f"{kind}.h5"
        with ProxyRun(out, params) as run:
            for seed, factor in ((0, 1), (1, 2), (2, 2)):
                key = str(seed)
                small = result_arrays(fake_result(seed, (12, 19)))
                full = {name: np.repeat(np.repeat(a, factor, 0), factor, 1)[:23, :37] for name, a in small.items()} if factor > 1 else small
                attrs = attrs_for(key, full, params)
                if kind == "h5":
                    entry = write_journal_entry(run.journal, key, full, attrs, run.identity, "fast")
                else:
                    arrays = small if factor > 1 else full
                    size = full["disparity"].shape
                    entry = write_raw_journal_entry(run.journal, key, arrays, attrs, run.identity, "fast", size, dict.fromkeys(arrays, factor))
                    assert entry == journal_entry_path(run.journal, key, ".raw")
                run.record(key, entry)
            run.finish()
        outputs[kind] = out
    assert_same_content(read_all(outputs["raw"]), read_all(outputs["h5"]))
    with h5py.File(outputs["raw"]) as raw, h5py.File(outputs["h5"]) as reference:
        for name in reference["pairs"]:
            assert dict(raw["pairs"][name].attrs) == dict(reference["pairs"][name].attrs)
            for dataset in reference["pairs"][name]:
                a, b = raw["pairs"][name][dataset], reference["pairs"][name][dataset]
                assert (a.dtype, a.shape, a.chunks, a.compression, a.shuffle) == (b.dtype, b.shape, b.chunks, b.compression, b.shuffle)


def test_mixed_journal_resumes_and_damaged_raw_entry_is_recomputed(tmp_path: Path) -> None:
    """An interrupted run left an HDF5 entry (an earlier version, or a worker) and two raw entries, one damaged:
    the rerun keeps the good ones, drops the damaged one with a note, and assembles both formats."""
    out = tmp_path / "out.h5"
    params = SGMParams()
    arrays = {key: result_arrays(fake_result(int(key))) for key in ("0", "1", "2")}
    with pytest.raises(KeyboardInterrupt), ProxyRun(out, params) as run:
        write_journal_entry(run.journal, "0", arrays["0"], attrs_for("0", arrays["0"], params), run.identity)
        for key in ("1", "2"):
            write_raw_journal_entry(run.journal, key, arrays[key], attrs_for(key, arrays[key], params), run.identity, "lzf", (23, 37))
        raise KeyboardInterrupt
    journal = journal_path(out)
    assert [path.suffix for path in journal_entries(journal)].count(".raw") == 2 and len(journal_entries(journal)) == 3
    damaged = journal_entry_path(journal, "2", ".raw")
    damaged.write_bytes(damaged.read_bytes()[:-3])
    with ProxyRun(out, params) as run:
        assert set(run.state.done_in_journal) == {"0", "1"}
        assert any("damaged journal entry" in note for note in run.state.notes)
        assert read_raw_entry(run.state.done_in_journal["1"]).key == "1"
        run.record("2", write_raw_journal_entry(run.journal, "2", arrays["2"], attrs_for("2", arrays["2"], params), run.identity, "lzf", (23, 37)))
        assert run.finish() == 3
    assert not journal.exists()
    reference = tmp_path / "reference.h5"
    with ProxyRun(reference, params) as run:
        for key in ("0", "1", "2"):
            run.record(key, write_journal_entry(run.journal, key, arrays[key], attrs_for(key, arrays[key], params), run.identity))
        run.finish()
    assert_same_content(read_all(out), read_all(reference))


def test_raw_entry_of_another_run_is_recomputed(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    params = SGMParams()
    arrays = result_arrays(fake_result(0))
    with pytest.raises(KeyboardInterrupt), ProxyRun(out, params) as run:
        write_raw_journal_entry(run.journal, "0", arrays, attrs_for("0", arrays, params), "another identity", "lzf", (23, 37))
        raise KeyboardInterrupt
    with ProxyRun(out, params) as run:
        assert run.state.done_in_journal == {} and any("damaged journal entry" in note for note in run.state.notes)


def test_journal_entries_lists_both_formats_sorted(tmp_path: Path) -> None:
    assert journal_entries(tmp_path / "missing") == []
    for name in ("b.raw", "a.h5", "c.h5", ".x.raw.1.2.tmp", "run.json"):
        (tmp_path / name).write_bytes(b"")
    assert [path.name for path in journal_entries(tmp_path)] == ["a.h5", "b.raw", "c.h5"]
