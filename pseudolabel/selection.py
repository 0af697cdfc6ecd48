"""Choosing pairs of a dataset by key: the one rule behind ``--keys`` and ``--exclude`` of every command.

A key is the name of a pair in a proxies file (``/pairs/<key>``): the left image's relative path
without extension, or a Middlebury scene / KITTI frame name. Patterns are shell-style globs matched
case-sensitively against the whole key (``'seq1/*'``, ``'*_10'``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from pseudolabel.errors import InputError


def select_keys(keys: Sequence[str], include: Sequence[str] = (), exclude: Sequence[str] = (), *, source: str = "the dataset") -> list[str]:
    """The keys matching any ``include`` glob (all keys when there is none) and no ``exclude`` glob.

    Args:
        keys: every key of the dataset, in the order the result keeps.
        include: globs a key must match one of (``--keys``); empty selects every key.
        exclude: globs a key must match none of (``--exclude``).
        source: what holds the keys (a file name), for the error messages.

    Returns:
        The selected keys, in the order of ``keys``, each once.

    Raises:
        InputError: the dataset holds no key, an ``include`` glob matches no key (a typo, most likely),
            or the globs together leave no key.
    """
    if not keys:
        raise InputError(f"{source}: holds no finished pair; run `pseudolabel sgm` first")
    for pattern in include:
        if not any(fnmatch.fnmatchcase(key, pattern) for key in keys):
            raise InputError(f"--keys {pattern!r}: no pair of {source} matches it (e.g. {keys[0]!r}); `pseudolabel inspect` lists the keys")
    chosen = [key for key in keys if not include or any(fnmatch.fnmatchcase(key, pattern) for pattern in include)]
    chosen = [key for key in chosen if not any(fnmatch.fnmatchcase(key, pattern) for pattern in exclude)]
    if not chosen:
        raise InputError(f"--keys/--exclude select none of the {len(keys)} pairs of {source} (e.g. {keys[0]!r})")
    return chosen
