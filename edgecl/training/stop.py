"""When a phase's training stops early: the StopCondition protocol and the compute budget.

The training loop (edgecl.training.loop) asks `should_stop(batch_size)` before every optimizer
step and calls `step_done(batch_size)` after it, between `start()` and `finish()`. The base class
never stops; `PhaseMeter` enforces a `ComputeBudget` and counts what the phase spent. `reason` names
the first limit reached ("max_steps", "max_train_macs", "max_train_seconds") or is None.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgecl.errors import EdgeclError


class StopCondition:
    """Asked before every optimizer step whether the phase must stop; told after each step.
    The base class never stops. `reason` says why it stopped (or None)."""

    reason: str | None = None

    def start(self) -> None:
        """Called when the phase's training starts."""

    def should_stop(self, batch_size: int) -> bool:
        """True when the next step (on `batch_size` clips) must not be taken."""
        return False

    def step_done(self, batch_size: int) -> None:
        """Called after each optimizer step."""

    def finish(self) -> None:
        """Called when the phase's training ends."""

    def results(self, steps: int) -> dict[str, Any]:
        """Per-phase results fields (train_steps, train_macs, stop flags); `steps` is the loop's
        own count, for conditions that do not count."""
        return {"train_steps": steps, "train_macs": None,
                "stopped_for_budget": self.reason is not None, "stop_reason": self.reason}


@dataclass(frozen=True)
class ComputeBudget:
    """Limits for one learning phase; None means unlimited."""

    max_steps: int | None = None
    max_train_seconds: float | None = None
    max_train_macs: int | None = None

    def __post_init__(self) -> None:
        for option, value in (("--max-steps", self.max_steps),
                              ("--max-train-seconds", self.max_train_seconds),
                              ("--max-train-macs", self.max_train_macs)):
            if value is not None and not value > 0:
                raise EdgeclError(f"{option}: expected a positive number, got {value!r}")

    def remaining(self, *, steps: int, macs: int, seconds: float) -> ComputeBudget | None:
        """What this budget leaves after `steps`, `macs` and `seconds` were spent (None when a
        limit is reached; an unlimited limit stays unlimited)."""
        left = (None if self.max_steps is None else self.max_steps - steps,
                None if self.max_train_seconds is None else self.max_train_seconds - seconds,
                None if self.max_train_macs is None else self.max_train_macs - macs)
        if any(value is not None and value <= 0 for value in left):
            return None
        return ComputeBudget(*left)


@dataclass
class PhaseMeter(StopCondition):
    """Counts one phase's optimizer steps, training MACs and time, and stops at its budget.

    A step on B clips costs `B x step_macs_per_clip` MACs (`train_step_macs(macs, 1)`, plus what
    the training steps of edgecl.steps add per clip, e.g. a distillation teacher's forward: a
    step's MACs are linear in the batch). Steps and MACs never exceed their budget (a step that
    would overshoot the MAC budget is not taken); the time budget is checked between steps, so a
    phase may overrun it by at most one step.
    """

    budget: ComputeBudget = field(default_factory=ComputeBudget)
    step_macs_per_clip: int = 0
    clock: Callable[[], float] = time.perf_counter
    steps: int = 0
    macs: int = 0
    reason: str | None = None
    _start: float | None = None
    _stop: float | None = None

    def start(self) -> None:
        """Start (or restart) the phase clock."""
        self._start, self._stop = self.clock(), None

    def finish(self) -> None:
        """Freeze the phase clock (seconds stops growing)."""
        if self._stop is None:
            self._stop = self.clock()

    @property
    def seconds(self) -> float:
        if self._start is None:
            return 0.0
        return (self._stop if self._stop is not None else self.clock()) - self._start

    def should_stop(self, batch_size: int) -> bool:
        """True when the next step must not be taken; sets `reason` the first time."""
        if self.reason is None:
            self.reason = self._limit_reached(batch_size * self.step_macs_per_clip)
        return self.reason is not None

    def step_done(self, batch_size: int) -> None:
        self.steps += 1
        self.macs += int(batch_size * self.step_macs_per_clip)

    def _limit_reached(self, next_step_macs: int) -> str | None:
        budget = self.budget
        if budget.max_steps is not None and self.steps >= budget.max_steps:
            return "max_steps"
        if budget.max_train_macs is not None and self.macs + next_step_macs > budget.max_train_macs:
            return "max_train_macs"
        if budget.max_train_seconds is not None and self.seconds >= budget.max_train_seconds:
            return "max_train_seconds"
        return None

    def results(self, steps: int | None = None) -> dict[str, Any]:
        """Per-phase results fields: train_steps, train_macs, train_seconds, stop flags."""
        return {
            "train_steps": self.steps,
            "train_macs": self.macs,
            "train_seconds": self.seconds,
            "stopped_for_budget": self.reason is not None,
            "stop_reason": self.reason,
        }
