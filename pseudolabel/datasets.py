"""Discovery of rectified stereo pairs on disk, for every layout that ``pseudolabel sgm --in`` accepts.

Two ways to point at data (see ``data/README.md`` for the full description of each layout):

* ``discover_pairs([LEFT_DIR, RIGHT_DIR])``: every image below ``LEFT_DIR`` (recursively; png, jpg,
  ppm/pgm, tif, bmp; 8 or 16 bit) is paired with the image below ``RIGHT_DIR`` that has the same
  relative path without extension. The pair's key is that relative path (``/`` separated).
* ``discover_pairs([ROOT])``: ``ROOT`` is searched (recursively) for native dataset layouts:

  - KITTI 2012 / 2015: a folder with ``colored_0``/``colored_1``, ``image_2``/``image_3`` or
    ``image_0``/``image_1`` sub-folders (preferred in that order when several exist); ground truth
    from ``disp_noc`` (else ``disp_occ``; ``disp_noc_0``/``disp_occ_0`` for 2015), value / 256;
    ``calib/<frame>.txt`` (2012) gives :attr:`PairInfo.focal_baseline`.
    Key: the frame name, such as ``000046_10``.
  - Middlebury scene folders, key = the folder name:
    ``im0``/``im1`` (2014/2021 with ``calib.txt`` whose ``ndisp`` sets :attr:`PairInfo.max_disp`,
    ground truth ``disp0.pfm`` or ``disp0GT.pfm``; 2001 ``map`` with ``disp0.pgm`` / 8),
    ``view1``/``view5`` (2005/2006, ``disp1.png`` / 3 at third size, / 2 at half size, / 1 at full
    size), ``im2``/``im6`` (2001 ``disp2.pgm`` / 8; 2003 ``disp2.png`` / 4 at quarter size) and
    ``imL``/``imR`` (v2, ``groundtruth.png`` / the first line of ``info.txt``; masks
    ``nonocc``/``all``/``disc``.png, 255 = evaluate).
  - The synthetic layout written by ``pseudolabel synth``: a folder with ``left/`` and ``right/``
    image folders, ground truth ``disp_left/<key>.pfm`` and occlusion masks ``occ_left/<key>.png``
    (255 = occluded). The same layout without ground truth is a *sequence* (a rig's consecutive
    frames, keys = file names, so sorted keys are frames in time order); an optional ``calib.txt``
    next to ``left/`` in the KITTI odometry form (rows ``P0``, ``P1`` of 12 numbers, with or without
    their ``P0:`` names) gives :attr:`PairInfo.focal_baseline` = ``-P1[3]`` (fx times the baseline). The SceneFlow sample layout (``RGB_cleanpass/left``, ``disparity/left/*.pfm``,
    ``occlusion/left/*.png``) is read the same way.

  When a layout sits below ``ROOT`` rather than at ``ROOT`` itself, its keys are prefixed with its
  folder relative to ``ROOT`` (``training/000046_10``, ``2006/Baby1``), so that keys stay unique.

Discovery reads no image pixels (only a few ground-truth headers for Middlebury scale factors);
sizes and readability are checked when the pairs are processed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pseudolabel.errors import InputError
from pseudolabel.io import IMAGE_EXTENSIONS, read_disparity

# KITTI sub-folder pairs, in order of preference, and their ground-truth folders (first found wins).
KITTI_LAYOUTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("colored_0", "colored_1", ("disp_noc", "disp_occ")),
    ("image_2", "image_3", ("disp_noc_0", "disp_occ_0", "disp_noc", "disp_occ")),
    ("image_0", "image_1", ("disp_noc", "disp_occ")),
)
KITTI_GT_SCALE = 256.0

# Middlebury left/right file stems in a scene folder, in order of preference.
MIDDLEBURY_STEMS: tuple[tuple[str, str], ...] = (("im0", "im1"), ("view1", "view5"), ("im2", "im6"), ("imL", "imR"))

# Folders that hold ground truth next to a left/right layout (SceneFlow); never searched for pairs.
GROUND_TRUTH_FOLDERS = frozenset({"disparity", "occlusion", "disp_left", "disp_right", "occ_left", "occ_right"})

MAX_LISTED = 5


@dataclass(frozen=True)
class PairInfo:
    """One rectified stereo pair found on disk.

    Attributes:
        key: unique name of the pair (``/``-separated relative path without extension, a scene
            folder name or a KITTI frame name); the pair's group name in the proxies file.
        left, right: image paths, built from the input paths as given (not resolved).
        gt_left: ground-truth disparity of the left view, or ``None``.
        gt_scale: divide the stored ground-truth value by it to get pixels; ``None`` = the format's
            default of :func:`pseudolabel.io.read_disparity` (1 for PFM, 256 for 16-bit PNG).
        max_disp: search range (exclusive upper bound, pixels) given by the dataset (Middlebury
            ``calib.txt`` ``ndisp``), or ``None``.
        masks: evaluation masks of the left view by name (``nonocc``, ``all``, ``disc``: 255 = evaluate;
            ``occlusion``: 255 = occluded).
        focal_baseline: focal length (px) times baseline (m) of the rig, from a sequence's
            ``calib.txt`` (KITTI ``P0``/``P1``), or ``None``: depth in metres = ``focal_baseline / disparity``.
    """

    key: str
    left: Path
    right: Path
    gt_left: Path | None = None
    gt_scale: float | None = None
    max_disp: int | None = None
    masks: dict[str, Path] = field(default_factory=dict)
    focal_baseline: float | None = None


def discover_pairs(inputs: Sequence[str | os.PathLike[str]], skip_unpaired: bool = False) -> list[PairInfo]:
    """Find the stereo pairs of one dataset root or of a left and a right folder.

    Args:
        inputs: ``[ROOT]`` (a native KITTI / Middlebury / synthetic layout, searched recursively)
            or ``[LEFT_DIR, RIGHT_DIR]`` (images paired by relative path without extension).
        skip_unpaired: drop left images without a right partner instead of raising.

    Returns:
        The pairs, sorted by key.

    Raises:
        InputError: a missing folder, no pairs found, duplicate keys, or (unless ``skip_unpaired``)
        left images without a right partner (all listed, up to a few).
    """
    if len(inputs) not in (1, 2):
        raise InputError(f"--in takes one dataset folder or a LEFT_DIR and a RIGHT_DIR, got {len(inputs)} paths")
    folders = [Path(p) for p in inputs]
    for folder in folders:
        if not folder.exists():
            raise InputError(f"{folder}: no such folder; check the --in path")
        if not folder.is_dir():
            raise InputError(f"{folder}: not a folder; --in takes folders (a dataset root, or LEFT_DIR RIGHT_DIR)")
    if len(folders) == 2:
        pairs, unpaired = _pair_folders(folders[0], folders[1])
        if not pairs and not unpaired:
            raise InputError(f"{folders[0]}: no images found ({', '.join(IMAGE_EXTENSIONS)}); check the --in path")
    else:
        pairs, unpaired = _discover_root(folders[0])
        if not pairs and not unpaired:
            raise InputError(
                f"{folders[0]}: no stereo layout found (KITTI image_0/image_1, colored_0/colored_1 or image_2/image_3; "
                "Middlebury scene folders with im0/im1, view1/view5, im2/im6 or imL/imR; left/ and right/ folders); "
                "to pair two folders of images pass --in LEFT_DIR RIGHT_DIR"
            )
    if unpaired and not skip_unpaired:
        raise InputError(
            f"{len(unpaired)} left image(s) without a right partner: {_listing(unpaired)}; add the missing right images or pass --skip-unpaired"
        )
    pairs.sort(key=lambda pair: pair.key)
    for first, second in zip(pairs, pairs[1:]):
        if first.key == second.key:
            raise InputError(
                f"{first.left} and {second.left} both give the pair key {first.key!r}; keep one image per name (extensions are ignored when pairing)"
            )
    if not pairs:
        raise InputError(f"no complete stereo pairs in {', '.join(str(f) for f in folders)}; check the --in paths")
    return pairs


def find_unpaired(inputs: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The left images (or Middlebury scene files) that :func:`discover_pairs` would report as unpaired."""
    folders = [Path(p) for p in inputs]
    if len(folders) == 2:
        return _pair_folders(folders[0], folders[1])[1]
    return _discover_root(folders[0])[1]


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _images_by_stem(folder: Path) -> dict[str, Path]:
    """Images below ``folder`` by relative path without extension (``/`` separated).

    Raises:
        InputError: two images share a relative path without extension.
    """
    found: dict[str, Path] = {}
    for directory, subdirectories, files in os.walk(folder, followlinks=True):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        relative_dir = os.path.relpath(directory, folder)
        for name in sorted(files):
            if not _is_image(name):
                continue
            stem = os.path.splitext(name)[0]
            relative = stem if relative_dir == "." else f"{Path(relative_dir).as_posix()}/{stem}"
            path = folder / relative_dir / name if relative_dir != "." else folder / name
            if relative in found:
                raise InputError(f"{found[relative]} and {path} have the same name without extension; keep one of them")
            found[relative] = path
    return found


