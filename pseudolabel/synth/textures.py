"""What a layer looks like: scalar texture fields, coloured surface textures and object silhouettes.

Every function draws its random numbers from the ``numpy.random.Generator`` it is given, in a fixed
order, so that a scene is a pure function of its seed (:func:`pseudolabel.synth.scene.render_pair`).
Textures are float32 in 8-bit units, channel-planar (3, h, w) RGB, so that the renderer can resample
each plane along a row; silhouettes are bool (h, w). numpy and OpenCV only.
"""

from __future__ import annotations

import cv2
import numpy as np

from pseudolabel.errors import InputError
from pseudolabel.synth.config import SHAPES, TEXTURES, SynthConfig


def fractal_field(rng: np.random.Generator, h: int, w: int, base_cell: float, persistence: float) -> np.ndarray:
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
    field: np.ndarray = rng.random((grid_h, grid_w), dtype=np.float32)
    amplitude = 1.0
    for _ in range(levels):
        grid_h, grid_w = 2 * grid_h, 2 * grid_w
        field = cv2.resize(field, (grid_w, grid_h), interpolation=cv2.INTER_CUBIC)
        amplitude *= persistence
        octave = rng.random((grid_h, grid_w), dtype=np.float32)
        octave *= np.float32(amplitude)
        np.add(field, octave, out=field)
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


def squash(field: np.ndarray, gain: float) -> np.ndarray:
    """Map a ~N(0, 1) field into [0, 1] smoothly."""
    return np.float32(0.5) + np.float32(0.5) * np.tanh(np.float32(gain) * field)


def texture_field(rng: np.random.Generator, kind: str, h: int, w: int) -> np.ndarray:
    """A scalar texture field in [0, 1], float32 (h, w), of the given kind."""
    if kind == "fractal":
        base = float(np.exp(rng.uniform(np.log(6.0), np.log(96.0))))
        return squash(fractal_field(rng, h, w, base, float(rng.uniform(0.45, 0.7))), float(rng.uniform(0.6, 1.5)))
    if kind == "noise":
        base = float(rng.uniform(2.0, 8.0))
        return squash(fractal_field(rng, h, w, base, float(rng.uniform(0.7, 0.95))), float(rng.uniform(0.8, 2.0)))
    if kind == "stripes":
        theta = float(rng.uniform(0, np.pi))
        period = float(np.exp(rng.uniform(np.log(3.0), np.log(40.0))))
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        phase = (xs * np.float32(np.cos(theta)) + ys * np.float32(np.sin(theta))) * np.float32(2 * np.pi / period)
        if rng.random() < 0.5:  # wavy stripes
            phase += np.float32(rng.uniform(0.5, 3.0)) * fractal_field(rng, h, w, float(rng.uniform(20, 80)), 0.3)
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
            tile: np.ndarray = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
            tile = cv2.resize(tile, (2 * tile_w, 2 * tile_h), interpolation=cv2.INTER_NEAREST)
        else:
            tile = rng.random((tile_h, tile_w), dtype=np.float32)
            if rng.random() < 0.5:
                tile = cv2.GaussianBlur(tile, (0, 0), 0.7)
        reps_y, reps_x = h // tile.shape[0] + 2, w // tile.shape[1] + 2
        tiled = np.tile(tile, (reps_y, reps_x))
        oy, ox = int(rng.integers(0, tile.shape[0])), int(rng.integers(0, tile.shape[1]))
        field = tiled[oy : oy + h, ox : ox + w]
        return np.clip(field + np.float32(0.04) * fractal_field(rng, h, w, 4.0, 0.5), 0.0, 1.0)
    if kind == "gradient":
        theta = float(rng.uniform(0, 2 * np.pi))
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        ramp = xs * np.float32(np.cos(theta)) + ys * np.float32(np.sin(theta))
        low, high = float(ramp.min()), float(ramp.max())
        ramp = (ramp - np.float32(low)) * np.float32(1.0 / max(high - low, 1.0))
        wobble = np.float32(0.08) * fractal_field(rng, h, w, float(rng.uniform(24, 96)), 0.3)
        return np.clip(ramp + wobble, 0.0, 1.0)
    if kind == "flat":
        amplitude = float(rng.uniform(0.002, 0.01))
        return np.float32(0.5) + np.float32(amplitude) * fractal_field(rng, h, w, 1.0, 0.5)
    raise InputError(f"unknown texture {kind!r}; choose from {list(TEXTURES)}")


def random_colour(rng: np.random.Generator, gray: bool) -> np.ndarray:
    """A uniform random RGB colour, float32 (3,) in 8-bit units [0, 255) (three equal values when ``gray``)."""
    if gray:
        return np.full(3, rng.uniform(0, 255), dtype=np.float32)
    return rng.uniform(0, 255, 3).astype(np.float32)


def surface_texture(rng: np.random.Generator, config: SynthConfig, h: int, w: int) -> np.ndarray:
    """A textured surface raster, channel-planar float32 (3, h, w) RGB in 8-bit units [0, 255]."""
    names = [entry[0] for entry in config.texture_mix]
    weights = np.array([float(entry[1]) for entry in config.texture_mix])
    kind = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    gray = bool(rng.random() < config.gray_layer_probability)
    field = np.ascontiguousarray(texture_field(rng, kind, h, w), dtype=np.float32)
    first = random_colour(rng, gray)
    second = random_colour(rng, gray)
    contrast = float(rng.uniform(0.15, 1.0)) if kind != "flat" else 1.0
    second = first + np.float32(contrast) * (second - first)
    delta = second - first
    # per-channel 2-D operations, merged once (much faster than broadcasting over (h, w, 3))
    texture = np.empty((3, h, w), dtype=np.float32)
    channels = [cv2.addWeighted(field, float(delta[c]), field, 0.0, float(first[c]), dst=texture[c]) for c in range(3)]
    if not gray and rng.random() < 0.3:  # a third colour driven by a second, smoother field
        third = random_colour(rng, False)
        mix = np.float32(0.6) * squash(fractal_field(rng, h, w, float(rng.uniform(16, 64)), 0.3), 1.0)
        keep = np.float32(1.0) - mix
        for c in range(3):
            channels[c] *= keep
            channels[c] += mix * third[c]
    if rng.random() < config.shading_probability:
        shade = np.float32(0.55) + np.float32(0.45) * squash(fractal_field(rng, h, w, float(rng.uniform(32, 128)), 0.35), 1.0)
        texture *= shade
    return texture


# ------------------------------------------------------------------------------------ shapes


def shape_mask(rng: np.random.Generator, kind: str, h: int, w: int) -> np.ndarray:
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
