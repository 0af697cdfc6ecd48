"""Tiled matching: images whose cost volume does not fit a memory budget, matched in horizontal bands.

:func:`pseudolabel.sgm.matcher.match` with ``max_memory`` calls :func:`match_tiled` when
:func:`required_memory` of the whole image exceeds the budget. The image is cut into horizontal bands
of *core* rows; each band is matched (cost, aggregation, winner-takes-all, sub-pixel refinement) with
``overlap`` extra rows above and below, and only its core rows are kept. Everything that looks at
neighbourhoods or whole rows and columns -- the median filters, the left-right check, speckle removal,
hole filling, the edge-aware median -- runs once on the stitched full-size maps, exactly as in the
untiled matcher.

What differs from untiled matching: the horizontal paths and the cost of every row are exact (a band
holds whole rows), but the vertical and diagonal paths of SGM start again at each band's first and last
row, so the aggregated costs near a cut differ slightly; ``overlap`` rows of context make the
difference negligible. Measured with the default of 128 rows (``BENCHMARKS.md``, *Tiled matching*):
Middlebury scenes come out identical even with a cut every 64 rows; the KITTI frame, where
low-texture regions let path costs carry differences far, with three cuts differs in 0.7% of its
float disparities (0.04 px in the median), 0.003% by more than 1 px, 0.02% of its integer winners
and 0.04% of its validity mask. With a budget that fits the whole image, the result is that of the
untiled matcher, bit for bit.

Memory model (:func:`estimate_memory`): the matcher holds the ``uint8`` cost volume and the ``uint16``
aggregated volume, 3 bytes per cell ``H * W * D`` (5 for ``ad_census``, which builds two ``uint8``
volumes and combines them), plus per-pixel maps (gray images, winners and cost features, both
disparities, and the eight directional maps of hole filling: :data:`PIXEL_BYTES` per pixel) and the
per-thread buffers of the diagonal aggregation (``32 * (D + 2)`` bytes per row and thread, modelled for
:data:`MODELLED_THREADS` threads) and the path-cost state of the raster passes (``12 * (W + H - 1) * (D + 18)`` bytes). A budget also pays for the two input images and
:data:`RUNTIME_RESERVE` bytes (the interpreter, NumPy, Numba, OpenCV and the compiled kernels), so
that ``max_memory`` bounds the peak memory of a process that matches one pair.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import numpy as np

from pseudolabel.errors import InputError
from pseudolabel.sgm import aggregation, cost, disparity
from pseudolabel.sgm.params import SGMParams, SGMResult

DEFAULT_OVERLAP = 128
"""Rows of context above and below each band (see the module docstring and ``BENCHMARKS.md``)."""

RUNTIME_RESERVE = 320 * 2**20
"""Bytes a budget sets aside for the interpreter, NumPy, Numba, OpenCV and the compiled kernels."""

MODELLED_THREADS = 8
"""Numba threads assumed by the memory model (the band layout must not depend on the machine)."""

PIXEL_BYTES = 120
"""Bytes per pixel of the full-size maps at the matcher's peak (hole filling): gray images (8), winners
and cost features (24), left and right disparities (12), validity (2), the eight directional maps of
hole filling (32) plus one per thread in flight (4 per modelled thread), the filled map (4), and
temporaries of speckle removal and the medians."""

BAND_PIXEL_BYTES = 64
"""Bytes per pixel of a band besides its volumes: census transforms with their padding (20), winners
(24), sub-pixel disparities (8) and temporaries."""

STITCHED_PIXEL_BYTES = 44
"""Bytes per pixel of the full-size maps that tiled matching fills band by band: gray images (8),
winners and cost features (24), left and right sub-pixel disparities (8), and the output index (4)."""


def cell_bytes(params: SGMParams) -> int:
    """Bytes per cost-volume cell: ``uint8`` cost and ``uint16`` aggregated cost (3), 5 for ``ad_census``."""
    return 5 if params.cost == "ad_census" else 3


def _raster_state_bytes(rows: int, width: int, params: SGMParams) -> int:
    """Path-cost state of the two raster passes of :func:`pseudolabel.sgm.aggregation.aggregate_raster_and_select`:
    per pass one ``int16`` curve of ``D + 2 + RASTER_SHIFT_ROOM`` values per scanline of three
    directions, ``width + rows - 1`` scanlines each (affine in ``rows``)."""
    return 2 * 3 * (width + rows - 1) * (params.num_disp + 2 + aggregation.RASTER_SHIFT_ROOM) * 2


def _scratch_bytes(rows: int, width: int, params: SGMParams) -> int:
    """Per-thread buffers of :func:`pseudolabel.sgm.aggregation.aggregate_direction_pair` for ``rows`` rows,
    plus :func:`_raster_state_bytes`."""
    return MODELLED_THREADS * 2 * 16 * (params.num_disp + 2) * rows + _raster_state_bytes(rows, width, params)


def _band_bytes(rows: int, width: int, params: SGMParams) -> int:
    """Bytes of matching a band of ``rows`` rows besides the full-size maps."""
    return rows * width * (params.num_disp * cell_bytes(params) + BAND_PIXEL_BYTES) + _scratch_bytes(rows, width, params)


def estimate_memory(height: int, width: int, params: SGMParams) -> int:
    """Peak bytes of the arrays that untiled matching of an ``height x width`` pair allocates.

    ``cell_bytes(params)`` (3, or 5 for ``ad_census``) per cell of the ``H * W * D`` volume,
    :data:`PIXEL_BYTES` per pixel, and the aggregation's per-thread buffers. A 1241x376 KITTI pair at
    192 disparities needs about 0.33 GB; a 6000x4000 pair at 256 disparities about 21 GB.
    Not counted: the input images and the interpreter (see :func:`required_memory`).
    """
    pixels = height * width
    return pixels * params.num_disp * cell_bytes(params) + pixels * PIXEL_BYTES + _scratch_bytes(height, width, params)


def required_memory(height: int, width: int, params: SGMParams, image_bytes: int = 0) -> int:
    """The smallest ``max_memory`` that matches the pair without tiling: :func:`estimate_memory` plus the
    images (``image_bytes``, both together) and :data:`RUNTIME_RESERVE`."""
    return estimate_memory(height, width, params) + image_bytes + RUNTIME_RESERVE


@dataclass(frozen=True)
class Band:
    """One band of a tiled match: rows ``top:bottom`` are matched, rows ``start:stop`` are kept."""

    start: int
    stop: int
    top: int
    bottom: int

    @property
    def rows(self) -> int:
        """Rows matched (core plus overlap)."""
        return self.bottom - self.top


def _tiled_bytes(height: int, width: int, params: SGMParams, band_rows: int, image_bytes: int) -> int:
    """Peak of a tiled match whose largest band has ``band_rows`` rows: the bands' stage or the finishing stage."""
    pixels = height * width
    banded = pixels * STITCHED_PIXEL_BYTES + _band_bytes(band_rows, width, params)
    return max(banded, pixels * PIXEL_BYTES) + image_bytes + RUNTIME_RESERVE


