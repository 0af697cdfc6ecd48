"""How the two cameras differ: specular-like highlights, gain, gamma, blur, sensor noise, gray
conversion, 8-bit quantisation and JPEG, applied to the exactly rendered views.

The geometry (disparities, occlusions) never changes here; only the pixel values of the views do.
Random numbers come from the scene's generator, after the layers drew theirs. numpy and OpenCV only.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from pseudolabel.synth.config import SynthConfig


def add_highlight(image: np.ndarray, x: float, y: float, radius: float, colour: np.ndarray) -> None:
    """Add a Gaussian highlight centred at (x, y) pixels to a float32 (3, H, W) image, in place."""
    height, width = image.shape[1:]
    reach = int(math.ceil(3 * radius))
    x_start, x_stop = max(0, int(x) - reach), min(width, int(x) + reach + 1)
    y_start, y_stop = max(0, int(y) - reach), min(height, int(y) + reach + 1)
    if x_start >= x_stop or y_start >= y_stop:
        return
    xs = np.arange(x_start, x_stop, dtype=np.float32) - np.float32(x)
    ys = np.arange(y_start, y_stop, dtype=np.float32)[:, None] - np.float32(y)
    blob = np.exp(-(xs * xs + ys * ys) * np.float32(0.5 / (radius * radius)))
    image[:, y_start:y_stop, x_start:x_stop] += blob[None] * colour[:, None, None]


def quantise(image: np.ndarray) -> np.ndarray:
    """float32 (3, H, W) planes -> uint8 (H, W, 3), rounded and saturated."""
    return cv2.merge([np.clip(np.rint(plane), 0, 255).astype(np.uint8) for plane in image])


def apply_photometry(
    config: SynthConfig, rng: np.random.Generator, left: np.ndarray, right: np.ndarray, disp_left: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Highlights, gain, gamma, blur, noise, gray, quantisation and JPEG, each drawn with its probability.

    Args:
        config: the probabilities and ranges of every change.
        rng: the scene's generator (the draws happen in the order listed above).
        left, right: float32 (3, H, W) RGB planes in 8-bit units, as rendered (not modified).
        disp_left: float (H, W) left-view disparity, pixels (places the highlights in the right view).

    Returns:
        The left and right views, uint8 (H, W, 3) RGB.
    """
    height, width = disp_left.shape
    left, right = left.copy(), right.copy()
    if rng.random() < config.highlight_probability:
        for _ in range(int(rng.integers(1, config.max_highlights + 1))):
            x, y = float(rng.uniform(0, width - 1)), float(rng.uniform(0, height - 1))
            radius = float(rng.uniform(2.0, 14.0))
            colour = (np.float32(rng.uniform(80, 220)) * rng.uniform(0.85, 1.0, 3)).astype(np.float32)
            offset = float(rng.uniform(2.0, 10.0)) * (1.0 if rng.random() < 0.5 else -1.0)
            surface = float(disp_left[int(round(y)), int(round(x))])
            add_highlight(left, x, y, radius, colour)
            add_highlight(right, x - (surface + offset), y, radius, colour)
    if rng.random() < config.gain_probability:
        gain = 1.0 + float(rng.uniform(-config.max_gain, config.max_gain))
        channel_gain = (gain * (1.0 + rng.uniform(-config.max_gain / 4, config.max_gain / 4, 3))).astype(np.float32)
        right *= channel_gain[:, None, None]
    if rng.random() < config.gamma_probability:
        gamma = float(np.exp(rng.uniform(-np.log(config.max_gamma), np.log(config.max_gamma))))
        np.clip(right, 0, 255, out=right)
        right *= np.float32(1 / 255.0)
        right = np.float32(255.0) * cv2.pow(right.reshape(3, -1), gamma).reshape(right.shape)
    if rng.random() < config.blur_probability:
        sigma = float(rng.uniform(0.4, config.max_blur_sigma))
        blurred = left if rng.random() < 0.5 else right
        for plane in blurred:
            cv2.GaussianBlur(plane, (0, 0), sigma, dst=plane)
    if rng.random() < config.noise_probability:
        for view in (left, right):  # luminance noise: one plane per view, shared by the channels
            sigma = float(rng.uniform(0.5, config.max_noise_sigma))
            view += rng.standard_normal((height, width), dtype=np.float32) * np.float32(sigma)
    if rng.random() < config.gray_probability:
        red, green, blue = np.float32(0.299), np.float32(0.587), np.float32(0.114)
        left = np.broadcast_to(red * left[0] + green * left[1] + blue * left[2], left.shape)
        right = np.broadcast_to(red * right[0] + green * right[1] + blue * right[2], right.shape)
    left_u8, right_u8 = quantise(left), quantise(right)
    if rng.random() < config.jpeg_probability:
        low, high = config.jpeg_quality
        views = []
        for view in (left_u8, right_u8):
            quality = int(rng.integers(low, high + 1))
            ok, buffer = cv2.imencode(".jpg", np.ascontiguousarray(view[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
                raise OSError("JPEG encoding failed")
            decoded = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
            if decoded is None:  # pragma: no cover - OpenCV always decodes what it encoded
                raise OSError("JPEG decoding failed")
            views.append(np.ascontiguousarray(decoded[:, :, ::-1]))
        left_u8, right_u8 = views
    return left_u8, right_u8
