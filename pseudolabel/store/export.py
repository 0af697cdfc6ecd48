"""Labels of a proxies file written in layouts that other stereo training code reads unchanged.

:func:`export_labels` (``pseudolabel export``) writes the ``labels`` of the selected pairs, with links to
(or copies of) their images, in one of three layouts (``data/README.md`` has the full description):

* ``kitti`` -- the KITTI 2015 training layout: ``image_2/<name><ext>``, ``image_3/<name><ext>``,
  ``disp_occ_0/<name>.png`` (uint16, ``round(d * 256)``, 0 = no label) and, with confidence,
  ``confidence_0/<name>.png`` (uint16, ``round(c * 65535)``). ``<name>`` is the pair key with every
  ``/`` written ``__`` (:func:`kitti_name`); two keys giving one name are refused.
* ``pfm`` -- ``left/<key><ext>``, ``right/<key><ext>``, ``disp_left/<key>.pfm`` (float32, inf = no
  label), with confidence ``confidence_left/<key>.pfm`` (float32 in [0, 1]); the layout of
  ``pseudolabel synth``, so ``discover_pairs`` and ``pseudolabel train --data`` read it too.
* ``npz`` -- ``left/``, ``right/`` as for ``pfm`` and ``labels/<key>.npz`` holding ``disparity``
  (float32 px, 0 where there is no label), ``confidence`` (float32 in [0, 1]) and ``valid`` (bool).

Every layout also gets ``filenames.txt`` (one pair a line: left image, right image, label file,
relative to the output folder, as the file lists of PSMNet-style loaders), ``keys.txt`` (the pair key
and its file name, tab-separated) and ``README.txt`` (source file, tau, measure, SGM parameters, the
command). The output is written to ``<out>.partial`` and renamed to ``<out>`` at the end, under the
lock ``<out>.lock``: an interrupted or refused export leaves no half-written folder behind.

Imports numpy, h5py and OpenCV (through :mod:`pseudolabel.io`), never torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pseudolabel import __version__
from pseudolabel.errors import InputError
from pseudolabel.io import write_pfm
from pseudolabel.progress import Progress, or_silent
from pseudolabel.selection import select_keys
from pseudolabel.store.datasets_io import python_value
from pseudolabel.store.journal import output_lock
from pseudolabel.store.layout import LABELS, PAIRS
from pseudolabel.store.names import find_pair_file, key_to_name
from pseudolabel.store.proxies import ProxyFile, open_proxies

#: The layouts of :func:`export_labels`.
FORMATS: tuple[str, ...] = ("kitti", "pfm", "npz")
#: What a ``/`` of a pair key becomes in a KITTI file name.
KITTI_SEPARATOR = "__"
#: KITTI PNG: stored value = round(disparity * KITTI_SCALE); 0 = no label.
KITTI_SCALE = 256.0
#: Confidence PNG: stored value = round(confidence * CONFIDENCE_SCALE).
CONFIDENCE_SCALE = 65535.0

# per format: folders of the left images, right images, labels, confidences; label suffix
_LAYOUTS: dict[str, tuple[str, str, str, str, str]] = {
    "kitti": ("image_2", "image_3", "disp_occ_0", "confidence_0", ".png"),
    "pfm": ("left", "right", "disp_left", "confidence_left", ".pfm"),
    "npz": ("left", "right", "labels", "", ".npz"),
}


@dataclass
class ExportSummary:
    """What :func:`export_labels` wrote.

    Attributes:
        out: the output folder.
        format: the layout (one of :data:`FORMATS`).
        names: pair key -> file name without extension in the layout (``seq1/0001`` -> ``seq1__0001``
            for ``kitti``, the key itself otherwise), in export order.
        labelled: labelled pixels over all pairs.
        clamped: labelled disparities in [0, 1/512) px stored as 1/256 px in KITTI PNGs (so they do not
            read back as "no label").
    """

    out: Path
    format: str
    names: dict[str, str] = field(default_factory=dict)
    labelled: int = 0
    clamped: int = 0


def kitti_name(key: str) -> str:
    """The KITTI file name (without extension) of a pair key: every ``/`` becomes ``__``.

    ``seq1/000001`` -> ``seq1__000001``; a key without ``/`` keeps its name (``000046_10``).
    :func:`key_from_kitti_name` inverts it for every key that holds no ``__`` itself; ``keys.txt`` of an
    export lists every key exactly.
    """
    return key.replace("/", KITTI_SEPARATOR)


def key_from_kitti_name(name: str) -> str:
    """Inverse of :func:`kitti_name` (``__`` -> ``/``)."""
    return name.replace(KITTI_SEPARATOR, "/")


def export_labels(
    proxies: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    format: str = "kitti",
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    with_confidence: bool = False,
    link_images: bool = True,
    overwrite: bool = False,
    progress: Progress | None = None,
    command: str | None = None,
) -> ExportSummary:
    """Write the labels of a proxies file, with their images, in a layout other training code reads.

    Args:
        proxies: proxies HDF5 file whose selected pairs all hold ``labels`` (``pseudolabel labels``).
        out_dir: the output folder; created, or replaced with ``overwrite``. It appears only when
            everything is written (the work goes to ``<out_dir>.partial``).
        format: ``"kitti"``, ``"pfm"`` or ``"npz"`` (see the module docstring for the layouts).
        include, exclude: globs choosing pairs (:func:`pseudolabel.selection.select_keys`).
        with_confidence: also write the confidence the labels were thresholded on (``kitti``: uint16 PNG
            scaled to [0, 65535]; ``pfm``: float PFM); ``npz`` files always hold it.
        link_images: symbolic links to the original images (absolute targets); False copies them.
        overwrite: replace an existing, non-empty ``out_dir``.
        progress: told of each exported pair (phase ``"export"``).
        command: the command line to record in ``README.txt`` (default: says it was a Python call).

    Returns:
        An :class:`ExportSummary`.

    Raises:
        InputError: unknown format; ``out_dir`` exists and is not empty (without ``overwrite``) or is a
            file; a selected pair has no labels (or no confidence for them when needed); two keys give one
            KITTI file name; an image is missing; a label cannot be stored in a KITTI PNG (negative, or
            256 px and more). Nothing is left in ``out_dir`` then.
    """
    if format not in FORMATS:
        raise InputError(f"--format {format!r}: choose one of {', '.join(FORMATS)}")
    source = Path(proxies)
    out = Path(out_dir)
    _check_output(out, overwrite)
    needs_confidence = with_confidence or format == "npz"
    with open_proxies(source, "r") as proxy_file:
        keys = select_keys(proxy_file.keys(), include, exclude, source=str(source))
        labels_attrs = _label_attributes(proxy_file, source, keys)
        if needs_confidence:
            _check_confidences(proxy_file, source, keys, labels_attrs)
        names = _file_names(keys, format)
        images = {key: _pair_images(proxy_file, source, key) for key in keys}
        summary = ExportSummary(out=out, format=format, names=names)
        out.parent.mkdir(parents=True, exist_ok=True)
        with output_lock(out):
            partial = out.with_name(out.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            try:
                _write_pairs(proxy_file, partial, keys, names, images, labels_attrs, format, needs_confidence, link_images, summary, progress)
                _write_lists(partial, keys, names, images, format)
                readme = _readme(proxy_file, source, keys, labels_attrs, format, with_confidence or format == "npz", link_images, summary, command)
                (partial / "README.txt").write_text(readme, encoding="utf-8")
                _replace_folder(partial, out)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
    return summary


# ---------------------------------------------------------------------------------------------
# checks before anything is written


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; give a folder to export into")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"--out {out}: exists and is not empty; pass --overwrite to replace it or choose another folder")


def _label_attributes(proxy_file: ProxyFile, source: Path, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The attributes of every selected pair's ``labels`` dataset (``tau``, ``measure``, ...)."""
    lacking = [key for key in keys if not proxy_file.has(key, LABELS)]
    if lacking:
        raise InputError(
            f"{source}: {len(lacking)} of the {len(keys)} selected pairs (e.g. {lacking[0]!r}) have no labels; "
            f"run `pseudolabel labels --proxies {source}` first"
        )
    pairs = proxy_file.h5[PAIRS]
    return {key: {name: python_value(value) for name, value in pairs[key_to_name(key)][LABELS].attrs.items()} for key in keys}


