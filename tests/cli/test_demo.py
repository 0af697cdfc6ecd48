"""``pseudolabel demo`` and ``pseudolabel show``, the HTML report and the colour maps.

The demo runs end to end on one small shipped scene (Middlebury v2 tsukuba) with a tiny network and
two adaptation steps; the report it writes must embed every picture it references.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from pseudolabel.cli.main import main
from pseudolabel.confidence.sparsification import DEFAULT_FRACTIONS
from pseudolabel.io import read_disparity, read_image
from pseudolabel.sgm.matcher import match
from pseudolabel.sgm.params import SGMParams
from pseudolabel.store.journal import create_or_open_proxies
from pseudolabel.store.layout import pair_attributes, result_arrays
from pseudolabel.store.proxies import open_proxies
from pseudolabel.viz.colour import (
    CONFIDENCE_COLORMAP,
    DISPARITY_COLORMAP,
    ERROR_BINS,
    apply_colormap,
    colour_bar,
    display_range,
    error_image,
    labels_overlay,
)
from pseudolabel.viz.plots import sparsification_svg
from pseudolabel.viz.report import (
    Picture,
    SceneSection,
    dense_metrics,
    png_data_uri,
    proxy_scene,
    render_report,
)

FIXTURES = Path(__file__).parents[1] / "data"
TSUKUBA = FIXTURES / "middlebury" / "tsukuba"


# ----------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """The demo sets torch's thread count for its process; restore it for the other tests."""
    import torch

    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


