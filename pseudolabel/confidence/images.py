"""Image input channels of confidence networks that read the image (numpy and OpenCV, never torch).

A proxies file holds no image, only the paths of the pair's images (pair attributes ``left`` and
``right``). :func:`pair_gray_images` reads them as gray ``float32`` in [0, 1] under the feature names
:data:`LEFT_GRAY` / :data:`RIGHT_GRAY`, so they travel with the stored arrays to
:func:`pseudolabel.models.ccnn.build_inputs`, which makes two channels of them:

* ``image`` (:func:`normalised_image`): the left image, zero mean and unit standard deviation over the image;
* ``photometric`` (:func:`photometric_error`): ``|left(x) - right(x - d)|`` with the right image sampled
  at the proxy disparity by linear interpolation (1 where ``x - d`` falls outside the right image),
  divided by the image's intensity spread so that it does not depend on exposure;
* ``texture`` (:func:`epipolar_texture`): how much the left image varies *along its rows* around the
  pixel (mean absolute horizontal gradient over a :data:`TEXTURE_WINDOW` square, in 8-bit levels, on a
  log scale). Matching is blind where it is near 0: texture-less surfaces and stripes parallel to the
  epipolar lines, where SGM propagates a neighbour's disparity and the cost curve alone cannot tell.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from pseudolabel.errors import InputError
from pseudolabel.io import read_image, to_gray

#: Feature names of the pair's gray images, in [0, 1].
LEFT_GRAY: str = "left_gray"
RIGHT_GRAY: str = "right_gray"
#: Input channels built from the images (names accepted by ``--inputs``).
IMAGE_CHANNELS: tuple[str, ...] = ("image", "photometric", "texture")
#: Window side of :func:`epipolar_texture`, pixels.
TEXTURE_WINDOW: int = 9


def gray_float(image: np.ndarray) -> np.ndarray:
    """A gray ``float32`` (H, W) copy of an 8/16-bit gray or RGB image, in [0, 1]."""
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    return (to_gray(image).astype(np.float32) / np.float32(scale)).astype(np.float32)


def pair_gray_images(proxies_path: str | os.PathLike[str], attrs: Mapping[str, Any], key: str) -> dict[str, np.ndarray]:
    """``{LEFT_GRAY, RIGHT_GRAY}`` of a pair, from the image paths of its attributes (``left``, ``right``).

    Raises:
        InputError: an image is missing (as stored and next to the proxies file) or of another size than
        the proxies.
    """
    from pseudolabel.store.names import resolve_pair_file

    images = {}
    for side, name in (("left", LEFT_GRAY), ("right", RIGHT_GRAY)):
        if side not in attrs:
            raise InputError(f"{proxies_path}: pair {key!r} stores no {side} image path; the image channels need the pair's images")
        images[name] = gray_float(read_image(resolve_pair_file(proxies_path, str(attrs[side]), side, key)))
        shape = (int(attrs["height"]), int(attrs["width"])) if "height" in attrs and "width" in attrs else images[name].shape
        if images[name].shape != shape:
            raise InputError(f"{proxies_path}: the {side} image of pair {key!r} is {images[name].shape}, the proxies are {shape}")
    return images


def normalised_image(gray: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation (a flat image stays 0): ``float32`` (H, W)."""
    gray = np.asarray(gray, dtype=np.float32)
    spread = float(gray.std())
    return ((gray - gray.mean()) / np.float32(max(spread, 1e-3))).astype(np.float32)


def warp_right(right: np.ndarray, disparity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The right image sampled at ``x - d`` (linear interpolation along the row).

    Returns:
        ``float32`` (H, W) warped image and ``bool`` (H, W) inside (``0 <= x - d <= W - 1`` and d finite).
    """
    height, width = right.shape
    columns = np.arange(width, dtype=np.float32)[None, :] - np.asarray(disparity, dtype=np.float32)
    inside = np.isfinite(columns) & (columns >= 0) & (columns <= width - 1)
    position = np.where(inside, columns, 0.0)
    low = np.clip(np.floor(position).astype(np.int64), 0, width - 1)
    high = np.minimum(low + 1, width - 1)
    weight = (position - low).astype(np.float32)
    rows = np.arange(height)[:, None]
    warped = (1.0 - weight) * right[rows, low] + weight * right[rows, high]
    return warped.astype(np.float32), inside


def photometric_error(left: np.ndarray, right: np.ndarray, disparity: np.ndarray) -> np.ndarray:
    """``|left - right warped by the disparity|`` divided by the left image's standard deviation (clipped
    to [0, 4]); 4 where the match falls outside the right image. ``float32`` (H, W)."""
    if left.shape != right.shape or left.shape != disparity.shape:
        raise InputError(f"left {left.shape}, right {right.shape} and disparity {disparity.shape} differ in shape")
    warped, inside = warp_right(right, disparity)
    spread = max(float(np.asarray(left, dtype=np.float32).std()), 1e-3)
    error = np.abs(np.asarray(left, dtype=np.float32) - warped) / np.float32(spread)
    return np.where(inside, np.minimum(error, 4.0), 4.0).astype(np.float32)


def epipolar_texture(gray: np.ndarray, window: int = TEXTURE_WINDOW) -> np.ndarray:
    """Texture along the epipolar lines: ``log2(1 + g) / 4`` with ``g`` the mean over a ``window`` x ``window``
    square (reflected borders) of ``|I(x + 1) - I(x - 1)| / 2`` in 8-bit levels (``I`` in [0, 1]; the
    first and last columns use one-sided differences). ``float32`` (H, W), 0 on a flat image, 2 at a
    mean gradient of 255 levels per pixel."""
    import cv2

    gray = np.asarray(gray, dtype=np.float32)
    gradient = np.zeros_like(gray)
    if gray.shape[1] > 1:
        gradient[:, 1:-1] = np.abs(gray[:, 2:] - gray[:, :-2]) * np.float32(0.5)
        gradient[:, 0] = np.abs(gray[:, 1] - gray[:, 0])
        gradient[:, -1] = np.abs(gray[:, -1] - gray[:, -2])
    local = cv2.blur(gradient * np.float32(255.0), (window, window), borderType=cv2.BORDER_REFLECT_101)
    return (np.log2(np.float32(1.0) + np.maximum(local, 0.0)) / np.float32(4.0)).astype(np.float32)


def image_channel(name: str, features: Mapping[str, np.ndarray]) -> np.ndarray:
    """Input channel ``image``, ``photometric`` or ``texture`` from the features (which must hold the gray images)."""
    if LEFT_GRAY not in features or RIGHT_GRAY not in features:
        raise InputError(f"input channel {name!r} needs the pair's images; read them with pair_gray_images")
    if name == "image":
        return normalised_image(features[LEFT_GRAY])
    if name == "photometric":
        return photometric_error(features[LEFT_GRAY], features[RIGHT_GRAY], features["disparity"])
    if name == "texture":
        return epipolar_texture(features[LEFT_GRAY])
    raise InputError(f"unknown image channel {name!r}; choose from {', '.join(IMAGE_CHANNELS)}")