def _check_confidences(proxy_file: ProxyFile, source: Path, keys: Sequence[str], labels_attrs: dict[str, dict[str, Any]]) -> None:
    for key in keys:
        measure = labels_attrs[key].get("measure")
        if not measure:
            raise InputError(f"{source}: the labels of pair {key!r} do not name their measure; rerun `pseudolabel labels --proxies {source}`")
        if not proxy_file.has(key, f"confidence/{measure}"):
            raise InputError(
                f"{source}: pair {key!r} has no confidence/{measure}, which its labels were made from; "
                f"rerun `pseudolabel confidence score` and `pseudolabel labels`, or export without the confidence"
            )


def _file_names(keys: Sequence[str], format: str) -> dict[str, str]:
    """Key -> file name without extension; KITTI names are flat and must be unique."""
    if format != "kitti":
        return {key: key for key in keys}
    names: dict[str, str] = {}
    owner: dict[str, str] = {}
    for key in keys:
        name = kitti_name(key)
        if name.startswith("."):
            raise InputError(f"pair key {key!r} gives the hidden file name {name!r}, which stereo loaders skip; exclude it (--exclude) or rename it")
        if name in owner:
            raise InputError(
                f"pair keys {owner[name]!r} and {key!r} both give the KITTI file name {name!r} ('/' is written '__'); "
                "export one of them (--exclude), or use --format pfm or npz, which keep sub-folders"
            )
        owner[name] = key
        names[key] = name
    return names


