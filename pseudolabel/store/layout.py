"""The layout of a proxies HDF5 file: its constants, and the pieces of a pair and of a file's root as written.

The file holds SGM proxy disparities and, later, confidences and labels, one group per pair; it is read
and edited through :class:`pseudolabel.store.proxies.ProxyFile`.

The contract (also in ``data/README.md``):

* Root attributes: ``format = "pseudolabel-proxies"``, ``format_version`` (int), ``created_by``
  (``"pseudolabel <version>"``), ``sgm_params`` (JSON of :class:`~pseudolabel.sgm.params.SGMParams`) and
  ``max_disp_from_calib`` (bool: pairs whose dataset gives a range, Middlebury ``calib.txt``, were
  matched with it instead of ``sgm_params.max_disp``).
* One group per pair, ``/pairs/<name>``, where ``<name>`` is the pair's key with ``%`` written as
  ``%25`` and ``/`` as ``%2F`` (so every key is one flat group; ``training/000046_10`` is stored as
  ``/pairs/training%2F000046_10``). The group's ``key`` attribute holds the key itself.
  Attributes: ``key``, ``left``, ``right`` (paths as given), ``min_disp``, ``max_disp`` (the range
  actually searched, pixels), ``height``, ``width``, ``valid_fraction``, optional ``gt_left``,
  ``gt_scale`` and ``masks`` (JSON: name -> path), and ``complete = True``, written last.
* Datasets of a pair (all (H, W), left view): ``disparity`` float32 pixels, ``valid`` bool,
  ``disparity_right`` float32 (right view), ``cost_best``, ``cost_second``, ``cost_second_local``,
  ``cost_mean`` float32 (aggregated cost units; the first three are stored as uint16 when every
  value is an integer in [0, 65535], which holds for the current kernels, and :meth:`ProxyFile.read`
  returns float32 either way), ``disparity_wta`` int16; later stages add ``confidence/<measure>``
  ([0, 1], higher = more trustworthy; float32)
  and ``labels`` (pixels, NaN = no label; stored as a boolean mask of ``disparity`` with
  ``encoding = "disparity-mask"`` when they are taken from it, else float32). :meth:`ProxyFile.read`
  decodes both to float32; format version 1 stored them as float32 and is still read.
  Chunked by row bands of about 1 MiB and compressed as ``pseudolabel sgm --compression`` asks
  (:mod:`pseudolabel.store.datasets_io` describes the choices). C/Fortran HDF5 readers need the LZF plugin.
* Edits by the later stages write in place only what they add, and commit atomically through the edit
  log ``<file>.edit`` (:mod:`pseudolabel.store.edits`).

Crash safety of ``pseudolabel sgm`` (see :class:`pseudolabel.store.journal.ProxyRun`): finished pairs go first to a journal
folder ``<out>.journal/`` (one file per pair, written to a temporary name and renamed, so a kill never
leaves half an entry: a small HDF5 file from worker processes, a raw entry of :mod:`pseudolabel.store.entries`
from a single-process run). When every pair is done, the final file is assembled in ``<out>.partial`` (a
copy of the existing output plus the journal's pairs, :func:`copy_journal_pairs`: the compressed chunks
of HDF5 entries copied, raw entries written as :func:`write_pair_group` writes a pair) and renamed over
``<out>`` in one atomic step; only then is the journal removed. A kill at
any moment therefore leaves the previous output intact and the journal from which a rerun resumes.

This module imports h5py and numpy only (never torch).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pseudolabel import __version__
from pseudolabel.errors import InputError
from pseudolabel.sgm.params import SGMParams, SGMResult
from pseudolabel.store.datasets_io import DEFAULT_COMPRESSION, write_dataset
from pseudolabel.store.entries import RAW_SUFFIX, read_raw_entry
from pseudolabel.store.names import key_to_name

FORMAT = "pseudolabel-proxies"
FORMAT_VERSION = 2
JOURNAL_ENTRY_FORMAT = "pseudolabel-proxies-journal-entry"
JOURNAL_HEADER = "run.json"
PAIRS = "pairs"

# Datasets written by `pseudolabel sgm` for every pair, with the dtype that `ProxyFile.read` returns.
RESULT_DATASETS: dict[str, np.dtype] = {
    "disparity": np.dtype(np.float32),
    "valid": np.dtype(bool),
    "disparity_right": np.dtype(np.float32),
    "cost_best": np.dtype(np.float32),
    "cost_second": np.dtype(np.float32),
    "cost_second_local": np.dtype(np.float32),
    "cost_mean": np.dtype(np.float32),
    "disparity_wta": np.dtype(np.int16),
}
# What `pseudolabel sgm --store` keeps of each pair: "full" every result dataset, "minimal" only what the
# later stages of the default pipeline read: `disparity` and `valid`, and the shipped CCNN's confidence
# (`confidence/ccnn`), computed by `sgm` itself from the cost summaries and `disparity_right`, which it
# then drops (`labels`, `adapt`, `show` and `confidence eval` need nothing else; the conventional measures
# and other confidence networks need the full store).
MINIMAL_CONFIDENCE = "confidence/ccnn"
STORES: dict[str, tuple[str, ...]] = {
    "full": tuple(RESULT_DATASETS),
    "minimal": ("disparity", "valid", MINIMAL_CONFIDENCE),
}
CONFIDENCE_GROUP = "confidence"
LABELS = "labels"

# Aggregated costs that are integers by construction: stored as uint16 when that is exact.
INTEGER_COSTS = ("cost_best", "cost_second", "cost_second_local")

# Dataset attribute naming how a stored dataset encodes the array `ProxyFile.read` returns (format version 2).
ENCODING = "encoding"
# (confidences stay float32: 16-bit fixed point would move the figures of trainings that weigh pixels by
# their confidence; LZF-compressed float32 keeps a KITTI pair under 8 MB, see data/README.md)
# labels: bool mask of the pair's `disparity` (value = disparity where True, NaN elsewhere); exact.
DISPARITY_MASK = "disparity-mask"


# ----------------------------------------------------------------------------------------------
# a run and what it keeps


def run_identity(params: SGMParams, max_disp_from_calib: bool, store: str = "full") -> str:
    """JSON that identifies what a run computes: two runs may share a file only if these are equal.

    ``store`` (a key of :data:`STORES`) is part of it only when it is not ``"full"``, so identities of
    files written before ``--store`` existed are unchanged.
    """
    identity: dict[str, Any] = {"sgm_params": json.loads(params.to_json()), "max_disp_from_calib": bool(max_disp_from_calib)}
    if store != "full":
        identity["store"] = store
    return json.dumps(identity, sort_keys=True)


def describe_difference(stored: str, current: str) -> str:
    """Human-readable list of the fields that differ between two :func:`run_identity` strings."""
    old, new = json.loads(stored), json.loads(current)
    # fields that a file's JSON leaves out (`downsample` 1) have their default value
    defaults = dataclasses.asdict(SGMParams())
    flat_old = {**defaults, **old.get("sgm_params", {}), "max_disp_from_calib": old.get("max_disp_from_calib"), "store": old.get("store", "full")}
    flat_new = {**defaults, **new.get("sgm_params", {}), "max_disp_from_calib": new.get("max_disp_from_calib"), "store": new.get("store", "full")}
    changed = [
        f"{name} {flat_old.get(name)!r} in the file, {flat_new.get(name)!r} now"
        for name in sorted(set(flat_old) | set(flat_new))
        if flat_old.get(name) != flat_new.get(name)
    ]
    return "; ".join(changed) if changed else "no difference"


def store_arrays(arrays: Mapping[str, np.ndarray], store: str) -> dict[str, np.ndarray]:
    """The datasets of ``arrays`` that ``store`` (a key of :data:`STORES`) keeps.

    Raises:
        InputError: an unknown ``store``.
    """
    if store not in STORES:
        raise InputError(f"unknown --store {store!r}; use {', '.join(STORES)}")
    return {name: array for name, array in arrays.items() if name in STORES[store]}


# ----------------------------------------------------------------------------------------------
# writing pairs and roots


def result_arrays(result: SGMResult | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The datasets of :data:`RESULT_DATASETS` from a :class:`SGMResult` (or a mapping), in their on-disk dtypes.

    :data:`INTEGER_COSTS` become ``uint16`` when that is exact (integers in [0, 65535]), else float32.

    Raises:
        InputError: a dataset is missing or its shape differs from ``disparity``'s.
    """
    get = (lambda n: result[n]) if isinstance(result, Mapping) else (lambda n: getattr(result, n))
    arrays: dict[str, np.ndarray] = {}
    for name, dtype in RESULT_DATASETS.items():
        try:
            value = np.asarray(get(name))
        except (KeyError, AttributeError):
            raise InputError(f"the SGM result has no {name!r} array") from None
        array = np.ascontiguousarray(value.astype(dtype, copy=False))
        if name in INTEGER_COSTS and array.size:
            narrow = array.astype(np.uint16)
            if array.min() >= 0 and array.max() <= 65535 and np.array_equal(narrow, array):
                array = narrow
        arrays[name] = array
    shape = arrays["disparity"].shape
    for name, value in arrays.items():
        if value.shape != shape or len(shape) != 2:
            raise InputError(f"SGM result array {name!r} has shape {value.shape}, expected (H, W) = {shape}")
    return arrays