def smallest_budget(height: int, width: int, params: SGMParams, overlap: int = DEFAULT_OVERLAP, image_bytes: int = 0) -> int:
    """The smallest ``max_memory`` that matches the pair at all: bands of one core row (slow, but it works)."""
    rows = min(height, 1 + 2 * overlap)
    return min(required_memory(height, width, params, image_bytes), _tiled_bytes(height, width, params, rows, image_bytes))


def format_size(size: int) -> str:
    """``size`` bytes as ``--max-memory`` takes it, rounded up to whole MiB (``2776M``), and in GiB."""
    mib = math.ceil(size / 2**20)
    return f"{mib}M ({mib / 1024:.2f} GiB)"


def _mib(size: int) -> str:
    """``size`` bytes in MiB as written by a user: ``100M``, or ``0.5M`` when not a whole number."""
    return f"{size // 2**20}M" if size % 2**20 == 0 else f"{size / 2**20:.1f}M"


def plan_bands(height: int, width: int, params: SGMParams, max_memory: int, overlap: int = DEFAULT_OVERLAP, image_bytes: int = 0) -> list[Band]:
    """The bands of a match within ``max_memory`` bytes: one band (the whole image) when it fits.

    Bands get nearly equal cores, as large as the budget allows, and ``overlap`` rows of context on
    each side inside the image. The layout depends only on the arguments (not on the machine).

    Raises:
        InputError: the budget is too small even for bands of one core row; the message names
        :func:`smallest_budget`.
    """
    if overlap < 0:
        raise InputError(f"overlap must be >= 0, not {overlap}")
    if required_memory(height, width, params, image_bytes) <= max_memory:
        return [Band(0, height, 0, height)]
    pixels = height * width
    # a band's bytes: a fixed part (of the raster state) plus a part proportional to its rows
    fixed = _raster_state_bytes(0, width, params)
    available = max_memory - image_bytes - RUNTIME_RESERVE - pixels * STITCHED_PIXEL_BYTES - fixed
    per_row = _band_bytes(1, width, params) - fixed
    fitting_rows = available // per_row if available > 0 else 0
    core = min(height, fitting_rows - 2 * overlap)
    if core < 1 or pixels * PIXEL_BYTES + image_bytes + RUNTIME_RESERVE > max_memory:
        least = smallest_budget(height, width, params, overlap, image_bytes)
        raise InputError(
            f"max_memory {_mib(max_memory)} is too small to match a {width}x{height} pair with "
            f"{params.num_disp} disparities: the smallest budget that works is {format_size(least)}"
        )
    count = math.ceil(height / core)
    cuts = [round(i * height / count) for i in range(count + 1)]
    return [Band(start, stop, max(0, start - overlap), min(height, stop + overlap)) for start, stop in zip(cuts[:-1], cuts[1:])]


