"""One phase of supervised training: the loop, early stopping and the stop condition.

The loop (torch) is imported on first use, so `edgecl.training.stop` (what RunConfig checks
budgets with) loads on a machine without torch, and `edgecl --help` stays fast.
"""

from typing import Any

from edgecl.training.stop import ComputeBudget, PhaseMeter, StopCondition

_LOOP_NAMES = ("FitReport", "PhaseData", "evaluate", "fit", "predict", "task_accuracy")

__all__ = ["ComputeBudget", "PhaseMeter", "StopCondition", *_LOOP_NAMES]


def __getattr__(name: str) -> Any:
    if name in _LOOP_NAMES:
        from edgecl.training import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'edgecl.training' has no attribute {name!r}")
