"""Crash-safe in-place edits of a finished proxies file: each edit writes only what it adds.

HDF5 itself has no journal: a process killed while the library writes (or while its metadata cache
evicts dirty entries between two flushes) can leave a file whose B-trees, heaps and object headers
disagree. An edit therefore never lets HDF5 overwrite a byte of the file as it was when the edit
began. The file is opened through :class:`OverlayFile` (h5py's ``fileobj`` driver):

* bytes at or beyond ``base`` (the file's length when the edit began) are written straight to the
  file: the new datasets' chunks, and the new metadata blocks HDF5 allocates at the end;
* bytes below ``base`` (the superblock, the headers, B-tree nodes and heaps that gain a link) are
  kept in memory, in pages of 512 bytes.

So until the edit commits, the file up to ``base`` is byte for byte the file before the edit, and
every HDF5 reader reads it as such (a file longer than its recorded end of allocation is valid
HDF5). The edit log ``<file>.edit`` records the state:

1. :func:`begin`: ``<file>.edit`` says "begun, base = N" (written to a temporary name, flushed to
   disk, renamed);
2. :meth:`OverlayFile.commit`: the appended bytes are flushed to disk, then the log is replaced (again
   through a temporary name) by "committed" plus every in-memory page and the final length, with a
   SHA-256 digest; this rename is the commit point. The pages are then written into the file, the file
   is cut to its final length and flushed, and the log is removed.

:func:`recover` (run under the output lock by the next edit, and by :func:`pseudolabel.store.proxies.open_proxies`
when it finds a log) finishes what a kill interrupted: a "begun" log -> the file is cut back to
``base`` (the state before the edit); a "committed" log -> its pages are written again (idempotent)
and the file is cut to the final length. Either way the log is then removed.

While an edit runs it holds an exclusive ``flock`` on the file itself, the lock HDF5 readers take
(shared) when they open a file: a reader started meanwhile stops with "is open for writing by
another process", exactly as it does against any HDF5 writer, and an edit does not start while a
reader has the file open.

Imports the standard library only (h5py is imported by the caller).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pseudolabel.errors import InputError
from pseudolabel.store.durability import fsync_directory

PAGE_BYTES = 512
LOG_MAGIC = b"pseudolabel-edit-log 1\n"
_RECORD = struct.Struct("<QI")


def log_path(path: Path) -> Path:
    """The edit log of proxies file ``path``: ``<path>.edit``."""
    return path.with_name(path.name + ".edit")


def _write_log(path: Path, header: dict[str, Any], records: list[tuple[int, bytes]]) -> int:
    """Write the edit log of ``path`` atomically (temporary name, fsync, rename, fsync of the folder); returns its size."""
    target = log_path(path)
    temporary = target.with_name(target.name + ".tmp")
    digest = hashlib.sha256()
    size = 0
    with open(temporary, "wb") as handle:

        def put(chunk: bytes) -> None:
            nonlocal size
            digest.update(chunk)
            handle.write(chunk)
            size += len(chunk)

        put(LOG_MAGIC)
        put(json.dumps({**header, "records": len(records)}, sort_keys=True).encode() + b"\n")
        for offset, data in records:
            put(_RECORD.pack(offset, len(data)))
            put(data)
        handle.write(digest.digest())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)
    fsync_directory(target.parent)
    return size + digest.digest_size


def _read_log(path: Path) -> tuple[dict[str, Any], list[tuple[int, bytes]]]:
    """The header and page records of the edit log of ``path``.

    Raises:
        InputError: the log is damaged (it cannot be: logs are renamed into place only once flushed).
    """
    target = log_path(path)
    data = target.read_bytes()
    body, stored = data[:-32], data[-32:]
    if not body.startswith(LOG_MAGIC) or hashlib.sha256(body).digest() != stored:
        raise InputError(f"{target}: damaged edit log of {path}; move both aside and recompute the file (pseudolabel sgm --overwrite)")
    position = len(LOG_MAGIC)
    end_of_header = body.index(b"\n", position)
    header = json.loads(body[position:end_of_header])
    position = end_of_header + 1
    records: list[tuple[int, bytes]] = []
    for _ in range(int(header["records"])):
        offset, length = _RECORD.unpack_from(body, position)
        position += _RECORD.size
        records.append((offset, body[position : position + length]))
        position += length
    return header, records


def begin(path: Path) -> int:
    """Record that an edit of ``path`` begins (log state "begun"); returns ``base``, the file's length."""
    base = path.stat().st_size
    _write_log(path, {"state": "begun", "base": base}, [])
    return base


