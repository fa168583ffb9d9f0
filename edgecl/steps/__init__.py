"""Training techniques as steps of a phase, found by name: every module of this package is
imported, so a technique is one file with a @register_step class (see edgecl.steps.base for the
interface and the order of its hooks)."""

import importlib
import pkgutil

from edgecl.steps.base import Phase, Step, StepOption
from edgecl.steps.registry import build_steps, register_step, step_classes, step_names, step_options

_NOT_STEPS = {"base", "registry"}
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in _NOT_STEPS:
        importlib.import_module(f"{__name__}.{_module}")

__all__ = ["Phase", "Step", "StepOption", "build_steps", "register_step", "step_classes",
           "step_names", "step_options"]
