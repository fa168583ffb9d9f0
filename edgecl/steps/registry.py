"""Steps by name. A new training technique is one module in edgecl/steps/ with a @register_step
class; the package imports every module, and the trainer, RunConfig and CLI read from here."""

from __future__ import annotations

from edgecl.steps.base import Step, StepOption

_STEPS: dict[str, type[Step]] = {}


def register_step(cls: type[Step]) -> type[Step]:
    """Class decorator: make `cls` part of every run under `cls.name`."""
    if not cls.name:
        raise ValueError(f"step class {cls.__name__} has no name")
    if cls.name in _STEPS and _STEPS[cls.name] is not cls:
        raise ValueError(f"step name {cls.name!r} registered twice")
    _STEPS[cls.name] = cls
    return cls


def step_classes() -> list[type[Step]]:
    """Registered step classes in phase order (`order`, then name)."""
    return sorted(_STEPS.values(), key=lambda cls: (cls.order, cls.name))


def step_names() -> list[str]:
    return [cls.name for cls in step_classes()]


def step_options() -> dict[str, StepOption]:
    """Every option the steps declare themselves, by name."""
    options: dict[str, StepOption] = {}
    for cls in step_classes():
        for option in cls.options:
            if options.setdefault(option.name, option) != option:
                raise ValueError(f"step option {option.name!r} declared twice, differently")
    return options


def build_steps(config) -> list[Step]:
    """The steps a run with `config` uses, in phase order."""
    return [step for step in (cls.from_config(config) for cls in step_classes()) if step]