def recover(path: Path) -> str | None:
    """Finish or undo an interrupted edit of ``path`` (call with the output lock held).

    Returns:
        ``None`` when there was no log, ``"rolled back"`` (the file is as before that edit) or
        ``"completed"`` (the edit had committed; its last steps were redone).
    """
    target = log_path(path)
    stale = target.with_name(target.name + ".tmp")
    if stale.exists():
        stale.unlink()
    if not target.exists():
        return None
    header, records = _read_log(path)
    with open(path, "r+b", buffering=0) as handle:
        if header["state"] == "committed":
            for offset, data in records:
                os.pwrite(handle.fileno(), data, offset)
            os.ftruncate(handle.fileno(), int(header["length"]))
            outcome = "completed"
        else:
            base = int(header["base"])
            if os.fstat(handle.fileno()).st_size > base:
                os.ftruncate(handle.fileno(), base)
            outcome = "rolled back"
        os.fsync(handle.fileno())
    target.unlink()
    fsync_directory(path.parent)
    return outcome


def lock_data_file(descriptor: int, path: Path) -> None:
    """Take the exclusive ``flock`` HDF5 writers hold on ``path`` (readers take it shared).

    Raises:
        InputError: another process has the file open.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise InputError(f"{path}: is open in another process (reading or writing it); wait for it to finish, then rerun") from None
        # a file system without flock (HDF5 itself needs HDF5_USE_FILE_LOCKING=FALSE there): the output lock still holds


class OverlayFile(io.RawIOBase):
    """A file object for h5py's ``fileobj`` driver that never overwrites the first ``base`` bytes of the
    file before :meth:`commit` (see the module docstring).

    Attributes:
        base: the file's length when the edit began; bytes below it stay untouched until the commit.
        appended: bytes written at or beyond ``base`` so far.
    """

    def __init__(self, path: Path, base: int) -> None:
        super().__init__()
        self.path = path
        self.base = base
        self.appended = 0
        self._fd = os.open(path, os.O_RDWR)
        try:
            lock_data_file(self._fd, path)
        except BaseException:
            os.close(self._fd)
            raise
        self._length = os.fstat(self._fd).st_size
        if self._length != base:
            os.close(self._fd)
            raise InputError(f"{path}: changed since its edit began; rerun the command")
        self._zero_from = base  # old bytes at or beyond this offset read as zeros (the file was cut there)
        self._pages: dict[int, bytearray] = {}
        self._position = 0
        self.committed = False

    # io.RawIOBase ---------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._position = offset
        elif whence == io.SEEK_CUR:
            self._position += offset
        else:
            self._position = self._length + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def _old_bytes(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the file below ``base`` as the edit sees them, before the pages are applied."""
        data = os.pread(self._fd, end - start, start) if start < self._zero_from else b""
        data = data[: max(0, min(end, self._zero_from) - start)]
        return data + bytes(end - start - len(data))

    def _page(self, index: int) -> bytearray:
        page = self._pages.get(index)
        if page is None:
            start = index * PAGE_BYTES
            page = bytearray(self._old_bytes(start, min(start + PAGE_BYTES, self.base)))
            self._pages[index] = page
        return page

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        start = self._position
        end = min(start + len(view), self._length)
        if end <= start:
            return 0
        low_end = min(end, self.base)
        if start < low_end:
            view[: low_end - start] = self._old_bytes(start, low_end)
            for index in range(start // PAGE_BYTES, (low_end - 1) // PAGE_BYTES + 1):
                page = self._pages.get(index)
                if page is not None:
                    page_start = index * PAGE_BYTES
                    first, last = max(start, page_start), min(low_end, page_start + len(page))
                    view[first - start : last - start] = page[first - page_start : last - page_start]
        high_start = max(start, self.base)
        if high_start < end:
            data = os.pread(self._fd, end - high_start, high_start)
            view[high_start - start : high_start - start + len(data)] = data
            view[high_start - start + len(data) : end - start] = bytes(end - high_start - len(data))
        self._position = end
        return end - start

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        start, end = self._position, self._position + len(view)
        low_end = min(end, self.base)
        position = start
        while position < low_end:
            index = position // PAGE_BYTES
            page = self._page(index)
            page_start = index * PAGE_BYTES
            stop = min(low_end, page_start + len(page))
            page[position - page_start : stop - page_start] = view[position - start : stop - start]
            position = stop
        if end > self.base:
            high_start = max(start, self.base)
            chunk = view[high_start - start :]
            written = 0
            while written < len(chunk):
                written += os.pwrite(self._fd, chunk[written:], high_start + written)
            self.appended += len(chunk)
        self._position = end
        self._length = max(self._length, end)
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        size = self._position if size is None else size
        os.ftruncate(self._fd, max(size, self.base))
        if size < self.base:
            self._zero_from = min(self._zero_from, size)
            for index in [i for i in self._pages if i * PAGE_BYTES >= size]:
                del self._pages[index]
            if size % PAGE_BYTES and size // PAGE_BYTES in self._pages:
                page = self._pages[size // PAGE_BYTES]
                page[size % PAGE_BYTES :] = bytes(len(page) - size % PAGE_BYTES)
        self._length = size
        return size

    def flush(self) -> None:
        pass

    # the edit's end ---------------------------------------------------------------------------
    @property
    def overlay_bytes(self) -> int:
        """Bytes held in memory for the region below ``base`` (written to the log and the file by :meth:`commit`)."""
        return sum(len(page) for page in self._pages.values())

    def commit(self) -> int:
        """Make the edit durable (call after the HDF5 file is closed); returns the bytes written to the log.

        See the module docstring for the order of the steps; the rename of the "committed" log is the
        commit point.
        """
        os.fsync(self._fd)
        length = self._length
        records = []
        for index in sorted(self._pages):
            start = index * PAGE_BYTES
            if start < length:
                records.append((start, bytes(self._pages[index][: length - start])))
        logged = _write_log(self.path, {"state": "committed", "base": self.base, "length": length}, records)
        for offset, data in records:
            os.pwrite(self._fd, data, offset)
        os.ftruncate(self._fd, length)
        os.fsync(self._fd)
        log_path(self.path).unlink()
        fsync_directory(self.path.parent)
        self._pages.clear()
        self.committed = True
        return logged

    def roll_back(self) -> None:
        """Discard the edit: cut the file back to ``base`` and remove the log."""
        self._pages.clear()
        os.ftruncate(self._fd, self.base)
        os.fsync(self._fd)
        with contextlib.suppress(FileNotFoundError):
            log_path(self.path).unlink()
        fsync_directory(self.path.parent)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)  # releases the flock
        super().close()


@contextlib.contextmanager
def overlay(path: Path) -> Iterator[OverlayFile]:
    """:func:`begin` an edit of ``path`` and yield its :class:`OverlayFile`; the caller opens it with
    h5py, closes that, then calls :meth:`OverlayFile.commit`. Leaving without a commit rolls the edit
    back (also on an exception). Hold the output lock, and run :func:`recover` first."""
    try:
        base = begin(path)
    except OSError as error:
        raise InputError(f"{path}: cannot be edited ({error.strerror or error}); check the permissions of the file and its folder") from None
    try:
        handle = OverlayFile(path, base)
    except BaseException as error:
        log_path(path).unlink()
        if isinstance(error, OSError):
            raise InputError(f"{path}: cannot be edited ({error.strerror or error}); check the permissions of the file and its folder") from None
        raise
    try:
        yield handle
    finally:
        try:
            if not handle.committed:
                handle.roll_back()
        finally:
            handle.close()


def log_state(path: Path) -> str | None:
    """``"begun"``, ``"committed"`` or ``None`` (no log) for the edit log of ``path``.

    Raises:
        InputError: the log is damaged.
    """
    if not log_path(path).exists():
        return None
    header, _ = _read_log(path)
    return str(header["state"])
