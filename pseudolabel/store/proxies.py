"""The proxies HDF5 file as an object: :class:`ProxyFile` and :func:`open_proxies`.

The layout of the file (the contract, also in ``data/README.md``) is described in
:mod:`pseudolabel.store.layout`, which also builds the pieces a pair is written from; key names and
the files next to an output are in :mod:`pseudolabel.store.names`; crash-safe writing of a whole run
and in-place edits are in :mod:`pseudolabel.store.journal`.

Opening a file first finishes or undoes an edit that a kill interrupted (:mod:`pseudolabel.store.edits`).

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

from pseudolabel.errors import InputError
from pseudolabel.sgm.params import SGMParams
from pseudolabel.store.datasets_io import DEFAULT_COMPRESSION, first_line, open_h5, python_value, write_dataset
from pseudolabel.store.layout import (
    CONFIDENCE_GROUP,
    DISPARITY_MASK,
    ENCODING,
    FORMAT,
    FORMAT_VERSION,
    INTEGER_COSTS,
    LABELS,
    PAIRS,
    RESULT_DATASETS,
    run_identity,
    write_pair_group,
)
from pseudolabel.store.names import journal_path, key_to_name, name_to_key

if TYPE_CHECKING:
    from pseudolabel.store.shards import ShardEdits


class ProxyFile:
    """An open proxies file (:mod:`pseudolabel.store.layout` describes its layout). Use as a context manager.

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
