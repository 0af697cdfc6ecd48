"""Crash-safe writing of proxies files.

- :func:`output_lock` -- one writer per output file (``<out>.lock``, an exclusive ``flock``);
- :class:`ProxyRun` -- one ``pseudolabel sgm`` run: finished pairs go to a journal folder
  ``<out>.journal/`` (one file per pair, written under a temporary name and renamed: an HDF5 file,
  :func:`write_journal_entry`, from worker processes, or a raw entry, :func:`write_raw_journal_entry`,
  from the process that assembles), and :meth:`ProxyRun.finish` assembles ``<out>.partial`` (the existing output
  plus the journal's pairs) and renames it over ``<out>`` in one atomic step;
- :func:`edit_proxies` -- in-place edits of a finished file (confidences, labels) that write only what
  they add and commit atomically (:mod:`pseudolabel.store.edits`);
- :func:`create_or_open_proxies` -- the simple, non-journaled writer (tests, benchmarks).

A kill at any moment leaves the previous output intact, and a rerun resumes from the journal. The
file layout itself is in :mod:`pseudolabel.store.layout`. Imports h5py and numpy only (never torch).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pseudolabel.errors import InputError
from pseudolabel.sgm.params import SGMParams
from pseudolabel.store import edits
from pseudolabel.store.datasets_io import DEFAULT_COMPRESSION, open_h5, python_value
from pseudolabel.store.durability import fsync_directory, fsync_file
from pseudolabel.store.entries import RAW_SUFFIX, encode_raw_entry, read_raw_entry
from pseudolabel.store.layout import (
    JOURNAL_ENTRY_FORMAT,
    JOURNAL_HEADER,
    PAIRS,
    RESULT_DATASETS,
    STORES,
    copy_journal_pairs,
    describe_difference,
    initialise_root,
    run_identity,
    write_pair_group,
)
from pseudolabel.store.names import journal_path, lock_path, partial_path
from pseudolabel.store.proxies import ProxyFile, open_proxies
from pseudolabel.store.shards import ShardEdits, assemble_sharded, remove_shards


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<out>.lock`` (fails at once if another process holds it).

    Raises:
        InputError: another process is writing ``out``, or the lock cannot be created.
    """
    lock = lock_path(out)
    try:
        handle = open(lock, "a+")
    except OSError as error:
        raise InputError(f"{out}: cannot write next to it ({error.strerror or error}); choose a writable --out") from None
    try:
        try:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - non-POSIX
            pass
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise InputError(f"{out}: another process is writing it (lock {lock}); wait for it to finish or choose another --out") from None
            raise
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                lock.unlink()
    finally:
        handle.close()


#: File name endings of journal entries: HDF5 entries and raw entries (:mod:`pseudolabel.store.entries`).
HDF5_SUFFIX = ".h5"
ENTRY_SUFFIXES = (HDF5_SUFFIX, RAW_SUFFIX)


def journal_entry_path(journal: Path, key: str, suffix: str = HDF5_SUFFIX) -> Path:
    """File of one pair in the journal (named by a hash of the key, which may contain ``/``; ``suffix`` one of
    :data:`ENTRY_SUFFIXES`)."""
    return journal / (hashlib.sha1(key.encode("utf-8")).hexdigest()[:24] + suffix)


def journal_entries(journal: Path) -> list[Path]:
    """The entry files in a journal folder (HDF5 and raw, sorted by path); ``[]`` when there is no folder."""
    if not journal.is_dir():
        return []
    return sorted(path for suffix in ENTRY_SUFFIXES for path in journal.glob("*" + suffix))


