"""The parameters of the SGM matcher (:class:`SGMParams`) and what it returns (:class:`SGMResult`).

Disparity convention: for a left pixel ``(y, x)`` with disparity ``d`` the matching right pixel is
``(y, x - d)``; searched disparities are ``min_disp <= d < max_disp`` pixels. No numba, no torch here:
every stage module imports these types.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from pseudolabel.errors import InputError

CostName = Literal["census", "ad", "bt", "ad_census"]
SubpixelName = Literal["parabola", "equiangular", "none"]


_FEWER_PATHS: dict[str, Any] = {"paths": 4, "census_width": 7, "census_height": 5, "fill_median_radius": 0, "fill_median_step": 1}
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # fewer paths, a smaller census and no edge-aware median after the hole filling
    "balanced": _FEWER_PATHS,
    # the same at half resolution (pseudolabel.sgm.downsampled)
    "fast": {**_FEWER_PATHS, "downsample": 2},
}


@dataclass(frozen=True)
class SGMParams:
    """Every parameter of :func:`match`. Defaults work on KITTI-like and Middlebury-like images.

    Attributes:
        min_disp: smallest searched disparity in pixels (may be negative).
        max_disp: one past the largest searched disparity in pixels (exclusive), any integer
            ``> min_disp``.
        cost: matching cost: ``census`` (Hamming distance of census transforms), ``ad``
            (absolute difference of intensities), ``bt`` (Birchfield-Tomasi sampling-insensitive AD)
            or ``ad_census`` (robust sum of both).
        census_width, census_height: census window in samples (odd, at most 64 bits in total).
        census_step: spacing of the census samples in pixels; 2 gives a sparse census whose window
            covers ``(2 * census_width - 1) x (2 * census_height - 1)`` pixels with the same bits.
        paths: number of aggregation directions: 4, 8 or 16.
        p1: penalty for a disparity change of one pixel between neighbours (cost units: one census bit).
        p2: penalty for larger disparity changes (``p2 > p1``); with ``p2_adaptive`` (the default) it
            is the penalty inside uniform regions and shrinks across intensity edges.
        p2_adaptive: divide ``p2`` by the intensity step along the path,
            ``p2 / (1 + |I(p) - I(p - r)| / p2_gamma)``, never below ``p1 + 1`` (Hirschmueller 2008).
        p2_gamma: intensity step (8-bit gray levels) that halves ``p2`` when ``p2_adaptive``.
        subpixel: sub-pixel refinement of the winner: ``parabola``, ``equiangular`` or ``none``.
        lr_max_diff: largest allowed difference in pixels between the left disparity and the
            right-view disparity at the matching point; negative disables the check.
        uniqueness: a pixel is unique when ``best_cost < uniqueness * second_best_cost``, the second
            best taken outside ``best +- 1``; 1.0 disables the test.
        median: side of the median filter applied to the disparity (0 or 1 = off, 3 or 5).
        speckle_size: connected regions of at most this many pixels whose disparities differ by at most
            ``speckle_range`` pixels from a neighbour are marked invalid (0 = off).
        speckle_range: disparity step in pixels that separates two speckle regions.
        fill_invalid: fill pixels that fail the checks in the dense ``disparity`` output from their
            left/right valid neighbours (the lower, background value, as in Hirschmueller 2008).
        fill_median_radius: after filling, each filled pixel takes the median of the disparities
            sampled every ``fill_median_step`` pixels in a ``(2 r + 1)^2`` window, among those whose
            left-image intensity is within ``fill_intensity_range`` of its own (an edge-aware median);
            0 = off.
        fill_median_step: sample spacing of that window in pixels.
        fill_intensity_range: intensity tolerance (8-bit gray levels) of that median.
        dense_median: side of a median filter applied to the whole dense output at the end (0, 1 = off,
            3 or 5); ``valid`` pixels keep this smoothed value too.
        ad_truncation: truncation of the AD/BT cost in 8-bit gray levels (``ad``, ``bt``, ``ad_census``).
        downsample: match at ``1 / downsample`` of the resolution (1 = full, 2 or 4) and enlarge the result
            to the input size (:mod:`pseudolabel.sgm.downsampled`); ``min_disp``, ``max_disp`` and
            ``speckle_size`` stay in input pixels, every other parameter applies at the reduced resolution.
    """

    min_disp: int = 0
    max_disp: int = 128
    cost: CostName = "census"
    census_width: int = 9
    census_height: int = 7
    census_step: int = 1
    paths: int = 8
    p1: int = 10
    p2: int = 400
    p2_adaptive: bool = True
    p2_gamma: float = 4.0
    subpixel: SubpixelName = "parabola"
    lr_max_diff: float = 2.0
    uniqueness: float = 0.95
    median: int = 3
    speckle_size: int = 50
    speckle_range: float = 1.0
    fill_invalid: bool = True
    fill_median_radius: int = 6
    fill_median_step: int = 3
    fill_intensity_range: float = 16.0
    dense_median: int = 5
    ad_truncation: int = 30
    downsample: int = 1

    @property
    def num_disp(self) -> int:
        """Number of searched disparity levels, ``max_disp - min_disp``."""
        return self.max_disp - self.min_disp

    def validate(self) -> None:
        """Raise :class:`InputError` for inconsistent values."""
        if not isinstance(self.min_disp, (int, np.integer)) or not isinstance(self.max_disp, (int, np.integer)):
            raise InputError("min_disp and max_disp must be integers")
        if self.max_disp <= self.min_disp:
            raise InputError(f"max_disp ({self.max_disp}) must be larger than min_disp ({self.min_disp})")
        if self.cost not in ("census", "ad", "bt", "ad_census"):
            raise InputError(f"unknown cost {self.cost!r}; use census, ad, bt or ad_census")
        if self.census_width % 2 == 0 or self.census_height % 2 == 0 or self.census_width < 1 or self.census_height < 1:
            raise InputError("census_width and census_height must be odd and positive")
        if self.census_width * self.census_height - 1 > 64:
            raise InputError("the census window has more than 64 comparisons; use at most 9x7 or 7x9")
        if not 1 <= self.census_step <= 4:
            raise InputError(f"census_step must be 1..4, not {self.census_step}")
        if self.paths not in (4, 8, 16):
            raise InputError(f"paths must be 4, 8 or 16, not {self.paths}")
        if not 0 <= self.p1 < self.p2 <= 1000:
            raise InputError(f"penalties must satisfy 0 <= p1 < p2 <= 1000 (got p1={self.p1}, p2={self.p2})")
        if not 0.0 < self.p2_gamma < float("inf"):
            raise InputError(f"p2_gamma must be a positive number of gray levels, not {self.p2_gamma}")
        if self.subpixel not in ("parabola", "equiangular", "none"):
            raise InputError(f"unknown subpixel {self.subpixel!r}; use parabola, equiangular or none")
        if not 0.0 < self.uniqueness <= 1.0:
            raise InputError(f"uniqueness must be in (0, 1], got {self.uniqueness}")
        if self.median not in (0, 1, 3, 5):
            raise InputError(f"median must be 0, 1, 3 or 5, not {self.median}")
        if self.dense_median not in (0, 1, 3, 5):
            raise InputError(f"dense_median must be 0, 1, 3 or 5, not {self.dense_median}")
        if not 0 <= self.fill_median_radius <= 15 or not 1 <= self.fill_median_step <= max(1, self.fill_median_radius):
            raise InputError("fill_median_radius must be 0..15 and fill_median_step 1..fill_median_radius")
        if self.speckle_size < 0 or self.speckle_range < 0:
            raise InputError("speckle_size and speckle_range must be >= 0")
        if not 1 <= self.ad_truncation <= 255:
            raise InputError("ad_truncation must be in [1, 255]")
        if self.downsample not in (1, 2, 4):
            raise InputError(f"downsample must be 1, 2 or 4, not {self.downsample}")

    def to_json(self) -> str:
        """The parameters as a JSON object (stored next to every output).

        ``downsample`` is left out when it is 1, so that files written before it existed keep their
        identity (a rerun resumes them).
        """
        values = dataclasses.asdict(self)
        if values["downsample"] == 1:
            del values["downsample"]
        return json.dumps(values, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SGMParams:
        """Inverse of :meth:`to_json`."""
        return cls(**json.loads(text))

    @classmethod
    def preset(cls, name: str = "default") -> SGMParams:
        """Named parameter sets (:data:`PRESETS`): ``default`` (the dataclass defaults), ``balanced`` (4 paths,
        a 7x5 census, no edge-aware median) and ``fast`` (``balanced`` at half resolution)."""
        if name not in PRESETS:
            raise InputError(f"unknown preset {name!r}; use {', '.join(PRESETS)}")
        return cls(**PRESETS[name])

    def replace(self, **changes: Any) -> SGMParams:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


@dataclass
class SGMResult:
    """Output of :func:`match`. All arrays have the left image's shape (H, W).

    Attributes:
        disparity: ``float32`` left-view disparity in pixels, dense (every pixel has a finite value;
            pixels failing the checks are filled when ``params.fill_invalid``).
        valid: ``bool``, True where the pixel passes the left-right check and the uniqueness test.
        disparity_right: ``float32`` right-view disparity in pixels (winner-takes-all on the same
            aggregated volume, sub-pixel refined), for ``x_left = x_right + d``.
        cost_best: ``float32`` aggregated cost of the winner (``c1``).
        cost_second: ``float32`` second smallest aggregated cost over all other disparities (``c2``).
        cost_second_local: ``float32`` smallest aggregated cost among the other *local minima* of the
            cost curve (``c2m``); equals the curve's maximum when there is no other local minimum.
        cost_mean: ``float32`` mean aggregated cost over the disparity range.
        disparity_wta: ``int16`` integer winner in pixels (``min_disp`` based), before refinement and filling.
        params: the parameters used.
        bands: horizontal bands the pair was matched in (1: the whole image at once; more when a memory
            budget made :func:`pseudolabel.sgm.tiled.match_tiled` cut it, which changes a few pixels near the cuts).
    """

    disparity: np.ndarray
    valid: np.ndarray
    disparity_right: np.ndarray
    cost_best: np.ndarray
    cost_second: np.ndarray
    cost_second_local: np.ndarray
    cost_mean: np.ndarray
    disparity_wta: np.ndarray
    params: SGMParams = field(default_factory=SGMParams)
    bands: int = 1

    FEATURES = ("cost_best", "cost_second", "cost_second_local", "cost_mean", "disparity_right")
