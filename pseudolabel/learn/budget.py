"""A time budget instead of a step count: ``pseudolabel adapt --budget 10m``.

:class:`StepBudget` watches the first steps of a run, fits the number of steps to the time left and
fixes it early, so that the learning-rate schedule (cosine by default) can end exactly when the
budget does:

1. the first ``warmup_steps`` step times are discarded (memory allocation, lazy initialisation and
   the first data loading make them slow outliers);
2. after ``measure_steps`` more steps (or once the steps took ``decide_fraction`` of the budget, whichever
   comes first) the step time is the *median* of the measured ones, and the total is
   ``step + (time left - reserved time) / step time``, at most ``max_steps``; from then on the run
   has a fixed length;
3. every ``refit_window`` steps at the earliest, the run's end is projected from the median of the
   last ``refit_window`` step times; if it misses the budget by more than ``refit_tolerance`` of
   it (the first steps after the warm-up were still slower than the rest, another process started
   or ended, the machine throttles), the total is fitted again from that median (the ``refits``
   entry of :meth:`StepBudget.describe`);
4. a run that still overruns stops at ``hard_stop`` times the budget.

The schedule follows :class:`SchedulePlan`: a piecewise-linear map from step to schedule progress in
[0, 1]. Before the decision it is the straight line of ``max_steps``; at each (re)fit it continues
from the progress reached, linearly to 1 at the new total, so the learning rate never jumps and the
cosine reaches its end at the last step.

Time is read from an injectable ``clock`` (``time.perf_counter`` by default), so the logic is tested
on a fake clock. Time spent outside the steps (evaluations of held-back frames) is passed as
``excluded_s`` and kept out of the step times; what such work will still cost is ``reserved_s``.
This module does not import torch.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pseudolabel.errors import InputError

__all__ = ["SchedulePlan", "StepBudget", "format_duration", "parse_duration"]

_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str | float | None, option: str = "--budget") -> float | None:
    """Seconds of a duration written ``90s``, ``10m``, ``1h``, ``1h30m`` or ``2.5m``; ``None`` for ``none``/``off``/``0``.

    Raises:
        InputError: anything else (a bare number is refused: the unit is required).
    """
    if text is None:
        return None
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        cleaned = str(text).strip().lower().replace(" ", "")
        if cleaned in ("none", "off", "0", ""):
            return None
        parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(h|min|m|sec|s)", cleaned)
        if not parts or "".join(number + unit for number, unit in parts) != cleaned:
            raise InputError(f"{option} {text!r}: write a duration with its unit, e.g. 90s, 10m, 1h or 1h30m (none: no budget)")
        seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if not math.isfinite(seconds) or seconds < 0:
        raise InputError(f"{option} {text!r}: give a positive duration")
    return seconds or None


def format_duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``4000`` -> ``1h06m``; ``9`` -> ``9s``."""
    seconds = max(float(seconds), 0.0)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclass
