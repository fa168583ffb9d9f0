"""Steps by name. A new training technique is one module in edgecl/steps/ with a @register_step
class; the package imports every module, and the trainer, RunConfig and CLI read from here."""

from __future__ import annotations

from edgecl.registry import declared_options, register_named
from edgecl.steps.base import Step, StepOption

_STEPS: dict[str, type[Step]] = {}


def register_step(cls: type[Step]) -> type[Step]:
    """Class decorator: make `cls` part of every run under `cls.name`."""
    return register_named(_STEPS, cls, "step")


def step_classes() -> list[type[Step]]:
    """Registered step classes in phase order (`order`, then name)."""
    return sorted(_STEPS.values(), key=lambda cls: (cls.order, cls.name))


def step_names() -> list[str]:
    return [cls.name for cls in step_classes()]


def step_options() -> dict[str, StepOption]:
    """Every option the steps declare themselves, by name."""
    return declared_options(step_classes(), "step")


def build_steps(config) -> list[Step]:
    """The steps a run with `config` uses, in phase order."""
    return [step for step in (cls.from_config(config) for cls in step_classes()) if step]