def pair_attributes(
    key: str,
    left: str | os.PathLike[str],
    right: str | os.PathLike[str],
    params: SGMParams,
    shape: tuple[int, int],
    valid: np.ndarray,
    gt_left: str | os.PathLike[str] | None = None,
    gt_scale: float | None = None,
    masks: Mapping[str, str | os.PathLike[str]] | None = None,
) -> dict[str, Any]:
    """The attributes of one pair's group (without ``complete``, which is written last).

    Args:
        key: the pair's key.
        left, right: image paths, stored as given.
        params: the parameters the pair was matched with (its ``min_disp``/``max_disp`` are stored, pixels).
        shape: ``(H, W)`` of the disparity map, pixels.
        valid: ``bool`` (H, W) validity mask (stored as ``valid_fraction``, the fraction of True pixels).
        gt_left: ground-truth disparity of the left view, or ``None``.
        gt_scale: divide stored ground-truth values by it to get pixels, or ``None``.
        masks: evaluation masks of the left view, name -> path.
    """
    attrs: dict[str, Any] = {
        "key": key,
        "left": str(left),
        "right": str(right),
        "min_disp": int(params.min_disp),
        "max_disp": int(params.max_disp),
        "height": int(shape[0]),
        "width": int(shape[1]),
        "valid_fraction": float(np.count_nonzero(valid)) / max(1, valid.size),
    }
    if gt_left is not None:
        attrs["gt_left"] = str(gt_left)
    if gt_scale is not None:
        attrs["gt_scale"] = float(gt_scale)
    if masks:
        attrs["masks"] = json.dumps({name: str(path) for name, path in sorted(masks.items())})
    return attrs


