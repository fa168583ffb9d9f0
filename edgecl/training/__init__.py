"""One phase of supervised training: the loop, early stopping and the stop condition."""

from edgecl.training.loop import (FitReport, PhaseData, StopCondition, Unlimited, evaluate, fit,
                                  predict)

__all__ = ["FitReport", "PhaseData", "StopCondition", "Unlimited", "evaluate", "fit", "predict"]
