"""Reading and writing images and disparity maps.

Conventions used throughout the package:

* Images are ``numpy`` arrays of shape (H, W) (gray) or (H, W, 3) in **RGB** order, dtype
  ``uint8`` or ``uint16``, exactly as stored on disk.
* Disparity maps are ``float32`` arrays of shape (H, W), in pixels, positive for the usual
  left-view convention (``x_right = x_left - d``). Unknown values are ``NaN``.

Supported disparity formats: PFM (``inf`` = unknown; rows stored bottom-up on disk), KITTI
16-bit PNG (value / 256, 0 = unknown), 8/16-bit PNG or PGM with an explicit scale
(Middlebury: value / scale, 0 = unknown).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import cv2
import numpy as np

from pseudolabel.errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".bmp")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an 8- or 16-bit gray or colour image.

    Returns:
        ``uint8``/``uint16`` array of shape (H, W) or (H, W, 3) in RGB order. An alpha channel
        is dropped.

    Raises:
        InputError: the file is missing, unreadable or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such image file; check the path")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if image is None or image.size == 0:
        raise InputError(f"{path}: cannot be read as an image (unsupported or truncated); re-export it as PNG")
    if image.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{path}: {image.dtype} images are not supported; convert it to 8- or 16-bit")
    if image.ndim == 3:
        if image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        elif image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        elif image.shape[2] == 1:
            image = image[:, :, 0]
        else:
            raise InputError(f"{path}: {image.shape[2]} channels are not supported; save it as gray or RGB")
    return np.ascontiguousarray(image)


def read_pfm(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a PFM file (single channel ``Pf`` or the first channel of ``PF``).

    Returns:
        ``float32`` array (H, W), top row first (the file's bottom-up row order is undone).
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            header = handle.readline().decode("latin-1").strip()
            if header not in ("PF", "Pf"):
                raise InputError(f"{path}: not a PFM file (header {header!r}); write disparities as PFM or PNG")
            dims = handle.readline().decode("latin-1")
            while dims.startswith("#"):
                dims = handle.readline().decode("latin-1")
            match = re.match(r"^\s*(\d+)\s+(\d+)\s*$", dims)
            if match is None:
                raise InputError(f"{path}: malformed PFM size line; re-export the file")
            width, height = int(match.group(1)), int(match.group(2))
            scale = float(handle.readline().decode("latin-1").strip())
            endian = "<" if scale < 0 else ">"
            channels = 3 if header == "PF" else 1
            data = np.fromfile(handle, dtype=endian + "f4", count=width * height * channels)
    except FileNotFoundError:
        raise InputError(f"{path}: no such PFM file; check the path") from None
    if data.size != width * height * channels:
        raise InputError(f"{path}: truncated PFM file; re-export it")
    data = data.reshape(height, width, channels)[:, :, 0]
    return np.ascontiguousarray(np.flipud(data)).astype(np.float32)


def write_pfm(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write a (H, W) float array as a little-endian single-channel PFM (atomically)."""
    array = np.asarray(array, dtype="<f4")
    if array.ndim != 2:
        raise ValueError(f"write_pfm expects a (H, W) array, got shape {array.shape}")
    height, width = array.shape
    header = f"Pf\n{width} {height}\n-1.0\n".encode("latin-1")
    payload = header + np.ascontiguousarray(np.flipud(array)).tobytes()
    atomic_write_bytes(path, payload)


def read_disparity(path: str | os.PathLike[str], scale: float | None = None) -> np.ndarray:
    """Read a ground-truth or predicted disparity map.

    Args:
        path: a ``.pfm`` file, or an 8/16-bit PNG/PGM.
        scale: the stored value is divided by it. ``None`` picks 1 for PFM, 256 for 16-bit PNG
            (KITTI) and 1 for 8-bit images.

    Returns:
        ``float32`` (H, W) disparity in pixels, ``NaN`` where unknown (``inf`` in PFM, 0 in PNG/PGM).
    """
    path = Path(path)
    if path.suffix.lower() == ".pfm":
        disparity = read_pfm(path)
        disparity[~np.isfinite(disparity)] = np.nan
        if scale not in (None, 1, 1.0):
            disparity = disparity / np.float32(scale)
        return disparity.astype(np.float32)
    if not path.is_file():
        raise InputError(f"{path}: no such disparity file; check the path")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if raw is None:
        raise InputError(f"{path}: cannot be read as a disparity map; use PFM or a 8/16-bit PNG")
    if raw.ndim == 3:
        # Palette or RGB-expanded 8-bit maps: read the gray level, never the palette index.
        raw = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if raw is None:
            raise InputError(f"{path}: cannot be read as a disparity map; use PFM or a 8/16-bit PNG")
    if scale is None:
        scale = 256.0 if raw.dtype == np.uint16 else 1.0
    disparity = raw.astype(np.float32) / np.float32(scale)
    disparity[raw == 0] = np.nan
    return disparity


def write_disparity_png16(path: str | os.PathLike[str], disparity: np.ndarray) -> None:
    """Write a disparity map as a KITTI-style 16-bit PNG (value = round(d * 256), 0 = unknown)."""
    disparity = np.asarray(disparity, dtype=np.float32)
    encoded = np.where(np.isfinite(disparity) & (disparity > 0), np.round(disparity * 256.0), 0)
    encoded = np.clip(encoded, 0, 65535).astype(np.uint16)
    ok, buffer = cv2.imencode(".png", encoded)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, buffer.tobytes())


def write_image(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write an (H, W) or (H, W, 3) RGB ``uint8``/``uint16`` image atomically (format from the suffix)."""
    image = np.asarray(image)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(Path(path).suffix or ".png", image)
    if not ok:
        raise OSError(f"{path}: image encoding failed")
    atomic_write_bytes(path, buffer.tobytes())


def atomic_write_bytes(path: str | os.PathLike[str], payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file and a rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
        os.chmod(temporary, 0o666 & ~_current_umask())  # mkstemp creates 0600; use the usual mode
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def to_gray(image: np.ndarray) -> np.ndarray:
    """Convert an (H, W, 3) RGB image to (H, W) gray with the same dtype; gray images pass through."""
    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
