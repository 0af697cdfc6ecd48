"""Synthetic rectified stereo pairs with exact ground truth (a FlyingThings-like source domain).

A scene is a stack of layers in front of a slanted background: polygons, ellipses, smooth blobs and
thin structures, each a textured patch of a plane in disparity space,

    d(x_l, y) = a * x_l + b * y + c        (pixels; x_l, y are left-view pixel coordinates).

Geometry (exact, no resampling of the ground truth):

* Each layer's silhouette and texture live in *left-view coordinates* on a canvas that is wider than
  the image (``width + max_disp + 2`` columns), so that the parts seen only by the right camera exist.
  The silhouette is the union of the unit pixel squares of a boolean mask; the texture is a raster
  read with linear interpolation along x (rows are rectified, so y is always an integer).
* Left view: pixel ``(y, x_l)`` sees, among the layers whose mask covers ``x_l``, the one with the
  largest disparity (nearest), i.e. a z-buffer drawn back to front.
* Right view: a point ``x_l`` of a plane appears at ``x_r = x_l - d = (1 - a) x_l - b y - c``, whose
  inverse is closed-form, ``x_l = (x_r + b y + c) / (1 - a)``. Every right pixel is rendered by this
  inverse map for every layer, again keeping the largest disparity. ``|a| < 0.5``, so the map is
  monotonic and a plane never hides itself.
* Occlusion: a left pixel is occluded when its point ``x_r = x_l - d`` falls outside the right image
  (``x_r < -0.5`` or ``x_r >= W - 0.5``) or when another layer covers that right position with a
  larger disparity; the same, mirrored, for the right view. These tests are evaluated analytically at
  the continuous position, not looked up in the rendered integer grid.

Disparity convention (as everywhere in the package): left view ``x_r = x_l - d``, right view
``x_l = x_r + d``, ``d > 0``; all disparities lie in ``(0, max_disp)``.

Appearance: textures (fractal and multi-scale noise, stripes, repeated tiles, smooth gradients and
almost texture-less surfaces, in colour or gray), optional shading, then optional photometric
differences between the views (gain, gamma, sensor noise, blur, JPEG) and specular-like highlights
whose disparity differs from the surface they sit on. With
:meth:`SynthConfig.without_photometric` the right image is the left texture resampled exactly.

Only numpy and OpenCV are used (no torch, no numba). One 512x256 pair takes a few tens of
milliseconds on one core (see ``benchmarks/synth_speed.py``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from pseudolabel.errors import InputError

SHAPES = ("polygon", "ellipse", "blob", "thin")
TEXTURES = ("fractal", "noise", "stripes", "tiles", "gradient", "flat")
DATASET_FOLDERS = ("left", "right", "disp_left", "disp_right", "occ_left", "occ_right")
META_FORMAT = "pseudolabel-synth"
META_VERSION = 1

# Largest accepted horizontal slope |a| of a plane: keeps x_l -> x_r monotonic and a warped pixel's
# sources within +-2 texture samples (the bound stated in the tests).
_MAX_SLOPE_LIMIT = 0.5
# A layer occludes another only when nearer by more than this (pixels): guards against rounding.
_DEPTH_EPS = 1e-6


@dataclass(frozen=True)
class SynthConfig:
    """Every parameter of the generator; stored in ``meta.json`` next to the data it made.

    Attributes:
        width, height: image size in pixels.
        max_disp: every disparity is in ``(0, max_disp)`` pixels, both views.
        min_disp: smallest disparity of the background, pixels (``0 < min_disp < max_disp``).
        background_disp_fraction: background disparities lie in
            ``[min_disp, background_disp_fraction * max_disp]``; objects lie in front of it, up to
            ``0.98 * max_disp``.
        min_objects, max_objects: number of foreground objects per scene (inclusive range).
        object_size: range of an object's bounding-box side as a fraction of ``height``.
        max_slope: largest ``|a|`` and ``|b|`` of an object plane (disparity pixels per pixel,
            ``< 0.5``); the background uses the same bound.
        shape_mix: ``(name, weight)`` pairs over ``polygon``, ``ellipse``, ``blob``, ``thin``.
        texture_mix: ``(name, weight)`` pairs over ``fractal``, ``noise``, ``stripes``, ``tiles``,
            ``gradient``, ``flat``.
        gray_layer_probability: probability that one layer is textured in gray in a colour scene.
        shading_probability: probability that one layer gets a smooth multiplicative shading.
        gray_probability: probability that a whole pair is gray (three equal channels).
        gain_probability, max_gain: right view multiplied by a global gain in ``1 +- max_gain``
            (and per-channel ``1 +- max_gain / 4``).
        gamma_probability, max_gamma: right view gamma in ``[1 / max_gamma, max_gamma]``.
        noise_probability, max_noise_sigma: independent Gaussian luminance noise in both views,
            sigma in ``[0.5, max_noise_sigma]`` 8-bit levels (drawn per view).
        blur_probability, max_blur_sigma: one of the two views blurred, sigma in
            ``[0.4, max_blur_sigma]`` pixels.
        jpeg_probability, jpeg_quality: both views JPEG-compressed, quality drawn per view in the
            inclusive range.
        highlight_probability, max_highlights: specular-like blobs (1 to ``max_highlights``) drawn
            at a disparity 2-10 px off the surface underneath, so they do not move with it.
    """

    width: int = 512
    height: int = 256
    max_disp: float = 96.0
    min_disp: float = 0.5
    background_disp_fraction: float = 0.35
    min_objects: int = 5
    max_objects: int = 16
    object_size: tuple[float, float] = (0.1, 0.7)
    max_slope: float = 0.15
    shape_mix: tuple[tuple[str, float], ...] = (("polygon", 1.0), ("ellipse", 1.0), ("blob", 1.0), ("thin", 0.6))
    texture_mix: tuple[tuple[str, float], ...] = (
        ("fractal", 3.0),
        ("noise", 1.0),
        ("stripes", 1.0),
        ("tiles", 1.0),
        ("gradient", 0.7),
        ("flat", 0.5),
    )
    gray_layer_probability: float = 0.2
    shading_probability: float = 0.3
    gray_probability: float = 0.15
    gain_probability: float = 0.5
    max_gain: float = 0.2
    gamma_probability: float = 0.3
    max_gamma: float = 1.3
    noise_probability: float = 0.5
    max_noise_sigma: float = 4.0
    blur_probability: float = 0.2
    max_blur_sigma: float = 1.2
    jpeg_probability: float = 0.2
    jpeg_quality: tuple[int, int] = (40, 95)
    highlight_probability: float = 0.3
    max_highlights: int = 3

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.width < 16 or self.height < 16:
            problems.append(f"size {self.width}x{self.height} is too small (at least 16x16)")
        if not 0 < self.min_disp < self.max_disp:
            problems.append(f"need 0 < min_disp ({self.min_disp}) < max_disp ({self.max_disp})")
        if self.max_disp >= self.width:
            problems.append(f"max_disp ({self.max_disp}) must be smaller than the width ({self.width})")
        if not 0 < self.background_disp_fraction < 0.98:
            problems.append("background_disp_fraction must be in (0, 0.98)")
        elif self.background_disp_fraction * self.max_disp <= self.min_disp:
            problems.append("background_disp_fraction * max_disp must exceed min_disp")
        if not 0 <= self.min_objects <= self.max_objects:
            problems.append(f"need 0 <= min_objects ({self.min_objects}) <= max_objects ({self.max_objects})")
        if len(self.object_size) != 2 or not 0 < self.object_size[0] <= self.object_size[1]:
            problems.append(f"object_size {self.object_size} must be (low, high) with 0 < low <= high")
        if not 0 <= self.max_slope < _MAX_SLOPE_LIMIT:
            problems.append(f"max_slope ({self.max_slope}) must be in [0, {_MAX_SLOPE_LIMIT})")
        for name, mix, known in (("shape_mix", self.shape_mix, SHAPES), ("texture_mix", self.texture_mix, TEXTURES)):
            unknown = [entry[0] for entry in mix if entry[0] not in known]
            if unknown:
                problems.append(f"{name}: unknown names {unknown}; choose from {list(known)}")
            if any(float(entry[1]) < 0 for entry in mix) or sum(float(entry[1]) for entry in mix) <= 0:
                problems.append(f"{name}: weights must be >= 0 with a positive sum")
        for field in dataclasses.fields(self):
            if field.name.endswith("_probability"):
                value = getattr(self, field.name)
                if not 0 <= value <= 1:
                    problems.append(f"{field.name} ({value}) must be in [0, 1]")
        if not 0 <= self.max_gain < 1:
            problems.append("max_gain must be in [0, 1)")
        if self.max_gamma < 1:
            problems.append("max_gamma must be >= 1")
        if self.max_noise_sigma < 0.5 or self.max_blur_sigma < 0.4:
            problems.append("max_noise_sigma must be >= 0.5 and max_blur_sigma >= 0.4")
        if len(self.jpeg_quality) != 2 or not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            problems.append(f"jpeg_quality {self.jpeg_quality} must be (low, high) within 1..100")
        if self.max_highlights < 1:
            problems.append("max_highlights must be >= 1")
        if problems:
            raise InputError("SynthConfig: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """All fields as JSON-friendly values (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self) -> str:
        """The configuration as a JSON object string (sorted keys), as stored in ``meta.json``."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SynthConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`InputError`."""
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise InputError(f"SynthConfig: unknown parameters {unknown}; known: {sorted(names)}")
        converted: dict[str, Any] = {}
        for key, value in values.items():
            if key in ("shape_mix", "texture_mix"):
                value = tuple((str(name), float(weight)) for name, weight in value)
            elif isinstance(value, list):
                value = tuple(value)
            converted[key] = value
        return cls(**converted)

    @classmethod
    def from_json(cls, text: str) -> SynthConfig:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def without_photometric(self) -> SynthConfig:
        """A copy with every photometric difference and highlight switched off (exact views)."""
        return dataclasses.replace(
            self,
            gray_probability=0.0,
            gain_probability=0.0,
            gamma_probability=0.0,
            noise_probability=0.0,
            blur_probability=0.0,
            jpeg_probability=0.0,
            highlight_probability=0.0,
        )