class _References(HTMLParser):
    """Every image and every attribute that could reference another file."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.references: list[tuple[str, str, str]] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        values = {name: value or "" for name, value in attrs}
        if tag == "img":
            self.images.append(values)
        for name in ("src", "href", "srcset", "data", "poster", "xlink:href", "action"):
            if name in values:
                self.references.append((tag, name, values[name]))


def embedded_images(html: str) -> list[np.ndarray]:
    """Decode every <img> of ``html``; fail unless each is an embedded PNG of the declared size and
    nothing else outside the page is referenced."""
    parser = _References()
    parser.feed(html)
    assert "script" not in parser.tags and "link" not in parser.tags and "iframe" not in parser.tags
    assert "url(" not in html and "@import" not in html
    for tag, name, value in parser.references:
        if tag == "a" and name == "href":
            assert value.startswith("#"), f"link out of the page: {value}"
        elif not (tag == "img" and name == "src"):
            raise AssertionError(f"unexpected reference <{tag} {name}={value[:60]}>")
    decoded = []
    for image in parser.images:
        source = image["src"]
        assert source.startswith("data:image/png;base64,"), source[:60]
        payload = base64.b64decode(source.split(",", 1)[1], validate=True)
        assert payload[:8] == b"\x89PNG\r\n\x1a\n"
        picture = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_UNCHANGED)
        assert picture is not None
        assert picture.shape[1] == int(image["width"]) and picture.shape[0] == int(image["height"])
        decoded.append(picture)
    assert not re.search(r"(?:src|href)\s*=\s*[\"'](?:https?:|file:|//)", html)
    return decoded


def _proxies_with_labels(path: Path, keys: tuple[str, ...] = ("tsukuba",), max_disp: int = 32, scored: bool = True) -> Path:
    """A proxies file of Middlebury fixtures with (when ``scored``) two conventional confidences and labels (no torch)."""
    from pseudolabel.confidence.labels import threshold_labels
    from pseudolabel.confidence.measures import compute_measure
    from pseudolabel.datasets import discover_pairs

    params = SGMParams(max_disp=max_disp)
    with create_or_open_proxies(path, params) as proxies:
        for pair in discover_pairs([FIXTURES / "middlebury"]):
            if pair.key not in keys:
                continue
            result = match(read_image(pair.left), read_image(pair.right), params)
            attrs = pair_attributes(pair.key, pair.left, pair.right, params, result.disparity.shape, result.valid, pair.gt_left, pair.gt_scale)
            proxies.write_pair(pair.key, result_arrays(result), {**attrs, "complete": True})
            if not scored:
                continue
            features = proxies.read(pair.key)
            for measure in ("apkr", "lrc"):
                proxies.write(pair.key, f"confidence/{measure}", compute_measure(measure, features, params))
            confidence = proxies.read(pair.key, ["confidence/apkr"])["confidence/apkr"]
            proxies.write(pair.key, "labels", threshold_labels(features["disparity"], confidence, 0.5), attrs={"tau": 0.5, "measure": "apkr"})
    return path


@pytest.fixture(scope="module")
def small_proxies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _proxies_with_labels(tmp_path_factory.mktemp("show") / "proxies.h5")


# ----------------------------------------------------------------------------------------------
# colour maps


def test_apply_colormap_ends_and_unknown_values() -> None:
    values = np.array([[0.0, 10.0, np.nan, 20.0, np.inf]], np.float32)
    picture = apply_colormap(values, 0.0, 10.0, DISPARITY_COLORMAP)
    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[None, :], DISPARITY_COLORMAP)[0, :, ::-1]
    assert picture.dtype == np.uint8 and picture.shape == (1, 5, 3)
    assert np.array_equal(picture[0, 0], lut[0]) and np.array_equal(picture[0, 1], lut[255])
    assert np.array_equal(picture[0, 3], lut[255])  # clipped above the range
    assert not picture[0, 2].any() and not picture[0, 4].any()  # unknown = black


def test_display_range_prefers_the_first_map_with_values() -> None:
    ground_truth = np.full((10, 10), np.nan, np.float32)
    ground_truth[:5] = 30.0
    proxy = np.full((10, 10), 90.0, np.float32)
    assert display_range(ground_truth, proxy) == (0.0, 32.0)
    assert display_range(None, np.full((3, 3), np.nan), proxy) == (0.0, 92.0)
    assert display_range(np.full((2, 2), np.nan)) == (0.0, 4.0)


def test_error_image_classes() -> None:
    ground_truth = np.array([[10, 10, 10, 10, 10, 10, 10, np.nan, 10]], np.float32)
    disparity = np.array([[10.2, 10.8, 11.5, 12.9, 14, 19, 30, 10, np.nan]], np.float32)
    picture = error_image(disparity, ground_truth)
    expected = [colour for _, colour in ERROR_BINS]
    for column, colour in enumerate(expected):
        assert tuple(picture[0, column]) == colour, column
    assert not picture[0, 7].any()  # no ground truth: black
    assert tuple(picture[0, 8]) == (60, 60, 60)  # ground truth but no estimate: dark gray


def test_labels_overlay_keeps_the_image_where_there_is_no_label() -> None:
    image = np.full((4, 6, 3), 200, np.uint8)
    labels = np.full((4, 6), np.nan, np.float32)
    labels[1, 2] = 8.0
    picture = labels_overlay(image, labels, 0.0, 16.0, background=0.5)
    assert tuple(picture[0, 0]) == (100, 100, 100)
    assert np.array_equal(picture[1, 2], apply_colormap(np.array([[8.0]]), 0.0, 16.0, DISPARITY_COLORMAP)[0, 0])
    assert labels_overlay(None, labels, 0, 16)[0, 0].sum() == 0


def test_colour_bar_shows_the_colour_map_from_low_to_high() -> None:
    bar = colour_bar(0.0, 1.0, CONFIDENCE_COLORMAP, "confidence", width=300)
    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[None, :], CONFIDENCE_COLORMAP)[0, :, ::-1]
    inside = bar[24, 14:286]  # a row across the bar (14 px margins)
    assert np.array_equal(inside[0], lut[0]) and np.array_equal(inside[-1], lut[255])
    assert np.array_equal(inside[len(inside) // 2], lut[128]) or np.array_equal(inside[len(inside) // 2], lut[127])


def test_sparsification_svg_draws_one_line_per_curve() -> None:
    curves = {"ccnn": np.linspace(0.0, 0.1, 20), "apkr": np.linspace(0.02, 0.1, 20)}
    svg = sparsification_svg(curves, DEFAULT_FRACTIONS, aucs={"ccnn": 0.031, "apkr": 0.05}, optimal=np.zeros(20), title="t <1>")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<polyline") == 3 and "ccnn 3.10" in svg and "t &lt;1&gt;" in svg
    first = re.search(r'<polyline points="([^"]+)"', svg).group(1).split()
    assert len(first) == 20


# ----------------------------------------------------------------------------------------------
# report


def test_pictures_and_report_do_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, pseudolabel.viz.colour, pseudolabel.viz.report, pseudolabel.cli.demo; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_report_embeds_every_picture() -> None:
    rng = np.random.default_rng(0)
    pictures = [Picture(f"p{i}", rng.integers(0, 255, (5 + i, 7, 3), dtype=np.uint8), kind="disparity") for i in range(3)]
    section = SceneSection("a/b", pictures=pictures, legends=[Picture("bar", colour_bar(0, 1, CONFIDENCE_COLORMAP, "c"))])
    html = render_report("title", [section, SceneSection("c", pictures=pictures[:1])], summary_rows=[["", "x"], ["row", "1"]])
    decoded = embedded_images(html)
    assert len(decoded) == 5
    assert np.array_equal(decoded[1][:, :, ::-1], pictures[1].image)  # lossless round trip (RGB)
    assert png_data_uri(pictures[0].image) in html


def test_proxy_scene_metrics_match_the_stored_arrays(small_proxies: Path) -> None:
    with open_proxies(small_proxies) as proxies:
        section = proxy_scene(proxies, "tsukuba", measure="apkr")
        arrays = proxies.read("tsukuba", ["disparity", "labels"])
    ground_truth = read_disparity(TSUKUBA / "groundtruth.png", 16.0)
    ground_truth[ground_truth <= 0] = np.nan
    expected = dense_metrics(arrays["disparity"], ground_truth)
    assert section.metrics["SGM proxies"] == pytest.approx(expected)
    labels = section.metrics["labels (tau 0.5)"]
    labelled = np.isfinite(arrays["labels"])
    assert labels["density"] == pytest.approx(100 * labelled.mean())
    known = labelled & np.isfinite(ground_truth)
    assert labels["bad3"] == pytest.approx(100 * np.mean(np.abs(arrays["labels"][known] - ground_truth[known]) > 3))
    assert labels["bad3"] < section.metrics["SGM proxies"]["bad3"]  # the confident pixels are the better ones
    titles = [picture.title for picture in section.pictures]
    assert titles[:4] == ["left image", "SGM proxy disparity", "confidence (apkr)", "labels over the image"]
    assert len(section.svgs) == 2 and "apkr" in section.svgs[0] and "lrc" in section.svgs[0]  # curves, then reliability


# ----------------------------------------------------------------------------------------------
# show


def test_show_writes_pictures_with_colour_bars_and_a_self_contained_page(small_proxies: Path, tmp_path: Path) -> None:
    out = tmp_path / "pictures"
    result = CliRunner().invoke(main, ["show", str(small_proxies), "--out", str(out), "--measure", "apkr"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    names = sorted(path.name for path in out.iterdir())
    assert names == ["index.html", "tsukuba_confidence.png", "tsukuba_disparity.png", "tsukuba_error.png", "tsukuba_labels.png"]
    with open_proxies(small_proxies) as proxies:
        disparity = proxies.read("tsukuba", ["disparity"])["disparity"]
    picture = read_image(out / "tsukuba_disparity.png")
    height, width = disparity.shape
    assert picture.shape == (height + 4 + 52, width, 3)
    ground_truth = read_disparity(TSUKUBA / "groundtruth.png", 16.0)
    low, high = display_range(np.where(ground_truth > 0, ground_truth, np.nan))
    assert np.array_equal(picture[:height], apply_colormap(disparity, low, high, DISPARITY_COLORMAP))
    decoded = embedded_images((out / "index.html").read_text())
    assert len(decoded) >= 8  # left, proxy, confidence, labels, ground truth, 2 error maps, legends


def test_show_draws_what_a_bare_sgm_file_has(tmp_path: Path) -> None:
    path = _proxies_with_labels(tmp_path / "bare.h5", keys=("venus",), scored=False)
    out = tmp_path / "pictures"
    result = CliRunner().invoke(main, ["show", str(path), "--out", str(out), "--no-gt"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "venus_disparity.png"]
    html = (out / "index.html").read_text()
    assert len(embedded_images(html)) == 3 and "<svg" not in html  # left image, proxy, disparity colour bar


def test_show_errors_are_one_line(small_proxies: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(main, ["show", str(tmp_path / "nope.h5"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 1 and missing.output.count("\n") == 1 and "pseudolabel sgm" in missing.output
    unmatched = runner.invoke(main, ["show", str(small_proxies), "--pair", "kitti*", "--out", str(tmp_path / "o")])
    assert unmatched.exit_code == 1 and unmatched.output.count("\n") == 1 and "pseudolabel inspect" in unmatched.output
    assert not (tmp_path / "o").exists()


def test_show_selects_pairs_with_keys_and_exclude(tmp_path: Path) -> None:
    path = _proxies_with_labels(tmp_path / "two.h5", keys=("tsukuba", "venus"), scored=False)
    runner = CliRunner()
    chosen = runner.invoke(main, ["show", str(path), "--out", str(tmp_path / "a"), "--keys", "ven*", "--no-gt"], catch_exceptions=False)
    assert chosen.exit_code == 0, chosen.output
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["index.html", "venus_disparity.png"]
    assert "wrote 1 pictures of 1 pair(s)" in chosen.output
    rest = runner.invoke(main, ["show", str(path), "--out", str(tmp_path / "b"), "--exclude", "venus", "--no-gt"], catch_exceptions=False)
    assert rest.exit_code == 0, rest.output
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["index.html", "tsukuba_disparity.png"]
    # --pair: the deprecated spelling of --keys, hidden from the help, still selects
    alias = runner.invoke(main, ["show", str(path), "--out", str(tmp_path / "c"), "--pair", "tsukuba", "--no-gt"], catch_exceptions=False)
    assert alias.exit_code == 0, alias.output
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["index.html", "tsukuba_disparity.png"]
    assert "--pair is deprecated" in alias.output
    help_text = runner.invoke(main, ["show", "--help"]).output
    assert "--keys" in help_text and "--exclude" in help_text and "--pair" not in help_text
    nothing = runner.invoke(main, ["show", str(path), "--out", str(tmp_path / "d"), "--exclude", "*"])
    assert nothing.exit_code == 1 and nothing.output.count("\n") == 1 and not (tmp_path / "d").exists()


def test_demo_refuses_cuda_without_a_gpu(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = CliRunner().invoke(
        main, ["demo", "--out", str(tmp_path / "o"), "--data", str(FIXTURES), "--model", str(tmp_path / "x.pt"), "--device", "cuda"]
    )
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "--device cpu" in result.output


# ----------------------------------------------------------------------------------------------
# demo


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """The demo on the tsukuba fixture with an untrained tiny network and 2 adaptation steps."""
    import torch

    from pseudolabel.learn.checkpoint import save_checkpoint
    from pseudolabel.models.registry import build_network

    root = tmp_path_factory.mktemp("demo")
    shutil.copytree(TSUKUBA, root / "scenes" / "tsukuba")
    torch.manual_seed(0)
    save_checkpoint(root / "tiny.pt", {"arch": "tiny", "arch_kwargs": {}, "model": build_network("tiny").state_dict(), "step": 0})
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(
            main,
            ["demo", "--out", str(root / "out"), "--data", str(root / "scenes"), "--model", str(root / "tiny.pt"), "--steps", "2", "--device", "cpu"],
            catch_exceptions=False,
        )
    finally:
        torch.set_num_threads(previous)
    return root, result


def test_demo_prints_the_table_and_writes_a_self_contained_report(tiny_demo: tuple[Path, object]) -> None:
    root, result = tiny_demo
    assert result.exit_code == 0, result.output
    from pseudolabel.cli.confidence import DEFAULT_TAU

    for row in ("SGM proxies", f"labels (tau {DEFAULT_TAU})", "network before (source)", "network after (adapted)"):
        assert re.search(re.escape(row) + r"\s+[\d.]+%\s+[\d.]+%\s+[\d.]+%\s+[\d.]+ px", result.output), row
    out = root / "out"
    results = json.loads((out / "results.json").read_text())
    ground_truth = read_disparity(TSUKUBA / "groundtruth.png", 16.0)
    ground_truth[ground_truth <= 0] = np.nan
    with open_proxies(out / "proxies.h5") as proxies:
        assert proxies.keys() == ["tsukuba"]
        assert "ccnn" in proxies.list_confidences("tsukuba") and proxies.has("tsukuba", "labels")
        proxy = proxies.read("tsukuba", ["disparity"])["disparity"]
    assert results["mean"]["SGM proxies"]["bad3"] == pytest.approx(dense_metrics(proxy, ground_truth)["bad3"])
    assert results["mean"]["network before (source)"]["density"] == pytest.approx(100.0)
    html = (out / "report.html").read_text()
    pictures = embedded_images(html)
    # left, proxy, confidence, labels, ground truth, before, after, 4 error maps, 3 legends
    assert len(pictures) == 14
    assert html.count("<svg") == 2 and "network after (adapted)" in html  # sparsification curves and reliability diagram
    assert "reliability: tsukuba" in html and "expected calibration error" in html
    assert (out / "adapted.pt").is_file()


def test_demo_rerun_keeps_the_finished_steps(tiny_demo: tuple[Path, object]) -> None:
    root, _ = tiny_demo
    out = root / "out"
    stamp = (out / "adapted.pt").stat().st_mtime_ns
    result = CliRunner().invoke(
        main,
        ["demo", "--out", str(out), "--data", str(root / "scenes"), "--model", str(root / "tiny.pt"), "--steps", "2", "--device", "cpu"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "1 already done, 0 to match" in result.output and "is finished" in result.output
    assert (out / "adapted.pt").stat().st_mtime_ns == stamp


def test_demo_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    no_data = runner.invoke(main, ["demo", "--out", str(tmp_path / "o"), "--data", str(tmp_path / "missing")])
    assert no_data.exit_code == 1 and no_data.output.count("\n") == 1 and "--data" in no_data.output
    no_model = runner.invoke(main, ["demo", "--out", str(tmp_path / "o"), "--data", str(FIXTURES), "--model", str(tmp_path / "none.pt")])
    assert no_model.exit_code == 1 and no_model.output.count("\n") == 1 and "--model" in no_model.output
    assert not (tmp_path / "o").exists()
