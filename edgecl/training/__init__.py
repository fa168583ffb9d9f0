"""One phase of supervised training: the loop, early stopping and the stop condition."""

from edgecl.training.loop import FitReport, PhaseData, evaluate, fit, predict, task_accuracy
from edgecl.training.stop import ComputeBudget, PhaseMeter, StopCondition

__all__ = ["ComputeBudget", "FitReport", "PhaseData", "PhaseMeter", "StopCondition", "evaluate",
           "fit", "predict", "task_accuracy"]
