# ruff: noqa: F811  (the workspace fixture is imported from test_cli_adapt and named in the tests)
"""`pseudolabel adapt` with a time budget, held-back frames, L2-SP and replay: short runs of a tiny
network on the small proxies file of :mod:`tests.cli.test_cli_adapt`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pseudolabel.learn.checkpoint import load_checkpoint
from tests.cli.test_cli_adapt import FAST, base_args, run, workspace  # noqa: F401  (the fixture)

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def log_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]


def test_held_back_pairs_are_not_trained_on_and_their_agreement_is_logged(workspace: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "held.pt"
    result = run(*base_args(workspace, out), "--steps", "3", "--holdout-every", "3", "--tau", "0.8", "--budget", "none", *FAST)
    assert result.exit_code == 0, result.output
    payload = load_checkpoint(out)
    assert payload["training_args"]["held_back"] == ["p2"]
    assert payload["training_args"]["data"]["keys"] == ["p0", "p1"]
    lines = log_lines(out)
    assert lines[0]["step"] == 0 and "holdout_bad3" in lines[0] and "loss" not in lines[0]  # the source network
    assert lines[-1]["step"] == 3 and "holdout_bad3" in lines[-1] and "holdout_epe" in lines[-1]
    assert 0 < lines[0]["holdout_labels"] <= 100
    assert "held-back pairs (1): bad-3" in result.output
    # learnable tau: labels above `pseudolabel labels`' 0.9, which no pixel of these pairs reaches
    refused = run(*base_args(workspace, tmp_path / "none.pt"), "--steps", "1", "--holdout-every", "3", *FAST)
    assert refused.exit_code == 1 and "no pixel with confidence above 0.9" in refused.output


def test_a_budget_is_recorded_and_none_gives_exactly_the_steps(workspace: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "budget.pt"
    result = run(*base_args(workspace, out), "--steps", "4", "--budget", "90s", *FAST)
    assert result.exit_code == 0, result.output
    payload = load_checkpoint(out)
    budget = payload["budget"]
    assert budget["budget_s"] == 90 and budget["decided"] and budget["steps"] == 4 and payload["step"] == 4
    assert payload["training_args"]["budget_s"] == 90
    assert any("budget" in line for line in log_lines(out))
    assert "budget 90 s: 4 steps fitted" in result.output
    # the defaults keep the network near its source: L2-SP in the loss, half the samples synthetic
    assert payload["training_args"]["loss"] == "guided=1,l2sp=0.01" and payload["training_args"]["replay"] == 0.5
    assert "loss/l2sp" in log_lines(out)[-1]
    fixed = tmp_path / "fixed.pt"
    former = ["--loss", "guided=1", "--replay", "0"]  # the default before the source network was trained further
    assert run(*base_args(workspace, fixed), "--steps", "2", "--budget", "none", *former, *FAST).exit_code == 0
    assert load_checkpoint(fixed)["budget"] is None and load_checkpoint(fixed)["step"] == 2
    assert load_checkpoint(fixed)["training_args"]["replay"] == 0.0 and "loss/l2sp" not in log_lines(fixed)[-1]


def test_a_budget_without_a_unit_is_one_line(workspace: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "bad.pt"
    result = run(*base_args(workspace, out), "--budget", "10", *FAST)
    assert result.exit_code == 1
    assert "--budget '10': write a duration with its unit" in result.output
    assert not out.exists()


def test_l2sp_and_replay_run_three_steps(workspace: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "keep.pt"
    result = run(*base_args(workspace, out), "--steps", "3", "--loss", "guided=1,l2sp=1e-3", "--replay", "0.5", "--lr", "1e-2", *FAST)
    assert result.exit_code == 0, result.output
    lines = log_lines(out)
    assert lines[0]["loss/l2sp"] == 0.0  # the first step starts from the source weights
    assert lines[-1]["loss/l2sp"] > 0.0
    args = load_checkpoint(out)["training_args"]
    assert args["replay"] == 0.5 and args["loss"] == "guided=1,l2sp=0.001"
