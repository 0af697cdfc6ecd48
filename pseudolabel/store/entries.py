"""Raw journal entries: one finished pair as plain array bytes with a JSON header and a checksum.

The journal of a ``pseudolabel sgm`` run (:class:`pseudolabel.store.journal.ProxyRun`) holds one file per
finished pair. A pair matched in the process that assembles the output is written as a *raw entry*
(``<hash>.raw``, this module); worker processes and Dask workers write HDF5 entries (``<hash>.h5``,
:func:`pseudolabel.store.journal.encode_journal_entry`) whose compressed chunks the assembly copies as
they are. A raw entry costs a header and one pass over the bytes (no in-memory HDF5 file, no
compression): the datasets are compressed once, when
:func:`pseudolabel.store.layout.copy_journal_pairs` writes them into the output.

A dataset may be stored at a reduced resolution with a block ``factor`` (the maps of a match at
``1 / factor`` of the resolution, ``SGMParams.downsample``): it is enlarged by repeating each value over
its ``factor x factor`` block (:func:`pseudolabel.sgm.downsampled.enlarge_map`, the enlargement
:func:`pseudolabel.sgm.matcher.match` applies) when the pair is assembled, so the output holds the same
values as if the full-size maps had been journaled, and the journal holds ``factor**2`` times fewer bytes.

Layout of an entry file (all integers little-endian)::

    MAGIC (8 bytes) | header length n (uint64) | header (n bytes of UTF-8 JSON) | arrays | CRC-32 (uint32)

The header holds ``format``, ``key``, ``run_identity``, ``compression`` (what the output's datasets get),
``attrs`` (the pair group's attributes), ``size`` ((H, W) of the pair, pixels) and ``datasets``: a list of
``{"name", "dtype", "shape", "factor", "attrs"}`` in writing order. The arrays follow in that order, each
C-ordered with ``prod(shape) * itemsize`` bytes. The CRC-32 covers everything before it, so a damaged or
truncated entry is recognised (:func:`read_raw_entry` raises ``ValueError``) and that pair is recomputed.
Attribute values must be ``str``, ``bool``, ``int`` or ``float`` (what JSON carries exactly back to the
same HDF5 types); :func:`raw_entry_supported` says whether a pair's attributes qualify.

Imports numpy and the matcher's enlargement only (never torch or h5py).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pseudolabel.sgm.downsampled import enlarge_maps

#: The header's ``format``.
RAW_ENTRY_FORMAT = "pseudolabel-proxies-journal-raw"
#: First bytes of a raw entry file.
MAGIC = b"PLJRAW1\n"
#: File name ending of a raw entry (HDF5 entries end in ``.h5``).
RAW_SUFFIX = ".raw"
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
# attribute value types that JSON carries back to the same Python type (and so the same HDF5 type)
_PLAIN = (str, bool, int, float)


@dataclass
class RawEntry:
    """One decoded raw entry (:func:`read_raw_entry`).

    Attributes:
        key: the pair's key.
        identity: the run's :func:`pseudolabel.store.layout.run_identity`.
        compression: a key of :data:`pseudolabel.store.datasets_io.COMPRESSIONS`, for the output's datasets.
        attrs: the pair group's attributes (without ``complete``).
        size: ``(H, W)`` of the pair, pixels.
        arrays: datasets by name, as stored: ``(ceil(H / factor), ceil(W / factor))`` each, on-disk dtypes.
        factors: block factor of each dataset (1 = full size).
        dataset_attrs: attributes of some datasets, by name.
    """

    key: str
    identity: str
    compression: str
    attrs: dict[str, Any]
    size: tuple[int, int]
    arrays: dict[str, np.ndarray]
    factors: dict[str, int]
    dataset_attrs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def full_arrays(self) -> dict[str, np.ndarray]:
        """Every dataset at the pair's size ``(H, W)``: reduced ones enlarged (block repetition), in writing order."""
        return enlarge_maps(self.arrays, self.factors, *self.size)


def raw_entry_supported(attrs: Mapping[str, Any], dataset_attrs: Mapping[str, Mapping[str, Any]] | None = None) -> bool:
    """Whether every attribute value is a ``str``, ``bool``, ``int`` or ``float`` (a raw entry can hold it exactly)."""
    groups = [attrs, *(dataset_attrs or {}).values()]
    return all(type(value) in _PLAIN for group in groups for value in group.values())


