"""Second opinions on a proxy disparity: independent matchers run on the same pair (numpy, OpenCV, Numba; never torch).

The "wild-agree" training targets (:func:`pseudolabel.confidence.targets.agreement_targets`) call a proxy
pixel right when independent matchers find the same disparity and wrong when they do not. Each teacher
maps the pair's gray images to a left-view disparity map, NaN where the teacher has no answer (its own
left-right or uniqueness check failed, or the pixel is outside its search). Registered teachers:

=========== =====================================================================================
name        matcher
=========== =====================================================================================
sgbm        OpenCV StereoSGBM, full 8-path mode (``MODE_HH``), 5x5 Birchfield-Tomasi blocks on the
            Sobel-prefiltered image, its own uniqueness (10%), left-right (1 px) and speckle checks
bm          OpenCV StereoBM: 9x9 SAD blocks on the x-Sobel-prefiltered image, no smoothness term,
            texture, uniqueness (15%), left-right (1 px) and speckle checks
sgm-ad      this package's SGM (:func:`pseudolabel.sgm.matcher.match`) with the pair's parameters but the
            absolute-difference cost instead of census; NaN where it fails its own checks
=========== =====================================================================================

The images are the pair's gray images in [0, 1] (:func:`pseudolabel.confidence.images.pair_gray_images`);
they are quantised to 8 bits for the matchers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

from pseudolabel.errors import InputError

if TYPE_CHECKING:
    from pseudolabel.sgm.params import SGMParams

#: ``teacher(left, right, params) -> float32 (H, W)`` left-view disparity in pixels, NaN where unknown;
#: ``left``, ``right``: ``float32`` (H, W) gray images in [0, 1].
TeacherFunction = Callable[[np.ndarray, np.ndarray, "SGMParams"], np.ndarray]

#: Every registered teacher, by name, in registration order.
TEACHERS: dict[str, TeacherFunction] = {}
#: The teachers of ``--labels wild-agree`` unless told otherwise.
DEFAULT_TEACHERS: tuple[str, ...] = ("sgbm",)


def register_teacher(name: str) -> Callable[[TeacherFunction], TeacherFunction]:
    """Decorator: register ``function(left, right, params) -> float32 (H, W)`` under ``name``."""

    def decorator(function: TeacherFunction) -> TeacherFunction:
        if name in TEACHERS and TEACHERS[name] is not function:
            raise ValueError(f"teacher {name!r} is already registered")
        TEACHERS[name] = function
        return function

    return decorator


def _eight_bit(gray: np.ndarray) -> np.ndarray:
    """``uint8`` (H, W) of a ``float32`` gray image in [0, 1]."""
    return np.clip(np.rint(np.asarray(gray, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def _range(params: SGMParams, width: int) -> tuple[int, int]:
    """OpenCV's ``(minDisparity, numDisparities)`` covering ``[min_disp, max_disp)``: a multiple of 16, below the width."""
    count = int(np.ceil((params.max_disp - params.min_disp) / 16.0) * 16)
    while count > 16 and count >= width:
        count -= 16
    return int(params.min_disp), count


def _opencv_disparity(raw: np.ndarray, params: SGMParams) -> np.ndarray:
    """Disparity in pixels from OpenCV's fixed-point output (x16), NaN where invalid or outside the pair's range."""
    disparity = raw.astype(np.float32) / np.float32(16.0)
    invalid = (raw < (params.min_disp * 16)) | (disparity >= params.max_disp)
    disparity[invalid] = np.nan
    return disparity


@register_teacher("sgbm")
def sgbm_teacher(left: np.ndarray, right: np.ndarray, params: SGMParams) -> np.ndarray:
    """OpenCV StereoSGBM (8 paths, 5x5 Birchfield-Tomasi blocks); NaN where it fails its own checks."""
    block = 5
    minimum, count = _range(params, left.shape[1])
    matcher = cv2.StereoSGBM.create(
        minDisparity=minimum,
        numDisparities=count,
        blockSize=block,
        P1=8 * block * block,
        P2=32 * block * block,
        disp12MaxDiff=1,
        preFilterCap=63,
        uniquenessRatio=10,
        speckleWindowSize=100,
        speckleRange=2,
        mode=cv2.StereoSGBM_MODE_HH,
    )
    return _opencv_disparity(matcher.compute(_eight_bit(left), _eight_bit(right)), params)


@register_teacher("bm")
def bm_teacher(left: np.ndarray, right: np.ndarray, params: SGMParams) -> np.ndarray:
    """OpenCV StereoBM (9x9 SAD blocks, no smoothness term); NaN where it fails its own checks."""
    minimum, count = _range(params, left.shape[1])
    matcher = cv2.StereoBM.create(numDisparities=count, blockSize=9)
    matcher.setMinDisparity(minimum)
    matcher.setUniquenessRatio(15)
    matcher.setTextureThreshold(10)
    matcher.setDisp12MaxDiff(1)
    matcher.setSpeckleWindowSize(100)
    matcher.setSpeckleRange(2)
    return _opencv_disparity(matcher.compute(_eight_bit(left), _eight_bit(right)), params)


@register_teacher("sgm-ad")
def sgm_ad_teacher(left: np.ndarray, right: np.ndarray, params: SGMParams) -> np.ndarray:
    """This package's SGM with the absolute-difference cost; NaN where it fails its own checks."""
    from pseudolabel.sgm.matcher import match

    result = match(_eight_bit(left), _eight_bit(right), params.replace(cost="ad"))
    return np.where(result.valid, result.disparity, np.nan).astype(np.float32)


def parse_teachers(text: str | Sequence[str]) -> list[str]:
    """Teacher names from comma-separated text (or a sequence), checked against :data:`TEACHERS`.

    Raises:
        InputError: an empty list, an unknown name or a name given twice.
    """
    names = [name.strip() for name in text.split(",")] if isinstance(text, str) else [str(name).strip() for name in text]
    names = [name for name in names if name]
    if not names:
        raise InputError(f"--teachers needs at least one teacher; choose from {', '.join(TEACHERS)}")
    unknown = [name for name in names if name not in TEACHERS]
    if unknown:
        raise InputError(f"unknown teacher {unknown[0]!r}; choose from {', '.join(TEACHERS)}")
    if len(set(names)) != len(names):
        raise InputError(f"--teachers names a teacher twice: {','.join(names)}")
    return names


def teacher_disparities(images: Mapping[str, np.ndarray], params: SGMParams, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Every teacher's disparity of one pair.

    Args:
        images: ``{left_gray, right_gray}``: ``float32`` (H, W) in [0, 1] (:func:`pseudolabel.confidence.images.pair_gray_images`).
        params: the pair's SGM parameters (its disparity range and, for ``sgm-*``, the rest).
        names: teacher names (:func:`parse_teachers`).

    Returns:
        ``{name: float32 (H, W)}`` left-view disparities in pixels, NaN where the teacher has none.
    """
    from pseudolabel.confidence.images import LEFT_GRAY, RIGHT_GRAY

    left, right = images[LEFT_GRAY], images[RIGHT_GRAY]
    if left.shape != right.shape:
        raise InputError(f"left {left.shape} and right {right.shape} images differ in shape")
    result = {}
    for name in parse_teachers(names):
        disparity = np.asarray(TEACHERS[name](left, right, params), dtype=np.float32)
        if disparity.shape != left.shape:
            raise AssertionError(f"teacher {name} returned shape {disparity.shape}, expected {left.shape}")
        result[name] = disparity
    return result
