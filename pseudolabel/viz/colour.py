"""Pictures for people: colour-mapped disparities, confidence heat maps, labels over the image,
error maps, colour bars and sparsification curves.

Every function returns an ``uint8`` RGB image of shape (H, W, 3) (or, for the curves, an SVG
string) and never modifies its inputs. Conventions:

* disparities (``float32`` (H, W), pixels, left view) use OpenCV's turbo colour map over a display
  range ``[low, high]`` pixels (near = red, far = blue); unknown values (NaN, inf) are black. This is
  the package's one disparity colour map (``show``, ``demo``, the ``synth`` preview); :func:`darken`
  marks occluded pixels on it;
* confidences (``float32`` (H, W) in [0, 1], higher = more trustworthy) use the inferno heat map
  (black = 0, pale yellow = 1);
* labels (NaN = no label) are drawn in the disparity colours over a darkened gray copy of the image;
* errors ``|d - gt|`` (pixels) use a fixed discrete scale (:data:`ERROR_BINS`), black where the
  ground truth is unknown, so that maps of different methods compare at a glance.

numpy and OpenCV only (never torch, never matplotlib).
"""

from __future__ import annotations

import cv2
import numpy as np

from pseudolabel.errors import InputError

#: OpenCV colour maps of the three kinds of picture.
DISPARITY_COLORMAP: int = cv2.COLORMAP_TURBO
CONFIDENCE_COLORMAP: int = cv2.COLORMAP_INFERNO

