"""Making writes durable: the two fsyncs every crash-safe step of the store relies on.

A rename is the commit point of the journal, the shards, the edit log and the assembled file; before
it, the renamed file's bytes are flushed (:func:`fsync_file`), after it, the folder entry
(:func:`fsync_directory`), so that a power cut keeps either the old name's target or the new one.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a written file's bytes to the disk."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename in it) to the disk; a file system that cannot is skipped."""
    with contextlib.suppress(OSError):
        descriptor = os.open(Path(path), os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
