"""The time budget (``--budget``): steps fitted from measured step times on a fake clock, the schedule
that ends with the budget, and the trainer that follows it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from pseudolabel.errors import InputError
from pseudolabel.learn.budget import SchedulePlan, StepBudget, format_duration, parse_duration
from pseudolabel.learn.checkpoint import load_checkpoint
from pseudolabel.learn.losses import multiscale_l1_loss
from pseudolabel.learn.samples import make_sample, sample_rng
from pseudolabel.learn.trainer import Trainer, TrainerConfig, lr_factor
from pseudolabel.models.registry import build_network
from pseudolabel.synth.scene import SynthConfig, render_pair

pytestmark = pytest.mark.usefixtures("single_torch_thread")


class FakeClock:
    """A clock that moves only when told."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run_steps(budget: StepBudget, clock: FakeClock, durations: list[float], start: int = 0) -> int:
    """Feed step times to the budget until it says stop; returns the steps done."""
    step = start
    budget.begin(step)
    for duration in durations:
        clock.now += duration
        step += 1
        budget.step_done(step)
        if budget.should_stop(step):
            break
    return step


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90.0), ("10m", 600.0), ("1h", 3600.0), ("1h30m", 5400.0), ("2.5m", 150.0), ("10min", 600.0), (" 45 s ", 45.0)]
)
def test_durations_are_parsed_with_their_unit(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10", "10x", "m", "-5m", "1h-5m", "abc"])
def test_a_duration_without_a_unit_or_with_garbage_is_refused(text: str) -> None:
    with pytest.raises(InputError, match="--budget"):
        parse_duration(text)


def test_none_off_and_zero_mean_no_budget() -> None:
    assert parse_duration("none") is None and parse_duration("off") is None and parse_duration("0") is None and parse_duration(None) is None


def test_format_duration() -> None:
    assert [format_duration(s) for s in (9, 75, 4000)] == ["9s", "1m15s", "1h06m"]


def test_steps_are_fitted_to_the_time_left_from_the_median_after_the_warm_up() -> None:
    clock = FakeClock(0.0)
    budget = StepBudget(100.0, 1000, clock=clock, warmup_steps=2, measure_steps=5)
    clock.now = 10.0  # setup: data and network loading count against the budget
    budget.begin(0)
    # two slow warm-up steps, then 1 s steps with one outlier among the measured ones
    for step, duration in enumerate([7.0, 3.0, 1.0, 1.0, 6.0, 1.0], start=1):
        clock.now += duration
        assert budget.step_done(step) is None
        assert not budget.decided and budget.total_steps == 1000
    clock.now += 1.0
    decision = budget.step_done(7)
    # median of [1, 1, 6, 1, 1] = 1 s; elapsed 10 + 20 = 30 s; 70 s left -> 70 more steps
    assert decision is not None and decision["reason"] == "measured"
    assert budget.step_time_s == pytest.approx(1.0)
    assert budget.total_steps == 7 + 70
    assert budget.decided_at == 7
    done = run_steps(budget, clock, [1.0] * 500, start=7)
    assert done == 77
    assert clock.now == pytest.approx(100.0)


def test_the_budget_never_asks_for_more_than_max_steps() -> None:
    clock = FakeClock()
    budget = StepBudget(1000.0, 20, clock=clock)
    assert run_steps(budget, clock, [0.5] * 100) == 20
    assert budget.total_steps == 20


def test_a_very_slow_step_decides_early_from_what_was_seen() -> None:
    clock = FakeClock()
    budget = StepBudget(60.0, 1000, clock=clock, warmup_steps=2, measure_steps=5, decide_fraction=0.2)
    clock.now += 15.0
    decision = budget.step_done(1)  # 15 s > 20% of 60 s: decide with the only time seen
    assert decision is not None and decision["reason"] == "early"
    assert budget.total_steps == 1 + 3  # 45 s left / 15 s


def test_reserved_time_is_kept_out_of_the_fit() -> None:
    clock = FakeClock()
    budget = StepBudget(100.0, 1000, clock=clock, warmup_steps=0, measure_steps=2)
    budget.reserved_s = 20.0
    budget.begin(0)
    clock.now += 1.0
    budget.step_done(1)
    clock.now += 1.0
    budget.step_done(2)
    assert budget.total_steps == 2 + 78  # (100 - 2 - 20) / 1


def test_time_excluded_from_a_step_is_not_a_step_time() -> None:
    clock = FakeClock()
    budget = StepBudget(100.0, 1000, clock=clock, warmup_steps=0, measure_steps=2)
    budget.begin(0)
    clock.now += 11.0  # 10 s of it was an evaluation
    budget.step_done(1, excluded_s=10.0)
    clock.now += 1.0
    budget.step_done(2)
    assert budget.step_time_s == pytest.approx(1.0)


def test_a_large_change_of_speed_refits_and_the_schedule_stays_continuous() -> None:
    clock = FakeClock()
    budget = StepBudget(200.0, 10_000, clock=clock, warmup_steps=0, measure_steps=5, refit_window=10)
    run_steps(budget, clock, [1.0] * 5)
    assert budget.total_steps == 200
    progress_before = [budget.plan.progress(s) for s in range(0, 60)]
    # one outlier is no change of speed: the median of the window stays 1 s, the projected end 200 s
    step = 5
    for duration in [1.0] * 7 + [5.0] + [1.0] * 7:
        clock.now += duration
        step += 1
        budget.step_done(step)
    assert budget.refits == [] and budget.total_steps == 200
    # the machine gets twice as slow after step 20: with 5 of the last 10 steps at 2 s the median
    # is 1.5 s, and the projected end (34 + 175 * 1.5 s) misses the 200 s by far
    for duration in [2.0] * 5:
        clock.now += duration
        step += 1
        budget.step_done(step)
    assert [(r["step"], r["step_time_s"]) for r in budget.refits] == [(25, pytest.approx(1.5))]
    # elapsed 5 + (14 + 5) + 5 * 2 = 34 s; 166 s left at 1.5 s -> 110 more
    assert budget.total_steps == 25 + 110
    # the plan did not change what was already scheduled, and is continuous at the refit
    assert [budget.plan.progress(s) for s in range(0, 26)] == pytest.approx(progress_before[:26])
    assert budget.plan.progress(26) - budget.plan.progress(25) == pytest.approx((1 - budget.plan.progress(25)) / 110)
    # a window later every step of the window took 2 s: fitted again (54 s elapsed, 146 s left -> 73 more)
    progress_at_refit = [budget.plan.progress(s) for s in range(0, 36)]
    for _ in range(10):
        clock.now += 2.0
        step += 1
        budget.step_done(step)
    assert [(r["step"], r["step_time_s"]) for r in budget.refits][1:] == [(35, pytest.approx(2.0))]
    assert budget.total_steps == 35 + 73
    assert [budget.plan.progress(s) for s in range(0, 36)] == pytest.approx(progress_at_refit)
    assert budget.plan.progress(108) == 1.0
    # at the new speed the run ends on the budget, with no further refit
    done = run_steps(budget, clock, [2.0] * 500, start=step)
    assert done == 108 and clock.now == pytest.approx(200.0) and len(budget.refits) == 2


def test_steps_that_speed_up_after_the_decision_are_refitted_so_that_the_run_uses_its_budget() -> None:
    # what adapt measured on a 2-core CPU: 0.69 s steps when the total was decided, 0.5 s from then on
    # (with one refit allowed only beyond a 30% change, the 8-minute run ended after 5.8 minutes)
    clock = FakeClock()
    budget = StepBudget(480.0, 10_000, clock=clock, warmup_steps=2, measure_steps=5, refit_window=10)
    clock.now = 4.0  # loading
    done = run_steps(budget, clock, [2.0, 1.0] + [0.69] * 5 + [0.5] * 2000)
    assert budget.decided_at == 7 and budget.refits
    assert budget.refits[0]["step"] == 17 and budget.refits[0]["step_time_s"] == pytest.approx(0.5)
    assert 0.95 * 480.0 <= clock.now <= 480.0
    assert done == budget.total_steps and not budget.stopped_over_budget
    # the schedule ends at the last step
    assert budget.plan.progress(done) == 1.0 and budget.plan.progress(done - 1) < 1.0


def test_refits_are_a_window_apart_and_follow_every_change_of_speed() -> None:
    clock = FakeClock()
    budget = StepBudget(300.0, 10_000, clock=clock, warmup_steps=0, measure_steps=5, refit_window=10)
    durations = [1.0] * 25 + [3.0] * 30 + [0.5] * 2000  # another process starts, then ends
    done = run_steps(budget, clock, durations)
    steps = [int(refit["step"]) for refit in budget.refits]
    assert len(steps) >= 2
    assert all(later - earlier >= 10 for earlier, later in zip(steps, steps[1:]))
    assert [refit["step_time_s"] for refit in budget.refits][-1] == pytest.approx(0.5)
    assert 0.95 * 300.0 <= clock.now <= 1.05 * 300.0 and done == budget.total_steps


def test_steps_within_the_tolerance_are_not_refitted() -> None:
    clock = FakeClock()
    budget = StepBudget(100.0, 10_000, clock=clock, warmup_steps=0, measure_steps=5, refit_window=10, refit_tolerance=0.05)
    done = run_steps(budget, clock, [1.0] * 5 + [1.04] * 500)  # 4% slower: the end is at most 4% late
    assert budget.refits == [] and done == 100 and clock.now <= 105.0


def test_the_hard_stop_ends_a_run_that_overruns() -> None:
    clock = FakeClock()
    budget = StepBudget(10.0, 1000, clock=clock, warmup_steps=0, measure_steps=1, hard_stop=1.25)
    steps = run_steps(budget, clock, [0.1] + [5.0] * 10)
    assert budget.stopped_over_budget and clock.now >= 12.5 and steps < budget.total_steps


def test_the_plan_is_the_straight_schedule_until_a_fit_and_then_ends_at_the_fitted_step() -> None:
    plan = SchedulePlan(100, start=10)
    for step in (0, 10, 40, 99, 100, 120):
        assert lr_factor(step, 100, "cosine", 10, plan.progress(step)) == pytest.approx(lr_factor(step, 100, "cosine", 10))
    plan.refit(40, 60)
    assert plan.progress(40) == pytest.approx(30 / 90)
    assert plan.progress(60) == 1.0 and lr_factor(60, 100, "cosine", 10, plan.progress(60)) == pytest.approx(0.05)
    restored = SchedulePlan.from_state(json.loads(json.dumps(plan.state_dict())))
    assert [restored.progress(s) for s in range(70)] == [plan.progress(s) for s in range(70)]


class TinySynth(Dataset):
    def __init__(self) -> None:
        self.pair = render_pair(SynthConfig(width=64, height=32, max_disp=8), 3)

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        pair = self.pair
        return make_sample(pair.left, pair.right, pair.disp_left, sample_rng(0, index), None, None, index)


def test_the_trainer_stops_at_the_fitted_step_with_the_schedule_at_its_end(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_network("tiny")
    config = TrainerConfig(
        out=tmp_path / "b.pt", steps=1000, batch_size=1, learning_rate=1e-3, device="cpu", checkpoint_every=0, log_every=5, progress=False
    )
    trainer: Trainer
    # every step takes 2 s on the fake clock; the budget is 30 s from the start
    budget = StepBudget(30.0, 1000, clock=lambda: 2.0 * trainer.step, started=0.0, warmup_steps=2, measure_steps=5)
    evaluations: list[int] = []

    def evaluate(network: torch.nn.Module) -> dict[str, float]:
        evaluations.append(trainer.step)
        return {"holdout_bad3": 10.0}

    trainer = Trainer(model, "tiny", {}, TinySynth(), multiscale_l1_loss, config, budget=budget, evaluate_fn=evaluate, evaluations=3)
    result = trainer.fit()
    # decided at step 3 (the steps took 20% of the budget): 6 s spent, 24 s left -> 12 more steps
    assert result.step == 15
    lines = [json.loads(line) for line in config.log_path.read_text().splitlines()]
    decided = [line for line in lines if "budget" in line]
    assert len(decided) == 1 and decided[0]["step"] == 3 and decided[0]["budget"]["steps"] == 15
    assert lines[-1]["step"] == 15 and lines[-1]["lr"] == pytest.approx(1e-3 * 0.05)
    assert evaluations[0] == 0 and evaluations[-1] == 15
    payload = load_checkpoint(config.out)
    assert payload["budget"]["steps"] == 15 and payload["budget"]["decided_at_step"] == 3


def test_costly_evaluations_are_reserved_and_thinned_to_a_share_of_the_budget(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = TrainerConfig(out=tmp_path / "e.pt", steps=1000, batch_size=1, learning_rate=1e-3, device="cpu", checkpoint_every=0, progress=False)
    trainer: Trainer
    spent = [0.0]  # fake seconds spent in evaluations
    budget = StepBudget(60.0, 1000, clock=lambda: 2.0 * trainer.step + spent[0], started=0.0, warmup_steps=0, measure_steps=3)
    evaluations: list[int] = []

    def evaluate(network: torch.nn.Module) -> dict[str, float]:
        evaluations.append(trainer.step)
        spent[0] += 3.0  # each evaluation takes 3 s: 10 of them would be half the budget
        return {"holdout_bad3": 1.0}

    trainer = Trainer(build_network("tiny"), "tiny", {}, TinySynth(), multiscale_l1_loss, config, budget=budget, evaluate_fn=evaluate, evaluations=10)
    result = trainer.fit()
    # 10% of 60 s = 6 s = 2 evaluations: before the first step and at the end
    assert evaluations == [0, result.step]
    # decided at step 3 (6 s of steps + 3 s evaluation = 9 s), 3 s reserved for the last evaluation: (60 - 9 - 3) / 2 = 24 more
    assert budget.decided_at == 3 and result.step == 27
    assert 2.0 * result.step + spent[0] == pytest.approx(60.0)
