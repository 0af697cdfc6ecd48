"""Names in and around a proxies file: pair keys as HDF5 group names, the files next to an output, and the
image files that a pair's attributes name.

* :func:`key_to_name` / :func:`name_to_key` -- a pair's key (``/`` allowed) and its one flat group name
  under ``/pairs`` (``%`` -> ``%25``, ``/`` -> ``%2F``);
* :func:`journal_path`, :func:`partial_path`, :func:`lock_path` -- ``<out>.journal``, ``<out>.partial`` and
  ``<out>.lock`` of crash-safe writing (:mod:`pseudolabel.store.journal`);
* :func:`find_pair_file`, :func:`resolve_pair_file` -- the ``left``/``right``/``gt_left`` files of a pair,
  as stored or next to the proxies file.

Imports no HDF5, numpy or torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from pseudolabel.errors import InputError


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


# ----------------------------------------------------------------------------------------------
# files next to an output


def journal_path(out: Path) -> Path:
    """The journal folder of output ``out``: ``<out>.journal``."""
    return out.with_name(out.name + ".journal")


def partial_path(out: Path) -> Path:
    """Where the final file is assembled before its atomic rename: ``<out>.partial``."""
    return out.with_name(out.name + ".partial")


def lock_path(out: Path) -> Path:
    """The lock file held while a process writes ``out``: ``<out>.lock``."""
    return out.with_name(out.name + ".lock")


# ----------------------------------------------------------------------------------------------
# files a pair names


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
