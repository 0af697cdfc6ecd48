"""A cheap check of the first pairs of a run: left and right swapped, or images not rectified to the same rows.

Both mistakes make ``pseudolabel sgm`` run to the end and produce proxies that are almost all wrong
(swapped folders: a few percent of the pixels pass the left-right check instead of most of them), so
:func:`check_pair` looks at a pair before the run starts:

* **rows** -- rectified images show each scene point on the same row, whatever its disparity. The
  vertical shift between the two images is estimated by phase correlation of the gray images with a
  Hann window (:func:`vertical_offset`); a shift of :data:`MAX_ROW_OFFSET` pixels or more, found with
  a clear correlation peak, stops the run.
* **order** -- the pair is matched once at reduced size (width at most :data:`CHECK_WIDTH` pixels) over a
  disparity range symmetric about zero (:func:`disparity_signs`). In a pair given in the right order
  the consistent disparities are positive (``x_right = x_left - d``); when most of them are negative,
  the folders were swapped.

The order test matches ``1/s**2`` of the pixels over ``2/s`` of the disparities of the full match
(``s`` = :func:`check_scale`, at least 4), without the post-processing filters: about ``2/s**3`` of
its work, 0.6% for a KITTI pair (``s = 7``); the row test is one FFT phase correlation of the gray
images. Measured (``benchmarks/pair_check.py``, shared 2-core CPU), the fixed costs of the parallel
kernels dominate: 0.05-0.17 s per KITTI pair against 1.2-1.4 s for its match (median 7%), 0.05-0.15 s
on ~400-pixel Middlebury scenes against 0.35-0.46 s; it runs on the first two pairs of a run only.
``--no-pair-check`` skips both tests.
No torch here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from pseudolabel.errors import InputError
from pseudolabel.sgm.params import SGMParams

__all__ = [
    "CHECK_WIDTH",
    "MAX_ROW_OFFSET",
    "PairCheck",
    "check_pair",
    "check_pairs",
    "check_scale",
    "disparity_signs",
    "vertical_offset",
]

#: Width (pixels) the order test matches at, at most: wider images are downscaled by an integer factor.
CHECK_WIDTH = 200
#: Smallest downscaling factor of the order test (``2 / 4**3`` = 3% of a match), for images at least 4 x 96 pixels wide.
MIN_SCALE = 4
#: Vertical offset (full-size pixels) from which a pair counts as not rectified to the same rows.
MAX_ROW_OFFSET = 3.0
#: Smallest phase-correlation peak (OpenCV's response, in [0, 1]) trusted for the row test.
MIN_RESPONSE = 0.02
#: Order test: swapped when at least this share of the pixels has a consistent negative disparity ...
SWAPPED_AT_LEAST = 0.15
#: ... and at least this many times as many as have a positive one.
SWAPPED_RATIO = 2.0

_NO_CHECK = "or --no-pair-check to match them as given"


@dataclass(frozen=True)
class PairCheck:
    """What :func:`check_pair` measured on one pair.

    Attributes:
        row_offset: estimated vertical shift of the right image, full-size pixels (positive: down).
        response: phase-correlation peak of that estimate, in [0, 1].
        positive, negative: shares of the pixels with a consistent positive / negative disparity in the
            order test (NaN when it did not run).
        scale: the downscaling factor of the order test.
    """

    row_offset: float
    response: float
    positive: float
    negative: float
    scale: int


def _gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
    return image.astype(np.float32)


def vertical_offset(left: np.ndarray, right: np.ndarray) -> tuple[float, float]:
    """Vertical shift of ``right`` against ``left`` (pixels) and the phase-correlation peak, on the gray images.

    The horizontal part of the shift (the disparities) does not matter: only the row shift is returned.
    """
    gray_left, gray_right = _gray(left), _gray(right)
    window = cv2.createHanningWindow((gray_left.shape[1], gray_left.shape[0]), cv2.CV_32F)
    (_, shift_y), response = cv2.phaseCorrelate(gray_left, gray_right, window)
    return float(shift_y), float(response)


def _downscaled(image: np.ndarray, scale: int) -> np.ndarray:
    if scale == 1:
        return image
    height, width = image.shape[:2]
    return cv2.resize(image, (max(2, width // scale), max(1, height // scale)), interpolation=cv2.INTER_AREA)


def check_scale(width: int) -> int:
    """The downscaling factor of the order test: enough to bring ``width`` to :data:`CHECK_WIDTH` or less, and at
    least :data:`MIN_SCALE` while that leaves 96 pixels or more (so that the test stays a few percent of a match)."""
    return max(1, -(-width // CHECK_WIDTH), min(MIN_SCALE, width // 96))


def disparity_signs(left: np.ndarray, right: np.ndarray, params: SGMParams) -> tuple[float, float, int]:
    """Match the pair at reduced size over a range symmetric about zero and count the signs of the
    consistent disparities: a left image on the left gives positive ones (``x_right = x_left - d``).

    Returns:
        ``(positive, negative, scale)``: shares of all pixels passing the left-right check with a
        disparity of at least one (reduced) pixel, positive and negative, and the downscaling factor.
    """
    from pseudolabel.sgm.matcher import match

    scale = check_scale(left.shape[1])
    small_left, small_right = _downscaled(left, scale), _downscaled(right, scale)
    reach = max(2, min(-(-params.max_disp // scale), small_left.shape[1] // 2))
    # only the consistent raw disparities count: no filling, speckle removal or median filters
    settings = params.replace(min_disp=-reach, max_disp=reach, fill_invalid=False, speckle_size=0, median=0, dense_median=0, paths=4)
    result = match(small_left, small_right, settings)
    disparity = np.where(result.valid, result.disparity, 0.0)
    positive = float(np.mean(disparity >= 1.0))
    negative = float(np.mean(disparity <= -1.0))
    return positive, negative, scale


def check_pair(left: np.ndarray, right: np.ndarray, params: SGMParams, name: str = "the pair") -> PairCheck:
    """Stop when a pair is not rectified to the same rows or its images are swapped.

    Args:
        left, right: the images as the run would match them.
        params: the run's SGM parameters for this pair (the order test runs when ``min_disp >= 0``:
            a range that allows negative disparities says nothing about the order).
        name: how to name the pair in the message (its image paths).

    Raises:
        InputError: one line saying what looks wrong, with the measured figures and the fix.
    """
    row_offset, response = vertical_offset(left, right)
    if abs(row_offset) >= MAX_ROW_OFFSET and response >= MIN_RESPONSE:
        raise InputError(
            f"{name}: the right image is shifted {row_offset:+.1f} rows against the left one; the pairs must be rectified "
            f"(epipolar lines on the same rows): rectify them first, {_NO_CHECK}"
        )
    if params.min_disp < 0:
        return PairCheck(row_offset, response, float("nan"), float("nan"), 1)
    positive, negative, scale = disparity_signs(left, right, params)
    if negative >= SWAPPED_RATIO * positive and negative >= SWAPPED_AT_LEAST:
        raise InputError(
            f"{name}: left and right look swapped: {100 * negative:.0f}% of the pixels match the right image to the right "
            f"(negative disparities) and {100 * positive:.0f}% to the left; give the left images first (--in LEFT_DIR RIGHT_DIR), {_NO_CHECK}"
        )
    return PairCheck(row_offset, response, positive, negative, scale)


class _Task(Protocol):
    @property
    def left(self) -> str: ...
    @property
    def right(self) -> str: ...
    @property
    def params(self) -> SGMParams: ...


def check_pairs(tasks: Sequence[_Task], count: int = 2) -> list[PairCheck]:
    """:func:`check_pair` on the first ``count`` pairs of a run (objects with ``left``, ``right`` paths and ``params``)."""
    from pseudolabel.io import read_image

    checks = []
    for task in list(tasks)[:count]:
        left_path, right_path = os.fspath(task.left), os.fspath(task.right)
        left, right = read_image(left_path), read_image(right_path)
        if left.shape[:2] != right.shape[:2]:
            continue  # the run itself reports pairs of different sizes
        if left.ndim == 3 and left.shape[2] == 4:
            left, right = left[..., :3], right[..., :3]
        checks.append(check_pair(left, right, task.params, f"{left_path} / {right_path}"))
    return checks