def _pair_images(proxy_file: ProxyFile, source: Path, key: str) -> tuple[Path, Path]:
    attrs = proxy_file.pair_attrs(key)
    found = []
    for side in ("left", "right"):
        path = find_pair_file(source, str(attrs[side]))
        if path is None:
            raise InputError(
                f"{source}: the {side} image of pair {key!r}, {attrs[side]}, does not exist (tried it as given and next to the "
                "proxies file); run from the folder where the proxies were made"
            )
        found.append(path)
    return found[0], found[1]


# ---------------------------------------------------------------------------------------------
# writing


def _write_pairs(
    proxy_file: ProxyFile,
    folder: Path,
    keys: Sequence[str],
    names: dict[str, str],
    images: dict[str, tuple[Path, Path]],
    labels_attrs: dict[str, dict[str, Any]],
    format: str,
    with_confidence: bool,
    link_images: bool,
    summary: ExportSummary,
    progress: Progress | None,
) -> None:
    left_dir, right_dir, label_dir, confidence_dir, suffix = _LAYOUTS[format]
    progress = or_silent(progress)
    progress.start("export", len(keys))
    try:
        for key in keys:
            name = names[key]
            left, right = images[key]
            _place_image(left, folder / left_dir / (name + left.suffix), link_images)
            _place_image(right, folder / right_dir / (name + right.suffix), link_images)
            labels = proxy_file.read(key, [LABELS])[LABELS].astype(np.float32)
            labelled = np.isfinite(labels)
            summary.labelled += int(labelled.sum())
            confidence = None
            if with_confidence:
                measure = labels_attrs[key]["measure"]
                confidence = proxy_file.read(key, [f"confidence/{measure}"])[f"confidence/{measure}"].astype(np.float32)
            target = folder / label_dir / (name + suffix)
            target.parent.mkdir(parents=True, exist_ok=True)
            if format == "kitti":
                encoded, clamped = encode_kitti_disparity(labels, key)
                summary.clamped += clamped
                _write_png16(target, encoded)
                if confidence is not None:
                    _write_png16(folder / confidence_dir / (name + ".png"), encode_confidence(confidence))
            elif format == "pfm":
                write_pfm(target, np.where(labelled, labels, np.inf).astype(np.float32))
                if confidence is not None:
                    write_pfm(folder / confidence_dir / (name + ".pfm"), confidence)
            else:
                assert confidence is not None
                np.savez_compressed(target, disparity=np.where(labelled, labels, 0.0).astype(np.float32), confidence=confidence, valid=labelled)
            progress.advance(1, key)
    finally:
        progress.finish()