def write_pair_group(
    group: h5py.Group,
    arrays: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    compression: str = DEFAULT_COMPRESSION,
    dataset_attrs: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Fill an empty pair group: every dataset of ``arrays`` ((H, W) each, see :func:`result_arrays`; with
    its attributes from ``dataset_attrs``, by name), the attributes ``attrs`` (see :func:`pair_attributes`),
    then ``complete = True`` last."""
    dataset_attrs = dataset_attrs or {}
    for name, array in arrays.items():
        write_dataset(group, name, array, attrs=dataset_attrs.get(name), compression=compression)
    for attribute, value in attrs.items():
        group.attrs[attribute] = value
    group.attrs["complete"] = True


def initialise_root(h5file: h5py.File, params: SGMParams, max_disp_from_calib: bool, store: str = "full", shard_size: int | None = None) -> None:
    """Write the root attributes of a new proxies file (format, version, creator, SGM parameters, and
    ``store`` / ``shard_size`` when they are not the defaults) and ``/pairs``.

    ``format_version`` is the oldest that describes the file: 1 for a plain file with every result
    dataset, 2 for a minimal store or a sharded index (older readers refuse those).
    """
    if store not in STORES:
        raise InputError(f"unknown --store {store!r}; use {', '.join(STORES)}")
    plain = store == "full" and shard_size is None
    h5file.attrs["format"] = FORMAT
    h5file.attrs["format_version"] = 1 if plain else FORMAT_VERSION
    h5file.attrs["created_by"] = f"pseudolabel {__version__}"
    h5file.attrs["sgm_params"] = params.to_json()
    h5file.attrs["max_disp_from_calib"] = bool(max_disp_from_calib)
    if store != "full":
        h5file.attrs["store"] = store
    if shard_size is not None:
        h5file.attrs["shard_size"] = int(shard_size)
    h5file.require_group(PAIRS)


def copy_journal_pairs(pairs: h5py.Group, entries: Mapping[str, Path], keys: Iterable[str]) -> None:
    """Copy the pair of each journal entry (``entries[key]``) into ``pairs`` as ``/pairs/<name>``, replacing a
    group of that name.

    An HDF5 entry (``.h5``: a file whose ``/pair`` is the pair's group) is copied as it is (its compressed
    chunks unchanged); a raw entry (``.raw``, :mod:`pseudolabel.store.entries`) is written as
    :func:`write_pair_group` writes the pair: datasets enlarged where stored at a reduced resolution and
    compressed as the entry says, attributes, then ``complete``.

    Raises:
        ValueError: a raw entry is damaged (checked when the run started, so only if it changed since).
    """
    for key in keys:
        name = key_to_name(key)
        if name in pairs:
            del pairs[name]
        path = Path(entries[key])
        if path.suffix == RAW_SUFFIX:
            entry = read_raw_entry(path)
            write_pair_group(pairs.create_group(name), entry.full_arrays(), {**entry.attrs, "key": entry.key}, entry.compression, entry.dataset_attrs)
            continue
        with h5py.File(path, "r") as source:
            source.copy(source["pair"], pairs, name=name)
