"""Dense disparities computed by another matcher, taken into a proxies file (``pseudolabel import``).

:func:`import_disparities` pairs one disparity file per stereo pair (``<key>.pfm``, ``<key>.png``
KITTI-style uint16 / 256, or ``<key>.npy``) with the pairs found by
:func:`pseudolabel.datasets.discover_pairs`, and writes a proxies file with the usual contract
(``data/README.md``) but only two datasets per pair:

* ``disparity`` float32 (H, W), pixels, NaN where the file has no value (NaN, inf, or ``<= 0``);
* ``valid`` bool, ``disparity`` finite and ``> 0``.

Pair attributes are as ``pseudolabel sgm`` writes them, ``min_disp``/``max_disp`` taken from the data
(``floor(min)`` and ``floor(max) + 1`` of the valid disparities). The root marks the origin:
``disparity_source`` (``"import: <folder>"``), and ``sgm_params_placeholder = True`` says that
``sgm_params`` holds only defaults with the file's overall range, so that every reader keeps working;
no SGM ran. The measures that need only the disparity (and the CCNN) can score such a file; those
that need SGM cost features are reported unavailable by ``confidence score``.

The file is written to ``<out>.partial`` and renamed at the end, under the lock ``<out>.lock``.
Imports numpy, h5py and OpenCV (through :mod:`pseudolabel.io`), never torch.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from pseudolabel.datasets import PairInfo, discover_pairs
from pseudolabel.errors import InputError
from pseudolabel.io import read_disparity, read_image
from pseudolabel.progress import Progress, or_silent
from pseudolabel.selection import select_keys
from pseudolabel.sgm.params import SGMParams
from pseudolabel.store.journal import output_lock
from pseudolabel.store.layout import PAIRS, initialise_root, pair_attributes, write_pair_group
from pseudolabel.store.names import key_to_name

#: Extensions of ``<key>.<ext>`` disparity files, in the order they are tried.
DISPARITY_EXTENSIONS: tuple[str, ...] = (".pfm", ".png", ".npy")
MAX_LISTED = 5


@dataclass
class ImportSummary:
    """What :func:`import_disparities` wrote: the imported ``keys``, their disparity ``files`` and ``out``."""

    out: Path
    keys: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)


def find_disparity_files(disparity_dir: Path, keys: Sequence[str]) -> dict[str, Path]:
    """The disparity file of each key that has one: ``<dir>/<key>.<ext>`` (``.pfm``, ``.png``, ``.npy``),
    else the only file whose relative path without extension ends with the key or with which the key ends
    (``training/000046_10`` and ``000046_10``)."""
    found: dict[str, Path] = {}
    for key in keys:
        for extension in DISPARITY_EXTENSIONS:
            candidate = disparity_dir / f"{key}{extension}"
            if candidate.is_file():
                found[key] = candidate
                break
    missing = [key for key in keys if key not in found]
    if missing:
        stems: dict[str, list[Path]] = {}
        for path in sorted(disparity_dir.rglob("*")):
            if path.is_file() and path.suffix.lower() in DISPARITY_EXTENSIONS and not path.name.startswith("."):
                stem = path.relative_to(disparity_dir).with_suffix("").as_posix()
                stems.setdefault(stem, []).append(path)
        for key in missing:
            matches = [paths[0] for stem, paths in stems.items() if stem.endswith("/" + key) or key.endswith("/" + stem)]
            if len(matches) == 1:
                found[key] = matches[0]
    return found


def read_external_disparity(path: Path, scale: float | None) -> np.ndarray:
    """A disparity map of another matcher: float32 (H, W), pixels, NaN where unknown (NaN, inf or ``<= 0``).

    ``.pfm``: as stored; ``.png``: uint16 / 256 (8-bit / 1); ``.npy``: a 2-D array (a single-channel
    axis is dropped). ``scale`` (when given) divides the stored values.

    Raises:
        InputError: unreadable, not 2-D, or not numeric.
    """
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise InputError(f"{path}: cannot be read as a .npy array ({error}); save it with numpy.save") from None
        array = np.squeeze(array) if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]) else array
        if array.ndim != 2 or array.dtype.kind not in "fiu":
            raise InputError(f"{path}: holds a {array.dtype} array of shape {array.shape}; save one (H, W) disparity map in pixels")
        disparity = array.astype(np.float32)
        if scale is not None:
            disparity = disparity / np.float32(scale)
    else:
        disparity = read_disparity(path, scale)
    return np.where(np.isfinite(disparity) & (disparity > 0), disparity, np.nan).astype(np.float32)


def import_disparities(
    disparity_dir: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    scale: float | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ImportSummary:
    """Write a proxies file from dense disparities computed elsewhere.

    Args:
        disparity_dir: folder of ``<key>.pfm|.png|.npy`` files, matched to the pairs by key (relative path
            without extension; see :func:`find_disparity_files`).
        inputs: ``[LEFT_DIR, RIGHT_DIR]`` or ``[ROOT]`` of a native layout, as ``pseudolabel sgm --in``.
        out: the proxies file to write.
        scale: divide stored disparity values by it (default: 1 for PFM and NPY, 256 for 16-bit PNG, 1 for 8-bit).
        include, exclude: globs choosing pairs by key.
        overwrite: replace an existing ``out``.
        progress: told of each imported pair (phase ``"import"``).

    Returns:
        An :class:`ImportSummary`.

    Raises:
        InputError: ``out`` exists (without ``overwrite``), a selected pair has no disparity file or one of
            another size than its left image, a bad ``scale``; ``out`` is then untouched.
    """
    folder = Path(disparity_dir)
    out_path = Path(out)
    if not folder.is_dir():
        raise InputError(f"--disparity {folder}: no such folder; give the folder of the other matcher's disparities")
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        raise InputError(f"--scale must be a positive number, got {scale}")
    if out_path.exists() and not overwrite:
        raise InputError(f"--out {out_path}: exists; pass --overwrite to replace it or choose another file")
    pairs = {pair.key: pair for pair in discover_pairs(list(inputs))}
    keys = select_keys(list(pairs), include, exclude, source=" ".join(str(p) for p in inputs))
    files = find_disparity_files(folder, keys)
    missing = [key for key in keys if key not in files]
    if missing:
        shown = ", ".join(repr(key) for key in missing[:MAX_LISTED]) + (f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else "")
        raise InputError(
            f"--disparity {folder}: no disparity file for {len(missing)} of the {len(keys)} pairs ({shown}); "
            f"name them <key>{'|'.join(DISPARITY_EXTENSIONS)} or leave those pairs out with --exclude"
        )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    summary = ImportSummary(out=out_path, keys=list(keys), files=files)
    with output_lock(out_path):
        partial = out_path.with_name(out_path.name + ".partial")
        try:
            _write_file(partial, folder, [pairs[key] for key in keys], files, scale, progress)
            os.replace(partial, out_path)
        except BaseException:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise
    return summary


def _write_file(
    partial: Path, folder: Path, pairs: Sequence[PairInfo], files: dict[str, Path], scale: float | None, progress: Progress | None
) -> None:
    progress = or_silent(progress)
    progress.start("import", len(pairs))
    low, high = 0, 1
    try:
        with h5py.File(partial, "w") as h5file:
            initialise_root(h5file, SGMParams(), max_disp_from_calib=False)
            group = h5file[PAIRS]
            for pair in pairs:
                disparity = read_external_disparity(files[pair.key], scale)
                image = read_image(pair.left)
                if disparity.shape != image.shape[:2]:
                    raise InputError(
                        f"{files[pair.key]}: disparity of size {disparity.shape} for pair {pair.key!r} whose left image is {image.shape[:2]}; "
                        "import disparities at the images' resolution"
                    )
                valid = np.isfinite(disparity)
                min_disp = int(np.floor(disparity[valid].min())) if valid.any() else 0
                max_disp = int(np.floor(disparity[valid].max())) + 1 if valid.any() else 1
                low, high = min(low, min_disp), max(high, max_disp)
                params = SGMParams(min_disp=min_disp, max_disp=max_disp)
                attrs = pair_attributes(pair.key, pair.left, pair.right, params, disparity.shape, valid, pair.gt_left, pair.gt_scale, pair.masks)
                attrs["disparity_file"] = str(files[pair.key])
                write_pair_group(group.create_group(key_to_name(pair.key)), {"disparity": disparity, "valid": valid}, {**attrs, "key": pair.key})
                progress.advance(1, pair.key)
            h5file.attrs["sgm_params"] = SGMParams(min_disp=low, max_disp=high).to_json()
            h5file.attrs["sgm_params_placeholder"] = True
            h5file.attrs["disparity_source"] = f"import: {folder.resolve()}" + (f", scale {scale}" if scale is not None else "")
    finally:
        progress.finish()