def encode_kitti_disparity(labels: np.ndarray, key: str = "") -> tuple[np.ndarray, int]:
    """KITTI uint16 PNG values of float labels: ``round(d * 256)``, 0 where there is no label (NaN).

    A labelled disparity in [0, 1/512) px would round to 0 and read back as "no label": it is stored as
    1 (1/256 px) instead, and counted.

    Returns:
        ``(uint16 (H, W), number of clamped pixels)``.

    Raises:
        InputError: a label is negative or would not fit (256 px and more); PFM keeps them.
    """
    labelled = np.isfinite(labels)
    values = labels[labelled]
    if values.size and values.min() < 0:
        raise InputError(
            f"pair {key!r} has negative labels (down to {values.min():.3g} px), which a KITTI PNG cannot hold; export with --format pfm or npz"
        )
    scaled = np.round(values.astype(np.float64) * KITTI_SCALE)
    if scaled.size and scaled.max() > 65535:
        raise InputError(f"pair {key!r} has labels up to {values.max():.1f} px; a KITTI PNG holds less than 256 px; export with --format pfm or npz")
    clamped = int(np.count_nonzero(scaled == 0))
    encoded = np.zeros(labels.shape, dtype=np.uint16)
    encoded[labelled] = np.maximum(scaled, 1).astype(np.uint16)
    return encoded, clamped


def encode_confidence(confidence: np.ndarray) -> np.ndarray:
    """uint16 PNG values of a confidence in [0, 1]: ``round(c * 65535)``."""
    return np.round(np.clip(confidence.astype(np.float64), 0.0, 1.0) * CONFIDENCE_SCALE).astype(np.uint16)


def _write_png16(path: Path, values: np.ndarray) -> None:
    ok, buffer = cv2.imencode(".png", values)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.tobytes())


