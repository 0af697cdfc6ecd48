"""Sharded proxies files (``pseudolabel sgm --shard-size N``, ``format_version`` 2).

``OUT.h5`` is a small index: the usual root attributes plus ``shard_size``, and ``/pairs/<name>``
entries that are HDF5 external links to ``/pairs/<name>`` in ``OUT.h5.shards/NNNNN.h5`` (relative
paths, resolved from the index's folder, so the index and its shards move together). Each shard is an
ordinary HDF5 file with the pairs' groups, laid out as in an unsharded file. Readers follow the links
without knowing (:class:`pseudolabel.store.proxies.ProxyFile` lists an index's keys from the link
names, without opening the shards).

Writing, crash-safe per shard:

- :func:`assemble_sharded` (the end of a ``pseudolabel sgm`` run): new pairs, in key order, fill the
  last shard up to ``shard_size`` and then new shards; each changed shard is written as
  ``NNNNN.h5.partial`` (a copy plus the journal's pairs) and renamed over ``NNNNN.h5``; then the index
  is assembled in ``OUT.h5.partial`` and renamed over ``OUT.h5``; only then is the journal removed. A kill
  at any moment leaves every shard either old or new, and the old index, whose links still resolve
  (a shard only gains pairs); the rerun repeats the assembly from the journal. (One exception: an
  ``--overwrite`` run that reuses shard names replaces them before the index, so a reader between a
  kill in those last renames and the rerun can find pairs of the new run under the old index.)
- :class:`ShardEdits` (``edit_proxies`` on a sharded file: confidences, labels): the first write to a
  pair copies its shard to ``NNNNN.h5.editing``; the edits go there and, on success, each copy is
  renamed over its shard. A kill or an exception leaves every shard untouched.

Imports h5py only (never torch).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import h5py

from pseudolabel.errors import InputError
from pseudolabel.store.durability import fsync_directory, fsync_file
from pseudolabel.store.layout import PAIRS, copy_journal_pairs, initialise_root
from pseudolabel.store.names import key_to_name

SHARD_FORMAT = "pseudolabel-proxies-shard"


def shards_path(out: Path) -> Path:
    """The folder of the shards of index ``out``: ``<out>.shards``."""
    return out.with_name(out.name + ".shards")


def shard_link_name(out: Path, number: int) -> str:
    """The external-link file name of shard ``number``, relative to the index's folder: ``<out name>.shards/NNNNN.h5``."""
    return f"{out.name}.shards/{number:05d}.h5"


def _shard_number(link_file: str) -> int:
    return int(Path(link_file).stem)


def shard_links(index: h5py.File) -> dict[str, str]:
    """Pair group name -> shard file (as linked, relative to the index's folder) of an index file."""
    pairs = index.get(PAIRS)
    if not isinstance(pairs, h5py.Group):
        return {}
    links: dict[str, str] = {}
    for name in pairs:
        link = pairs.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            links[name] = str(link.filename)
    return links