class SchedulePlan:
    """Schedule progress (0 at ``start``, 1 at ``total``) of every step: linear pieces joined at the (re)fits.

    Attributes:
        total: the step at which progress reaches 1.
        knots: ``(step, progress)`` where the current piece starts.
    """

    total: int
    start: int = 0
    knots: list[tuple[int, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.knots:
            self.knots = [(int(self.start), 0.0)]

    def progress(self, step: int) -> float:
        """Progress in [0, 1] at ``step`` (0 before ``start``, 1 from ``total`` on)."""
        if step >= self.total:
            return 1.0
        points = [*self.knots, (self.total, 1.0)]
        if step <= points[0][0]:
            return points[0][1]
        for (first_step, first), (second_step, second) in zip(points, points[1:]):
            if step <= second_step:
                if second_step <= first_step:
                    return second
                return first + (second - first) * (step - first_step) / (second_step - first_step)
        return 1.0

    def refit(self, step: int, total: int) -> None:
        """From ``step`` on, progress goes linearly from where it is to 1 at ``total``."""
        if total == self.total:
            return
        here = self.progress(step)
        self.knots = [knot for knot in self.knots if knot[0] < step] + [(int(step), here)]
        self.total = int(total)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state (checkpoints)."""
        return {"total": self.total, "start": self.start, "knots": [list(knot) for knot in self.knots]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SchedulePlan:
        """The plan of :meth:`state_dict`."""
        return cls(int(state["total"]), int(state.get("start", 0)), [(int(s), float(p)) for s, p in state["knots"]])


class StepBudget:
    """Fits the number of steps of a run to a time budget; see the module docstring.

    Args:
        budget_s: the budget, seconds, counted from ``started`` (default: construction time).
        max_steps: the most steps the run may take (``--steps``); the budget never exceeds it.
        clock: seconds, monotonic (``time.perf_counter``); inject a fake one in tests.
        started: clock reading at which the budget began (before loading data, building the network).
        warmup_steps: first step times discarded.
        measure_steps: step times measured before the decision.
        decide_fraction: decide anyway once this share of the budget is spent.
        refit_tolerance: share of the budget by which the projected end may miss it before the
            steps are fitted again.
        refit_window: steps whose median step time projects the end, and the fewest steps between
            two fits (default: ``max(6 * measure_steps, 30)``: step times vary by several per cent from
            one batch to the next, and a shorter window refits on that noise).
        hard_stop: stop at ``hard_stop * budget_s`` whatever the plan.
    """

    def __init__(
        self,
        budget_s: float,
        max_steps: int,
        *,
        clock: Callable[[], float] = time.perf_counter,
        started: float | None = None,
        warmup_steps: int = 2,
        measure_steps: int = 5,
        decide_fraction: float = 0.2,
        refit_tolerance: float = 0.05,
        refit_window: int | None = None,
        hard_stop: float = 1.25,
    ) -> None:
        if not budget_s > 0:
            raise InputError(f"--budget must be positive; got {budget_s}")
        if max_steps <= 0:
            raise InputError("--steps must be positive")
        self.budget_s = float(budget_s)
        self.max_steps = int(max_steps)
        self.clock = clock
        self.started = clock() if started is None else float(started)
        self.warmup_steps = int(warmup_steps)
        self.measure_steps = max(int(measure_steps), 1)
        self.decide_fraction = float(decide_fraction)
        self.refit_tolerance = float(refit_tolerance)
        self.refit_window = int(refit_window) if refit_window else max(6 * self.measure_steps, 30)
        self.hard_stop = float(hard_stop)
        #: seconds the caller expects to spend outside the steps before the end (evaluations, saving).
        self.reserved_s = 0.0
        self.plan = SchedulePlan(self.max_steps)
        self.decided = False
        self.step_time_s: float | None = None
        self.decided_at: int | None = None
        self.refits: list[dict[str, float]] = []
        self.stopped_over_budget = False
        self._durations: list[float] = []  # step times seen in this process, warm-up included
        self._after_decision: list[float] = []
        self._since_fit = 0  # steps since the last (re)fit, or since a resumed run began
        self._last: float | None = None
        self._began: float | None = None
        self._pending: dict[str, Any] | None = None

    # -- the loop ------------------------------------------------------------------------------

    def set_schedule_start(self, step: int) -> None:
        """The schedule's progress starts at ``step`` (after the learning-rate warm-up); before any decision."""
        if not self.decided:
            self.plan = SchedulePlan(self.max_steps, start=int(step))

    def begin(self, step: int) -> None:
        """The step loop starts at ``step`` (0, or the step of a resumed run)."""
        self._last = self._began = self.clock()

    @property
    def total_steps(self) -> int:
        """The steps the run ends at: ``max_steps`` until the decision, then the fitted count."""
        return self.plan.total

    def elapsed(self) -> float:
        """Seconds since the budget began."""
        return self.clock() - self.started

    def step_done(self, step: int, excluded_s: float = 0.0) -> dict[str, Any] | None:
        """Step ``step`` (1-based count of steps done) just ended; ``excluded_s`` of the time since the
        previous call was not spent on the step. Returns the decision (or refit) made now, else ``None``."""
        now = self.clock()
        if self._last is None:
            self._last = self.started
        duration = max(now - self._last - excluded_s, 0.0)
        self._last = now
        self._durations.append(duration)
        if self.decided:
            self._after_decision.append(duration)
            self._since_fit += 1
            return self._maybe_refit(step)
        measured = self._durations[self.warmup_steps :]
        spent = now - (self._began if self._began is not None else self.started)  # in the loop
        if len(measured) >= self.measure_steps or spent >= self.decide_fraction * self.budget_s or step >= self.max_steps:
            step_time = statistics.median(measured) if measured else self._durations[-1]
            return self._decide(step, step_time, reason="measured" if len(measured) >= self.measure_steps else "early")
        return None

    def should_stop(self, step: int) -> bool:
        """Whether the run ends after ``step`` steps: the plan's total is reached, or the hard stop."""
        if step >= self.total_steps:
            return True
        if self.elapsed() >= self.hard_stop * self.budget_s:
            self.stopped_over_budget = True
            return True
        return False

    def eta_s(self, step: int) -> float:
        """Seconds left: before the decision, what is left of the budget; then the remaining steps at
        the recent step time, plus the reserved time."""
        if not self.decided:
            return max(self.budget_s - self.elapsed(), 0.0)
        return max(self.total_steps - step, 0) * self._recent_step_time() + self.reserved_s

    def _recent_step_time(self) -> float:
        """Median of the last ``refit_window`` step times in seconds (those after the decision once there are any)."""
        recent = (self._after_decision or self._durations[self.warmup_steps :] or self._durations)[-self.refit_window :]
        return statistics.median(recent) if recent else (self.step_time_s or 0.0)

    def adopt(self, total: int, step: int) -> None:
        """Take ``total`` decided elsewhere (rank 0 of a distributed run) at ``step``."""
        if total != self.total_steps:
            self.plan.refit(step, total)
        self.decided = self.decided or total != self.max_steps or step >= self.max_steps

    def take_pending(self) -> dict[str, Any] | None:
        """The decision not yet written to the metrics log (once)."""
        pending, self._pending = self._pending, None
        return pending

    # -- fitting -------------------------------------------------------------------------------

    def _fit(self, step: int, step_time: float) -> int:
        left = self.budget_s - self.elapsed() - self.reserved_s
        more = int(left // step_time) if step_time > 0 else self.max_steps
        return max(step, min(self.max_steps, step + max(more, 0)))

    def _decide(self, step: int, step_time: float, reason: str) -> dict[str, Any]:
        total = self._fit(step, step_time)
        self.plan.refit(step, total)
        self.decided, self.step_time_s, self.decided_at = True, float(step_time), int(step)
        self._since_fit = 0
        self._pending = {"event": "fitted", "reason": reason, **self.describe()}
        return self._pending

    def _maybe_refit(self, step: int) -> dict[str, Any] | None:
        # at least ``refit_window`` steps since the last fit: the window of step times holds only steps after it
        if self.step_time_s is None or self._since_fit < self.refit_window or self.total_steps - step < self.refit_window:
            return None
        projected_end = self.elapsed() + self.eta_s(step)  # at the median of the last ``refit_window`` steps
        if abs(projected_end - self.budget_s) <= self.refit_tolerance * self.budget_s:
            return None
        recent = self._recent_step_time()
        before = self.total_steps
        total = self._fit(step, recent)
        self._since_fit = 0
        if total == before:
            return None
        self.plan.refit(step, total)
        self.refits.append({"step": float(step), "step_time_s": recent, "steps_before": float(before), "steps": float(total)})
        self.step_time_s = recent
        self._pending = {"event": "refitted", **self.describe()}
        return self._pending

    # -- records -------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """The decision, JSON-able (metrics log, checkpoint ``budget``)."""
        return {
            "budget_s": self.budget_s,
            "max_steps": self.max_steps,
            "steps": self.total_steps,
            "decided": self.decided,
            "decided_at_step": self.decided_at,
            "step_time_s": self.step_time_s,
            "reserved_s": self.reserved_s,
            "refits": list(self.refits),
            "stopped_over_budget": self.stopped_over_budget,
        }

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs: the decision and the schedule plan."""
        return {**self.describe(), "plan": self.plan.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the plan of an interrupted run (its fitted total and schedule; no new measurement)."""
        if not state.get("decided"):
            return
        self.plan = SchedulePlan.from_state(state["plan"])
        self.decided = True
        self.step_time_s = state.get("step_time_s")
        self.decided_at = state.get("decided_at_step")
        self.refits = [dict(item) for item in state.get("refits", [])]