def _place_image(source: Path, target: Path, link: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not link:
        shutil.copyfile(source, target)
        return
    try:
        os.symlink(os.path.abspath(source), target)
    except OSError as error:
        raise InputError(f"{target}: cannot create a symbolic link ({error.strerror or error}); pass --copy-images to copy the images") from None


def _write_lists(folder: Path, keys: Sequence[str], names: dict[str, str], images: dict[str, tuple[Path, Path]], format: str) -> None:
    left_dir, right_dir, label_dir, _, suffix = _LAYOUTS[format]
    lines = []
    for key in keys:
        name = names[key]
        left, right = images[key]
        lines.append(f"{left_dir}/{name}{left.suffix} {right_dir}/{name}{right.suffix} {label_dir}/{name}{suffix}\n")
    (folder / "filenames.txt").write_text("".join(lines), encoding="utf-8")
    (folder / "keys.txt").write_text("".join(f"{key}\t{names[key]}\n" for key in keys), encoding="utf-8")


def _replace_folder(partial: Path, out: Path) -> None:
    """Rename the finished ``partial`` folder to ``out`` (an existing ``out`` is moved away first, then deleted)."""
    old = out.with_name(out.name + ".old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(partial, out)
    with contextlib.suppress(OSError):
        shutil.rmtree(old)


# ---------------------------------------------------------------------------------------------
# README.txt


def _describe_values(attrs: dict[str, dict[str, Any]], name: str) -> str:
    counts: dict[str, int] = {}
    for values in attrs.values():
        text = str(values.get(name, "unknown"))
        counts[text] = counts.get(text, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    return "varies: " + ", ".join(f"{value} ({count} pairs)" for value, count in sorted(counts.items()))


def _describe_tau(attrs: dict[str, dict[str, Any]]) -> str:
    """The labels' tau for the README: the value(s) of a fixed tau and, for pairs labelled with
    ``labels --target-error`` (one tau per pair), the target, the range of their taus and how many of
    them no tau brought to the target (they have no labels)."""
    from pseudolabel.confidence.labels import describe_target

    per_target: dict[float, list[float]] = {}
    fixed: dict[str, dict[str, Any]] = {}
    for key, values in attrs.items():
        if "target_error" in values:
            per_target.setdefault(float(values["target_error"]), []).append(float(values.get("tau", float("nan"))))
        else:
            fixed[key] = values
    parts = []
    for target, tau_list in sorted(per_target.items()):
        taus = np.array(tau_list, dtype=np.float64)
        reached = taus[np.isfinite(taus)]
        text = describe_target(target)
        if reached.size:
            text += f" (from {reached.min():.4g} to {reached.max():.4g})"
        if reached.size < taus.size:
            text += f", {taus.size - reached.size} pair(s) reach no tau and have no labels"
        parts.append(text if not fixed and len(per_target) == 1 else f"{text} on {taus.size} pair(s)")
    if fixed:
        described = _describe_values(fixed, "tau")
        parts.append(described if not per_target else f"{described} on {len(fixed)} pair(s)")
    return "; ".join(parts)


def _readme(
    proxy_file: ProxyFile,
    source: Path,
    keys: Sequence[str],
    labels_attrs: dict[str, dict[str, Any]],
    format: str,
    with_confidence: bool,
    link_images: bool,
    summary: ExportSummary,
    command: str | None,
) -> str:
    root = proxy_file.attrs
    if root.get("disparity_source"):
        sgm = f"none: the disparities were imported ({root['disparity_source']})"
    elif "sgm_params" in root:
        sgm = json.dumps(json.loads(root["sgm_params"]), sort_keys=True)
    else:
        sgm = "unknown (the file records none)"
    left_dir, right_dir, label_dir, confidence_dir, suffix = _LAYOUTS[format]
    how = "symbolic links to the original images" if link_images else "copies of the original images"
    lines = [
        f"Sparse disparity labels exported by pseudolabel {__version__}.",
        "",
        f"source: {source.resolve()}",
        f"pairs: {len(keys)}, labelled pixels: {summary.labelled}",
        f"labels: the proxy disparity where confidence/<measure> > tau; tau: {_describe_tau(labels_attrs)}; "
        f"measure: {_describe_values(labels_attrs, 'measure')}",
        f"SGM parameters: {sgm}",
        f"command: {command or 'pseudolabel.store.export.export_labels (a Python call)'}",
        "",
        f"layout ({format}):",
        f"  {left_dir}/<name><ext>, {right_dir}/<name><ext>: left and right images, {how}",
    ]
    if format == "kitti":
        lines += [
            f"  {label_dir}/<name>.png: uint16 PNG, disparity = value / 256 px, 0 = no label "
            f"(labelled disparities below 1/512 px are stored as 1/256 px: {summary.clamped} pixels)",
        ]
        if with_confidence:
            lines.append(f"  {confidence_dir}/<name>.png: uint16 PNG, confidence = value / 65535, every pixel")
        lines.append("  <name>: the pair key with every '/' written '__' (seq1/000001 -> seq1__000001)")
    elif format == "pfm":
        lines.append(f"  {label_dir}/<name>.pfm: float32 PFM, disparity in px, inf = no label")
        if with_confidence:
            lines.append(f"  {confidence_dir}/<name>.pfm: float32 PFM, confidence in [0, 1], every pixel")
        lines.append("  <name>: the pair key (sub-folders kept)")
    else:
        lines += [
            f"  {label_dir}/<name>.npz: disparity (float32 px, 0 where valid is False), confidence (float32 in [0, 1]), valid (bool: labelled)",
            "  <name>: the pair key (sub-folders kept)",
        ]
    lines += [
        "  filenames.txt: one pair a line: left image, right image, label file (relative to this folder)",
        "  keys.txt: one pair a line: its key in the proxies file, a tab, <name>",
        "",
    ]
    return "\n".join(lines)