def write_journal_entry(
    journal: Path,
    key: str,
    arrays: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    identity: str,
    compression: str = DEFAULT_COMPRESSION,
    dataset_attrs: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write one finished pair into the journal atomically: :func:`encode_journal_entry`, then
    :func:`write_journal_bytes`. Safe to call from worker processes: each entry is its own file.

    Returns:
        The entry's path.
    """
    return write_journal_bytes(journal, key, encode_journal_entry(key, arrays, attrs, identity, compression, dataset_attrs))


def encode_journal_entry(
    key: str,
    arrays: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    identity: str,
    compression: str = DEFAULT_COMPRESSION,
    dataset_attrs: Mapping[str, Mapping[str, Any]] | None = None,
) -> bytes:
    """One pair's journal entry as the bytes of an HDF5 file, built in memory (compression happens here,
    so a Dask worker can do it and send the compressed entry).

    Args:
        key: the pair's key.
        arrays: the pair's datasets, (H, W) each, in their on-disk dtypes (see
            :func:`pseudolabel.store.layout.result_arrays`).
        attrs: the pair's group attributes (see :func:`pseudolabel.store.layout.pair_attributes`).
        identity: the run's :func:`pseudolabel.store.layout.run_identity`.
        compression: a key of :data:`pseudolabel.store.datasets_io.COMPRESSIONS`.
        dataset_attrs: attributes of some of the datasets, by name.
    """
    with h5py.File(f"journal-entry-{uuid.uuid4().hex}", "w", driver="core", backing_store=False) as h5file:
        h5file.attrs["format"] = JOURNAL_ENTRY_FORMAT
        h5file.attrs["key"] = key
        h5file.attrs["run_identity"] = identity
        write_pair_group(h5file.create_group("pair"), arrays, {**attrs, "key": key}, compression, dataset_attrs)
        h5file.flush()
        return bytes(h5file.id.get_file_image())


def write_raw_journal_entry(
    journal: Path,
    key: str,
    arrays: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    identity: str,
    compression: str,
    size: tuple[int, int],
    factors: Mapping[str, int] | None = None,
    dataset_attrs: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write one finished pair into the journal atomically as a raw entry (:func:`pseudolabel.store.entries.encode_raw_entry`:
    array bytes, no compression; datasets with a ``factor`` above 1 stored at ``1 / factor`` of ``size`` and
    enlarged when the output is assembled). Arguments as for ``encode_raw_entry``.

    Returns:
        The entry's path (``<hash>.raw``).

    Raises:
        ValueError: see ``encode_raw_entry``.
    """
    pieces = encode_raw_entry(key, arrays, attrs, identity, compression, size, factors, dataset_attrs)
    return write_journal_bytes(journal, key, pieces, RAW_SUFFIX)


def write_journal_bytes(journal: Path, key: str, entry: bytes | Sequence[bytes | memoryview], suffix: str = HDF5_SUFFIX) -> Path:
    """Write an entry into the journal folder atomically (temporary file, then rename); returns its path.

    Args:
        journal: the journal folder.
        key: the pair's key (names the file, :func:`journal_entry_path`).
        entry: the bytes of :func:`encode_journal_entry`, or the pieces of
            :func:`pseudolabel.store.entries.encode_raw_entry`, written one after the other.
        suffix: :data:`HDF5_SUFFIX` or :data:`pseudolabel.store.entries.RAW_SUFFIX`, as the entry is.
    """
    target = journal_entry_path(journal, key, suffix)
    temporary = journal / f".{target.stem}{target.suffix}.{os.getpid()}.{threading.get_ident()}.tmp"
    pieces = [entry] if isinstance(entry, bytes) else entry
    try:
        with open(temporary, "wb") as handle:
            for piece in pieces:
                handle.write(piece)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return target


def _read_journal_entry(path: Path, identity: str, datasets: tuple[str, ...] = tuple(RESULT_DATASETS)) -> str | None:
    """The key of a valid journal entry (HDF5 or raw), or ``None`` when it is damaged or from another run."""
    if path.suffix == RAW_SUFFIX:
        try:
            entry = read_raw_entry(path)
        except (OSError, ValueError):
            return None
        if entry.identity != identity or any(name not in entry.arrays for name in datasets):
            return None
        return entry.key
    try:
        with h5py.File(path, "r") as h5file:
            if python_value(h5file.attrs.get("format")) != JOURNAL_ENTRY_FORMAT:
                return None
            if python_value(h5file.attrs.get("run_identity")) != identity:
                return None
            group = h5file.get("pair")
            if not isinstance(group, h5py.Group) or not bool(group.attrs.get("complete", False)):
                return None
            if any(name not in group for name in datasets):
                return None
            return str(python_value(h5file.attrs["key"]))
    except (OSError, KeyError, ValueError):
        return None


