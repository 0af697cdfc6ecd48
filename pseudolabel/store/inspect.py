"""What a proxies file holds, as the text ``pseudolabel inspect`` prints: format, SGM parameters, one
row per pair (size, disparity range, valid density, datasets) and an unfinished run's journal.

Imports h5py and numpy only (never torch).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from pseudolabel.store.journal import journal_entries
from pseudolabel.store.layout import LABELS, RESULT_DATASETS, STORES
from pseudolabel.store.names import journal_path
from pseudolabel.store.proxies import ProxyFile, open_proxies
from pseudolabel.store.shards import shards_path

# Pairs listed without ``show_all``.
FIRST_PAIRS = 20


def describe_proxies(path: str | os.PathLike[str], show_all: bool = False) -> str:
    """The report of a proxies file, one line per ``\\n``-separated line (no trailing newline).

    Args:
        path: a proxies HDF5 file written by ``pseudolabel sgm`` (or :func:`pseudolabel.sgm.batch.run_sgm`).
        show_all: list every pair instead of the first :data:`FIRST_PAIRS`.

    Returns:
        The header (format, version, creator, size in MiB), the SGM parameters, a table of pairs
        (key, width x height in pixels, searched disparity range in pixels, fraction of valid pixels,
        datasets; the ``labels`` coverage as a fraction of finite pixels), the mean valid density and,
        when ``<path>.journal/`` holds finished pairs, how to finish that run.

    Raises:
        InputError: the file is missing, corrupt, locked or not a proxies file.
    """
    path = Path(path)
    lines: list[str] = []
    with open_proxies(path) as proxies:
        lines += _header(proxies, path)
        keys = proxies.keys()
        lines.append(f"{len(keys)} pairs")
        shown = keys if show_all else keys[:FIRST_PAIRS]
        lines += _table(proxies, shown)
        if len(shown) < len(keys):
            lines.append(f"  ... {len(keys) - len(shown)} more (--all lists them)")
        if keys:
            lines.append(
                f"  (sgm = {', '.join(STORES.get(proxies.store, tuple(RESULT_DATASETS)))}; valid = fraction passing the left-right and uniqueness checks)"
            )
            densities = [float(proxies.pair_attrs(key).get("valid_fraction", 0.0)) for key in keys]
            lines.append(f"mean valid density {np.mean(densities):.1%} over {len(keys)} pairs")
    journal = journal_path(path)
    if journal.is_dir():
        pending = len(journal_entries(journal))
        if pending:
            lines.append(f"unfinished run: {pending} finished pairs wait in {journal}; rerun the same `pseudolabel sgm` command to finish it")
    return "\n".join(lines)


def _header(proxies: ProxyFile, path: Path) -> list[str]:
    """Format line, SGM parameters and the per-pair range note."""
    attrs = proxies.attrs
    size_mib = path.stat().st_size / 2**20
    fields = " ".join(f"{name}={value}" for name, value in dataclasses.asdict(proxies.sgm_params).items())
    lines = [
        f"{path}: {attrs.get('format')} v{attrs.get('format_version')}, {attrs.get('created_by')}, {size_mib:.1f} MiB",
        f"SGM parameters: {fields}"
        if not attrs.get("sgm_params_placeholder")
        else f"SGM parameters: none, the disparities were imported ({attrs.get('disparity_source')})",
    ]
    if proxies.max_disp_from_calib:
        lines.append("  max_disp per pair from the dataset (Middlebury calib.txt ndisp) where given")
    if proxies.store != "full":
        lines.append(f"store {proxies.store}: only {', '.join(STORES.get(proxies.store, ()))} kept per pair")
    if proxies.shard_size is not None:
        shards = sorted(shards_path(path).glob("*.h5"))
        shard_mib = sum(shard.stat().st_size for shard in shards) / 2**20
        lines.append(f"sharded: {len(shards)} shards of up to {proxies.shard_size} pairs in {shards_path(path)}, {shard_mib:.1f} MiB")
    return lines


def _datasets_cell(proxies: ProxyFile, key: str) -> str:
    """``sgm`` (naming missing result datasets) followed by the other datasets; labels with their coverage."""
    names = proxies.datasets(key)
    missing = [name for name in STORES.get(proxies.store, tuple(RESULT_DATASETS)) if name not in names]
    described = ["sgm" + (f" (missing {', '.join(missing)})" if missing else "")]
    for name in names:
        if name in RESULT_DATASETS:
            continue
        if name == LABELS:
            labels = proxies.read(key, [LABELS])[LABELS]
            described.append(f"labels ({np.count_nonzero(np.isfinite(labels)) / max(1, labels.size):.1%})")
        else:
            described.append(name)
    return ", ".join(described)


def _table(proxies: ProxyFile, keys: list[str]) -> list[str]:
    """One left-aligned row per pair under a heading row, each indented by two spaces."""
    rows = [("key", "size (WxH)", "disparities", "valid", "datasets")]
    for key in keys:
        pair = proxies.pair_attrs(key)
        rows.append(
            (
                key,
                f"{pair['width']}x{pair['height']}",
                f"[{pair['min_disp']}, {pair['max_disp']})",
                f"{pair.get('valid_fraction', float('nan')):.1%}",
                _datasets_cell(proxies, key),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
