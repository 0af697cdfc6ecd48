"""Checks a command makes on its outputs before it starts working, and its overwrite policy.

Every command that writes calls one of these first, so that a path it cannot write stops it at once
with one line naming the path (never after an hour of work, never with a traceback):

* :func:`check_output_file` -- a file the command creates (a checkpoint, a plot, a JSON report);
  an existing file is replaced only with ``overwrite`` (the command's ``--overwrite``);
* :func:`check_output_folder` -- a folder the command fills (``predict``, ``show``, ``synth``, ``demo``);
* :func:`check_editable_file` -- a file the command edits in place (the proxies file of
  ``confidence score`` and ``labels``).

Each creates the missing folders and writes (and removes) a small probe file in the folder that will
receive the output, which is what catches a read-only folder, a file standing where a folder should
be, a read-only file system or a full disk; permission bits alone say nothing when running as root.
:func:`describe_os_error` turns an :class:`OSError` met later (the disk filling up during the run)
into the same kind of line. No torch, no h5py: this module is imported by every command.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from pseudolabel.errors import InputError

__all__ = [
    "OVERWRITE_HELP",
    "REPORTED_ERRNOS",
    "check_editable_file",
    "check_output_file",
    "check_output_folder",
    "describe_os_error",
    "probe_folder",
]

#: The help text of ``--overwrite`` in the commands that write a model or checkpoint.
OVERWRITE_HELP = "replace an existing OUT (model or checkpoint) instead of refusing."

#: Bytes written by the probe: enough to need a data block, so a full disk answers ENOSPC.
_PROBE_BYTES = 4096

_REASONS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on the disk",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENOTDIR: "a file stands where a folder should be",
    errno.EISDIR: "it is a folder",
}


def describe_os_error(error: OSError, option: str = "") -> str:
    """One line for an :class:`OSError` met while working (a full disk, a read-only file system, a path
    without permission): the path, the reason and the fix."""
    path = error.filename if error.filename is not None else "an output file"
    reason = _REASONS.get(error.errno or 0, error.strerror or str(error))
    where = f"{option} " if option else ""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{where}{path}: cannot write ({reason}); free some space or choose another place, then rerun"
    return f"{where}{path}: {reason}; check its permissions or choose another path"


#: The :class:`OSError` numbers the command line reports in one line (:func:`describe_os_error`).
REPORTED_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def _blocking_file(folder: Path) -> Path | None:
    """The first of ``folder`` and its parents that exists and is not a folder."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def probe_folder(folder: str | os.PathLike[str], option: str, target: str | os.PathLike[str] | None = None) -> Path:
    """Write and remove a small file in ``folder``, creating it (and its parents) for the probe if needed;
    the folders created for the probe are removed again, so that a command stopped by a later check
    leaves nothing behind (the command creates them when it writes).

    Args:
        folder: the folder that will receive the output.
        option: the option that named the output, for the message (``"--out"``).
        target: the output path the user gave (named in the message; default ``folder``).

    Returns:
        ``folder`` as a :class:`Path`.

    Raises:
        InputError: the folder cannot be created or written (one line naming the path and the reason).
    """
    folder = Path(folder)
    shown = Path(target) if target is not None else folder
    blocker = _blocking_file(folder)
    if blocker is not None:
        raise InputError(f"{option} {shown}: {blocker} is a file, not a folder; choose another path")
    created = [candidate for candidate in (folder, *folder.parents) if not candidate.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = _REASONS.get(error.errno or 0, error.strerror or str(error))
        raise InputError(f"{option} {shown}: cannot create the folder {folder} ({reason}); choose a writable path") from None
    try:
        _write_probe(folder, option, shown)
    finally:
        for made in created:  # deepest first
            try:
                made.rmdir()
            except OSError:
                break
    return folder


def _write_probe(folder: Path, option: str, shown: Path) -> None:
    """Write, sync and remove a small file in ``folder``."""
    try:
        descriptor, probe = tempfile.mkstemp(dir=folder, prefix=".pseudolabel-probe-", suffix=".tmp")
    except OSError as error:
        reason = _REASONS.get(error.errno or 0, error.strerror or str(error))
        raise InputError(f"{option} {shown}: cannot write in {folder} ({reason}); choose a writable path") from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(b"\0" * _PROBE_BYTES)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        reason = _REASONS.get(error.errno or 0, error.strerror or str(error))
        raise InputError(f"{option} {shown}: cannot write in {folder} ({reason}); free some space or choose another path") from None
    finally:
        try:
            os.unlink(probe)
        except OSError:
            pass


def check_output_file(
    path: str | os.PathLike[str],
    option: str = "--out",
    *,
    overwrite: bool = True,
    what: str = "file",
    resume_hint: str = "",
) -> Path:
    """Check that ``path`` can be written, before any work: its folder exists or can be created and
    takes a file, ``path`` is not a folder, and an existing ``path`` is replaced only with ``overwrite``.

    Args:
        path: the output file.
        option: the option that named it (for the message).
        overwrite: whether an existing file may be replaced (``False``: refuse, naming ``--overwrite``).
        what: what the file is (``"checkpoint"``), for the message.
        resume_hint: extra advice for an existing file (``"add --resume to continue it, "``).

    Raises:
        InputError: one line naming the path and the fix.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise InputError(f"{option} {path}: a {what} exists there; {resume_hint}add --overwrite to replace it, or choose another path")
    probe_folder(path.parent, option, path)
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{option} {path}: exists and cannot be replaced (permission denied); choose a writable path")
    return path


def check_output_folder(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Check that the folder ``path`` exists or can be created and takes files, before any work.

    Raises:
        InputError: one line naming the path and the fix.
    """
    return probe_folder(path, option)


def check_editable_file(path: str | os.PathLike[str], option: str = "--proxies") -> Path:
    """Check that an existing file can be edited in place: it is a file, it can be written, and its
    folder takes the small files of a crash-safe edit (lock, journal).

    Raises:
        InputError: missing file, or a file or folder that cannot be written.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{option} {path}: no such file; create it with `pseudolabel sgm --in ... --out {path}`")
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give the proxies file written by `pseudolabel sgm`")
    probe_folder(path.parent if str(path.parent) else Path("."), option, path)
    try:
        with open(path, "r+b"):
            pass
    except OSError as error:
        reason = _REASONS.get(error.errno or 0, error.strerror or str(error))
        raise InputError(f"{option} {path}: cannot be edited ({reason}); make it writable or work on a copy") from None
    return path