def assemble_sharded(
    out: Path,
    entries: Mapping[str, Path],
    fresh: bool,
    shard_size: int,
    initialise: dict[str, object],
) -> None:
    """Add the journal's pairs ``entries`` (key -> journal entry file) to the sharded output ``out``.

    Args:
        out: the index file (created when missing or ``fresh``).
        entries: pairs to add, key -> journal entry (an HDF5 file whose ``/pair`` group is copied).
        fresh: replace the whole output (``--overwrite``): the existing index and shards are ignored,
            unreferenced shards removed at the end.
        shard_size: at most this many pairs per shard.
        initialise: keyword arguments of :func:`pseudolabel.store.layout.initialise_root` (``params``,
            ``max_disp_from_calib``, ``store``) for a new index.
    """
    folder = shards_path(out)
    folder.mkdir(exist_ok=True)
    existing: dict[str, str] = {}
    if not fresh and out.exists():
        with h5py.File(out, "r") as index:
            existing = shard_links(index)
    counts: dict[int, int] = {}
    for link_file in existing.values():
        counts[_shard_number(link_file)] = counts.get(_shard_number(link_file), 0) + 1
    placement: dict[str, int] = {}
    number = max(counts) if counts else 0
    for key in sorted(entries):
        name = key_to_name(key)
        if name in existing:
            placement[key] = _shard_number(existing[name])
            continue
        while counts.get(number, 0) >= shard_size:
            number += 1
        placement[key] = number
        counts[number] = counts.get(number, 0) + 1
    by_shard: dict[int, list[str]] = {}
    for key, shard in placement.items():
        by_shard.setdefault(shard, []).append(key)
    for shard, keys in sorted(by_shard.items()):
        target = out.parent / shard_link_name(out, shard)
        partial = target.with_name(target.name + ".partial")
        if not fresh and target.exists():
            shutil.copyfile(target, partial)
            h5file = h5py.File(partial, "r+")
        else:
            h5file = h5py.File(partial, "w")
            h5file.attrs["format"] = SHARD_FORMAT
            h5file.attrs["index"] = out.name
        try:
            copy_journal_pairs(h5file.require_group(PAIRS), entries, keys)
        finally:
            h5file.close()
        fsync_file(partial)
    for shard in sorted(by_shard):
        target = out.parent / shard_link_name(out, shard)
        os.replace(target.with_name(target.name + ".partial"), target)
    fsync_directory(folder)
    partial_index = out.with_name(out.name + ".partial")
    if not fresh and out.exists():
        shutil.copyfile(out, partial_index)
        index = h5py.File(partial_index, "r+")
    else:
        index = h5py.File(partial_index, "w")
        initialise_root(index, shard_size=shard_size, **initialise)  # type: ignore[arg-type]
    try:
        pairs = index.require_group(PAIRS)
        for key, shard in sorted(placement.items()):
            name = key_to_name(key)
            if name in pairs:
                del pairs[name]
            pairs[name] = h5py.ExternalLink(shard_link_name(out, shard), f"/{PAIRS}/{name}")
        linked = set(shard_links(index).values())
    finally:
        index.close()
    fsync_file(partial_index)
    os.replace(partial_index, out)
    fsync_directory(out.parent)
    if fresh:
        for stale in folder.glob("*.h5"):
            if f"{folder.name}/{stale.name}" not in linked:
                stale.unlink()


def remove_shards(out: Path) -> None:
    """Delete the shards folder of ``out`` (after an unsharded file replaced a sharded one)."""
    shutil.rmtree(shards_path(out), ignore_errors=True)


class ShardEdits:
    """Copy-on-write edits of a sharded file's pairs: writes go to ``NNNNN.h5.editing`` copies, which
    :meth:`commit` renames over the shards (see the module docstring)."""

    def __init__(self, index_path: Path) -> None:
        self.index_path = index_path
        self.open: dict[str, h5py.File] = {}

    def group(self, link: h5py.ExternalLink, name: str, write: bool) -> h5py.Group | None:
        """The pair group ``name`` in the editing copy of the link's shard; ``None`` when there is no
        copy yet and ``write`` is False (the caller then reads through the link)."""
        link_file = str(link.filename)
        h5file = self.open.get(link_file)
        if h5file is None:
            if not write:
                return None
            shard = self.index_path.parent / link_file
            editing = shard.with_name(shard.name + ".editing")
            try:
                shutil.copyfile(shard, editing)
            except OSError as error:
                raise InputError(f"{shard}: cannot copy the shard for editing ({error.strerror or error}); check the disk and permissions") from None
            h5file = h5py.File(editing, "r+")
            self.open[link_file] = h5file
        found = h5file.get(str(link.path))
        return found if isinstance(found, h5py.Group) else None

    def flush(self) -> None:
        """Flush the editing copies."""
        for h5file in self.open.values():
            h5file.flush()

    def _close(self) -> list[Path]:
        paths = []
        for link_file, h5file in self.open.items():
            if h5file.id.valid:
                h5file.close()
            paths.append(self.index_path.parent / link_file)
        self.open.clear()
        return paths

    def commit(self) -> None:
        """Rename every editing copy over its shard (each shard is replaced atomically)."""
        shards = self._close()
        for shard in shards:
            editing = shard.with_name(shard.name + ".editing")
            fsync_file(editing)
            os.replace(editing, shard)
        if shards:
            fsync_directory(shards[0].parent)

    def discard(self) -> None:
        """Drop the editing copies (the shards stay as they were)."""
        for shard in self._close():
            with contextlib.suppress(OSError):
                shard.with_name(shard.name + ".editing").unlink()