def _pair_folders(left_dir: Path, right_dir: Path, prefix: str = "") -> tuple[list[PairInfo], list[str]]:
    if left_dir.resolve() == right_dir.resolve():
        raise InputError(f"{left_dir}: LEFT_DIR and RIGHT_DIR are the same folder; pass two different folders")
    left_images = _images_by_stem(left_dir)
    right_images = _images_by_stem(right_dir)
    pairs = [PairInfo(key=prefix + stem, left=path, right=right_images[stem]) for stem, path in left_images.items() if stem in right_images]
    unpaired = [str(path) for stem, path in left_images.items() if stem not in right_images]
    return pairs, unpaired


def _files_by_stem(directory: Path, files: Iterable[str]) -> dict[str, Path]:
    """Image files directly in ``directory`` by stem (the first extension in sorted order wins)."""
    found: dict[str, Path] = {}
    for name in sorted(files):
        if _is_image(name):
            found.setdefault(os.path.splitext(name)[0], directory / name)
    return found


def _discover_root(root: Path) -> tuple[list[PairInfo], list[str]]:
    pairs: list[PairInfo] = []
    unpaired: list[str] = []
    for directory, subdirectories, files in os.walk(root, followlinks=True):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith(".") and d not in GROUND_TRUTH_FOLDERS)
        here = Path(directory)
        relative = os.path.relpath(directory, root)
        prefix = "" if relative == "." else Path(relative).as_posix() + "/"
        subdirectory_set = set(subdirectories)
        kitti = next(((left, right, gt) for left, right, gt in KITTI_LAYOUTS if left in subdirectory_set and right in subdirectory_set), None)
        if kitti is not None:
            found, lonely = _kitti_pairs(here, prefix, *kitti)
            pairs += found
            unpaired += lonely
            subdirectories[:] = []
            continue
        if "left" in subdirectory_set and "right" in subdirectory_set:
            found, lonely = _left_right_pairs(here, prefix)
            pairs += found
            unpaired += lonely
            subdirectories[:] = []
            continue
        images = _files_by_stem(here, files)
        scene_key = here.name if relative == "." else Path(relative).as_posix()
        scene = _middlebury_pair(here, scene_key, images, set(files))
        if scene is not None:
            pairs.append(scene)
            subdirectories[:] = []
            continue
        lonely_left = [images[left] for left, right in MIDDLEBURY_STEMS if left in images and right not in images]
        if lonely_left:
            unpaired.append(str(lonely_left[0]))
    return pairs, unpaired