@dataclass
class SynthPair:
    """One rendered pair with exact ground truth for both views.

    Attributes:
        left, right: ``uint8`` (H, W, 3) RGB images.
        disp_left: ``float32`` (H, W) left-view disparity in pixels, ``x_r = x_l - d``, in ``(0, max_disp)``.
        disp_right: ``float32`` (H, W) right-view disparity in pixels, ``x_l = x_r + d``.
        occ_left: ``bool`` (H, W), True where the left pixel is not visible in the right view
            (hidden by a nearer surface or outside the right image).
        occ_right: ``bool`` (H, W), True where the right pixel is not visible in the left view.
    """

    left: np.ndarray
    right: np.ndarray
    disp_left: np.ndarray
    disp_right: np.ndarray
    occ_left: np.ndarray
    occ_right: np.ndarray


@dataclass
class _Layer:
    """A planar textured patch; mask and texture are rasters in left-view canvas coordinates."""

    a: float
    b: float
    c: float
    x0: int  # canvas column of mask/texture column 0
    y0: int  # image row of mask/texture row 0
    texture: np.ndarray  # float32 (3, h, w) RGB planes, 8-bit scale
    mask: np.ndarray | None  # bool (h, w); None = covers the whole raster (background)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.texture.shape[1]), int(self.texture.shape[2])

    def right_columns(self, width: int) -> tuple[int, int]:
        """Right-image columns ``[start, stop)`` that this layer can cover (clipped to the image)."""
        h, w = self.shape
        xs = np.array([self.x0 - 0.5, self.x0 + w - 0.5])
        ys = np.array([self.y0, self.y0 + h - 1.0])
        corners = (1.0 - self.a) * xs[None, :] - self.b * ys[:, None] - self.c
        start = max(0, int(math.floor(corners.min())))
        stop = min(width, int(math.floor(corners.max())) + 2)
        return start, stop