@dataclass
class RunState:
    """What :class:`ProxyRun` found when it started."""

    done_in_file: set[str]
    done_in_journal: dict[str, Path]
    fresh: bool
    notes: list[str]

    @property
    def done(self) -> set[str]:
        """Keys of every finished pair (in the output file or in the journal)."""
        return self.done_in_file | set(self.done_in_journal)


class ProxyRun:
    """Crash-safe writer of one ``pseudolabel sgm`` run into ``out`` (see the module docstring).

    Usage::

        with ProxyRun(out, params, max_disp_from_calib, overwrite) as run:
            todo = [pair for pair in pairs if pair.key not in run.state.done]
            for pair in todo:            # possibly in worker processes:
                write_journal_entry(run.journal, pair.key, arrays, attrs, run.identity)
            run.finish()                 # assemble <out>.partial, rename over <out>, drop the journal

    Rules: an existing complete ``out`` is never modified in place; a rerun with the same identity
    (parameters) resumes from ``out`` and the journal; another identity is refused unless
    ``overwrite`` (then every pair is recomputed and ``out`` is replaced only by :meth:`finish`).
    """

    def __init__(
        self,
        out: str | os.PathLike[str],
        params: SGMParams,
        max_disp_from_calib: bool = False,
        overwrite: bool = False,
        store: str = "full",
        shard_size: int | None = None,
    ) -> None:
        if store not in STORES:
            raise InputError(f"unknown --store {store!r}; use {', '.join(STORES)}")
        if shard_size is not None and shard_size < 1:
            raise InputError(f"--shard-size must be at least 1, not {shard_size}")
        self.out = Path(out)
        self.params = params
        self.max_disp_from_calib = bool(max_disp_from_calib)
        self.overwrite = overwrite
        self.store = store
        self.shard_size = shard_size
        self.identity = run_identity(params, max_disp_from_calib, store)
        self.journal = journal_path(self.out)
        self.state = RunState(set(), {}, overwrite, [])
        self._lock: contextlib.ExitStack | None = None

    def __enter__(self) -> ProxyRun:
        out = self.out
        if out.is_dir():
            raise InputError(f"{out}: is a folder; --out must be a file path such as {out / 'proxies.h5'}")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"{out.parent}: cannot create the output folder ({error.strerror or error}); choose a writable --out") from None
        if not os.access(out.parent, os.W_OK | os.X_OK):
            raise InputError(f"{out.parent}: is not writable; choose a writable --out")
        if out.exists() and not os.access(out, os.R_OK):
            raise InputError(f"{out}: exists but cannot be read; check its permissions or choose another --out")
        stack = contextlib.ExitStack()
        stack.enter_context(output_lock(out))
        self._lock = stack
        try:
            self._scan()
        except BaseException:
            stack.close()
            self._lock = None
            raise
        return self

    def __exit__(self, exc_type: Any, *exc_info: Any) -> None:
        try:
            if self.journal.is_dir() and not journal_entries(self.journal):
                shutil.rmtree(self.journal, ignore_errors=True)
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    # start ------------------------------------------------------------------------------
    def _scan(self) -> None:
        state = self.state
        edits.recover(self.out)  # an interrupted confidence/labels edit of <out>: finish or undo it first
        stale = partial_path(self.out)
        if stale.exists():
            stale.unlink()
            state.notes.append(f"removed {stale} left by an interrupted run (the journal is kept)")
        header = self.journal / JOURNAL_HEADER
        journal_fresh = False
        if self.journal.is_dir():
            try:
                recorded = json.loads(header.read_text(encoding="utf-8"))
                journal_identity = json.dumps(recorded["identity"], sort_keys=True)
                # an interrupted --overwrite run is continued only by a run with the same parameters
                journal_fresh = bool(recorded.get("fresh", False)) and journal_identity == self.identity
            except (OSError, ValueError, KeyError, TypeError):
                recorded, journal_identity = None, None
            entries = journal_entries(self.journal)
            reusable = journal_identity == self.identity and (not self.overwrite or journal_fresh)
            if recorded is None and entries:
                state.notes.append(f"{self.journal}: has no valid {JOURNAL_HEADER}; its {len(entries)} entries are checked one by one")
                reusable = not self.overwrite
            if entries and not reusable:
                if not self.overwrite:
                    raise InputError(
                        f"{self.journal}: holds {len(entries)} finished pairs of an interrupted run with different SGM "
                        f"parameters ({describe_difference(journal_identity or '{}', self.identity)}); rerun with those "
                        "parameters to finish it, or pass --overwrite to discard it"
                    )
                state.notes.append(f"discarded {len(entries)} pairs of an interrupted earlier run in {self.journal}")
                shutil.rmtree(self.journal)
                journal_fresh = False
            elif entries:
                for entry in entries:
                    key = _read_journal_entry(entry, self.identity, STORES[self.store])
                    if key is None or journal_entry_path(self.journal, key, entry.suffix) != entry:
                        state.notes.append(f"{entry}: damaged journal entry, recomputing that pair")
                        entry.unlink()
                    elif key in state.done_in_journal:  # the same pair in both formats: keep one
                        entry.unlink()
                    else:
                        state.done_in_journal[key] = entry
            for temporary in self.journal.glob(".*.tmp") if self.journal.is_dir() else []:
                temporary.unlink()
        state.fresh = self.overwrite or journal_fresh
        if not state.fresh and self.out.exists():
            with ProxyFile(open_h5(self.out, "r"), self.out) as existing:
                if existing.identity != self.identity:
                    raise InputError(
                        f"{self.out}: was computed with different SGM parameters "
                        f"({describe_difference(existing.identity, self.identity)}); use the same options, "
                        "another --out, or --overwrite to recompute every pair"
                    )
                state.done_in_file = set(existing.keys())
                if self.shard_size is None:
                    self.shard_size = existing.shard_size
                elif existing.shard_size != self.shard_size:
                    layout = f"--shard-size {existing.shard_size}" if existing.shard_size else "one file (no --shard-size)"
                    raise InputError(
                        f"{self.out}: was written as {layout}, not --shard-size {self.shard_size}; "
                        "use the same layout, another --out, or --overwrite to rewrite it"
                    )
        try:
            self.journal.mkdir(exist_ok=True)
            payload = json.dumps({"identity": json.loads(self.identity), "fresh": state.fresh}, sort_keys=True)
            temporary_header = self.journal / f".{JOURNAL_HEADER}.tmp"
            temporary_header.write_text(payload, encoding="utf-8")
            os.replace(temporary_header, header)
        except OSError as error:
            raise InputError(f"{self.journal}: cannot be written ({error.strerror or error}); choose a writable --out") from None

    # end --------------------------------------------------------------------------------
    def record(self, key: str, entry: Path) -> None:
        """Note a journal entry written (by this process or a worker) during the run."""
        self.state.done_in_journal[key] = entry

    def finish(self) -> int:
        """Assemble the output: ``<out>.partial`` = existing output (unless fresh) + journal pairs, then rename.

        Returns:
            The number of pairs copied from the journal.
        """
        state = self.state
        entries = {key: path for key, path in state.done_in_journal.items() if state.fresh or key not in state.done_in_file}
        if not entries and not state.fresh:
            shutil.rmtree(self.journal, ignore_errors=True)
            return 0
        if self.shard_size is not None:
            initialise = {"params": self.params, "max_disp_from_calib": self.max_disp_from_calib, "store": self.store}
            assemble_sharded(self.out, entries, state.fresh, self.shard_size, initialise)
            shutil.rmtree(self.journal, ignore_errors=True)
            return len(entries)
        partial = partial_path(self.out)
        if not state.fresh and self.out.exists():
            shutil.copyfile(self.out, partial)
            h5file = h5py.File(partial, "r+")
        else:
            h5file = h5py.File(partial, "w")
            initialise_root(h5file, self.params, self.max_disp_from_calib, self.store)
        try:
            copy_journal_pairs(h5file.require_group(PAIRS), entries, sorted(entries))
        finally:
            h5file.close()
        fsync_file(partial)
        os.replace(partial, self.out)
        fsync_directory(self.out.parent)
        if state.fresh:
            remove_shards(self.out)
        shutil.rmtree(self.journal, ignore_errors=True)
        return len(entries)


