"""What the synthetic generator takes and gives: :class:`SynthConfig` (every parameter, stored in
``meta.json``) and :class:`SynthPair` (one rendered pair with exact ground truth for both views).

Also the names the other modules of :mod:`pseudolabel.synth` share: the shape and texture kinds and
the on-disk layout's folder names and format tag. numpy only.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from pseudolabel.errors import InputError

#: Silhouette kinds of the foreground objects (:func:`pseudolabel.synth.textures.shape_mask`).
SHAPES: tuple[str, ...] = ("polygon", "ellipse", "blob", "thin")
#: Texture kinds of the layers (:func:`pseudolabel.synth.textures.texture_field`).
TEXTURES: tuple[str, ...] = ("fractal", "noise", "stripes", "tiles", "gradient", "flat")
#: Folders of a dataset written by :func:`pseudolabel.synth.files.write_synth_dataset`, one file per pair in each.
DATASET_FOLDERS: tuple[str, ...] = ("left", "right", "disp_left", "disp_right", "occ_left", "occ_right")
#: ``format`` and ``format_version`` of a dataset's ``meta.json``.
META_FORMAT: str = "pseudolabel-synth"
META_VERSION: int = 1

#: Largest accepted horizontal slope |a| of a plane: keeps x_l -> x_r monotonic and a warped pixel's
#: sources within +-2 texture samples (the bound stated in the tests).
MAX_SLOPE_LIMIT: float = 0.5


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
        """Check every field; all problems are reported together as one :class:`InputError`."""
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
        if not 0 <= self.max_slope < MAX_SLOPE_LIMIT:
            problems.append(f"max_slope ({self.max_slope}) must be in [0, {MAX_SLOPE_LIMIT})")
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