@dataclass
class _Scene:
    """Internals of a rendering, for tests: the pair plus the layer index seen by every pixel."""

    pair: SynthPair
    labels_left: np.ndarray  # int16 (H, W)
    labels_right: np.ndarray  # int16 (H, W)
    layers: list[_Layer]
    exact_left: np.ndarray  # float32 (3, H, W) RGB planes before photometric changes and quantisation
    exact_right: np.ndarray


# --------------------------------------------------------------------------------------- seeds


def pair_seed(seed: int, index: int) -> int:
    """The seed of pair ``index`` of a dataset or stream made with ``seed`` (a 63-bit integer)."""
    if seed < 0 or index < 0:
        raise InputError(f"seed ({seed}) and index ({index}) must be >= 0")
    words = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(index),)).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


# ------------------------------------------------------------------------------ scalar fields


def _fractal_field(rng: np.random.Generator, h: int, w: int, base_cell: float, persistence: float) -> np.ndarray:
    """Fractal value noise, float32 (h, w), normalised to zero mean and unit standard deviation.

    Octaves have cells of ``base_cell``, ``base_cell / 2``, ... pixels down to one in ``[1, 2)``; octave
    ``k`` has amplitude ``persistence ** k``. Built as a pyramid: each level is the previous one
    upsampled twice (bicubic) plus fresh uniform noise, then one resize to pixel scale.
    """
    cell = max(float(base_cell), 1.0)
    levels = 0
    while cell >= 2.0:
        cell /= 2.0
        levels += 1
    final_h, final_w = int(h / cell) + 3, int(w / cell) + 3
    grid_h, grid_w = -(-final_h // (1 << levels)) + 1, -(-final_w // (1 << levels)) + 1
    # uniform noise in [0, 1): the constant offsets vanish with the final mean removal
    field = rng.random((grid_h, grid_w), dtype=np.float32)
    amplitude = 1.0
    for _ in range(levels):
        grid_h, grid_w = 2 * grid_h, 2 * grid_w
        field = cv2.resize(field, (grid_w, grid_h), interpolation=cv2.INTER_CUBIC)
        amplitude *= persistence
        octave = rng.random((grid_h, grid_w), dtype=np.float32)
        octave *= np.float32(amplitude)
        field += octave
    if cell > 1.0:
        up_w, up_h = max(w, int(grid_w * cell)), max(h, int(grid_h * cell))
        field = cv2.resize(field, (up_w, up_h), interpolation=cv2.INTER_CUBIC)
    oy = int(rng.integers(0, field.shape[0] - h + 1))
    ox = int(rng.integers(0, field.shape[1] - w + 1))
    field = np.ascontiguousarray(field[oy : oy + h, ox : ox + w])
    mean, spread = cv2.meanStdDev(field)
    field -= np.float32(mean[0, 0])
    if spread[0, 0] > 0:
        field *= np.float32(1.0 / spread[0, 0])
    return field


def _squash(field: np.ndarray, gain: float) -> np.ndarray:
    """Map a ~N(0, 1) field into [0, 1] smoothly."""
    return np.float32(0.5) + np.float32(0.5) * np.tanh(np.float32(gain) * field)


def _texture_field(rng: np.random.Generator, kind: str, h: int, w: int) -> np.ndarray:
    """A scalar texture field in [0, 1], float32 (h, w), of the given kind."""
    if kind == "fractal":
        base = float(np.exp(rng.uniform(np.log(6.0), np.log(96.0))))
        return _squash(_fractal_field(rng, h, w, base, float(rng.uniform(0.45, 0.7))), float(rng.uniform(0.6, 1.5)))
    if kind == "noise":
        base = float(rng.uniform(2.0, 8.0))
        return _squash(_fractal_field(rng, h, w, base, float(rng.uniform(0.7, 0.95))), float(rng.uniform(0.8, 2.0)))
    if kind == "stripes":
        theta = float(rng.uniform(0, np.pi))
        period = float(np.exp(rng.uniform(np.log(3.0), np.log(40.0))))
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        phase = (xs * np.float32(np.cos(theta)) + ys * np.float32(np.sin(theta))) * np.float32(2 * np.pi / period)
        if rng.random() < 0.5:  # wavy stripes
            phase += np.float32(rng.uniform(0.5, 3.0)) * _fractal_field(rng, h, w, float(rng.uniform(20, 80)), 0.3)
        wave = np.sin(phase + np.float32(rng.uniform(0, 2 * np.pi)))
        if rng.random() < 0.3:  # plaid
            theta2 = theta + float(rng.uniform(0.4, np.pi - 0.4))
            phase2 = (xs * np.float32(np.cos(theta2)) + ys * np.float32(np.sin(theta2))) * np.float32(2 * np.pi / period)
            wave = np.float32(0.5) * (wave + np.sin(phase2))
        if rng.random() < 0.5:  # square-ish wave
            wave = np.tanh(np.float32(rng.uniform(2.0, 6.0)) * wave)
        return np.float32(0.5) + np.float32(0.5) * wave
    if kind == "tiles":
        tile_w, tile_h = int(rng.integers(3, 25)), int(rng.integers(3, 25))
        if rng.random() < 0.35:  # checkerboard
            tile = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
            tile = cv2.resize(tile, (2 * tile_w, 2 * tile_h), interpolation=cv2.INTER_NEAREST)
        else:
            tile = rng.random((tile_h, tile_w), dtype=np.float32)
            if rng.random() < 0.5:
                tile = cv2.GaussianBlur(tile, (0, 0), 0.7)
        reps_y, reps_x = h // tile.shape[0] + 2, w // tile.shape[1] + 2
        tiled = np.tile(tile, (reps_y, reps_x))
        oy, ox = int(rng.integers(0, tile.shape[0])), int(rng.integers(0, tile.shape[1]))
        field = tiled[oy : oy + h, ox : ox + w]
        return np.clip(field + np.float32(0.04) * _fractal_field(rng, h, w, 4.0, 0.5), 0.0, 1.0)
    if kind == "gradient":
        theta = float(rng.uniform(0, 2 * np.pi))
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        ramp = xs * np.float32(np.cos(theta)) + ys * np.float32(np.sin(theta))
        low, high = float(ramp.min()), float(ramp.max())
        ramp = (ramp - np.float32(low)) * np.float32(1.0 / max(high - low, 1.0))
        wobble = np.float32(0.08) * _fractal_field(rng, h, w, float(rng.uniform(24, 96)), 0.3)
        return np.clip(ramp + wobble, 0.0, 1.0)
    if kind == "flat":
        amplitude = float(rng.uniform(0.002, 0.01))
        return np.float32(0.5) + np.float32(amplitude) * _fractal_field(rng, h, w, 1.0, 0.5)
    raise InputError(f"unknown texture {kind!r}; choose from {list(TEXTURES)}")


def _random_colour(rng: np.random.Generator, gray: bool) -> np.ndarray:
    if gray:
        return np.full(3, rng.uniform(0, 255), dtype=np.float32)
    return rng.uniform(0, 255, 3).astype(np.float32)


def _texture(rng: np.random.Generator, config: SynthConfig, h: int, w: int) -> np.ndarray:
    """A textured surface raster, channel-planar float32 (3, h, w) RGB in 8-bit units [0, 255]."""
    names = [entry[0] for entry in config.texture_mix]
    weights = np.array([float(entry[1]) for entry in config.texture_mix])
    kind = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    gray = bool(rng.random() < config.gray_layer_probability)
    field = np.ascontiguousarray(_texture_field(rng, kind, h, w), dtype=np.float32)
    first = _random_colour(rng, gray)
    second = _random_colour(rng, gray)
    contrast = float(rng.uniform(0.15, 1.0)) if kind != "flat" else 1.0
    second = first + np.float32(contrast) * (second - first)
    delta = second - first
    # per-channel 2-D operations, merged once (much faster than broadcasting over (h, w, 3))
    texture = np.empty((3, h, w), dtype=np.float32)
    channels = [cv2.addWeighted(field, float(delta[c]), field, 0.0, float(first[c]), dst=texture[c]) for c in range(3)]
    if not gray and rng.random() < 0.3:  # a third colour driven by a second, smoother field
        third = _random_colour(rng, False)
        mix = np.float32(0.6) * _squash(_fractal_field(rng, h, w, float(rng.uniform(16, 64)), 0.3), 1.0)
        keep = np.float32(1.0) - mix
        for c in range(3):
            channels[c] *= keep
            channels[c] += mix * third[c]
    if rng.random() < config.shading_probability:
        shade = np.float32(0.55) + np.float32(0.45) * _squash(_fractal_field(rng, h, w, float(rng.uniform(32, 128)), 0.35), 1.0)
        texture *= shade
    return texture


# ------------------------------------------------------------------------------------ shapes


def _shape_mask(rng: np.random.Generator, kind: str, h: int, w: int) -> np.ndarray:
    """A silhouette of the given kind filling roughly an (h, w) box; bool (h, w)."""
    canvas = np.zeros((h, w), dtype=np.uint8)
    shift = 4
    scale = 1 << shift
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    if kind == "ellipse":
        angle = float(rng.uniform(0, 180))
        axes = (max(1, int(w / 2 * rng.uniform(0.6, 1.0) * scale)), max(1, int(h / 2 * rng.uniform(0.6, 1.0) * scale)))
        cv2.ellipse(canvas, (int(cx * scale), int(cy * scale)), axes, angle, 0, 360, 255, -1, cv2.LINE_8, shift)
    elif kind == "polygon":
        count = int(rng.integers(3, 10))
        angles = np.sort(rng.uniform(0, 2 * np.pi, count))
        radii = rng.uniform(0.45, 1.0, count)
        points = np.stack([cx + np.cos(angles) * radii * w / 2, cy + np.sin(angles) * radii * h / 2], axis=1)
        cv2.fillPoly(canvas, [np.round(points * scale).astype(np.int32)], 255, cv2.LINE_8, shift)
    elif kind == "blob":
        grid = rng.random((int(rng.integers(3, 7)), int(rng.integers(3, 7))), dtype=np.float32)
        field = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        ys, xs = np.ogrid[0:h, 0:w]
        radial = ((xs - cx) / max(w / 2, 1)) ** 2 + ((ys - cy) / max(h / 2, 1)) ** 2
        canvas[(field - np.float32(0.6) * radial.astype(np.float32)) > np.float32(0.15)] = 255
    elif kind == "thin":
        for _ in range(int(rng.integers(1, 4))):
            count = int(rng.integers(2, 6))
            points = np.stack([rng.uniform(0, w - 1, count), rng.uniform(0, h - 1, count)], axis=1)
            thickness = int(rng.integers(1, 5))
            cv2.polylines(canvas, [np.round(points * scale).astype(np.int32)], False, 255, thickness, cv2.LINE_8, shift)
    else:
        raise InputError(f"unknown shape {kind!r}; choose from {list(SHAPES)}")
    return canvas > 0


# ------------------------------------------------------------------------------------- scene


def _fit_plane(
    rng: np.random.Generator,
    box: tuple[float, float, float, float],
    disp_range: tuple[float, float],
    max_slope: float,
) -> tuple[float, float, float]:
    """A random plane ``d = a x + b y + c`` that stays inside ``disp_range`` over ``box`` = (x_lo, x_hi, y_lo, y_hi)."""
    x_lo, x_hi, y_lo, y_hi = box
    d_lo, d_hi = disp_range
    centre = float(rng.uniform(d_lo, d_hi))
    a, b = (float(v) for v in rng.uniform(-max_slope, max_slope, 2))
    spread = abs(a) * (x_hi - x_lo) / 2 + abs(b) * (y_hi - y_lo) / 2
    room = min(centre - d_lo, d_hi - centre)
    if spread > room:
        factor = 0.999 * room / spread if spread > 0 else 0.0
        a, b = a * factor, b * factor
    c = centre - a * (x_lo + x_hi) / 2 - b * (y_lo + y_hi) / 2
    return a, b, c


def _plane_range(layer: _Layer) -> tuple[float, float]:
    """Smallest and largest disparity of a layer over its raster's pixel footprint."""
    h, w = layer.shape
    xs = np.array([layer.x0 - 0.5, layer.x0 + w - 0.5])
    ys = np.array([layer.y0, layer.y0 + h - 1.0])
    values = layer.a * xs[None, :] + layer.b * ys[:, None] + layer.c
    return float(values.min()), float(values.max())


def _build_layers(config: SynthConfig, rng: np.random.Generator) -> list[_Layer]:
    """Background first, then objects; all rasters are cropped to the canvas."""
    height, width = config.height, config.width
    canvas_width = width + int(math.ceil(config.max_disp)) + 2
    background_box = (-0.5, canvas_width - 0.5, 0.0, height - 1.0)
    background_top = config.background_disp_fraction * config.max_disp
    a, b, c = _fit_plane(rng, background_box, (config.min_disp, background_top), config.max_slope)
    layers = [_Layer(a, b, c, 0, 0, _texture(rng, config, height, canvas_width), None)]

    shape_names = [entry[0] for entry in config.shape_mix]
    shape_weights = np.array([float(entry[1]) for entry in config.shape_mix])
    shape_weights = shape_weights / shape_weights.sum()
    object_top = 0.98 * config.max_disp
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    for _ in range(count):
        kind = shape_names[int(rng.choice(len(shape_names), p=shape_weights))]
        side = float(rng.uniform(*config.object_size)) * height
        aspect = float(np.exp(rng.uniform(-0.7, 0.7)))
        box_w, box_h = max(3, int(side * aspect)), max(3, int(side / aspect))
        if kind == "thin":
            box_w, box_h = max(box_w, int(1.5 * side)), max(box_h, int(1.5 * side))
        centre_x = float(rng.uniform(-0.1 * width, width + 0.5 * config.max_disp))
        centre_y = float(rng.uniform(-0.1 * height, 1.1 * height))
        left, top = int(round(centre_x - box_w / 2)), int(round(centre_y - box_h / 2))
        mask = _shape_mask(rng, kind, box_h, box_w)
        # crop to the canvas
        x_start, y_start = max(left, 0), max(top, 0)
        x_stop, y_stop = min(left + box_w, canvas_width), min(top + box_h, height)
        if x_stop - x_start < 1 or y_stop - y_start < 1:
            continue
        mask = np.ascontiguousarray(mask[y_start - top : y_stop - top, x_start - left : x_stop - left])
        if not mask.any():
            continue
        texture = _texture(rng, config, y_stop - y_start, x_stop - x_start)
        layer = _Layer(0.0, 0.0, 0.0, x_start, y_start, texture, mask)
        box = (x_start - 0.5, x_stop - 0.5, float(y_start), y_stop - 1.0)
        behind = layers[0].a * np.array([box[0], box[1]])[None, :] + layers[0].b * np.array([box[2], box[3]])[:, None]
        lowest = min(float((behind + layers[0].c).max()) + 1.0, object_top - 1.0)
        layer.a, layer.b, layer.c = _fit_plane(rng, box, (lowest, object_top), config.max_slope)
        layers.append(layer)
    return layers


def _sample_texture(texture: np.ndarray, rows: np.ndarray, source_x: np.ndarray) -> np.ndarray:
    """Texture at integer raster ``rows`` and continuous raster columns ``source_x``.

    Linear interpolation along x (rows are rectified, never interpolated), clamped at the raster edge.
    ``texture``: float32 (3, h, w); ``rows``, ``source_x``: same shape S; returns float32 (3,) + S.
    """
    h, w = texture.shape[1:]
    source = np.clip(source_x, 0.0, w - 1.0).astype(np.float32)
    first = source.astype(np.int32)  # floor, since source >= 0
    weight = source - first  # 0 where clamped at w - 1, so the "+1" neighbour below never matters
    index = rows.astype(np.int32) * np.int32(w) + first
    following = index + np.int32(1)
    result = np.empty((3,) + source.shape, dtype=np.float32)
    for channel in range(3):
        plane = texture[channel].ravel()
        low = np.take(plane, index)
        result[channel] = low + weight * (np.take(plane, following, mode="clip") - low)
    return result


def _render_left(layers: list[_Layer], height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-buffer the layers in the left view.

    Returns image float32 (3, H, W) RGB planes, disparity float64 (H, W) pixels, label int16 (H, W)
    (index of the visible layer; 0 = background).
    """
    background = layers[0]
    xs = np.arange(width, dtype=np.float64)
    ys = np.arange(height, dtype=np.float64)[:, None]
    disparity = background.a * xs + (background.b * ys + background.c)
    labels = np.zeros((height, width), dtype=np.int16)
    image = np.ascontiguousarray(background.texture[:, :, :width])
    for index, layer in enumerate(layers[1:], start=1):
        h, w = layer.shape
        x_start, x_stop = max(layer.x0, 0), min(layer.x0 + w, width)
        if x_start >= x_stop:
            continue
        rows = slice(layer.y0, layer.y0 + h)
        cols = slice(x_start, x_stop)
        plane = layer.a * xs[cols] + (layer.b * ys[rows] + layer.c)
        region = disparity[rows, cols]
        local = slice(x_start - layer.x0, x_stop - layer.x0)
        assert layer.mask is not None
        wins = layer.mask[:, local] & (plane > region)
        np.copyto(region, plane, where=wins)
        np.copyto(labels[rows, cols], np.int16(index), where=wins)
        np.copyto(image[:, rows, cols], layer.texture[:, :, local], where=wins)
    return image, disparity, labels


def _render_right(layers: list[_Layer], height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-buffer the layers in the right view by the closed-form inverse map of each plane.

    Returns image float32 (3, H, W) RGB planes, disparity float64 (H, W) pixels, label int16 (H, W).
    """
    background = layers[0]
    xr = np.arange(width, dtype=np.float64)
    ys = np.arange(height, dtype=np.float64)[:, None]
    source = (xr + (background.b * ys + background.c)) * (1.0 / (1.0 - background.a))
    disparity = source - xr
    labels = np.zeros((height, width), dtype=np.int16)
    for index, layer in enumerate(layers[1:], start=1):
        h, w = layer.shape
        x_start, x_stop = layer.right_columns(width)
        if x_start >= x_stop:
            continue
        rows = slice(layer.y0, layer.y0 + h)
        cols = slice(x_start, x_stop)
        xl = (xr[cols] + (layer.b * ys[rows] + layer.c)) * (1.0 / (1.0 - layer.a))
        plane = xl - xr[cols]
        column = np.floor(xl + 0.5).astype(np.int32) - np.int32(layer.x0)
        inside = (column >= 0) & (column < w)
        np.clip(column, 0, w - 1, out=column)
        column += np.arange(h, dtype=np.int32)[:, None] * np.int32(w)
        assert layer.mask is not None
        region = disparity[rows, cols]
        wins = inside & np.take(layer.mask.ravel(), column) & (plane > region)
        np.copyto(region, plane, where=wins)
        np.copyto(labels[rows, cols], np.int16(index), where=wins)
        np.copyto(source[rows, cols], xl, where=wins)
    # texture lookup once per visible pixel: background everywhere, then each layer where it won
    all_rows = np.broadcast_to(np.arange(height, dtype=np.int32)[:, None], (height, width))
    image = _sample_texture(background.texture, all_rows, source)
    for index, layer in enumerate(layers[1:], start=1):
        h, w = layer.shape
        x_start, x_stop = layer.right_columns(width)
        if x_start >= x_stop:
            continue
        rows = slice(layer.y0, layer.y0 + h)
        cols = slice(x_start, x_stop)
        won = labels[rows, cols] == index
        row_index = np.nonzero(won)[0]
        if row_index.size == 0:
            continue
        values = _sample_texture(layer.texture, row_index, source[rows, cols][won] - layer.x0)
        image[:, rows, cols][:, won] = values
    return image, disparity, labels


def _occlusion_left(layers: list[_Layer], disparity: np.ndarray, labels: np.ndarray, max_disp: float) -> np.ndarray:
    """Left pixels whose point is outside the right image or covered there by a nearer layer."""
    height, width = disparity.shape
    xr = np.arange(width, dtype=np.float64)[None, :] - disparity
    occluded = (xr < -0.5) | (xr >= width - 0.5)
    for index, layer in enumerate(layers):
        h, w = layer.shape
        r_start, r_stop = layer.right_columns(width)
        x_start, x_stop = max(0, r_start - 1), min(width, r_stop + int(math.ceil(max_disp)) + 1)
        if r_start >= r_stop or x_start >= x_stop:
            continue
        rows = slice(layer.y0, layer.y0 + h)
        cols = slice(x_start, x_stop)
        xr_block = xr[rows, cols]
        ys = np.arange(layer.y0, layer.y0 + h, dtype=np.float64)[:, None]
        xl = (xr_block + (layer.b * ys + layer.c)) * (1.0 / (1.0 - layer.a))
        column = np.floor(xl + 0.5).astype(np.int64) - layer.x0
        hits = (column >= 0) & (column < w) & (xl - xr_block > disparity[rows, cols] + _DEPTH_EPS)
        hits &= labels[rows, cols] != index
        if layer.mask is not None:
            row_index = np.broadcast_to(np.arange(h)[:, None], column.shape)
            hits &= layer.mask[row_index, np.clip(column, 0, w - 1)]
        occluded[rows, cols] |= hits
    return occluded


def _occlusion_right(layers: list[_Layer], disparity: np.ndarray, labels: np.ndarray, max_disp: float) -> np.ndarray:
    """Right pixels whose point is outside the left image or covered there by a nearer layer."""
    height, width = disparity.shape
    xl = np.arange(width, dtype=np.float64)[None, :] + disparity
    occluded = (xl < -0.5) | (xl >= width - 0.5)
    for index, layer in enumerate(layers):
        h, w = layer.shape
        x_start = max(0, int(math.floor(layer.x0 - 0.5 - max_disp)) - 1)
        x_stop = min(width, layer.x0 + w + 1)
        if x_start >= x_stop:
            continue
        rows = slice(layer.y0, layer.y0 + h)
        cols = slice(x_start, x_stop)
        xl_block = xl[rows, cols]
        ys = np.arange(layer.y0, layer.y0 + h, dtype=np.float64)[:, None]
        plane = layer.a * xl_block + (layer.b * ys + layer.c)
        column = np.floor(xl_block + 0.5).astype(np.int64) - layer.x0
        hits = (column >= 0) & (column < w) & (plane > disparity[rows, cols] + _DEPTH_EPS)
        hits &= labels[rows, cols] != index
        if layer.mask is not None:
            row_index = np.broadcast_to(np.arange(h)[:, None], column.shape)
            hits &= layer.mask[row_index, np.clip(column, 0, w - 1)]
        occluded[rows, cols] |= hits
    return occluded


# ------------------------------------------------------------------------------- photometry


def _add_highlight(image: np.ndarray, x: float, y: float, radius: float, colour: np.ndarray) -> None:
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


def _quantise(image: np.ndarray) -> np.ndarray:
    """float32 (3, H, W) planes -> uint8 (H, W, 3), rounded and saturated."""
    return cv2.merge([np.clip(np.rint(plane), 0, 255).astype(np.uint8) for plane in image])


def _apply_photometry(
    config: SynthConfig, rng: np.random.Generator, left: np.ndarray, right: np.ndarray, disp_left: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Highlights, gain, gamma, blur, noise, gray, quantisation and JPEG.

    ``left``, ``right``: float32 (3, H, W) planes (not modified); returns uint8 (H, W, 3) RGB views.
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
            _add_highlight(left, x, y, radius, colour)
            _add_highlight(right, x - (surface + offset), y, radius, colour)
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
    left_u8, right_u8 = _quantise(left), _quantise(right)
    if rng.random() < config.jpeg_probability:
        low, high = config.jpeg_quality
        views = []
        for view in (left_u8, right_u8):
            quality = int(rng.integers(low, high + 1))
            ok, buffer = cv2.imencode(".jpg", np.ascontiguousarray(view[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
                raise OSError("JPEG encoding failed")
            views.append(np.ascontiguousarray(cv2.imdecode(buffer, cv2.IMREAD_COLOR)[:, :, ::-1]))
        left_u8, right_u8 = views
    return left_u8, right_u8


# ------------------------------------------------------------------------------------- public


def _render_scene(config: SynthConfig, seed: int) -> _Scene:
    """Render one scene and keep the internals (layer labels, unquantised views) for tests."""
    if seed < 0:
        raise InputError(f"seed ({seed}) must be >= 0")
    rng = np.random.default_rng(seed)
    layers = _build_layers(config, rng)
    height, width = config.height, config.width
    left, disp_left, labels_left = _render_left(layers, height, width)
    right, disp_right, labels_right = _render_right(layers, height, width)
    occ_left = _occlusion_left(layers, disp_left, labels_left, config.max_disp)
    occ_right = _occlusion_right(layers, disp_right, labels_right, config.max_disp)
    left_u8, right_u8 = _apply_photometry(config, rng, left, right, disp_left)
    pair = SynthPair(
        left=left_u8,
        right=right_u8,
        disp_left=disp_left.astype(np.float32),
        disp_right=disp_right.astype(np.float32),
        occ_left=occ_left,
        occ_right=occ_right,
    )
    return _Scene(pair, labels_left, labels_right, layers, left, right)


def render_pair(config: SynthConfig, seed: int) -> SynthPair:
    """Render one synthetic stereo pair; the same ``(config, seed)`` always gives the same arrays.

    Args:
        config: generator parameters.
        seed: any integer ``>= 0``.

    Returns:
        A :class:`SynthPair`: ``uint8`` (H, W, 3) RGB views, ``float32`` (H, W) disparities in
        pixels for both views, ``bool`` (H, W) occlusion masks (True = not visible in the other view).
    """
    return _render_scene(config, seed).pair


def pair_stream(config: SynthConfig, seed: int, worker_id: int = 0, num_workers: int = 1) -> Iterator[SynthPair]:
    """Endless pairs for training, reproducible from ``seed``.

    Worker ``worker_id`` of ``num_workers`` yields pairs ``worker_id, worker_id + num_workers, ...``
    of the global sequence, pair ``i`` being ``render_pair(config, pair_seed(seed, i))`` (the same
    pair as file ``i`` of ``write_synth_dataset(..., seed=seed)``). The workers' streams are disjoint and
    their union does not depend on ``num_workers``.
    """
    if num_workers < 1 or not 0 <= worker_id < num_workers:
        raise InputError(f"need 0 <= worker_id ({worker_id}) < num_workers ({num_workers})")
    index = worker_id
    while True:
        yield render_pair(config, pair_seed(seed, index))
        index += num_workers