def match_tiled(
    left: np.ndarray,
    right: np.ndarray,
    params: SGMParams,
    max_memory: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    bands: list[Band] | None = None,
) -> SGMResult:
    """Match a rectified pair band by band (see the module docstring).

    Args:
        left, right: the pair, as for :func:`pseudolabel.sgm.matcher.match` (checked there).
        params: validated parameters.
        max_memory: budget in bytes that chooses the bands (:func:`plan_bands`).
        overlap: rows of context above and below each band.
        bands: explicit bands instead of ``max_memory`` (tests and experiments).

    Returns:
        The :class:`SGMResult` of the whole image.
    """
    height, width = left.shape[:2]
    if bands is None:
        if max_memory is None:
            raise InputError("match_tiled needs max_memory or bands")
        bands = plan_bands(height, width, params, max_memory, overlap, left.nbytes + right.nbytes)
    left_gray = cost.prepare_image(left)
    right_gray = cost.prepare_image(right)
    winners = disparity.allocate_winners(height, width)
    left_raw = np.empty((height, width), dtype=np.float32)
    right_disparity = np.empty((height, width), dtype=np.float32)
    # one pair of volume buffers for all bands: row slices of a C-contiguous array are C-contiguous
    most = max(band.rows for band in bands)
    shape = (most, width, params.num_disp)
    cost_buffer: np.ndarray | None = np.empty(shape, dtype=np.uint8) if params.cost == "census" else None
    aggregated_buffer: np.ndarray | None = np.empty(shape, dtype=np.uint16)
    for band in bands:
        rows = band.rows
        band_left = left_gray[band.top : band.bottom]
        cost_volume = cost.compute_cost(
            band_left, right_gray[band.top : band.bottom], params, out=None if cost_buffer is None else cost_buffer[:rows]
        )
        assert aggregated_buffer is not None
        aggregated, band_winners = aggregation.aggregate_and_select(cost_volume, band_left, params, out=aggregated_buffer[:rows])
        del cost_volume
        keep = slice(band.start - band.top, band.stop - band.top)
        core = slice(band.start, band.stop)
        for name in ("index", "cost_best", "cost_second", "cost_second_far", "cost_second_local", "cost_mean", "index_right"):
            getattr(winners, name)[core] = getattr(band_winners, name)[keep]
        # the sub-pixel disparities of both views, refined inside the last aggregation pass
        assert band_winners.disparity is not None and band_winners.disparity_right is not None
        left_raw[core] = band_winners.disparity[keep]
        right_disparity[core] = band_winners.disparity_right[keep]
        del aggregated, band_winners
    del cost_buffer, aggregated_buffer
    from pseudolabel.sgm.matcher import finish_matching

    return dataclasses.replace(finish_matching(left_raw, right_disparity, winners, left_gray, params), bands=len(bands))


_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}


def parse_size(text: str | int) -> int:
    """Bytes from a size such as ``4G``, ``512M``, ``2.5GiB`` or ``3000000``.

    ``K``, ``M``, ``G``, ``T`` (also written ``KiB`` ... ``TiB``) are powers of 1024; ``KB``, ``MB``, ``GB``,
    ``TB`` powers of 1000; a plain number is bytes. Case does not matter.

    Raises:
        InputError: anything else, or a size that is not positive.
    """
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        size = int(text)
    else:
        found = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?(?:i?b)?)\s*", str(text), flags=re.IGNORECASE)
        unit = found.group(2).lower() if found else ""
        unit = unit[0] if len(unit) == 3 and unit.endswith("ib") else unit
        if found is None or unit not in _UNITS:
            raise InputError(f"memory size {text!r}: write a number with K, M, G or T, e.g. 4G or 512M")
        size = int(float(found.group(1)) * _UNITS[unit])
    if size <= 0:
        raise InputError(f"memory size {text!r} must be positive")
    return size