def encode_raw_entry(
    key: str,
    arrays: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    identity: str,
    compression: str,
    size: tuple[int, int],
    factors: Mapping[str, int] | None = None,
    dataset_attrs: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[bytes | memoryview]:
    """One pair as the pieces of a raw entry file, to be written one after the other (no copy of the arrays).

    Args:
        key: the pair's key.
        arrays: the pair's datasets in their on-disk dtypes; a dataset with factor ``f`` has shape
            ``(ceil(H / f), ceil(W / f))``.
        attrs: the pair group's attributes (see :func:`pseudolabel.store.layout.pair_attributes`).
        identity: the run's :func:`pseudolabel.store.layout.run_identity`.
        compression: a key of :data:`pseudolabel.store.datasets_io.COMPRESSIONS`, applied at assembly.
        size: ``(H, W)`` of the pair, pixels.
        factors: block factor by dataset name (missing = 1).
        dataset_attrs: attributes of some datasets, by name.

    Returns:
        The file's pieces: magic and header, each array's bytes, the CRC-32.

    Raises:
        ValueError: a dataset's shape does not match its factor and ``size``, or an attribute is not a plain
        ``str``/``bool``/``int``/``float`` (see :func:`raw_entry_supported`).
    """
    factors = factors or {}
    dataset_attrs = dataset_attrs or {}
    if not raw_entry_supported(attrs, dataset_attrs):
        raise ValueError(f"{key}: an attribute is not a str, bool, int or float; a raw journal entry cannot hold it")
    height, width = int(size[0]), int(size[1])
    described = []
    buffers: list[np.ndarray] = []
    for name, array in arrays.items():
        factor = int(factors.get(name, 1))
        expected = (-(-height // factor), -(-width // factor))
        if array.shape != expected:
            raise ValueError(f"{key}: dataset {name!r} has shape {array.shape}, expected {expected} (size {height}x{width}, factor {factor})")
        contiguous = np.ascontiguousarray(array)
        buffers.append(contiguous)
        described.append(
            {
                "name": name,
                "dtype": contiguous.dtype.str,
                "shape": list(contiguous.shape),
                "factor": factor,
                "attrs": dict(dataset_attrs.get(name, {})),
            }
        )
    header = {
        "format": RAW_ENTRY_FORMAT,
        "key": key,
        "run_identity": identity,
        "compression": compression,
        "attrs": dict(attrs),
        "size": [height, width],
        "datasets": described,
    }
    text = json.dumps(header).encode("utf-8")
    pieces: list[bytes | memoryview] = [MAGIC + _LENGTH.pack(len(text)) + text]
    pieces += [buffer.data.cast("B") for buffer in buffers]
    checksum = 0
    for piece in pieces:
        checksum = zlib.crc32(piece, checksum)
    pieces.append(_CRC.pack(checksum))
    return pieces


def decode_raw_entry(data: bytes | memoryview) -> RawEntry:
    """Decode the bytes of a raw entry file (the arrays are views of ``data``, read-only when it is ``bytes``).

    Raises:
        ValueError: not a raw entry, a wrong checksum, or an inconsistent header (a damaged or truncated file).
    """
    view = memoryview(data).cast("B")
    start = len(MAGIC) + _LENGTH.size
    if len(view) < start + _CRC.size or bytes(view[: len(MAGIC)]) != MAGIC:
        raise ValueError("not a raw journal entry")
    (stored,) = _CRC.unpack(view[-_CRC.size :])
    if zlib.crc32(view[: -_CRC.size]) != stored:
        raise ValueError("checksum mismatch")
    (length,) = _LENGTH.unpack(view[len(MAGIC) : start])
    try:
        header = json.loads(bytes(view[start : start + length]).decode("utf-8"))
        if header["format"] != RAW_ENTRY_FORMAT:
            raise ValueError(f"format {header['format']!r}")
        offset = start + length
        arrays: dict[str, np.ndarray] = {}
        factors: dict[str, int] = {}
        dataset_attrs: dict[str, dict[str, Any]] = {}
        for item in header["datasets"]:
            dtype = np.dtype(item["dtype"])
            shape = tuple(int(n) for n in item["shape"])
            count = int(np.prod(shape, dtype=np.int64))
            arrays[item["name"]] = np.frombuffer(view, dtype, count, offset).reshape(shape)
            offset += count * dtype.itemsize
            factors[item["name"]] = int(item["factor"])
            if item["attrs"]:
                dataset_attrs[item["name"]] = dict(item["attrs"])
        if offset != len(view) - _CRC.size:
            raise ValueError("the arrays do not fill the entry")
        height, width = (int(n) for n in header["size"])
        return RawEntry(
            key=str(header["key"]),
            identity=str(header["run_identity"]),
            compression=str(header["compression"]),
            attrs=dict(header["attrs"]),
            size=(height, width),
            arrays=arrays,
            factors=factors,
            dataset_attrs=dataset_attrs,
        )
    except (KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"bad header ({error})") from None


def read_raw_entry(path: Path) -> RawEntry:
    """Read and check a raw entry file (:func:`decode_raw_entry`).

    Raises:
        ValueError: damaged, truncated or not a raw entry; OSError: unreadable.
    """
    return decode_raw_entry(Path(path).read_bytes())