def _kitti_pairs(folder: Path, prefix: str, left_name: str, right_name: str, gt_names: tuple[str, ...]) -> tuple[list[PairInfo], list[str]]:
    left_images = _files_by_stem(folder / left_name, _list_files(folder / left_name))
    right_images = _files_by_stem(folder / right_name, _list_files(folder / right_name))
    gt_folders = [folder / name for name in gt_names if (folder / name).is_dir()]
    pairs = []
    for stem, left in left_images.items():
        if stem not in right_images:
            continue
        gt = next((g / f"{stem}.png" for g in gt_folders if (g / f"{stem}.png").is_file()), None)
        calib = next((c for c in (folder / "calib" / f"{stem}.txt", folder / "calib" / f"{stem.split('_')[0]}.txt") if c.is_file()), None)
        pairs.append(
            PairInfo(
                key=prefix + stem,
                left=left,
                right=right_images[stem],
                gt_left=gt,
                gt_scale=KITTI_GT_SCALE if gt is not None else None,
                focal_baseline=read_projection_focal_baseline(calib) if calib is not None else None,
            )
        )
    unpaired = [str(path) for stem, path in left_images.items() if stem not in right_images]
    return pairs, unpaired


def _left_right_pairs(folder: Path, prefix: str) -> tuple[list[PairInfo], list[str]]:
    """``left/``, ``right/`` (+ ``disp_left/*.pfm``, ``occ_left/*.png``): synth and SceneFlow layouts."""
    found, unpaired = _pair_folders(folder / "left", folder / "right", prefix)
    disparity_dirs = [folder / "disp_left", folder.parent / "disparity" / "left"]
    occlusion_dirs = [folder / "occ_left", folder.parent / "occlusion" / "left"]
    calib = folder / "calib.txt"
    focal_baseline = read_projection_focal_baseline(calib) if calib.is_file() else None
    pairs = []
    for pair in found:
        stem = pair.key[len(prefix) :]
        gt = next((d / f"{stem}.pfm" for d in disparity_dirs if (d / f"{stem}.pfm").is_file()), None)
        occlusion = next((d / f"{stem}.png" for d in occlusion_dirs if (d / f"{stem}.png").is_file()), None)
        masks = {"occlusion": occlusion} if occlusion is not None else {}
        pairs.append(PairInfo(key=pair.key, left=pair.left, right=pair.right, gt_left=gt, gt_scale=None, masks=masks, focal_baseline=focal_baseline))
    return pairs, unpaired


