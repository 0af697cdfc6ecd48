"""Pictures of a proxies file (``pseudolabel show``): one PNG per picture and kind, and an HTML page.

For every selected pair, :func:`render_proxies` writes into ``out_dir``:

* ``<pair>_disparity.png`` -- the SGM proxy disparity in the package's disparity colours;
* ``<pair>_confidence.png`` -- the chosen confidence as a heat map (when the pair has one);
* ``<pair>_labels.png`` -- the labels over the left image (when the pair has labels);
* ``<pair>_error.png`` -- the error of the proxies (when the pair's ground truth is found);

each at full resolution with its colour bar underneath, where ``<pair>`` is the key made safe for a
file name (:func:`picture_stem`). ``index.html`` (:mod:`pseudolabel.viz.report`) shows the first
:data:`SHOW_REPORT_LIMIT` pairs with every picture, the colour bars, metrics, sparsification
curves and the reliability diagram with each measure's expected calibration error. numpy, OpenCV and h5py only (never torch); heavy modules are imported when a call runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from pseudolabel.errors import InputError
from pseudolabel.outputs import check_output_folder
from pseudolabel.progress import Progress, or_silent

#: Pairs shown in ``index.html`` at most (every selected pair still gets its PNG files).
SHOW_REPORT_LIMIT: int = 50

#: File suffix of each picture written per pair, by the title :func:`pseudolabel.viz.report.proxy_scene`
#: gives it (the confidence picture is found by its kind, since its title names the measure).
_SUFFIX_BY_TITLE: dict[str, str] = {"SGM proxy disparity": "disparity", "labels over the image": "labels", "error: SGM proxies": "error"}


@dataclass
class ShowSummary:
    """What :func:`render_proxies` wrote.

    Attributes:
        out_dir: the output folder.
        keys: the selected pair keys, in file order.
        pictures: every PNG written, in order.
        report: the HTML page (``out_dir / "index.html"``).
        shown: how many pairs the page shows (at most :data:`SHOW_REPORT_LIMIT`).
        warnings: one-line warnings (pairs that lack the chosen confidence measure).
        notes: one-line remarks on single pairs (``"<key>: left image ... not found"``).
    """

    out_dir: Path
    keys: list[str]
    pictures: list[Path] = field(default_factory=list)
    report: Path | None = None
    shown: int = 0
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def picture_stem(key: str) -> str:
    """A pair key made safe for a file name: every run of characters other than ``A-Z a-z 0-9 . _ -`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_") or "pair"


def render_proxies(
    proxies_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    measure: str = "ccnn",
    use_gt: bool = True,
    progress: Progress | None = None,
) -> ShowSummary:
    """Write the pictures of the selected pairs of a proxies file and their HTML page.

    Args:
        proxies_path: a proxies file written by ``pseudolabel sgm`` (and perhaps scored and labelled).
        out_dir: output folder (created; files of the same names are replaced).
        include: globs of the keys to draw (:func:`pseudolabel.selection.select_keys`; empty = all).
        exclude: globs of the keys to skip.
        measure: the confidence drawn as the heat map (``confidence/<measure>``); a pair without it
            shows its first stored measure, with a note.
        use_gt: read the ground truth each pair names (its ``gt_left`` attribute), when found, for the
            error maps, metrics and sparsification curves.
        progress: told of every pair drawn (phase ``"pictures"``); ``None`` reports nothing.

    Returns:
        A :class:`ShowSummary`.

    Raises:
        InputError: no such proxies file, ``out_dir`` is a file, the selection matches no pair, or a
            pair's ground truth has another size than the pair. Nothing is written then.
    """
    from dataclasses import replace

    from pseudolabel.io import write_image
    from pseudolabel.selection import select_keys
    from pseudolabel.store.proxies import open_proxies
    from pseudolabel.viz.colour import resize_for_display, with_colour_bar
    from pseudolabel.viz.report import MAX_PICTURE_WIDTH, SceneSection, proxy_scene, render_report, write_report

    proxies_path, out_dir = Path(proxies_path), Path(out_dir)
    if not proxies_path.is_file():
        raise InputError(f"{proxies_path}: no such file; give a proxies file written by `pseudolabel sgm`")
    check_output_folder(out_dir, "--out")
    report = or_silent(progress)
    sections: list[SceneSection] = []
    with open_proxies(proxies_path) as proxies:
        keys = select_keys(proxies.keys(), include, exclude, source=str(proxies_path))
        summary = ShowSummary(out_dir=out_dir, keys=keys)
        lacking = [key for key in keys if measure not in proxies.list_confidences(key) and proxies.list_confidences(key)]
        if lacking:
            summary.warnings.append(f"{len(lacking)} pair(s) have no confidence/{measure} (e.g. {lacking[0]}); their first stored measure is shown")
        out_dir.mkdir(parents=True, exist_ok=True)
        report.start("pictures", len(keys))
        try:
            for key in keys:
                full = proxy_scene(proxies, key, measure=measure, ground_truth=use_gt, max_width=0)
                legends = {legend.kind: legend.image for legend in full.legends}
                for picture in full.pictures:
                    suffix = _SUFFIX_BY_TITLE.get(picture.title, "confidence" if picture.kind == "confidence" else None)
                    if suffix is None:
                        continue
                    bar_kind = "disparity" if picture.kind == "labels" else picture.kind
                    path = out_dir / f"{picture_stem(key)}_{suffix}.png"
                    write_image(path, with_colour_bar(picture.image, legends[bar_kind]))
                    summary.pictures.append(path)
                if len(sections) < SHOW_REPORT_LIMIT:
                    shrunk = [
                        replace(picture, image=resize_for_display(picture.image, MAX_PICTURE_WIDTH, nearest=picture.kind == "error"))
                        for picture in full.pictures
                    ]
                    sections.append(replace(full, pictures=shrunk))
                summary.notes += [f"{key}: {note}" for note in full.notes[1:]]
                report.advance(1, key)
        finally:
            report.finish()
    intro = f'<p class="lead">Pictures of {len(sections)} of the {len(keys)} selected pairs of <code>{escape(str(proxies_path))}</code>.</p>'
    summary.report = out_dir / "index.html"
    write_report(summary.report, render_report(f"pseudolabel show: {proxies_path.name}", sections, intro_html=intro))
    summary.shown = len(sections)
    return summary
