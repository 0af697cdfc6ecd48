"""A synthetic dataset on disk (resumable, bit-identical for a seed) and its preview picture.

Layout of a folder written by :func:`write_synth_dataset` (pair ``i`` is ``render_pair(config,
pair_seed(seed, i))``, files named ``NNNNNN`` after ``i``): ``left/`` and ``right/`` (RGB PNG),
``disp_left/`` and ``disp_right/`` (float32 PFM, pixels), ``occ_left/`` and ``occ_right/`` (PNG, 255 =
not visible in the other view) and ``meta.json`` (format, seed, count, the :class:`SynthConfig`).
numpy and OpenCV only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pseudolabel.errors import InputError
from pseudolabel.io import (
    atomic_write_bytes,
    read_image,
    read_pfm,
    write_image,
    write_pfm,
)
from pseudolabel.outputs import check_output_folder
from pseudolabel.progress import Progress, or_silent
from pseudolabel.synth.config import META_FORMAT, META_VERSION, SynthConfig, SynthPair
from pseudolabel.synth.scene import pair_seed, render_pair
from pseudolabel.viz.colour import darken, disparity_image


def _pair_paths(out_dir: Path, index: int) -> dict[str, Path]:
    stem = f"{index:06d}"
    return {
        "left": out_dir / "left" / f"{stem}.png",
        "right": out_dir / "right" / f"{stem}.png",
        "disp_left": out_dir / "disp_left" / f"{stem}.pfm",
        "disp_right": out_dir / "disp_right" / f"{stem}.pfm",
        "occ_left": out_dir / "occ_left" / f"{stem}.png",
        "occ_right": out_dir / "occ_right" / f"{stem}.png",
    }


def _meta(config: SynthConfig, seed: int, n: int, complete: bool) -> dict[str, Any]:
    return {
        "format": META_FORMAT,
        "format_version": META_VERSION,
        "generator": "pseudolabel.synth",
        "seed": int(seed),
        "n": int(n),
        "complete": bool(complete),
        "pair_seed": "pair i is render_pair(config, pair_seed(seed, i))",
        "config": config.to_dict(),
        "layout": {
            "left": "left/NNNNNN.png (RGB uint8)",
            "right": "right/NNNNNN.png (RGB uint8)",
            "disp_left": "disp_left/NNNNNN.pfm (float32 pixels, x_r = x_l - d)",
            "disp_right": "disp_right/NNNNNN.pfm (float32 pixels, x_l = x_r + d)",
            "occ_left": "occ_left/NNNNNN.png (uint8, 255 = not visible in the right view)",
            "occ_right": "occ_right/NNNNNN.png (uint8, 255 = not visible in the left view)",
        },
    }


def read_synth_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``meta.json`` of a synthetic dataset; raises :class:`InputError` if missing or foreign."""
    path = Path(directory) / "meta.json"
    if not path.is_file():
        raise InputError(f"{path}: no meta.json; is {directory} a folder written by `pseudolabel synth`?")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error}); delete it and rerun `pseudolabel synth`") from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise InputError(f"{path}: not a synthetic-dataset meta.json; choose another --out folder")
    return meta


def write_synth_dataset(out_dir: str | os.PathLike[str], config: SynthConfig, n: int, seed: int, progress: Progress | None = None) -> int:
    """Write pairs ``0 .. n-1`` to ``out_dir`` in the package's synthetic layout; resumable.

    Layout: ``left/000000.png``, ``right/000000.png`` (RGB), ``disp_left/000000.pfm``,
    ``disp_right/000000.pfm`` (float32 pixels), ``occ_left/000000.png``, ``occ_right/000000.png``
    (255 = occluded), and ``meta.json`` (format, seed, n, the config). Every file is written
    atomically; a pair whose six files exist is skipped, so an interrupted run resumes where it
    stopped and produces the same bytes as an uninterrupted one.

    Args:
        out_dir: output folder (created).
        config: generator parameters; must match an existing ``meta.json``.
        n: number of pairs (>= 1).
        seed: dataset seed (>= 0); pair ``i`` uses ``pair_seed(seed, i)``.
        progress: told of every pair rendered (phase ``"synth"``, one unit per pair still missing);
            ``None`` reports nothing.

    Returns:
        The number of pairs rendered by this call (0 when everything already existed).

    Raises:
        InputError: bad ``n``/``seed``, or ``out_dir`` holds a dataset made with other parameters.
    """
    if n < 1:
        raise InputError(f"--n ({n}) must be at least 1")
    if seed < 0:
        raise InputError(f"--seed ({seed}) must be >= 0")
    out_dir = check_output_folder(out_dir, "--out")
    meta_path = out_dir / "meta.json"
    if meta_path.exists():
        existing = read_synth_meta(out_dir)
        if existing.get("seed") != seed or existing.get("config") != config.to_dict():
            raise InputError(
                f"{out_dir}: holds pairs made with other parameters (seed {existing.get('seed')}); "
                "rerun with the same --seed and options to resume, or choose a new --out folder"
            )
    atomic_write_bytes(meta_path, (json.dumps(_meta(config, seed, n, False), indent=2) + "\n").encode())
    missing = [index for index in range(n) if not all(path.is_file() for path in _pair_paths(out_dir, index).values())]
    report = or_silent(progress)
    report.start("synth", len(missing), done=n - len(missing))
    rendered = 0
    try:
        for index in missing:
            paths = _pair_paths(out_dir, index)
            pair = render_pair(config, pair_seed(seed, index))
            write_image(paths["left"], pair.left)
            write_image(paths["right"], pair.right)
            write_pfm(paths["disp_left"], pair.disp_left)
            write_pfm(paths["disp_right"], pair.disp_right)
            write_image(paths["occ_left"], pair.occ_left.astype(np.uint8) * np.uint8(255))
            write_image(paths["occ_right"], pair.occ_right.astype(np.uint8) * np.uint8(255))
            rendered += 1
            report.advance(1, f"pair {index + 1}/{n}")
    finally:
        report.finish()
    atomic_write_bytes(meta_path, (json.dumps(_meta(config, seed, n, True), indent=2) + "\n").encode())
    return rendered