def _list_files(folder: Path) -> list[str]:
    return [entry.name for entry in os.scandir(folder) if entry.is_file()]


def _middlebury_pair(folder: Path, key: str, images: dict[str, Path], files: set[str]) -> PairInfo | None:
    stems = next(((left, right) for left, right in MIDDLEBURY_STEMS if left in images and right in images), None)
    if stems is None:
        return None
    left, right = images[stems[0]], images[stems[1]]
    gt: Path | None = None
    scale: float | None = None
    max_disp: int | None = None
    masks: dict[str, Path] = {}
    if stems == ("im0", "im1"):
        if "calib.txt" in files:
            max_disp = read_calib_ndisp(folder / "calib.txt")
        for name in ("disp0.pfm", "disp0GT.pfm"):
            if name in files:
                gt, scale = folder / name, None
                break
        else:
            if "disp0.pgm" in files:  # Middlebury 2001 "map"
                gt, scale = folder / "disp0.pgm", 8.0
        if "mask0nocc.png" in files:
            masks["nonocc"] = folder / "mask0nocc.png"
    elif stems == ("view1", "view5"):
        if "disp1.png" in files:
            gt = folder / "disp1.png"
            width = _image_width(gt)
            scale = 1.0 if width >= 1000 else 2.0 if width >= 600 else 3.0
    elif stems == ("im2", "im6"):
        if "disp2.pgm" in files:  # Middlebury 2001
            gt, scale = folder / "disp2.pgm", 8.0
        elif "disp2.png" in files:  # Middlebury 2003 (quarter, half or full size)
            gt = folder / "disp2.png"
            width = _image_width(gt)
            scale = 1.0 if width >= 1200 else 2.0 if width >= 700 else 4.0
    elif stems == ("imL", "imR"):
        if "groundtruth.png" in files and "info.txt" in files:
            gt, scale = folder / "groundtruth.png", read_info_scale(folder / "info.txt")
        for mask in ("nonocc", "all", "disc"):
            if f"{mask}.png" in files:
                masks[mask] = folder / f"{mask}.png"
    return PairInfo(key=key, left=left, right=right, gt_left=gt, gt_scale=scale, max_disp=max_disp, masks=masks)


def read_calib_ndisp(path: Path) -> int | None:
    """The ``ndisp`` entry of a Middlebury ``calib.txt`` (number of disparity levels), or ``None``.

    Raises:
        InputError: ``ndisp`` is present but not a positive integer.
    """
    text = path.read_text(encoding="latin-1")
    found = re.search(r"^\s*ndisp\s*=\s*(\S+)", text, flags=re.MULTILINE)
    if found is None:
        return None
    try:
        value = int(float(found.group(1)))
    except ValueError:
        value = 0
    if value <= 0:
        raise InputError(f"{path}: ndisp={found.group(1)!r} is not a positive integer; fix the file or pass --max-disp")
    return value


def read_projection_focal_baseline(path: Path) -> float | None:
    """Focal length (px) times baseline (m) from a KITTI-style ``calib.txt``: rows of 12 numbers, the 3x4
    projection matrices ``P0`` (left) and ``P1`` (right), named (``P0: ...``) or in that order.

    ``P1[3] = -fx * baseline``, so the result is ``-P1[3]``; ``None`` when the file has no such rows
    (another calibration format, e.g. Middlebury's, is not an error).

    Raises:
        InputError: the rows are there but the baseline is not positive.
    """
    named: dict[str, list[float]] = {}
    bare: list[list[float]] = []
    for line in path.read_text(encoding="latin-1").splitlines():
        name, colon, rest = line.partition(":")
        text = rest if colon else line
        try:
            values = [float(value) for value in text.split()]
        except ValueError:
            continue
        if len(values) != 12:
            continue
        if colon:
            named[name.strip()] = values
        else:
            bare.append(values)
    right = named.get("P1") or (bare[1] if len(bare) >= 2 else None)
    if right is None:
        return None
    focal_baseline = -right[3]
    if not focal_baseline > 0:
        raise InputError(f"{path}: P1[3] = {right[3]} should be -fx * baseline (negative); fix the file or remove it")
    return focal_baseline


