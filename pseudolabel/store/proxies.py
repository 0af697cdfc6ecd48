"""The proxies HDF5 file: SGM proxy disparities and, later, confidences and labels, one group per pair.

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
folder ``<out>.journal/`` (one small HDF5 file per pair, written to a temporary name and renamed, so
a kill never leaves half an entry). When every pair is done, the final file is assembled in
``<out>.partial`` (a copy of the existing output plus the journal's pairs, raw compressed chunks
copied) and renamed over ``<out>`` in one atomic step; only then is the journal removed. A kill at
any moment therefore leaves the previous output intact and the journal from which a rerun resumes.

This module imports h5py and numpy only (never torch).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from pseudolabel import __version__
from pseudolabel.errors import InputError
from pseudolabel.sgm.params import SGMParams, SGMResult
from pseudolabel.store.datasets_io import DEFAULT_COMPRESSION, first_line, open_h5, python_value, write_dataset

if TYPE_CHECKING:
    from pseudolabel.store.shards import ShardEdits

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
# CCNN pipeline reads later (the disparity for `confidence score` with a network, `labels` and `adapt`,
# and `valid`); the conventional confidence measures need the cost summaries and `disparity_right`.
STORES: dict[str, tuple[str, ...]] = {
    "full": tuple(RESULT_DATASETS),
    "minimal": ("disparity", "valid"),
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
# keys and groups


def key_to_name(key: str) -> str:
    """The HDF5 group name of a pair key: ``%`` -> ``%25``, ``/`` -> ``%2F`` (one flat, reversible name).

    Raises:
        InputError: the key is empty.
    """
    if not key:
        raise InputError("a pair key must not be empty")
    name = key.replace("%", "%25").replace("/", "%2F")
    if name in (".", ".."):
        name = name.replace(".", "%2E")
    return name


def name_to_key(name: str) -> str:
    """Inverse of :func:`key_to_name`."""
    return name.replace("%2F", "/").replace("%2E", ".").replace("%25", "%")


def run_identity(params: SGMParams, max_disp_from_calib: bool, store: str = "full") -> str:
    """JSON that identifies what a run computes: two runs may share a file only if these are equal.

    ``store`` (a key of :data:`STORES`) is part of it only when it is not ``"full"``, so identities of
    files written before ``--store`` existed are unchanged.
    """
    identity: dict[str, Any] = {"sgm_params": json.loads(params.to_json()), "max_disp_from_calib": bool(max_disp_from_calib)}
    if store != "full":
        identity["store"] = store
    return json.dumps(identity, sort_keys=True)


def store_arrays(arrays: Mapping[str, np.ndarray], store: str) -> dict[str, np.ndarray]:
    """The datasets of ``arrays`` that ``store`` (a key of :data:`STORES`) keeps.

    Raises:
        InputError: an unknown ``store``.
    """
    if store not in STORES:
        raise InputError(f"unknown --store {store!r}; use {', '.join(STORES)}")
    return {name: array for name, array in arrays.items() if name in STORES[store]}


def describe_difference(stored: str, current: str) -> str:
    """Human-readable list of the fields that differ between two :func:`run_identity` strings."""
    old, new = json.loads(stored), json.loads(current)
    flat_old = {**old.get("sgm_params", {}), "max_disp_from_calib": old.get("max_disp_from_calib"), "store": old.get("store", "full")}
    flat_new = {**new.get("sgm_params", {}), "max_disp_from_calib": new.get("max_disp_from_calib"), "store": new.get("store", "full")}
    changed = [
        f"{name} {flat_old.get(name)!r} in the file, {flat_new.get(name)!r} now"
        for name in sorted(set(flat_old) | set(flat_new))
        if flat_old.get(name) != flat_new.get(name)
    ]
    return "; ".join(changed) if changed else "no difference"


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


def write_pair_group(group: h5py.Group, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any], compression: str = DEFAULT_COMPRESSION) -> None:
    """Fill an empty pair group: every dataset of ``arrays`` ((H, W) each, see :func:`result_arrays`), the
    attributes ``attrs`` (see :func:`pair_attributes`), then ``complete = True`` last."""
    for name, array in arrays.items():
        write_dataset(group, name, array, compression=compression)
    for attribute, value in attrs.items():
        group.attrs[attribute] = value
    group.attrs["complete"] = True


# ----------------------------------------------------------------------------------------------
# opening files


class ProxyFile:
    """An open proxies file (see the module docstring for its layout). Use as a context manager.

    Keys are the pair keys (``/`` allowed); only pairs whose ``complete`` attribute is set are listed.
    A sharded file (:mod:`pseudolabel.store.shards`) reads the same; ``edits`` (given by
    :func:`pseudolabel.store.journal.edit_proxies`) sends its writes to copies of the shards.
    """

    def __init__(self, h5file: h5py.File, path: Path, edits: ShardEdits | None = None) -> None:
        self._h5 = h5file
        self.path = path
        self._edits = edits
        if self._h5.attrs.get("format") not in (FORMAT, FORMAT.encode()):
            name = self._h5.filename
            self._h5.close()
            raise InputError(f"{name}: not a pseudolabel proxies file (no format={FORMAT!r} attribute); choose another file")
        version = int(self._h5.attrs.get("format_version", 0))
        if version > FORMAT_VERSION:
            self._h5.close()
            raise InputError(f"{path}: format_version {version} is newer than this pseudolabel understands; upgrade pseudolabel")

    # context management -------------------------------------------------------------------
    def __enter__(self) -> ProxyFile:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (flushes pending writes)."""
        if self._h5.id.valid:
            self._h5.close()

    def flush(self) -> None:
        """Write buffered data and metadata to disk."""
        self._h5.flush()
        if self._edits is not None:
            self._edits.flush()

    @property
    def h5(self) -> h5py.File:
        """The underlying :class:`h5py.File` (for advanced use)."""
        return self._h5

    # root --------------------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        """Root attributes as Python values."""
        return {name: python_value(value) for name, value in self._h5.attrs.items()}

    @property
    def sgm_params(self) -> SGMParams:
        """The SGM parameters of the file (``max_disp`` may be replaced per pair, see :meth:`pair_params`)."""
        return SGMParams.from_json(python_value(self._h5.attrs["sgm_params"]))

    @property
    def max_disp_from_calib(self) -> bool:
        """True when pairs with a dataset-given range (Middlebury ``calib.txt``) were matched with it."""
        return bool(self._h5.attrs.get("max_disp_from_calib", False))

    @property
    def shard_size(self) -> int | None:
        """Pairs per shard of a sharded file (:mod:`pseudolabel.store.shards`), ``None`` for one file."""
        value = self._h5.attrs.get("shard_size")
        return None if value is None else int(value)

    @property
    def store(self) -> str:
        """Which datasets ``pseudolabel sgm`` kept per pair: a key of :data:`STORES` (``"full"`` unless the file says otherwise)."""
        return str(python_value(self._h5.attrs.get("store", "full")))

    @property
    def identity(self) -> str:
        """:func:`run_identity` of the file."""
        return run_identity(self.sgm_params, self.max_disp_from_calib, self.store)

    # pairs -------------------------------------------------------------------------------
    def _pairs(self) -> h5py.Group | None:
        group = self._h5.get(PAIRS)
        return group if isinstance(group, h5py.Group) else None

    def keys(self) -> list[str]:
        """Keys of the complete pairs, sorted."""
        pairs = self._pairs()
        if pairs is None:
            return []
        if self.shard_size is not None:  # an index links complete pairs only: no need to open the shards
            return sorted(name_to_key(name) for name in pairs)
        return sorted(name_to_key(name) for name, group in pairs.items() if bool(group.attrs.get("complete", False)))

    def __len__(self) -> int:
        return len(self.keys())

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        group = self._group_or_none(key)
        return group is not None and bool(group.attrs.get("complete", False))

    def _group_or_none(self, key: str, write: bool = False) -> h5py.Group | None:
        pairs = self._pairs()
        if pairs is None:
            return None
        name = key_to_name(key)
        if self._edits is not None:
            link = pairs.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                edited = self._edits.group(link, name, write)
                if edited is not None:
                    return edited
        group = pairs.get(name)
        return group if isinstance(group, h5py.Group) else None

    def _group(self, key: str, write: bool = False) -> h5py.Group:
        group = self._group_or_none(key, write)
        if group is None:
            raise InputError(f"{self.path}: has no pair {key!r}; `pseudolabel inspect {self.path}` lists the pairs")
        return group

    def pair_attrs(self, key: str) -> dict[str, Any]:
        """Attributes of a pair as Python values (``masks`` decoded to a dict of str)."""
        attrs = {name: python_value(value) for name, value in self._group(key).attrs.items()}
        if "masks" in attrs:
            attrs["masks"] = json.loads(attrs["masks"])
        return attrs

    def pair_params(self, key: str) -> SGMParams:
        """The SGM parameters used for one pair (the file's, with the pair's ``min_disp``/``max_disp``)."""
        attrs = self._group(key).attrs
        return self.sgm_params.replace(min_disp=int(attrs["min_disp"]), max_disp=int(attrs["max_disp"]))

    def datasets(self, key: str) -> list[str]:
        """Names of the datasets of a pair, sub-groups included (``confidence/ccnn``), sorted."""
        names: list[str] = []
        self._group(key).visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        return sorted(names)

    def has(self, key: str, name: str) -> bool:
        """Whether pair ``key`` has dataset ``name``."""
        group = self._group_or_none(key)
        return group is not None and isinstance(group.get(name), h5py.Dataset)

    def read(self, key: str, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Read datasets of one pair (only that pair's chunks are read).

        Args:
            key: the pair key.
            names: dataset names (``"disparity"``, ``"valid"``, ``"cost_best"``, ``"confidence/ccnn"``,
                ``"labels"``, ...); ``None`` reads all of them.

        Returns:
            name -> array, (H, W) each: the :data:`RESULT_DATASETS` in their listed dtypes (costs
            stored as uint16 come back as float32), other datasets in their stored dtype.
        """
        group = self._group(key)
        wanted = list(names) if names is not None else self.datasets(key)
        arrays: dict[str, np.ndarray] = {}
        for name in wanted:
            dataset = group.get(name)
            if not isinstance(dataset, h5py.Dataset):
                raise InputError(f"{self.path}: pair {key!r} has no dataset {name!r} (it has {', '.join(self.datasets(key))})")
            arrays[name] = self._decode(group, dataset, name)
        return arrays

    def _decode(self, group: h5py.Group, dataset: h5py.Dataset, name: str) -> np.ndarray:
        """The array a stored dataset encodes (see :data:`ENCODING`; datasets without it are stored as read)."""
        array = dataset[()]
        encoding = python_value(dataset.attrs.get(ENCODING, ""))
        if encoding == DISPARITY_MASK:
            disparity = group["disparity"][()].astype(np.float32)
            return np.where(array.astype(bool), disparity, np.float32(np.nan)).astype(np.float32)
        if encoding:
            raise InputError(f"{self.path}: {name} uses the encoding {encoding!r}, unknown to this pseudolabel; upgrade pseudolabel")
        if name in RESULT_DATASETS and array.dtype != RESULT_DATASETS[name]:
            array = array.astype(RESULT_DATASETS[name])
        return array

    def list_confidences(self, key: str) -> list[str]:
        """Names of the confidence measures stored for a pair (``["ccnn", ...]``), sorted."""
        group = self._group(key).get(CONFIDENCE_GROUP)
        if not isinstance(group, h5py.Group):
            return []
        return sorted(name for name, obj in group.items() if isinstance(obj, h5py.Dataset))

    # writing -----------------------------------------------------------------------------
    def _check_writable(self, whole_pairs: bool = False) -> None:
        if whole_pairs and self.shard_size is not None:
            raise InputError(f"{self.path}: is a sharded index; whole pairs are added by `pseudolabel sgm` only (edit datasets of existing pairs)")
        if self._h5.mode != "r+" and self._edits is None:
            raise InputError(f"{self.path}: opened read-only; use open_proxies(path, mode='r+') to write")

    def write(
        self,
        key: str,
        name: str,
        array: np.ndarray,
        attrs: Mapping[str, Any] | None = None,
        overwrite: bool = True,
    ) -> None:
        """Write one (H, W) dataset of an existing pair, e.g. ``confidence/<measure>`` or ``labels``.

        ``confidence/*`` must be finite and in [0, 1]; it is stored as float32. ``labels`` (float32 pixels, NaN = no
        label) that equal the pair's ``disparity`` wherever they are finite -- what ``pseudolabel labels``
        writes -- are stored as a boolean mask of it (``encoding = "disparity-mask"``), other labels as
        float32. :meth:`read` returns float32 either way. Every such dataset is compressed
        (:data:`~pseudolabel.store.datasets_io.DEFAULT_COMPRESSION`). Writing an encoded dataset into
        a format-version-1 file raises its ``format_version`` to 2. The file is flushed afterwards. For a
        write that must survive a kill at any moment, write inside :func:`~pseudolabel.store.journal.edit_proxies`.

        Raises:
            InputError: unknown pair, wrong shape or range, or an existing dataset and ``overwrite=False``.
        """
        self._check_writable()
        group = self._group(key, write=True)
        array = np.asarray(array)
        shape = (int(group.attrs["height"]), int(group.attrs["width"]))
        if array.shape != shape:
            raise InputError(f"{name} for pair {key!r} has shape {array.shape}, the pair is {shape}")
        attrs = dict(attrs or {})
        attrs.pop(ENCODING, None)
        if name.startswith(CONFIDENCE_GROUP + "/"):
            array = array.astype(np.float32, copy=False)
            if not np.all(np.isfinite(array)) or array.min() < 0.0 or array.max() > 1.0:
                raise InputError(f"{name} for pair {key!r} must be finite and in [0, 1]")
        elif name == LABELS:
            array = array.astype(np.float32, copy=False)
            labelled = np.isfinite(array)
            disparity = group.get("disparity")
            if isinstance(disparity, h5py.Dataset) and disparity.shape == array.shape:
                values = disparity[()].astype(np.float32)
                if np.array_equal(array[labelled].view(np.uint32), values[labelled].view(np.uint32)):
                    array, attrs[ENCODING] = labelled, DISPARITY_MASK
        if name in RESULT_DATASETS and name not in INTEGER_COSTS and array.dtype != RESULT_DATASETS[name]:
            array = array.astype(RESULT_DATASETS[name])
        if name in group and not overwrite:
            raise InputError(f"{self.path}: pair {key!r} already has {name!r}; pass overwrite=True to replace it")
        labels = group.get(LABELS)
        if name == "disparity" and isinstance(labels, h5py.Dataset) and python_value(labels.attrs.get(ENCODING, "")) == DISPARITY_MASK:
            # labels stored as a mask of the old disparity keep their values: store them as float32 first
            kept = {attribute: value for attribute, value in labels.attrs.items() if attribute != ENCODING}
            write_dataset(group, LABELS, self._decode(group, labels, LABELS), kept, compression=DEFAULT_COMPRESSION)
        if ENCODING in attrs and self._edits is None and int(self._h5.attrs.get("format_version", 0)) < FORMAT_VERSION:
            self._h5.attrs["format_version"] = FORMAT_VERSION  # (a sharded index is version 2 already)
        write_dataset(group, name, array, attrs, compression=DEFAULT_COMPRESSION)
        self.flush()

    def write_pair(self, key: str, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]) -> None:
        """Write (or replace) a whole pair: the :data:`RESULT_DATASETS` and the group attributes.

        ``complete`` is set last and the file flushed. Use :func:`result_arrays` and
        :func:`pair_attributes` to build the arguments from a :class:`SGMResult`. Not on a sharded index.
        """
        self._check_writable(whole_pairs=True)
        pairs = self._h5.require_group(PAIRS)
        name = key_to_name(key)
        if name in pairs:
            del pairs[name]
        write_pair_group(pairs.create_group(name), arrays, {**attrs, "key": key})
        self._h5.flush()

    def delete_pair(self, key: str) -> None:
        """Remove a pair and everything stored for it (not on a sharded index)."""
        self._check_writable(whole_pairs=True)
        pairs = self._pairs()
        if pairs is not None and key_to_name(key) in pairs:
            del pairs[key_to_name(key)]
            self._h5.flush()


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


def open_proxies(path: str | os.PathLike[str], mode: str = "r") -> ProxyFile:
    """Open an existing proxies file (``mode`` ``"r"`` or ``"r+"``).

    Raises:
        InputError: the file is missing (mentioning an interrupted run's journal if there is one),
        corrupt, locked or not a proxies file.
    """
    if mode not in ("r", "r+"):
        raise ValueError(f"mode must be 'r' or 'r+', not {mode!r}")
    path = Path(path)
    _finish_interrupted_edit(path)
    if not path.exists():
        journal = journal_path(path)
        if journal.is_dir():
            raise InputError(
                f"{path}: does not exist yet; an unfinished `pseudolabel sgm` run keeps "
                f"{len(list(journal.glob('*.h5')))} finished pairs in {journal}: rerun the same command to finish it"
            )
    return ProxyFile(open_h5(path, mode), path)


def _finish_interrupted_edit(path: Path) -> None:
    """Before opening ``path``: finish or undo an edit that a kill interrupted (its log ``<path>.edit``
    exists; see :mod:`pseudolabel.store.edits`), taking the output lock for it.

    When the lock is held (an edit is running) nothing is done: the running edit holds the HDF5 lock,
    and opening stops with "open for writing by another process". When the log cannot be acted on
    (no write permission), a log of an uncommitted edit is harmless (the file is as before that
    edit) and opening goes on; a committed one must be finished first.

    Raises:
        InputError: a committed edit cannot be finished here.
    """
    from pseudolabel.store import edits

    log = edits.log_path(path)
    if not log.exists():
        return
    from pseudolabel.store.journal import output_lock

    try:
        with output_lock(path):
            edits.recover(path)
    except (InputError, OSError) as error:
        if isinstance(error, InputError) and "another process is writing" in str(error):
            return
        try:
            state = edits.log_state(path)
        except (InputError, OSError):
            state = "unknown"
        if state != "begun":
            raise InputError(
                f"{path}: an edit was interrupted after it committed ({log}) and cannot be finished here "
                f"({first_line(error)}); run `pseudolabel inspect {path}` as a user who may write the file"
            ) from None


# ----------------------------------------------------------------------------------------------
# crash-safe writing of a whole run


def journal_path(out: Path) -> Path:
    """The journal folder of output ``out``: ``<out>.journal``."""
    return out.with_name(out.name + ".journal")


def partial_path(out: Path) -> Path:
    """Where the final file is assembled before its atomic rename: ``<out>.partial``."""
    return out.with_name(out.name + ".partial")


def lock_path(out: Path) -> Path:
    """The lock file held while a process writes ``out``: ``<out>.lock``."""
    return out.with_name(out.name + ".lock")


def find_pair_file(proxies_path: str | os.PathLike[str], path_text: str) -> Path | None:
    """The file a pair attribute names (``left``, ``right``, ``gt_left``), as written or next to the proxies file; None if neither.

    ``pseudolabel sgm`` stores the paths as it was given them, so a relative path is relative to the
    folder ``sgm`` ran in; when the proxies file has moved with its dataset, the path relative to the
    file's own folder is tried next.
    """
    path = Path(path_text)
    for candidate in (path, Path(proxies_path).parent / path):
        if candidate.is_file():
            return candidate
    return None


def resolve_pair_file(proxies_path: str | os.PathLike[str], path_text: str, what: str, key: str) -> Path:
    """Like :func:`find_pair_file`, but a missing file is an error naming the pair.

    Args:
        proxies_path: the proxies HDF5 file.
        path_text: the stored path.
        what: what the file is, for the message (``"left"``, ``"ground-truth"``).
        key: the pair's key, for the message.

    Raises:
        InputError: neither place holds the file.
    """
    found = find_pair_file(proxies_path, path_text)
    if found is None:
        raise InputError(
            f"{proxies_path}: the {what} image of pair {key!r}, {path_text}, does not exist (tried it as given and next to the "
            f"proxies file); run from the folder where `pseudolabel sgm` was run, or recompute the proxies"
        )
    return found