#: Error classes of :func:`error_image`: (upper bound in pixels, RGB colour). The last bound is inf.
ERROR_BINS: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.5, (49, 54, 149)),
    (1.0, (69, 117, 180)),
    (2.0, (116, 173, 209)),
    (3.0, (171, 217, 233)),
    (5.0, (253, 174, 97)),
    (10.0, (244, 109, 67)),
    (float("inf"), (215, 48, 39)),
)

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _check_2d(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise InputError(f"{name} must be an (H, W) array, got shape {array.shape}")
    return array


def apply_colormap(values: np.ndarray, low: float, high: float, colormap: int) -> np.ndarray:
    """Colour-map ``values`` linearly over ``[low, high]`` (clipped); non-finite values are black.

    Args:
        values: (H, W) float array.
        low, high: values mapped to the two ends of the colour map (``high > low``).
        colormap: an OpenCV ``COLORMAP_*`` constant.

    Returns:
        ``uint8`` (H, W, 3) RGB.
    """
    values = _check_2d(values, "values").astype(np.float32, copy=False)
    finite = np.isfinite(values)
    span = max(float(high) - float(low), 1e-6)
    scaled = np.clip((np.where(finite, values, low) - low) / span, 0.0, 1.0)
    bgr = cv2.applyColorMap(np.round(scaled * 255.0).astype(np.uint8), colormap)
    rgb = bgr[:, :, ::-1].copy()
    rgb[~finite] = 0
    return rgb


def display_range(*disparities: np.ndarray | None, percentile: float = 99.5) -> tuple[float, float]:
    """A display range ``(0, high)`` in pixels shared by several disparity maps of one scene.

    ``high`` is the ``percentile`` of the finite positive values of the first map that has any (give
    the ground truth first when there is one), rounded up to a multiple of 4, at least 4.
    """
    for disparity in disparities:
        if disparity is None:
            continue
        values = np.asarray(disparity, dtype=np.float32)
        values = values[np.isfinite(values) & (values > 0)]
        if values.size:
            high = float(np.percentile(values, percentile))
            return 0.0, float(max(4.0, 4.0 * np.ceil(high / 4.0)))
    return 0.0, 4.0


def disparity_image(disparity: np.ndarray, low: float, high: float) -> np.ndarray:
    """Disparity (float (H, W), pixels) -> turbo RGB (H, W, 3) ``uint8``; unknown = black."""
    return apply_colormap(disparity, low, high, DISPARITY_COLORMAP)


def darken(picture: np.ndarray, mask: np.ndarray, factor: float = 0.35) -> np.ndarray:
    """A copy of ``picture`` whose pixels under ``mask`` keep ``factor`` of their brightness (e.g. occluded pixels).

    Args:
        picture: ``uint8`` (H, W, 3) RGB (or (H, W) gray).
        mask: ``bool`` (H, W), True = darken.
        factor: brightness kept, in [0, 1]; the product is truncated to an integer.

    Returns:
        ``uint8`` array of the shape of ``picture``.
    """
    picture = np.asarray(picture)
    mask = _check_2d(mask, "mask").astype(bool, copy=False)
    if picture.shape[:2] != mask.shape:
        raise InputError(f"picture {picture.shape[:2]} and mask {mask.shape} differ in size")
    result = picture.copy()
    result[mask] = (result[mask] * float(factor)).astype(np.uint8)
    return result


def confidence_image(confidence: np.ndarray) -> np.ndarray:
    """Confidence (float (H, W) in [0, 1]) -> inferno heat map, RGB (H, W, 3) ``uint8``."""
    return apply_colormap(confidence, 0.0, 1.0, CONFIDENCE_COLORMAP)


def gray_rgb(image: np.ndarray) -> np.ndarray:
    """An 8/16-bit gray or RGB image -> ``uint8`` (H, W, 3) RGB (16-bit scaled by 1/257)."""
    image = np.asarray(image)
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        raise InputError(f"images must be uint8 or uint16, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return image.copy()
    raise InputError(f"images must be (H, W) or (H, W, 3), got shape {image.shape}")


def labels_overlay(image: np.ndarray | None, labels: np.ndarray, low: float, high: float, background: float = 0.45) -> np.ndarray:
    """Labels in disparity colours over a darkened gray copy of the image.

    Args:
        image: the left image (8/16-bit gray or RGB, (H, W[, 3])) or ``None`` (black background).
        labels: ``float32`` (H, W) labels in pixels, NaN where there is no label.
        low, high: disparity display range in pixels.
        background: brightness of the image where there is no label (0..1).

    Returns:
        ``uint8`` (H, W, 3) RGB.
    """
    labels = _check_2d(labels, "labels")
    if image is None:
        base = np.zeros((*labels.shape, 3), np.uint8)
    else:
        rgb = gray_rgb(image)
        if rgb.shape[:2] != labels.shape:
            raise InputError(f"image {rgb.shape[:2]} and labels {labels.shape} differ in size")
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) * float(background)
        base = np.repeat(gray.round().astype(np.uint8)[:, :, None], 3, axis=2)
    labelled = np.isfinite(labels)
    coloured = disparity_image(labels, low, high)
    base[labelled] = coloured[labelled]
    return base


def error_image(disparity: np.ndarray, ground_truth: np.ndarray) -> np.ndarray:
    """Error map ``|d - gt|`` in the classes of :data:`ERROR_BINS`.

    Args:
        disparity: ``float32`` (H, W) estimate, pixels (NaN = no estimate, drawn dark gray where the
            ground truth is known).
        ground_truth: ``float32`` (H, W), pixels, NaN or ``<= 0`` where unknown (drawn black).

    Returns:
        ``uint8`` (H, W, 3) RGB.
    """
    disparity = _check_2d(disparity, "disparity").astype(np.float32, copy=False)
    ground_truth = _check_2d(ground_truth, "ground_truth").astype(np.float32, copy=False)
    if disparity.shape != ground_truth.shape:
        raise InputError(f"disparity {disparity.shape} and ground truth {ground_truth.shape} differ in size")
    known = np.isfinite(ground_truth) & (ground_truth > 0)
    estimated = np.isfinite(disparity)
    with np.errstate(invalid="ignore"):
        error = np.abs(np.where(estimated, disparity, 0) - np.where(known, ground_truth, 0))
    picture = np.zeros((*disparity.shape, 3), np.uint8)
    lower = -1.0
    for upper, colour in ERROR_BINS:
        selected = known & estimated & (error > lower) & (error <= upper)
        picture[selected] = colour
        lower = upper
    picture[known & ~estimated] = (60, 60, 60)
    return picture


def resize_for_display(image: np.ndarray, max_width: int, nearest: bool = False) -> np.ndarray:
    """Shrink an (H, W[, 3]) picture to at most ``max_width`` pixels wide (aspect kept); never enlarges."""
    height, width = image.shape[:2]
    if max_width <= 0 or width <= max_width:
        return image
    size = (int(max_width), max(1, round(height * max_width / width)))
    return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def _text(canvas: np.ndarray, text: str, origin: tuple[int, int], scale: float = 0.4, colour: tuple[int, int, int] = (0, 0, 0)) -> None:
    cv2.putText(canvas, text, origin, _FONT, scale, colour, 1, cv2.LINE_AA)


def _text_width(text: str, scale: float = 0.4) -> int:
    return int(cv2.getTextSize(text, _FONT, scale, 1)[0][0])


def colour_bar(low: float, high: float, colormap: int, label: str, width: int = 420, ticks: int = 5, unit: str = "") -> np.ndarray:
    """A horizontal colour bar with tick values and a label, on white.

    Args:
        low, high: the values at the two ends.
        colormap: an OpenCV ``COLORMAP_*`` constant (the one used for the picture it explains).
        label: text printed above the bar (e.g. ``"disparity (px)"``).
        width: total width in pixels.
        ticks: number of tick values (>= 2).
        unit: appended to each tick value.

    Returns:
        ``uint8`` (52, width, 3) RGB.
    """
    if ticks < 2:
        raise InputError(f"a colour bar needs at least 2 ticks, got {ticks}")
    height, margin, bar_top, bar_height = 52, 14, 18, 14
    canvas = np.full((height, width, 3), 255, np.uint8)
    inner = width - 2 * margin
    ramp = np.linspace(low, high, inner, dtype=np.float32)[None, :].repeat(bar_height, axis=0)
    canvas[bar_top : bar_top + bar_height, margin : margin + inner] = apply_colormap(ramp, low, high, colormap)
    cv2.rectangle(canvas, (margin - 1, bar_top - 1), (margin + inner, bar_top + bar_height), (0, 0, 0), 1)
    _text(canvas, label, (margin, 13))
    span = high - low
    decimals = 0 if span >= ticks * 2 else (1 if span >= 1 else 2)
    for index in range(ticks):
        fraction = index / (ticks - 1)
        x = margin + round(fraction * (inner - 1))
        cv2.line(canvas, (x, bar_top + bar_height), (x, bar_top + bar_height + 3), (0, 0, 0), 1)
        text = f"{low + fraction * span:.{decimals}f}{unit}"
        text_x = min(max(x - _text_width(text) // 2, 0), width - _text_width(text) - 1)
        _text(canvas, text, (text_x, height - 4))
    return canvas


def error_legend(width: int = 420) -> np.ndarray:
    """The legend of :func:`error_image`: one swatch per class of :data:`ERROR_BINS`, on white.

    Returns:
        ``uint8`` (52, width, 3) RGB.
    """
    height, margin = 52, 14
    canvas = np.full((height, width, 3), 255, np.uint8)
    _text(canvas, "error |d - gt| (px); black: no ground truth", (margin, 13))
    count = len(ERROR_BINS)
    swatch = (width - 2 * margin) // count
    lower = 0.0
    for index, (upper, colour) in enumerate(ERROR_BINS):
        x = margin + index * swatch
        cv2.rectangle(canvas, (x, 18), (x + swatch - 3, 32), colour, -1)
        text = f">{lower:g}" if np.isinf(upper) else f"{lower:g}-{upper:g}"
        _text(canvas, text, (x + max(0, (swatch - 3 - _text_width(text)) // 2), height - 4))
        lower = upper
    return canvas


def with_colour_bar(picture: np.ndarray, bar: np.ndarray, gap: int = 4) -> np.ndarray:
    """Stack ``picture`` and a colour bar (centred, on white) into one RGB image."""
    width = max(picture.shape[1], bar.shape[1])
    height = picture.shape[0] + gap + bar.shape[0]
    canvas = np.full((height, width, 3), 255, np.uint8)
    x = (width - picture.shape[1]) // 2
    canvas[: picture.shape[0], x : x + picture.shape[1]] = picture
    x = (width - bar.shape[1]) // 2
    canvas[picture.shape[0] + gap :, x : x + bar.shape[1]] = bar
    return canvas