def create_or_open_proxies(
    path: str | os.PathLike[str],
    params: SGMParams,
    overwrite: bool = False,
    max_disp_from_calib: bool = False,
) -> ProxyFile:
    """Open ``path`` for writing, creating it (with the root attributes) if needed.

    This writes in place (no journal); :class:`ProxyRun` is the crash-safe writer that
    ``pseudolabel sgm`` uses.

    Raises:
        InputError: the existing file was made with other SGM parameters (unless ``overwrite``,
        which starts a new, empty file), or it is corrupt or not a proxies file.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        proxies = ProxyFile(open_h5(path, "r+"), path)
        wanted = run_identity(params, max_disp_from_calib)
        if proxies.identity != wanted:
            stored = proxies.identity
            proxies.close()
            raise InputError(
                f"{path}: was computed with different SGM parameters ({describe_difference(stored, wanted)}); "
                "use the same parameters, another output file, or overwrite"
            )
        return proxies
    path.parent.mkdir(parents=True, exist_ok=True)
    h5file = h5py.File(path, "w")
    initialise_root(h5file, params, max_disp_from_calib)
    h5file.flush()
    return ProxyFile(h5file, path)


@dataclass
class EditStats:
    """What one :func:`edit_proxies` wrote: ``appended`` bytes at the end of the file (the new datasets and
    their metadata), ``rewritten`` bytes of existing metadata pages (written twice: to the edit log and
    into the file) and ``logged`` bytes of the edit log. Filled in when the edit commits."""

    appended: int = 0
    rewritten: int = 0
    logged: int = 0
    recovered: str | None = None


@contextlib.contextmanager
def edit_proxies(path: str | os.PathLike[str], stats: EditStats | None = None) -> Iterator[ProxyFile]:
    """Crash-safe in-place editing: yields ``path`` open for writing; what the block writes is committed
    atomically when it ends without an exception, and is discarded otherwise.

    Only the new data is written (at the end of the file) plus the few metadata pages the edit changes
    (see :mod:`pseudolabel.store.edits`). A kill at any moment leaves ``path`` as it was before the
    edit, or with the whole edit once it has committed; an interrupted edit is finished or undone by the
    next edit or the next :func:`pseudolabel.store.proxies.open_proxies` (``<path>.edit`` is its log).
    Holds the output lock (``<path>.lock``) and the HDF5 file lock for the whole edit. A sharded file
    is edited shard by shard instead (:class:`pseudolabel.store.shards.ShardEdits`): each shard written to
    is copied, edited and renamed over its original on success (a shard holds ``shard_size`` pairs, so an
    edit costs at most the shards it touches), and the index itself is not edited.

    Args:
        path: a proxies file.
        stats: filled with the bytes the edit wrote (:class:`EditStats`) when it commits.

    Raises:
        InputError: the file is missing, not a proxies file, or open in another process.
    """
    path = Path(path)
    with output_lock(path):
        recovered = edits.recover(path)
        stale_copy = path.with_name(path.name + ".editing")  # left by a killed edit of pseudolabel <= 0.1
        if stale_copy.exists():
            stale_copy.unlink()
        # one-line errors for a missing, corrupt or foreign file
        with open_proxies(path, "r") as existing:
            sharded = existing.shard_size is not None
        if sharded:
            shard_edits = ShardEdits(path)
            try:
                with ProxyFile(open_h5(path, "r"), path, shard_edits) as proxies:
                    yield proxies
                shard_edits.commit()
            except BaseException:
                shard_edits.discard()
                raise
            return
        with edits.overlay(path) as handle:
            with ProxyFile(h5py.File(handle, "r+"), path) as proxies:
                yield proxies
            rewritten = handle.overlay_bytes
            logged = handle.commit()
            if stats is not None:
                stats.appended, stats.rewritten, stats.logged, stats.recovered = handle.appended, rewritten, logged, recovered