def read_info_scale(path: Path) -> float:
    """The ground-truth scale on the first line of a Middlebury v2 ``info.txt``.

    Raises:
        InputError: the first line is not a positive number.
    """
    first = path.read_text(encoding="latin-1").strip().splitlines()[:1]
    try:
        scale = float(first[0]) if first else 0.0
    except ValueError:
        scale = 0.0
    if scale <= 0:
        raise InputError(f"{path}: the first line must be the ground-truth scale (a positive number); fix the file")
    return scale


def _image_width(path: Path) -> int:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if image is None:
        raise InputError(f"{path}: cannot be read as an image (unsupported or truncated); re-export it as PNG")
    return int(image.shape[1])


GT_EXTENSIONS = (".pfm", ".png", ".pgm", ".ppm", ".tif", ".tiff")
"""Extensions of ``<key>.<ext>`` ground-truth files, in the order they are tried."""


def ground_truth_lookup(gt_dir: Path, keys: Sequence[str], gt_scale: float | None) -> dict[str, tuple[Path, float | None]]:
    """Ground-truth file and scale of each key that has one.

    Args:
        gt_dir: folder with ``<key>.<ext>`` files, or the root of a native layout.
        keys: pair keys of the proxies file.
        gt_scale: divisor of stored PNG/PGM values (``None``: 256 for 16-bit PNG, 1 for 8-bit; for
            native layouts, the layout's own scale).

    Raises:
        InputError: ``gt_dir`` is not a folder.
    """
    if not gt_dir.is_dir():
        raise InputError(f"--gt {gt_dir}: no such folder; give the folder of ground-truth disparities")
    found: dict[str, tuple[Path, float | None]] = {}
    for key in keys:
        for extension in GT_EXTENSIONS:
            candidate = gt_dir / f"{key}{extension}"
            if candidate.is_file():
                found[key] = (candidate, gt_scale)
                break
    missing = [key for key in keys if key not in found]
    if missing:
        try:
            native = {pair.key: pair for pair in discover_pairs([gt_dir], skip_unpaired=True) if pair.gt_left is not None}
        except InputError:
            native = {}
        for key in missing:
            pair = native.get(key)
            if pair is None:  # compare by trailing path components ("Aloe" vs "2006/Aloe")
                matches = [p for k, p in native.items() if k.endswith("/" + key) or key.endswith("/" + k)]
                pair = matches[0] if len(matches) == 1 else None
            if pair is not None and pair.gt_left is not None:
                found[key] = (Path(pair.gt_left), gt_scale if gt_scale is not None else pair.gt_scale)
    return found


def read_ground_truth(path: Path, scale: float | None, shape: tuple[int, int], key: str) -> np.ndarray:
    """Ground truth in pixels (NaN = unknown), checked against the pair's shape."""
    ground_truth = read_disparity(path, scale)
    if ground_truth.shape != shape:
        raise InputError(f"{path}: ground truth of size {ground_truth.shape} for pair {key!r} of size {shape}; check --gt")
    return ground_truth


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """A mask image as (H, W) ``uint8`` gray levels (a colour mask is read as gray)."""
    from pseudolabel.io import read_image, to_gray

    image = read_image(path)
    return image if image.ndim == 2 else to_gray(image)


def evaluation_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """The pixels an evaluation mask selects, (H, W) ``bool``: where the mask is white (255).

    Middlebury's ``nonocc.png``/``all.png``/``disc.png`` (v2) and ``mask0nocc.png`` (2014: 255 =
    non-occluded, 128 = occluded, 0 = unknown) all mark the evaluated pixels 255; a threshold at half
    would count 2014's occluded pixels as non-occluded.
    """
    return read_mask(path) == 255


def occlusion_free(path: str | os.PathLike[str]) -> np.ndarray:
    """The pixels an occlusion mask leaves (``occ_left/*.png``, SceneFlow: 255 = occluded), (H, W) ``bool``."""
    return read_mask(path) < 128
