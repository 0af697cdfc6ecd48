"""Proxies files of the shipped Middlebury fixtures, shared by the confidence, calibration and CLI tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pseudolabel.datasets import discover_pairs
from pseudolabel.io import read_image
from pseudolabel.sgm.matcher import match
from pseudolabel.sgm.params import SGMParams
from pseudolabel.store.journal import create_or_open_proxies
from pseudolabel.store.layout import pair_attributes, result_arrays

MIDDLEBURY = Path(__file__).parent / "data" / "middlebury"


def middlebury_proxies(path: Path, keys: Sequence[str] | None = None, max_disp: int = 32) -> Path:
    """Write the SGM proxies (``max_disp`` disparities) of the Middlebury fixtures (tsukuba, venus, Baby1;
    only ``keys`` when given) into ``path`` and return it."""
    params = SGMParams(max_disp=max_disp)
    with create_or_open_proxies(path, params) as proxies:
        for pair in discover_pairs([MIDDLEBURY]):
            if keys is not None and pair.key not in keys:
                continue
            result = match(read_image(pair.left), read_image(pair.right), params)
            attrs = pair_attributes(pair.key, pair.left, pair.right, params, result.disparity.shape, result.valid)
            proxies.write_pair(pair.key, result_arrays(result), {**attrs, "complete": True})
    return path
