"""``pseudolabel import`` (pseudolabel.store.external): another matcher's disparities in, then scored, labelled, exported."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from pseudolabel.cli.main import main
from pseudolabel.confidence.labelling import label_proxies
from pseudolabel.confidence.measures import MEASURES
from pseudolabel.confidence.scoring import score_proxies, unavailable_note
from pseudolabel.errors import InputError
from pseudolabel.io import write_image, write_pfm
from pseudolabel.store.export import export_labels
from pseudolabel.store.external import import_disparities
from pseudolabel.store.inspect import describe_proxies
from pseudolabel.store.proxies import open_proxies

HEIGHT, WIDTH = 24, 40
COST_MEASURES = sorted(name for name, spec in MEASURES.items() if set(spec.needs) - {"disparity"})


def disparity_of(index: int) -> np.ndarray:
    rng = np.random.default_rng(index)
    disparity = rng.uniform(2.0, 12.0, (HEIGHT, WIDTH)).astype(np.float32)
    disparity[0, :3] = [np.nan, np.inf, 0.0]  # three ways of saying "no value"
    return disparity


@pytest.fixture()
def external(tmp_path: Path) -> dict[str, Path]:
    """A left/right rig of three pairs and their disparities in the three formats."""
    rng = np.random.default_rng(1)
    disparities = tmp_path / "other"
    for index, key in enumerate(("a/one", "a/two", "b")):
        for side in ("left", "right"):
            write_image(tmp_path / "rig" / side / f"{key}.png", rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8))
        disparity = disparity_of(index)
        target = disparities / key
        target.parent.mkdir(parents=True, exist_ok=True)
        if index == 0:
            write_pfm(target.with_suffix(".pfm"), disparity)
        elif index == 1:
            encoded = np.where(np.isfinite(disparity) & (disparity > 0), np.round(np.nan_to_num(disparity, posinf=0.0) * 256), 0).astype(np.uint16)
            cv2.imwrite(str(target.with_suffix(".png")), encoded)
        else:
            np.save(target.with_suffix(".npy"), disparity)
    return {"rig": tmp_path / "rig", "disparities": disparities, "out": tmp_path / "imported.h5"}


def _import(external: dict[str, Path], **kwargs: object) -> Path:
    rig = external["rig"]
    import_disparities(external["disparities"], [rig / "left", rig / "right"], external["out"], **kwargs)  # type: ignore[arg-type]
    return external["out"]


def test_import_writes_the_proxies_contract(external: dict[str, Path]) -> None:
    path = _import(external)
    with open_proxies(path) as proxies:
        assert proxies.keys() == ["a/one", "a/two", "b"]
        root = proxies.attrs
        assert root["sgm_params_placeholder"] is True or root["sgm_params_placeholder"] == 1
        assert root["disparity_source"] == f"import: {external['disparities'].resolve()}"
        for index, key in enumerate(proxies.keys()):
            assert proxies.datasets(key) == ["disparity", "valid"]
            arrays = proxies.read(key)
            expected = disparity_of(index)
            known = np.isfinite(expected) & (expected > 0)
            np.testing.assert_array_equal(arrays["valid"], known)
            assert np.isnan(arrays["disparity"][~known]).all()
            tolerance = 1 / 512 if index == 1 else 0  # the PNG holds 1/256 px steps
            assert np.abs(arrays["disparity"][known] - expected[known]).max() <= tolerance
            attrs = proxies.pair_attrs(key)
            assert (attrs["height"], attrs["width"]) == (HEIGHT, WIDTH)
            assert attrs["min_disp"] == int(np.floor(arrays["disparity"][known].min()))
            assert attrs["max_disp"] == int(np.floor(arrays["disparity"][known].max())) + 1
            assert attrs["left"].endswith(f"left/{key}.png")
    assert "SGM parameters: none, the disparities were imported (import: " in describe_proxies(path)


def test_score_reports_cost_measures_unavailable_and_runs_the_others(external: dict[str, Path]) -> None:
    path = _import(external)
    summary = score_proxies(path, measures="all", model=None)
    assert summary.written == ["dbl", "med"]
    assert sorted(summary.unavailable) == COST_MEASURES
    note = unavailable_note(path, summary)
    assert len(note.splitlines()) == 1 and "cost_best" in note and "pkrn" in note
    with open_proxies(path) as proxies:
        for key in proxies.keys():
            confidences = proxies.read(key, ["confidence/dbl", "confidence/med"])
            for confidence in confidences.values():
                assert np.isfinite(confidence).all()
                assert (confidence[0, :3] == 0).all()  # no value -> no confidence, not a guess
    with pytest.raises(InputError, match="nothing to score: apkr need cost_best"):
        score_proxies(path, measures="apkr", model=None)


def test_ccnn_on_the_disparity_alone_scores_an_imported_file_and_labels_export(
    external: dict[str, Path], tmp_path: Path, single_torch_thread: None
) -> None:
    pytest.importorskip("torch")
    from pseudolabel.confidence.checkpoints import save_confidence_checkpoint
    from pseudolabel.models.ccnn import CCNN

    path = _import(external)
    # the shipped CCNN also reads cost-based measures: reported unavailable, like them
    summary = score_proxies(path, measures="dbl", threads=1, device="cpu")
    assert summary.written == ["dbl"] and "ccnn" in summary.unavailable and "cost_best" in summary.unavailable["ccnn"]
    model = tmp_path / "ccnn_disparity.pt"
    save_confidence_checkpoint(model, CCNN(filters=8, fc_filters=8, inputs=("disparity",)).eval(), {}, {})
    summary = score_proxies(path, measures="none", model=model, name="ccnn", threads=1, device="cpu")
    assert summary.written == ["ccnn"] and not summary.unavailable
    label_proxies(path, tau=0.0, measure="ccnn")
    with open_proxies(path) as proxies:
        assert (proxies.read("b", ["confidence/ccnn"])["confidence/ccnn"][0, :3] == 0).all()
        labels = proxies.read("b", ["labels"])["labels"]
    assert np.isnan(labels[0, :3]).all()
    export_labels(path, tmp_path / "kitti", format="kitti")
    readme = (tmp_path / "kitti" / "README.txt").read_text()
    assert "SGM parameters: none: the disparities were imported (import: " in readme


def test_command_line_import_then_score_prints_the_note(external: dict[str, Path]) -> None:
    rig = external["rig"]
    runner = CliRunner()
    args = ["import", "--disparity", str(external["disparities"]), "--in", str(rig / "left"), str(rig / "right"), "--out", str(external["out"])]
    result = runner.invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "wrote 3 pairs" in result.output
    result = runner.invoke(
        main, ["confidence", "score", "--proxies", str(external["out"]), "--model", "none", "--measures", "all"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("note: not available")]
    assert len(notes) == 1 and all(name in notes[0] for name in COST_MEASURES)
    again = runner.invoke(main, args, catch_exceptions=False)
    assert again.exit_code == 1 and "exists; pass --overwrite" in again.output


def test_import_refusals(external: dict[str, Path]) -> None:
    (external["disparities"] / "b.npy").unlink()
    with pytest.raises(InputError, match=r"no disparity file for 1 of the 3 pairs \('b'\)"):
        _import(external)
    assert not external["out"].exists()
    np.save(external["disparities"] / "b.npy", np.ones((HEIGHT, WIDTH + 1), dtype=np.float32))
    with pytest.raises(InputError, match="disparity of size"):
        _import(external)
    assert not external["out"].exists() and not external["out"].with_name("imported.h5.partial").exists()
    path = _import(external, exclude=["b"], scale=2.0)
    with open_proxies(path) as proxies:
        assert proxies.keys() == ["a/one", "a/two"]
        assert np.nanmax(proxies.read("a/one", ["disparity"])["disparity"]) <= 6.0
