"""HDF5 plumbing of the store, free of the proxies format: opening files with user-facing errors,
attribute values as Python values, and chunked, compressed dataset writing.

Compression (``pseudolabel sgm --compression``, :data:`COMPRESSIONS`): ``lzf`` (default: byte shuffle
and LZF, h5py's built-in filter, on every dataset: boolean and int16 maps shrink 4-9x, float maps and
uint16 costs by 15-40%, about 30% smaller files than ``fast``), ``fast`` (LZF on the boolean and int16
maps only, float maps and costs raw: the least CPU, the largest files), ``gzip`` (deflate level 1,
readable by every HDF5 library) or ``none``. Datasets are chunked by row bands of about :data:`CHUNK_BYTES`.

This module imports h5py and numpy only (never torch).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pseudolabel.errors import InputError

CHUNK_BYTES = 1 << 20
# name -> h5py create_dataset keywords (byte shuffle is added for multi-byte types when compressing).
# "fast" compresses only boolean and int16 maps (see fast_compresses) and stores the rest raw:
# LZF saves 15-40% on sub-pixel floats and costs, and took most of the write time.
COMPRESSIONS: dict[str, dict[str, Any]] = {
    "fast": {"compression": "lzf"},
    "lzf": {"compression": "lzf"},
    "gzip": {"compression": "gzip", "compression_opts": 1},
    "none": {},
}
# lzf: a KITTI pair (sgm, confidence score, labels) takes about 7 MB instead of 10 MB with "fast", for
# about 10% more CPU in `pseudolabel sgm` (BENCHMARKS.md, "Proxies file size").
DEFAULT_COMPRESSION = "lzf"


def python_value(value: Any) -> Any:
    """An HDF5 attribute value as a plain Python value: bytes -> str, NumPy scalar -> int/float/bool, array -> list."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def chunk_shape(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunk shape for a dataset of ``shape`` with ``itemsize`` bytes per element: row bands of about
    :data:`CHUNK_BYTES` (whole rows, so one band is one contiguous read); ``()`` for a scalar."""
    if len(shape) == 0:
        return ()
    row_bytes = max(1, int(np.prod(shape[1:], dtype=np.int64)) * itemsize)
    rows_per_band = int(min(shape[0], max(1, CHUNK_BYTES // row_bytes)))
    # Spread the rows evenly over the bands: the last chunk is not mostly padding (which HDF5
    # stores and writes in full when uncompressed).
    bands = -(-shape[0] // max(rows_per_band, 1))
    rows = -(-shape[0] // max(bands, 1))
    return (max(rows, 1), *shape[1:])


def fast_compresses(dtype: np.dtype) -> bool:
    """Whether ``--compression fast`` compresses a dataset of this dtype.

    Booleans and signed integer maps (``valid``, ``disparity_wta``): LZF makes them 4-9x smaller
    for about 1-3 ms per KITTI-sized map. Float maps and the uint16 costs are stored raw: LZF
    saves only 15-40% on them and costs 4-12 ms each, most of the command's write time.
    """
    return dtype.kind == "b" or (dtype.kind == "i" and dtype.itemsize <= 2)


def write_dataset(
    group: h5py.Group,
    name: str,
    array: np.ndarray,
    attrs: Mapping[str, Any] | None = None,
    compression: str = DEFAULT_COMPRESSION,
) -> h5py.Dataset:
    """Create dataset ``name`` (may contain ``/`` for sub-groups) in ``group``: chunked, shuffled, compressed.

    Args:
        group: the group (or file) to write into.
        name: the dataset's name; an existing dataset of that name is replaced.
        array: any shape and dtype, stored as given (C order); a scalar or empty array is stored unchunked.
        attrs: attributes of the dataset.
        compression: a key of :data:`COMPRESSIONS`.

    Raises:
        InputError: an unknown ``compression``.
    """
    if compression not in COMPRESSIONS:
        raise InputError(f"unknown compression {compression!r}; use {', '.join(COMPRESSIONS)}")
    array = np.ascontiguousarray(array)
    if name in group:
        del group[name]
    if array.ndim == 0 or array.size == 0:
        dataset = group.create_dataset(name, data=array)
    else:
        options = COMPRESSIONS[compression]
        if compression == "fast" and not fast_compresses(array.dtype):
            options = {}
        dataset = group.create_dataset(
            name,
            data=array,
            chunks=chunk_shape(array.shape, array.dtype.itemsize),
            shuffle=bool(options) and array.dtype.itemsize > 1,
            **options,
        )
    for attribute, value in (attrs or {}).items():
        dataset.attrs[attribute] = value
    return dataset


def open_h5(path: Path, mode: str) -> h5py.File:
    """Open an HDF5 file written by ``pseudolabel sgm`` (``mode`` as for :class:`h5py.File`).

    Raises:
        InputError: the file is missing, unreadable, locked by a writer, or not HDF5 (naming the fix).
    """
    try:
        return h5py.File(path, mode)
    except FileNotFoundError:
        raise InputError(f"{path}: no such proxies file; create it with `pseudolabel sgm --out {path}`") from None
    except PermissionError as error:
        raise InputError(f"{path}: cannot be opened ({error.strerror or error}); check its permissions") from None
    except OSError as error:
        if "lock" in str(error).lower():
            raise InputError(f"{path}: is open for writing by another process; wait for it to finish") from None
        raise InputError(
            f"{path}: is corrupt or not an HDF5 file ({first_line(error)}); "
            "move it away and rerun `pseudolabel sgm` (or pass --overwrite) to recreate it"
        ) from None


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
