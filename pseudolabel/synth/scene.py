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

Modules: this one builds the layers and renders both views, their disparities and occlusions;
:mod:`pseudolabel.synth.textures` draws the textures and silhouettes, :mod:`pseudolabel.synth.photometry`
the differences between the cameras, and :mod:`pseudolabel.synth.config` holds :class:`SynthConfig` and
:class:`SynthPair` (both importable from here too).

Only numpy and OpenCV are used (no torch, no numba). One 512x256 pair takes a few tens of
milliseconds on one core (see ``benchmarks/synth_speed.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pseudolabel.errors import InputError
from pseudolabel.synth.config import (
    DATASET_FOLDERS,
    META_FORMAT,
    META_VERSION,
    SHAPES,
    TEXTURES,
    SynthConfig,
    SynthPair,
)
from pseudolabel.synth.photometry import apply_photometry
from pseudolabel.synth.textures import shape_mask, surface_texture

__all__ = [
    "DATASET_FOLDERS",
    "META_FORMAT",
    "META_VERSION",
    "SHAPES",
    "TEXTURES",
    "SynthConfig",
    "SynthPair",
    "pair_seed",
    "pair_stream",
    "render_pair",
]

#: A layer occludes another only when nearer by more than this (pixels): guards against rounding.
_DEPTH_EPS = 1e-6


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
        """(h, w) of the layer's raster, pixels."""
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


def _build_layers(config: SynthConfig, rng: np.random.Generator) -> list[_Layer]:
    """Background first, then objects; all rasters are cropped to the canvas."""
    height, width = config.height, config.width
    canvas_width = width + int(math.ceil(config.max_disp)) + 2
    background_box = (-0.5, canvas_width - 0.5, 0.0, height - 1.0)
    background_top = config.background_disp_fraction * config.max_disp
    a, b, c = _fit_plane(rng, background_box, (config.min_disp, background_top), config.max_slope)
    layers = [_Layer(a, b, c, 0, 0, surface_texture(rng, config, height, canvas_width), None)]

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
        mask = shape_mask(rng, kind, box_h, box_w)
        # crop to the canvas
        x_start, y_start = max(left, 0), max(top, 0)
        x_stop, y_stop = min(left + box_w, canvas_width), min(top + box_h, height)
        if x_stop - x_start < 1 or y_stop - y_start < 1:
            continue
        mask = np.ascontiguousarray(mask[y_start - top : y_stop - top, x_start - left : x_stop - left])
        if not mask.any():
            continue
        texture = surface_texture(rng, config, y_stop - y_start, x_stop - x_start)
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
    left_u8, right_u8 = apply_photometry(config, rng, left, right, disp_left)
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