def read_synth_pair(directory: str | os.PathLike[str], index: int) -> SynthPair:
    """Read pair ``index`` of a folder written by :func:`write_synth_dataset` (same arrays as rendered)."""
    paths = _pair_paths(Path(directory), index)
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise InputError(f"{missing[0]}: missing; rerun `pseudolabel synth` on {directory} to complete it")
    left, right = read_image(paths["left"]), read_image(paths["right"])
    occ_left, occ_right = read_image(paths["occ_left"]), read_image(paths["occ_right"])
    return SynthPair(
        left=left,
        right=right,
        disp_left=read_pfm(paths["disp_left"]),
        disp_right=read_pfm(paths["disp_right"]),
        occ_left=occ_left > 127,
        occ_right=occ_right > 127,
    )


def preview_grid(pairs: list[SynthPair], max_disp: float, gap: int = 4, scale: float = 1.0) -> np.ndarray:
    """One picture of several pairs, a row each: left | right | left disparity | right disparity.

    Disparities use the package's disparity colours (:func:`pseudolabel.viz.colour.disparity_image`)
    over ``[0, max_disp]`` pixels, occluded pixels darkened to 35 % (:func:`pseudolabel.viz.colour.darken`).
    Each tile is resized by ``scale`` (area averaging) to (h, w) = (round(H * scale), round(W * scale)).
    Returns ``uint8`` (rows * (h + gap) - gap, 4 * (w + gap) - gap, 3) RGB.
    """
    if not pairs:
        raise InputError("preview_grid needs at least one pair")
    if not 0 < scale <= 4:
        raise InputError(f"preview scale ({scale}) must be in (0, 4]")
    rows = []
    for pair in pairs:
        tiles = [
            pair.left,
            pair.right,
            darken(disparity_image(pair.disp_left, 0.0, max_disp), pair.occ_left),
            darken(disparity_image(pair.disp_right, 0.0, max_disp), pair.occ_right),
        ]
        if scale != 1.0:
            size = (max(1, round(tiles[0].shape[1] * scale)), max(1, round(tiles[0].shape[0] * scale)))
            tiles = [cv2.resize(tile, size, interpolation=cv2.INTER_AREA) for tile in tiles]
        height = tiles[0].shape[0]
        spacer = np.full((height, gap, 3), 255, dtype=np.uint8)
        row = tiles[0]
        for tile in tiles[1:]:
            row = np.concatenate([row, spacer, tile], axis=1)
        rows.append(row)
    spacer = np.full((gap, rows[0].shape[1], 3), 255, dtype=np.uint8)
    grid = rows[0]
    for row in rows[1:]:
        grid = np.concatenate([grid, spacer, row], axis=0)
    return grid


def write_synth_preview(path: str | os.PathLike[str], config: SynthConfig, seed: int, count: int = 4, scale: float = 0.5) -> Path:
    """Render the first ``count`` pairs of the dataset made with ``seed`` and write their :func:`preview_grid` as a PNG.

    The pairs are the ones :func:`write_synth_dataset` writes with the same ``config`` and ``seed``
    (nothing is read from disk). The file is written atomically.

    Args:
        path: the PNG file to write (its folder is created).
        config: generator parameters.
        seed: dataset seed (>= 0).
        count: rows of the grid, one pair each (>= 1).
        scale: size of each tile relative to the images, in (0, 4].

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: ``count`` below 1, ``path`` not ending in ``.png``, a bad ``seed`` or ``scale``.
    """
    path = Path(path)
    if count < 1:
        raise InputError(f"--preview-count ({count}) must be at least 1")
    if path.suffix.lower() != ".png":
        raise InputError(f"--preview {path}: must end in .png")
    pairs = [render_pair(config, pair_seed(seed, index)) for index in range(count)]
    grid = preview_grid(pairs, config.max_disp, scale=scale)
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(grid[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
        raise OSError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, buffer.tobytes())
    return path
